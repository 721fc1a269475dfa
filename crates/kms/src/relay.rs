//! Key relay through trusted nodes: a key between SAEs whose KMEs share no link travels
//! hop by hop, one-time-padded under each link's key (the trusted-node scheme of the
//! Tokyo QKD network and ITU-T Y.3800-series networks; REFERENCE.md §4).
//!
//! For a route A → B → … → Z the master's KME A cuts the key K from its link to B (as
//! for a direct request, entitling only B's relay agent); B takes K. Every following hop
//! X → Y cuts a fresh pad P from the X–Y link, sends `K ⊕ P` with P's key ID, and Y
//! recovers K with its copy of P. The final KME keeps K under its original ID for the
//! slaves the master named; only then does A hand K to the master. Every pad is cut from
//! its lane like any key, so it is used once and accounted. If any hop fails, A accounts
//! K as discarded and the final KME holds nothing: no half-delivered key.
//!
//! The route is the widest path: the one whose scarcest hop has the most key material
//! (ties: fewer hops). Intermediate KMEs see K in the clear: they must be trusted.
//!
//! [`Network`] runs the relay between KMEs in one process (simulation, tests); between
//! node processes the same steps travel as messages over the authenticated links.

use crate::etsi::Kme;
use crate::{lane_for, Key};
use std::collections::HashMap;
use std::sync::Arc;

/// Why a relay failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// A KME named on the way is not part of the network.
    #[error("unknown KME '{0}'")]
    UnknownKme(String),
    /// No chain of links joins the two KMEs.
    #[error("no route from KME '{from}' to KME '{to}'")]
    NoRoute {
        /// Master's KME.
        from: String,
        /// Slave's KME.
        to: String,
    },
    /// A hop failed; the key was discarded.
    #[error("relay hop {from} -> {to} failed: {reason}")]
    Hop {
        /// Sending KME.
        from: String,
        /// Receiving KME.
        to: String,
        /// What went wrong.
        reason: String,
    },
}

fn hop(from: &str, to: &str, reason: String) -> RelayError {
    RelayError::Hop {
        from: from.to_string(),
        to: to.to_string(),
        reason,
    }
}

/// `a ⊕ b` over the shorter of the two (a key under its pad, or back), zeroized on drop.
pub(crate) fn one_time_pad(a: &[u8], b: &[u8]) -> zeroize::Zeroizing<Vec<u8>> {
    zeroize::Zeroizing::new(a.iter().zip(b).map(|(x, y)| x ^ y).collect())
}

/// The relay agent of a KME: the pseudo-SAE that takes relayed material there. (SAE IDs
/// from certificates cannot contain '@', so no application can pose as one.)
pub fn relay_agent(kme: &str) -> String {
    format!("relay@{kme}")
}

impl crate::etsi::Relayer for Network {
    fn relay(
        &self,
        from: &str,
        to: &str,
        master_sae: &str,
        slave_saes: &[String],
        number: u32,
        size_bytes: u32,
    ) -> Result<Vec<Key>, String> {
        Network::relay(self, from, to, master_sae, slave_saes, number, size_bytes)
            .map_err(|e| e.to_string())
    }
}

/// KMEs of one network, in one process.
pub struct Network {
    kmes: HashMap<String, Arc<Kme>>,
}

impl Network {
    /// A network of `kmes` (their links come from each configuration's `links`).
    pub fn new(kmes: impl IntoIterator<Item = Arc<Kme>>) -> Self {
        Self {
            kmes: kmes
                .into_iter()
                .map(|k| (k.config().kme_id.clone(), k))
                .collect(),
        }
    }

    /// The network, shared, with every KME's `enc_keys` relaying through it when the
    /// slave's KME is not a neighbour.
    pub fn shared(kmes: impl IntoIterator<Item = Arc<Kme>>) -> Arc<Self> {
        let net = Arc::new(Self::new(kmes));
        let r: Arc<dyn crate::etsi::Relayer> = net.clone();
        for k in net.kmes.values() {
            k.set_relayer(&r);
        }
        net
    }

    fn kme(&self, id: &str) -> Result<&Arc<Kme>, RelayError> {
        self.kmes
            .get(id)
            .ok_or_else(|| RelayError::UnknownKme(id.to_string()))
    }

    /// Key bytes KME `from` can still cut towards its neighbour `to`.
    fn capacity(&self, from: &str, to: &str) -> u64 {
        self.kmes
            .get(from)
            .and_then(|k| k.store().available_bytes(to, lane_for(from, to)).ok())
            .unwrap_or(0)
    }

    /// The widest path from `from` to `to` (most material on its scarcest hop; ties:
    /// fewer hops, then names), or `None`.
    pub fn route(&self, from: &str, to: &str) -> Option<Vec<String>> {
        // Small graphs: a label-correcting search over (bottleneck, hops).
        let mut best: HashMap<String, (u64, usize, Vec<String>)> = HashMap::new();
        best.insert(from.to_string(), (u64::MAX, 0, vec![from.to_string()]));
        let mut frontier = vec![from.to_string()];
        while let Some(x) = frontier.pop() {
            let Some((cap, hops, path)) = best.get(&x).cloned() else {
                continue;
            };
            let Some(k) = self.kmes.get(&x) else { continue };
            let mut links = k.config().links.clone();
            links.sort();
            for y in links {
                if path.contains(&y) {
                    continue;
                }
                let c = cap.min(self.capacity(&x, &y));
                if c == 0 {
                    continue;
                }
                let better = match best.get(&y) {
                    None => true,
                    Some((bc, bh, _)) => c > *bc || (c == *bc && hops + 1 < *bh),
                };
                if better {
                    let mut p = path.clone();
                    p.push(y.clone());
                    best.insert(y.clone(), (c, hops + 1, p));
                    frontier.push(y);
                }
            }
        }
        best.remove(to).map(|(_, _, p)| p).filter(|p| p.len() >= 2)
    }

    /// Relays `number` keys of `size_bytes` from `master_sae` at KME `from` to
    /// `slave_saes` at KME `to`; returns the master's keys. Each key is all-or-nothing.
    pub fn relay(
        &self,
        from: &str,
        to: &str,
        master_sae: &str,
        slave_saes: &[String],
        number: u32,
        size_bytes: u32,
    ) -> Result<Vec<Key>, RelayError> {
        let route = self.route(from, to).ok_or_else(|| RelayError::NoRoute {
            from: from.to_string(),
            to: to.to_string(),
        })?;
        let mut out = Vec::with_capacity(number as usize);
        for _ in 0..number {
            out.push(self.relay_one(&route, master_sae, slave_saes, size_bytes)?);
        }
        Ok(out)
    }

    fn relay_one(
        &self,
        route: &[String],
        master_sae: &str,
        slave_saes: &[String],
        size_bytes: u32,
    ) -> Result<Key, RelayError> {
        let (origin, first) = (&route[0], &route[1]);
        let a = self.kme(origin)?;
        if route.len() == 2 {
            // Adjacent: an ordinary cut for the slaves themselves.
            let mut keys = a
                .cut_and_deliver(first, master_sae, slave_saes, 1, size_bytes)
                .map_err(|e| hop(origin, first, e.to_string()))?;
            return keys
                .pop()
                .ok_or_else(|| hop(origin, first, "no key cut".into()));
        }
        // Hop 1: K itself is cut from the origin's link, for the next node's relay agent.
        let mut keys = a
            .cut_and_deliver(first, master_sae, &[relay_agent(first)], 1, size_bytes)
            .map_err(|e| hop(origin, first, e.to_string()))?;
        let k = keys
            .pop()
            .ok_or_else(|| hop(origin, first, "no key cut".into()))?;
        let result = self.forward(route, &k, master_sae, slave_saes);
        if let Err(e) = result {
            // Nothing reached the final KME: account K as discarded at the origin.
            let _ = a.store().void(first, std::slice::from_ref(&k.id));
            return Err(e);
        }
        Ok(k)
    }

    /// Carries K (cut at route[0] for route[1]'s relay agent) to the end of the route.
    fn forward(
        &self,
        route: &[String],
        k: &Key,
        master_sae: &str,
        slave_saes: &[String],
    ) -> Result<(), RelayError> {
        let first = &route[1];
        let fetched = self
            .kme(first)?
            .store()
            .fetch(master_sae, &relay_agent(first), std::slice::from_ref(&k.id))
            .map_err(|e| hop(&route[0], first, e.to_string()))?;
        let mut carried = fetched
            .into_iter()
            .next()
            .ok_or_else(|| hop(&route[0], first, "key missing at the relay".into()))?;
        for w in route[1..].windows(2) {
            let (x, y) = (&w[0], &w[1]);
            let kx = self.kme(x)?;
            let ky = self.kme(y)?;
            // A fresh pad from the x–y link, for y's relay agent.
            let mut pads = kx
                .cut_and_deliver(
                    y,
                    &relay_agent(x),
                    &[relay_agent(y)],
                    1,
                    carried.bytes.len() as u32,
                )
                .map_err(|e| hop(x, y, e.to_string()))?;
            let pad = pads.pop().ok_or_else(|| hop(x, y, "no pad cut".into()))?;
            let ct = one_time_pad(&carried.bytes, &pad.bytes);
            // At y: take the same pad and remove it.
            let theirs = ky
                .store()
                .fetch(
                    &relay_agent(x),
                    &relay_agent(y),
                    std::slice::from_ref(&pad.id),
                )
                .map_err(|e| hop(x, y, e.to_string()))?;
            let Some(p) = theirs.into_iter().next() else {
                return Err(hop(x, y, "pad missing at the receiver".into()));
            };
            carried = Key {
                id: k.id.clone(),
                bytes: one_time_pad(&ct, &p.bytes).to_vec(),
            };
        }
        let last = route.last().map(String::as_str).unwrap_or_default();
        let kl = self.kme(last)?;
        let expires = kl.now().saturating_add(kl.config().key_ttl_s);
        kl.store()
            .hold_relayed(&route[0], &carried, master_sae, slave_saes, expires)
            .map_err(|e| hop(&route[route.len() - 2], last, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etsi::{KmeConfig, PeerLink};
    use crate::sqlite::SqliteStore;
    use crate::{Assignment, KeyStore};
    use qkdnet_core::Bits;
    use std::collections::HashSet;
    use std::sync::Mutex;

    /// Delivers assignments straight into the other KMEs' stores; links can be cut.
    struct NetLink {
        me: String,
        stores: Arc<Mutex<HashMap<String, Arc<dyn KeyStore>>>>,
        down: Arc<Mutex<HashSet<(String, String)>>>,
    }

    impl PeerLink for NetLink {
        fn send_assignments(&self, peer: &str, run: &[Assignment]) -> Result<(), String> {
            if self
                .down
                .lock()
                .unwrap()
                .contains(&(self.me.clone(), peer.to_string()))
            {
                return Err("link down".into());
            }
            let s = self
                .stores
                .lock()
                .unwrap()
                .get(peer)
                .cloned()
                .ok_or("no such KME")?;
            s.assign_many(&self.me, run, 0).map_err(|e| e.to_string())
        }
    }

    struct World {
        net: Arc<Network>,
        stores: HashMap<String, Arc<dyn KeyStore>>,
        down: Arc<Mutex<HashSet<(String, String)>>>,
    }

    /// KMEs with the given links, each link holding `bits` of shared key; SAEs "a1" at A,
    /// "d1" at D, "c1" at C.
    fn world(links: &[(&str, &str, usize)]) -> World {
        let mut names: Vec<&str> = links.iter().flat_map(|(a, b, _)| [*a, *b]).collect();
        names.sort();
        names.dedup();
        let stores: HashMap<String, Arc<dyn KeyStore>> = names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    Arc::new(SqliteStore::in_memory().unwrap()) as Arc<dyn KeyStore>,
                )
            })
            .collect();
        for (i, (a, b, bits)) in links.iter().enumerate() {
            let words: Vec<u64> = (0..bits.div_ceil(64) as u64)
                .map(|w| (w ^ ((i as u64) << 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15))
                .collect();
            let k = Bits::from_words(words, *bits);
            stores[*a].add_block(b, 1, &k, u64::MAX / 4).unwrap();
            stores[*b].add_block(a, 1, &k, u64::MAX / 4).unwrap();
        }
        let shared = Arc::new(Mutex::new(stores.clone()));
        let down = Arc::new(Mutex::new(HashSet::new()));
        let kmes = names.iter().map(|n| {
            let mut cfg = KmeConfig::new(n);
            for (s, k) in [("a1", "A"), ("c1", "C"), ("d1", "D")] {
                cfg.sae_kme.insert(s.into(), k.into());
            }
            cfg.links = links
                .iter()
                .filter_map(|(a, b, _)| {
                    if a == n {
                        Some(b.to_string())
                    } else if b == n {
                        Some(a.to_string())
                    } else {
                        None
                    }
                })
                .collect();
            let link = NetLink {
                me: n.to_string(),
                stores: Arc::clone(&shared),
                down: Arc::clone(&down),
            };
            Arc::new(Kme::new(
                cfg,
                Arc::clone(&stores[*n]),
                Arc::new(link),
                Box::new(|| 0),
            ))
        });
        World {
            net: Network::shared(kmes.collect::<Vec<_>>()),
            stores,
            down,
        }
    }

    fn balanced(w: &World) {
        for (name, s) in &w.stores {
            for peer in ["A", "B", "C", "D", "relay:A"] {
                let acc = s.accounting(peer).unwrap();
                assert!(acc.balances(), "{name}/{peer}: {acc:?}");
            }
        }
    }

    #[test]
    fn a_key_crosses_two_trusted_nodes_and_only_the_named_slave_gets_it() {
        let w = world(&[("A", "B", 64_000), ("B", "C", 64_000), ("C", "D", 64_000)]);
        assert_eq!(w.net.route("A", "D").unwrap(), vec!["A", "B", "C", "D"]);
        let keys = w
            .net
            .relay("A", "D", "a1", &["d1".to_string()], 3, 32)
            .unwrap();
        assert_eq!(keys.len(), 3);
        let ids: Vec<String> = keys.iter().map(|k| k.id.clone()).collect();
        let got = w.stores["D"].fetch("a1", "d1", &ids).unwrap();
        for (k, g) in keys.iter().zip(&got) {
            assert_eq!(k.bytes, g.bytes);
        }
        // Nobody else can fetch them, and nothing is left waiting on the way.
        assert!(w.stores["D"].fetch("a1", "d1", &ids).is_err());
        for (n, peer) in [("B", "A"), ("C", "B"), ("D", "C")] {
            assert_eq!(w.stores[n].accounting(peer).unwrap().held_bits, 0, "{n}");
        }
        // Each hop used fresh material: 3 keys × 32 bytes per link (both ends agree).
        for (x, y) in [("A", "B"), ("B", "C"), ("C", "D")] {
            let ax = w.stores[x].accounting(y).unwrap();
            let ay = w.stores[y].accounting(x).unwrap();
            assert_eq!(ax.delivered_bits, 3 * 256, "{x}->{y}");
            assert_eq!(ay.delivered_bits, 3 * 256, "{y}<-{x}");
        }
        assert_eq!(
            w.stores["D"].accounting("relay:A").unwrap().delivered_bits,
            3 * 256
        );
        balanced(&w);
    }

    #[test]
    fn enc_keys_for_a_slave_beyond_the_links_goes_by_relay() {
        let w = world(&[("A", "B", 64_000), ("B", "C", 64_000), ("C", "D", 64_000)]);
        let r = w.net.kme("A").unwrap().handle(
            "a1",
            "POST",
            "/api/v1/keys/d1/enc_keys",
            None,
            Some("application/json"),
            br#"{"number": 2}"#,
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
        let keys = r.body.unwrap()["keys"].clone();
        let id = keys[0]["key_ID"].as_str().unwrap().to_string();
        let q = format!("key_ID={id}");
        let got = w.net.kme("D").unwrap().handle(
            "d1",
            "GET",
            "/api/v1/keys/a1/dec_keys",
            Some(&q),
            None,
            b"",
        );
        assert_eq!(got.status, 200);
        assert_eq!(got.body.unwrap()["keys"][0]["key"], keys[0]["key"]);
        balanced(&w);
    }

    #[test]
    fn the_route_follows_the_most_key_material() {
        // A–B–D is short of key on A–B; A–C–D has plenty.
        let w = world(&[
            ("A", "B", 8_000),
            ("B", "D", 64_000),
            ("A", "C", 64_000),
            ("C", "D", 64_000),
        ]);
        assert_eq!(w.net.route("A", "D").unwrap(), vec!["A", "C", "D"]);
        assert!(w.net.route("A", "Z").is_none());
        // Adjacent KMEs need no relay.
        assert_eq!(w.net.route("A", "C").unwrap(), vec!["A", "C"]);
    }

    #[test]
    fn a_failed_hop_leaves_no_key_anywhere() {
        let w = world(&[("A", "B", 64_000), ("B", "C", 64_000), ("C", "D", 64_000)]);
        w.down.lock().unwrap().insert(("C".into(), "D".into()));
        let r = w.net.relay("A", "D", "a1", &["d1".to_string()], 1, 32);
        assert!(matches!(r, Err(RelayError::Hop { .. })), "{:?}", r.err());
        // D holds nothing relayed; A counts the key as discarded, not delivered.
        assert_eq!(
            w.stores["D"].accounting("relay:A").unwrap().produced_bits,
            0
        );
        let a = w.stores["A"].accounting("B").unwrap();
        assert_eq!(a.delivered_bits, 0);
        assert_eq!(a.discarded_bits, 256);
        balanced(&w);
    }
}
