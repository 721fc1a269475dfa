//! Decoy-state BB84 with weak coherent pulses (the baseline; Lim et al., PRA 89, 022307
//! (2014) for the model `keyrate::decoy_bb84` uses).
//!
//! Per pulse Alice picks a basis (Z with `p_key_basis`), a bit and an intensity
//! `μ_k` (k = 0, 1, 2 with `p_mu1`, `p_mu2`, rest), phase-randomised; Bob picks a basis
//! (passively, Z with `p_key_basis`) and watches two detectors. With `η` the channel
//! transmittance times Bob's efficiency, the mean photon numbers at his detectors are
//! `ημ(1 − e_mis)` and `ημ e_mis` (the right and the wrong detector) when the bases
//! agree, `ημ/2` each when they do not; each detector is dark with probability
//! `(1 − p_d) e^{−I}`; a double click gives a random bit (squashing). A click is followed,
//! with probability `p_ap`, by an afterpulse of the same detector a geometric number of
//! gates later (mean [`AFTERPULSE_MEAN_GATES`]).
//!
//! The probability of any click, `1 − (1 − p_d)² e^{−ημ_k}`, depends only on the
//! intensity, so the event level draws the clicked pulses directly (geometric gaps),
//! their intensity in proportion, then bases, bit and detectors. Records: Bob's clicks
//! (pulse, basis, detector 0/1 or 2 for both) and Alice's log of those pulses (pulse,
//! basis, bit, intensity); per window the pulses sent per (intensity, Alice's basis,
//! Bob's basis).

// Per-window counts are indexed by (intensity, Alice's basis, Bob's basis) throughout.
#![allow(clippy::needless_range_loop)]

use crate::faults::{Fault, FaultKind, FaultState, Side};
use crate::streams::{multinomial, purpose_key, successes, walk_step, PulseWindow, PulseWindows};
use qkdnet_keyrate::decoy_bb84::DecoyBb84;
use qkdnet_optics::{check, ParamError};
use rand::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

/// Mean delay of an afterpulse, gates.
pub const AFTERPULSE_MEAN_GATES: f64 = 20.0;

/// Emulation settings (`[emulator]` of a `decoy-bb84` scenario).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bb84Emulation {
    /// Master seed.
    pub seed: u64,
    /// Random walk of the polarisation frame between Alice and Bob, rad/√s (0: the
    /// hardware's fixed `misalignment` alone). Bob's polarisation controller
    /// ([`Bb84Actuators`]) takes it back.
    pub polarisation_drift_rad_per_sqrt_s: f64,
}

impl Default for Bb84Emulation {
    fn default() -> Self {
        Self {
            seed: 1,
            polarisation_drift_rad_per_sqrt_s: 0.0,
        }
    }
}

/// What the link runtime sets on a decoy-BB84 link (applied from the next window).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Bb84Actuators {
    /// Bob's polarisation controller, rad (subtracted from the drifted frame).
    pub polarisation_rad: f64,
}

/// One click at Bob with Alice's log of the pulse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bb84Click {
    /// Pulse number.
    pub pulse: u64,
    /// Bob's basis (0 = Z, 1 = X).
    pub bob_basis: u8,
    /// Detector: 0 or 1 (the bit value it stands for), 2 = both.
    pub detector: u8,
    /// Alice's basis.
    pub alice_basis: u8,
    /// Alice's bit.
    pub alice_bit: u8,
    /// Alice's intensity index (0, 1, 2).
    pub intensity: u8,
}

impl Bb84Click {
    /// Bob's bit: the detector, or `squash` for a double click.
    pub fn bob_bit(&self, squash: u8) -> u8 {
        if self.detector == 2 {
            squash
        } else {
            self.detector
        }
    }
}

/// One window of records.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Bb84Window {
    /// Window index.
    pub index: u64,
    /// First pulse.
    pub first_pulse: u64,
    /// Pulses.
    pub pulses: u64,
    /// Pulses sent per `[intensity][alice basis][bob basis]`.
    pub sent: [[[u64; 2]; 2]; 3],
    /// Clicks in pulse order (afterpulses included, where they fell).
    pub clicks: Vec<Bb84Click>,
}

/// Counts per intensity, basis-matched pulses only.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Bb84Stats {
    /// Pulses sent with matching bases, per `[intensity][basis]`.
    pub sent: [[u64; 2]; 3],
    /// Clicks with matching bases.
    pub clicks: [[u64; 2]; 3],
    /// Of which with Bob's bit (double clicks counted as half an error) not Alice's.
    pub errors: [[f64; 2]; 3],
}

impl std::ops::AddAssign<&Bb84Stats> for Bb84Stats {
    fn add_assign(&mut self, s: &Bb84Stats) {
        for k in 0..3 {
            for b in 0..2 {
                self.sent[k][b] += s.sent[k][b];
                self.clicks[k][b] += s.clicks[k][b];
                self.errors[k][b] += s.errors[k][b];
            }
        }
    }
}

impl Bb84Stats {
    /// Key-basis (Z) error rate over all intensities.
    pub fn qber_z(&self) -> f64 {
        let clicks: u64 = (0..3).map(|k| self.clicks[k][0]).sum();
        let errors: f64 = (0..3).map(|k| self.errors[k][0]).sum();
        errors / clicks.max(1) as f64
    }
}

/// A validated decoy-BB84 link.
#[derive(Debug, Clone)]
pub struct Bb84Link {
    hw: DecoyBb84,
    loss_db: f64,
    emu: Bb84Emulation,
    eta: f64,
    /// Scheduled faults (applied window by window by [`Bb84Emulator`]).
    faults: Vec<Fault>,
    /// Whether Bob's detectors count.
    detectors_on: bool,
    /// Rotation of the polarisation frame in force (drift minus actuator), rad.
    rotation_rad: f64,
}

impl Bb84Link {
    /// Builds and validates a link of channel loss `loss_db`.
    pub fn new(hw: DecoyBb84, loss_db: f64, emu: Bb84Emulation) -> Result<Self, ParamError> {
        hw.validate()?;
        check("channel.loss_db", loss_db, 0.0, 200.0)?;
        let eta = 10f64.powf(-loss_db / 10.0) * hw.detector_efficiency;
        Ok(Self {
            hw,
            loss_db,
            emu,
            eta,
            faults: Vec::new(),
            detectors_on: true,
            rotation_rad: 0.0,
        })
    }

    /// The link with the polarisation frame rotated by `rotation_rad`.
    pub fn with_rotation(&self, rotation_rad: f64) -> Self {
        let mut l = self.clone();
        l.rotation_rad = rotation_rad;
        l
    }

    /// Probability that a photon lands on the wrong detector: the hardware's
    /// misalignment `e` and the frame rotation θ as independent flips,
    /// `e (1 − s) + s (1 − e)` with `s = sin²θ` (a rotation by θ sends either basis's
    /// states that far off their axis).
    pub fn misalignment(&self) -> f64 {
        let e = self.hw.misalignment;
        let s = self.rotation_rad.sin().powi(2);
        e * (1.0 - s) + s * (1.0 - e)
    }

    /// The link with a fault schedule: fibre cuts and loss steps (on either side: there
    /// is one fibre), drops of Alice's laser power (`pump-drop`, side alice or both) and
    /// cooling cycles of Bob's detectors (side bob or both). Clock glitches are refused:
    /// the records carry pulse numbers, not time tags.
    pub fn with_faults(mut self, faults: Vec<Fault>) -> Result<Self, ParamError> {
        crate::faults::check_kinds(&faults, &crate::faults::PULSED, "BB84")?;
        for (i, f) in faults.iter().enumerate() {
            let (side, who) = match f.kind {
                FaultKind::PumpDrop => (Side::Bob, "Bob has no source"),
                FaultKind::DetectorCooling => (Side::Alice, "Alice has no detectors"),
                _ => continue,
            };
            if f.side == side {
                return Err(ParamError {
                    field: format!("fault[{i}].side"),
                    reason: format!("{:?} on side {side:?}: {who} in BB84", f.kind),
                });
            }
        }
        self.faults = faults;
        Ok(self)
    }

    /// The link as it is while `st` holds.
    pub fn under(&self, st: &FaultState) -> Self {
        let mut l = self.clone();
        l.faults = Vec::new();
        l.eta *= st.transmittance[0] * st.transmittance[1] * st.source[0];
        l.detectors_on = st.detectors_on[1];
        l
    }

    /// The hardware.
    pub fn hardware(&self) -> &DecoyBb84 {
        &self.hw
    }

    /// Channel loss, dB.
    pub fn loss_db(&self) -> f64 {
        self.loss_db
    }

    /// Intensity `k` and its probability.
    pub fn intensity(&self, k: usize) -> (f64, f64) {
        let h = &self.hw;
        [
            (h.mu1, h.p_mu1),
            (h.mu2, h.p_mu2),
            (h.mu3, 1.0 - h.p_mu1 - h.p_mu2),
        ][k]
    }

    /// Probability of any click for intensity `k`.
    pub fn any_click(&self, k: usize) -> f64 {
        if !self.detectors_on {
            return 0.0;
        }
        let pd = self.hw.dark_count_probability;
        1.0 - (1.0 - pd) * (1.0 - pd) * (-self.eta * self.intensity(k).0).exp()
    }

    /// Closed forms for matching bases and intensity `k`: (clicks, errors) per pulse,
    /// afterpulses included (`p_ap` more clicks, half of them errors).
    pub fn expected(&self, k: usize) -> (f64, f64) {
        if !self.detectors_on {
            return (0.0, 0.0);
        }
        let pd = self.hw.dark_count_probability;
        let i = self.eta * self.intensity(k).0;
        let e = self.misalignment();
        let right_dark = (1.0 - pd) * (-i * (1.0 - e)).exp();
        let wrong_dark = (1.0 - pd) * (-i * e).exp();
        let any = 1.0 - right_dark * wrong_dark;
        let wrong_only = (1.0 - wrong_dark) * right_dark;
        let both = (1.0 - right_dark) * (1.0 - wrong_dark);
        let ap = self.hw.afterpulse_probability * self.mean_clicks_per_pulse();
        (any + ap, wrong_only + both / 2.0 + ap / 2.0)
    }

    /// Clicks per pulse averaged over the intensities (what afterpulses follow).
    fn mean_clicks_per_pulse(&self) -> f64 {
        (0..3)
            .map(|k| self.intensity(k).1 * self.any_click(k))
            .sum()
    }
}

/// A running decoy-BB84 emulation.
#[derive(Debug, Clone)]
pub struct Bb84Emulator {
    /// What the link runtime sets (applied from the next window).
    pub actuators: Bb84Actuators,
    /// The frame's accumulated drift, rad.
    drift_rad: f64,
    drift_key: u64,
    /// The link with its fault schedule.
    base: Bb84Link,
    /// The fault state of the current window, and the link under it.
    state: FaultState,
    link: Bb84Link,
    windows: PulseWindows,
    /// Afterpulses due in later windows: (pulse, detector).
    pending: Vec<(u64, u8)>,
}

impl Bb84Emulator {
    /// An emulation in windows of `window_s` seconds of pulses.
    pub fn new(link: Bb84Link, window_s: f64) -> Result<Self, ParamError> {
        let windows =
            PulseWindows::new(window_s, link.hw.clock_hz, link.emu.seed, "emulator/bb84")?;
        Ok(Self {
            actuators: Bb84Actuators::default(),
            drift_rad: 0.0,
            drift_key: purpose_key(link.emu.seed, "emulator/bb84", "drift"),
            state: FaultState::CLEAR,
            link: link.under(&FaultState::CLEAR),
            base: link,
            windows,
            pending: Vec::new(),
        })
    }

    /// The link.
    pub fn link(&self) -> &Bb84Link {
        &self.link
    }

    /// The next window at event level.
    pub fn step_events(&mut self) -> Bb84Window {
        let PulseWindow {
            index,
            first,
            end,
            clicks_rng: mut rng,
            mut sent_rng,
        } = self.windows.next_window();
        let st = FaultState::at(&self.base.faults, first as f64 / self.base.hw.clock_hz);
        let rotation = self.drift_rad - self.actuators.polarisation_rad;
        if st != self.state || rotation != self.link.rotation_rad {
            self.state = st;
            self.link = self.base.under(&st).with_rotation(rotation);
        }
        self.drift_rad += walk_step(
            self.drift_key,
            index,
            self.base.emu.polarisation_drift_rad_per_sqrt_s,
            (end - first) as f64 / self.base.hw.clock_hz,
        );
        let l = &self.link;
        let pk = l.hw.p_key_basis;
        // Pulses sent per (intensity, bases): sequential binomials.
        let pb = |x: usize| if x == 0 { pk } else { 1.0 - pk };
        let p: Vec<f64> = (0..12)
            .map(|i| l.intensity(i / 4).1 * pb((i / 2) % 2) * pb(i % 2))
            .collect();
        let counts = multinomial(&mut sent_rng, end - first, &p);
        let sent: [[[u64; 2]; 2]; 3] = core::array::from_fn(|k| {
            core::array::from_fn(|a| core::array::from_fn(|b| counts[4 * k + 2 * a + b]))
        });
        let weights: [f64; 3] = core::array::from_fn(|k| l.intensity(k).1 * l.any_click(k));
        let p_any: f64 = weights.iter().sum();
        let mut clicks = Vec::new();
        successes(&mut rng, first, end, p_any, |rng, pulse| {
            clicks.push(self.click(rng, pulse, &weights, p_any));
        });
        // Afterpulses: from this window's clicks, and those due from earlier ones.
        let p_ap = l.hw.afterpulse_probability;
        let ln_ap = (-1.0 / AFTERPULSE_MEAN_GATES).ln_1p();
        let mut due: Vec<(u64, u8)> = std::mem::take(&mut self.pending);
        for c in &clicks {
            if c.detector < 2 && rng.gen::<f64>() < p_ap {
                let u: f64 = rng.gen::<f64>().max(f64::MIN_POSITIVE);
                let delay = 1 + (u.ln() / ln_ap).floor() as u64;
                due.push((c.pulse + delay, c.detector));
            }
        }
        let (mut now, later): (Vec<_>, Vec<_>) = due.into_iter().partition(|&(p, _)| p < end);
        self.pending = later;
        if !self.link.detectors_on {
            // Warm detectors do not afterpulse.
            now.clear();
        }
        let mut extra = Vec::new();
        for (pulse, det) in now {
            match clicks.binary_search_by_key(&pulse, |c: &Bb84Click| c.pulse) {
                // The detector fires on a pulse that already clicked: a double click if
                // the other detector had fired.
                Ok(i) => {
                    if clicks[i].detector != det && clicks[i].detector != 2 {
                        clicks[i].detector = 2;
                    }
                }
                // On an otherwise empty pulse: Alice's settings of that pulse are drawn
                // now (they are independent of everything before).
                Err(_) => {
                    let (a_basis, bit, k) = self.settings(&mut rng);
                    extra.push(Bb84Click {
                        pulse,
                        bob_basis: (rng.gen::<f64>() >= pk) as u8,
                        detector: det,
                        alice_basis: a_basis,
                        alice_bit: bit,
                        intensity: k,
                    });
                }
            }
        }
        if !extra.is_empty() {
            extra.sort_by_key(|c| c.pulse);
            // Two afterpulses on one empty pulse: keep one (a double click if they differ).
            extra.dedup_by(|b, a| {
                if a.pulse == b.pulse {
                    if a.detector != b.detector {
                        a.detector = 2;
                    }
                    true
                } else {
                    false
                }
            });
            let mut merged = Vec::with_capacity(clicks.len() + extra.len());
            let (mut i, mut j) = (0, 0);
            while i < clicks.len() || j < extra.len() {
                if j >= extra.len() || (i < clicks.len() && clicks[i].pulse < extra[j].pulse) {
                    merged.push(clicks[i]);
                    i += 1;
                } else {
                    merged.push(extra[j]);
                    j += 1;
                }
            }
            clicks = merged;
        }
        Bb84Window {
            index,
            first_pulse: first,
            pulses: end - first,
            sent,
            clicks,
        }
    }

    fn settings(&self, rng: &mut Xoshiro256PlusPlus) -> (u8, u8, u8) {
        let l = &self.link;
        let basis = (rng.gen::<f64>() >= l.hw.p_key_basis) as u8;
        let bit = rng.gen::<bool>() as u8;
        let r = rng.gen::<f64>();
        let k = if r < l.intensity(0).1 {
            0
        } else if r < l.intensity(0).1 + l.intensity(1).1 {
            1
        } else {
            2
        };
        (basis, bit, k)
    }

    fn click(
        &self,
        rng: &mut Xoshiro256PlusPlus,
        pulse: u64,
        weights: &[f64; 3],
        p_any: f64,
    ) -> Bb84Click {
        let l = &self.link;
        let r = rng.gen::<f64>() * p_any;
        let k = if r < weights[0] {
            0
        } else if r < weights[0] + weights[1] {
            1
        } else {
            2
        };
        let pk = l.hw.p_key_basis;
        let a_basis = (rng.gen::<f64>() >= pk) as u8;
        let b_basis = (rng.gen::<f64>() >= pk) as u8;
        let bit = rng.gen::<bool>() as u8;
        let i = l.eta * l.intensity(k).0;
        let e = l.misalignment();
        let (i_right, i_wrong) = if a_basis == b_basis {
            (i * (1.0 - e), i * e)
        } else {
            (i / 2.0, i / 2.0)
        };
        let pd = l.hw.dark_count_probability;
        let right_dark = (1.0 - pd) * (-i_right).exp();
        let wrong_dark = (1.0 - pd) * (-i_wrong).exp();
        let only_right = (1.0 - right_dark) * wrong_dark;
        let only_wrong = (1.0 - wrong_dark) * right_dark;
        let any = 1.0 - right_dark * wrong_dark;
        let u = rng.gen::<f64>() * any;
        let detector = if u < only_right {
            bit
        } else if u < only_right + only_wrong {
            1 - bit
        } else {
            2
        };
        Bb84Click {
            pulse,
            bob_basis: b_basis,
            detector,
            alice_basis: a_basis,
            alice_bit: bit,
            intensity: k as u8,
        }
    }
}

/// Tallies a window's basis-matched clicks and errors per intensity and basis.
pub fn tally(w: &Bb84Window) -> Bb84Stats {
    let mut s = Bb84Stats::default();
    for k in 0..3 {
        for b in 0..2 {
            s.sent[k][b] = w.sent[k][b][b];
        }
    }
    for c in &w.clicks {
        if c.alice_basis != c.bob_basis {
            continue;
        }
        let (k, b) = (c.intensity as usize, c.bob_basis as usize);
        s.clicks[k][b] += 1;
        s.errors[k][b] += match c.detector {
            2 => 0.5,
            d if d != c.alice_bit => 1.0,
            _ => 0.0,
        };
    }
    s
}
