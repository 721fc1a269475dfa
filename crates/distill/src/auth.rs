//! Wegman–Carter authentication of classical messages (Wegman & Carter, JCSS 22, 265
//! (1981)), with accounted key consumption.
//!
//! `tag(m) = trunc₆₄(H_k(m)) ⊕ pad_i`: `H` is the polynomial hash of [`crate::polyhash`]
//! with a long-lived key `k` (128 bits), `pad_i` the i-th 64-bit one-time pad from the
//! pool. Because the truncated polynomial hash is `(L+1)/2⁶⁴`-almost-XOR-universal and every
//! pad is used once, `k` may be reused, and an adversary who has seen any number of tagged
//! messages forges a tag for a new message of `L` blocks with probability at most
//! `(L+1)/2⁶⁴` (Stinson, "Universal hashing and authentication codes", Des. Codes Cryptogr.
//! 4, 369 (1994), Thm. on AXU + one-time pad). [`AuthKeys::forgery_bound`] sums this over
//! the messages checked.
//!
//! The pool starts from a pre-shared key and is replenished from produced keys; both ends
//! consume pads at the same indices (a session's pad index is its `pad_offset` plus the
//! message's sequence number), so no pad is used twice even when a session aborts.

use crate::polyhash::PolyHash;
use qkdnet_core::Bits;
use zeroize::Zeroize;

/// Bits per tag and per pad.
pub const TAG_BITS: u32 = 64;

/// Authentication failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The pre-shared key is too short.
    #[error(
        "pre-shared key has {got} bits; at least {need} are needed (128 hash-key bits + pads)"
    )]
    ShortPsk {
        /// Bits supplied.
        got: usize,
        /// Bits needed.
        need: usize,
    },
    /// The pad at this index is not available (consumed or never supplied).
    #[error("authentication pad {index} is unavailable (pool holds pads {first}..{end})")]
    Exhausted {
        /// Pad index asked for.
        index: u64,
        /// First pad still held.
        first: u64,
        /// One past the last pad held.
        end: u64,
    },
    /// The tag does not match: the message was altered or forged.
    #[error("authentication tag mismatch on message {seq}")]
    BadTag {
        /// Sequence number of the message.
        seq: u32,
    },
}

/// The authentication key material of one link end. No `Debug`, no `Clone`; zeroized on
/// drop.
pub struct AuthKeys {
    hash_key: u128,
    /// Pad words; pad `first` is `pads[pos]`.
    pads: Vec<u64>,
    pos: usize,
    first: u64,
    /// Pads handed out, bits (for accounting).
    consumed_bits: u64,
    /// Bits added from produced keys.
    replenished_bits: u64,
    /// Σ (L+1)/2⁶⁴ over checked messages.
    forgery_bound: f64,
}

impl Drop for AuthKeys {
    fn drop(&mut self) {
        self.hash_key.zeroize();
        self.pads.zeroize();
    }
}

impl AuthKeys {
    /// From a pre-shared key: the first 128 bits are the hash key, the rest pads.
    pub fn from_preshared(psk: Bits) -> Result<Self, AuthError> {
        let need = 128 + TAG_BITS as usize;
        if psk.len() < need {
            return Err(AuthError::ShortPsk {
                got: psk.len(),
                need,
            });
        }
        let w = psk.words();
        let hash_key = u128::from(w[0]) | (u128::from(w[1]) << 64);
        let usable = (psk.len() - 128) / 64 * 64;
        let pads = psk.slice(128, 128 + usable).words().to_vec();
        Ok(Self {
            hash_key,
            pads,
            pos: 0,
            first: 0,
            consumed_bits: 0,
            replenished_bits: 0,
            forgery_bound: 0.0,
        })
    }

    /// From stored parts: the 128-bit hash key, and pads whose first is pad `first` (a
    /// pool kept on disk between sessions; whole 64-bit pads, a remainder is dropped).
    pub fn from_parts(hash_key: &Bits, first: u64, pads: &Bits) -> Result<Self, AuthError> {
        if hash_key.len() != 128 {
            return Err(AuthError::ShortPsk {
                got: hash_key.len(),
                need: 128,
            });
        }
        let w = hash_key.words();
        let usable = pads.len() / TAG_BITS as usize;
        Ok(Self {
            hash_key: u128::from(w[0]) | (u128::from(w[1]) << 64),
            pads: pads.words()[..usable].to_vec(),
            pos: 0,
            first,
            consumed_bits: 0,
            replenished_bits: 0,
            forgery_bound: 0.0,
        })
    }

    /// Index one past the last pad held.
    pub fn end(&self) -> u64 {
        self.first + (self.pads.len() - self.pos) as u64
    }

    /// The lowest pad index still unused.
    pub fn cursor(&self) -> u64 {
        self.first
    }

    /// Pads still available.
    pub fn available_pads(&self) -> u64 {
        self.end() - self.first
    }

    /// Key bits consumed by tags so far.
    pub fn consumed_bits(&self) -> u64 {
        self.consumed_bits
    }

    /// Key bits added by [`AuthKeys::replenish`].
    pub fn replenished_bits(&self) -> u64 {
        self.replenished_bits
    }

    /// Upper bound on the probability that any message checked so far was a forgery that
    /// passed.
    pub fn forgery_bound(&self) -> f64 {
        self.forgery_bound
    }

    /// Takes pad `index`, discarding every pad below it (never reused).
    fn take_pad(&mut self, index: u64) -> Result<u64, AuthError> {
        if index < self.first || index >= self.end() {
            return Err(AuthError::Exhausted {
                index,
                first: self.first,
                end: self.end(),
            });
        }
        let at = self.pos + (index - self.first) as usize;
        let pad = self.pads[at];
        // Used and skipped pads are wiped at once.
        self.pads[self.pos..=at].zeroize();
        self.pos = at + 1;
        self.consumed_bits += (index + 1 - self.first) * u64::from(TAG_BITS);
        self.first = index + 1;
        Ok(pad)
    }

    fn mac(&self, data: &[u8]) -> u64 {
        let mut h = PolyHash::new(self.hash_key);
        h.update(data);
        h.finish() as u64
    }

    /// The tag of `data` with pad `index`.
    pub fn tag(&mut self, index: u64, data: &[u8]) -> Result<u64, AuthError> {
        let pad = self.take_pad(index)?;
        Ok(self.mac(data) ^ pad)
    }

    /// Checks `tag` on `data` with pad `index` (consumed either way).
    pub fn check(&mut self, index: u64, data: &[u8], tag: u64, seq: u32) -> Result<(), AuthError> {
        let pad = self.take_pad(index)?;
        self.forgery_bound +=
            (crate::polyhash::blocks_for(8 * data.len() as u64) as f64 + 1.0) / 2f64.powi(64);
        let expect = self.mac(data) ^ pad;
        // Constant-time comparison.
        if (expect ^ tag) != 0 {
            return Err(AuthError::BadTag { seq });
        }
        Ok(())
    }

    /// Hands pads `at .. at + n` to a separate pool for one session, so that several
    /// sessions can run at once without sharing pad indices. Pads below `at` are
    /// discarded. The `n` pads count as consumed here when reserved (a session that
    /// ends early leaves the rest unused, never reused). Return the child with
    /// [`AuthKeys::absorb`] to carry its forgery bound back.
    pub fn reserve(&mut self, at: u64, n: u64) -> Result<AuthKeys, AuthError> {
        if n == 0 || at < self.first || at.saturating_add(n) > self.end() {
            return Err(AuthError::Exhausted {
                index: at.saturating_add(n.max(1) - 1),
                first: self.first,
                end: self.end(),
            });
        }
        let start = self.pos + (at - self.first) as usize;
        let pads = self.pads[start..start + n as usize].to_vec();
        self.pads[self.pos..start + n as usize].zeroize();
        self.pos = start + n as usize;
        self.consumed_bits += (at + n - self.first) * u64::from(TAG_BITS);
        self.first = at + n;
        Ok(AuthKeys {
            hash_key: self.hash_key,
            pads,
            pos: 0,
            first: at,
            consumed_bits: 0,
            replenished_bits: 0,
            forgery_bound: 0.0,
        })
    }

    /// Takes back a pool made by [`AuthKeys::reserve`]: its forgery bound is added here;
    /// its unused pads are wiped.
    pub fn absorb(&mut self, child: AuthKeys) {
        self.forgery_bound += child.forgery_bound;
    }

    /// Appends pads cut from a produced key (whole 64-bit pads; a remainder is dropped).
    pub fn replenish(&mut self, key: &Bits) {
        let usable = key.len() / TAG_BITS as usize;
        self.pads.drain(..self.pos);
        self.pos = 0;
        self.pads.extend_from_slice(&key.words()[..usable]);
        self.replenished_bits += usable as u64 * u64::from(TAG_BITS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_pools_are_disjoint_and_accounted() {
        let mut a = AuthKeys::from_preshared(psk(128 + 64 * 100, 1)).unwrap();
        let mut b = AuthKeys::from_preshared(psk(128 + 64 * 100, 1)).unwrap();
        let mut a1 = a.reserve(0, 10).unwrap();
        let mut a2 = a.reserve(10, 10).unwrap();
        assert_eq!(a.cursor(), 20);
        assert_eq!(a.consumed_bits(), 20 * 64);
        // Bob reserves the same ranges; sessions interleave freely.
        let mut b1 = b.reserve(0, 10).unwrap();
        let mut b2 = b.reserve(10, 10).unwrap();
        let t2 = a2.tag(10, b"second").unwrap();
        let t1 = a1.tag(0, b"first").unwrap();
        b2.check(10, b"second", t2, 0).unwrap();
        b1.check(0, b"first", t1, 0).unwrap();
        // A child cannot reach outside its range; the parent cannot reuse it.
        assert!(a1.tag(10, b"x").is_err());
        assert!(a.tag(5, b"x").is_err());
        assert!(a.reserve(15, 3).is_err());
        assert!(a.reserve(90, 20).is_err());
        b.absorb(b1);
        b.absorb(b2);
        assert!(b.forgery_bound() > 0.0);
    }

    fn psk(bits: usize, seed: u64) -> Bits {
        let words: Vec<u64> = (0..bits.div_ceil(64) as u64)
            .map(|i| (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed)
            .collect();
        Bits::from_words(words, bits)
    }

    #[test]
    fn tags_verify_once_and_forgeries_fail() {
        let mut a = AuthKeys::from_preshared(psk(128 + 64 * 4, 1)).unwrap();
        let mut b = AuthKeys::from_preshared(psk(128 + 64 * 4, 1)).unwrap();
        let t = a.tag(0, b"hello").unwrap();
        b.check(0, b"hello", t, 0).unwrap();
        // Same pad index again: consumed.
        assert!(matches!(a.tag(0, b"x"), Err(AuthError::Exhausted { .. })));
        let t = a.tag(1, b"message").unwrap();
        assert_eq!(
            b.check(1, b"messagE", t, 1),
            Err(AuthError::BadTag { seq: 1 })
        );
        // Skipping ahead discards lower pads.
        let t = a.tag(3, b"z").unwrap();
        b.check(3, b"z", t, 3).unwrap();
        assert_eq!(a.available_pads(), 0);
        assert_eq!(a.consumed_bits(), 256);
        a.replenish(&psk(130, 2));
        assert_eq!(a.available_pads(), 2);
        assert!(b.forgery_bound() > 0.0 && b.forgery_bound() < 1e-18);
        assert!(matches!(
            AuthKeys::from_preshared(psk(100, 0)),
            Err(AuthError::ShortPsk { .. })
        ));
    }
}
