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

/// `k` distinct positions in `0..n`, sorted, from a public seed (partial Fisher–Yates).
pub fn sample_positions(seed: [u8; 32], n: usize, k: usize) -> Vec<usize> {
    let k = k.min(n);
    let mut rng = rand_chacha::ChaCha8Rng::from_seed(seed);
    let mut out = Vec::with_capacity(k);
    if k.saturating_mul(32) >= n {
        // Dense: a partial shuffle of the whole index array.
        let mut idx: Vec<u32> = (0..n as u32).collect();
        for i in 0..k {
            let j = rng.gen_range(i..n);
            idx.swap(i, j);
            out.push(idx[i] as usize);
        }
    } else {
        // Sparse: a map of displaced entries keeps memory O(k).
        let mut displaced = std::collections::HashMap::with_capacity(k);
        for i in 0..k {
            let j = rng.gen_range(i..n);
            let vj = *displaced.get(&j).unwrap_or(&j);
            let vi = *displaced.get(&i).unwrap_or(&i);
            displaced.insert(j, vi);
            out.push(vj);
        }
    }
    out.sort_unstable();
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
        // Sparse and dense paths draw the same kind of sample.
        let sparse = sample_positions([2; 32], 100_000, 100);
        assert!(sparse.windows(2).all(|w| w[0] < w[1]) && sparse.len() == 100);
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
