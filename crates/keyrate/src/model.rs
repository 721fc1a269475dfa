//! What every protocol family provides to the sweep and the optimiser.

use crate::finite::Security;

/// How a free parameter is searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Searched in log space (intensities, brightness).
    Log,
    /// Searched linearly (probabilities, fractions).
    Linear,
}

/// A parameter the optimiser may choose, with its bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FreeParam {
    /// Name as printed and as accepted by `--free`.
    pub name: &'static str,
    /// Lower bound.
    pub lo: f64,
    /// Upper bound.
    pub hi: f64,
    /// Search scale.
    pub scale: Scale,
}

/// The predicted statistics and key of one operating point.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Evaluation {
    /// Secret bits per signal (pulse, symbol, slot, attempt); may be negative before
    /// clamping, which gives the optimiser a slope to climb out of the no-key region.
    pub raw_key_per_signal: f64,
    /// Error rate in the key basis (or 0 where not applicable).
    pub qber_key: f64,
    /// Error rate in the test basis / phase-error estimate source (or 0).
    pub qber_test: f64,
}

impl Evaluation {
    /// Secret bits per signal, clamped at zero.
    pub fn key_per_signal(&self) -> f64 {
        if self.raw_key_per_signal.is_finite() {
            self.raw_key_per_signal.max(0.0)
        } else {
            0.0
        }
    }
}

/// A protocol family with its hardware fixed: forward model plus key-length bound.
pub trait KeyRateModel {
    /// Parameters the optimiser may choose.
    fn free_params(&self) -> &'static [FreeParam];
    /// The values used when nothing is optimised (from the configuration).
    fn initial(&self) -> Vec<f64>;
    /// Evaluates the operating point `x` (one value per free parameter) at channel loss
    /// `loss_db` (the protocol's own definition of the channel, see each family).
    fn evaluate(&self, loss_db: f64, x: &[f64], sec: &Security) -> Evaluation;
    /// Signals per second (clock rate, symbol rate, slots per second).
    fn signals_per_second(&self) -> f64;
}
