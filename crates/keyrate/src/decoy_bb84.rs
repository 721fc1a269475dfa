//! Decoy-state BB84 with weak coherent pulses.
//!
//! Forward model and finite-key bound of Lim, Curty, Walenta, Xu, Zbinden, PRA 89, 022307
//! (2014) (three intensities μ₁ > μ₂ + μ₃, μ₂ > μ₃ ≥ 0; the third may be the vacuum), with
//! the key taken from one basis (called *key* here, X in the paper) and the phase error
//! estimated from the other. The same expressions with the fluctuation terms removed give
//! the asymptotic rate of this finite-decoy protocol. [`gllp_infinite_decoy`] is the
//! Lo–Ma–Chen (PRL 94, 230504 (2005)) GLLP rate with ideal (infinitely many) decoys,
//! used for validation against published figures.

use crate::finite::Security;
use crate::math::h2;
use crate::model::{Evaluation, FreeParam, KeyRateModel, Scale};
use crate::rules;
use qkdnet_optics::{check, ParamError};
use serde::{Deserialize, Serialize};

/// Hardware of a decoy-BB84 link.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecoyBb84 {
    /// Pulse rate, Hz.
    pub clock_hz: f64,
    /// Bob's detection efficiency including his internal optics.
    pub detector_efficiency: f64,
    /// Dark-count probability per detector per pulse slot.
    pub dark_count_probability: f64,
    /// Afterpulsing probability.
    pub afterpulse_probability: f64,
    /// Optical misalignment error probability e_mis.
    pub misalignment: f64,
    /// Error-correction efficiency f (leak = f·n·h(E)).
    pub ec_efficiency: f64,
    /// Signal intensity μ₁.
    pub mu1: f64,
    /// Decoy intensity μ₂.
    pub mu2: f64,
    /// Second decoy μ₃ (0 = vacuum).
    pub mu3: f64,
    /// Probability of μ₁.
    pub p_mu1: f64,
    /// Probability of μ₂ (μ₃ takes the rest).
    pub p_mu2: f64,
    /// Probability of the key basis (both parties, independently).
    pub p_key_basis: f64,
}

impl Default for DecoyBb84 {
    /// Lim et al. 2014's simulation parameters (their Table I: η_Bob·η_det = 0.1,
    /// p_dc = 6e-7, e_mis = 5e-3, p_ap = 4e-2, f_EC = 1.16) at a 1 GHz clock.
    fn default() -> Self {
        Self {
            clock_hz: 1e9,
            detector_efficiency: 0.1,
            dark_count_probability: 6e-7,
            afterpulse_probability: 0.04,
            misalignment: 5e-3,
            ec_efficiency: 1.16,
            mu1: 0.5,
            mu2: 0.1,
            mu3: 0.0,
            p_mu1: 0.7,
            p_mu2: 0.2,
            p_key_basis: 0.9,
        }
    }
}

const FREE: [FreeParam; 5] = [
    FreeParam {
        name: "mu1",
        lo: 1e-3,
        hi: 1.5,
        scale: Scale::Log,
    },
    FreeParam {
        name: "mu2_fraction",
        lo: 0.01,
        hi: 0.95,
        scale: Scale::Linear,
    },
    FreeParam {
        name: "p_mu1",
        lo: 0.02,
        hi: 0.98,
        scale: Scale::Linear,
    },
    FreeParam {
        name: "p_mu2_fraction",
        lo: 0.02,
        hi: 0.98,
        scale: Scale::Linear,
    },
    FreeParam {
        name: "p_key_basis",
        lo: 0.05,
        hi: 0.995,
        scale: Scale::Linear,
    },
];

impl DecoyBb84 {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ParamError> {
        rules::clock_hz("hardware.clock_hz", self.clock_hz)?;
        rules::detector_efficiency(self.detector_efficiency)?;
        rules::dark_count_probability(self.dark_count_probability)?;
        check(
            "hardware.afterpulse_probability",
            self.afterpulse_probability,
            0.0,
            0.5,
        )?;
        rules::misalignment(self.misalignment)?;
        rules::ec_efficiency(self.ec_efficiency)?;
        check("hardware.mu1", self.mu1, 0.0, 100.0)?;
        check("hardware.mu2", self.mu2, 0.0, self.mu1)?;
        check("hardware.mu3", self.mu3, 0.0, self.mu2)?;
        if self.mu1 <= self.mu2 + self.mu3 {
            return Err(ParamError {
                field: "hardware.mu1".into(),
                reason: format!(
                    "must exceed mu2 + mu3 = {}, got {}",
                    self.mu2 + self.mu3,
                    self.mu1
                ),
            });
        }
        rules::probability("hardware.p_mu1", self.p_mu1)?;
        check("hardware.p_mu2", self.p_mu2, 0.0, 1.0 - self.p_mu1)?;
        rules::probability("hardware.p_key_basis", self.p_key_basis)?;
        Ok(())
    }

    /// Full evaluation with explicit intensities and probabilities.
    #[allow(clippy::too_many_arguments)]
    pub fn key_length_per_pulse(
        &self,
        loss_db: f64,
        mu: [f64; 3],
        p: [f64; 3],
        p_key: f64,
        sec: &Security,
    ) -> Evaluation {
        let eta = 10f64.powf(-loss_db / 10.0) * self.detector_efficiency;
        let pd = self.dark_count_probability;
        let n = match sec {
            Security::Finite(f) => f.block_size,
            Security::Asymptotic => 1.0,
        };
        let p_test = 1.0 - p_key;
        // Per-intensity detection and error probabilities (Lim et al. 2014, Appendix).
        let mut d = [0.0; 3];
        let mut e = [0.0; 3];
        for k in 0..3 {
            let click = 1.0 - (1.0 - pd) * (1.0 - pd) * (-eta * mu[k]).exp();
            d[k] = click * (1.0 + self.afterpulse_probability);
            e[k] = pd
                + self.misalignment * (-(-eta * mu[k]).exp_m1())
                + self.afterpulse_probability * d[k] / 2.0;
        }
        let counts = DecoyCounts {
            key: core::array::from_fn(|k| n * p_key * p_key * p[k] * d[k]),
            test: core::array::from_fn(|k| n * p_test * p_test * p[k] * d[k]),
            test_errors: core::array::from_fn(|k| n * p_test * p_test * p[k] * e[k]),
            key_errors: (0..3).map(|k| n * p_key * p_key * p[k] * e[k]).sum(),
        };
        let b = lim_bound(&counts, mu, p, sec);
        let leak = self.ec_efficiency * b.key_bits * h2(b.qber_key);
        Evaluation {
            raw_key_per_signal: if b.secrecy_bits.is_finite() {
                (b.secrecy_bits - leak - b.overhead_bits) / n
            } else {
                b.s1_key.min(0.0) / n - 1e-12
            },
            qber_key: b.qber_key,
            qber_test: b.qber_test,
        }
    }
}

/// Detections of a decoy-BB84 block, by intensity (μ₁, μ₂, μ₃): both parties in the key
/// basis, both in the test basis, and the errors — observed at runtime, or expected in the
/// forward model.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DecoyCounts {
    /// Key-basis detections per intensity, n_{Z,k} (X in Lim et al.).
    pub key: [f64; 3],
    /// Test-basis detections per intensity.
    pub test: [f64; 3],
    /// Test-basis errors per intensity, m_{X,k}.
    pub test_errors: [f64; 3],
    /// Key-basis errors over all intensities (what reconciliation corrects).
    pub key_errors: f64,
}

impl DecoyCounts {
    /// Adds another window's counts (a block is the sum of its windows').
    pub fn add(&mut self, c: &DecoyCounts) {
        for k in 0..3 {
            self.key[k] += c.key[k];
            self.test[k] += c.test[k];
            self.test_errors[k] += c.test_errors[k];
        }
        self.key_errors += c.key_errors;
    }
}

/// What the Lim et al. 2014 bound says about a block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimBound {
    /// s_{Z,0} + s_{Z,1}(1 − h(φ_Z)): the smooth min-entropy the bound grants before error
    /// correction (−∞ when the single-photon bound is not positive).
    pub secrecy_bits: f64,
    /// 6 log₂(21/ε_sec) + log₂(2/ε_cor): the composable overhead (0 asymptotically).
    pub overhead_bits: f64,
    /// Key-basis detections n_Z (the sifted key's length).
    pub key_bits: f64,
    /// Lower bound on key-basis single-photon detections s_{Z,1}.
    pub s1_key: f64,
    /// Upper bound on their phase error φ_Z.
    pub phase_error: f64,
    /// Observed key-basis error rate.
    pub qber_key: f64,
    /// Observed test-basis error rate.
    pub qber_test: f64,
}

/// The finite-key bound of Lim, Curty, Walenta, Xu, Zbinden, PRA 89, 022307 (2014),
/// Eqs. (2)–(5) and Appendix: from a block's detections by basis and intensity (`mu`, sent
/// with probabilities `p`), the vacuum and single-photon detection bounds s_{Z,0},
/// s_{Z,1} (decoy method with Hoeffding deviations `δ = √(n/2 ln(21/ε_sec))`), the
/// single-photon phase error φ_Z from the test basis with the random-sampling correction
/// γ, and ℓ = s_{Z,0} + s_{Z,1}(1 − h(φ_Z)) − λ_EC − 6 log₂(21/ε_sec) − log₂(2/ε_cor)
/// where the caller subtracts the error-correction leakage λ_EC it measured (or, in the
/// forward model, f·n_Z·h(E_Z)).
pub fn lim_bound(c: &DecoyCounts, mu: [f64; 3], p: [f64; 3], sec: &Security) -> LimBound {
    let (nk, nt, mt) = (c.key, c.test, c.test_errors);
    let nk_total: f64 = nk.iter().sum();
    let nt_total: f64 = nt.iter().sum();
    let mt_total: f64 = mt.iter().sum();
    let qber_key = if nk_total > 0.0 {
        c.key_errors / nk_total
    } else {
        0.5
    };
    let qber_test = if nt_total > 0.0 {
        mt_total / nt_total
    } else {
        0.5
    };
    // Hoeffding deviations; 21 bounds in Lim et al.'s accounting.
    let (dev_k, dev_t, dev_m, eps) = match sec {
        Security::Asymptotic => (0.0, 0.0, 0.0, None),
        Security::Finite(f) => {
            let l = (21.0 / f.eps_sec).ln();
            (
                (nk_total / 2.0 * l).sqrt(),
                (nt_total / 2.0 * l).sqrt(),
                (mt_total / 2.0 * l).sqrt(),
                Some(f.eps_sec),
            )
        }
    };
    let plus = |x: f64, k: usize, dev: f64| (mu[k]).exp() / p[k] * (x + dev);
    let minus = |x: f64, k: usize, dev: f64| (mu[k]).exp() / p[k] * (x - dev);
    // τ_n = Σ_k p_k e^{−μ_k} μ_k^n / n!, needed for n = 0, 1 (n! = 1).
    let tau = |nph: i32| -> f64 {
        (0..3)
            .map(|k| p[k] * (-mu[k]).exp() * mu[k].powi(nph))
            .sum()
    };
    let (t0, t1) = (tau(0), tau(1));
    let (m1, m2, m3) = (mu[0], mu[1], mu[2]);
    let s0 = |n: &[f64; 3], dev: f64| {
        (t0 * (m2 * minus(n[2], 2, dev) - m3 * plus(n[1], 1, dev)) / (m2 - m3)).max(0.0)
    };
    let s1 = |n: &[f64; 3], dev: f64, s0v: f64| {
        let num = minus(n[1], 1, dev)
            - plus(n[2], 2, dev)
            - (m2 * m2 - m3 * m3) / (m1 * m1) * (plus(n[0], 0, dev) - s0v / t0);
        t1 * m1 * num / (m1 * (m2 - m3) - m2 * m2 + m3 * m3)
    };
    let s0k = s0(&nk, dev_k);
    let s1k = s1(&nk, dev_k, s0k);
    let s0t = s0(&nt, dev_t);
    let s1t = s1(&nt, dev_t, s0t);
    let v1t = t1 * (plus(mt[1], 1, dev_m) - minus(mt[2], 2, dev_m)) / (m2 - m3);
    let overhead_bits = crate::finite::composable_overhead(sec, 21.0);
    if s1k <= 0.0 || s1t <= 0.0 || !s1k.is_finite() {
        return LimBound {
            secrecy_bits: f64::NEG_INFINITY,
            overhead_bits,
            key_bits: nk_total,
            s1_key: s1k,
            phase_error: 0.5,
            qber_key,
            qber_test,
        };
    }
    let ratio = (v1t / s1t).max(0.0);
    let phi = match eps {
        None => ratio,
        Some(es) => ratio + gamma(es, ratio, s1t, s1k),
    }
    .min(0.5);
    LimBound {
        secrecy_bits: s0k + s1k * (1.0 - h2(phi)),
        overhead_bits,
        key_bits: nk_total,
        s1_key: s1k,
        phase_error: phi,
        qber_key,
        qber_test,
    }
}

/// γ(a, b, c, d) of Lim et al. 2014 (random-sampling correction to the phase error).
fn gamma(a: f64, b: f64, c: f64, d: f64) -> f64 {
    if b <= 0.0 || b >= 1.0 {
        return 0.0;
    }
    let t = (c + d) * (1.0 - b) * b / (c * d * std::f64::consts::LN_2)
        * ((c + d) / (c * d * (1.0 - b) * b) * (21.0 * 21.0) / (a * a)).log2();
    t.max(0.0).sqrt()
}

impl KeyRateModel for DecoyBb84 {
    fn free_params(&self) -> &'static [FreeParam] {
        &FREE
    }

    fn initial(&self) -> Vec<f64> {
        vec![
            self.mu1,
            (self.mu2 - self.mu3) / (self.mu1 - self.mu3).max(1e-12),
            self.p_mu1,
            self.p_mu2 / (1.0 - self.p_mu1).max(1e-12),
            self.p_key_basis,
        ]
    }

    fn evaluate(&self, loss_db: f64, x: &[f64], sec: &Security) -> Evaluation {
        let mu1 = x[0];
        let mu3 = self.mu3.min(0.5 * mu1);
        // μ₂ between μ₃ and μ₁ − μ₃ so that μ₁ > μ₂ + μ₃ holds.
        let mu2 = mu3 + x[1] * (mu1 - 2.0 * mu3);
        let p1 = x[2];
        let p2 = x[3] * (1.0 - p1);
        let p3 = (1.0 - p1 - p2).max(1e-9);
        self.key_length_per_pulse(loss_db, [mu1, mu2, mu3], [p1, p2, p3], x[4], sec)
    }

    fn signals_per_second(&self) -> f64 {
        self.clock_hz
    }
}

/// Asymptotic GLLP key rate per pulse with ideal decoy states (Lo, Ma, Chen, PRL 94,
/// 230504 (2005), Eqs. (1)–(3); Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005), §II):
/// `R = q {−Q_μ f h(E_μ) + Q₁ [1 − h(e₁)]}` with `Y₀` the background yield, `η` the overall
/// transmittance, `e_d` the detector error, `q` the sifting factor.
pub fn gllp_infinite_decoy(eta: f64, mu: f64, y0: f64, e_d: f64, f: f64, q: f64) -> f64 {
    let q_mu = y0 + 1.0 - (-eta * mu).exp();
    let e_mu = (0.5 * y0 + e_d * (1.0 - (-eta * mu).exp())) / q_mu;
    let y1 = y0 + eta;
    let e1 = (0.5 * y0 + e_d * eta) / y1;
    let q1 = y1 * mu * (-mu).exp();
    q * (-q_mu * f * h2(e_mu) + q1 * (1.0 - h2(e1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GYS parameters (Gobby, Yuan, Shields, APL 84, 3762 (2004)) as used by Lo, Ma, Chen
    /// 2005: α = 0.21 dB/km, e_d = 3.3 %, Y₀ = 1.7e-6, η_Bob = 4.5 %, f = 1.22, q = ½.
    fn gys_rate(l_km: f64, mu: f64) -> f64 {
        let eta = 10f64.powf(-0.21 * l_km / 10.0) * 0.045;
        gllp_infinite_decoy(eta, mu, 1.7e-6, 0.033, 1.22, 0.5)
    }

    fn best_over_mu(l: f64) -> (f64, f64) {
        let mut best = (f64::MIN, 0.0);
        for i in 1..400 {
            let mu = i as f64 * 0.0025;
            let r = gys_rate(l, mu);
            if r > best.0 {
                best = (r, mu);
            }
        }
        best
    }

    /// Lo, Ma, Chen 2005: with GYS data and ideal decoys the maximal secure distance is
    /// 142 km (their text and Fig. 1).
    #[test]
    fn gllp_infinite_decoy_reaches_142_km_with_gys_data() {
        let mut l = 100.0;
        while best_over_mu(l).0 > 0.0 {
            l += 0.25;
        }
        assert!((l - 142.0).abs() < 2.0, "max distance {l} km");
    }

    /// Ma, Qi, Zhao, Lo 2005 (PRA 72, 012326), §IV: with GYS data the optimal signal
    /// intensity is μ ≈ 0.48 at short to medium distances.
    #[test]
    fn gllp_optimal_mu_with_gys_data_is_about_0_48() {
        let (_, mu) = best_over_mu(50.0);
        assert!((mu - 0.48).abs() < 0.03, "μ_opt = {mu}");
    }

    #[test]
    fn finite_key_approaches_asymptotic_and_vanishes_past_threshold() {
        let m = DecoyBb84::default();
        let x = m.initial();
        let asym = m.evaluate(20.0, &x, &Security::Asymptotic).key_per_signal();
        let mut last = 0.0;
        for n in [1e9, 1e11, 1e13, 1e15] {
            let fk = crate::finite::FiniteKey {
                block_size: n,
                ..Default::default()
            };
            let r = m.evaluate(20.0, &x, &Security::Finite(fk)).key_per_signal();
            assert!(r >= last && r <= asym, "n={n}: {r} vs asym {asym}");
            last = r;
        }
        assert!(last > 0.95 * asym, "{last} vs {asym}");
        // Misalignment of 12 % is beyond the BB84 threshold (≈ 11 %).
        let bad = DecoyBb84 {
            misalignment: 0.12,
            ..m
        };
        assert_eq!(
            bad.evaluate(0.0, &x, &Security::Asymptotic)
                .key_per_signal(),
            0.0
        );
    }
}
