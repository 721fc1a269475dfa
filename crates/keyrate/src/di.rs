//! Device-independent QKD from a CHSH value, and the memory-link figure of merit of a
//! trapped-ion repeater building block.

use crate::finite::Security;
use crate::math::h2;
use crate::model::{Evaluation, FreeParam, KeyRateModel};
use crate::rules;
use qkdnet_optics::{check, ParamError};
use serde::{Deserialize, Serialize};

/// Asymptotic DI-QKD key per pair against collective attacks (Pironio et al., NJP 11,
/// 045021 (2009), Eq. (11); Acín et al., PRL 98, 230501 (2007)):
/// `r = 1 − h(Q) − h((1 + √((S/2)² − 1)) / 2)` for S > 2, error-correction efficiency 1.
pub fn di_rate(chsh: f64, qber: f64) -> f64 {
    if chsh <= 2.0 {
        return 1.0 - h2(qber) - 1.0;
    }
    let s = chsh.min(2.0 * std::f64::consts::SQRT_2);
    1.0 - h2(qber) - h2((1.0 + ((s / 2.0).powi(2) - 1.0).sqrt()) / 2.0)
}

/// Lower bound on the CHSH value `S = E₀₀ + E₀₁ + E₁₀ − E₁₁` from its observed value and
/// the rounds behind each correlator (settings 00, 01, 10, 11): each correlator is a mean
/// of ±1 outcomes (range 2), so by Hoeffding it lies below its estimate by more than
/// `2√(ln(1/ε) / (2n))` with probability at most ε; the four deviations add. A correlator
/// without rounds bounds nothing (−∞).
pub fn chsh_lower(observed: f64, rounds: [f64; 4], eps: f64) -> f64 {
    let dev = |n: f64| {
        if n > 0.0 {
            2.0 * ((1.0 / eps).ln() / (2.0 * n)).sqrt()
        } else {
            f64::INFINITY
        }
    };
    observed - rounds.iter().map(|&n| dev(n)).sum::<f64>()
}

/// A DI-QKD block's observed counts: the CHSH rounds and agreeing outcomes per setting
/// pair `[a][b]` (after the parties' sign correction), and the key rounds (`A₀` with
/// Bob's key setting) with their disagreements.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DiCounts {
    /// CHSH rounds per setting pair.
    pub chsh_rounds: [[f64; 2]; 2],
    /// Of which with agreeing outcomes.
    pub chsh_agree: [[f64; 2]; 2],
    /// Key rounds.
    pub key_rounds: f64,
    /// Of which disagreeing.
    pub key_errors: f64,
}

impl DiCounts {
    /// Adds another window's counts.
    pub fn add(&mut self, o: &DiCounts) {
        for a in 0..2 {
            for b in 0..2 {
                self.chsh_rounds[a][b] += o.chsh_rounds[a][b];
                self.chsh_agree[a][b] += o.chsh_agree[a][b];
            }
        }
        self.key_rounds += o.key_rounds;
        self.key_errors += o.key_errors;
    }

    /// The observed CHSH value, `E = 2·agree/n − 1` per setting pair (0 without rounds).
    pub fn chsh(&self) -> f64 {
        let e = |a: usize, b: usize| {
            let n = self.chsh_rounds[a][b];
            if n > 0.0 {
                2.0 * self.chsh_agree[a][b] / n - 1.0
            } else {
                0.0
            }
        };
        e(0, 0) + e(0, 1) + e(1, 0) - e(1, 1)
    }
}

/// What the DI bound grants a block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiBound {
    /// Secrecy before error correction, bits: `n_key (1 − h((1 + √((S_L/2)² − 1))/2))`.
    pub secrecy_bits: f64,
    /// Composable overhead (4 correlator bounds), bits.
    pub overhead_bits: f64,
    /// The lower bound on S used.
    pub chsh_lower: f64,
}

/// The DI-QKD bound on a block's observed counts (Pironio et al., NJP 11, 045021 (2009),
/// Eq. (11): Eve's information on Alice's key bit is at most `h((1 + √((S/2)² − 1))/2)`
/// per key round, against collective attacks), with S bounded from below by
/// [`chsh_lower`] at ε_sec/4 per correlator, as [`DiQkd`]'s finite-key model does on
/// expected counts. The caller subtracts the error-correction leakage it measured (the
/// model's `h(Q)` term). Asymptotic security: the observed S.
pub fn di_bound(c: &DiCounts, sec: &Security) -> DiBound {
    let r = c.chsh_rounds;
    let s = c.chsh();
    let s_l = match sec {
        Security::Asymptotic => s,
        Security::Finite(f) => chsh_lower(s, [r[0][0], r[0][1], r[1][0], r[1][1]], f.eps_sec / 4.0),
    };
    DiBound {
        secrecy_bits: c.key_rounds * di_rate(s_l, 0.0).max(0.0),
        overhead_bits: crate::finite::composable_overhead(sec, 4.0),
        chsh_lower: s_l,
    }
}

/// Humphreys et al., Nature 558, 268 (2018): best fidelity of entanglement delivered at a
/// deterministic time by a link of efficiency η_link = r_ent / r_dec,
/// `F_max = ¼ [1 + 3 η^{1/(1−η)}]` (η ≠ 1; the limit at η = 1 is ¼(1 + 3/e)).
pub fn deterministic_delivery_fidelity(eta_link: f64) -> f64 {
    if (eta_link - 1.0).abs() < 1e-9 {
        return 0.25 * (1.0 + 3.0 / std::f64::consts::E);
    }
    0.25 * (1.0 + 3.0 * eta_link.powf(1.0 / (1.0 - eta_link)))
}

/// A heralded memory–memory entanglement link (single-photon protocol with a midpoint
/// station, Liu et al., arXiv:2602.08472) used for DI-QKD.
///
/// Each attempt lasts the preparation time plus the heralding round trip `L / c_fibre`
/// (photons travel L/2 to the midpoint, the herald L/2 back); it succeeds with probability
/// `2 α η_photon(L/2)` where the photon efficiency is emission × collection × conversion ×
/// fibre × detection. The pairs heralded with fidelity `herald_fidelity` (a Werner state)
/// give `S = 2√2 (4F−1)/3`, `Q = (1 − (4F−1)/3)/2`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryLink {
    /// Preparation overhead per attempt (cooling, state preparation), s.
    pub attempt_overhead_s: f64,
    /// Bright-state population α of the single-photon protocol.
    pub bright_population: f64,
    /// Photon efficiency before the fibre: emission, collection, frequency conversion.
    pub photon_efficiency: f64,
    /// Midpoint detector efficiency.
    pub detector_efficiency: f64,
    /// Memory coherence time, s.
    pub coherence_time_s: f64,
    /// Fidelity of the heralded state to a Bell state.
    pub herald_fidelity: f64,
}

impl Default for MemoryLink {
    /// Assumed values (not all published in what we could read) chosen to reproduce Liu et
    /// al.'s 10 km operating point: mean generation time ≈ 450 ms, coherence 550 ms.
    fn default() -> Self {
        Self {
            attempt_overhead_s: 100e-6,
            bright_population: 0.05,
            photon_efficiency: 0.0052,
            detector_efficiency: 0.8,
            coherence_time_s: 0.55,
            herald_fidelity: 0.9,
        }
    }
}

/// What a memory link delivers at one fibre loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryLinkPoint {
    /// Attempts per second.
    pub attempt_rate_hz: f64,
    /// Success probability per attempt.
    pub success_probability: f64,
    /// Mean generation time, s.
    pub generation_time_s: f64,
    /// Link efficiency η_link = r_ent / r_dec = T_coh / T_gen.
    pub eta_link: f64,
    /// Deterministic-delivery fidelity F_max(η_link).
    pub delivery_fidelity: f64,
}

impl MemoryLink {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ParamError> {
        check(
            "hardware.attempt_overhead_s",
            self.attempt_overhead_s,
            0.0,
            100.0,
        )?;
        check(
            "hardware.bright_population",
            self.bright_population,
            0.0,
            0.5,
        )?;
        rules::probability("hardware.photon_efficiency", self.photon_efficiency)?;
        rules::detector_efficiency(self.detector_efficiency)?;
        check(
            "hardware.coherence_time_s",
            self.coherence_time_s,
            1e-9,
            1e6,
        )?;
        check("hardware.herald_fidelity", self.herald_fidelity, 0.25, 1.0)?;
        Ok(())
    }

    /// The link at total fibre loss `loss_db` over `length_km` (midpoint heralding).
    pub fn point(&self, loss_db: f64, length_km: f64) -> MemoryLinkPoint {
        let round_trip = length_km * 1e3 * qkdnet_optics::consts::FIBRE_GROUP_INDEX
            / qkdnet_optics::consts::SPEED_OF_LIGHT_M_S;
        let attempt_rate = 1.0 / (self.attempt_overhead_s + round_trip);
        let eta_half = 10f64.powf(-loss_db / 20.0);
        let p = 2.0
            * self.bright_population
            * self.photon_efficiency
            * eta_half
            * self.detector_efficiency;
        let t_gen = 1.0 / (attempt_rate * p);
        let eta_link = self.coherence_time_s / t_gen;
        MemoryLinkPoint {
            attempt_rate_hz: attempt_rate,
            success_probability: p,
            generation_time_s: t_gen,
            eta_link,
            delivery_fidelity: deterministic_delivery_fidelity(eta_link),
        }
    }

    /// CHSH value and QBER of the heralded Werner state.
    pub fn chsh_and_qber(&self) -> (f64, f64) {
        let v = (4.0 * self.herald_fidelity - 1.0) / 3.0;
        (2.0 * std::f64::consts::SQRT_2 * v, (1.0 - v) / 2.0)
    }
}

/// DI-QKD over a memory link: key per heralded pair from the CHSH value of the heralded
/// state; finite size by Hoeffding bounds on S (test rounds, ±1-valued correlators) and Q,
/// i.i.d. (collective-attack) assumption. The loss passed to `evaluate` is the total fibre
/// loss; `length_km` converts it to the heralding delay.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiQkd {
    /// The memory link.
    pub link: MemoryLink,
    /// Fibre attenuation used to convert loss into length, dB/km.
    pub fibre_attenuation_db_per_km: f64,
    /// Fraction of pairs used to test CHSH.
    pub test_fraction: f64,
}

impl Default for DiQkd {
    fn default() -> Self {
        Self {
            link: MemoryLink::default(),
            fibre_attenuation_db_per_km: 0.2,
            test_fraction: 0.1,
        }
    }
}

impl DiQkd {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ParamError> {
        self.link.validate()?;
        rules::fibre_attenuation(self.fibre_attenuation_db_per_km)?;
        check("hardware.test_fraction", self.test_fraction, 1e-6, 0.999)?;
        Ok(())
    }
}

impl KeyRateModel for DiQkd {
    fn free_params(&self) -> &'static [FreeParam] {
        &[]
    }

    fn initial(&self) -> Vec<f64> {
        Vec::new()
    }

    /// Key per *attempt*; multiply by the attempt rate (see `signals_per_second`, which
    /// reports the zero-distance rate; the sweep uses [`DiQkd::attempts_per_second`]).
    fn evaluate(&self, loss_db: f64, _x: &[f64], sec: &Security) -> Evaluation {
        let len = loss_db / self.fibre_attenuation_db_per_km;
        let pt = self.link.point(loss_db, len);
        let (s, q) = self.link.chsh_and_qber();
        let per_pair = match sec {
            Security::Asymptotic => di_rate(s, q),
            Security::Finite(f) => {
                let n_test = f.block_size * self.test_fraction;
                let eps = f.eps_sec / 4.0;
                // Four correlators, each from n_test/4 rounds.
                let s_l = chsh_lower(s, [n_test / 4.0; 4], eps);
                let q_u = q + ((1.0 / eps).ln() / (2.0 * n_test)).sqrt();
                let n_key = f.block_size * (1.0 - self.test_fraction);
                (n_key * di_rate(s_l, q_u.min(0.5)) - crate::finite::composable_overhead(sec, 4.0))
                    / f.block_size
            }
        };
        let (_, qq) = self.link.chsh_and_qber();
        Evaluation {
            raw_key_per_signal: per_pair * pt.success_probability,
            qber_key: qq,
            qber_test: s,
        }
    }

    fn signals_per_second(&self) -> f64 {
        self.link.point(0.0, 0.0).attempt_rate_hz
    }
}

impl DiQkd {
    /// Attempts per second at a given loss (the heralding round trip grows with length).
    pub fn attempts_per_second(&self, loss_db: f64) -> f64 {
        self.link
            .point(loss_db, loss_db / self.fibre_attenuation_db_per_km)
            .attempt_rate_hz
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bound on a block's counts is the finite-key model on the same counts: at the
    /// expected counts of a 1e10-pair block (test fraction 0.1, four equal settings), the
    /// bound's secrecy net of its overhead and of `n_key h(Q_U)` is the model's key.
    #[test]
    fn the_count_bound_is_the_finite_model_at_expected_counts() {
        let m = DiQkd {
            link: MemoryLink {
                herald_fidelity: 0.97,
                ..MemoryLink::default()
            },
            ..DiQkd::default()
        };
        let f = crate::FiniteKey {
            block_size: 1e10,
            ..crate::FiniteKey::default()
        };
        let sec = Security::Finite(f);
        let (s, q) = m.link.chsh_and_qber();
        let v = (4.0 * m.link.herald_fidelity - 1.0) / 3.0;
        // At delay 0 every CHSH correlator is ±V/√2; agree = (1 + E)/2.
        let n_test = f.block_size * m.test_fraction;
        let e = [[1.0, 1.0], [1.0, -1.0]].map(|r: [f64; 2]| r.map(|x| x * v / 2f64.sqrt()));
        let c = DiCounts {
            chsh_rounds: [[n_test / 4.0; 2]; 2],
            chsh_agree: e.map(|r| r.map(|x| n_test / 4.0 * (1.0 + x) / 2.0)),
            key_rounds: f.block_size * (1.0 - m.test_fraction),
            key_errors: f.block_size * (1.0 - m.test_fraction) * q,
        };
        assert!((c.chsh() - s).abs() < 1e-12);
        let b = di_bound(&c, &sec);
        let q_u = q + ((4.0 / f.eps_sec).ln() / (2.0 * n_test)).sqrt();
        let via_bound = b.secrecy_bits - b.overhead_bits - c.key_rounds * h2(q_u);
        let pt = m.link.point(0.0, 0.0);
        let model =
            m.evaluate(0.0, &[], &sec).raw_key_per_signal / pt.success_probability * f.block_size;
        assert!(model > 0.0);
        assert!(
            (via_bound - model).abs() < 1e-9 * model,
            "{via_bound} vs {model}"
        );
        // Too few rounds: nothing.
        let small = DiCounts {
            chsh_rounds: [[25.0; 2]; 2],
            chsh_agree: e.map(|r| r.map(|x| 25.0 * (1.0 + x) / 2.0)),
            key_rounds: 900.0,
            key_errors: 900.0 * q,
        };
        let b = di_bound(&small, &sec);
        assert!(b.chsh_lower < 2.0 && b.secrecy_bits == 0.0, "{b:?}");
    }

    /// Pironio et al. 2009 / Acín et al. 2007: maximal violation and no noise gives 1 bit;
    /// on the depolarising line S = 2√2(1 − 2Q) the key vanishes at Q ≈ 7.1 %.
    #[test]
    fn di_rate_published_points() {
        assert!((di_rate(2.0 * 2f64.sqrt(), 0.0) - 1.0).abs() < 1e-12);
        let on_line = |q: f64| di_rate(2.0 * 2f64.sqrt() * (1.0 - 2.0 * q), q);
        let mut q = 0.0;
        while on_line(q) > 0.0 {
            q += 1e-4;
        }
        assert!((q - 0.071).abs() < 0.001, "threshold {q}");
        assert!(di_rate(2.0, 0.0) <= 0.0);
    }

    /// Humphreys et al. 2018: fidelity above ½ at deterministic delivery needs η_link ≳ 0.83.
    #[test]
    fn deterministic_delivery_threshold() {
        assert!(deterministic_delivery_fidelity(0.80) < 0.5);
        assert!(deterministic_delivery_fidelity(0.86) > 0.5);
        assert!(
            (deterministic_delivery_fidelity(0.999_999) - deterministic_delivery_fidelity(1.0))
                .abs()
                < 1e-5
        );
    }

    /// Liu et al. 2026: at 10 km the mean generation time (450 ms) is shorter than the
    /// coherence time (550 ± 36 ms): η_link = 550/450 ≈ 1.22 > 1.
    #[test]
    fn ion_link_beats_decoherence_at_10_km() {
        let link = MemoryLink::default();
        let p = link.point(10.0 * 0.2, 10.0);
        assert!(
            (p.generation_time_s - 0.45).abs() < 0.05,
            "T_gen = {}",
            p.generation_time_s
        );
        assert!(p.eta_link > 1.0, "{}", p.eta_link);
        let far = link.point(101.0 * 0.2, 101.0);
        assert!(far.eta_link < p.eta_link / 5.0);
    }
}
