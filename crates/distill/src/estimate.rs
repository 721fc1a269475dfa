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

use rand::{Rng, SeedableRng};

/// `k` distinct positions in `0..n`, sorted, uniformly distributed over the k-subsets,
/// from a public seed.
///
/// Rejection sampling into a bitmap: draw uniform positions and keep the new ones until
/// `k` are kept (for k > n/2, draw the n − k excluded positions instead). Every k-subset
/// is equally likely, the expected number of draws is below 1.39·k, memory is n/8 bytes,
/// and scanning the bitmap yields the positions already sorted. (A partial Fisher–Yates
/// shuffle of an index array, the previous method, costs a 4n-byte array and two cache
/// misses per draw.)
pub fn sample_positions(seed: [u8; 32], n: usize, k: usize) -> Vec<usize> {
    let k = k.min(n);
    let mut rng = rand_chacha::ChaCha8Rng::from_seed(seed);
    let complement = k > n / 2;
    let draw = if complement { n - k } else { k };
    let mut map = vec![0u64; n.div_ceil(64)];
    let mut kept = 0;
    while kept < draw {
        let j = rng.gen_range(0..n);
        let (w, b) = (j / 64, 1u64 << (j % 64));
        if map[w] & b == 0 {
            map[w] |= b;
            kept += 1;
        }
    }
    let mut out = Vec::with_capacity(k);
    for (w, &word) in map.iter().enumerate() {
        let mut bits = if complement { !word } else { word };
        if complement && w == map.len() - 1 && !n.is_multiple_of(64) {
            bits &= (1u64 << (n % 64)) - 1;
        }
        while bits != 0 {
            out.push(w * 64 + bits.trailing_zeros() as usize);
            bits &= bits - 1;
        }
    }
    out
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
    fn key_length_counts_leak_and_vanishes_at_high_error() {
        let l0 = key_length(1_000_000, 100_000, 2_000, 0, 1e-10, 1e-15);
        let l1 = key_length(1_000_000, 100_000, 2_000, 150_000, 1e-10, 1e-15);
        assert_eq!(l0 - l1, 150_000);
        assert!(l0 > 700_000);
        assert!(key_length(1_000_000, 100_000, 11_500, 500_000, 1e-10, 1e-15) < 0);
        assert!(key_length(10, 0, 0, 0, 1e-10, 1e-15) < 0);
    }
}
