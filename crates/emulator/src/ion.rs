//! Trapped-ion memory link (Liu et al., arXiv:2602.08472; REFERENCE.md §1.5): two memories
//! entangled by the single-photon protocol with heralding at the midpoint, dephasing while
//! stored, measured in CHSH settings for DI-QKD.
//!
//! - Attempts: one every `τ = t_prep + L n_g / c` (preparation, then the photons' trip to
//!   the midpoint and the herald's trip back), each heralding with probability
//!   `p = 2 α η_photon η_fibre(L/2) η_det` (`keyrate::di::MemoryLink::point`). Event level
//!   samples only the successes: geometric numbers of failed attempts between them.
//! - The heralded state is a Werner state of visibility `V = (4F − 1)/3` around the Bell
//!   state the clicking detector announces (ψ⁺ or ψ⁻, equally likely; the sign is
//!   recorded so the parties can correct it).
//! - Storage dephases the memories: the state's coherence (its x and y correlations)
//!   decays as `e^{−t/T_coh}`, its z correlation does not. Fidelity after `t`:
//!   `F(t) = V/2 + (1 − V)/4 + (V/2) e^{−t/T_coh}`.
//! - Measurement after `measure_delay_s` in CHSH settings: Alice `A₀ = Z`, `A₁ = X`; Bob
//!   `B₀,₁ = (Z ± X)/√2` and `B₂ = Z` (key). Correlations `E = V e a_x b_x + V a_z b_z`
//!   (after the sign correction), so `S(t) = √2 V (1 + e^{−t/T_coh})` and the key-basis
//!   error is `(1 − V)/2`.
//! - Deterministic delivery: at every `delivery_period_s` the application gets the
//!   freshest stored pair (memory holds the latest herald); its fidelity is recorded.
//! - Faults (`with_faults`), applied window by window, act on each arm's weight
//!   `w_s = α_s T_s` (bright population times the arm's transmittance factor; side
//!   `alice` is node A's arm, `bob` node B's). A click heralds
//!   `√w_A |↑↓⟩ ± √w_B |↓↑⟩` (normalised), so:
//!   - `p` scales with `(w_A + w_B) / 2α` (a 3 dB step on both arms halves it, a cut of
//!     one arm halves it too);
//!   - the state's coherence (its x and y correlations) is multiplied by
//!     `c = 2√(w_A w_B)/(w_A + w_B)`: 1 for balanced arms, 0 when one arm is cut — the
//!     heralds then come from one memory only and carry z correlations alone, CHSH
//!     `√2 V < 2`, no device-independent key;
//!   - a `pump-drop` (factor `k` on the excitation) lowers `α_s`, hence the rate, and
//!     raises the fidelity: the double excitations that spoil a herald occur with
//!     probability ≈ ᾱ, so the heralded fidelity is taken as
//!     `F(ᾱ) = F₀ (1 − ᾱ)/(1 − α₀)` (capped at 1), `F₀` the scenario's `herald_fidelity`
//!     at its `bright_population` α₀ (first order in α, assumed);
//!   - a cooling cycle of the heralding station's detectors stops the heralds.
//!
//! - Actuators (`IonEmulator::actuators`, read each window): each node's excitation
//!   (scales `α_s` as a pump drop does: fewer heralds, better pairs) and the station's
//!   detector enable.
//!
//!   Correlations of a pair heralded under faults: `E = V c e a_x b_x + V a_z b_z`,
//!   `F(t) = (1 + V + 2 V c e^{−t/T_coh})/4`, `S(t) = √2 V (1 + c e^{−t/T_coh})`.

use crate::faults::{check_kinds, Fault, FaultKind, FaultState};
use crate::streams::{binomial, multinomial, purpose_key, window_rng};
use qkdnet_keyrate::di::{MemoryLink, MemoryLinkPoint};
use qkdnet_optics::{check, ParamError};
use rand::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

/// Emulation settings (`[emulator]` of a `di-memory` scenario).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IonEmulation {
    /// Master seed.
    pub seed: u64,
    /// Storage time between a herald and the CHSH measurement, s.
    pub measure_delay_s: f64,
    /// Period of deterministic delivery to the application, s (0: none).
    pub delivery_period_s: f64,
    /// Probability that a pair is measured in the key setting (Bob `B₂`, Alice `A₀`).
    pub key_fraction: f64,
}

impl Default for IonEmulation {
    fn default() -> Self {
        Self {
            seed: 1,
            measure_delay_s: 0.0,
            delivery_period_s: 1.0,
            key_fraction: 0.5,
        }
    }
}

/// One heralded pair and what became of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Herald {
    /// Herald time, ps from the start.
    pub time_ps: i64,
    /// Attempt number (from 0).
    pub attempt: u64,
    /// Which midpoint detector clicked: 0 (ψ⁺) or 1 (ψ⁻).
    pub detector: u8,
    /// Alice's setting (0, 1).
    pub alice_setting: u8,
    /// Bob's setting (0, 1: CHSH; 2: key).
    pub bob_setting: u8,
    /// Outcomes (±1 as 0/1), after the parties' sign correction.
    pub outcomes: [u8; 2],
}

/// A deterministic delivery.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delivery {
    /// Delivery time, ps.
    pub time_ps: i64,
    /// Age of the delivered pair, s (`None`: no pair heralded yet).
    pub age_s: Option<f64>,
    /// Its fidelity to the announced Bell state (1/4 without a pair).
    pub fidelity: f64,
}

/// Per-window counts at window level.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct IonStats {
    /// Window index.
    pub index: u64,
    /// Attempts.
    pub attempts: u64,
    /// Heralds.
    pub heralds: u64,
    /// CHSH pairs per setting `[a][b]` (b = 0, 1).
    pub chsh_pairs: [[u64; 2]; 2],
    /// Agreeing outcomes per setting.
    pub chsh_agree: [[u64; 2]; 2],
    /// Key-setting pairs.
    pub key_pairs: u64,
    /// Of which disagreeing.
    pub key_errors: u64,
}

impl IonStats {
    /// Adds another window's counts (attempts, heralds, CHSH and key tallies).
    pub fn add(&mut self, o: &IonStats) {
        self.attempts += o.attempts;
        self.heralds += o.heralds;
        self.key_pairs += o.key_pairs;
        self.key_errors += o.key_errors;
        for a in 0..2 {
            for b in 0..2 {
                self.chsh_pairs[a][b] += o.chsh_pairs[a][b];
                self.chsh_agree[a][b] += o.chsh_agree[a][b];
            }
        }
    }

    /// The counts as the DI-QKD bound takes them ([`qkdnet_keyrate::di::di_bound`]).
    pub fn di_counts(&self) -> qkdnet_keyrate::di::DiCounts {
        qkdnet_keyrate::di::DiCounts {
            chsh_rounds: self.chsh_pairs.map(|r| r.map(|n| n as f64)),
            chsh_agree: self.chsh_agree.map(|r| r.map(|n| n as f64)),
            key_rounds: self.key_pairs as f64,
            key_errors: self.key_errors as f64,
        }
    }

    /// The CHSH value from counts: `S = E₀₀ + E₀₁ + E₁₀ − E₁₁`, `E = 2 agree/n − 1`.
    pub fn chsh(&self) -> f64 {
        self.di_counts().chsh()
    }
}

/// What the link runtime can set on an ion link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IonActuators {
    /// Each node's excitation relative to the scenario's (its bright population `α` is
    /// scaled by it, at most 1/2): the rate–fidelity trade of the single-photon protocol.
    pub excitation: [f64; 2],
    /// The heralding station's detectors (off: no heralds).
    pub detectors_enabled: bool,
}

impl Default for IonActuators {
    fn default() -> Self {
        Self {
            excitation: [1.0; 2],
            detectors_enabled: true,
        }
    }
}

/// The pairs heralded under given conditions (see the module's notes on faults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeraldState {
    /// Success probability per attempt.
    pub success_probability: f64,
    /// Werner visibility `V = (4F − 1)/3` of the heralded state.
    pub visibility: f64,
    /// Factor on the state's coherence from unbalanced arms, `2√(w_A w_B)/(w_A + w_B)`.
    pub coherence: f64,
    /// Memory coherence time, s.
    pub coherence_time_s: f64,
}

impl HeraldState {
    fn decay(&self, t_s: f64) -> f64 {
        self.coherence * (-t_s / self.coherence_time_s).exp()
    }

    /// Fidelity to the announced Bell state after storing for `t_s`:
    /// `(1 + V + 2 V c e^{−t/T_coh})/4`.
    pub fn fidelity_after(&self, t_s: f64) -> f64 {
        (1.0 + self.visibility + 2.0 * self.visibility * self.decay(t_s)) / 4.0
    }

    /// CHSH value after storing for `t_s`: `√2 V (1 + c e^{−t/T_coh})`.
    pub fn chsh_after(&self, t_s: f64) -> f64 {
        std::f64::consts::SQRT_2 * self.visibility * (1.0 + self.decay(t_s))
    }

    /// Key-setting error probability `(1 − V)/2` (z correlations do not dephase).
    pub fn key_error(&self) -> f64 {
        (1.0 - self.visibility) / 2.0
    }

    /// Agreement probability of CHSH setting `(a, b)` (b = 2: the key setting) after
    /// storing for `t_s`.
    pub fn agree_probability(&self, a: usize, b: usize, t_s: f64) -> f64 {
        let r = std::f64::consts::FRAC_1_SQRT_2;
        // Unit vectors (x, z): A₀ = Z, A₁ = X; B₀ = (X + Z)/√2, B₁ = (Z − X)/√2, B₂ = Z.
        let av = [(0.0, 1.0), (1.0, 0.0)][a];
        let bv = [(r, r), (-r, r), (0.0, 1.0)][b];
        let corr = self.visibility * (self.decay(t_s) * av.0 * bv.0 + av.1 * bv.1);
        (1.0 + corr) / 2.0
    }
}

/// A validated ion memory link.
#[derive(Debug, Clone)]
pub struct IonLink {
    hw: MemoryLink,
    loss_db: f64,
    length_km: f64,
    emu: IonEmulation,
    point: MemoryLinkPoint,
    faults: Vec<Fault>,
}

impl IonLink {
    /// Builds and validates a link of total fibre loss `loss_db` over `length_km`.
    pub fn new(
        hw: MemoryLink,
        loss_db: f64,
        length_km: f64,
        emu: IonEmulation,
    ) -> Result<Self, ParamError> {
        hw.validate()?;
        check("channel.loss_db", loss_db, 0.0, 200.0)?;
        check("channel.distance_km", length_km, 0.0, 20_000.0)?;
        check("emulator.measure_delay_s", emu.measure_delay_s, 0.0, 1e4)?;
        check(
            "emulator.delivery_period_s",
            emu.delivery_period_s,
            0.0,
            1e6,
        )?;
        check("emulator.key_fraction", emu.key_fraction, 0.0, 1.0)?;
        let point = hw.point(loss_db, length_km);
        Ok(Self {
            hw,
            loss_db,
            length_km,
            emu,
            point,
            faults: Vec::new(),
        })
    }

    /// The link with a fault schedule (see the module's notes): fibre cuts and loss steps
    /// on either arm or both, excitation (pump) drops at either node, cooling cycles of
    /// the heralding station's detectors.
    pub fn with_faults(mut self, faults: Vec<Fault>) -> Result<Self, ParamError> {
        check_kinds(
            &faults,
            &[
                FaultKind::FibreCut,
                FaultKind::LossStep,
                FaultKind::DetectorCooling,
                FaultKind::PumpDrop,
            ],
            "the ion memory link",
        )?;
        self.faults = faults;
        Ok(self)
    }

    /// The emulation settings.
    pub fn emulation(&self) -> &IonEmulation {
        &self.emu
    }

    /// The pairs heralded while the faults in force at `t_s` hold (actuators at rest).
    pub fn herald_state_at(&self, t_s: f64) -> HeraldState {
        self.herald_state(t_s, &IonActuators::default())
    }

    /// The pairs heralded at `t_s` under the faults then in force and the actuators'
    /// settings: each node's excitation scales its bright population (capped at 1/2), and
    /// the station's detectors count only when enabled.
    pub fn herald_state(&self, t_s: f64, act: &IonActuators) -> HeraldState {
        let st = FaultState::at(&self.faults, t_s);
        let a0 = self.hw.bright_population;
        let alpha = [
            (a0 * st.source[0] * act.excitation[0].max(0.0)).min(0.5),
            (a0 * st.source[1] * act.excitation[1].max(0.0)).min(0.5),
        ];
        let w = [
            alpha[0] * st.transmittance[0],
            alpha[1] * st.transmittance[1],
        ];
        let on = st.detectors_on[0] && st.detectors_on[1] && act.detectors_enabled;
        let sum = w[0] + w[1];
        let success_probability = if on && a0 > 0.0 {
            (self.point.success_probability * sum / (2.0 * a0)).min(1.0)
        } else {
            0.0
        };
        let coherence = if sum > 0.0 {
            2.0 * (w[0] * w[1]).sqrt() / sum
        } else {
            0.0
        };
        let mean_alpha = 0.5 * (alpha[0] + alpha[1]);
        let fidelity = if a0 < 1.0 {
            (self.hw.herald_fidelity * (1.0 - mean_alpha) / (1.0 - a0)).min(1.0)
        } else {
            self.hw.herald_fidelity
        };
        HeraldState {
            success_probability,
            visibility: (4.0 * fidelity - 1.0) / 3.0,
            coherence,
            coherence_time_s: self.hw.coherence_time_s,
        }
    }

    /// The pairs heralded without faults.
    pub fn nominal_state(&self) -> HeraldState {
        HeraldState {
            success_probability: self.point.success_probability,
            visibility: (4.0 * self.hw.herald_fidelity - 1.0) / 3.0,
            coherence: 1.0,
            coherence_time_s: self.hw.coherence_time_s,
        }
    }

    /// The fault schedule.
    pub fn faults(&self) -> &[Fault] {
        &self.faults
    }

    /// Success probability per attempt while the faults in force at `t_s` hold.
    pub fn success_probability_at(&self, t_s: f64) -> f64 {
        self.herald_state_at(t_s).success_probability
    }

    /// The forward model's operating point (attempt rate, success probability, η_link).
    pub fn point(&self) -> MemoryLinkPoint {
        self.point
    }

    /// The hardware.
    pub fn hardware(&self) -> &MemoryLink {
        &self.hw
    }

    /// Channel loss, dB, and length, km.
    pub fn channel(&self) -> (f64, f64) {
        (self.loss_db, self.length_km)
    }

    /// Fidelity after storing a pair heralded without faults for `t_s`.
    pub fn fidelity_after(&self, t_s: f64) -> f64 {
        self.nominal_state().fidelity_after(t_s)
    }

    /// CHSH value after storing for `t_s`: `√2 V (1 + e^{−t/T_coh})`.
    pub fn chsh_after(&self, t_s: f64) -> f64 {
        self.nominal_state().chsh_after(t_s)
    }

    /// Key-setting error probability `(1 − V)/2`.
    pub fn key_error(&self) -> f64 {
        self.nominal_state().key_error()
    }

    /// Agreement probability of CHSH setting `(a, b)` after storing for `t_s`.
    pub fn agree_probability(&self, a: usize, b: usize, t_s: f64) -> f64 {
        self.nominal_state().agree_probability(a, b, t_s)
    }

    /// Expected mean fidelity of deterministic delivery when the memory always holds the
    /// latest herald: the pair's age is exponential with the herald rate `r` (successes are
    /// rare per attempt), so `E[F] = V/2 + (1 − V)/4 + (V/2) η/(1 + η)` with
    /// `η = r T_coh = η_link`.
    pub fn expected_delivery_fidelity(&self) -> f64 {
        let v = self.nominal_state().visibility;
        let eta = self.point.eta_link;
        v / 2.0 + (1.0 - v) / 4.0 + v / 2.0 * eta / (1.0 + eta)
    }
}

/// A running ion-link emulation.
#[derive(Debug, Clone)]
pub struct IonEmulator {
    /// What the runtime sets; read at the start of each window.
    pub actuators: IonActuators,
    link: IonLink,
    window_s: f64,
    next_index: u64,
    keys: [u64; 2],
    /// Attempt counter and time of the next attempt's herald (ps), event level.
    attempt: u64,
    /// The latest herald: its time (ps) and the state it heralded.
    last_herald: Option<(i64, HeraldState)>,
    next_delivery_ps: i64,
}

/// What one event-level window produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IonWindow {
    /// Window index.
    pub index: u64,
    /// Heralds in the window.
    pub heralds: Vec<Herald>,
    /// Deliveries in the window.
    pub deliveries: Vec<Delivery>,
}

impl IonEmulator {
    /// An emulation in windows of `window_s` seconds.
    pub fn new(link: IonLink, window_s: f64) -> Result<Self, ParamError> {
        check("window_s", window_s, 1e-6, 1e6)?;
        let key = |p: &str| purpose_key(link.emu.seed, "emulator/ion", p);
        let period = (link.emu.delivery_period_s * 1e12).round() as i64;
        Ok(Self {
            actuators: IonActuators::default(),
            keys: [key("events"), key("stats")],
            link,
            window_s,
            next_index: 0,
            attempt: 0,
            last_herald: None,
            next_delivery_ps: if period > 0 { period } else { i64::MAX },
        })
    }

    /// The link.
    pub fn link(&self) -> &IonLink {
        &self.link
    }

    fn attempt_ps(&self) -> f64 {
        1e12 / self.link.point.attempt_rate_hz
    }

    fn measure(&self, rng: &mut Xoshiro256PlusPlus, state: &HeraldState) -> (u8, u8, [u8; 2]) {
        let t = self.link.emu.measure_delay_s;
        let key = rng.gen::<f64>() < self.link.emu.key_fraction;
        let (a, b) = if key {
            (0usize, 2usize)
        } else {
            (rng.gen_range(0..2), rng.gen_range(0..2))
        };
        let x = rng.gen::<bool>() as u8;
        let agree = rng.gen::<f64>() < state.agree_probability(a, b, t);
        let y = if agree { x } else { 1 - x };
        (a as u8, b as u8, [x, y])
    }

    /// The next window at event level: only successful attempts are drawn (geometric
    /// gaps), then their measurements and the window's deliveries.
    pub fn step_events(&mut self) -> IonWindow {
        let index = self.next_index;
        self.next_index += 1;
        let mut rng = window_rng(self.keys[0], index);
        let end_ps = ((index + 1) as f64 * self.window_s * 1e12).round() as i64;
        let tau = self.attempt_ps();
        let state = self
            .link
            .herald_state(index as f64 * self.window_s, &self.actuators);
        let p = state.success_probability;
        let mut out = IonWindow {
            index,
            ..IonWindow::default()
        };
        let period = (self.link.emu.delivery_period_s * 1e12).round() as i64;
        loop {
            // Failed attempts before the next success: geometric, by inversion.
            let u: f64 = rng.gen::<f64>().max(f64::MIN_POSITIVE);
            let fails = if p <= 0.0 {
                // No herald can come (a cut, the station's detectors warming): the window's
                // attempts all fail.
                u64::MAX / 2
            } else if p >= 1.0 {
                0
            } else {
                (u.ln() / (1.0 - p).ln()).floor() as u64
            };
            let attempt = self.attempt + fails;
            let herald_ps = ((attempt + 1) as f64 * tau).round() as i64;
            if herald_ps >= end_ps {
                // The window ends first: its attempts are spent, draw afresh next window
                // (memoryless, so this is exact).
                let mut k0 = ((end_ps as f64 / tau).ceil() as u64).saturating_sub(1);
                if (((k0 + 1) as f64) * tau).round() < end_ps as f64 {
                    k0 += 1;
                }
                self.attempt = k0.max(self.attempt);
                break;
            }
            self.emit_deliveries(&mut out, herald_ps, period);
            let (a, b, outcomes) = self.measure(&mut rng, &state);
            out.heralds.push(Herald {
                time_ps: herald_ps,
                attempt,
                detector: rng.gen::<bool>() as u8,
                alice_setting: a,
                bob_setting: b,
                outcomes,
            });
            self.last_herald = Some((herald_ps, state));
            self.attempt = attempt + 1;
        }
        self.emit_deliveries(&mut out, end_ps, period);
        out
    }

    fn emit_deliveries(&mut self, out: &mut IonWindow, until_ps: i64, period: i64) {
        while period > 0 && self.next_delivery_ps < until_ps {
            let t = self.next_delivery_ps;
            let held = self
                .last_herald
                .map(|(h, state)| ((t - h) as f64 * 1e-12, state));
            out.deliveries.push(Delivery {
                time_ps: t,
                age_s: held.map(|(age, _)| age),
                fidelity: held.map_or(0.25, |(age, state)| state.fidelity_after(age)),
            });
            self.next_delivery_ps += period;
        }
    }

    /// The next window at window level: attempts, heralds (binomial) and the CHSH and key
    /// counts (binomial per setting) from the same closed forms.
    pub fn step_stats(&mut self) -> IonStats {
        let index = self.next_index;
        self.next_index += 1;
        let mut rng = window_rng(self.keys[1], index);
        let attempts = (self.window_s * self.link.point.attempt_rate_hz).round() as u64;
        let state = self
            .link
            .herald_state(index as f64 * self.window_s, &self.actuators);
        let heralds = binomial(&mut rng, attempts, state.success_probability);
        let key_pairs = binomial(&mut rng, heralds, self.link.emu.key_fraction);
        let t = self.link.emu.measure_delay_s;
        let mut s = IonStats {
            index,
            attempts,
            heralds,
            key_pairs,
            key_errors: binomial(&mut rng, key_pairs, state.key_error()),
            ..IonStats::default()
        };
        // The CHSH pairs over the four settings, equally likely.
        let split = multinomial(&mut rng, heralds - key_pairs, &[0.25; 4]);
        for a in 0..2 {
            for b in 0..2 {
                let n = split[2 * a + b];
                s.chsh_pairs[a][b] = n;
                s.chsh_agree[a][b] = binomial(&mut rng, n, state.agree_probability(a, b, t));
            }
        }
        s
    }
}

/// Tallies event-level heralds into window-level counts (what a DI-QKD test computes).
pub fn tally(heralds: &[Herald]) -> IonStats {
    let mut s = IonStats::default();
    for h in heralds {
        s.heralds += 1;
        let agree = h.outcomes[0] == h.outcomes[1];
        if h.bob_setting == 2 {
            s.key_pairs += 1;
            s.key_errors += (!agree) as u64;
        } else {
            let (a, b) = (h.alice_setting as usize, h.bob_setting as usize);
            s.chsh_pairs[a][b] += 1;
            s.chsh_agree[a][b] += agree as u64;
        }
    }
    s
}
