//! Actively odd-parity pairing (AOPP) for sending-or-not-sending twin-field QKD (Xu, Yu,
//! Jiang, Hu, Wang, PRA 101, 042330 (2020), §II), the step between sifting and error
//! correction that brings SNS's high raw error rate down.
//!
//! SNS raw bits (Alice's bit: she sent; Bob's: he did not send) are wrong when both or
//! neither sent, which happens often. Bob sorts his bits by value and pairs each 0 with a
//! 1, in random order within the pair, and announces the pairs ([`bob_pairs`]). His parity
//! is odd by construction; Alice answers which pairs are odd for her too ([`alice_odd`]).
//! Both keep the first bit of each odd pair ([`kept`]) and drop the rest. A kept bit is
//! wrong only if both of the pair's bits were, so with group error rates `e₀`, `e₁` the
//! kept error rate is `e₀e₁ / ((1−e₀)(1−e₁) + e₀e₁)`. The announcements reveal Bob's
//! parity (always odd) and Alice's (odd in kept pairs), never a kept bit; the phase error
//! of the kept untagged pairs is bounded in `keyrate::tf` (Xu et al. 2020, Eq. (7)).

use qkdnet_core::Bits;
use rand::Rng;

/// Why an AOPP announcement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AoppError {
    /// A pair names a position outside the raw key.
    #[error("AOPP pair {pair} names bit {position}, past the {len}-bit raw key")]
    OutOfRange {
        /// The pair's index.
        pair: usize,
        /// The position named.
        position: u32,
        /// Raw key length.
        len: usize,
    },
    /// A pair names one bit twice, or a bit another pair already took.
    #[error("AOPP pair {pair} reuses bit {position}")]
    Reused {
        /// The pair's index.
        pair: usize,
        /// The position named again.
        position: u32,
    },
    /// Alice's answer does not cover Bob's pairs one to one.
    #[error("AOPP answer for {answered} pairs, {pairs} announced")]
    AnswerLength {
        /// Pairs answered.
        answered: usize,
        /// Pairs announced.
        pairs: usize,
    },
}

/// Bob's pairs over his raw key `bob`: every pair holds one of his 1s (not sent) and one
/// of his 0s (sent), in random order, `min(#0, #1)` pairs; the bits left over are dropped.
pub fn bob_pairs(bob: &Bits, rng: &mut impl Rng) -> Vec<(u32, u32)> {
    let (mut ones, mut zeros): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
    for i in 0..bob.len() {
        if bob.get(i) {
            ones.push(i as u32);
        } else {
            zeros.push(i as u32);
        }
    }
    // A random matching: shuffle the larger group, pair in order.
    let (small, large) = if ones.len() <= zeros.len() {
        (&ones, &mut zeros)
    } else {
        (&zeros, &mut ones)
    };
    for i in 0..small.len().min(large.len().saturating_sub(1)) {
        let j = rng.gen_range(i..large.len());
        large.swap(i, j);
    }
    let mut pairs: Vec<(u32, u32)> = small
        .iter()
        .zip(large.iter())
        .map(|(&s, &l)| if rng.gen::<bool>() { (s, l) } else { (l, s) })
        .collect();
    // In random order, so the position of a pair in the list says nothing either.
    for i in (1..pairs.len()).rev() {
        let j = rng.gen_range(0..=i);
        pairs.swap(i, j);
    }
    pairs
}

/// Checks Bob's announced pairs against a raw key of `len` bits: in range, no bit used
/// twice.
pub fn check_pairs(pairs: &[(u32, u32)], len: usize) -> Result<(), AoppError> {
    let mut used = Bits::zeros(len);
    for (k, &(a, b)) in pairs.iter().enumerate() {
        for p in [a, b] {
            if p as usize >= len {
                return Err(AoppError::OutOfRange {
                    pair: k,
                    position: p,
                    len,
                });
            }
            if used.get(p as usize) {
                return Err(AoppError::Reused {
                    pair: k,
                    position: p,
                });
            }
            used.set(p as usize, true);
        }
    }
    Ok(())
}

/// Alice's answer: for each of Bob's pairs, whether her two bits differ (odd parity, as
/// Bob's always is). The pairs are checked first ([`check_pairs`]).
pub fn alice_odd(alice: &Bits, pairs: &[(u32, u32)]) -> Result<Bits, AoppError> {
    check_pairs(pairs, alice.len())?;
    let mut odd = Bits::zeros(pairs.len());
    for (k, &(a, b)) in pairs.iter().enumerate() {
        odd.set(k, alice.get(a as usize) != alice.get(b as usize));
    }
    Ok(odd)
}

/// The key either side keeps from its raw bits: the first bit of every pair Alice found
/// odd, in the pairs' order.
pub fn kept(bits: &Bits, pairs: &[(u32, u32)], odd: &Bits) -> Result<Bits, AoppError> {
    if odd.len() != pairs.len() {
        return Err(AoppError::AnswerLength {
            answered: odd.len(),
            pairs: pairs.len(),
        });
    }
    check_pairs(pairs, bits.len())?;
    let mut out = Bits::zeros(0);
    out.reserve(odd.count_ones());
    for (k, &(a, _)) in pairs.iter().enumerate() {
        if odd.get(k) {
            out.push(bits.get(a as usize));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// SNS raw keys with group error rates: Bob's 1s (not sent) wrong with `e_ns`, his 0s
    /// (sent) with `e_s`.
    fn raw(n_ns: usize, n_s: usize, e_ns: f64, e_s: f64, rng: &mut ChaCha8Rng) -> (Bits, Bits) {
        let mut idx: Vec<bool> = [vec![true; n_ns], vec![false; n_s]].concat();
        for i in (1..idx.len()).rev() {
            let j = rng.gen_range(0..=i);
            idx.swap(i, j);
        }
        let bob = Bits::from_bools(&idx);
        let mut alice = bob.duplicate();
        for (i, &not_sent) in idx.iter().enumerate() {
            let e = if not_sent { e_ns } else { e_s };
            if rng.gen::<f64>() < e {
                alice.flip(i);
            }
        }
        (alice, bob)
    }

    /// The kept key's length and error rate are Xu et al. 2020's: `min(n₀, n₁)` pairs, a
    /// fraction `(1−e₀)(1−e₁) + e₀e₁` kept, error `e₀e₁ / kept` (binomial tolerance at
    /// 5σ, fixed seed); Bob's kept bits are balanced.
    #[test]
    fn kept_key_length_and_errors_follow_the_closed_form() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (n_ns, n_s, e_ns, e_s) = (400_000, 300_000, 0.08, 0.22);
        let (alice, bob) = raw(n_ns, n_s, e_ns, e_s, &mut rng);
        let pairs = bob_pairs(&bob, &mut rng);
        assert_eq!(pairs.len(), n_s);
        let odd = alice_odd(&alice, &pairs).unwrap();
        let (ka, kb) = (
            kept(&alice, &pairs, &odd).unwrap(),
            kept(&bob, &pairs, &odd).unwrap(),
        );
        assert_eq!(ka.len(), kb.len());
        let frac = (1.0 - e_ns) * (1.0 - e_s) + e_ns * e_s;
        let n = pairs.len() as f64;
        let sd = (n * frac * (1.0 - frac)).sqrt();
        assert!(
            (ka.len() as f64 - n * frac).abs() < 5.0 * sd,
            "{}",
            ka.len()
        );
        let e = e_ns * e_s / frac;
        let m = ka.len() as f64;
        let errs = ka.hamming_distance(&kb) as f64;
        assert!(
            (errs - m * e).abs() < 5.0 * (m * e * (1.0 - e)).sqrt(),
            "{errs} errors in {m}, expected {}",
            m * e
        );
        let ones = kb.count_ones() as f64;
        assert!(
            (ones - m / 2.0).abs() < 5.0 * (m / 4.0).sqrt(),
            "{ones} of {m}"
        );
    }

    #[test]
    fn bad_announcements_are_refused() {
        let bits = Bits::from_bools(&[true, false, true, false]);
        assert_eq!(
            alice_odd(&bits, &[(0, 4)]).err(),
            Some(AoppError::OutOfRange {
                pair: 0,
                position: 4,
                len: 4
            })
        );
        assert_eq!(
            alice_odd(&bits, &[(0, 1), (2, 1)]).err(),
            Some(AoppError::Reused {
                pair: 1,
                position: 1
            })
        );
        let odd = Bits::zeros(1);
        assert!(matches!(
            kept(&bits, &[(0, 1), (2, 3)], &odd),
            Err(AoppError::AnswerLength { .. })
        ));
    }
}
