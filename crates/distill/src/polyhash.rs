//! Polynomial universal hashing over GF(2¹²⁸), for key verification and message
//! authentication.
//!
//! For a message split into 128-bit blocks `b₁ … b_L` (the last zero-padded) followed by a
//! length block, `H_k = ((b₁ k ⊕ b₂) k ⊕ … ⊕ b_L) k ⊕ len) k`, a polynomial of degree
//! `L + 1` in the key `k`. Two distinct messages of at most `L` blocks collide for at most
//! `L + 1` keys (the difference is a non-zero polynomial of degree ≤ L + 1 without constant
//! term), so the family is `(L+1)/2¹²⁸`-almost-XOR-universal; keeping the low `t` bits
//! leaves it `(L+1)/2ᵗ`-almost universal, because for each value of the dropped bits the
//! difference polynomial has at most `L + 1` roots (Wegman & Carter, JCSS 22, 265 (1981);
//! Bernstein, "The Poly1305-AES message-authentication code" §3 for the root-counting
//! argument). [`tag_bits_for`] picks `t` from a target collision probability.

use crate::gf128;
use zeroize::Zeroize;

/// Number of 128-bit blocks hashed for `bits` message bits (data blocks plus length).
pub fn blocks_for(bits: u64) -> u64 {
    bits.div_ceil(128) + 1
}

/// Tag length in bits so that two different messages of `message_bits` collide with
/// probability at most `eps` over a uniformly random key: `t = ⌈log₂((L + 1)/ε)⌉`, at most 128.
pub fn tag_bits_for(message_bits: u64, eps: f64) -> u32 {
    let l = blocks_for(message_bits) as f64 + 1.0;
    ((l / eps).log2().ceil() as u32).clamp(1, 128)
}

/// Collision probability of `tag_bits`-bit tags on messages of `message_bits`.
pub fn collision_probability(message_bits: u64, tag_bits: u32) -> f64 {
    (blocks_for(message_bits) as f64 + 1.0) / 2f64.powi(tag_bits as i32)
}

/// Incremental hasher over byte or word input.
#[derive(Clone)]
pub struct PolyHash {
    key: u128,
    acc: u128,
    pending: [u8; 16],
    pending_len: usize,
    total_bytes: u64,
}

impl Drop for PolyHash {
    fn drop(&mut self) {
        self.key.zeroize();
        self.acc.zeroize();
        self.pending.zeroize();
    }
}

impl PolyHash {
    /// A hasher keyed by `key`.
    pub fn new(key: u128) -> Self {
        Self {
            key,
            acc: 0,
            pending: [0; 16],
            pending_len: 0,
            total_bytes: 0,
        }
    }

    #[inline]
    fn block(&mut self, b: u128) {
        self.acc = gf128::mul(self.acc ^ b, self.key);
    }

    /// Absorbs bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        self.total_bytes += data.len() as u64;
        if self.pending_len > 0 {
            let take = (16 - self.pending_len).min(data.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&data[..take]);
            self.pending_len += take;
            data = &data[take..];
            if self.pending_len < 16 {
                return;
            }
            let b = u128::from_le_bytes(self.pending);
            self.block(b);
            self.pending_len = 0;
        }
        let mut chunks = data.chunks_exact(16);
        let mut batch = [0u128; 64];
        loop {
            let mut n = 0;
            for (slot, c) in batch.iter_mut().zip(&mut chunks) {
                let mut a = [0u8; 16];
                a.copy_from_slice(c);
                *slot = u128::from_le_bytes(a);
                n += 1;
            }
            if n == 0 {
                break;
            }
            self.acc = gf128::horner(self.acc, self.key, &batch[..n]);
        }
        batch.zeroize();
        let rest = chunks.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    /// Absorbs 64-bit words (little-endian), the fast path for packed bit strings.
    pub fn update_words(&mut self, words: &[u64]) {
        if self.pending_len != 0 {
            for w in words {
                self.update(&w.to_le_bytes());
            }
            return;
        }
        self.total_bytes += 8 * words.len() as u64;
        let mut pairs = words.chunks_exact(2);
        let mut batch = [0u128; 64];
        loop {
            let mut n = 0;
            for (slot, p) in batch.iter_mut().zip(&mut pairs) {
                *slot = u128::from(p[0]) | (u128::from(p[1]) << 64);
                n += 1;
            }
            if n == 0 {
                break;
            }
            self.acc = gf128::horner(self.acc, self.key, &batch[..n]);
        }
        batch.zeroize();
        if let [w] = pairs.remainder() {
            self.pending[..8].copy_from_slice(&w.to_le_bytes());
            self.pending_len = 8;
        }
    }

    /// The full 128-bit hash.
    pub fn finish(mut self) -> u128 {
        if self.pending_len > 0 {
            let mut a = [0u8; 16];
            a[..self.pending_len].copy_from_slice(&self.pending[..self.pending_len]);
            self.block(u128::from_le_bytes(a));
        }
        let len = u128::from(self.total_bytes);
        self.block(len);
        self.acc
    }
}

/// The hash of `data` under `key`, truncated to its low `tag_bits` bits.
pub fn tag(key: u128, data: &[u8], tag_bits: u32) -> u128 {
    let mut h = PolyHash::new(key);
    h.update(data);
    truncate(h.finish(), tag_bits)
}

/// The low `bits` bits of `v`.
#[inline]
pub fn truncate(v: u128, bits: u32) -> u128 {
    if bits >= 128 {
        v
    } else {
        v & ((1u128 << bits) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Horner evaluation of the documented polynomial, byte blocks built one at a time.
    fn naive(key: u128, data: &[u8]) -> u128 {
        let mut acc = 0u128;
        for c in data.chunks(16) {
            let mut a = [0u8; 16];
            a[..c.len()].copy_from_slice(c);
            acc = gf128::mul_naive(acc ^ u128::from_le_bytes(a), key);
        }
        gf128::mul_naive(acc ^ data.len() as u128, key)
    }

    proptest! {
        #[test]
        fn incremental_matches_naive(key in any::<u128>(), data in proptest::collection::vec(any::<u8>(), 0..200), split in 0usize..200) {
            let split = split.min(data.len());
            let mut h = PolyHash::new(key);
            h.update(&data[..split]);
            h.update(&data[split..]);
            prop_assert_eq!(h.finish(), naive(key, &data));
        }

        #[test]
        fn words_match_bytes(key in any::<u128>(), words in proptest::collection::vec(any::<u64>(), 0..20)) {
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            let mut h = PolyHash::new(key);
            h.update_words(&words);
            prop_assert_eq!(h.finish(), naive(key, &bytes));
        }
    }

    #[test]
    fn lengths_are_bound_into_the_hash_and_tags_size_from_eps() {
        let k = 0x1234_5678_9abc_def0_0fed_cba9_8765_4321;
        assert_ne!(tag(k, &[0], 128), tag(k, &[0, 0], 128));
        assert_ne!(tag(k, &[], 128), tag(k, &[0], 128));
        // 1e6-bit key at eps_cor 1e-15: L = 7814 blocks → 63 bits.
        let t = tag_bits_for(1_000_000, 1e-15);
        assert!(collision_probability(1_000_000, t) <= 1e-15);
        assert!(collision_probability(1_000_000, t - 1) > 1e-15);
        assert_eq!(truncate(u128::MAX, 3), 7);
    }
}
