//! MDI-QKD sifting among the relay and the two users over [`Transport`]s.
//!
//! 1. The relay announces, to each user, the pulses whose Bell-state measurement succeeded
//!    and the state found, ψ⁻ or ψ⁺ (`RelayAnnounce`, authenticated with a pad of that
//!    user's pool shared with the relay). The relay learns nothing of the key: MDI's
//!    security does not rest on it.
//! 2. Bob announces to Alice, for each announced pulse, his basis and intensity, and his bit
//!    in the test basis X (`BasisAnnounce`); Alice checks that both were told the same
//!    pulses and answers with her basis and intensity for each, and the X-basis errors per
//!    intensity pair (`BasisReply`): with ψ⁻ the users' X bits anticorrelate, with ψ⁺ they
//!    correlate (Lo, Curty & Qi, PRL 108, 130503 (2012)).
//! 3. Both keep the pulses where both sent Z at the signal intensity: Alice's bit, and Bob's
//!    flipped (both Bell states anticorrelate the Z bits), with the counts the MDI bound takes
//!    ([`MdiTally`]; the pulses sent per intensity pair follow from the batch's length and
//!    the users' public probabilities).

use crate::sift::{abort_before_announcing, abort_on, expect, log_entries, receive_opening};
use crate::{DriveError, Transport};
use qkdnet_core::bits::Bits;
use qkdnet_distill::auth::AuthKeys;
use qkdnet_distill::session::{AuthChannel, SessionError};
use qkdnet_wire::{BasisEvent, BasisReply, Message, RelayEvent};

/// A user's log of one pulse: basis (0 Z, 1 X), bit, intensity index (Z: 0 = signal; X:
/// 0 = vacuum, 1 = ν, 2 = μ), as the emulator's `mdi::State`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Pulse number.
    pub pulse: u64,
    /// Basis.
    pub basis: u8,
    /// Bit.
    pub bit: u8,
    /// Intensity index.
    pub intensity: u8,
}

/// The relay events of a batch as the MDI bound takes them (the same at both users).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MdiTally {
    /// Both sent Z: the raw key's length.
    pub z_events: u64,
    /// Both sent X, per intensity pair (Alice's, Bob's).
    pub x_events: [[u64; 3]; 3],
    /// Of which with the wrong correlation for the announced Bell state.
    pub x_errors: [[u64; 3]; 3],
}

/// One user's result of an MDI sifting exchange.
pub struct MdiSifted {
    /// This user's key bits (both sent Z), in pulse order; Bob's already flipped.
    pub key: Bits,
    /// The tallies.
    pub tally: MdiTally,
}

impl std::fmt::Debug for MdiSifted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key bits are never printed.
        f.debug_struct("MdiSifted")
            .field("key_bits", &self.key.len())
            .field("tally", &self.tally)
            .finish()
    }
}

/// The relay's side: announces `events` (pulses strictly increasing) of batch `batch` to
/// both users, each message authenticated with a pad of that user's pool. The twin-field
/// relay announces its single clicks the same way, the detector as the outcome.
pub fn relay_announce(
    to_alice: &mut dyn Transport,
    auth_alice: &mut AuthKeys,
    to_bob: &mut dyn Transport,
    auth_bob: &mut AuthKeys,
    batch: u64,
    events: &[RelayEvent],
) -> Result<(), DriveError> {
    announce_to(to_alice, auth_alice, batch, events)?;
    announce_to(to_bob, auth_bob, batch, events)?;
    Ok(())
}

fn announce_to(
    t: &mut dyn Transport,
    auth: &mut AuthKeys,
    batch: u64,
    events: &[RelayEvent],
) -> Result<(), DriveError> {
    let mut chan = AuthChannel::new(batch, auth.cursor());
    let msg = Message::RelayAnnounce {
        pad_offset: auth.cursor(),
        events: events.to_vec(),
    };
    t.send(&chan.send(auth, &msg)?)?;
    Ok(())
}

/// A user receives the relay's announcement of batch `batch`.
pub(crate) fn receive_relay(
    t: &mut dyn Transport,
    auth: &mut AuthKeys,
    batch: u64,
) -> Result<Vec<RelayEvent>, DriveError> {
    let bytes = t.recv()?;
    let env = qkdnet_wire::Envelope::parse(&bytes, qkdnet_wire::DEFAULT_MAX_PAYLOAD)
        .map_err(SessionError::from)?;
    let Ok(Message::RelayAnnounce { pad_offset, .. }) =
        env.message(&qkdnet_wire::Limits::default())
    else {
        return Err(SessionError::Protocol(format!(
            "batch {batch}: expected RelayAnnounce, got {}",
            env.header.message_type
        ))
        .into());
    };
    if pad_offset < auth.cursor() {
        return Err(SessionError::Protocol(format!(
            "RelayAnnounce: pad {pad_offset} below the cursor {} (reuse)",
            auth.cursor()
        ))
        .into());
    }
    let msg = AuthChannel::new(batch, pad_offset).receive(auth, &bytes)?;
    expect(msg, "RelayAnnounce", |m| match m {
        Message::RelayAnnounce { events, .. } => Some(events),
        _ => None,
    })
}

/// Alice's check that the relay told Bob (`theirs`, his announcement's pulses) the same
/// events as her.
pub(crate) fn same_pulses(
    events: &[RelayEvent],
    theirs: impl ExactSizeIterator<Item = u64>,
) -> Result<(), String> {
    let n = theirs.len();
    if n != events.len() || theirs.zip(events).any(|(b, r)| b != r.pulse) {
        return Err(format!(
            "the relay told Alice {} events and Bob {n}, or different pulses",
            events.len()
        ));
    }
    Ok(())
}

/// The user's log entries for the relay's events (`log` sorted by pulse).
fn states_of<'a>(log: &'a [Sent], events: &[RelayEvent]) -> Result<Vec<&'a Sent>, String> {
    log_entries(log, |s| s.pulse, events.iter().map(|e| e.pulse))
        .map_err(|e| format!("relay event: {e}"))
}

/// Bob's side of batch `batch`: the relay's announcement, then the exchange with Alice
/// (two pads of the users' pool at Bob's cursor).
pub fn sift_bob(
    relay: &mut dyn Transport,
    auth_relay: &mut AuthKeys,
    alice: &mut dyn Transport,
    auth: &mut AuthKeys,
    batch: u64,
    log: &[Sent],
) -> Result<MdiSifted, DriveError> {
    let events = receive_relay(relay, auth_relay, batch)?;
    let mine = states_of(log, &events)
        .map_err(|reason| abort_before_announcing(alice, auth, batch, reason))?;
    let announced: Vec<BasisEvent> = events
        .iter()
        .zip(&mine)
        .map(|(e, s)| BasisEvent {
            pulse: e.pulse,
            code: (if s.basis == 0 { 0 } else { 1 + (s.bit & 1) }) | (s.intensity.min(2) << 2),
        })
        .collect();
    let mut chan = AuthChannel::new(batch, auth.cursor());
    let msg = Message::BasisAnnounce {
        pad_offset: auth.cursor(),
        events: announced,
    };
    alice.send(&chan.send(auth, &msg)?)?;
    let reply = expect(
        chan.receive(auth, &alice.recv()?)?,
        "BasisReply",
        |m| match m {
            Message::BasisReply(r) => Some(r),
            _ => None,
        },
    )?;
    if reply.choices.len() != events.len() || reply.test_errors.len() != 9 {
        return Err(SessionError::Protocol(format!(
            "BasisReply: {} choices and {} error counts for {} relay events",
            reply.choices.len(),
            reply.test_errors.len(),
            events.len()
        ))
        .into());
    }
    let mut key = Bits::zeros(0);
    let mut tally = MdiTally::default();
    for (s, &c) in mine.iter().zip(&reply.choices) {
        let (basis, i) = (c & 1, usize::from(c >> 1).min(2));
        match (basis, s.basis) {
            (0, 0) if i == 0 && s.intensity == 0 => {
                tally.z_events += 1;
                key.push(s.bit & 1 == 0);
            }
            (1, 1) => tally.x_events[i][usize::from(s.intensity.min(2))] += 1,
            _ => {}
        }
    }
    for i in 0..3 {
        for j in 0..3 {
            tally.x_errors[i][j] = reply.test_errors[3 * i + j];
            if tally.x_errors[i][j] > tally.x_events[i][j] {
                return Err(SessionError::Protocol(format!(
                    "BasisReply: {} X errors at intensities ({i}, {j}) among {} events",
                    tally.x_errors[i][j], tally.x_events[i][j]
                ))
                .into());
            }
        }
    }
    Ok(MdiSifted { key, tally })
}

/// Alice's side of batch `batch`: the relay's announcement, then Bob's, checked against
/// it, and her reply. A failure is told to Bob with an `Abort`.
pub fn sift_alice(
    relay: &mut dyn Transport,
    auth_relay: &mut AuthKeys,
    bob: &mut dyn Transport,
    auth: &mut AuthKeys,
    batch: u64,
    log: &[Sent],
) -> Result<MdiSifted, DriveError> {
    let events = receive_relay(relay, auth_relay, batch)?;
    let (mut chan, msg) = receive_opening(bob, auth, batch)?;
    let theirs = expect(msg, "BasisAnnounce", |m| match m {
        Message::BasisAnnounce { events, .. } => Some(events),
        _ => None,
    })?;
    let mine = same_pulses(&events, theirs.iter().map(|b| b.pulse))
        .and_then(|()| states_of(log, &events))
        .map_err(|reason| abort_on(bob, auth, &mut chan, reason))?;
    let mut key = Bits::zeros(0);
    let mut tally = MdiTally::default();
    let mut choices = Vec::with_capacity(events.len());
    for ((s, b), r) in mine.iter().zip(&theirs).zip(&events) {
        let i = s.intensity.min(2);
        choices.push((s.basis & 1) | (i << 1));
        let (kind, j) = (b.code & 3, usize::from(b.code >> 2).min(2));
        match (s.basis, kind) {
            (0, 0) if i == 0 && j == 0 => {
                tally.z_events += 1;
                key.push(s.bit & 1 == 1);
            }
            (1, 1 | 2) => {
                let i = usize::from(i);
                tally.x_events[i][j] += 1;
                let equal = (s.bit & 1) == kind - 1;
                // ψ⁻ anticorrelates the X bits, ψ⁺ correlates them.
                let error = if r.bell == 0 { equal } else { !equal };
                tally.x_errors[i][j] += u64::from(error);
            }
            _ => {}
        }
    }
    let reply = BasisReply {
        choices,
        test_errors: tally.x_errors.iter().flatten().copied().collect(),
    };
    bob.send(&chan.send(auth, &Message::BasisReply(reply))?)?;
    Ok(MdiSifted { key, tally })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_that_tells_the_users_different_pulses_is_caught() {
        let ev = |pulse| RelayEvent { pulse, bell: 0 };
        let log: Vec<Sent> = [3u64, 5, 9]
            .iter()
            .map(|&pulse| Sent {
                pulse,
                basis: 0,
                bit: 1,
                intensity: 0,
            })
            .collect();
        let (mut ra, mut ar) = crate::MemTransport::pair();
        let (mut rb, mut br) = crate::MemTransport::pair();
        let (mut ab, mut ba) = crate::MemTransport::pair();
        // The relay tells Alice pulses 3 and 5, Bob 3 and 9.
        let (mut ka, mut kb) = (
            AuthKeys::from_preshared(crate::sift::test_psk(1)).unwrap(),
            AuthKeys::from_preshared(crate::sift::test_psk(2)).unwrap(),
        );
        announce_to(&mut ra, &mut ka, 0, &[ev(3), ev(5)]).unwrap();
        announce_to(&mut rb, &mut kb, 0, &[ev(3), ev(9)]).unwrap();
        let log_b = log.clone();
        let bob = std::thread::spawn(move || {
            let mut kr = AuthKeys::from_preshared(crate::sift::test_psk(2)).unwrap();
            let mut k = AuthKeys::from_preshared(crate::sift::test_psk(3)).unwrap();
            sift_bob(&mut br, &mut kr, &mut ba, &mut k, 0, &log_b)
        });
        let mut kr = AuthKeys::from_preshared(crate::sift::test_psk(1)).unwrap();
        let mut k = AuthKeys::from_preshared(crate::sift::test_psk(3)).unwrap();
        let a = sift_alice(&mut ar, &mut kr, &mut ab, &mut k, 0, &log);
        assert!(format!("{a:?}").contains("different pulses"), "{a:?}");
        let b = bob.join().unwrap();
        assert!(
            matches!(
                b,
                Err(DriveError::Session(SessionError::PeerAborted { .. }))
            ),
            "{b:?}"
        );
    }
}
