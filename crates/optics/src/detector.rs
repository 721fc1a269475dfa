//! Single-photon detectors and coherent receivers.

use crate::special::erf;
use crate::{check, ParamError};
use serde::{Deserialize, Serialize};

/// How a single-photon detector is armed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", deny_unknown_fields)]
pub enum Gating {
    /// Always armed (SNSPDs, free-running InGaAs); dark counts are a rate.
    FreeRunning,
    /// Armed in short gates at `rate_hz` (GHz self-differencing InGaAs); dark counts are
    /// also specified per gate in [`Detector::dark_count_probability_per_gate`].
    Gated {
        /// Gate repetition rate, Hz.
        rate_hz: f64,
    },
}

/// A single-photon detector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detector {
    /// Detection efficiency (including coupling), in [0, 1].
    pub efficiency: f64,
    /// Dark-count rate while armed, counts/s.
    pub dark_count_rate_hz: f64,
    /// Dark-count probability per gate (gated detectors; 0 for free-running ones).
    pub dark_count_probability_per_gate: f64,
    /// Dead time after a click, seconds (non-paralysable model).
    pub dead_time_s: f64,
    /// Afterpulsing: probability of a spurious click following a real one.
    pub afterpulse_probability: f64,
    /// Timing jitter, full width at half maximum, picoseconds (Gaussian model).
    pub jitter_fwhm_ps: f64,
    /// Arming scheme.
    pub gating: Gating,
}

impl Default for Detector {
    fn default() -> Self {
        Self::snspd()
    }
}

impl Detector {
    /// Superconducting nanowire detector of the class used in the Nice network (ID Quantique
    /// ID281: efficiency > 80 %, dark counts < 100 Hz, jitter < 50 ps FWHM per its
    /// specification; recovery tens of ns). Values here: 0.80, 100 Hz, 40 ps, 50 ns.
    pub fn snspd() -> Self {
        Self {
            efficiency: 0.80,
            dark_count_rate_hz: 100.0,
            dark_count_probability_per_gate: 0.0,
            dead_time_s: 50e-9,
            afterpulse_probability: 0.0,
            jitter_fwhm_ps: 40.0,
            gating: Gating::FreeRunning,
        }
    }

    /// GHz-gated, thermo-electrically cooled InGaAs avalanche photodiode with self-differencing
    /// read-out, the non-cryogenic class of Toshiba's twin-field systems (Yuan et al., APL 91,
    /// 041114 (2007); Comandar et al., J. Appl. Phys. 117, 083109 (2015)): efficiency 0.25,
    /// dark-count probability 1e-6 per gate, afterpulsing 3 %, no dead time at 1 GHz gating.
    pub fn gated_ingaas() -> Self {
        Self {
            efficiency: 0.25,
            dark_count_rate_hz: 1e3,
            dark_count_probability_per_gate: 1e-6,
            dead_time_s: 0.0,
            afterpulse_probability: 0.03,
            jitter_fwhm_ps: 60.0,
            gating: Gating::Gated { rate_hz: 1e9 },
        }
    }

    /// Free-running InGaAs/InP APD (ID Quantique ID230/ID Qube class: efficiency 10–25 %,
    /// dark counts tens to hundreds of Hz at deep TE cooling, dead time µs, jitter ~150 ps):
    /// 0.15, 200 Hz, 10 µs, 2 % afterpulsing, 150 ps.
    pub fn free_running_ingaas() -> Self {
        Self {
            efficiency: 0.15,
            dark_count_rate_hz: 200.0,
            dark_count_probability_per_gate: 0.0,
            dead_time_s: 10e-6,
            afterpulse_probability: 0.02,
            jitter_fwhm_ps: 150.0,
            gating: Gating::FreeRunning,
        }
    }

    /// A preset by name: `snspd`, `gated-ingaas`, `free-running-ingaas`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "snspd" => Some(Self::snspd()),
            "gated-ingaas" => Some(Self::gated_ingaas()),
            "free-running-ingaas" => Some(Self::free_running_ingaas()),
            _ => None,
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), ParamError> {
        check("detector.efficiency", self.efficiency, 0.0, 1.0)?;
        check(
            "detector.dark_count_rate_hz",
            self.dark_count_rate_hz,
            0.0,
            1e9,
        )?;
        check(
            "detector.dark_count_probability_per_gate",
            self.dark_count_probability_per_gate,
            0.0,
            1.0,
        )?;
        check("detector.dead_time_s", self.dead_time_s, 0.0, 1.0)?;
        check(
            "detector.afterpulse_probability",
            self.afterpulse_probability,
            0.0,
            0.99,
        )?;
        check("detector.jitter_fwhm_ps", self.jitter_fwhm_ps, 0.0, 1e9)?;
        if let Gating::Gated { rate_hz } = self.gating {
            check("detector.gating.rate_hz", rate_hz, 1.0, 1e12)?;
        }
        Ok(())
    }

    /// Dark-count probability in a detection slot of `slot_s` seconds: the per-gate
    /// probability for gated detectors, `1 − exp(−DCR·slot)` for free-running ones.
    pub fn dark_probability(&self, slot_s: f64) -> f64 {
        match self.gating {
            Gating::Gated { .. } => self.dark_count_probability_per_gate,
            Gating::FreeRunning => -(-self.dark_count_rate_hz * slot_s).exp_m1(),
        }
    }

    /// Click probability for a mean photon number `n` arriving in a slot with dark
    /// probability `p_dark`: `1 − (1 − p_dark) e^{−η n}` (threshold detector, Poisson light).
    #[inline]
    pub fn click_probability(&self, n: f64, p_dark: f64) -> f64 {
        1.0 - (1.0 - p_dark) * (-self.efficiency * n).exp()
    }

    /// Measured click rate of a free-running detector given an incident photon rate,
    /// counts/s: detected photons plus dark counts, times afterpulsing, through a
    /// non-paralysable dead time `R / (1 + R τ)`.
    pub fn singles_rate(&self, photon_rate_hz: f64) -> f64 {
        let raw = (self.efficiency * photon_rate_hz + self.dark_count_rate_hz)
            * (1.0 + self.afterpulse_probability);
        raw / (1.0 + raw * self.dead_time_s)
    }

    /// Fraction of clicks still live after dead-time losses at a raw rate: `1 / (1 + R τ)`.
    pub fn dead_time_factor(&self, raw_rate_hz: f64) -> f64 {
        1.0 / (1.0 + raw_rate_hz * self.dead_time_s)
    }

    /// Gaussian standard deviation of the timing jitter, ps.
    pub fn jitter_sigma_ps(&self) -> f64 {
        self.jitter_fwhm_ps / FWHM_PER_SIGMA
    }
}

/// FWHM of a Gaussian in units of its standard deviation, `2√(2 ln 2)`.
pub const FWHM_PER_SIGMA: f64 = 2.354_820_045_030_949_3;

/// Fraction of a Gaussian coincidence peak of standard deviation `sigma_ps` captured by a
/// window of total width `window_ps` centred on it: `erf(w / (2√2 σ))`
/// (Neumann et al., PRA 104, 022406 (2021), the η_t(t_CC) factor).
pub fn window_capture_fraction(window_ps: f64, sigma_ps: f64) -> f64 {
    if sigma_ps <= 0.0 {
        return if window_ps > 0.0 { 1.0 } else { 0.0 };
    }
    erf(window_ps / (2.0 * std::f64::consts::SQRT_2 * sigma_ps))
}

/// Kind of coherent detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CoherentDetection {
    /// One quadrature per symbol.
    Homodyne,
    /// Both quadratures per symbol, each with one added vacuum unit (3 dB penalty).
    Heterodyne,
}

/// A coherent receiver for CV-QKD (balanced detector with a local oscillator).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoherentReceiver {
    /// Overall quantum efficiency of the receiver, in [0, 1].
    pub efficiency: f64,
    /// Electronic noise variance in shot-noise units (SNU).
    pub electronic_noise_snu: f64,
    /// Homodyne or heterodyne.
    pub detection: CoherentDetection,
    /// Electrical detection bandwidth, Hz (sets the optical mode width seen by the LO).
    pub bandwidth_hz: f64,
}

impl Default for CoherentReceiver {
    /// The DTU receiver of Hajomer et al., Sci. Adv. 10, eadi9474 (2024): efficiency 0.68,
    /// electronic noise 62.72 mSNU; heterodyne; 100 MHz detection bandwidth.
    fn default() -> Self {
        Self {
            efficiency: 0.68,
            electronic_noise_snu: 0.06272,
            detection: CoherentDetection::Heterodyne,
            bandwidth_hz: 100e6,
        }
    }
}

impl CoherentReceiver {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ParamError> {
        check("receiver.efficiency", self.efficiency, 1e-6, 1.0)?;
        check(
            "receiver.electronic_noise_snu",
            self.electronic_noise_snu,
            0.0,
            100.0,
        )?;
        check("receiver.bandwidth_hz", self.bandwidth_hz, 1.0, 1e13)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_capture_of_one_fwhm_is_76_percent() {
        // A window as wide as the FWHM captures erf(√ln2) = 0.7610 of a Gaussian.
        let f = window_capture_fraction(100.0, 100.0 / FWHM_PER_SIGMA);
        assert!((f - 0.760_968_5).abs() < 1e-6, "{f}");
    }

    #[test]
    fn dead_time_saturates_singles() {
        let d = Detector {
            dead_time_s: 1e-6,
            efficiency: 1.0,
            dark_count_rate_hz: 0.0,
            ..Detector::snspd()
        };
        assert!((d.singles_rate(1e6) - 5e5).abs() < 1e-6);
        assert!(d.singles_rate(1e12) < 1e6);
    }

    #[test]
    fn presets_are_valid_and_dark_probability_depends_on_gating() {
        for name in ["snspd", "gated-ingaas", "free-running-ingaas"] {
            Detector::preset(name).unwrap().validate().unwrap();
        }
        assert_eq!(Detector::gated_ingaas().dark_probability(1e-9), 1e-6);
        let p = Detector::snspd().dark_probability(1e-9);
        assert!((p - 1e-7).abs() < 1e-12, "{p}");
        let bad = Detector {
            efficiency: 1.2,
            ..Detector::snspd()
        };
        assert_eq!(bad.validate().unwrap_err().field, "detector.efficiency");
    }
}
