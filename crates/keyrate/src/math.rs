//! Numerical building blocks: entropies, Bessel functions, concentration bounds.

/// Binary entropy `h(x) = −x log₂x − (1−x) log₂(1−x)`, with `h(0) = h(1) = 0`.
/// Arguments outside [0, 1] are clamped; above ½ it is symmetric.
#[inline]
pub fn h2(x: f64) -> f64 {
    if x <= 0.0 || x >= 1.0 || x.is_nan() {
        return 0.0;
    }
    -x * x.log2() - (1.0 - x) * (1.0 - x).log2()
}

/// Binary entropy, saturated: 1 for `x ≥ ½`. Use for error-rate bounds that can exceed ½.
#[inline]
pub fn h2_sat(x: f64) -> f64 {
    if x >= 0.5 {
        1.0
    } else {
        h2(x)
    }
}

/// `g(x) = (x+1) log₂(x+1) − x log₂x`, the entropy of a thermal state with mean photon
/// number x; used with symplectic eigenvalues ν as `g((ν−1)/2)` (Laudenbach et al. 2018, Eq. 48).
#[inline]
pub fn g_thermal(x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    (x + 1.0) * (x + 1.0).log2() - x * x.log2()
}

/// Modified Bessel function of the first kind, order 0 (Abramowitz & Stegun 9.8.1–9.8.2,
/// |relative error| < 2e-7).
pub fn bessel_i0(x: f64) -> f64 {
    let ax = x.abs();
    if ax < 3.75 {
        let y = (x / 3.75) * (x / 3.75);
        1.0 + y
            * (3.515_622_9
                + y * (3.089_942_4
                    + y * (1.206_749_2 + y * (0.265_973_2 + y * (0.036_076_8 + y * 0.004_581_3)))))
    } else {
        let y = 3.75 / ax;
        (ax.exp() / ax.sqrt())
            * (0.398_942_28
                + y * (0.013_285_92
                    + y * (0.002_253_19
                        + y * (-0.001_575_65
                            + y * (0.009_162_81
                                + y * (-0.020_577_06
                                    + y * (0.026_355_37
                                        + y * (-0.016_476_33 + y * 0.003_923_77))))))))
    }
}

/// Upper confidence bound on the expectation of a sum of independent Bernoulli trials
/// given its observed value `x`, failing with probability at most `eps`.
///
/// From the multiplicative Chernoff bound `P[X ≤ (1−δ)μ] ≤ e^{−δ²μ/2}`: the largest μ with
/// `x = μ − √(2μ ln(1/ε))` is `μ_U = (√(L/2) + √(L/2 + x))²`, `L = ln(1/ε)`.
pub fn chernoff_upper(x: f64, eps: f64) -> f64 {
    let l = (1.0 / eps).ln();
    let a = (0.5 * l).sqrt() + (0.5 * l + x.max(0.0)).sqrt();
    a * a
}

/// Lower confidence bound on the expectation of a sum of independent Bernoulli trials
/// given its observed value `x`, failing with probability at most `eps`.
///
/// From `P[X ≥ (1+δ)μ] ≤ e^{−δ²μ/(2+δ)}`: solving `(x−μ)² = L(x+μ)` for the smaller root,
/// `μ_L = x + L/2 − √(L²/4 + 2Lx)`, clamped at 0.
pub fn chernoff_lower(x: f64, eps: f64) -> f64 {
    let l = (1.0 / eps).ln();
    let x = x.max(0.0);
    (x + 0.5 * l - (0.25 * l * l + 2.0 * l * x).sqrt()).max(0.0)
}

/// Standard normal quantile for an upper tail probability `p` (Acklam's rational
/// approximation with one Newton step against [`erfc`]; |error| < 1e-9 for p ≥ 1e-300).
pub fn normal_quantile_upper(p: f64) -> f64 {
    // Quantile of 1 − p.
    let q = 1.0 - p;
    let z0 = acklam(q.clamp(1e-300, 1.0 - 1e-16));
    let z0 = if p < 1e-16 { -acklam(p) } else { z0 };
    // Newton refinement on upper tail: f(z) = ½ erfc(z/√2) − p.
    let f = 0.5 * erfc(z0 / std::f64::consts::SQRT_2) - p;
    let d = -(-0.5 * z0 * z0).exp() / (2.0 * std::f64::consts::PI).sqrt();
    z0 - f / d
}

fn acklam(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let plow = 0.02425;
    if p < plow {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - plow {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    }
}

pub use qkdnet_optics::special::erfc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_values() {
        assert_eq!(h2(0.0), 0.0);
        assert!((h2(0.5) - 1.0).abs() < 1e-15);
        assert!((h2(0.11) - 0.499_915_958).abs() < 1e-8);
        assert_eq!(h2_sat(0.7), 1.0);
        assert!((g_thermal(1.0) - 2.0).abs() < 1e-15);
    }

    #[test]
    fn bessel_i0_matches_tables() {
        // A&S Table 9.8: I0(1) = 1.266065878, I0(5) = 27.23987182.
        assert!((bessel_i0(0.0) - 1.0).abs() < 1e-12);
        assert!((bessel_i0(1.0) - 1.266_065_878).abs() < 1e-6);
        assert!((bessel_i0(5.0) / 27.239_871_82 - 1.0).abs() < 1e-6);
    }

    #[test]
    fn chernoff_bounds_bracket_the_observation_and_shrink() {
        for x in [0.0, 10.0, 1e4, 1e8] {
            let (lo, hi) = (chernoff_lower(x, 1e-10), chernoff_upper(x, 1e-10));
            assert!(lo <= x && hi >= x, "{lo} {x} {hi}");
        }
        let rel = |x: f64| (chernoff_upper(x, 1e-10) - chernoff_lower(x, 1e-10)) / x;
        // Relative width ≈ 2√(2 ln(1/ε)/x): 1.4e-3 at x = 1e8, ε = 1e-10.
        assert!(rel(1e8) < rel(1e4) && rel(1e8) < 1.5e-3, "{}", rel(1e8));
    }

    /// The bounds must actually cover: simulate binomial sums and count failures.
    #[test]
    fn chernoff_bounds_cover_at_their_confidence() {
        use qkdnet_core::RngStream;
        let mut rng = RngStream::derive(11, "keyrate::math", "chernoff");
        let (n, p, eps) = (2000usize, 0.05, 0.01);
        let mu = n as f64 * p;
        let (mut miss_u, mut miss_l) = (0, 0);
        let trials = 2000;
        for _ in 0..trials {
            let x = (0..n).filter(|_| rng.uniform() < p).count() as f64;
            if chernoff_upper(x, eps) < mu {
                miss_u += 1;
            }
            if chernoff_lower(x, eps) > mu {
                miss_l += 1;
            }
        }
        // Expected misses ≤ eps·trials = 20 each; allow Poisson slack (20 + 4√20 ≈ 38).
        assert!(miss_u <= 38 && miss_l <= 38, "{miss_u} {miss_l}");
    }

    #[test]
    fn normal_quantiles() {
        assert!((normal_quantile_upper(0.025) - 1.959_963_985).abs() < 1e-6);
        assert!((normal_quantile_upper(1e-10) - 6.361_340_902).abs() < 1e-5);
    }
}
