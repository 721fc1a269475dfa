//! Key relay between KME processes: the steps of [`crate::relay`] as messages over the
//! KME-to-KME links (`POST /api/v1/kme/relay`, authenticated like the assignments).
//!
//! The master's KME O cuts the key K from its link to the next hop N₁, entitling N₁'s
//! relay agent, exactly as for a direct request, and tells N₁ the key's ID. N₁ takes K
//! from its copy of the lane. Every following hop X → Y cuts a fresh pad P from the X–Y
//! link and sends `K ⊕ P` with P's ID; Y takes its copy of P and recovers K. The
//! destination keeps K under its original ID for the slaves the master named. Each hop
//! answers only after everything downstream has succeeded, so O hands K to the master
//! only once the destination holds it. If any hop fails, O accounts K as discarded and
//! the destination holds nothing. Pads cut on the way are used once and accounted like
//! any key; intermediate KMEs see K and must be trusted.
//!
//! Routing is hop by hop. Each KME's configuration ([`crate::etsi::KmeConfig::routes`])
//! may list, for a KME it does not share a link with, the neighbours a key may go through
//! next (the one with the most key material on its link is taken); for the others the
//! routes its neighbours advertise decide ([`crate::routing`]). KMEs already visited are
//! skipped.

use crate::etsi::{error, Kme, Response};
use crate::relay::{one_time_pad, relay_agent};
use crate::{lane_for, Key};
use base64::Engine;
use serde_json::json;
use zeroize::{Zeroize, Zeroizing};

/// The KME-to-KME endpoint that carries one hop of a relayed key.
pub const KME_RELAY: &str = "/api/v1/kme/relay";

/// The most KMEs a relayed key may cross.
pub const MAX_HOPS: usize = 16;

/// One hop of a relayed key. Carries key bytes only one-time-padded (`pad`); no `Debug`.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayHop {
    /// The master's KME.
    pub origin: String,
    /// The slaves' KME.
    pub destination: String,
    /// The master SAE.
    pub master_sae: String,
    /// The slaves the master named.
    pub slave_saes: Vec<String>,
    /// The key's ID.
    pub key_id: String,
    /// The key's size, bytes.
    pub size_bytes: u32,
    /// When the destination lets the key expire (seconds, the KMEs' clock).
    pub expires_at: u64,
    /// From the second hop on: the pad's ID and `K ⊕ P` in base64. On the first hop the
    /// receiver takes K itself from its link to the origin.
    pub pad: Option<PadCipher>,
    /// KMEs the key has been through, the origin first.
    pub visited: Vec<String>,
}

/// A key under a one-time pad cut from the sender's link to the receiver.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PadCipher {
    /// The pad's key ID on the link.
    pub pad_id: String,
    /// `K ⊕ P`, base64.
    pub ciphertext: String,
}

impl Kme {
    /// The neighbour a relayed key for `destination` goes to next: the destination itself
    /// when it is a neighbour, otherwise the listed next hop with the most key material
    /// on its link, skipping KMEs in `visited`.
    pub fn next_hop(&self, destination: &str, visited: &[String]) -> Option<String> {
        let me = &self.config().kme_id;
        if self.is_neighbour(destination) {
            return Some(destination.to_string());
        }
        let Some(listed) = self.config().routes.get(destination) else {
            // No configured route: what the neighbours advertised.
            return self.learnt_next_hop(destination, visited);
        };
        listed
            .iter()
            .filter(|n| self.is_neighbour(n) && !visited.contains(n))
            .map(|n| {
                let have = self
                    .store()
                    .available_bytes(n, lane_for(me, n))
                    .unwrap_or(0);
                (have, n)
            })
            .filter(|(have, _)| *have > 0)
            .max()
            .map(|(_, n)| n.clone())
    }

    /// Relays `number` keys of `size_bytes` from `master_sae` here to `slave_saes` at the
    /// non-adjacent KME `destination`, over the peer links; returns the master's keys.
    pub fn relay_originate(
        &self,
        destination: &str,
        master_sae: &str,
        slave_saes: &[String],
        number: u32,
        size_bytes: u32,
    ) -> Result<Vec<Key>, String> {
        let me = self.config().kme_id.clone();
        let mut out = Vec::with_capacity(number as usize);
        for _ in 0..number {
            let visited = vec![me.clone()];
            let next = self
                .next_hop(destination, &visited)
                .ok_or_else(|| format!("no route from {me} to {destination}"))?;
            let mut keys = self
                .cut_and_deliver(&next, master_sae, &[relay_agent(&next)], 1, size_bytes)
                .map_err(|e| format!("{me} -> {next}: {e}"))?;
            let k = keys
                .pop()
                .ok_or_else(|| format!("{me} -> {next}: no key cut"))?;
            let hop = RelayHop {
                origin: me.clone(),
                destination: destination.to_string(),
                master_sae: master_sae.to_string(),
                slave_saes: slave_saes.to_vec(),
                key_id: k.id.clone(),
                size_bytes,
                expires_at: self.now().saturating_add(self.config().key_ttl_s),
                pad: None,
                visited,
            };
            if let Err(e) = self.peers().send_relay(&next, &hop) {
                // Nothing is held at the destination: K is discarded here.
                let _ = self.store().void(&next, std::slice::from_ref(&k.id));
                return Err(format!("{me} -> {next}: {e}"));
            }
            out.push(k);
        }
        Ok(out)
    }

    /// `POST /api/v1/kme/relay` from a neighbour: recover K, then keep it (destination)
    /// or pass it on under a fresh pad.
    pub(crate) fn peer_relay(&self, from: &str, hop: RelayHop) -> Response {
        match self.relay_step(from, hop) {
            Ok(()) => Response {
                status: 200,
                body: Some(json!({ "held": true })),
                text: None,
            },
            Err((status, e)) => error(status, "key relay failed", Some(json!([e]))),
        }
    }

    fn relay_step(&self, from: &str, mut hop: RelayHop) -> Result<(), (u16, String)> {
        let me = self.config().kme_id.clone();
        let bad = |e: String| (400, e);
        if hop.visited.last().map(String::as_str) != Some(from)
            || hop.visited.contains(&me)
            || hop.visited.len() >= MAX_HOPS
            || hop.size_bytes == 0
            || hop.slave_saes.is_empty()
        {
            return Err(bad(format!(
                "relay hop from {from}: visited {:?}, size {}, {} slaves",
                hop.visited,
                hop.size_bytes,
                hop.slave_saes.len()
            )));
        }
        let store = self.store();
        let agent = relay_agent(&me);
        // Recover K.
        let k: Zeroizing<Vec<u8>> = match &hop.pad {
            None => {
                let mut got = store
                    .fetch(&hop.master_sae, &agent, std::slice::from_ref(&hop.key_id))
                    .map_err(|e| (409, format!("key {} at {me}: {e}", hop.key_id)))?;
                let key = got
                    .pop()
                    .ok_or((409, format!("key {} missing", hop.key_id)))?;
                Zeroizing::new(key.bytes.clone())
            }
            Some(p) => {
                let mut ct = base64::engine::general_purpose::STANDARD
                    .decode(&p.ciphertext)
                    .map_err(|_| bad("relay ciphertext is not base64".into()))?;
                let pads = store
                    .fetch(&relay_agent(from), &agent, std::slice::from_ref(&p.pad_id))
                    .map_err(|e| (409, format!("pad {} at {me}: {e}", p.pad_id)));
                let pad = match pads.map(|mut v| v.pop()) {
                    Ok(Some(pad)) => pad,
                    Ok(None) => {
                        ct.zeroize();
                        return Err((409, format!("pad {} missing", p.pad_id)));
                    }
                    Err(e) => {
                        ct.zeroize();
                        return Err(e);
                    }
                };
                if pad.bytes.len() != ct.len() {
                    ct.zeroize();
                    return Err(bad(format!(
                        "ciphertext of {} bytes under a pad of {}",
                        ct.len(),
                        pad.bytes.len()
                    )));
                }
                let k = one_time_pad(&ct, &pad.bytes);
                ct.zeroize();
                k
            }
        };
        if k.len() != hop.size_bytes as usize {
            return Err(bad(format!(
                "relayed key of {} bytes, announced {}",
                k.len(),
                hop.size_bytes
            )));
        }
        if hop.destination == me {
            let key = Key {
                id: hop.key_id.clone(),
                bytes: k.to_vec(),
            };
            return store
                .hold_relayed(
                    &hop.origin,
                    &key,
                    &hop.master_sae,
                    &hop.slave_saes,
                    hop.expires_at,
                )
                .map_err(|e| (503, format!("holding key {} at {me}: {e}", hop.key_id)));
        }
        hop.visited.push(me.clone());
        let next = self
            .next_hop(&hop.destination, &hop.visited)
            .ok_or_else(|| (503, format!("no route from {me} to {}", hop.destination)))?;
        let mut pads = self
            .cut_and_deliver(&next, &agent, &[relay_agent(&next)], 1, hop.size_bytes)
            .map_err(|e| (503, format!("{me} -> {next}: {e}")))?;
        let pad = pads
            .pop()
            .ok_or_else(|| (503, format!("{me} -> {next}: no pad cut")))?;
        let ct = one_time_pad(&k, &pad.bytes);
        hop.pad = Some(PadCipher {
            pad_id: pad.id.clone(),
            ciphertext: base64::engine::general_purpose::STANDARD.encode(&ct[..]),
        });
        self.peers()
            .send_relay(&next, &hop)
            .map_err(|e| (503, format!("{me} -> {next}: {e}")))
    }
}
