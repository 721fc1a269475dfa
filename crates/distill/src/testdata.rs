//! Correlated bit strings for tests, benchmarks and demonstrations: Alice's bits uniform,
//! Bob's equal to hers with independent flips of probability `qber` (a binary symmetric
//! channel). Errors are placed by geometric gaps, one draw per error, not per bit.

use qkdnet_core::Bits;
use rand::{Rng, SeedableRng};

/// `(alice, bob)` of `n` bits with bit-error probability `qber`, from `seed`.
pub fn correlated(n: usize, qber: f64, seed: u64) -> (Bits, Bits) {
    let mut g = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let alice = Bits::from_words((0..n.div_ceil(64)).map(|_| g.gen()).collect(), n);
    let mut bob = alice.duplicate();
    if qber > 0.0 && qber < 1.0 {
        let ln1q = (1.0 - qber).ln();
        let mut i = 0usize;
        loop {
            let u: f64 = g.gen::<f64>().max(f64::MIN_POSITIVE);
            i = i.saturating_add((u.ln() / ln1q).floor() as usize);
            if i >= n {
                break;
            }
            bob.flip(i);
            i += 1;
        }
    }
    (alice, bob)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_rate_matches_within_statistics() {
        let n = 1_000_000;
        for q in [0.0, 0.01, 0.05, 0.11] {
            let (a, b) = correlated(n, q, 1);
            let e = a.hamming_distance(&b) as f64;
            let sd = (n as f64 * q * (1.0 - q)).sqrt();
            assert!(
                (e - n as f64 * q).abs() <= 5.0 * sd + 1.0,
                "q={q} errors={e}"
            );
        }
    }
}
