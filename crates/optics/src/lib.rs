//! `qkdnet-optics`: physical models of the hardware a QKD link is made of.
//!
//! Every model is a small plain-data struct with documented units, validated on
//! construction, and pure functions from its parameters to physical quantities:
//! - [`fibre`]: attenuation with wavelength dependence, connector and splice losses,
//!   chromatic dispersion;
//! - [`detector`]: single-photon detectors (efficiency, dark counts, dead time,
//!   afterpulsing, jitter) with presets for SNSPDs and gated / free-running InGaAs;
//!   coherent (homodyne/heterodyne) receivers;
//! - [`source`]: weak coherent pulses and SPDC pair sources (CW and pulsed);
//! - [`interferometer`]: visibility and phase error → error probability;
//! - [`phase`]: laser linewidth, fibre phase drift and its stabilisation → residual phase
//!   noise, for the twin-field interference error;
//! - [`raman`]: spontaneous Raman noise from co-propagating classical channels;
//! - [`consts`]: physical constants; [`special`]: erf/erfc.
//!
//! What it deliberately does not do: turn physics into key rates (see `qkdnet-keyrate`)
//! or sample random events (the emulator does that, from these same models).

pub mod consts;
pub mod detector;
pub mod fibre;
pub mod interferometer;
pub mod phase;
pub mod raman;
pub mod source;
pub mod special;

/// An invalid model parameter: which one, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ParamError {
    /// Dotted name of the parameter, e.g. `detector.efficiency`.
    pub field: String,
    /// What is wrong, including the offending value.
    pub reason: String,
}

/// Validates `value` in `[min, max]` (finite), naming `field` in the error.
pub fn check(field: &str, value: f64, min: f64, max: f64) -> Result<f64, ParamError> {
    qkdnet_core::units::check_range("value", value, min, max).map_err(|e| ParamError {
        field: field.to_string(),
        reason: e.to_string().replacen("value ", "", 1),
    })
}
