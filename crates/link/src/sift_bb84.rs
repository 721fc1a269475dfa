//! Decoy-state BB84 sifting between the two ends over a [`Transport`] (wire messages
//! `BasisAnnounce` and `BasisReply`, each authenticated with a pad).
//!
//! 1. Bob announces each detection of a batch: the pulse number and his basis, and for the
//!    test basis X his bit (test bits are disclosed anyway). Key-basis bits stay private.
//!    A double click has already been squashed to a random bit by Bob (Lütkenhaus's
//!    squashing; the caller draws it).
//! 2. Alice answers every announced detection with her basis and her intensity (decoy
//!    estimation needs the detections of every intensity in both bases, Lim et al., PRA 89,
//!    022307 (2014)), and the test-basis errors per intensity where both chose X, which she
//!    counts from her log and Bob's disclosed bits.
//! 3. Both keep the detections where both chose Z, in pulse order: Alice's emitted bits and
//!    Bob's measured ones are the raw key, with the per-intensity counts the decoy bound
//!    needs ([`DecoyTally`]); the key-basis errors are what reconciliation corrects.

use crate::sift::{abort_on, expect, log_entries, receive_opening};
use crate::{DriveError, Transport};
use qkdnet_core::bits::Bits;
use qkdnet_distill::auth::AuthKeys;
use qkdnet_distill::session::{AuthChannel, SessionError};
use qkdnet_wire::{BasisEvent, BasisReply, Message};

/// One of Bob's detections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detection {
    /// Pulse number.
    pub pulse: u64,
    /// Bob's basis: 0 = Z (key), 1 = X (test).
    pub basis: u8,
    /// The bit measured (a double click squashed to a random bit).
    pub bit: u8,
}

/// Alice's log of one pulse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Emission {
    /// Pulse number.
    pub pulse: u64,
    /// Basis: 0 = Z, 1 = X.
    pub basis: u8,
    /// Bit sent.
    pub bit: u8,
    /// Intensity index (0 = signal, 1, 2 = decoys).
    pub intensity: u8,
}

/// The per-intensity detections where both chose the same basis, as the decoy bound takes
/// them (the same at both ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecoyTally {
    /// Key-basis detections per intensity.
    pub key: [u64; 3],
    /// Test-basis detections per intensity.
    pub test: [u64; 3],
    /// Of which in error.
    pub test_errors: [u64; 3],
}

/// One end's result of a BB84 sifting exchange.
pub struct Bb84Sifted {
    /// This end's key bits (both chose Z), in pulse order.
    pub key: Bits,
    /// The tallies.
    pub tally: DecoyTally,
}

impl std::fmt::Debug for Bb84Sifted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key bits are never printed.
        f.debug_struct("Bb84Sifted")
            .field("key_bits", &self.key.len())
            .field("tally", &self.tally)
            .finish()
    }
}

/// Bob's announcement of his detections (time ordered, pulses strictly increasing).
pub fn announce(detections: &[Detection]) -> Vec<BasisEvent> {
    detections
        .iter()
        .map(|d| BasisEvent {
            pulse: d.pulse,
            code: if d.basis == 0 { 0 } else { 1 + (d.bit & 1) },
        })
        .collect()
}

/// Alice's side: her key bits, her reply and the tallies, from her log (`log`, sorted by
/// pulse, holding every announced pulse).
pub fn answer(
    log: &[Emission],
    events: &[BasisEvent],
) -> Result<(Bits, BasisReply, DecoyTally), String> {
    let mut key = Bits::zeros(0);
    let mut reply = BasisReply {
        choices: Vec::with_capacity(events.len()),
        test_errors: vec![0; 3],
    };
    let mut tally = DecoyTally::default();
    let found = log_entries(log, |a| a.pulse, events.iter().map(|e| e.pulse))
        .map_err(|e| format!("BasisAnnounce: {e}"))?;
    for (e, a) in events.iter().zip(found) {
        let k = usize::from(a.intensity.min(2));
        reply.choices.push((a.basis & 1) | ((k as u8) << 1));
        match (a.basis, e.code & 3) {
            (0, 0) => {
                tally.key[k] += 1;
                key.push(a.bit & 1 == 1);
            }
            (1, 1 | 2) => {
                tally.test[k] += 1;
                let err = u64::from((a.bit & 1) != (e.code & 3) - 1);
                tally.test_errors[k] += err;
                reply.test_errors[k] += err;
            }
            _ => {}
        }
    }
    Ok((key, reply, tally))
}

/// Bob's side: his key bits and the tallies from Alice's reply to his `detections`.
pub fn apply(detections: &[Detection], reply: &BasisReply) -> Result<(Bits, DecoyTally), String> {
    if reply.choices.len() != detections.len() {
        return Err(format!(
            "BasisReply: {} choices for {} announced detections",
            reply.choices.len(),
            detections.len()
        ));
    }
    let mut key = Bits::zeros(0);
    let test_errors: [u64; 3] = reply.test_errors.as_slice().try_into().map_err(|_| {
        format!(
            "BasisReply: {} test-error counts, BB84 has 3",
            reply.test_errors.len()
        )
    })?;
    let mut tally = DecoyTally {
        test_errors,
        ..DecoyTally::default()
    };
    for (d, &c) in detections.iter().zip(&reply.choices) {
        let (basis, k) = (c & 1, usize::from(c >> 1));
        if k > 2 {
            return Err(format!("BasisReply: intensity index {k}"));
        }
        match (basis, d.basis) {
            (0, 0) => {
                tally.key[k] += 1;
                key.push(d.bit & 1 == 1);
            }
            (1, 1) => tally.test[k] += 1,
            _ => {}
        }
    }
    if let Some(k) = (0..3).find(|&k| tally.test_errors[k] > tally.test[k]) {
        return Err(format!(
            "BasisReply: {} test errors at intensity {k} among {} test detections",
            tally.test_errors[k], tally.test[k]
        ));
    }
    Ok((key, tally))
}

/// Bob's end of the BB84 sifting exchange of batch `batch` over `t`: two pads from `auth`
/// at its cursor (the announcement names the offset).
pub fn sift_bob(
    t: &mut dyn Transport,
    auth: &mut AuthKeys,
    batch: u64,
    detections: &[Detection],
) -> Result<Bb84Sifted, DriveError> {
    if let Some(w) = detections.windows(2).find(|w| w[1].pulse <= w[0].pulse) {
        return Err(SessionError::Protocol(format!(
            "Bob's detections out of order: pulse {} after {}",
            w[1].pulse, w[0].pulse
        ))
        .into());
    }
    let mut chan = AuthChannel::new(batch, auth.cursor());
    let msg = Message::BasisAnnounce {
        pad_offset: auth.cursor(),
        events: announce(detections),
    };
    t.send(&chan.send(auth, &msg)?)?;
    let bytes = t.recv()?;
    let reply = expect(chan.receive(auth, &bytes)?, "BasisReply", |m| match m {
        Message::BasisReply(r) => Some(r),
        _ => None,
    })?;
    let (key, tally) = apply(detections, &reply).map_err(SessionError::Protocol)?;
    Ok(Bb84Sifted { key, tally })
}

/// Alice's end of the BB84 sifting exchange of batch `batch` over `t`, from her log of
/// the batch's pulses (sorted by pulse). A failure is told to Bob with an `Abort`.
pub fn sift_alice(
    t: &mut dyn Transport,
    auth: &mut AuthKeys,
    batch: u64,
    log: &[Emission],
) -> Result<Bb84Sifted, DriveError> {
    let (mut chan, msg) = receive_opening(t, auth, batch)?;
    let events = expect(msg, "BasisAnnounce", |m| match m {
        Message::BasisAnnounce { events, .. } => Some(events),
        _ => None,
    })?;
    match answer(log, &events) {
        Ok((key, reply, tally)) => {
            t.send(&chan.send(auth, &Message::BasisReply(reply))?)?;
            Ok(Bb84Sifted { key, tally })
        }
        Err(reason) => Err(abort_on(t, auth, &mut chan, reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ends_keep_the_z_matches_and_count_the_test_errors() {
        let e = |pulse, basis, bit, intensity| Emission {
            pulse,
            basis,
            bit,
            intensity,
        };
        let log = vec![
            e(3, 0, 1, 0),
            e(8, 1, 0, 1),
            e(9, 0, 0, 2),
            e(12, 1, 1, 0),
            e(20, 0, 1, 0),
            e(31, 1, 0, 0),
        ];
        let d = |pulse, basis, bit| Detection { pulse, basis, bit };
        // Z match (agree), X match (agree), basis mismatch, X match (error), Z match
        // (error: reconciliation's business), X at Bob vs Z at Alice.
        let bob = vec![d(3, 0, 1), d(8, 1, 0), d(9, 1, 1), d(12, 1, 0), d(20, 0, 0)];
        let (mut ta, mut tb) = crate::MemTransport::pair();
        let mut kb = AuthKeys::from_preshared(crate::sift::test_psk(0)).unwrap();
        let bob2 = bob.clone();
        let h = std::thread::spawn(move || sift_bob(&mut tb, &mut kb, 4, &bob2));
        let mut ka = AuthKeys::from_preshared(crate::sift::test_psk(0)).unwrap();
        let a = sift_alice(&mut ta, &mut ka, 4, &log).unwrap();
        let b = h.join().unwrap().unwrap();
        assert_eq!(a.tally, b.tally);
        assert_eq!(a.tally.key, [2, 0, 0]);
        assert_eq!(a.tally.test, [1, 1, 0]);
        assert_eq!(a.tally.test_errors, [1, 0, 0]);
        assert_eq!((a.key.len(), b.key.len()), (2, 2));
        assert_eq!(a.key.hamming_distance(&b.key), 1);
        // The announcement carries no key-basis bit.
        let flipped: Vec<Detection> = bob
            .iter()
            .map(|x| {
                if x.basis == 0 {
                    d(x.pulse, 0, 1 - x.bit)
                } else {
                    *x
                }
            })
            .collect();
        assert_eq!(announce(&bob), announce(&flipped));
        assert!(format!("{a:?}").contains("key_bits: 2"));
    }

    #[test]
    fn a_pulse_alice_never_sent_is_refused_and_bob_is_told() {
        let (mut ta, mut tb) = crate::MemTransport::pair();
        let mut kb = AuthKeys::from_preshared(crate::sift::test_psk(0)).unwrap();
        let h = std::thread::spawn(move || {
            sift_bob(
                &mut tb,
                &mut kb,
                1,
                &[Detection {
                    pulse: 77,
                    basis: 0,
                    bit: 0,
                }],
            )
        });
        let mut ka = AuthKeys::from_preshared(crate::sift::test_psk(0)).unwrap();
        let r = sift_alice(&mut ta, &mut ka, 1, &[]);
        assert!(format!("{r:?}").contains("pulse 77"), "{r:?}");
        let rb = h.join().unwrap();
        assert!(
            matches!(
                rb,
                Err(DriveError::Session(SessionError::PeerAborted { .. }))
            ),
            "{rb:?}"
        );
        // A reply that does not fit the announcement is refused by Bob.
        let bad = BasisReply {
            choices: vec![0],
            test_errors: vec![0; 3],
        };
        assert!(apply(&[], &bad).is_err());
    }
}
