//! Twin-field sifting among the relay and the two users over [`Transport`]s, for
//! sending-or-not-sending (SNS) and phase-matching (PM) QKD, with the settings of the
//! emulator (`emulator::tf`: 0/1 the key window, 2–4 the decoy windows).
//!
//! 1. The relay announces its single clicks and which detector clicked (`RelayAnnounce`,
//!    as for MDI; double clicks are not announced).
//! 2. Bob announces, for each click, whether his pulse was a key window (what he sent, or
//!    his key phase, withheld) or which decoy setting, and the phase slice of his random
//!    phase where the protocol discloses it (decoy windows; PM every pulse), in
//!    `TfAnnounce`; Alice checks the relay told both the same clicks and answers in kind
//!    (`TfReply`). From then on both know every quantity below.
//! 3. Raw key. SNS (Wang, Yu & Hu, PRA 98, 062323 (2018)): the clicks where both had key
//!    windows; Alice's bit is "sent", Bob's "not sent". PM (Ma, Zeng & Zhou, PRX 8, 031043
//!    (2018)): key pulses whose phase slices match or are opposite; Alice's bit is her key
//!    phase, Bob's his own corrected by the detector and by an opposite slice.
//! 4. Tallies ([`TfTally`]): single clicks per decoy-setting pair, and the matched-slice
//!    pairs (SNS: weak decoys; PM: the key pairs) with their errors, the detector that
//!    should have stayed dark.

use crate::sift::{abort_before_announcing, abort_on, expect, log_entries, receive_opening};
use crate::sift_mdi::{receive_relay, same_pulses};
use crate::{DriveError, Transport};
use qkdnet_core::bits::Bits;
use qkdnet_distill::auth::AuthKeys;
use qkdnet_distill::session::{AuthChannel, SessionError};
use qkdnet_wire::{Message, RelayEvent, TfChoice};

/// The protocol both users run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TfProtocol {
    /// Phase-matching (else sending-or-not-sending).
    pub pm: bool,
    /// Phase slices M of the random phase.
    pub phase_slices: u16,
}

/// A user's log of one pulse (the emulator's setting and phase slice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TfSent {
    /// Pulse number.
    pub pulse: u64,
    /// Setting 0..5: 0 key window not sending (PM: phase 0), 1 sending (PM: phase π),
    /// 2–4 decoy windows (vacuum, weak, strong).
    pub setting: u8,
    /// Phase slice of the random phase.
    pub slice: u16,
}

/// A batch's relay clicks as both users count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TfTally {
    /// Raw key bits (SNS: both key windows; PM: matched key pairs).
    pub key: u64,
    /// Single clicks per decoy-setting pair (Alice's vacuum/weak/strong, Bob's).
    pub decoy: [[u64; 3]; 3],
    /// Matched-slice pairs (SNS: weak decoys; PM: key pairs) that clicked.
    pub matched: u64,
    /// Of which on the detector that should have stayed dark.
    pub matched_errors: u64,
}

/// One user's result of a twin-field sifting exchange.
pub struct TfSifted {
    /// This user's key bits, in pulse order.
    pub key: Bits,
    /// The tallies.
    pub tally: TfTally,
}

impl std::fmt::Debug for TfSifted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key bits are never printed.
        f.debug_struct("TfSifted")
            .field("key_bits", &self.key.len())
            .field("tally", &self.tally)
            .finish()
    }
}

/// What a user discloses of one pulse.
fn disclose(s: &TfSent, p: &TfProtocol) -> TfChoice {
    if s.setting < 2 {
        TfChoice {
            window: 0,
            slice: if p.pm { s.slice } else { 0 },
        }
    } else {
        TfChoice {
            window: s.setting.min(4),
            slice: s.slice,
        }
    }
}

/// Whether two slices are equal (`Some(false)`), opposite (`Some(true)`) or neither.
fn slice_match(a: u16, b: u16, m: u16) -> Option<bool> {
    if a == b {
        Some(false)
    } else if m.is_multiple_of(2) && m > 0 && (a % m + m / 2) % m == b % m {
        Some(true)
    } else {
        None
    }
}

/// Both users' common arithmetic: walks the clicks with this user's own settings (`mine`)
/// and the other's disclosed choices, returning this user's key and the tallies.
fn sift_clicks(
    events: &[RelayEvent],
    mine: &[&TfSent],
    theirs: &[TfChoice],
    alice: bool,
    p: &TfProtocol,
) -> (Bits, TfTally) {
    let mut key = Bits::zeros(0);
    let mut t = TfTally::default();
    for ((e, s), o) in events.iter().zip(mine).zip(theirs) {
        let me = disclose(s, p);
        // Alice's and Bob's disclosed choices.
        let (a, b) = if alice { (me, *o) } else { (*o, me) };
        if a.window >= 2 && b.window >= 2 {
            t.decoy[usize::from(a.window - 2)][usize::from(b.window - 2)] += 1;
        }
        let detector = e.bell & 1;
        if p.pm {
            if a.window == 0 && b.window == 0 {
                if let Some(opposite) = slice_match(a.slice, b.slice, p.phase_slices) {
                    t.key += 1;
                    t.matched += 1;
                    let own = s.setting & 1;
                    // Alice's phase ⊕ Bob's = detector ⊕ opposite when nothing went wrong.
                    let bit = if alice {
                        own
                    } else {
                        own ^ detector ^ u8::from(opposite)
                    };
                    key.push(bit == 1);
                    // Errors are found by reconciliation: the key bits do not disclose it.
                }
            }
        } else {
            if a.window == 0 && b.window == 0 {
                t.key += 1;
                key.push(if alice {
                    s.setting == 1
                } else {
                    s.setting == 0
                });
            }
            if a.window == 3 && b.window == 3 {
                if let Some(opposite) = slice_match(a.slice, b.slice, p.phase_slices) {
                    t.matched += 1;
                    // The detector bright at δ = 0 is 0; an opposite slice swaps them.
                    t.matched_errors += u64::from(detector != u8::from(opposite));
                }
            }
        }
    }
    (key, t)
}

/// The user's log entries for the relay's events (`log` sorted by pulse).
fn states_of<'a>(log: &'a [TfSent], events: &[RelayEvent]) -> Result<Vec<&'a TfSent>, String> {
    log_entries(log, |s| s.pulse, events.iter().map(|e| e.pulse))
        .map_err(|e| format!("relay event: {e}"))
}

/// Bob's side of batch `batch`: the relay's clicks, then the exchange with Alice (two pads
/// of the users' pool at Bob's cursor).
pub fn sift_bob(
    relay: &mut dyn Transport,
    auth_relay: &mut AuthKeys,
    alice: &mut dyn Transport,
    auth: &mut AuthKeys,
    batch: u64,
    log: &[TfSent],
    p: &TfProtocol,
) -> Result<TfSifted, DriveError> {
    let events = receive_relay(relay, auth_relay, batch)?;
    let mine = states_of(log, &events)
        .map_err(|reason| abort_before_announcing(alice, auth, batch, reason))?;
    let mut chan = AuthChannel::new(batch, auth.cursor());
    let msg = Message::TfAnnounce {
        pad_offset: auth.cursor(),
        events: events
            .iter()
            .zip(&mine)
            .map(|(e, s)| (e.pulse, disclose(s, p)))
            .collect(),
    };
    alice.send(&chan.send(auth, &msg)?)?;
    let theirs = expect(
        chan.receive(auth, &alice.recv()?)?,
        "TfReply",
        |m| match m {
            Message::TfReply(r) => Some(r),
            _ => None,
        },
    )?;
    if theirs.len() != events.len() {
        return Err(SessionError::Protocol(format!(
            "TfReply: {} choices for {} relay clicks",
            theirs.len(),
            events.len()
        ))
        .into());
    }
    let (key, tally) = sift_clicks(&events, &mine, &theirs, false, p);
    Ok(TfSifted { key, tally })
}

/// Alice's side of batch `batch`: the relay's clicks, Bob's announcement checked against
/// them, and her reply. A failure is told to Bob with an `Abort`.
pub fn sift_alice(
    relay: &mut dyn Transport,
    auth_relay: &mut AuthKeys,
    bob: &mut dyn Transport,
    auth: &mut AuthKeys,
    batch: u64,
    log: &[TfSent],
    p: &TfProtocol,
) -> Result<TfSifted, DriveError> {
    let events = receive_relay(relay, auth_relay, batch)?;
    let (mut chan, msg) = receive_opening(bob, auth, batch)?;
    let theirs = expect(msg, "TfAnnounce", |m| match m {
        Message::TfAnnounce { events, .. } => Some(events),
        _ => None,
    })?;
    let mine = same_pulses(&events, theirs.iter().map(|b| b.0))
        .and_then(|()| states_of(log, &events))
        .map_err(|reason| abort_on(bob, auth, &mut chan, reason))?;
    let theirs: Vec<TfChoice> = theirs.into_iter().map(|(_, c)| c).collect();
    let reply: Vec<TfChoice> = mine.iter().map(|s| disclose(s, p)).collect();
    bob.send(&chan.send(auth, &Message::TfReply(reply))?)?;
    let (key, tally) = sift_clicks(&events, &mine, &theirs, true, p);
    Ok(TfSifted { key, tally })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sift_mdi::relay_announce;

    #[test]
    fn sns_keys_and_a_click_missing_from_a_log() {
        let p = TfProtocol {
            pm: false,
            phase_slices: 16,
        };
        let ev = |pulse, d| RelayEvent { pulse, bell: d };
        let sent = |pulse, setting, slice| TfSent {
            pulse,
            setting,
            slice,
        };
        // Alice sends / Bob not (bit 1 both), both send (error), weak decoys with the same
        // slice on detector 0 (right) and opposite slices on detector 0 (wrong).
        let events = vec![ev(1, 0), ev(4, 1), ev(6, 0), ev(9, 0)];
        let log_a = vec![sent(1, 1, 3), sent(4, 1, 5), sent(6, 3, 2), sent(9, 3, 2)];
        let log_b = vec![sent(1, 0, 7), sent(4, 1, 1), sent(6, 3, 2), sent(9, 3, 10)];
        let run = |log_b: Vec<TfSent>| {
            let (mut ra, mut ar) = crate::MemTransport::pair();
            let (mut rb, mut br) = crate::MemTransport::pair();
            let (mut ab, mut ba) = crate::MemTransport::pair();
            let (mut ka, mut kb) = (
                AuthKeys::from_preshared(crate::sift::test_psk(1)).unwrap(),
                AuthKeys::from_preshared(crate::sift::test_psk(2)).unwrap(),
            );
            relay_announce(&mut ra, &mut ka, &mut rb, &mut kb, 0, &events).unwrap();
            let bob = std::thread::spawn(move || {
                let mut kr = AuthKeys::from_preshared(crate::sift::test_psk(2)).unwrap();
                let mut k = AuthKeys::from_preshared(crate::sift::test_psk(3)).unwrap();
                sift_bob(&mut br, &mut kr, &mut ba, &mut k, 0, &log_b, &p)
            });
            let mut kr = AuthKeys::from_preshared(crate::sift::test_psk(1)).unwrap();
            let mut k = AuthKeys::from_preshared(crate::sift::test_psk(3)).unwrap();
            let a = sift_alice(&mut ar, &mut kr, &mut ab, &mut k, 0, &log_a, &p);
            (a, bob.join().unwrap())
        };
        let (a, b) = run(log_b.clone());
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.tally, b.tally);
        assert_eq!(a.tally.key, 2);
        assert_eq!((a.tally.matched, a.tally.matched_errors), (2, 1));
        assert_eq!(a.tally.decoy[1][1], 2);
        assert_eq!(a.key.hamming_distance(&b.key), 1);
        // Bob's log lacks a click the relay announced: he tells Alice and both stop.
        let (a, b) = run(log_b[1..].to_vec());
        assert!(format!("{b:?}").contains("not in the user's log"), "{b:?}");
        assert!(a.is_err());
    }
}
