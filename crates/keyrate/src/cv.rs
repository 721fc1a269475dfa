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

/// Leverrier et al. PRA 81, 062343 (2010), Eq. (23) with `dim H_X = 2`: the finite-size
/// correction `Δ(n) = 7 √(log₂(2/ε̄)/n) + (2/n) log₂(1/ε_PA)`, with `ε̄ = ε_PA = ε`.
pub fn finite_delta(n: f64, eps: f64) -> f64 {
    7.0 * ((2.0 / eps).log2() / n).sqrt() + 2.0 / n * (1.0 / eps).log2()
}

/// Parameter-estimation sums over a block's disclosed quadrature pairs (Alice's `a`,
/// Bob's `b`, shot-noise units).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CvEstimate {
    /// Pairs disclosed.
    pub pairs: f64,
    /// `Σ a²`.
    pub sum_aa: f64,
    /// `Σ a b`.
    pub sum_ab: f64,
    /// `Σ b²`.
    pub sum_bb: f64,
}

impl CvEstimate {
    /// Maximum-likelihood gain `ĝ = Σab/Σa²` and noise variance
    /// `N̂ = (Σb² − ĝ Σab)/m` (Leverrier et al. 2010, Eqs. (17)–(18)).
    pub fn gain_noise(&self) -> (f64, f64) {
        let g = self.sum_ab / self.sum_aa;
        (g, (self.sum_bb - g * self.sum_ab) / self.pairs)
    }

    /// Adds one disclosed pair (Alice's `a`, Bob's `b`).
    pub fn push(&mut self, a: f64, b: f64) {
        self.pairs += 1.0;
        self.sum_aa += a * a;
        self.sum_ab += a * b;
        self.sum_bb += b * b;
    }

    /// Adds another set of sums.
    pub fn add(&mut self, o: &CvEstimate) {
        self.pairs += o.pairs;
        self.sum_aa += o.sum_aa;
        self.sum_ab += o.sum_ab;
        self.sum_bb += o.sum_bb;
    }
}

/// What a block's observed statistics allow ([`CvGg02::block_bound`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CvBlockBound {
    /// Estimated transmittance and excess noise (at the channel input, SNU).
    pub transmittance: f64,
    /// Estimated excess noise.
    pub excess_noise_snu: f64,
    /// Worst-case transmittance and excess noise the bound uses.
    pub worst_transmittance: f64,
    /// Worst-case excess noise.
    pub worst_excess_noise_snu: f64,
    /// Holevo bound per symbol at the worst case.
    pub chi_be: f64,
    /// Finite-size correction per symbol.
    pub delta: f64,
    /// Secret bits (0 when none).
    pub secret_bits: u64,
}

impl CvGg02 {
    /// Quadrature pairs per symbol: 1 (homodyne) or 2 (heterodyne).
    pub fn pairs_per_symbol(&self) -> f64 {
        match self.detection {
            CoherentDetection::Homodyne => 1.0,
            CoherentDetection::Heterodyne => 2.0,
        }
    }

    /// The gain `g` and noise `N` of a quadrature pair (`b = g a + n`) for channel
    /// transmittance `t` and excess noise `xi` (Laudenbach et al. 2018, Eqs. (41)/(43)).
    pub fn expected_gain_noise(&self, t: f64, xi: f64) -> (f64, f64) {
        let (eta, vel) = (self.detector_efficiency, self.electronic_noise_snu);
        let s = self.pairs_per_symbol();
        ((eta * t / s).sqrt(), 1.0 + eta * t * xi / s + vel)
    }

    /// Transmittance and excess noise from a pair's gain and noise (the inverse of
    /// [`CvGg02::expected_gain_noise`]; trusted η and v_el).
    pub fn channel_from(&self, g: f64, noise: f64) -> (f64, f64) {
        let (eta, vel) = (self.detector_efficiency, self.electronic_noise_snu);
        let s = self.pairs_per_symbol();
        let t = s * g * g / eta;
        (t, s * (noise - 1.0 - vel) / (eta * t))
    }

    /// Leverrier et al. 2010 §IV: the worst-case transmittance and excess noise,
    /// except with probability `eps`, given gain `g` and noise `noise` estimated from
    /// `pairs` pairs of modulation variance `va`: `g − z √(N/(m V_A))` and
    /// `N + z √2 N/√m`, `z` the upper `eps/2` normal quantile. `None` when the gain's
    /// lower bound is not positive.
    pub fn worst_case(
        &self,
        g: f64,
        noise: f64,
        pairs: f64,
        va: f64,
        eps: f64,
    ) -> Option<(f64, f64)> {
        let z = normal_quantile_upper(eps / 2.0);
        let g_min = g - z * (noise / (pairs * va)).sqrt();
        let n_max = noise + z * std::f64::consts::SQRT_2 * noise / pairs.sqrt();
        (g_min > 0.0).then(|| self.channel_from(g_min, n_max))
    }

    /// The secret bits of a block from what it observed: `est` over the disclosed pairs,
    /// `key_symbols` symbols reconciled into `net_bits` bits beyond every bit disclosed in
    /// reconciliation and verification, modulation variance `va`. The key is
    /// `net_bits − n (χ_BE(worst) + Δ(n))` (Leverrier et al. 2010, Eq. (22), with the
    /// reconciliation term `β I_AB` replaced by what reconciliation actually kept).
    pub fn block_bound(
        &self,
        est: &CvEstimate,
        va: f64,
        key_symbols: f64,
        net_bits: f64,
        eps_sec: f64,
    ) -> CvBlockBound {
        let eps = eps_sec / 4.0;
        let (g, noise) = est.gain_noise();
        let (t, xi) = self.channel_from(g, noise);
        let (eta, vel, beta, det) = (
            self.detector_efficiency,
            self.electronic_noise_snu,
            self.reconciliation_efficiency,
            self.detection,
        );
        let delta = finite_delta(key_symbols, eps);
        let mut out = CvBlockBound {
            transmittance: t,
            excess_noise_snu: xi,
            worst_transmittance: 0.0,
            worst_excess_noise_snu: f64::INFINITY,
            chi_be: f64::INFINITY,
            delta,
            secret_bits: 0,
        };
        if let Some((tw, xw)) = self.worst_case(g, noise, est.pairs, va, eps) {
            let (_, _, chi) = gg02_key(tw, xw, va, eta, vel, beta, det);
            let bits = net_bits - key_symbols * (chi + delta);
            out.worst_transmittance = tw;
            out.worst_excess_noise_snu = xw;
            out.chi_be = chi;
            out.secret_bits = if bits.is_finite() && bits > 0.0 {
                bits.floor() as u64
            } else {
                0
            };
        }
        out
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
                // Leverrier et al. 2010 §IV: m = r N symbols estimate the gain and noise,
                // worst cases at z = z(ε_PE/2); key from n = N − m symbols.
                let big_n = f.block_size;
                let m = self.estimation_fraction * big_n;
                let n = big_n - m;
                let eps = f.eps_sec / 4.0;
                let (g, noise) = self.expected_gain_noise(t, xi);
                let pairs = m * self.pairs_per_symbol();
                let Some((t_worst, xi_worst)) = self.worst_case(g, noise, pairs, va, eps) else {
                    return Evaluation {
                        raw_key_per_signal: -1.0,
                        ..Default::default()
                    };
                };
                let (_, i_ab, _) = gg02_key(t, xi, va, eta, vel, beta, det);
                let (_, _, chi_worst) = gg02_key(t_worst, xi_worst, va, eta, vel, beta, det);
                n / big_n * (beta * i_ab - chi_worst - finite_delta(n, eps))
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
