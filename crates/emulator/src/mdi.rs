//! Measurement-device-independent QKD with polarisation-encoded weak coherent pulses (the
//! baseline of the twin-field systems; Lo, Curty, Qi, PRL 108, 130503 (2012); the channel
//! model of Ma & Razavi, PRA 86, 062319 (2012) that `keyrate::mdi` uses).
//!
//! Each user sends, per pulse, a phase-randomised coherent state: Z basis with probability
//! `p_z` at intensity `s` (bit 0 = H, 1 = V), else X basis (bit 0 = D, 1 = A) at one of
//! `{0, ν, μ}` with equal probability. Bob's polarisation arrives rotated by the
//! misalignment angle `θ`. A rotation `θ` of one arm gives a ψ⁻ error rate of about
//! `2 sin²θ` at low intensities (the rotated photon's wrong component pairs with either
//! of the other's), so `sin²θ = e_d/2` makes `e_d` the misalignment error, as `keyrate`
//! means it. The relay's beam splitter mixes the fields
//! (`c = (α + β)/√2`, `d = (α − β)/√2`) and polarising beam splitters send each output's H
//! and V to four detectors (`cH, cV, dH, dV`), each dark with probability
//! `(1 − p_d) e^{−I}`. A projection on ψ⁻ is exactly two clicks, `cH & dV` or `cV & dH`;
//! the users' bits are then anticorrelated in both bases, so Bob flips his.
//!
//! Any-click probability `1 − (1 − p_d)⁴ e^{−(η_A μ_A + η_B μ_B)}` does not depend on the
//! phases: event level draws the clicking pulses directly, their states in proportion,
//! the phase difference, then the four detectors conditioned on at least one click.
//!
//! With `e_d = 0` this model's ψ⁻ gains are Ma & Razavi's Eqs. (B3)–(B9) exactly (tested);
//! their `e_d` is phenomenological (an error-gain mixture), ours a physical rotation, so
//! the two differ slightly when it is not 0.

// Per-window counts are indexed by (Alice's state, Bob's state) throughout.
#![allow(clippy::needless_range_loop)]

use crate::faults::{Fault, FaultState, RelayArms};
use crate::streams::{
    binomial, multinomial, pick, purpose_key, successes, walk_step, PulseWindow, PulseWindows,
};
use qkdnet_keyrate::mdi::Mdi;
use qkdnet_optics::{check, ParamError};
use rand::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// States per user: Z bit 0/1 at `s`, then X intensity 0, ν, μ each with bit 0/1.
pub const STATES: usize = 8;

/// Emulation settings (`[emulator]` of an `mdi` scenario).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MdiEmulation {
    /// Master seed.
    pub seed: u64,
    /// Random walk of Bob's polarisation frame against Alice's at the relay, rad/√s (0:
    /// the hardware's fixed misalignment alone). Bob's polarisation controller
    /// ([`MdiActuators`]) takes it back.
    pub polarisation_drift_rad_per_sqrt_s: f64,
}

impl Default for MdiEmulation {
    fn default() -> Self {
        Self {
            seed: 1,
            polarisation_drift_rad_per_sqrt_s: 0.0,
        }
    }
}

/// What the link runtime sets on an MDI link (applied from the next window).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MdiActuators {
    /// Bob's polarisation controller, rad (subtracted from the drifted frame).
    pub polarisation_rad: f64,
}

/// A user's state: basis (0 Z, 1 X), bit, and intensity index (Z: 0 = `s`; X: 0 = vacuum,
/// 1 = ν, 2 = μ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// Basis.
    pub basis: u8,
    /// Bit.
    pub bit: u8,
    /// Intensity index.
    pub intensity: u8,
}

impl State {
    /// State number `i` of [`STATES`].
    pub fn from_index(i: usize) -> Self {
        if i < 2 {
            State {
                basis: 0,
                bit: i as u8,
                intensity: 0,
            }
        } else {
            State {
                basis: 1,
                bit: ((i - 2) % 2) as u8,
                intensity: ((i - 2) / 2) as u8,
            }
        }
    }

    /// The state's index.
    pub fn index(self) -> usize {
        if self.basis == 0 {
            self.bit as usize
        } else {
            2 + 2 * self.intensity as usize + self.bit as usize
        }
    }
}

/// A relay event with both users' logs of the pulse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MdiClick {
    /// Pulse number.
    pub pulse: u64,
    /// Detectors that clicked: bit 0 cH, 1 cV, 2 dH, 3 dV.
    pub detectors: u8,
    /// Alice's and Bob's state indices.
    pub states: [u8; 2],
}

impl MdiClick {
    /// Whether the relay announces ψ⁻ (exactly `cH & dV` or `cV & dH`).
    pub fn psi_minus(&self) -> bool {
        self.detectors == 0b1001 || self.detectors == 0b0110
    }

    /// Whether the relay announces ψ⁺ (exactly `cH & cV` or `dH & dV`).
    pub fn psi_plus(&self) -> bool {
        self.detectors == 0b0011 || self.detectors == 0b1100
    }
}

/// One window of records.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MdiWindow {
    /// Window index.
    pub index: u64,
    /// First pulse.
    pub first_pulse: u64,
    /// Pulses.
    pub pulses: u64,
    /// Pulses sent per state pair `[alice][bob]`.
    pub sent: [[u64; STATES]; STATES],
    /// Relay events (any click), in pulse order.
    pub clicks: Vec<MdiClick>,
}

/// A validated MDI link.
#[derive(Debug, Clone)]
pub struct MdiLink {
    hw: Mdi,
    loss_db: f64,
    emu: MdiEmulation,
    /// The two arms and their faults.
    arms: RelayArms,
    theta: f64,
    /// Rotation of Bob's frame in force (drift minus actuator), rad, on top of `theta`.
    rotation_rad: f64,
}

const PHASE_NODES: usize = 96;

impl MdiLink {
    /// Builds and validates a link of total loss `loss_db` through the relay.
    pub fn new(hw: Mdi, loss_db: f64, emu: MdiEmulation) -> Result<Self, ParamError> {
        hw.validate()?;
        check("channel.loss_db", loss_db, 0.0, 200.0)?;
        let (ea, eb) = hw.arms(loss_db);
        Ok(Self {
            theta: (hw.misalignment / 2.0).sqrt().asin(),
            hw,
            loss_db,
            emu,
            arms: RelayArms::new([ea, eb]),
            rotation_rad: 0.0,
        })
    }

    /// The link with Bob's polarisation frame rotated by `rotation_rad` more.
    pub fn with_rotation(&self, rotation_rad: f64) -> Self {
        let mut l = self.clone();
        l.rotation_rad = rotation_rad;
        l
    }

    /// The link with a fault schedule (see [`RelayArms::with_faults`]).
    pub fn with_faults(mut self, faults: Vec<Fault>) -> Result<Self, ParamError> {
        self.arms = self.arms.with_faults(faults, "MDI")?;
        Ok(self)
    }

    /// The link as it is while `st` holds (arriving intensities scaled, relay on or off).
    pub fn under(&self, st: &FaultState) -> Self {
        let mut l = self.clone();
        l.arms = self.arms.under(st);
        l
    }

    /// The hardware.
    pub fn hardware(&self) -> &Mdi {
        &self.hw
    }

    /// Channel loss, dB.
    pub fn loss_db(&self) -> f64 {
        self.loss_db
    }

    /// Probability and intensity of state `i` for one user.
    pub fn state(&self, i: usize) -> (f64, f64) {
        let st = State::from_index(i);
        let h = &self.hw;
        if st.basis == 0 {
            (h.p_z / 2.0, h.signal)
        } else {
            let mu = [0.0, h.decoy_weak, h.decoy_strong][st.intensity as usize];
            ((1.0 - h.p_z) / 6.0, mu)
        }
    }

    fn polarisation(&self, i: usize, rotate: bool) -> (f64, f64) {
        let st = State::from_index(i);
        let angle = match (st.basis, st.bit) {
            (0, 0) => 0.0,
            (0, _) => PI / 2.0,
            (_, 0) => PI / 4.0,
            _ => -PI / 4.0,
        } + if rotate {
            self.theta + self.rotation_rad
        } else {
            0.0
        };
        (angle.cos(), angle.sin())
    }

    /// Mean photon numbers at `cH, cV, dH, dV` for states `(a, b)` and phase difference φ.
    fn intensities(&self, a: usize, b: usize, phi: f64) -> [f64; 4] {
        let (xa, xb) = (
            self.arms.eta[0] * self.state(a).1,
            self.arms.eta[1] * self.state(b).1,
        );
        let (ah, av) = self.polarisation(a, false);
        let (bh, bv) = self.polarisation(b, true);
        let (sa, sb) = (xa.sqrt(), xb.sqrt());
        let c = phi.cos();
        // |(√a e^{iφ} u + √b v)/√2|² per component = (a u² + b v² ± 2√(ab) u v cos φ)/2.
        let port = |u: f64, v: f64, sign: f64| {
            0.5 * (xa * u * u + xb * v * v + sign * 2.0 * sa * sb * u * v * c)
        };
        [
            port(ah, bh, 1.0).max(0.0),
            port(av, bv, 1.0).max(0.0),
            port(ah, bh, -1.0).max(0.0),
            port(av, bv, -1.0).max(0.0),
        ]
    }

    /// Probability that anything clicks for states `(a, b)`.
    pub fn any_click(&self, a: usize, b: usize) -> f64 {
        if !self.arms.on {
            return 0.0;
        }
        let pd = self.hw.dark_count_probability;
        let (xa, xb) = (
            self.arms.eta[0] * self.state(a).1,
            self.arms.eta[1] * self.state(b).1,
        );
        1.0 - (1.0 - pd).powi(4) * (-(xa + xb)).exp()
    }

    /// ψ⁻ probability for states `(a, b)`, averaged over the uniform phase difference
    /// (trapezoid rule on the periodic integrand, exact to rounding at 96 nodes for these
    /// smooth functions).
    pub fn psi_minus(&self, a: usize, b: usize) -> f64 {
        self.bell(a, b, [0b1001, 0b0110])
    }

    /// ψ⁺ probability for states `(a, b)` (exactly `cH & cV` or `dH & dV`), as
    /// [`MdiLink::psi_minus`].
    pub fn psi_plus(&self, a: usize, b: usize) -> f64 {
        self.bell(a, b, [0b0011, 0b1100])
    }

    /// Probability that exactly the detectors of one of `masks` click.
    fn bell(&self, a: usize, b: usize, masks: [u8; 2]) -> f64 {
        if !self.arms.on {
            return 0.0;
        }
        let pd = self.hw.dark_count_probability;
        let mut sum = 0.0;
        for k in 0..PHASE_NODES {
            let phi = 2.0 * PI * k as f64 / PHASE_NODES as f64;
            let i = self.intensities(a, b, phi);
            let dark: [f64; 4] = core::array::from_fn(|j| (1.0 - pd) * (-i[j]).exp());
            for m in masks {
                sum += (0..4)
                    .map(|j| {
                        if m >> j & 1 == 1 {
                            1.0 - dark[j]
                        } else {
                            dark[j]
                        }
                    })
                    .product::<f64>();
            }
        }
        sum / PHASE_NODES as f64
    }
}

/// A running MDI emulation.
#[derive(Debug, Clone)]
pub struct MdiEmulator {
    /// What the link runtime sets (applied from the next window).
    pub actuators: MdiActuators,
    /// Bob's frame's accumulated drift, rad.
    drift_rad: f64,
    drift_key: u64,
    /// The link with its fault schedule.
    base: MdiLink,
    /// The fault state of the current window, and the link under it.
    state: FaultState,
    link: MdiLink,
    windows: PulseWindows,
    cumulative: [f64; STATES * STATES],
    p_any: f64,
}

impl MdiEmulator {
    /// An emulation in windows of `window_s` seconds of pulses.
    pub fn new(link: MdiLink, window_s: f64) -> Result<Self, ParamError> {
        let windows = PulseWindows::new(window_s, link.hw.clock_hz, link.emu.seed, "emulator/mdi")?;
        let mut e = Self {
            actuators: MdiActuators::default(),
            drift_rad: 0.0,
            drift_key: purpose_key(link.emu.seed, "emulator/mdi", "drift"),
            state: FaultState::CLEAR,
            link: link.under(&FaultState::CLEAR),
            base: link,
            windows,
            cumulative: [0.0; STATES * STATES],
            p_any: 0.0,
        };
        e.prepare();
        Ok(e)
    }

    /// The click weights of the current link.
    fn prepare(&mut self) {
        let mut acc = 0.0;
        for a in 0..STATES {
            for b in 0..STATES {
                acc += self.link.state(a).0 * self.link.state(b).0 * self.link.any_click(a, b);
                self.cumulative[a * STATES + b] = acc;
            }
        }
        self.p_any = acc;
    }

    /// Applies the faults in force at pulse `first` (window `index`'s first pulse) and
    /// the frame rotation (drift minus actuator), then advances the drift past the window.
    fn refresh(&mut self, index: u64, first: u64) {
        let st = FaultState::at(
            self.base.arms.faults(),
            first as f64 / self.base.hw.clock_hz,
        );
        let rotation = self.drift_rad - self.actuators.polarisation_rad;
        if st != self.state {
            self.state = st;
            self.link = self.base.under(&st).with_rotation(rotation);
            self.prepare();
        } else if rotation != self.link.rotation_rad {
            // Click probabilities do not depend on polarisation: only the link moves.
            self.link = self.link.with_rotation(rotation);
        }
        self.drift_rad += walk_step(
            self.drift_key,
            index,
            self.base.emu.polarisation_drift_rad_per_sqrt_s,
            self.windows.pulses_per_window as f64 / self.base.hw.clock_hz,
        );
    }

    /// The link.
    pub fn link(&self) -> &MdiLink {
        &self.link
    }

    /// Starts the next window at either level: its faults and rotation applied, the pulse
    /// pairs sent per state pair drawn; the window's index, pulse range, event generator
    /// and sent counts.
    fn begin_window(&mut self) -> (u64, u64, u64, Xoshiro256PlusPlus, [[u64; STATES]; STATES]) {
        let PulseWindow {
            index,
            first,
            end,
            clicks_rng,
            mut sent_rng,
        } = self.windows.next_window();
        self.refresh(index, first);
        let p: Vec<f64> = (0..STATES * STATES)
            .map(|k| self.link.state(k / STATES).0 * self.link.state(k % STATES).0)
            .collect();
        let counts = multinomial(&mut sent_rng, end - first, &p);
        let sent = core::array::from_fn(|a| core::array::from_fn(|b| counts[a * STATES + b]));
        (index, first, end, clicks_rng, sent)
    }

    /// The next window at event level.
    pub fn step_events(&mut self) -> MdiWindow {
        let (index, first, end, mut rng, sent) = self.begin_window();
        let mut clicks = Vec::new();
        successes(&mut rng, first, end, self.p_any, |rng, pulse| {
            clicks.push(self.click(rng, pulse));
        });
        MdiWindow {
            index,
            first_pulse: first,
            pulses: end - first,
            sent,
            clicks,
        }
    }

    fn click(&self, rng: &mut Xoshiro256PlusPlus, pulse: u64) -> MdiClick {
        let k = pick(&self.cumulative, rng.gen::<f64>() * self.p_any);
        let (a, b) = (k / STATES, k % STATES);
        let phi = rng.gen::<f64>() * 2.0 * PI;
        let i = self.link.intensities(a, b, phi);
        let pd = self.link.hw.dark_count_probability;
        let p: [f64; 4] = core::array::from_fn(|j| 1.0 - (1.0 - pd) * (-i[j]).exp());
        // Four independent clicks conditioned on at least one: until the first click,
        // detector j clicks with p_j / P(some click among j..4).
        let mut mask = 0u8;
        for j in 0..4 {
            let q = if mask == 0 {
                let none_rest: f64 = p[j..].iter().map(|x| 1.0 - x).product();
                p[j] / (1.0 - none_rest)
            } else {
                p[j]
            };
            if rng.gen::<f64>() < q {
                mask |= 1 << j;
            }
        }
        MdiClick {
            pulse,
            detectors: mask,
            states: [a as u8, b as u8],
        }
    }
}

/// One window at window level: pulse pairs sent and ψ⁻ events per state pair.
#[derive(Debug, Clone, PartialEq)]
pub struct MdiStats {
    /// Window index.
    pub index: u64,
    /// Pulses in the window.
    pub pulses: u64,
    /// Pulse pairs sent per state pair.
    pub sent: [[u64; STATES]; STATES],
    /// ψ⁻ events per state pair.
    pub psi: [[u64; STATES]; STATES],
    /// ψ⁺ events per state pair.
    pub psi_plus: [[u64; STATES]; STATES],
}

impl MdiEmulator {
    /// The next window at window level: the pairs sent drawn as at event level, the ψ⁻
    /// events of each state pair binomial with the closed form [`MdiLink::psi_minus`]
    /// under the window's faults and frame rotation.
    pub fn step_stats(&mut self) -> MdiStats {
        let (index, first, end, mut rng, sent) = self.begin_window();
        // ψ⁻ and ψ⁺ exclude each other: ψ⁻ from the pairs, ψ⁺ from those left.
        let mut psi = [[0; STATES]; STATES];
        let mut psi_plus = [[0; STATES]; STATES];
        for a in 0..STATES {
            for b in 0..STATES {
                let (pm, pp) = (self.link.psi_minus(a, b), self.link.psi_plus(a, b));
                psi[a][b] = binomial(&mut rng, sent[a][b], pm);
                let rest = (pp / (1.0 - pm)).clamp(0.0, 1.0);
                psi_plus[a][b] = binomial(&mut rng, sent[a][b] - psi[a][b], rest);
            }
        }
        MdiStats {
            index,
            pulses: end - first,
            sent,
            psi,
            psi_plus,
        }
    }
}

/// ψ⁺ events per state pair of a window.
pub fn psi_plus_counts(w: &MdiWindow) -> [[u64; STATES]; STATES] {
    let mut n = [[0; STATES]; STATES];
    for c in w.clicks.iter().filter(|c| c.psi_plus()) {
        n[c.states[0] as usize][c.states[1] as usize] += 1;
    }
    n
}

/// ψ⁻ events per state pair of a window.
pub fn psi_minus_counts(w: &MdiWindow) -> [[u64; STATES]; STATES] {
    let mut n = [[0; STATES]; STATES];
    for c in w.clicks.iter().filter(|c| c.psi_minus()) {
        n[c.states[0] as usize][c.states[1] as usize] += 1;
    }
    n
}

/// A window's counts as the MDI bound takes them (`keyrate::mdi::mdi_bound`, whose gains
/// count both Bell-state announcements): pulse pairs sent and ψ⁻ and ψ⁺ events, the Z basis
/// at the signal and the X basis by intensity pair (vacuum, ν, μ). Errors: in Z both Bell
/// states anticorrelate the bits (Bob flips his), so equal bits are errors; in X ψ⁻
/// anticorrelates and ψ⁺ correlates them.
pub fn counts(w: &MdiWindow) -> qkdnet_keyrate::mdi::MdiCounts {
    counts_of(&w.sent, &psi_minus_counts(w), &psi_plus_counts(w))
}

/// [`counts`] from pairs sent and ψ⁻ and ψ⁺ events per state pair (either level).
pub fn counts_of(
    sent: &[[u64; STATES]; STATES],
    minus: &[[u64; STATES]; STATES],
    plus: &[[u64; STATES]; STATES],
) -> qkdnet_keyrate::mdi::MdiCounts {
    let mut c = qkdnet_keyrate::mdi::MdiCounts::default();
    for a in 0..2 {
        for b in 0..2 {
            c.z_sent += sent[a][b] as f64;
            c.z_clicks += (minus[a][b] + plus[a][b]) as f64;
            if a == b {
                c.z_errors += (minus[a][b] + plus[a][b]) as f64;
            }
        }
    }
    for i in 0..3 {
        for j in 0..3 {
            for ba in 0..2 {
                for bb in 0..2 {
                    let (x, y) = (2 + 2 * i + ba, 2 + 2 * j + bb);
                    c.x_sent[i][j] += sent[x][y] as f64;
                    c.x_clicks[i][j] += (minus[x][y] + plus[x][y]) as f64;
                    c.x_errors[i][j] += if ba == bb { minus[x][y] } else { plus[x][y] } as f64;
                }
            }
        }
    }
    c
}

/// The users' Z-basis error rate among ψ⁻ events (Bob flips his bit): the fraction with
/// equal bits.
pub fn qber_z(psi: &[[u64; STATES]; STATES]) -> f64 {
    let err = psi[0][0] + psi[1][1];
    let ok = psi[0][1] + psi[1][0];
    err as f64 / (err + ok).max(1) as f64
}
