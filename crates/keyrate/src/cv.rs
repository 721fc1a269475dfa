//! Continuous-variable QKD, GG02: Gaussian-modulated coherent states, homodyne or
//! heterodyne detection with a trusted (calibrated) detector, reverse reconciliation.
//!
//! Conventions of Laudenbach et al., Adv. Quantum Technol. 1, 1800011 (2018): variances in
//! shot-noise units (vacuum = 1), V = V_A + 1, excess noise ξ referred to the channel input.
//! Mutual information Eq. (41)/(43), Holevo bound with trusted detector noise Eqs. (48)–(56).
//! Finite size after Leverrier, Grosshans, Grangier, PRA 81, 062343 (2010): worst-case
//! transmittance and excess noise from m estimation symbols, and the correction Δ(n).
//! Raman noise from co-propagating classical channels enters as excess noise 2·n_ram/T
//! (n_ram photons per mode in the LO's polarisation at the receiver; Kumar, Qin, Alléaume,
//! NJP 17, 043027 (2015)).

use crate::finite::Security;
use crate::math::{g_thermal, normal_quantile_upper};
use crate::model::{Evaluation, FreeParam, KeyRateModel, Scale};
use crate::rules;
use qkdnet_optics::detector::CoherentDetection;
use qkdnet_optics::fibre::Fibre;
use qkdnet_optics::raman::{noise_photons_per_mode, ClassicalChannel};
use qkdnet_optics::{check, ParamError};
use serde::{Deserialize, Serialize};

/// Hardware of a GG02 link. The loss passed to `evaluate` is the channel loss in dB.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CvGg02 {
    /// Symbol rate, Hz.
    pub symbol_rate_hz: f64,
    /// Modulation variance V_A, SNU.
    pub modulation_variance_snu: f64,
    /// Receiver efficiency η.
    pub detector_efficiency: f64,
    /// Electronic noise v_el, SNU.
    pub electronic_noise_snu: f64,
    /// Homodyne or heterodyne.
    pub detection: CoherentDetection,
    /// Reconciliation efficiency β.
    pub reconciliation_efficiency: f64,
    /// Excess noise at the channel input from the system (phase noise, modulation), SNU.
    pub excess_noise_snu: f64,
    /// Fraction of symbols disclosed for parameter estimation (finite size).
    pub estimation_fraction: f64,
    /// Quantum-channel wavelength, nm (for Raman noise).
    pub wavelength_nm: f64,
    /// Fibre attenuation, dB/km, used to turn loss into length for Raman noise.
    pub fibre_attenuation_db_per_km: f64,
    /// Co-propagating or counter-propagating classical channels.
    pub classical_channels: Vec<ClassicalChannel>,
}

impl Default for CvGg02 {
    /// Hajomer et al., Sci. Adv. 10, eadi9474 (2024): V_mod 8.41 SNU, η 0.68, v_el 62.72 mSNU,
    /// β 0.925; heterodyne; no classical traffic.
    fn default() -> Self {
        Self {
            symbol_rate_hz: 100e6,
            modulation_variance_snu: 8.41,
            detector_efficiency: 0.68,
            electronic_noise_snu: 0.06272,
            detection: CoherentDetection::Heterodyne,
            reconciliation_efficiency: 0.925,
            excess_noise_snu: 0.0,
            estimation_fraction: 0.1,
            wavelength_nm: 1550.0,
            fibre_attenuation_db_per_km: 0.2,
            classical_channels: Vec::new(),
        }
    }
}

const FREE: [FreeParam; 1] = [FreeParam {
    name: "modulation_variance_snu",
    lo: 0.05,
    hi: 100.0,
    scale: Scale::Log,
}];

/// Key per symbol from the Gaussian formulas with explicit channel parameters.
pub fn gg02_key(
    t: f64,
    xi: f64,
    va: f64,
    eta: f64,
    vel: f64,
    beta: f64,
    det: CoherentDetection,
) -> (f64, f64, f64) {
    let v = va + 1.0;
    let chi_line = 1.0 / t - 1.0 + xi;
    let (chi_det, i_ab) = match det {
        CoherentDetection::Homodyne => {
            let chi_hom = (1.0 - eta) / eta + vel / eta;
            let chi_tot = chi_line + chi_hom / t;
            (chi_hom, 0.5 * ((v + chi_tot) / (1.0 + chi_tot)).log2())
        }
        CoherentDetection::Heterodyne => {
            let chi_het = (1.0 + (1.0 - eta) + 2.0 * vel) / eta;
            let chi_tot = chi_line + chi_het / t;
            (chi_het, ((v + chi_tot) / (1.0 + chi_tot)).log2())
        }
    };
    let chi_tot = chi_line + chi_det / t;
    let a = v * v * (1.0 - 2.0 * t) + 2.0 * t + t * t * (v + chi_line).powi(2);
    let b = t * t * (v * chi_line + 1.0).powi(2);
    let disc = (a * a - 4.0 * b).max(0.0).sqrt();
    let l1 = (0.5 * (a + disc)).sqrt();
    let l2 = (0.5 * (a - disc)).max(0.0).sqrt();
    let (c, d) = match det {
        CoherentDetection::Homodyne => (
            (v * b.sqrt() + t * (v + chi_line) + a * chi_det) / (t * (v + chi_tot)),
            b.sqrt() * (v + b.sqrt() * chi_det) / (t * (v + chi_tot)),
        ),
        CoherentDetection::Heterodyne => (
            (a * chi_det * chi_det
                + b
                + 1.0
                + 2.0 * chi_det * (v * b.sqrt() + t * (v + chi_line))
                + 2.0 * t * (v * v - 1.0))
                / (t * (v + chi_tot)).powi(2),
            ((v + b.sqrt() * chi_det) / (t * (v + chi_tot))).powi(2),
        ),
    };
    let disc2 = (c * c - 4.0 * d).max(0.0).sqrt();
    let l3 = (0.5 * (c + disc2)).sqrt();
    let l4 = (0.5 * (c - disc2)).max(0.0).sqrt();
    let gg = |l: f64| g_thermal((l - 1.0) / 2.0);
    let chi_be = gg(l1) + gg(l2) - gg(l3) - gg(l4);
    (beta * i_ab - chi_be, i_ab, chi_be)
}

impl CvGg02 {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ParamError> {
        rules::clock_hz("hardware.symbol_rate_hz", self.symbol_rate_hz)?;
        check(
            "hardware.modulation_variance_snu",
            self.modulation_variance_snu,
            1e-6,
            1e4,
        )?;
        check(
            "hardware.detector_efficiency",
            self.detector_efficiency,
            1e-6,
            1.0,
        )?;
        check(
            "hardware.electronic_noise_snu",
            self.electronic_noise_snu,
            0.0,
            100.0,
        )?;
        rules::probability(
            "hardware.reconciliation_efficiency",
            self.reconciliation_efficiency,
        )?;
        check(
            "hardware.excess_noise_snu",
            self.excess_noise_snu,
            0.0,
            10.0,
        )?;
        check(
            "hardware.estimation_fraction",
            self.estimation_fraction,
            1e-6,
            0.999,
        )?;
        check("hardware.wavelength_nm", self.wavelength_nm, 1200.0, 1700.0)?;
        rules::fibre_attenuation(self.fibre_attenuation_db_per_km)?;
        for (i, c) in self.classical_channels.iter().enumerate() {
            c.validate(&format!("hardware.classical_channels[{i}]"))?;
        }
        Ok(())
    }

    /// Raman excess noise at the channel input for a channel of `loss_db`, SNU.
    pub fn raman_excess_noise(&self, loss_db: f64) -> f64 {
        if self.classical_channels.is_empty() {
            return 0.0;
        }
        let length = loss_db / self.fibre_attenuation_db_per_km;
        let fibre = Fibre {
            length_km: length,
            attenuation_db_per_km: self.fibre_attenuation_db_per_km,
            reference_wavelength_nm: self.wavelength_nm,
            ..Fibre::default()
        };
        let n = noise_photons_per_mode(&self.classical_channels, self.wavelength_nm, &fibre);
        2.0 * n / 10f64.powf(-loss_db / 10.0)
    }
}

impl KeyRateModel for CvGg02 {
    fn free_params(&self) -> &'static [FreeParam] {
        &FREE
    }

    fn initial(&self) -> Vec<f64> {
        vec![self.modulation_variance_snu]
    }

    fn evaluate(&self, loss_db: f64, x: &[f64], sec: &Security) -> Evaluation {
        let va = x[0];
        let t = 10f64.powf(-loss_db / 10.0);
        let xi = self.excess_noise_snu + self.raman_excess_noise(loss_db);
        let (eta, vel, beta, det) = (
            self.detector_efficiency,
            self.electronic_noise_snu,
            self.reconciliation_efficiency,
            self.detection,
        );
        let raw = match sec {
            Security::Asymptotic => gg02_key(t, xi, va, eta, vel, beta, det).0,
            Security::Finite(f) => {
                // Leverrier et al. 2010 §IV: m = r N symbols estimate t = √(ηT) and σ² = 1 + ηTξ + v_el;
                // worst cases at z = z(ε_PE/2); key from n = N − m symbols.
                let big_n = f.block_size;
                let m = self.estimation_fraction * big_n;
                let n = big_n - m;
                let eps = f.eps_sec / 4.0;
                let z = normal_quantile_upper(eps / 2.0);
                let tt = (eta * t).sqrt();
                let sigma2 = 1.0 + eta * t * xi + vel;
                let t_min = (tt - z * (sigma2 / (m * va)).sqrt()).max(0.0);
                let s_max = sigma2 + z * std::f64::consts::SQRT_2 * sigma2 / m.sqrt();
                let t_worst = t_min * t_min / eta;
                if t_worst <= 0.0 {
                    return Evaluation {
                        raw_key_per_signal: -1.0,
                        ..Default::default()
                    };
                }
                let xi_worst = (s_max - 1.0 - vel) / (eta * t_worst);
                let (_, i_ab, _) = gg02_key(t, xi, va, eta, vel, beta, det);
                let (_, _, chi_worst) = gg02_key(t_worst, xi_worst, va, eta, vel, beta, det);
                // Δ(n) = (2 dim H_X + 3) √(log₂(2/ε̄)/n) + (2/n) log₂(1/ε_PA), dim H_X = 2.
                let delta = 7.0 * ((2.0 / eps).log2() / n).sqrt() + 2.0 / n * (1.0 / eps).log2();
                n / big_n * (beta * i_ab - chi_worst - delta)
            }
        };
        Evaluation {
            raw_key_per_signal: raw,
            qber_key: 0.0,
            qber_test: xi,
        }
    }

    fn signals_per_second(&self) -> f64 {
        self.symbol_rate_hz
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounds::plob;

    /// REFERENCE.md §2 structural check: ideal reverse-reconciled homodyne at large
    /// modulation sits at exactly ½ PLOB.
    #[test]
    fn ideal_homodyne_rr_is_half_plob() {
        for db in [1.0, 3.0, 10.0, 20.0] {
            let t = 10f64.powf(-db / 10.0);
            let (k, _, _) = gg02_key(t, 0.0, 1e7, 1.0, 0.0, 1.0, CoherentDetection::Homodyne);
            let ratio = k / (0.5 * plob(t));
            assert!((ratio - 1.0).abs() < 1e-3, "{db} dB: K/(½PLOB) = {ratio}");
        }
    }

    /// Hajomer et al. 2024 (Sci. Adv. 10, eadi9474): at 100 km, 15.4 dB, with their
    /// receiver, V_mod 8.41, β 0.925 and ξ = 2.12e-4 SNU at Bob, the asymptotic key is
    /// positive and a few 1e-3 bit/symbol or below; their finite-size figure is 2.54e-4.
    #[test]
    fn hajomer_2024_operating_point_is_positive() {
        let m = CvGg02 {
            detection: CoherentDetection::Heterodyne,
            ..CvGg02::default()
        };
        let t = 10f64.powf(-1.54);
        let xi = 2.12e-4 / t;
        let (k, _, _) = gg02_key(
            t,
            xi,
            8.41,
            0.68,
            0.06272,
            0.925,
            CoherentDetection::Heterodyne,
        );
        assert!(k > 2.54e-4 && k < 5e-3, "{k}");
        let _ = m;
    }

    #[test]
    fn key_vanishes_with_large_excess_noise() {
        let (k, _, _) = gg02_key(0.1, 0.2, 5.0, 0.7, 0.05, 0.95, CoherentDetection::Homodyne);
        assert!(k < 0.0, "{k}");
    }
}
