//! What a QKD device gives the link runtime (DESIGN.md, "Interfaces that matter"): its
//! detection records, window by window, and its actuators.
//!
//! The trait lives here rather than in `link` so that the emulator, which sits below
//! `link` and must not depend on it, can implement it (ARCHITECTURE.md). Implemented by
//! the emulator's node handles, by `link`'s file replayer (qkdnet `.qtt` and PicoQuant PTU),
//! later by vendor drivers.

use crate::timetag::TimeTag;

/// A setting the link runtime can change on a node's hardware.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Actuation {
    /// Pump power of an entangled-photon source at this node, mW.
    PumpPowerMw(f64),
    /// Phase shifter of this node's analyser or interferometer, rad.
    PhaseRad(f64),
    /// Polarisation controller setting, rad.
    PolarisationRad(f64),
    /// Extra delay line, ps (≥ 0).
    DelayPs(f64),
    /// Detector bias on or off.
    DetectorsEnabled(bool),
}

impl Actuation {
    /// The actuator's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Actuation::PumpPowerMw(_) => "pump power",
            Actuation::PhaseRad(_) => "phase shifter",
            Actuation::PolarisationRad(_) => "polarisation controller",
            Actuation::DelayPs(_) => "delay line",
            Actuation::DetectorsEnabled(_) => "detector bias",
        }
    }
}

/// Why a frontend could not deliver or act.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FrontendError {
    /// The record source failed (a file error names the file and the record).
    #[error("{0}")]
    Records(String),
    /// This frontend has no such actuator (a recording cannot be steered).
    #[error("{frontend} has no {actuator}")]
    Unsupported {
        /// The frontend.
        frontend: String,
        /// The actuator asked for.
        actuator: &'static str,
    },
    /// The value is out of the actuator's range.
    #[error("{actuator}: {value} is out of range ({reason})")]
    OutOfRange {
        /// The actuator.
        actuator: &'static str,
        /// The value asked for.
        value: f64,
        /// The range.
        reason: &'static str,
    },
}

/// One node's device.
pub trait Frontend {
    /// The node's detections with times before `until_ps` on its own clock, in time order,
    /// continuing from the previous call; `Ok(None)` once the source is exhausted.
    fn records_until(&mut self, until_ps: i64) -> Result<Option<Vec<TimeTag>>, FrontendError>;

    /// Changes an actuator; the change shows in records from the next window the device
    /// produces.
    fn actuate(&mut self, actuation: Actuation) -> Result<(), FrontendError>;
}
