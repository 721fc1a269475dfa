//! Twin-field QKD, sending-or-not-sending (Frankfurt–Kehl, Pittaluga et al. 2025; the
//! microcomb star, Zheng et al. 2026; REFERENCE.md §1.1, §1.4): two users' phase-randomised
//! weak coherent pulses interfere at an untrusted relay's beam splitter, watched by two
//! detectors.
//!
//! Per pulse each user picks, independently:
//!
//! | setting | window | intensity | probability |
//! |---|---|---|---|
//! | 0 | Z, not sending | 0 | `p_z (1 − ε)` |
//! | 1 | Z, sending | `μ_z` | `p_z ε` |
//! | 2 | X, vacuum | 0 | `(1 − p_z) q₀` |
//! | 3 | X, weak decoy | `μ₁` | `(1 − p_z) q₁` |
//! | 4 | X, strong decoy | `μ₂` | `(1 − p_z) q₂` |
//!
//! with a uniformly random phase θ, announced later as its slice `⌊θ M / 2π⌋` of `M`
//! (`q = (0.2, 0.6, 0.2)` as in `keyrate::tf`). At the relay the fields, attenuated by the
//! arms' transmittances and the detector efficiency (`η_A μ_A`, `η_B μ_B`), give mean
//! photon numbers `I± = (η_A μ_A + η_B μ_B)/2 ± V √(η_A μ_A η_B μ_B) cos δ` at the two
//! detectors, `V` the mode visibility and `δ = θ_A − θ_B + ν`, where `ν` is the residual
//! phase error after stabilisation, emulated in time from the terms of the
//! `optics::phase::PhaseNoise` budget (Bertaina et al., arXiv:2310.08621):
//!
//! - the stabilisation (off-band reference at Frankfurt–Kehl, the microcomb-locked
//!   lasers of the star network) corrects the phase every `T = correction_period_s`,
//!   leaving its own error `r_k ~ N(0, σ_res²)` for the whole interval `k`;
//! - between corrections the fibres drift at `ω = fibre_drift_rad_per_s`, in a direction
//!   drawn per interval, so the error grows as `±ω (t − kT)`;
//! - the lasers' phase diffusion over the delay mismatch adds `ℓ ~ N(0, 2π Δν τ_d)` per
//!   pulse.
//!
//! The mean square of `ν` is the budget's `σ² = σ_res² + (ωT)²/3 + 2πΔν τ_d`, and pulses
//! in one correction interval share its error, as in the hardware. A detector stays dark
//! with probability `(1 − p_d) e^{−I}`.
//!
//! The probability that anything clicks, `1 − (1 − p_d)² e^{−(η_A μ_A + η_B μ_B)}`, does
//! not depend on δ; so the event level draws the clicked pulses directly (geometric gaps
//! at the total click probability), then their settings in proportion to each setting
//! pair's click probability, then phases and which detector clicked. Never a draw per
//! pulse.
//!
//! Records: the relay's clicks (pulse number, detector 0 = bright at δ = 0, 1 = the other,
//! 2 = both), and each user's emission log for the clicked pulses (pulse number, setting,
//! phase slice); per window the number of pulses sent in each setting pair.

// Setting pairs are a 5 × 5 matrix indexed by (Alice's, Bob's) setting throughout.
#![allow(clippy::needless_range_loop)]

use crate::faults::{Fault, FaultState, RelayArms};
use crate::streams::{
    binomial, multinomial, pick, purpose_key, successes, walk_step, window_rng, PulseWindow,
    PulseWindows,
};
use qkdnet_keyrate::tf::{TfVariant, TwinField, TwinFieldModel};
use qkdnet_optics::{check, ParamError};
use rand::Rng;
use rand_distr::StandardNormal;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// Settings per user.
pub const SETTINGS: usize = 5;
/// The X-window intensity probabilities `(q₀, q₁, q₂)` of `keyrate::tf`.
pub const X_SPLIT: [f64; 3] = [0.2, 0.6, 0.2];

/// Emulation settings (`[emulator]` of an `sns`/`sns-aopp` scenario).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TfEmulation {
    /// Master seed.
    pub seed: u64,
    /// Random walk of the two fields' phase reference that no built-in stabilisation
    /// removes, rad/√s: the link's phase tracking must follow it with the phase
    /// actuator ([`TfActuators`]). 0 (default): the `phase_noise` budget alone, as `keyrate`
    /// assumes.
    pub phase_drift_rad_per_sqrt_s: f64,
}

impl Default for TfEmulation {
    fn default() -> Self {
        Self {
            seed: 1,
            phase_drift_rad_per_sqrt_s: 0.0,
        }
    }
}

/// What the link runtime sets on a twin-field link (applied from the next window).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TfActuators {
    /// Phase shifter on Bob's field, rad (subtracted from the drifted reference).
    pub phase_rad: f64,
}

/// One relay click with both users' logs of that pulse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TfClick {
    /// Pulse number from the start.
    pub pulse: u64,
    /// 0: the detector bright at δ = 0; 1: the other; 2: both.
    pub detector: u8,
    /// Alice's and Bob's settings (0..5, see the module table).
    pub settings: [u8; 2],
    /// Alice's and Bob's phase slices.
    pub slices: [u16; 2],
}

/// One window of records.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TfWindow {
    /// Window index.
    pub index: u64,
    /// First pulse of the window.
    pub first_pulse: u64,
    /// Pulses in the window.
    pub pulses: u64,
    /// Pulses sent per setting pair `[alice][bob]`.
    pub sent: [[u64; SETTINGS]; SETTINGS],
    /// Clicks, in pulse order.
    pub clicks: Vec<TfClick>,
}

/// Window-level counts per setting pair.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TfStats {
    /// Window index.
    pub index: u64,
    /// Pulses sent per setting pair.
    pub sent: [[u64; SETTINGS]; SETTINGS],
    /// Single clicks per setting pair.
    pub single: [[u64; SETTINGS]; SETTINGS],
    /// Pairs whose phase slices matched (same or opposite; SNS: weak decoys, PM: key
    /// pulses), clicked or not. Window-level stats only ([`TfEmulator::step_stats`]): an
    /// event-level window lists clicks alone, so [`TfLink::tally`] leaves it 0.
    pub matched_sent: u64,
    /// Weak-decoy pairs with matched phase slices (same or opposite) that gave a single
    /// click.
    pub matched_clicks: u64,
    /// Of which on the detector that should be dark (phase errors).
    pub matched_errors: u64,
    /// PM: weak-decoy pairs `(3, 3)` whose phase slices matched, clicked or not (window
    /// level only, as `matched_sent`).
    pub matched_decoy_sent: u64,
    /// PM: of which gave a single click.
    pub matched_decoy_clicks: u64,
}

/// A validated twin-field link.
#[derive(Debug, Clone)]
pub struct TfLink {
    pm: bool,
    model: TwinFieldModel,
    loss_db: f64,
    emu: TfEmulation,
    /// Probability and intensity of each setting.
    settings: [(f64, f64); SETTINGS],
    /// The two arms and their faults.
    arms: RelayArms,
    /// Phase offset of the reference in force (drift minus actuator), rad.
    offset_rad: f64,
}

impl std::ops::AddAssign<&TfStats> for TfStats {
    fn add_assign(&mut self, s: &TfStats) {
        for a in 0..SETTINGS {
            for b in 0..SETTINGS {
                self.sent[a][b] += s.sent[a][b];
                self.single[a][b] += s.single[a][b];
            }
        }
        self.matched_sent += s.matched_sent;
        self.matched_clicks += s.matched_clicks;
        self.matched_errors += s.matched_errors;
        self.matched_decoy_sent += s.matched_decoy_sent;
        self.matched_decoy_clicks += s.matched_decoy_clicks;
    }
}

impl TfStats {
    /// Z-window error rate of single clicks: Alice's bit is "sent" and Bob's "not sent",
    /// so setting pairs (0, 0) and (1, 1) are errors.
    pub fn qber_z(&self) -> f64 {
        let ones = self.single[1][0] + self.single[0][1];
        let errs = self.single[0][0] + self.single[1][1];
        errs as f64 / (errs + ones).max(1) as f64
    }
}

impl TfLink {
    /// `keyrate`'s key error rate (`qber_key`: SNS the Z window's, PM the matched key
    /// pulses') at this link's settings.
    pub fn qber_z(&self) -> f64 {
        use qkdnet_keyrate::{KeyRateModel, Security};
        self.model
            .evaluate(self.loss_db, &self.model.initial(), &Security::Asymptotic)
            .qber_key
    }

    /// Builds and validates a link of total loss `loss_db` (split by
    /// `alice_loss_fraction`).
    pub fn new(hw: TwinField, loss_db: f64, emu: TfEmulation) -> Result<Self, ParamError> {
        hw.validate()?;
        if hw.asymmetric {
            return Err(ParamError {
                field: "hardware.asymmetric".into(),
                reason: "the emulator's twin-field sources are symmetric (keyrate alone \
                         evaluates asymmetric SNS)"
                    .into(),
            });
        }
        check("channel.loss_db", loss_db, 0.0, 200.0)?;
        crate::streams::check_walk("phase_drift_rad_per_sqrt_s", emu.phase_drift_rad_per_sqrt_s)?;
        let model = hw.prepare();
        let (pz, eps) = (hw.p_z, hw.send_probability);
        let px = 1.0 - pz;
        let pm = hw.variant == TfVariant::Pm;
        let settings = if pm {
            // PM-QKD (Ma, Zeng, Zhou 2018): a signal at μ/2 with probability p_z, the key
            // bit as a phase 0 or π; else a test pulse, the weak decoy ν/2 (`mu_decoy1` is
            // ν over the pair) with keyrate's PM_DECOY_SHARE, vacuum otherwise: each user
            // independently, as `keyrate`'s finite model counts them.
            let half = hw.mu_signal / 2.0;
            let share = qkdnet_keyrate::tf::PM_DECOY_SHARE;
            [
                (pz / 2.0, half),
                (pz / 2.0, half),
                (px * (1.0 - share), 0.0),
                (px * share, hw.mu_decoy1 / 2.0),
                (0.0, 0.0),
            ]
        } else {
            [
                (pz * (1.0 - eps), 0.0),
                (pz * eps, hw.mu_signal),
                (px * X_SPLIT[0], 0.0),
                (px * X_SPLIT[1], hw.mu_decoy1),
                (px * X_SPLIT[2], hw.mu_decoy2),
            ]
        };
        let (ea, eb) = model.arms(loss_db);
        Ok(Self {
            pm,
            model,
            loss_db,
            emu,
            settings,
            arms: RelayArms::new([ea, eb]),
            offset_rad: 0.0,
        })
    }

    /// The link with the reference `offset_rad` off (drift minus actuator): the matched
    /// pairs' forward model and every click's phase difference shift by it.
    pub fn with_offset(&self, offset_rad: f64) -> Self {
        let mut l = self.clone();
        l.offset_rad = offset_rad;
        l.model = l.model.hw.prepare_offset(offset_rad);
        l
    }

    /// The reference offset in force, rad.
    pub fn offset_rad(&self) -> f64 {
        self.offset_rad
    }

    /// The link with a fault schedule (see [`RelayArms::with_faults`]).
    pub fn with_faults(mut self, faults: Vec<Fault>) -> Result<Self, ParamError> {
        self.arms = self.arms.with_faults(faults, "twin-field")?;
        Ok(self)
    }

    /// The link as it is while `st` holds (arriving intensities scaled, relay on or off).
    pub fn under(&self, st: &FaultState) -> Self {
        let mut l = self.clone();
        l.arms = self.arms.under(st);
        l
    }

    /// The key-rate model (hardware and forward-model gains).
    pub fn model(&self) -> &TwinFieldModel {
        &self.model
    }

    /// Channel loss, dB.
    pub fn loss_db(&self) -> f64 {
        self.loss_db
    }

    /// Probability and intensity of setting `s`.
    pub fn setting(&self, s: usize) -> (f64, f64) {
        self.settings[s]
    }

    /// `(η_A μ_A, η_B μ_B)` of a setting pair.
    fn arriving(&self, a: usize, b: usize) -> (f64, f64) {
        (
            self.arms.eta[0] * self.settings[a].1,
            self.arms.eta[1] * self.settings[b].1,
        )
    }

    /// Probability that any detector clicks for setting pair `(a, b)` (independent of δ).
    pub fn any_click(&self, a: usize, b: usize) -> f64 {
        if !self.arms.on {
            return 0.0;
        }
        let pd = self.model.hw.dark_count_probability;
        let (x, y) = self.arriving(a, b);
        1.0 - (1.0 - pd) * (1.0 - pd) * (-(x + y)).exp()
    }

    /// Expected single-click probability of setting pair `(a, b)` with random phases, from
    /// `keyrate`'s forward model.
    pub fn single_click(&self, a: usize, b: usize) -> f64 {
        if !self.arms.on {
            return 0.0;
        }
        let (x, y) = self.arriving(a, b);
        let pd = self.model.hw.dark_count_probability;
        match (x > 0.0, y > 0.0) {
            (false, false) => 2.0 * pd * (1.0 - pd),
            (true, false) => self.model.gain_one(x),
            (false, true) => self.model.gain_one(y),
            (true, true) => self.model.gain_both_random(x, y),
        }
    }

    /// Whether this is PM-QKD (else sending-or-not-sending).
    pub fn is_pm(&self) -> bool {
        self.pm
    }

    /// The phase a setting adds: the key bit's π in PM-QKD, nothing in SNS.
    fn key_phase(&self, s: usize) -> f64 {
        if self.pm && s == 1 {
            PI
        } else {
            0.0
        }
    }

    /// The setting pairs whose matched-slice clicks are counted: SNS the weak decoys
    /// `(3, 3)`; PM every key pair.
    fn matched_pair(&self, a: usize, b: usize) -> bool {
        if self.pm {
            a < 2 && b < 2
        } else {
            a == 3 && b == 3
        }
    }

    /// PM: expected single-click gain of matched-slice weak-decoy pairs `(3, 3)`.
    pub fn matched_decoy_gain(&self) -> f64 {
        if !self.arms.on {
            return 0.0;
        }
        let (x, y) = self.arriving(3, 3);
        self.model.gain_both_matched(x, y).0
    }

    /// Expected (single-click gain, error gain) of matched-slice pairs (SNS: weak decoys;
    /// PM: key pulses), from `keyrate`'s forward model.
    pub fn matched(&self) -> (f64, f64) {
        if !self.arms.on {
            return (0.0, 0.0);
        }
        let (x, y) = if self.pm {
            self.arriving(0, 0)
        } else {
            self.arriving(3, 3)
        };
        self.model.gain_both_matched(x, y)
    }

    /// Tallies an event-level window: single clicks per setting pair, and the matched
    /// pairs' clicks and errors (same slice: the detector dark at δ = 0 — or at δ = π for
    /// PM key bits that differ — is the error; opposite slices: the other one).
    pub fn tally(&self, w: &TfWindow) -> TfStats {
        let slices = self.model.hw.phase_slices as u16;
        let mut s = TfStats {
            index: w.index,
            sent: w.sent,
            ..TfStats::default()
        };
        for c in w.clicks.iter().filter(|c| c.detector < 2) {
            let (a, b) = (c.settings[0] as usize, c.settings[1] as usize);
            s.single[a][b] += 1;
            let same = c.slices[0] == c.slices[1];
            let opposite =
                slices.is_multiple_of(2) && (c.slices[0] + slices / 2) % slices == c.slices[1];
            if self.pm && (a, b) == (3, 3) && (same || opposite) {
                s.matched_decoy_clicks += 1;
            }
            if !self.matched_pair(a, b) {
                continue;
            }
            if same || opposite {
                s.matched_clicks += 1;
                let flips = (self.key_phase(a) != self.key_phase(b)) as u8 ^ opposite as u8;
                // The detector bright at δ = 0 is 0; each π flips which one is right.
                s.matched_errors += (c.detector != flips) as u64;
            }
        }
        s
    }
}

/// A running twin-field emulation.
#[derive(Debug, Clone)]
pub struct TfEmulator {
    /// What the link runtime sets (applied from the next window).
    pub actuators: TfActuators,
    /// The reference's accumulated drift, rad.
    drift_rad: f64,
    drift_key: u64,
    /// The link with its fault schedule.
    base: TfLink,
    /// The fault state of the current window, and the link under it.
    state: FaultState,
    link: TfLink,
    windows: PulseWindows,
    stats_key: u64,
    phase_key: u64,
    /// Cumulative click weight of the 25 setting pairs, and the total.
    cumulative: [f64; SETTINGS * SETTINGS],
    p_any: f64,
}

impl TfEmulator {
    /// An emulation in windows of `window_s` seconds of pulses.
    pub fn new(link: TfLink, window_s: f64) -> Result<Self, ParamError> {
        let windows = PulseWindows::new(
            window_s,
            link.model.hw.clock_hz,
            link.emu.seed,
            "emulator/tf",
        )?;
        let mut e = Self {
            actuators: TfActuators::default(),
            drift_rad: 0.0,
            drift_key: purpose_key(link.emu.seed, "emulator/tf", "drift"),
            stats_key: purpose_key(link.emu.seed, "emulator/tf", "stats"),
            phase_key: purpose_key(link.emu.seed, "emulator/tf", "phase"),
            state: FaultState::CLEAR,
            link: link.under(&FaultState::CLEAR),
            base: link,
            windows,
            cumulative: [0.0; SETTINGS * SETTINGS],
            p_any: 0.0,
        };
        e.prepare();
        Ok(e)
    }

    /// The click weights of the current link.
    fn prepare(&mut self) {
        let mut acc = 0.0;
        for a in 0..SETTINGS {
            for b in 0..SETTINGS {
                acc +=
                    self.link.settings[a].0 * self.link.settings[b].0 * self.link.any_click(a, b);
                self.cumulative[a * SETTINGS + b] = acc;
            }
        }
        self.p_any = acc;
    }

    /// Applies the faults in force at pulse `first` (a window's first pulse) and the
    /// reference offset of window `index` (the drift up to the window's start minus the
    /// actuator), then advances the drift past the window.
    fn refresh(&mut self, index: u64, first: u64) {
        let st = FaultState::at(
            self.base.arms.faults(),
            first as f64 / self.base.model.hw.clock_hz,
        );
        if st != self.state {
            self.state = st;
            self.link = self.base.under(&st).with_offset(self.link.offset_rad);
            self.prepare();
        }
        let offset = self.drift_rad - self.actuators.phase_rad;
        if offset != self.link.offset_rad {
            // Click probabilities do not depend on the phase: only the model moves.
            self.link = self.link.with_offset(offset);
        }
        self.drift_rad += walk_step(
            self.drift_key,
            index,
            self.base.emu.phase_drift_rad_per_sqrt_s,
            self.windows.pulses_per_window as f64 / self.base.model.hw.clock_hz,
        );
    }

    /// The link.
    pub fn link(&self) -> &TfLink {
        &self.link
    }

    /// Pulses per window.
    pub fn pulses_per_window(&self) -> u64 {
        self.windows.pulses_per_window
    }

    /// Probability that a pulse gives any click.
    pub fn click_probability(&self) -> f64 {
        self.p_any
    }

    /// Splits `n` pulses over the 25 setting pairs (sequential binomials).
    fn split_sent(&self, rng: &mut Xoshiro256PlusPlus, n: u64) -> [[u64; SETTINGS]; SETTINGS] {
        let p: Vec<f64> = (0..SETTINGS * SETTINGS)
            .map(|k| self.link.settings[k / SETTINGS].0 * self.link.settings[k % SETTINGS].0)
            .collect();
        let counts = multinomial(rng, n, &p);
        core::array::from_fn(|a| core::array::from_fn(|b| counts[a * SETTINGS + b]))
    }

    /// The next window at event level.
    pub fn step_events(&mut self) -> TfWindow {
        let PulseWindow {
            index,
            first,
            end,
            clicks_rng: mut rng,
            mut sent_rng,
        } = self.windows.next_window();
        self.refresh(index, first);
        let mut clicks = Vec::new();
        successes(&mut rng, first, end, self.p_any, |rng, pulse| {
            clicks.push(self.click(rng, pulse));
        });
        TfWindow {
            index,
            first_pulse: first,
            pulses: end - first,
            sent: self.split_sent(&mut sent_rng, end - first),
            clicks,
        }
    }

    /// The residual phase error at `pulse` (module docs): the correction interval's own
    /// error and drift direction (drawn from the interval's generator, so every pulse of
    /// the interval sees the same), the drift since the correction, and the lasers'
    /// diffusion (drawn from `rng`, per pulse).
    pub fn phase_error(&self, rng: &mut Xoshiro256PlusPlus, pulse: u64) -> f64 {
        let pn = &self.link.model.hw.phase_noise;
        let t = pulse as f64 / self.link.model.hw.clock_hz;
        let period = pn.correction_period_s;
        let k = (t / period).floor();
        let mut interval = window_rng(self.phase_key, k as u64);
        let residual: f64 = pn.residual_rms_rad * interval.sample::<f64, _>(StandardNormal);
        let direction = if interval.gen::<bool>() { 1.0 } else { -1.0 };
        let drift = direction * pn.fibre_drift_rad_per_s * (t - k * period);
        let laser: f64 = pn.laser_variance().sqrt() * rng.sample::<f64, _>(StandardNormal);
        residual + drift + laser
    }

    fn click(&self, rng: &mut Xoshiro256PlusPlus, pulse: u64) -> TfClick {
        let k = pick(&self.cumulative, rng.gen::<f64>() * self.p_any);
        let (a, b) = (k / SETTINGS, k % SETTINGS);
        let m = self.link.model.hw.phase_slices as f64;
        let (ta, tb) = (rng.gen::<f64>() * 2.0 * PI, rng.gen::<f64>() * 2.0 * PI);
        let delta = ta - tb + self.link.key_phase(a) - self.link.key_phase(b)
            + self.phase_error(rng, pulse)
            + self.link.offset_rad;
        let (x, y) = self.link.arriving(a, b);
        let amp = self.link.model.hw.mode_visibility * (x * y).sqrt() * delta.cos();
        let pd = self.link.model.hw.dark_count_probability;
        let dark_plus = (1.0 - pd) * (-((x + y) / 2.0 + amp)).exp();
        let dark_minus = (1.0 - pd) * (-((x + y) / 2.0 - amp)).exp();
        let only_plus = (1.0 - dark_plus) * dark_minus;
        let only_minus = (1.0 - dark_minus) * dark_plus;
        let any = 1.0 - dark_plus * dark_minus;
        let u = rng.gen::<f64>() * any;
        let detector = if u < only_plus {
            0
        } else if u < only_plus + only_minus {
            1
        } else {
            2
        };
        let slice = |t: f64| ((t / (2.0 * PI) * m).floor() as u16).min(m as u16 - 1);
        TfClick {
            pulse,
            detector,
            settings: [a as u8, b as u8],
            slices: [slice(ta), slice(tb)],
        }
    }

    /// The next window at window level: pulses per setting pair (multinomial), single
    /// clicks per pair (binomial at `keyrate`'s gains), and the matched weak-decoy pairs
    /// with their phase errors.
    pub fn step_stats(&mut self) -> TfStats {
        let index = self.windows.take_index();
        self.refresh(index, index * self.windows.pulses_per_window);
        let mut rng = window_rng(self.stats_key, index);
        let sent = self.split_sent(&mut rng, self.windows.pulses_per_window);
        let mut single = [[0; SETTINGS]; SETTINGS];
        for a in 0..SETTINGS {
            for b in 0..SETTINGS {
                single[a][b] = binomial(&mut rng, sent[a][b], self.link.single_click(a, b));
            }
        }
        let m = self.link.model.hw.phase_slices as f64;
        let mut candidates = 0;
        for a in 0..SETTINGS {
            for b in 0..SETTINGS {
                if self.link.matched_pair(a, b) {
                    candidates += sent[a][b];
                }
            }
        }
        let matched = binomial(&mut rng, candidates, 2.0 / m);
        let (g, e) = self.link.matched();
        let clicks = binomial(&mut rng, matched, g);
        let errors = binomial(&mut rng, clicks, if g > 0.0 { e / g } else { 0.0 });
        let (decoy_sent, decoy_clicks) = if self.link.pm {
            let n = binomial(&mut rng, sent[3][3], 2.0 / m);
            (n, binomial(&mut rng, n, self.link.matched_decoy_gain()))
        } else {
            (0, 0)
        };
        TfStats {
            index,
            sent,
            single,
            matched_sent: matched,
            matched_clicks: clicks,
            matched_errors: errors,
            matched_decoy_sent: decoy_sent,
            matched_decoy_clicks: decoy_clicks,
        }
    }
}
