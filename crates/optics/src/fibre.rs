//! Optical fibre.

use crate::{check, consts, ParamError};
use serde::{Deserialize, Serialize};

/// Rayleigh-scattering coefficient of silica fibre, dB·µm⁴/km. Typical 0.7–0.9
/// (Agrawal, *Fiber-Optic Communication Systems*, 4th ed., §2.5.1); 0.8 gives
/// 0.139 dB/km at 1550 nm, the bulk of SMF-28's 0.17–0.20 dB/km there.
pub const RAYLEIGH_DB_UM4_PER_KM: f64 = 0.8;

/// A fibre span: length, attenuation at a reference wavelength, discrete losses, dispersion.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fibre {
    /// Length, km.
    pub length_km: f64,
    /// Attenuation at `reference_wavelength_nm`, dB/km (SMF-28 ultra: 0.17–0.20 at 1550 nm;
    /// deployed cable with splices, e.g. the Nice field links: 0.35).
    pub attenuation_db_per_km: f64,
    /// Wavelength at which `attenuation_db_per_km` holds, nm.
    pub reference_wavelength_nm: f64,
    /// Sum of connector losses, dB.
    pub connector_loss_db: f64,
    /// Number of splices.
    pub splices: u32,
    /// Loss per splice, dB (fusion splice: 0.02–0.1).
    pub splice_loss_db: f64,
    /// Chromatic dispersion at the reference wavelength, ps/(nm·km) (SMF-28: 17 at 1550 nm).
    pub dispersion_ps_per_nm_km: f64,
}

impl Default for Fibre {
    fn default() -> Self {
        Self {
            length_km: 0.0,
            attenuation_db_per_km: 0.2,
            reference_wavelength_nm: 1550.0,
            connector_loss_db: 0.0,
            splices: 0,
            splice_loss_db: 0.05,
            dispersion_ps_per_nm_km: 17.0,
        }
    }
}

impl Fibre {
    /// A span of `length_km` with `attenuation_db_per_km` and otherwise default values.
    pub fn new(length_km: f64, attenuation_db_per_km: f64) -> Result<Self, ParamError> {
        let f = Self {
            length_km,
            attenuation_db_per_km,
            ..Self::default()
        };
        f.validate()?;
        Ok(f)
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), ParamError> {
        check("fibre.length_km", self.length_km, 0.0, 1e5)?;
        check(
            "fibre.attenuation_db_per_km",
            self.attenuation_db_per_km,
            0.0,
            10.0,
        )?;
        check(
            "fibre.reference_wavelength_nm",
            self.reference_wavelength_nm,
            200.0,
            3000.0,
        )?;
        check(
            "fibre.connector_loss_db",
            self.connector_loss_db,
            0.0,
            100.0,
        )?;
        check("fibre.splice_loss_db", self.splice_loss_db, 0.0, 10.0)?;
        check(
            "fibre.dispersion_ps_per_nm_km",
            self.dispersion_ps_per_nm_km,
            -1e3,
            1e3,
        )?;
        Ok(())
    }

    /// Attenuation at `wavelength_nm`, dB/km: the reference value corrected by the change
    /// of Rayleigh scattering, `A_R (λ⁻⁴ − λ_ref⁻⁴)` with λ in µm. Valid across the
    /// O–L bands away from the water peak; infrared absorption above ~1600 nm is not modelled.
    pub fn attenuation_at(&self, wavelength_nm: f64) -> f64 {
        let l = wavelength_nm * 1e-3;
        let r = self.reference_wavelength_nm * 1e-3;
        (self.attenuation_db_per_km + RAYLEIGH_DB_UM4_PER_KM * (l.powi(-4) - r.powi(-4))).max(0.0)
    }

    /// Total loss at the reference wavelength, dB.
    pub fn loss_db(&self) -> f64 {
        self.loss_db_at(self.reference_wavelength_nm)
    }

    /// Total loss at `wavelength_nm`, dB.
    pub fn loss_db_at(&self, wavelength_nm: f64) -> f64 {
        self.attenuation_at(wavelength_nm) * self.length_km
            + self.connector_loss_db
            + self.splices as f64 * self.splice_loss_db
    }

    /// Power transmittance at the reference wavelength.
    pub fn transmittance(&self) -> f64 {
        10f64.powf(-self.loss_db() / 10.0)
    }

    /// One-way propagation delay, seconds (group index of SMF-28).
    pub fn delay_s(&self) -> f64 {
        self.length_km * 1e3 * consts::FIBRE_GROUP_INDEX / consts::SPEED_OF_LIGHT_M_S
    }

    /// Temporal spread of a pulse of spectral width `bandwidth_nm` after the span, ps.
    pub fn dispersion_spread_ps(&self, bandwidth_nm: f64) -> f64 {
        (self.dispersion_ps_per_nm_km * self.length_km * bandwidth_nm).abs()
    }
}

/// Chromatic dispersion of standard single-mode fibre (ITU-T G.652) at `wavelength_nm`,
/// ps/(nm·km): `D(λ) = (S₀/4)(λ − λ₀⁴/λ³)` with the zero-dispersion slope `S₀ = 0.092`
/// ps/(nm²·km) and wavelength `λ₀ = 1312 nm` (G.652's bounds: S₀ ≤ 0.092, 1300 ≤ λ₀ ≤
/// 1324 nm). About 17.3 at 1550 nm.
pub fn g652_dispersion_ps_per_nm_km(wavelength_nm: f64) -> f64 {
    const S0: f64 = 0.092;
    const L0: f64 = 1312.0;
    S0 / 4.0 * (wavelength_nm - L0.powi(4) / wavelength_nm.powi(3))
}

/// Spread (FWHM, ps) that chromatic dispersion adds to the arrival-time difference of an
/// energy–time entangled pair from a CW-pumped source, each photon filtered to
/// `bandwidth_nm` (FWHM) and carried over its own arm with accumulated dispersion
/// `d_a`, `d_b` (ps/nm, i.e. D·L, compensation subtracted). The pump fixes the sum of the
/// two frequencies, so a detuning delays one photon by `d_a Δλ` and the other by `−d_b
/// (−Δλ)`: the arms' dispersions add, `|d_a + d_b| Δλ` (Franson, PRA 45, 3126 (1992);
/// dispersion of the same sign does not cancel nonlocally). Gaussian filters give a
/// Gaussian spread, which adds to the detectors' jitter in quadrature.
pub fn entangled_dispersion_spread_ps(
    d_a_ps_per_nm: f64,
    d_b_ps_per_nm: f64,
    bandwidth_nm: f64,
) -> f64 {
    ((d_a_ps_per_nm + d_b_ps_per_nm) * bandwidth_nm).abs()
}

/// Transmittances `(η_A, η_B)` of the two arms of a link through a central station, when
/// a total loss of `loss_db` is split with `fraction_a` of it (in dB) on arm A.
#[inline]
pub fn split_transmittance(loss_db: f64, fraction_a: f64) -> (f64, f64) {
    let la = loss_db * fraction_a;
    (db_to_transmittance(la), db_to_transmittance(loss_db - la))
}

/// Transmittance of a loss in dB.
#[inline]
pub fn db_to_transmittance(db: f64) -> f64 {
    10f64.powf(-db / 10.0)
}

/// Loss in dB of a transmittance.
#[inline]
pub fn transmittance_to_db(t: f64) -> f64 {
    -10.0 * t.log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_adds_up() {
        let f = Fibre {
            length_km: 50.0,
            attenuation_db_per_km: 0.2,
            connector_loss_db: 1.0,
            splices: 10,
            splice_loss_db: 0.05,
            ..Fibre::default()
        };
        assert!((f.loss_db() - 11.5).abs() < 1e-12);
        assert!((f.transmittance() - 10f64.powf(-1.15)).abs() < 1e-15);
    }

    #[test]
    fn rayleigh_makes_shorter_wavelengths_lossier() {
        let f = Fibre::new(1.0, 0.2).unwrap();
        let a1310 = f.attenuation_at(1310.0);
        let a1550 = f.attenuation_at(1550.0);
        // SMF-28: ~0.32–0.35 dB/km at 1310 nm when 0.18–0.20 at 1550 nm.
        assert!(a1310 > 0.31 && a1310 < 0.36, "{a1310}");
        assert!((a1550 - 0.2).abs() < 1e-12);
    }

    #[test]
    fn delay_is_about_4_9_us_per_km() {
        let f = Fibre::new(1.0, 0.2).unwrap();
        assert!((f.delay_s() - 4.897e-6).abs() < 1e-8);
    }

    #[test]
    fn split_arms_multiply_to_the_total() {
        let (a, b) = split_transmittance(30.0, 0.6);
        assert!((a * b - 1e-3).abs() < 1e-15);
        assert!((a - db_to_transmittance(18.0)).abs() < 1e-15);
    }

    #[test]
    fn invalid_fields_are_named() {
        let e = Fibre::new(-1.0, 0.2).unwrap_err();
        assert_eq!(e.field, "fibre.length_km");
        assert!(e.reason.contains("-1"), "{}", e.reason);
        assert!(Fibre::new(1.0, f64::NAN).is_err());
    }
}
