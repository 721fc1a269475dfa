//! BBM92 with entangled photon pairs: pulsed (Ma, Fung, Lo 2007) and continuous-wave
//! (Neumann et al. 2021) sources, finite key after Tomamichel et al. 2012.

use crate::finite::Security;
use crate::math::h2;
use crate::model::{Evaluation, FreeParam, KeyRateModel, Scale};
use crate::rules;
use qkdnet_optics::detector::{window_capture_fraction, FWHM_PER_SIGMA};
use qkdnet_optics::fibre::split_transmittance;
use qkdnet_optics::{check, ParamError};
use serde::{Deserialize, Serialize};

/// Tomamichel, Lim, Gisin, Renner, Nat. Commun. 3, 634 (2012), Eq. (2)–(3): secret key
/// length from `n` key bits and `k` test bits with observed test error `q_test`:
/// `ℓ = n (1 − h(Q + μ)) − leak − log₂(2 / (ε_sec² ε_cor))`,
/// `μ = √((n+k)/(nk) · (k+1)/k · ln(2/ε_sec))`.
pub fn tomamichel_key_length(
    n: f64,
    k: f64,
    q_test: f64,
    leak: f64,
    eps_sec: f64,
    eps_cor: f64,
) -> f64 {
    if n <= 0.0 || k <= 0.0 {
        return -1.0;
    }
    let mu = ((n + k) / (n * k) * (k + 1.0) / k * (2.0 / eps_sec).ln()).sqrt();
    let q = (q_test + mu).min(0.5);
    n * (1.0 - h2(q)) - leak - (2.0 / (eps_sec * eps_sec * eps_cor)).log2()
}

/// A BBM92 link with a continuous-wave pumped SPDC source (Neumann et al., PRA 104, 022406
/// (2021), §II–III). The channel loss passed to [`KeyRateModel::evaluate`] is the total
/// two-arm loss in dB from the source to both detectors' inputs, split between the arms
/// by `alice_loss_fraction`; detector efficiencies come on top.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bbm92Cw {
    /// Pair rate per mW of pump into the collected channel pair, pairs/s/mW.
    pub brightness_pairs_per_s_per_mw: f64,
    /// Pump power, mW (free parameter: the link steers it to the optimum).
    pub pump_power_mw: f64,
    /// Largest pump power available, mW.
    pub max_pump_power_mw: f64,
    /// Fraction of the total loss (in dB) on Alice's arm.
    pub alice_loss_fraction: f64,
    /// Detector efficiency (each side).
    pub detector_efficiency: f64,
    /// Dark-count rate per detector, counts/s.
    pub dark_count_rate_hz: f64,
    /// Number of detectors per side (their dark counts add up).
    pub detectors_per_side: u32,
    /// Detector dead time, s (non-paralysable; each side's singles are shared among its detectors).
    pub dead_time_s: f64,
    /// Coincidence-peak FWHM from timing jitter (detectors, taggers, and dispersion unless
    /// `dispersion_spread_ps` states it), ps.
    pub coincidence_fwhm_ps: f64,
    /// FWHM spread that the channel's chromatic dispersion adds to the pairs' arrival-time
    /// difference, ps (`qkdnet_optics::fibre::entangled_dispersion_spread_ps`: the arms'
    /// accumulated dispersion, compensation subtracted, times the filter bandwidth). Added
    /// to `coincidence_fwhm_ps` in quadrature. Default 0: included in the FWHM.
    pub dispersion_spread_ps: f64,
    /// Coincidence window, ps.
    pub coincidence_window_ps: f64,
    /// Intrinsic key-basis (time) error of true coincidences.
    pub intrinsic_error_key: f64,
    /// Interferometer visibility of the test (energy) basis.
    pub visibility_test: f64,
    /// Probability each side measures in the key basis (passive splitter ratio).
    pub p_key_basis: f64,
    /// Error-correction efficiency f.
    pub ec_efficiency: f64,
    /// Uncorrelated photons per second reaching Alice's receiver inside her channel
    /// (Raman scattering and crosstalk from classical traffic on the fibre), before the
    /// detectors' efficiency; the network planner fills it in. Default 0.
    pub alice_noise_hz: f64,
    /// The same at Bob's receiver.
    pub bob_noise_hz: f64,
    /// Share of the test basis's true coincidences that fall in its coincidence window,
    /// relative to the key basis. 1 for polarisation analysers (Neumann et al.'s model) and
    /// for time–energy analysers whose every pair interferes; 1/2 for a pair of unbalanced
    /// Mach–Zehnder (Franson) analysers, whose short–long and long–short pairs land ±τ away
    /// in side peaks while the accidentals stay at the key basis's density, so the test
    /// basis sees twice the accidental ratio (Franson, PRL 62, 2205 (1989)). The emulator
    /// draws the same share. Default 1.
    pub test_central_share: f64,
}

impl Default for Bbm92Cw {
    fn default() -> Self {
        Self {
            brightness_pairs_per_s_per_mw: 1e8,
            pump_power_mw: 1.0,
            max_pump_power_mw: 100.0,
            alice_loss_fraction: 0.5,
            detector_efficiency: 0.8,
            dark_count_rate_hz: 100.0,
            detectors_per_side: 2,
            dead_time_s: 50e-9,
            coincidence_fwhm_ps: 60.0,
            dispersion_spread_ps: 0.0,
            coincidence_window_ps: 120.0,
            intrinsic_error_key: 0.0,
            visibility_test: 0.997,
            p_key_basis: 0.5,
            ec_efficiency: 1.16,
            alice_noise_hz: 0.0,
            bob_noise_hz: 0.0,
            test_central_share: 1.0,
        }
    }
}

const FREE_CW: [FreeParam; 1] = [FreeParam {
    name: "pump_power_mw",
    lo: 1e-6,
    hi: 1e6,
    scale: Scale::Log,
}];

/// Expected rates of a CW BBM92 link at one operating point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CwRates {
    /// Measured singles, Alice and Bob, counts/s.
    pub singles: [f64; 2],
    /// True coincidences in the window, per second (both sides in the key basis or not:
    /// before the basis split).
    pub true_coincidences: f64,
    /// Accidental coincidences in the window, per second (before the basis split).
    pub accidentals: f64,
    /// True coincidences in the test basis's window, per second, before the basis split:
    /// `test_central_share` of `true_coincidences`.
    pub test_true_coincidences: f64,
    /// Error rate in the key basis.
    pub qber_key: f64,
    /// Error rate in the test basis.
    pub qber_test: f64,
}

impl Bbm92Cw {
    /// The coincidence peak's FWHM with the dispersion spread:
    /// `√(coincidence_fwhm² + dispersion_spread²)`, ps.
    pub fn effective_fwhm_ps(&self) -> f64 {
        self.coincidence_fwhm_ps.hypot(self.dispersion_spread_ps)
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), ParamError> {
        check(
            "hardware.brightness_pairs_per_s_per_mw",
            self.brightness_pairs_per_s_per_mw,
            0.0,
            1e15,
        )?;
        check(
            "hardware.max_pump_power_mw",
            self.max_pump_power_mw,
            1e-6,
            1e6,
        )?;
        check(
            "hardware.pump_power_mw",
            self.pump_power_mw,
            0.0,
            self.max_pump_power_mw,
        )?;
        rules::alice_loss_fraction(self.alice_loss_fraction)?;
        rules::detector_efficiency(self.detector_efficiency)?;
        check(
            "hardware.dark_count_rate_hz",
            self.dark_count_rate_hz,
            0.0,
            1e9,
        )?;
        check("hardware.alice_noise_hz", self.alice_noise_hz, 0.0, 1e12)?;
        check("hardware.bob_noise_hz", self.bob_noise_hz, 0.0, 1e12)?;
        check(
            "hardware.detectors_per_side",
            self.detectors_per_side as f64,
            1.0,
            64.0,
        )?;
        rules::probability("hardware.dead_time_s", self.dead_time_s)?;
        check(
            "hardware.coincidence_fwhm_ps",
            self.coincidence_fwhm_ps,
            0.0,
            1e9,
        )?;
        check(
            "hardware.dispersion_spread_ps",
            self.dispersion_spread_ps,
            0.0,
            1e9,
        )?;
        check(
            "hardware.coincidence_window_ps",
            self.coincidence_window_ps,
            1e-3,
            1e9,
        )?;
        check(
            "hardware.intrinsic_error_key",
            self.intrinsic_error_key,
            0.0,
            0.5,
        )?;
        rules::probability("hardware.visibility_test", self.visibility_test)?;
        rules::probability("hardware.p_key_basis", self.p_key_basis)?;
        rules::ec_efficiency(self.ec_efficiency)?;
        check(
            "hardware.test_central_share",
            self.test_central_share,
            1e-3,
            1.0,
        )?;
        Ok(())
    }

    /// Singles, coincidences, accidentals and error rates (Neumann et al. 2021, Eqs. (1)–(7)):
    /// `S = B η + η_d N + DC` (through dead time; `N` the noise photons at the receiver), `CC_true = B η_A η_B η_t(t_CC)`,
    /// `CC_acc = S_A S_B t_CC`, accidentals carrying a 50 % error. The test basis keeps
    /// `test_central_share` of the true coincidences and all the accidentals.
    pub fn rates(&self, loss_db: f64, pump_mw: f64) -> CwRates {
        let b = self.brightness_pairs_per_s_per_mw * pump_mw;
        let (ta, tb) = split_transmittance(loss_db, self.alice_loss_fraction);
        let eta_a = ta * self.detector_efficiency;
        let eta_b = tb * self.detector_efficiency;
        let dc = self.dark_count_rate_hz * self.detectors_per_side as f64;
        let n_det = self.detectors_per_side as f64;
        let raw_a = b * eta_a + dc + self.alice_noise_hz * self.detector_efficiency;
        let raw_b = b * eta_b + dc + self.bob_noise_hz * self.detector_efficiency;
        // Dead time per detector, the side's light split over its detectors.
        let live_a = 1.0 / (1.0 + raw_a / n_det * self.dead_time_s);
        let live_b = 1.0 / (1.0 + raw_b / n_det * self.dead_time_s);
        let (sa, sb) = (raw_a * live_a, raw_b * live_b);
        let tw = self.coincidence_window_ps * 1e-12;
        let capture = window_capture_fraction(
            self.coincidence_window_ps,
            self.effective_fwhm_ps() / FWHM_PER_SIGMA,
        );
        let cc_true = b * eta_a * eta_b * capture * live_a * live_b;
        let cc_acc = sa * sb * tw;
        let total = cc_true + cc_acc;
        let e_test_true = 0.5 * (1.0 - self.visibility_test);
        let test_true = cc_true * self.test_central_share;
        CwRates {
            singles: [sa, sb],
            true_coincidences: cc_true,
            accidentals: cc_acc,
            test_true_coincidences: test_true,
            qber_key: (cc_true * self.intrinsic_error_key + 0.5 * cc_acc) / total,
            qber_test: (test_true * e_test_true + 0.5 * cc_acc) / (test_true + cc_acc),
        }
    }
}

impl KeyRateModel for Bbm92Cw {
    fn free_params(&self) -> &'static [FreeParam] {
        &FREE_CW
    }

    fn initial(&self) -> Vec<f64> {
        vec![self.pump_power_mw]
    }

    /// Key per coincidence-window slot; `signals_per_second` converts to bit/s.
    fn evaluate(&self, loss_db: f64, x: &[f64], sec: &Security) -> Evaluation {
        let pump = x[0].min(self.max_pump_power_mw);
        let r = self.rates(loss_db, pump);
        let cc = r.true_coincidences + r.accidentals;
        let pk = self.p_key_basis;
        let pt = 1.0 - pk;
        let slots = self.signals_per_second();
        let (key_rate, qk, qt) = (cc * pk * pk, r.qber_key, r.qber_test);
        let per_slot = match sec {
            Security::Asymptotic => key_rate * (1.0 - self.ec_efficiency * h2(qk) - h2(qt)) / slots,
            Security::Finite(f) => {
                let seconds = f.block_size / slots;
                let n = key_rate * seconds;
                let k = (r.test_true_coincidences + r.accidentals) * pt * pt * seconds;
                let leak = self.ec_efficiency * n * h2(qk);
                tomamichel_key_length(n, k, qt, leak, f.eps_sec, f.eps_cor) / f.block_size
            }
        };
        Evaluation {
            raw_key_per_signal: per_slot,
            qber_key: qk,
            qber_test: qt,
        }
    }

    fn signals_per_second(&self) -> f64 {
        1e12 / self.coincidence_window_ps
    }
}

/// A BBM92 link with a pulsed SPDC source at a relay between Alice and Bob
/// (Ma, Fung, Lo, PRA 76, 012307 (2007), §III). Loss convention as [`Bbm92Cw`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bbm92Pulsed {
    /// Pulse rate, Hz.
    pub clock_hz: f64,
    /// Mean number of pairs per pulse λ (= μ/2 in Ma et al.'s notation).
    pub mean_pairs: f64,
    /// Fraction of the total loss (dB) on Alice's arm.
    pub alice_loss_fraction: f64,
    /// Detector efficiency (each side).
    pub detector_efficiency: f64,
    /// Background (dark) yield per side per pulse, Y₀.
    pub dark_count_probability: f64,
    /// Intrinsic detector/misalignment error e_d.
    pub misalignment: f64,
    /// Error-correction efficiency f.
    pub ec_efficiency: f64,
    /// Probability each side measures in the key basis.
    pub p_key_basis: f64,
}

impl Default for Bbm92Pulsed {
    /// Ma, Fung, Lo 2007's simulation uses GYS detection parameters: η_det = 4.5 %,
    /// Y₀ = 1.7e-6, e_d = 3.3 %, f = 1.22 (their §V).
    fn default() -> Self {
        Self {
            clock_hz: 1e9,
            mean_pairs: 0.05,
            alice_loss_fraction: 0.5,
            detector_efficiency: 0.045,
            dark_count_probability: 1.7e-6,
            misalignment: 0.033,
            ec_efficiency: 1.22,
            p_key_basis: 0.5,
        }
    }
}

const FREE_PULSED: [FreeParam; 2] = [
    FreeParam {
        name: "mean_pairs",
        lo: 1e-5,
        hi: 2.0,
        scale: Scale::Log,
    },
    FreeParam {
        name: "p_key_basis",
        lo: 0.05,
        hi: 0.995,
        scale: Scale::Linear,
    },
];

impl Bbm92Pulsed {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ParamError> {
        rules::clock_hz("hardware.clock_hz", self.clock_hz)?;
        check("hardware.mean_pairs", self.mean_pairs, 0.0, 100.0)?;
        rules::alice_loss_fraction(self.alice_loss_fraction)?;
        rules::detector_efficiency(self.detector_efficiency)?;
        rules::dark_count_probability(self.dark_count_probability)?;
        rules::misalignment(self.misalignment)?;
        rules::ec_efficiency(self.ec_efficiency)?;
        rules::probability("hardware.p_key_basis", self.p_key_basis)?;
        Ok(())
    }

    /// Gain and error rate, Ma, Fung, Lo 2007, Eqs. (9)–(10) (thermal pair statistics),
    /// with the last denominator factor of Eq. (10) not squared (REFERENCE.md §2).
    pub fn gain_and_error(&self, loss_db: f64, lambda: f64) -> (f64, f64) {
        let (ta, tb) = split_transmittance(loss_db, self.alice_loss_fraction);
        let ea = ta * self.detector_efficiency;
        let eb = tb * self.detector_efficiency;
        let y0 = self.dark_count_probability;
        let (da, db) = (1.0 + ea * lambda, 1.0 + eb * lambda);
        let dab = 1.0 + ea * lambda + eb * lambda - ea * eb * lambda;
        let q = 1.0 - (1.0 - y0) / (da * da) - (1.0 - y0) / (db * db)
            + (1.0 - y0) * (1.0 - y0) / (dab * dab);
        let e0 = 0.5;
        let eq = e0 * q
            - 2.0 * (e0 - self.misalignment) * ea * eb * lambda * (1.0 + lambda) / (da * db * dab);
        (q, eq / q)
    }
}

impl KeyRateModel for Bbm92Pulsed {
    fn free_params(&self) -> &'static [FreeParam] {
        &FREE_PULSED
    }

    fn initial(&self) -> Vec<f64> {
        vec![self.mean_pairs, self.p_key_basis]
    }

    /// Key per pulse, `q Q_λ [1 − f h(E_λ) − h(E_λ)]` asymptotically (Ma, Fung, Lo 2007,
    /// Eq. (4)), the bit and phase errors being equal for the symmetric source.
    fn evaluate(&self, loss_db: f64, x: &[f64], sec: &Security) -> Evaluation {
        let (q, e) = self.gain_and_error(loss_db, x[0]);
        let pk = x[1];
        let pt = 1.0 - pk;
        let raw = match sec {
            Security::Asymptotic => pk * pk * q * (1.0 - self.ec_efficiency * h2(e) - h2(e)),
            Security::Finite(f) => {
                let n = f.block_size * pk * pk * q;
                let k = f.block_size * pt * pt * q;
                tomamichel_key_length(
                    n,
                    k,
                    e,
                    self.ec_efficiency * n * h2(e),
                    f.eps_sec,
                    f.eps_cor,
                ) / f.block_size
            }
        };
        Evaluation {
            raw_key_per_signal: raw,
            qber_key: e,
            qber_test: e,
        }
    }

    fn signals_per_second(&self) -> f64 {
        self.clock_hz
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispersion_spread_adds_to_the_jitter_in_quadrature() {
        // A 300 ps spread on a 400 ps peak is a 500 ps peak: same rates, fewer
        // coincidences in the window than without it.
        let with = Bbm92Cw {
            coincidence_fwhm_ps: 400.0,
            dispersion_spread_ps: 300.0,
            ..Bbm92Cw::default()
        };
        let same = Bbm92Cw {
            coincidence_fwhm_ps: 500.0,
            ..Bbm92Cw::default()
        };
        let (a, b) = (with.rates(30.0, 2.0), same.rates(30.0, 2.0));
        assert!((a.true_coincidences / b.true_coincidences - 1.0).abs() < 1e-12);
        let without = Bbm92Cw {
            coincidence_fwhm_ps: 400.0,
            ..Bbm92Cw::default()
        };
        assert!(a.true_coincidences < 0.9 * without.rates(30.0, 2.0).true_coincidences);
        // 50 km of standard fibre (850 ps/nm) on one arm behind 0.8 nm filters: 680 ps;
        // the same dispersion on both arms adds, opposite dispersion cancels.
        use qkdnet_optics::fibre::entangled_dispersion_spread_ps as spread;
        assert!((spread(850.0, 0.0, 0.8) - 680.0).abs() < 1e-9);
        assert!((spread(425.0, 425.0, 0.8) - 680.0).abs() < 1e-9);
        assert!(spread(850.0, -850.0, 0.8).abs() < 1e-9);
        let bad = Bbm92Cw {
            dispersion_spread_ps: -1.0,
            ..Bbm92Cw::default()
        };
        assert_eq!(
            bad.validate().expect_err("negative").field,
            "hardware.dispersion_spread_ps"
        );
    }
}
