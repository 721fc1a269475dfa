//! Validation rules for hardware fields that several protocol families share, so that each
//! field's allowed range is stated once. Errors name the field as it appears in scenario
//! files (`hardware.<name>`).

use qkdnet_optics::{check, ParamError};

/// Pulse or symbol rate, Hz: 1 Hz to 1 THz.
pub fn clock_hz(field: &str, v: f64) -> Result<f64, ParamError> {
    check(field, v, 1.0, 1e12)
}

/// A detection efficiency in [0, 1].
pub fn detector_efficiency(v: f64) -> Result<f64, ParamError> {
    check("hardware.detector_efficiency", v, 0.0, 1.0)
}

/// Dark-count probability per detector per slot, in [0, ½].
pub fn dark_count_probability(v: f64) -> Result<f64, ParamError> {
    check("hardware.dark_count_probability", v, 0.0, 0.5)
}

/// Misalignment error probability, in [0, ½].
pub fn misalignment(v: f64) -> Result<f64, ParamError> {
    check("hardware.misalignment", v, 0.0, 0.5)
}

/// Error-correction efficiency f, in [1, 5] (1 is the Slepian–Wolf limit).
pub fn ec_efficiency(v: f64) -> Result<f64, ParamError> {
    check("hardware.ec_efficiency", v, 1.0, 5.0)
}

/// Fraction of a two-arm link's loss (dB) on Alice's arm, in [0, 1].
pub fn alice_loss_fraction(v: f64) -> Result<f64, ParamError> {
    check("hardware.alice_loss_fraction", v, 0.0, 1.0)
}

/// A probability field in [0, 1].
pub fn probability(field: &str, v: f64) -> Result<f64, ParamError> {
    check(field, v, 0.0, 1.0)
}

/// Fibre attenuation used to convert loss into length, dB/km.
pub fn fibre_attenuation(v: f64) -> Result<f64, ParamError> {
    check("hardware.fibre_attenuation_db_per_km", v, 1e-3, 10.0)
}
