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
//! - Faults (`with_faults`), applied window by window: a fibre cut or loss step on both
//!   arms (side `both`) scales each photon's transmittance, so `p` by the arm factor; a
//!   cooling cycle of the heralding station's detectors stops the heralds. One-arm faults
//!   are refused: heralds would then come from one memory only, a state this model does not
//!   describe. Pump drops are refused: the excitation's bright population also sets the
//!   heralded fidelity, which the model takes as given.

use crate::faults::{check_kinds, Fault, FaultKind, FaultState, Side};
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
    /// The CHSH value from counts: `S = E₀₀ + E₀₁ + E₁₀ − E₁₁`, `E = 2 agree/n − 1`.
    pub fn chsh(&self) -> f64 {
        let e = |a: usize, b: usize| {
            let n = self.chsh_pairs[a][b];
            if n == 0 {
                0.0
            } else {
                2.0 * self.chsh_agree[a][b] as f64 / n as f64 - 1.0
            }
        };
        e(0, 0) + e(0, 1) + e(1, 0) - e(1, 1)
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
    /// on both arms, cooling cycles of the heralding station's detectors.
    pub fn with_faults(mut self, faults: Vec<Fault>) -> Result<Self, ParamError> {
        check_kinds(
            &faults,
            &[
                FaultKind::FibreCut,
                FaultKind::LossStep,
                FaultKind::DetectorCooling,
            ],
            "the ion memory link",
        )?;
        for (i, f) in faults.iter().enumerate() {
            if matches!(f.kind, FaultKind::FibreCut | FaultKind::LossStep) && f.side != Side::Both {
                return Err(ParamError {
                    field: format!("fault[{i}].side"),
                    reason: format!(
                        "{:?} on side {:?}: heralds from one memory only are not modelled; give side both",
                        f.kind, f.side
                    ),
                });
            }
        }
        self.faults = faults;
        Ok(self)
    }

    /// The fault schedule.
    pub fn faults(&self) -> &[Fault] {
        &self.faults
    }

    /// Success probability per attempt while the faults in force at `t_s` hold.
    pub fn success_probability_at(&self, t_s: f64) -> f64 {
        let st = FaultState::at(&self.faults, t_s);
        if !(st.detectors_on[0] && st.detectors_on[1]) {
            return 0.0;
        }
        // Both arms carry the same factor (side both): each photon's transmittance.
        self.point.success_probability * st.transmittance[0].min(st.transmittance[1])
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

    fn visibility(&self) -> f64 {
        (4.0 * self.hw.herald_fidelity - 1.0) / 3.0
    }

    /// Fidelity after storing a heralded pair for `t_s`.
    pub fn fidelity_after(&self, t_s: f64) -> f64 {
        let v = self.visibility();
        v / 2.0 + (1.0 - v) / 4.0 + v / 2.0 * (-t_s / self.hw.coherence_time_s).exp()
    }

    /// CHSH value after storing for `t_s`: `√2 V (1 + e^{−t/T_coh})`.
    pub fn chsh_after(&self, t_s: f64) -> f64 {
        std::f64::consts::SQRT_2
            * self.visibility()
            * (1.0 + (-t_s / self.hw.coherence_time_s).exp())
    }

    /// Key-setting error probability `(1 − V)/2`.
    pub fn key_error(&self) -> f64 {
        (1.0 - self.visibility()) / 2.0
    }

    /// Agreement probability of CHSH setting `(a, b)` after storing for `t_s`.
    pub fn agree_probability(&self, a: usize, b: usize, t_s: f64) -> f64 {
        let v = self.visibility();
        let e = (-t_s / self.hw.coherence_time_s).exp();
        let r = std::f64::consts::FRAC_1_SQRT_2;
        // Unit vectors (x, z): A₀ = Z, A₁ = X; B₀ = (X + Z)/√2, B₁ = (Z − X)/√2.
        let av = [(0.0, 1.0), (1.0, 0.0)][a];
        let bv = [(r, r), (-r, r), (0.0, 1.0)][b];
        let corr = v * e * av.0 * bv.0 + v * av.1 * bv.1;
        (1.0 + corr) / 2.0
    }

    /// Expected mean fidelity of deterministic delivery when the memory always holds the
    /// latest herald: the pair's age is exponential with the herald rate `r` (successes are
    /// rare per attempt), so `E[F] = V/2 + (1 − V)/4 + (V/2) η/(1 + η)` with
    /// `η = r T_coh = η_link`.
    pub fn expected_delivery_fidelity(&self) -> f64 {
        let v = self.visibility();
        let eta = self.point.eta_link;
        v / 2.0 + (1.0 - v) / 4.0 + v / 2.0 * eta / (1.0 + eta)
    }
}

/// A running ion-link emulation.
#[derive(Debug, Clone)]
pub struct IonEmulator {
    link: IonLink,
    window_s: f64,
    next_index: u64,
    keys: [u64; 2],
    /// Attempt counter and time of the next attempt's herald (ps), event level.
    attempt: u64,
    last_herald_ps: Option<i64>,
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
            keys: [key("events"), key("stats")],
            link,
            window_s,
            next_index: 0,
            attempt: 0,
            last_herald_ps: None,
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

    fn measure(&self, rng: &mut Xoshiro256PlusPlus) -> (u8, u8, [u8; 2]) {
        let t = self.link.emu.measure_delay_s;
        let key = rng.gen::<f64>() < self.link.emu.key_fraction;
        let (a, b) = if key {
            (0usize, 2usize)
        } else {
            (rng.gen_range(0..2), rng.gen_range(0..2))
        };
        let x = rng.gen::<bool>() as u8;
        let agree = rng.gen::<f64>() < self.link.agree_probability(a, b, t);
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
        let p = self
            .link
            .success_probability_at(index as f64 * self.window_s);
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
            let (a, b, outcomes) = self.measure(&mut rng);
            out.heralds.push(Herald {
                time_ps: herald_ps,
                attempt,
                detector: rng.gen::<bool>() as u8,
                alice_setting: a,
                bob_setting: b,
                outcomes,
            });
            self.last_herald_ps = Some(herald_ps);
            self.attempt = attempt + 1;
        }
        self.emit_deliveries(&mut out, end_ps, period);
        out
    }

    fn emit_deliveries(&mut self, out: &mut IonWindow, until_ps: i64, period: i64) {
        while period > 0 && self.next_delivery_ps < until_ps {
            let t = self.next_delivery_ps;
            let age = self.last_herald_ps.map(|h| (t - h) as f64 * 1e-12);
            out.deliveries.push(Delivery {
                time_ps: t,
                age_s: age,
                fidelity: age.map_or(0.25, |a| self.link.fidelity_after(a)),
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
        let p = self
            .link
            .success_probability_at(index as f64 * self.window_s);
        let heralds = binomial(&mut rng, attempts, p);
        let key_pairs = binomial(&mut rng, heralds, self.link.emu.key_fraction);
        let t = self.link.emu.measure_delay_s;
        let mut s = IonStats {
            index,
            attempts,
            heralds,
            key_pairs,
            key_errors: binomial(&mut rng, key_pairs, self.link.key_error()),
            ..IonStats::default()
        };
        // The CHSH pairs over the four settings, equally likely.
        let split = multinomial(&mut rng, heralds - key_pairs, &[0.25; 4]);
        for a in 0..2 {
            for b in 0..2 {
                let n = split[2 * a + b];
                s.chsh_pairs[a][b] = n;
                s.chsh_agree[a][b] = binomial(&mut rng, n, self.link.agree_probability(a, b, t));
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
