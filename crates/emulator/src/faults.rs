//! Faults injected on a schedule: what went wrong in the seed experiments' field runs
//! (Lecaron et al. 2025: 7 detector cooling cycles and 2 other faults in 325 h).

use qkdnet_optics::ParamError;
use serde::{Deserialize, Serialize};

/// What happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// The side's detectors warm up and cool down again: no counts at all (not even dark
    /// counts) for the duration.
    DetectorCooling,
    /// The side's fibre is cut and repaired after the duration: no light arrives.
    FibreCut,
    /// Extra loss, `loss_db`, on the side's fibre for the duration (a bend, a bad
    /// connector, a switch).
    LossStep,
    /// The side's tagger clock jumps forward by `offset_ps` at `start_s` (and stays
    /// jumped; `duration_s` must be 0). Forward only: a tagger never writes time
    /// stamps that go backwards.
    ClockGlitch,
    /// The pump power drops to `factor` times its setting for the duration.
    PumpDrop,
}

/// Which side a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    /// Alice only.
    Alice,
    /// Bob only.
    Bob,
    /// Both sides.
    #[default]
    Both,
}

impl Side {
    /// Whether the fault hits side `s` (0 = Alice, 1 = Bob).
    pub fn hits(self, s: usize) -> bool {
        matches!(
            (self, s),
            (Side::Both, _) | (Side::Alice, 0) | (Side::Bob, 1)
        )
    }
}

/// One scheduled fault (`[[fault]]` in a scenario file).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// What happens.
    pub kind: FaultKind,
    /// Where.
    #[serde(default)]
    pub side: Side,
    /// When it starts, seconds from the start of the run.
    pub start_s: f64,
    /// How long it lasts, seconds.
    #[serde(default)]
    pub duration_s: f64,
    /// Extra loss of a `loss-step`, dB.
    #[serde(default)]
    pub loss_db: f64,
    /// Size of a `clock-glitch`, ps.
    #[serde(default)]
    pub offset_ps: f64,
    /// Remaining pump power fraction of a `pump-drop`.
    #[serde(default)]
    pub factor: f64,
}

impl Fault {
    /// A fault of `kind` on `side` from `start_s` for `duration_s`, with the kind-specific
    /// fields zero (set `loss_db`, `offset_ps` or `factor` as the kind needs).
    pub fn new(kind: FaultKind, side: Side, start_s: f64, duration_s: f64) -> Self {
        Self {
            kind,
            side,
            start_s,
            duration_s,
            loss_db: 0.0,
            offset_ps: 0.0,
            factor: 0.0,
        }
    }

    /// Whether the fault is in force at time `t_s` (a clock glitch stays in force).
    pub fn active_at(&self, t_s: f64) -> bool {
        t_s >= self.start_s
            && (self.kind == FaultKind::ClockGlitch || t_s < self.start_s + self.duration_s)
    }

    /// When the fault ends, seconds from the start of the run.
    pub fn end_s(&self) -> f64 {
        self.start_s + self.duration_s
    }
}

/// Checks every fault's fields and that faults of one kind on one side do not overlap;
/// errors name `fault[i].field` and the value.
pub fn validate(faults: &[Fault]) -> Result<(), ParamError> {
    let field = |i: usize, f: &str| format!("fault[{i}].{f}");
    let bad = |i: usize, f: &str, reason: String| ParamError {
        field: field(i, f),
        reason,
    };
    for (i, f) in faults.iter().enumerate() {
        qkdnet_optics::check(&field(i, "start_s"), f.start_s, 0.0, 1e10)?;
        qkdnet_optics::check(&field(i, "duration_s"), f.duration_s, 0.0, 1e10)?;
        match f.kind {
            FaultKind::ClockGlitch => {
                if f.duration_s != 0.0 {
                    return Err(bad(
                        i,
                        "duration_s",
                        format!(
                            "a clock glitch is a jump and lasts 0 s, got {}",
                            f.duration_s
                        ),
                    ));
                }
                if !(f.offset_ps.is_finite() && f.offset_ps > 0.0 && f.offset_ps <= 1e13) {
                    return Err(bad(
                        i,
                        "offset_ps",
                        format!(
                            "a clock glitch jumps forward by 0 < offset_ps ≤ 1e13, got {}",
                            f.offset_ps
                        ),
                    ));
                }
            }
            FaultKind::LossStep => {
                qkdnet_optics::check(&field(i, "loss_db"), f.loss_db, 0.0, 200.0)?;
            }
            FaultKind::PumpDrop => {
                qkdnet_optics::check(&field(i, "factor"), f.factor, 0.0, 1.0)?;
            }
            FaultKind::DetectorCooling | FaultKind::FibreCut => {}
        }
        if f.kind != FaultKind::ClockGlitch && f.duration_s <= 0.0 {
            return Err(bad(
                i,
                "duration_s",
                format!("must be > 0 for a {:?} fault, got {}", f.kind, f.duration_s),
            ));
        }
        for (j, g) in faults.iter().enumerate().take(i) {
            let same_side = (0..2).any(|s| f.side.hits(s) && g.side.hits(s));
            if g.kind == f.kind
                && same_side
                && f.kind != FaultKind::ClockGlitch
                && f.start_s < g.end_s()
                && g.start_s < f.end_s()
            {
                return Err(bad(
                    i,
                    "start_s",
                    format!(
                        "{} overlaps fault[{j}] of the same kind and side ({}..{} s)",
                        f.start_s,
                        g.start_s,
                        g.end_s()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// What the faults in force at one moment do to a pulsed or CV link, per side
/// (0 = Alice, 1 = Bob): the families without time tags ([`crate::tf`], [`crate::mdi`],
/// [`crate::bb84`], [`crate::cv`]) apply it window by window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultState {
    /// Channel transmittance factor of each side's fibre: 0 while cut, `10^(−dB/10)` during
    /// a loss step.
    pub transmittance: [f64; 2],
    /// Whether each side's detectors count (false during a cooling cycle).
    pub detectors_on: [bool; 2],
    /// Source power factor of each side (`pump-drop`: a laser's power drop).
    pub source: [f64; 2],
}

impl FaultState {
    /// No fault in force.
    pub const CLEAR: Self = Self {
        transmittance: [1.0; 2],
        detectors_on: [true; 2],
        source: [1.0; 2],
    };

    /// The state at `t_s` under `faults`.
    pub fn at(faults: &[Fault], t_s: f64) -> Self {
        let mut st = Self::CLEAR;
        for f in faults.iter().filter(|f| f.active_at(t_s)) {
            for s in (0..2).filter(|&s| f.side.hits(s)) {
                match f.kind {
                    FaultKind::FibreCut => st.transmittance[s] = 0.0,
                    FaultKind::LossStep => st.transmittance[s] *= 10f64.powf(-f.loss_db / 10.0),
                    FaultKind::DetectorCooling => st.detectors_on[s] = false,
                    FaultKind::PumpDrop => st.source[s] *= f.factor,
                    FaultKind::ClockGlitch => {}
                }
            }
        }
        st
    }

    /// Factor on a side's arriving intensity (transmittance times source power).
    pub fn arm(&self, s: usize) -> f64 {
        self.transmittance[s] * self.source[s]
    }
}

/// Fault kinds that a pulsed link (no time tags) can have.
pub const PULSED: [FaultKind; 4] = [
    FaultKind::FibreCut,
    FaultKind::LossStep,
    FaultKind::PumpDrop,
    FaultKind::DetectorCooling,
];

/// The two arms of a relay link (twin-field, MDI) with their fault schedule: what both
/// families do with faults, in one place.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayArms {
    /// Transmittance of each arm to the relay, detector efficiency included.
    pub eta: [f64; 2],
    /// Whether the relay's detectors count.
    pub on: bool,
    faults: Vec<Fault>,
}

impl RelayArms {
    /// Arms of transmittance `eta`, no faults.
    pub fn new(eta: [f64; 2]) -> Self {
        Self {
            eta,
            on: true,
            faults: Vec::new(),
        }
    }

    /// The arms with a fault schedule for a `family` relay link: fibre cuts and loss steps
    /// on either arm, laser power drops (`pump-drop`) at either user, and cooling of the
    /// relay's detectors (`detector-cooling` on any side stops the relay). Clock glitches
    /// are refused: the records carry pulse numbers, not time tags.
    pub fn with_faults(mut self, faults: Vec<Fault>, family: &str) -> Result<Self, ParamError> {
        check_kinds(&faults, &PULSED, family)?;
        self.faults = faults;
        Ok(self)
    }

    /// The fault schedule.
    pub fn faults(&self) -> &[Fault] {
        &self.faults
    }

    /// The arms while `st` holds: each arm's arriving-intensity factor applied, the relay
    /// on or off (no schedule: the result describes one moment).
    pub fn under(&self, st: &FaultState) -> Self {
        Self {
            eta: [self.eta[0] * st.arm(0), self.eta[1] * st.arm(1)],
            on: st.detectors_on[0] && st.detectors_on[1],
            faults: Vec::new(),
        }
    }
}

/// Validates `faults` for a family that can have only the kinds in `allowed`; the error
/// names `fault[i].kind` and the family.
pub fn check_kinds(
    faults: &[Fault],
    allowed: &[FaultKind],
    family: &str,
) -> Result<(), ParamError> {
    validate(faults)?;
    for (i, f) in faults.iter().enumerate() {
        if !allowed.contains(&f.kind) {
            return Err(ParamError {
                field: format!("fault[{i}].kind"),
                reason: format!(
                    "{:?} does not apply to a {family} link (it can have {allowed:?})",
                    f.kind
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cooling(start: f64, dur: f64, side: Side) -> Fault {
        Fault {
            kind: FaultKind::DetectorCooling,
            side,
            start_s: start,
            duration_s: dur,
            loss_db: 0.0,
            offset_ps: 0.0,
            factor: 0.0,
        }
    }

    #[test]
    fn overlapping_faults_are_named() {
        let fs = [
            cooling(10.0, 5.0, Side::Alice),
            cooling(12.0, 5.0, Side::Both),
        ];
        let e = validate(&fs).expect_err("overlap");
        assert_eq!(e.field, "fault[1].start_s");
        assert!(e.reason.contains("fault[0]"), "{e}");
        let fs = [
            cooling(10.0, 5.0, Side::Alice),
            cooling(12.0, 5.0, Side::Bob),
        ];
        validate(&fs).expect("different sides");
    }

    #[test]
    fn bad_values_are_named() {
        let mut f = cooling(-1.0, 5.0, Side::Both);
        assert_eq!(validate(&[f]).expect_err("neg").field, "fault[0].start_s");
        f.start_s = 1.0;
        f.kind = FaultKind::PumpDrop;
        f.factor = 1.5;
        assert_eq!(validate(&[f]).expect_err("factor").field, "fault[0].factor");
        f.kind = FaultKind::ClockGlitch;
        f.duration_s = 0.0;
        f.offset_ps = -5.0;
        assert_eq!(
            validate(&[f]).expect_err("back").field,
            "fault[0].offset_ps"
        );
    }
}
