//! Physical constants (CODATA 2018 exact values where defined).

/// Planck constant, J·s (exact, SI 2019).
pub const PLANCK_J_S: f64 = 6.626_070_15e-34;
/// Speed of light in vacuum, m/s (exact).
pub const SPEED_OF_LIGHT_M_S: f64 = 299_792_458.0;
/// Boltzmann constant, J/K (exact, SI 2019).
pub const BOLTZMANN_J_K: f64 = 1.380_649e-23;
/// Group index of standard single-mode fibre near 1550 nm (SMF-28 datasheet: 1.4682).
pub const FIBRE_GROUP_INDEX: f64 = 1.4682;

/// Photon energy in joules at a vacuum wavelength in nanometres.
#[inline]
pub fn photon_energy_j(wavelength_nm: f64) -> f64 {
    PLANCK_J_S * SPEED_OF_LIGHT_M_S / (wavelength_nm * 1e-9)
}

/// Optical frequency in hertz at a vacuum wavelength in nanometres.
#[inline]
pub fn frequency_hz(wavelength_nm: f64) -> f64 {
    SPEED_OF_LIGHT_M_S / (wavelength_nm * 1e-9)
}

/// Converts dBm to watts.
#[inline]
pub fn dbm_to_watts(dbm: f64) -> f64 {
    1e-3 * 10f64.powf(dbm / 10.0)
}
