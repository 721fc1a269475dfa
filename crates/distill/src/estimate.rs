//! Parameter estimation by random sampling, and the finite-key output length.
//!
//! Alice picks `k` positions of the sifted block uniformly at random (from a seed drawn from
//! her `SecureRandom`, announced after the quantum phase) and discloses her bits there; Bob
//! counts the errors. The sampled bits are discarded. The remaining `n` bits are the raw
//! key. With both bases used for key and chosen uniformly (BBM92, symmetric BB84), a random
//! sample of the sifted bits is a random sample of the error pattern, and the phase-error
//! rate of the raw key is bounded by the sample error rate plus the statistical correction
//! μ of Tomamichel, Lim, Gisin, Renner, Nat. Commun. 3, 634 (2012), Eq. (3); the key length
//! is their Eq. (2) with every leaked bit (Cascade parities and the verification tag)
//! counted: `ℓ = ⌊n (1 − h(e + μ)) − leak_EC − leak_ver − log₂(2/(ε_sec² ε_cor))⌋`.

use qkdnet_core::Bits;
use rand::distributions::Uniform;
use rand::{Rng, SeedableRng};

/// A uniformly random set of `k` of the `n` positions of a sifted block, drawn from a
/// public seed, kept as a bitmap.
///
/// Rejection sampling into the bitmap: draw uniform positions and keep the new ones until
/// `k` are kept (for k > n/2, draw the n − k excluded positions instead). Every k-subset
/// is equally likely, the expected number of draws is below 1.39·k and memory is n/8
/// bytes. The bitmap then splits a block into its sampled and remaining bits a word at a
/// time ([`Sample::split`]), in the order of their positions.
pub struct Sample {
    /// Bit i set: position i is sampled. Bits at and above `n` are clear.
    mask: Vec<u64>,
    n: usize,
    k: usize,
}

impl Default for Sample {
    /// The empty sample of an empty block.
    fn default() -> Self {
        Self {
            mask: Vec::new(),
            n: 0,
            k: 0,
        }
    }
}

impl Sample {
    /// `k` (at most `n`) positions of `0..n` from `seed`.
    pub fn draw(seed: [u8; 32], n: usize, k: usize) -> Self {
        let k = k.min(n);
        let mut rng = rand_chacha::ChaCha8Rng::from_seed(seed);
        let complement = k > n / 2;
        let draw = if complement { n - k } else { k };
        let mut mask = vec![0u64; n.div_ceil(64)];
        let mut kept = 0;
        // One `Uniform` for all draws: it computes its rejection zone once, where
        // `gen_range` divides on every call (three times slower at 10⁶ draws).
        let mut keep = |j: usize| {
            let (w, b) = (j / 64, 1u64 << (j % 64));
            let new = mask[w] & b == 0;
            mask[w] |= b;
            usize::from(new)
        };
        if draw > 0 {
            if let Ok(n32) = u32::try_from(n) {
                let positions = Uniform::new(0, n32);
                while kept < draw {
                    kept += keep(rng.sample(positions) as usize);
                }
            } else {
                let positions = Uniform::new(0, n);
                while kept < draw {
                    kept += keep(rng.sample(positions));
                }
            }
        }
        if complement {
            mask.iter_mut().for_each(|w| *w = !*w);
            if let Some(last) = mask.last_mut() {
                if !n.is_multiple_of(64) {
                    *last &= (1u64 << (n % 64)) - 1;
                }
            }
        }
        Self { mask, n, k }
    }

    /// Number of sampled positions.
    pub fn len(&self) -> usize {
        self.k
    }

    /// Whether nothing is sampled.
    pub fn is_empty(&self) -> bool {
        self.k == 0
    }

    /// The sampled positions, increasing.
    pub fn positions(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.k);
        for (w, &word) in self.mask.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                out.push(w * 64 + bits.trailing_zeros() as usize);
                bits &= bits - 1;
            }
        }
        out
    }

    /// `bits` (of the length the sample was drawn for) split into the bits at the sampled
    /// positions and the rest, each in position order.
    ///
    /// # Panics
    /// If `bits` does not have `n` bits.
    pub fn split(&self, bits: &Bits) -> (Bits, Bits) {
        assert_eq!(bits.len(), self.n, "sample drawn for {} bits", self.n);
        let mut sampled = Bits::zeros(0);
        let mut rest = Bits::zeros(0);
        sampled.reserve(self.k);
        rest.reserve(self.n - self.k);
        for (i, (&x, &m)) in bits.words().iter().zip(&self.mask).enumerate() {
            let valid = if (i + 1) * 64 <= self.n {
                u64::MAX
            } else {
                (1u64 << (self.n % 64)) - 1
            };
            let (v, c) = compress(x, m);
            sampled.push_bits(v, c);
            let (v, c) = compress(x, !m & valid);
            rest.push_bits(v, c);
        }
        (sampled, rest)
    }
}

/// The bits of `x` where `m` is set, packed towards bit 0 in order, and how many there are
/// (the "compress" of Hacker's Delight §7-4, here by walking the sparser of `m` and `!m`).
#[inline]
fn compress(x: u64, m: u64) -> (u64, usize) {
    let count = m.count_ones() as usize;
    if count == 64 {
        return (x, 64);
    }
    if count <= 32 {
        let mut v = 0u64;
        let mut bits = m;
        let mut i = 0;
        while bits != 0 {
            let p = bits.trailing_zeros();
            v |= ((x >> p) & 1) << i;
            i += 1;
            bits &= bits - 1;
        }
        (v, count)
    } else {
        // Remove the cleared positions from the top down, so lower ones keep their place.
        let mut v = x;
        let mut gaps = !m;
        while gaps != 0 {
            let p = 63 - gaps.leading_zeros();
            let low = v & ((1u64 << p) - 1);
            let high = if p == 63 { 0 } else { (v >> (p + 1)) << p };
            v = low | high;
            gaps &= !(1u64 << p);
        }
        (v & ((1u64 << count) - 1), count)
    }
}

/// `k` distinct positions in `0..n`, sorted, uniformly distributed over the k-subsets,
/// from a public seed ([`Sample::draw`]).
pub fn sample_positions(seed: [u8; 32], n: usize, k: usize) -> Vec<usize> {
    Sample::draw(seed, n, k).positions()
}

/// Secret key length (bits, may be negative: no key) from `n` raw-key bits, a sample of
/// `k` bits with `errors` errors, and `leak` disclosed bits (see the module documentation).
pub fn key_length(n: u64, k: u64, errors: u64, leak: u64, eps_sec: f64, eps_cor: f64) -> i64 {
    if k == 0 {
        return -1;
    }
    let q = errors as f64 / k as f64;
    let l = qkdnet_keyrate::bbm92::tomamichel_key_length(
        n as f64,
        k as f64,
        q,
        leak as f64,
        eps_sec,
        eps_cor,
    );
    if l.is_finite() {
        l.floor() as i64
    } else {
        -1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_positions_are_distinct_sorted_and_cover_uniformly() {
        let p = sample_positions([1; 32], 1000, 100);
        assert_eq!(p.len(), 100);
        assert!(p.windows(2).all(|w| w[0] < w[1]));
        assert!(p.iter().all(|&i| i < 1000));
        assert_eq!(sample_positions([1; 32], 10, 20).len(), 10);
        // Sparse and complement (k > n/2) paths.
        let sparse = sample_positions([2; 32], 100_000, 100);
        assert!(sparse.windows(2).all(|w| w[0] < w[1]) && sparse.len() == 100);
        for (n, k) in [(1000, 900), (130, 129), (64, 64), (65, 40), (7, 0)] {
            let d = sample_positions([3; 32], n, k);
            assert_eq!(d.len(), k, "n={n} k={k}");
            assert!(d.windows(2).all(|w| w[0] < w[1]) && d.iter().all(|&i| i < n));
        }
        // Uniformity: over many seeds each position is chosen ≈ k/n of the time.
        let mut hits = vec![0u32; 50];
        for s in 0..2000u32 {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&s.to_le_bytes());
            for i in sample_positions(seed, 50, 10) {
                hits[i] += 1;
            }
        }
        // Expected 400 per position, σ ≈ 18: allow 5σ.
        assert!(
            hits.iter().all(|&h| (h as i32 - 400).abs() < 90),
            "{hits:?}"
        );
        // The complement path is uniform too: k = 40 of 50.
        let mut hits = vec![0u32; 50];
        for s in 0..2000u32 {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&s.to_le_bytes());
            for i in sample_positions(seed, 50, 40) {
                hits[i] += 1;
            }
        }
        // Expected 1600, σ ≈ 18.
        assert!(
            hits.iter().all(|&h| (h as i32 - 1600).abs() < 90),
            "{hits:?}"
        );
    }

    #[test]
    fn split_matches_the_positions_bit_by_bit() {
        use rand::Rng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for (n, k) in [
            (1usize, 1usize),
            (64, 6),
            (64, 60),
            (1000, 100),
            (1000, 900),
            (4097, 2000),
            (130, 0),
        ] {
            let words: Vec<u64> = (0..n.div_ceil(64)).map(|_| rng.gen()).collect();
            let bits = Bits::from_words(words, n);
            let sample = Sample::draw([n as u8; 32], n, k);
            let pos = sample.positions();
            assert_eq!(pos.len(), k);
            let (sampled, rest) = sample.split(&bits);
            let want: Vec<bool> = pos.iter().map(|&i| bits.get(i)).collect();
            assert!(sampled == Bits::from_bools(&want), "n={n} k={k}");
            assert!(rest == bits.remove_sorted(&pos), "n={n} k={k}");
        }
        for m in [
            0u64,
            1,
            u64::MAX,
            0x8000_0000_0000_0001,
            0xf0f0_0f0f_ffff_0000,
        ] {
            let x = 0x0123_4567_89ab_cdefu64;
            let (v, c) = compress(x, m);
            let mut want = 0u64;
            let mut j = 0;
            for i in 0..64 {
                if (m >> i) & 1 == 1 {
                    want |= ((x >> i) & 1) << j;
                    j += 1;
                }
            }
            assert_eq!((v, c), (want, j), "m={m:#x}");
        }
    }

    #[test]
    fn key_length_counts_leak_and_vanishes_at_high_error() {
        let l0 = key_length(1_000_000, 100_000, 2_000, 0, 1e-10, 1e-15);
        let l1 = key_length(1_000_000, 100_000, 2_000, 150_000, 1e-10, 1e-15);
        assert_eq!(l0 - l1, 150_000);
        assert!(l0 > 700_000);
        assert!(key_length(1_000_000, 100_000, 11_500, 500_000, 1e-10, 1e-15) < 0);
        assert!(key_length(10, 0, 0, 0, 1e-10, 1e-15) < 0);
    }
}
