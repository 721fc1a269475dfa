//! Spontaneous Raman scattering from co-propagating classical channels.
//!
//! Noise power reaching the quantum receiver within a filter of width Δλ, from a classical
//! channel launched with power P_in into a fibre of length L and attenuation α (1/km),
//! after Eraerds et al., NJP 12, 063027 (2010), Eqs. (1)–(2), and Patel et al., PRX 2,
//! 041010 (2012):
//!
//! - co-propagating (forward):      P_f = P_in e^{−αL} ρ L Δλ
//! - counter-propagating (backward): P_b = P_in ρ Δλ (1 − e^{−2αL}) / (2α)
//!
//! The effective Raman coefficient ρ(λ_p → λ_s) (per km per nm, both polarisations) is
//! obtained from the stimulated Raman gain spectrum of silica by the fluctuation relation
//! between spontaneous and stimulated scattering (one noise photon per mode, thermally
//! enhanced; cf. Kumar, Qin, Alléaume, NJP 17, 043027 (2015), §2):
//!
//! ρ = (g_R(Δν)/A_eff) · hν_s · (n_th(Δν) + 1)  per Hz  (Stokes side, λ_s > λ_p),
//! with n_th in place of n_th + 1 on the anti-Stokes side, converted to per nm.
//!
//! g_R(Δν) uses a coarse digitisation of the silica Raman gain spectrum (Stolen & Ippen,
//! APL 22, 276 (1973); Agrawal, *Nonlinear Fiber Optics*, Fig. 8.1), peaking at 13.2 THz,
//! with peak gain 1e-13 m/W at a 1 µm pump scaling as 1/λ_p (Agrawal §8.1.1), and
//! A_eff = 80 µm² (SMF-28). At 1 THz Stokes detuning this gives ρ ≈ 5e-9 /(km·nm), the
//! order of magnitude measured near 1550 nm (REFERENCE §2). The shape is accurate to
//! ~20 %; a measured ρ for a specific fibre can be supplied instead.

use crate::consts::{photon_energy_j, BOLTZMANN_J_K, PLANCK_J_S, SPEED_OF_LIGHT_M_S};
use crate::fibre::Fibre;
use crate::{check, ParamError};
use serde::{Deserialize, Serialize};

/// Normalised silica Raman gain g_R(Δν)/g_peak against detuning in THz.
const GAIN_SHAPE: [(f64, f64); 16] = [
    (0.0, 0.0),
    (1.0, 0.06),
    (2.0, 0.12),
    (4.0, 0.26),
    (6.0, 0.40),
    (8.0, 0.50),
    (10.0, 0.62),
    (12.0, 0.85),
    (13.2, 1.0),
    (14.5, 0.90),
    (15.0, 0.60),
    (16.0, 0.30),
    (18.0, 0.25),
    (20.0, 0.10),
    (25.0, 0.05),
    (30.0, 0.0),
];

/// Peak Raman gain of silica at a 1 µm pump, m/W (Agrawal, *Nonlinear Fiber Optics*, §8.1.1).
pub const PEAK_GAIN_AT_1UM_M_PER_W: f64 = 1e-13;
/// Effective mode area of standard single-mode fibre, m² (SMF-28: ~80 µm²).
pub const SMF_EFFECTIVE_AREA_M2: f64 = 80e-12;

fn gain_shape(detuning_thz: f64) -> f64 {
    let d = detuning_thz.abs();
    for w in GAIN_SHAPE.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if d <= x1 {
            return y0 + (y1 - y0) * (d - x0) / (x1 - x0);
        }
    }
    0.0
}

/// Effective spontaneous Raman coefficient ρ from a pump at `pump_nm` into `signal_nm`,
/// per km per nm of receiver bandwidth, both polarisations, at fibre temperature `temperature_k`.
pub fn raman_coefficient_per_km_nm(pump_nm: f64, signal_nm: f64, temperature_k: f64) -> f64 {
    let nu_p = SPEED_OF_LIGHT_M_S / (pump_nm * 1e-9);
    let nu_s = SPEED_OF_LIGHT_M_S / (signal_nm * 1e-9);
    let detuning_hz = nu_p - nu_s; // > 0 on the Stokes side
    if detuning_hz == 0.0 {
        return 0.0;
    }
    let g_peak = PEAK_GAIN_AT_1UM_M_PER_W * (1000.0 / pump_nm);
    let g = g_peak * gain_shape(detuning_hz * 1e-12);
    let n_th = 1.0 / ((PLANCK_J_S * detuning_hz.abs() / (BOLTZMANN_J_K * temperature_k)).exp_m1());
    let occupation = if detuning_hz > 0.0 { n_th + 1.0 } else { n_th };
    // per metre per Hz, then per km per nm: dν/dλ = c/λ².
    let per_m_per_hz = g / SMF_EFFECTIVE_AREA_M2 * photon_energy_j(signal_nm) * occupation;
    let hz_per_nm = SPEED_OF_LIGHT_M_S / (signal_nm * 1e-9).powi(2) * 1e-9;
    per_m_per_hz * 1e3 * hz_per_nm
}

/// Direction of a classical channel relative to the quantum signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Same direction as the quantum signal (forward scattering reaches the receiver).
    CoPropagating,
    /// Opposite direction (backward scattering reaches the receiver).
    CounterPropagating,
}

/// A classical channel sharing the fibre.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassicalChannel {
    /// Wavelength, nm.
    pub wavelength_nm: f64,
    /// Launch power, dBm.
    pub launch_power_dbm: f64,
    /// Direction relative to the quantum channel.
    pub direction: Direction,
}

impl ClassicalChannel {
    /// Checks every field.
    pub fn validate(&self, field: &str) -> Result<(), ParamError> {
        check(
            &format!("{field}.wavelength_nm"),
            self.wavelength_nm,
            1200.0,
            1700.0,
        )?;
        check(
            &format!("{field}.launch_power_dbm"),
            self.launch_power_dbm,
            -60.0,
            30.0,
        )?;
        Ok(())
    }
}

/// Raman noise power (W) from `channel` reaching the receiver of a quantum channel at
/// `quantum_nm` through `fibre`, within a filter of `filter_nm` (both polarisations).
pub fn noise_power_w(
    channel: &ClassicalChannel,
    quantum_nm: f64,
    fibre: &Fibre,
    filter_nm: f64,
) -> f64 {
    let rho = raman_coefficient_per_km_nm(channel.wavelength_nm, quantum_nm, 300.0);
    let p_in = crate::consts::dbm_to_watts(channel.launch_power_dbm);
    // Attenuation in 1/km (power), assumed equal at pump and signal wavelengths.
    let alpha = fibre.attenuation_at(quantum_nm) * std::f64::consts::LN_10 / 10.0;
    let l = fibre.length_km;
    match channel.direction {
        Direction::CoPropagating => p_in * (-alpha * l).exp() * rho * l * filter_nm,
        Direction::CounterPropagating => {
            if alpha == 0.0 {
                p_in * rho * filter_nm * l
            } else {
                p_in * rho * filter_nm * (-(-2.0 * alpha * l).exp_m1()) / (2.0 * alpha)
            }
        }
    }
}

/// Raman noise photon rate (photons/s) at the receiver within `filter_nm`, summed over channels.
pub fn noise_photon_rate_hz(
    channels: &[ClassicalChannel],
    quantum_nm: f64,
    fibre: &Fibre,
    filter_nm: f64,
) -> f64 {
    channels
        .iter()
        .map(|c| noise_power_w(c, quantum_nm, fibre, filter_nm))
        .sum::<f64>()
        / photon_energy_j(quantum_nm)
}

/// Raman noise photons per temporal mode in one polarisation, as seen by a coherent
/// receiver whose local oscillator selects a single mode: the spectral density
/// divided by hν, halved for the one polarisation the LO selects. Multiply by 2 for the
/// excess noise in shot-noise units.
pub fn noise_photons_per_mode(
    channels: &[ClassicalChannel],
    quantum_nm: f64,
    fibre: &Fibre,
) -> f64 {
    // Power per nm → per Hz, then photons per mode = S/(hν).
    let hz_per_nm = SPEED_OF_LIGHT_M_S / (quantum_nm * 1e-9).powi(2) * 1e-9;
    let per_nm: f64 = channels
        .iter()
        .map(|c| noise_power_w(c, quantum_nm, fibre, 1.0))
        .sum();
    0.5 * per_nm / hz_per_nm / photon_energy_j(quantum_nm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coefficient_has_the_measured_order_near_1550() {
        // 1550 → 1558 nm (~1 THz Stokes): order 1e-9 … 1e-8 per km per nm.
        let rho = raman_coefficient_per_km_nm(1550.0, 1558.0, 300.0);
        assert!(rho > 1e-9 && rho < 1e-8, "{rho}");
        // anti-Stokes is weaker than Stokes at the same detuning.
        let anti = raman_coefficient_per_km_nm(1558.0, 1550.0, 300.0);
        assert!(anti < rho && anti > 0.5 * rho, "{anti} vs {rho}");
        // Far detuning (1550 → 1310 nm, 35 THz) is beyond the gain band.
        assert_eq!(raman_coefficient_per_km_nm(1550.0, 1310.0, 300.0), 0.0);
    }

    #[test]
    fn forward_noise_peaks_at_one_over_alpha() {
        let ch = ClassicalChannel {
            wavelength_nm: 1550.0,
            launch_power_dbm: 0.0,
            direction: Direction::CoPropagating,
        };
        let at = |l: f64| noise_power_w(&ch, 1560.0, &Fibre::new(l, 0.2).unwrap(), 1.0);
        // L e^{−αL} peaks at L = 1/α = 21.7 km for 0.2 dB/km.
        assert!(at(21.7) > at(10.0) && at(21.7) > at(40.0));
        // Backward noise saturates with length.
        let b = ClassicalChannel {
            direction: Direction::CounterPropagating,
            ..ch
        };
        let bat = |l: f64| noise_power_w(&b, 1560.0, &Fibre::new(l, 0.2).unwrap(), 1.0);
        assert!(bat(100.0) > bat(50.0) && (bat(200.0) - bat(100.0)) / bat(100.0) < 0.02);
    }
}
