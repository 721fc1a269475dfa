//! Multidimensional reconciliation (Leverrier, Alléaume, Boutros, Zémor, Grangier, PRA 77,
//! 042325 (2008)): turns Gaussian-modulated, Gaussian-noise quadrature pairs into a
//! binary-input channel that a binary code can reconcile, in reverse (Bob's bits are the
//! key).
//!
//! Quadratures are taken `d` at a time (`d` ∈ {1, 2, 4, 8}: the reals, complex numbers,
//! quaternions and octonions, the normed division algebras). Bob draws `d` uniform bits
//! `b`, forms the unit vector `u_j = (−1)^{b_j}/√d`, and announces `α = u · ȳ'` (`y' = y/|y|`,
//! the product of the algebra; §III of the paper), so that `α · y' = u`. `α` is a uniform
//! unit vector whatever `u` is, so it discloses nothing about Bob's bits. Alice computes
//! `v = α · x'`; because multiplication by a unit element is orthogonal, `⟨v, u⟩ = ⟨x', y'⟩`,
//! and the log-likelihood of `u` given `v` is, to first order, `κ ⟨u, v⟩` with
//! `κ = |y| g |x| / N` (the von Mises–Fisher form of the direction of `y = g x + n` given
//! `x`). Per bit this is `LLR_j = 2 κ v_j / √d`.
//!
//! Bob announces `|y|` with `α`. Without it Alice must take `|y|`'s expectation, and at
//! SNR 0.03 the virtual channel then carries 0.0200 bit per dimension instead of 0.0212
//! (measured: 6 % of the key). Announcing it costs no secrecy in the reverse-reconciled
//! bound: Bob's bits `u` are drawn independently of `y`, so what Eve learns of them from
//! her system `E` and the announcements is at most `I(y'; E | |y|) ≤ I(y; E)` (chain
//! rule), which the Holevo bound `χ_BE` of the key rate already subtracts.

use qkdnet_core::Bits;

/// Dimensions the division algebras allow.
pub const DIMENSIONS: [usize; 4] = [1, 2, 4, 8];

/// `out = a · b` in the Cayley–Dickson algebra of dimension `a.len()` (1, 2, 4 or 8):
/// `(a, b)(c, d) = (ac − d̄b, da + bc̄)`.
pub fn mul(a: &[f64], b: &[f64], out: &mut [f64]) {
    let n = a.len();
    debug_assert!(b.len() == n && out.len() == n && DIMENSIONS.contains(&n));
    if n == 1 {
        out[0] = a[0] * b[0];
        return;
    }
    let h = n / 2;
    let (p, q) = a.split_at(h);
    let (r, s) = b.split_at(h);
    let mut t1 = [0f64; 4];
    let mut t2 = [0f64; 4];
    let mut cj = [0f64; 4];
    // First half: p r − s̄ q.
    mul(p, r, &mut t1[..h]);
    conj(s, &mut cj[..h]);
    mul(&cj[..h], q, &mut t2[..h]);
    for i in 0..h {
        out[i] = t1[i] - t2[i];
    }
    // Second half: s p + q r̄.
    mul(s, p, &mut t1[..h]);
    conj(r, &mut cj[..h]);
    mul(q, &cj[..h], &mut t2[..h]);
    for i in 0..h {
        out[h + i] = t1[i] + t2[i];
    }
}

/// `out = ā`: the real part kept, the rest negated.
pub fn conj(a: &[f64], out: &mut [f64]) {
    out[0] = a[0];
    for i in 1..a.len() {
        out[i] = -a[i];
    }
}

fn normalise(v: &[f64], out: &mut [f64]) -> f64 {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    for (o, x) in out.iter_mut().zip(v) {
        *o = x * inv;
    }
    norm
}

/// What Bob announces: per `d`-block, `α = u · ȳ'` and `|y|`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Announcement {
    /// Dimension `d`.
    pub dim: usize,
    /// `α`, `d` values per block.
    pub alpha: Vec<f32>,
    /// `|y|` per block.
    pub norms: Vec<f32>,
}

/// Bob's side: for each `d`-block of `y` and the block's bits of `bits`, the announced
/// `α = u · ȳ'` and `|y|`. `y.len()` must be a multiple of `d` and `bits.len() == y.len()`.
pub fn bob_announce(y: &[f64], bits: &Bits, d: usize) -> Announcement {
    assert!(DIMENSIONS.contains(&d), "MDR dimension {d}");
    assert!(
        y.len().is_multiple_of(d) && bits.len() == y.len(),
        "MDR block lengths"
    );
    let amp = 1.0 / (d as f64).sqrt();
    let mut out = Vec::with_capacity(y.len());
    let mut norms = Vec::with_capacity(y.len() / d);
    let (mut u, mut yn, mut yc, mut a) = ([0f64; 8], [0f64; 8], [0f64; 8], [0f64; 8]);
    for (blk, ys) in y.chunks_exact(d).enumerate() {
        for (j, uj) in u[..d].iter_mut().enumerate() {
            *uj = if bits.get(blk * d + j) { -amp } else { amp };
        }
        norms.push(normalise(ys, &mut yn[..d]) as f32);
        conj(&yn[..d], &mut yc[..d]);
        mul(&u[..d], &yc[..d], &mut a[..d]);
        out.extend(a[..d].iter().map(|&v| v as f32));
    }
    Announcement {
        dim: d,
        alpha: out,
        norms,
    }
}

/// Alice's side: the LLRs (`log P(0)/P(1)`) of Bob's bits from her `x`, Bob's
/// announcement, the channel gain `g` (`y = g x + n`) and noise variance `noise` from
/// parameter estimation.
pub fn alice_llr(x: &[f64], ann: &Announcement, g: f64, noise: f64) -> Vec<f32> {
    let d = ann.dim;
    assert!(DIMENSIONS.contains(&d), "MDR dimension {d}");
    assert!(
        x.len().is_multiple_of(d) && ann.alpha.len() == x.len() && ann.norms.len() * d == x.len(),
        "MDR block lengths"
    );
    let mut out = Vec::with_capacity(x.len());
    let (mut xn, mut a, mut v) = ([0f64; 8], [0f64; 8], [0f64; 8]);
    let sd = (d as f64).sqrt();
    for ((xs, al), &ny) in x
        .chunks_exact(d)
        .zip(ann.alpha.chunks_exact(d))
        .zip(&ann.norms)
    {
        let nx = normalise(xs, &mut xn[..d]);
        for j in 0..d {
            a[j] = al[j] as f64;
        }
        mul(&a[..d], &xn[..d], &mut v[..d]);
        let kappa = ny as f64 * g * nx / noise;
        out.extend(v[..d].iter().map(|&vj| (2.0 * kappa * vj / sd) as f32));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_distr::StandardNormal;

    fn rand_vec(rng: &mut impl Rng, d: usize) -> Vec<f64> {
        (0..d)
            .map(|_| rng.sample::<f64, _>(StandardNormal))
            .collect()
    }

    #[test]
    fn composition_and_inverse() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for d in DIMENSIONS {
            for _ in 0..100 {
                let (a, b) = (rand_vec(&mut rng, d), rand_vec(&mut rng, d));
                let mut ab = vec![0.0; d];
                mul(&a, &b, &mut ab);
                let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>();
                // |ab| = |a||b| in a normed division algebra.
                assert!((n(&ab) - n(&a) * n(&b)).abs() < 1e-9 * n(&a) * n(&b));
                // (a b̄) b = a |b|² (alternativity), which MDR relies on.
                let mut bc = vec![0.0; d];
                conj(&b, &mut bc);
                let mut t = vec![0.0; d];
                mul(&a, &bc, &mut t);
                let mut back = vec![0.0; d];
                mul(&t, &b, &mut back);
                for j in 0..d {
                    assert!(
                        (back[j] - a[j] * n(&b)).abs() < 1e-9 * n(&a) * n(&b),
                        "d={d}"
                    );
                }
            }
        }
    }

    #[test]
    fn noiseless_mdr_recovers_bobs_bits_and_alpha_is_unit() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for d in DIMENSIONS {
            let x = rand_vec(&mut rng, 8 * d);
            let y: Vec<f64> = x.iter().map(|v| 0.3 * v).collect();
            let bits = super::super::code::random_bits(8 * d, &mut rng);
            let ann = bob_announce(&y, &bits, d);
            for blk in ann.alpha.chunks_exact(d) {
                let n: f32 = blk.iter().map(|v| v * v).sum();
                assert!((n - 1.0).abs() < 1e-5);
            }
            let llr = alice_llr(&x, &ann, 0.3, 1e-3);
            for (i, l) in llr.iter().enumerate() {
                assert_eq!(*l < 0.0, bits.get(i), "d={d} bit {i}");
            }
        }
    }
}
