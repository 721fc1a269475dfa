//! One emulated BBM92 link run window by window in virtual time: the emulator's windows,
//! the time sync (modelled at window level, from the streams at event level), the
//! supervisor, the control loops, and the sifted key at both ends; and the blocks that
//! gather it for distillation. `qkdnet run` drives one runner; [`crate::sim`] drives one per
//! link of a network.
//!
//! Window level: each 0.5 s window's counts come from the emulator's closed forms
//! (`Bbm92Emulator::step_stats`), its sifted key from correlated bits with the window's
//! drawn errors. The sync is modelled (a lock needs 10 windows of light on both sides; a
//! clock jump beyond the tracker's ±2 ns window loses it). Event level: every detection a
//! time tag, the clock model acquired from the two streams and tracked, each window sifted.

use crate::InputError;
use qkdnet_core::bits::Bits;
use qkdnet_distill::auth::AuthKeys;
use qkdnet_distill::random::danger::InsecureDeterministic;
use qkdnet_distill::session::{run_local_with_bound, Config, ExternalBound, FinalKey, TestTally};
use qkdnet_emulator::bbm92::{correlated_bits, BasisCounts, Bbm92Emulator, Bbm92Link, Conditions};
use qkdnet_keyrate::decoy_bb84::{lim_bound, DecoyBb84, DecoyCounts};
use qkdnet_keyrate::mdi::{mdi_bound, Mdi, MdiCounts};
use qkdnet_keyrate::tf::{sns_bound, TfCounts, TwinField};
use qkdnet_keyrate::{FiniteKey, Security};
use qkdnet_link::control::{PhaseLock, PolarisationLock, PumpOptimiser, PumpSteering};
use qkdnet_link::events::{EventSifter, TagWindow};
use qkdnet_link::sift::SiftConfig;
use qkdnet_link::supervisor::{
    Action, Observation, Supervisor, SupervisorConfig, Tally, WindowLight, WindowLockModel,
};
use qkdnet_link::sync::SyncConfig;
use rand::SeedableRng;

/// Window length of the runtime, s.
pub const WINDOW_S: f64 = 0.5;

/// What steers the pump.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PumpObjective {
    /// Steered to a QBER_Z target (Nice: 4.3 %).
    QberZ(f64),
    /// The estimated secret key rate's maximum.
    KeyRate,
    /// Held at the scenario's power.
    Fixed,
}

/// Where a window's counts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fidelity {
    /// Closed-form draws, the sync modelled.
    Window,
    /// Time tags, synchronised and sifted (needs `key_bin_ps`).
    Event,
}

/// What a BBM92 window shows the window-level time sync: its singles, and the pairs the
/// emulator's conditions detect on both sides.
pub fn window_light(singles: [u64; 2], c: &qkdnet_emulator::bbm92::Conditions) -> WindowLight {
    let length_s = c.length_ps as f64 * 1e-12;
    WindowLight {
        singles,
        pairs: c.pair_rate_hz * c.p_detect[0] * c.p_detect[1] * length_s,
        length_s,
    }
}

/// How a runner runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunnerConfig {
    /// Pump control.
    pub pump: PumpObjective,
    /// Fidelity.
    pub fidelity: Fidelity,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            pump: PumpObjective::QberZ(0.043),
            fidelity: Fidelity::Window,
        }
    }
}

enum Pump {
    Target(PumpSteering),
    KeyRate(PumpOptimiser),
    Fixed,
}

enum Level {
    Window(WindowLockModel),
    Event(Box<EventSifter>),
}

/// What one window gave.
pub struct WindowOutput {
    /// End of the window, s of virtual time.
    pub t_s: f64,
    /// The BBM92 emulator's conditions during it (`None` for other families).
    pub conditions: Option<Conditions>,
    /// Decoy-state detections by basis and intensity (decoy BB84, when produced).
    pub decoy: Option<DecoyCounts>,
    /// Pulse pairs and Bell-state announcements (MDI, when produced).
    pub mdi: Option<MdiCounts>,
    /// Pulses, relay clicks per setting pair and AOPP pairs (twin-field, when produced).
    pub tf: Option<TfCounts>,
    /// Estimation sums of the symbols disclosed in the window (CV-QKD, when produced).
    pub cv: Option<qkdnet_keyrate::cv::CvEstimate>,
    /// CHSH and key tallies (DI-QKD over an ion memory link, when produced).
    pub di: Option<qkdnet_keyrate::di::DiCounts>,
    /// Singles per side.
    pub singles: [u64; 2],
    /// Key-basis tally.
    pub z: BasisCounts,
    /// Test-basis tally.
    pub x: BasisCounts,
    /// Whether the sync held.
    pub locked: bool,
    /// Whether the supervisor let the window produce key.
    pub produced: bool,
    /// The window's sifted key at Alice's and Bob's ends (when produced).
    pub keys: Option<(Bits, Bits)>,
    /// Supervisor transitions this window, as (from, to, fault) debug strings.
    pub transitions: Transitions,
    /// Offset of Bob's tagger against Alice's that the sync tracks at the window's end, ps.
    pub sync_offset_ps: f64,
}

impl WindowOutput {
    /// A window of a family without a tracked sync (one shared pulse clock, or a pilot):
    /// no BBM92 conditions, no family tallies, no test basis, locked, no sync offset; the
    /// same `events` at both sides. Runners set what their family adds with struct update.
    pub fn pulsed(
        t_s: f64,
        events: u64,
        z: BasisCounts,
        produced: bool,
        keys: Option<(Bits, Bits)>,
        transitions: Transitions,
    ) -> Self {
        Self {
            t_s,
            conditions: None,
            decoy: None,
            mdi: None,
            tf: None,
            cv: None,
            di: None,
            singles: [events, events],
            z,
            x: BasisCounts::default(),
            locked: true,
            produced,
            keys,
            transitions,
            sync_offset_ps: f64::NAN,
        }
    }
}

/// A basis's window counts as the supervisor takes them.
fn tally(b: &BasisCounts) -> Tally {
    Tally {
        coincidences: b.coincidences,
        errors: b.errors,
    }
}

/// Transitions as (from, to, fault) strings.
pub(crate) type Transitions = Vec<(String, String, Option<String>)>;

/// The supervisor's verdict on a window, with the transitions it made.
pub(crate) fn observe(sup: &mut Supervisor, obs: &Observation) -> (bool, Action, Transitions) {
    let before = sup.events.len();
    let (produced, action) = sup.observe(obs);
    let transitions = sup.events[before..]
        .iter()
        .map(|e| {
            (
                format!("{:?}", e.from),
                format!("{:?}", e.to),
                e.fault.map(|f| format!("{f:?}")),
            )
        })
        .collect();
    (produced, action, transitions)
}

/// One emulated BBM92 link at runtime.
pub struct LinkRunner {
    link: Bbm92Link,
    emu: Bbm92Emulator,
    sup: Supervisor,
    phase: PhaseLock,
    pol: [PolarisationLock; 2],
    pump: Pump,
    level: Level,
    locked: bool,
    bits_rng: rand_chacha::ChaCha8Rng,
    window: u64,
}

impl LinkRunner {
    /// A runner for `link` (its emulation settings' seed drives everything).
    pub fn new(link: Bbm92Link, cfg: &RunnerConfig) -> Result<Self, InputError> {
        let hw = *link.hardware();
        let seed = link.emulation().seed;
        let emu = Bbm92Emulator::new(link.clone(), WINDOW_S)
            .map_err(|e| InputError::new(e.to_string()))?;
        let pol_dep = link.emulation().polarisation_dependence.max(0.01);
        let pump = match cfg.pump {
            PumpObjective::QberZ(q) => {
                if !(q > 0.0 && q < 0.11) {
                    return Err(InputError::new(format!(
                        "qber target: must be in (0, 0.11), got {q}"
                    )));
                }
                Pump::Target(PumpSteering::new(hw.pump_power_mw, q, hw.max_pump_power_mw))
            }
            PumpObjective::KeyRate => Pump::KeyRate(PumpOptimiser::new(
                hw.pump_power_mw,
                hw.max_pump_power_mw,
                hw.ec_efficiency,
            )),
            PumpObjective::Fixed => Pump::Fixed,
        };
        let level = match cfg.fidelity {
            Fidelity::Window => Level::Window(WindowLockModel::default()),
            Fidelity::Event => {
                let bin = link.emulation().key_bin_ps;
                if bin <= 0.0 {
                    return Err(InputError::new(
                        "emulator.key_bin_ps: event level sifts keys from time bins; set key_bin_ps (ps, ≥ the coincidence window) in [emulator]",
                    ));
                }
                let sync_cfg = SyncConfig::default();
                let sift_cfg = SiftConfig {
                    window_ps: hw.coincidence_window_ps,
                    z_bin_ps: bin,
                    ..SiftConfig::default()
                };
                // The acquisition's data plus 1.5 s of margin for Bob's offset.
                let windows =
                    ((sync_cfg.acquisition_ps as f64 * 1e-12 + 1.5) / WINDOW_S).ceil() as usize;
                Level::Event(Box::new(EventSifter::new(sync_cfg, sift_cfg, windows)))
            }
        };
        Ok(Self {
            emu,
            sup: Supervisor::new(SupervisorConfig::default()),
            phase: PhaseLock::new(0.0, hw.visibility_test),
            pol: [
                PolarisationLock::new(0.0, pol_dep),
                PolarisationLock::new(0.0, pol_dep),
            ],
            pump,
            level,
            locked: false,
            bits_rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x0051_574b_4559),
            window: 0,
            link,
        })
    }

    /// Virtual time reached (end of the last window), s.
    pub fn time_s(&self) -> f64 {
        self.window as f64 * WINDOW_S
    }

    /// The emulated link.
    pub fn link(&self) -> &Bbm92Link {
        &self.link
    }

    /// The emulator (its actuators are the loops' settings).
    pub fn emulator(&self) -> &Bbm92Emulator {
        &self.emu
    }

    /// The supervisor (state, availability, restarts, events).
    pub fn supervisor(&self) -> &Supervisor {
        &self.sup
    }

    /// Offset of Bob's tagger against Alice's that the sync tracks at `t_s` (clocks,
    /// drift, glitches and fibre delays), ps.
    pub fn sync_offset_ps(&self, c: &Conditions, t_s: f64) -> f64 {
        let e = self.link.emulation();
        e.clock_offset_ps[1] - e.clock_offset_ps[0]
            + (e.clock_frequency_error[1] - e.clock_frequency_error[0]) * t_s * 1e12
            + c.clock_jump_ps[1]
            - c.clock_jump_ps[0]
            + c.delay_ps[1]
            - c.delay_ps[0]
    }

    /// Runs one window.
    pub fn step(&mut self) -> WindowOutput {
        // The loops act whenever the sync holds (they need coincidences to measure).
        if self.locked {
            self.emu.actuators.phase_rad[0] = self.phase.setting();
            self.emu.actuators.polarisation_rad[0] = self.pol[0].setting();
            self.emu.actuators.polarisation_rad[1] = self.pol[1].setting();
        }
        let (c, singles, z, x, keys) = match &mut self.level {
            Level::Window(sync) => {
                let s = self.emu.step_stats();
                let singles = [
                    s.singles[0].iter().sum::<u64>(),
                    s.singles[1].iter().sum::<u64>(),
                ];
                let c = s.conditions;
                self.locked = sync.update(&window_light(singles, &c), c.clock_jump_ps[1]);
                (c, singles, s.z, s.x, None)
            }
            Level::Event(sifter) => {
                let ev = self.emu.step_events();
                let c = ev.conditions;
                let end = c.start_ps + c.length_ps;
                let r = sifter.push(TagWindow {
                    tags: ev.tags,
                    start_ps: self.link.to_local(0, c.start_ps, c.clock_jump_ps[0]),
                    end_ps: self.link.to_local(0, end, c.clock_jump_ps[0]),
                });
                self.locked = r.locked;
                match r.sifted {
                    Some(sf) => {
                        let errors = sf.key_alice.hamming_distance(&sf.key_bob) as u64;
                        let z = BasisCounts {
                            coincidences: sf.key_alice.len() as u64,
                            errors,
                        };
                        let x = BasisCounts {
                            coincidences: sf.test_coincidences,
                            errors: sf.test_errors,
                        };
                        (c, r.singles, z, x, Some((sf.key_alice, sf.key_bob)))
                    }
                    None => (
                        c,
                        r.singles,
                        BasisCounts::default(),
                        BasisCounts::default(),
                        None,
                    ),
                }
            }
        };
        let obs = Observation {
            time_ps: c.start_ps + c.length_ps,
            length_ps: c.length_ps,
            singles,
            key: tally(&z),
            test: tally(&x),
            sync_locked: self.locked,
        };
        let (produced, action, transitions) = observe(&mut self.sup, &obs);
        if action == Action::Reacquire {
            match &mut self.level {
                Level::Window(sync) => sync.drop_lock(),
                Level::Event(sifter) => sifter.drop_lock(),
            }
            self.locked = false;
        }
        if self.locked {
            self.phase.update(x.errors, x.coincidences);
            self.pol[0].update(singles[0]);
            self.pol[1].update(singles[1]);
            match &mut self.pump {
                Pump::Target(p) => {
                    self.emu.actuators.pump_mw = p.update(
                        z.errors as f64 / z.coincidences.max(1) as f64,
                        z.coincidences,
                    )
                }
                Pump::KeyRate(p) => {
                    self.emu.actuators.pump_mw =
                        p.update((z.coincidences, z.errors), (x.coincidences, x.errors))
                }
                Pump::Fixed => {}
            }
        }
        let keys = if produced {
            Some(keys.unwrap_or_else(|| {
                correlated_bits(
                    z.coincidences as usize,
                    z.errors as usize,
                    &mut self.bits_rng,
                )
            }))
        } else {
            None
        };
        self.window += 1;
        let t_s = self.window as f64 * WINDOW_S;
        WindowOutput {
            sync_offset_ps: self.sync_offset_ps(&c, t_s),
            t_s,
            conditions: Some(c),
            decoy: None,
            mdi: None,
            tf: None,
            cv: None,
            di: None,
            singles,
            z,
            x,
            locked: self.locked,
            produced,
            keys,
            transitions,
        }
    }
}

/// Sifted key gathered at both ends for the next distillation block.
pub struct SiftedBlock {
    /// Block number on this link.
    pub id: u64,
    /// Alice's sifted bits.
    pub alice: Bits,
    /// Bob's sifted bits.
    pub bob: Bits,
    /// Test-basis tally over the block.
    pub test: TestTally,
    /// Decoy-state detections over the block (decoy BB84).
    pub decoy: Option<DecoyCounts>,
    /// Pulse pairs and Bell-state announcements over the block (MDI).
    pub mdi: Option<MdiCounts>,
    /// Twin-field counts over the block.
    pub tf: Option<TfCounts>,
    /// DI-QKD counts over the block.
    pub di: Option<qkdnet_keyrate::di::DiCounts>,
}

/// Gathers windows' sifted key into blocks.
pub struct BlockBuffer {
    alice: Bits,
    bob: Bits,
    test: TestTally,
    decoy: Option<DecoyCounts>,
    mdi: Option<MdiCounts>,
    tf: Option<TfCounts>,
    di: Option<qkdnet_keyrate::di::DiCounts>,
    next_id: u64,
}

impl Default for BlockBuffer {
    fn default() -> Self {
        Self {
            alice: Bits::zeros(0),
            bob: Bits::zeros(0),
            test: TestTally { bits: 0, errors: 0 },
            decoy: None,
            mdi: None,
            tf: None,
            di: None,
            next_id: 0,
        }
    }
}

impl BlockBuffer {
    /// Adds a producing window's sifted key and its tallies (nothing when it produced
    /// none); true when it added.
    pub fn push_window(&mut self, out: &WindowOutput) -> bool {
        let Some((ka, kb)) = &out.keys else {
            return false;
        };
        self.push(ka, kb, out.x.coincidences, out.x.errors);
        if let Some(c) = &out.decoy {
            self.decoy.get_or_insert_with(DecoyCounts::default).add(c);
        }
        if let Some(c) = &out.mdi {
            self.mdi.get_or_insert_with(MdiCounts::default).add(c);
        }
        if let Some(c) = &out.di {
            self.di
                .get_or_insert_with(qkdnet_keyrate::di::DiCounts::default)
                .add(c);
        }
        if let Some(c) = &out.tf {
            self.tf.get_or_insert_with(TfCounts::default).add(c);
        }
        true
    }

    /// Adds a window's sifted bits and test-basis tally.
    pub fn push(&mut self, alice: &Bits, bob: &Bits, test_bits: u64, test_errors: u64) {
        self.alice.append_range(alice, 0, alice.len());
        self.bob.append_range(bob, 0, bob.len());
        self.test.bits += test_bits;
        self.test.errors += test_errors;
    }

    /// Sifted bits waiting.
    pub fn len(&self) -> usize {
        self.alice.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.alice.is_empty()
    }

    /// Takes what has gathered as the next block (numbered even when too short to keep).
    pub fn take(&mut self) -> SiftedBlock {
        let id = self.next_id;
        self.next_id += 1;
        SiftedBlock {
            id,
            alice: std::mem::replace(&mut self.alice, Bits::zeros(0)),
            bob: std::mem::replace(&mut self.bob, Bits::zeros(0)),
            test: std::mem::replace(&mut self.test, TestTally { bits: 0, errors: 0 }),
            decoy: self.decoy.take(),
            mdi: self.mdi.take(),
            tf: self.tf.take(),
            di: self.di.take(),
        }
    }
}

/// Smallest block worth distilling, sifted bits.
pub const MIN_BLOCK_BITS: usize = 10_000;

/// Why a block with some sifted bits but fewer than [`MIN_BLOCK_BITS`] is not distilled
/// (`None` for an empty block or one long enough).
pub fn too_short(block: &SiftedBlock) -> Option<String> {
    let n = block.alice.len();
    (n > 0 && n < MIN_BLOCK_BITS).then(|| {
        format!(
            "block {}: {n} sifted bits, fewer than the {MIN_BLOCK_BITS} a block needs",
            block.id
        )
    })
}

/// Distils blocks with both ends in this process (an emulation: the two sessions exchange
/// authenticated messages in memory), replenishing the authentication pads from each key.
pub struct LocalDistiller {
    cfg: Config,
    auth: [AuthKeys; 2],
    rng: InsecureDeterministic,
}

/// A distilled block: both ends' final keys (identical) and the key kept after the
/// authentication pads took their share.
pub struct Distilled {
    /// Block number.
    pub id: u64,
    /// Alice's final key.
    pub alice: FinalKey,
    /// Bob's final key.
    pub bob: FinalKey,
    /// Bits of each final key given back to the authentication pads (taken from the front):
    /// the pads the block used, and more while the pool runs low.
    pub replenished_bits: usize,
}

/// The emulation's pre-shared authentication key: 262 144 bits from `seed` (insecure,
/// deterministic: both ends of an emulated link derive the same one; emulation only).
pub fn emulated_preshared_key(seed: u64) -> Bits {
    let mut g = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x50_534b);
    let words: Vec<u64> = (0..4096).map(|_| rand::RngCore::next_u64(&mut g)).collect();
    Bits::from_words(words, 4096 * 64)
}

/// The session settings of emulated links: 5 % of the sifted key sampled for the QBER.
pub fn session_config() -> Config {
    Config {
        sample_fraction: 0.05,
        ..Config::default()
    }
}

/// The session settings for a block of `n` sifted bits, finished under an external
/// secrecy bound or not. Under an external bound (decoy BB84, MDI, twin-field) the
/// disclosed QBER sample costs its length in key (`secrecy − sample − leak`), so it is
/// kept to what Cascade's first block size needs: 2000 bits (the QBER to ±0.4 % absolute
/// at 3 %), between 0.2 % and 5 % of the block. At Frankfurt–Kehl a 5 % sample took 97 %
/// of the key; on the 2 × 25 km MDI link, 45 %. Under the session's own bound the sample
/// only leaves the key, and 5 % stays.
pub fn block_config(n: usize, external: bool) -> Config {
    let mut cfg = session_config();
    if external {
        cfg.sample_fraction = (2000.0 / n.max(1) as f64).clamp(0.002, 0.05);
    }
    cfg
}

impl LocalDistiller {
    /// A distiller whose pre-shared authentication key and privacy-amplification seeds come
    /// from `seed` (insecure, deterministic: emulation only).
    pub fn new(seed: u64) -> Result<Self, String> {
        let psk = emulated_preshared_key(seed);
        let auth_a = AuthKeys::from_preshared(psk.duplicate()).map_err(|e| e.to_string())?;
        let auth_b = AuthKeys::from_preshared(psk).map_err(|e| e.to_string())?;
        Ok(Self {
            cfg: session_config(),
            auth: [auth_a, auth_b],
            rng: InsecureDeterministic::new(seed, "qkdnet run: emulation only"),
        })
    }

    /// Distils a block: `Ok(None)` when it is too short to try, `Err` when the session
    /// found no key (aborted, or the finite-key bound left nothing).
    pub fn distil(&mut self, block: SiftedBlock) -> Result<Option<Distilled>, String> {
        self.distil_with(block, None)
    }

    /// Distils a block under a protocol's own secrecy bound (decoy BB84's), or the
    /// session's (`None`).
    pub fn distil_with(
        &mut self,
        block: SiftedBlock,
        bound: Option<ExternalBound>,
    ) -> Result<Option<Distilled>, String> {
        if block.alice.len() < MIN_BLOCK_BITS {
            return Ok(None);
        }
        let [auth_a, auth_b] = &mut self.auth;
        let consumed = auth_a.consumed_bits();
        let cfg = Config {
            sample_fraction: block_config(block.alice.len(), bound.is_some()).sample_fraction,
            ..self.cfg.clone()
        };
        let (fa, fb) = run_local_with_bound(
            block.id,
            block.alice,
            block.bob,
            cfg,
            Some(block.test),
            bound,
            auth_a,
            auth_b,
            &mut self.rng,
        )
        .map_err(|e| format!("block {}: {e}", block.id))?;
        if fa.key.words() != fb.key.words() {
            return Err(format!("block {}: the two ends' keys differ", block.id));
        }
        // Each block gives back the pads it used, so the key counted is net of its
        // authentication; and more while the pool holds less than two blocks' use and
        // 4096 bits, so a block that needs more than the last still finds them. (Twice
        // the use every block, as before, grew the pool without bound: Frankfurt–Kehl
        // counted 89 bit/s where 100 remain net of authentication.)
        let used = (auth_a.consumed_bits() - consumed) as usize;
        let held = auth_a.available_pads() as usize * qkdnet_distill::auth::TAG_BITS as usize;
        let take = replenish_share(used, held, fa.key.len());
        auth_a.replenish(&fa.key.slice(0, take));
        auth_b.replenish(&fb.key.slice(0, take));
        Ok(Some(Distilled {
            id: block.id,
            alice: fa,
            bob: fb,
            replenished_bits: take,
        }))
    }
}

/// The bits of a block's final key (of `key_len`) given back to its link's
/// authentication pads, from the front: the `used` bits its messages took, and more while
/// the pool (`held` bits after the block) holds less than two blocks' use and 4096 bits,
/// so a block that needs more than the last still finds them.
pub fn replenish_share(used: usize, held: usize, key_len: usize) -> usize {
    let floor = 2 * used + 4096;
    key_len.min(used + floor.saturating_sub(held + used))
}

/// What the pulsed families' runners share: the supervisor on the key basis, Bob's
/// polarisation controller on a dithered loop minimising QBER_Z (curvature 1: QBER ≈ e_mis
/// + θ² near the optimum), the correlated draws of the sifted key, and the window count.
pub(crate) struct PulsedLoop {
    pub(crate) sup: Supervisor,
    lock: qkdnet_link::control::DitherLoop,
    pub(crate) bits_rng: rand_chacha::ChaCha8Rng,
    window: u64,
}

/// One window's verdict from [`PulsedLoop::finish`].
struct Verdict {
    t_s: f64,
    produced: bool,
    transitions: Transitions,
    keys: Option<(Bits, Bits)>,
}

impl PulsedLoop {
    fn new(seed: u64) -> Self {
        Self::with_supervisor(seed, SupervisorConfig::default())
    }

    /// A loop whose supervisor has its own settings.
    pub(crate) fn with_supervisor(seed: u64, cfg: SupervisorConfig) -> Self {
        Self {
            sup: Supervisor::new(cfg),
            lock: qkdnet_link::control::DitherLoop::new(0.0, 0.03, 0.5, 1.0, 0.3),
            bits_rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
            window: 0,
        }
    }

    pub(crate) fn time_s(&self) -> f64 {
        self.window as f64 * WINDOW_S
    }

    /// Ends a window: the supervisor sees `events` at both sides (the one detecting party's
    /// or the relay's) and the key and test tallies (the pulse clock is shared, so the sync
    /// always holds); the polarisation loop takes `lock_qber` (the signal's QBER_Z when it
    /// had counts); a producing window's sifted key is drawn with the key basis's errors.
    fn finish(
        &mut self,
        events: u64,
        z: &BasisCounts,
        test: Tally,
        lock_qber: Option<f64>,
    ) -> Verdict {
        let (t_s, produced, transitions) = self.judge(events, z, test, lock_qber);
        let keys = produced.then(|| {
            correlated_bits(
                z.coincidences as usize,
                z.errors as usize,
                &mut self.bits_rng,
            )
        });
        Verdict {
            t_s,
            produced,
            transitions,
            keys,
        }
    }

    /// [`PulsedLoop::finish`] without the key: the window's end, whether it produced, and
    /// the supervisor's transitions.
    pub(crate) fn judge(
        &mut self,
        events: u64,
        z: &BasisCounts,
        test: Tally,
        lock_qber: Option<f64>,
    ) -> (f64, bool, Transitions) {
        self.window += 1;
        let t_s = self.time_s();
        let obs = Observation {
            time_ps: (t_s * 1e12) as i64,
            length_ps: (WINDOW_S * 1e12) as i64,
            singles: [events, events],
            key: tally(z),
            test,
            sync_locked: true,
        };
        let (produced, _, transitions) = observe(&mut self.sup, &obs);
        self.lock.update(lock_qber);
        (t_s, produced, transitions)
    }
}

/// An emulator's refusal of its settings, naming the field.
fn emulator_error(e: qkdnet_optics::ParamError) -> InputError {
    InputError::new(format!("{}: {}", e.field, e.reason))
}

/// A bound's secrecy as the session takes it, if it grants any (at most the block's `n`
/// sifted bits).
fn granted(secrecy_bits: f64, overhead_bits: f64, n: f64) -> Option<ExternalBound> {
    (secrecy_bits.is_finite() && secrecy_bits > 0.0).then(|| ExternalBound {
        secrecy_bits: secrecy_bits.min(n),
        overhead_bits,
    })
}

/// One emulated decoy-BB84 link at runtime: the emulator's pulses window by window (every
/// detection drawn, only detections sampled), Bob's polarisation controller on a dithered
/// loop minimising the signal pulses' QBER_Z, the supervisor, and each window's sifted key
/// (key-basis detections of every intensity) with its decoy-state tallies.
pub struct Bb84Runner {
    emu: qkdnet_emulator::bb84::Bb84Emulator,
    hw: DecoyBb84,
    run: PulsedLoop,
}

impl Bb84Runner {
    /// A runner for `link`; `seed` drives the sifted bits' correlated draws.
    pub fn new(link: qkdnet_emulator::bb84::Bb84Link, seed: u64) -> Result<Self, InputError> {
        let hw = *link.hardware();
        let emu =
            qkdnet_emulator::bb84::Bb84Emulator::new(link, WINDOW_S).map_err(emulator_error)?;
        Ok(Self {
            emu,
            hw,
            run: PulsedLoop::new(seed ^ 0x0042_4238_3431),
        })
    }

    /// The hardware.
    pub fn hardware(&self) -> &DecoyBb84 {
        &self.hw
    }

    /// Runs one window.
    pub fn step(&mut self) -> WindowOutput {
        self.emu.actuators.polarisation_rad = self.run.lock.setting();
        let w = self.emu.step_events();
        let t = qkdnet_emulator::bb84::tally(&w);
        let key_n: u64 = (0..3).map(|k| t.clicks[k][0]).sum();
        let key_e: f64 = (0..3).map(|k| t.errors[k][0]).sum();
        let test_n: u64 = (0..3).map(|k| t.clicks[k][1]).sum();
        let test_e: f64 = (0..3).map(|k| t.errors[k][1]).sum();
        let z = BasisCounts {
            coincidences: key_n,
            errors: key_e.round() as u64,
        };
        let x = BasisCounts {
            coincidences: test_n,
            errors: test_e.round() as u64,
        };
        let clicks = w.clicks.len() as u64;
        let (c, e) = (t.clicks[0][0] as f64, t.errors[0][0]);
        // Alice has no detectors: Bob's clicks stand for both sides.
        let v = self
            .run
            .finish(clicks, &z, tally(&x), (c > 100.0).then(|| e / c));
        let (t_s, produced, transitions) = (v.t_s, v.produced, v.transitions);
        let (keys, decoy) = if let Some(keys) = v.keys {
            let d = DecoyCounts {
                key: core::array::from_fn(|k| t.clicks[k][0] as f64),
                test: core::array::from_fn(|k| t.clicks[k][1] as f64),
                test_errors: core::array::from_fn(|k| t.errors[k][1]),
                key_errors: key_e,
            };
            (Some(keys), Some(d))
        } else {
            (None, None)
        };
        WindowOutput {
            decoy,
            x,
            ..WindowOutput::pulsed(t_s, clicks, z, produced, keys, transitions)
        }
    }
}

/// One emulated MDI-QKD link at runtime, at window level: the relay's ψ⁻ and ψ⁺
/// announcements per state pair drawn from the closed forms, Bob's polarisation controller
/// on a dithered loop minimising QBER_Z, the supervisor on the key basis, each window's
/// sifted key (Z-basis announcements, Bob flipping his bit) with its counts for the MDI
/// bound.
pub struct MdiRunner {
    emu: qkdnet_emulator::mdi::MdiEmulator,
    hw: Mdi,
    run: PulsedLoop,
}

impl MdiRunner {
    /// A runner for `link`; `seed` drives the sifted bits' correlated draws.
    pub fn new(link: qkdnet_emulator::mdi::MdiLink, seed: u64) -> Result<Self, InputError> {
        let hw = *link.hardware();
        let emu = qkdnet_emulator::mdi::MdiEmulator::new(link, WINDOW_S).map_err(emulator_error)?;
        Ok(Self {
            emu,
            hw,
            run: PulsedLoop::new(seed ^ 0x004d_4449),
        })
    }

    /// Runs one window.
    pub fn step(&mut self) -> WindowOutput {
        self.emu.actuators.polarisation_rad = self.run.lock.setting();
        let st = self.emu.step_stats();
        let c = qkdnet_emulator::mdi::counts_of(&st.sent, &st.psi, &st.psi_plus);
        let z = BasisCounts {
            coincidences: c.z_clicks as u64,
            errors: c.z_errors as u64,
        };
        let events: u64 = st.psi.iter().chain(st.psi_plus.iter()).flatten().sum();
        // The relay's announcements stand for both users' counts; the X basis only feeds
        // the bound (its error rate is high by nature), so it is not judged.
        let v = self.run.finish(
            events,
            &z,
            Tally::default(),
            (c.z_clicks > 100.0).then(|| c.z_errors / c.z_clicks),
        );
        let (t_s, produced, transitions) = (v.t_s, v.produced, v.transitions);
        let (keys, mdi) = if let Some(keys) = v.keys {
            (Some(keys), Some(c))
        } else {
            (None, None)
        };
        WindowOutput {
            mdi,
            ..WindowOutput::pulsed(t_s, events, z, produced, keys, transitions)
        }
    }
}

/// One emulated twin-field link (sending-or-not-sending, with or without AOPP) at runtime,
/// at window level: pulses per setting pair and the relay's single clicks drawn from the
/// closed forms, the phase reference on a dithered loop minimising the matched weak-decoy
/// pairs' error rate, each window's raw key drawn with its setting pairs' errors (both or
/// neither sent), AOPP run on it ([`qkdnet_distill::aopp`]) for SNS-AOPP or the raw key
/// kept in a random order for plain SNS, the supervisor on the kept key, and the counts
/// for the SNS bound ([`qkdnet_keyrate::tf::sns_bound`], which takes the variant from the
/// hardware). PM-QKD: the matched signal pairs' key and the counts for
/// [`qkdnet_keyrate::tf::pm_bound`] (`TfRunner::step_pm`).
pub struct TfRunner {
    emu: qkdnet_emulator::tf::TfEmulator,
    hw: TwinField,
    run: PulsedLoop,
}

impl TfRunner {
    /// A runner for `link` (SNS with or without AOPP, or PM-QKD); `seed` drives the raw
    /// key's draws, its order and the pairing.
    pub fn new(link: qkdnet_emulator::tf::TfLink, seed: u64) -> Result<Self, InputError> {
        let hw = link.model().hw;
        let emu = qkdnet_emulator::tf::TfEmulator::new(link, WINDOW_S).map_err(emulator_error)?;
        Ok(Self {
            emu,
            hw,
            run: PulsedLoop::new(seed ^ 0x0054_4657),
        })
    }

    /// Runs one window.
    pub fn step(&mut self) -> WindowOutput {
        self.emu.actuators.phase_rad = self.run.lock.setting();
        let st = self.emu.step_stats();
        if self.hw.variant == qkdnet_keyrate::tf::TfVariant::Pm {
            return self.step_pm(&st);
        }
        let (alice, bob) = sns_raw_key(&st.single);
        let (ka, kb, pairs) = if self.hw.variant == qkdnet_keyrate::tf::TfVariant::SnsAopp {
            // AOPP between the two ends: Bob's pairs, Alice's odd-parity answer. The pairs
            // are Bob's own over his own key, so they always check; an error keeps nothing.
            let pairs = qkdnet_distill::aopp::bob_pairs(&bob, &mut self.run.bits_rng);
            let kept = qkdnet_distill::aopp::alice_odd(&alice, &pairs).and_then(|odd| {
                Ok((
                    qkdnet_distill::aopp::kept(&alice, &pairs, &odd)?,
                    qkdnet_distill::aopp::kept(&bob, &pairs, &odd)?,
                ))
            });
            let (ka, kb) = kept.unwrap_or_else(|_| (Bits::zeros(0), Bits::zeros(0)));
            (ka, kb, pairs.len())
        } else {
            // Plain SNS keeps the raw key, in the pulses' order: a random one here, since
            // the draw laid it out by setting pair.
            let (ka, kb) = shuffled_pair(&alice, &bob, &mut self.run.bits_rng);
            (ka, kb, 0)
        };
        let z = BasisCounts {
            coincidences: ka.len() as u64,
            errors: ka.hamming_distance(&kb) as u64,
        };
        let events: u64 = st.single.iter().flatten().sum();
        let lock_qber =
            (st.matched_clicks > 100).then(|| st.matched_errors as f64 / st.matched_clicks as f64);
        // The relay's announcements stand for both users' counts.
        let (t_s, produced, transitions) = self.run.judge(events, &z, Tally::default(), lock_qber);
        let f = |m: &[[u64; 5]; 5]| m.map(|r| r.map(|v| v as f64));
        let tf = produced.then(|| TfCounts {
            sent: f(&st.sent),
            single: f(&st.single),
            matched_sent: st.matched_sent as f64,
            matched_errors: st.matched_errors as f64,
            aopp_pairs: pairs as f64,
            ..TfCounts::default()
        });
        let keys = produced.then_some((ka, kb));
        WindowOutput {
            tf,
            ..WindowOutput::pulsed(t_s, events, z, produced, keys, transitions)
        }
    }
}

impl TfRunner {
    /// A PM-QKD window (Ma, Zeng, Zhou 2018): the key is the single clicks of signal pairs
    /// whose phase slices matched (same or opposite; Bob flips his bit by the clicking
    /// detector and the slices' π), drawn with their errors; the phase reference on its
    /// loop minimising their error rate; the counts for [`pm_secrecy`].
    fn step_pm(&mut self, st: &qkdnet_emulator::tf::TfStats) -> WindowOutput {
        let z = BasisCounts {
            coincidences: st.matched_clicks,
            errors: st.matched_errors,
        };
        let events: u64 = st.single.iter().flatten().sum();
        let lock_qber =
            (st.matched_clicks > 100).then(|| st.matched_errors as f64 / st.matched_clicks as f64);
        let v = self.run.finish(events, &z, Tally::default(), lock_qber);
        let f = |m: &[[u64; 5]; 5]| m.map(|r| r.map(|v| v as f64));
        let tf = v.produced.then(|| TfCounts {
            sent: f(&st.sent),
            single: f(&st.single),
            matched_sent: st.matched_sent as f64,
            matched_clicks: st.matched_clicks as f64,
            matched_errors: st.matched_errors as f64,
            decoy_matched_sent: st.matched_decoy_sent as f64,
            decoy_matched_clicks: st.matched_decoy_clicks as f64,
            ..TfCounts::default()
        });
        WindowOutput {
            tf,
            ..WindowOutput::pulsed(v.t_s, events, z, v.produced, v.keys, v.transitions)
        }
    }
}

/// A window's SNS raw key at both ends from its single clicks per setting pair: Alice's
/// bit is "sent" (setting 1), Bob's "not sent" (setting 0), so the pairs (0, 0) and
/// (1, 1) are errors. Laid out by setting pair: AOPP's random pairing and its shuffle of
/// the pairs are what order the kept key, so shuffling here would change nothing.
fn sns_raw_key(single: &[[u64; 5]; 5]) -> (Bits, Bits) {
    // (Alice's bit, Bob's bit) of each key-window pair that clicked.
    let kinds = [
        ((false, true), single[0][0]),
        ((true, true), single[1][0]),
        ((false, false), single[0][1]),
        ((true, false), single[1][1]),
    ];
    let n: u64 = kinds.iter().map(|k| k.1).sum();
    let (mut a, mut b) = (Bits::zeros(0), Bits::zeros(0));
    a.reserve(n as usize);
    b.reserve(n as usize);
    for ((x, y), count) in kinds {
        for _ in 0..count {
            a.push(x);
            b.push(y);
        }
    }
    (a, b)
}

/// `a` and `b` under one uniformly random permutation.
fn shuffled_pair(a: &Bits, b: &Bits, rng: &mut impl rand::Rng) -> (Bits, Bits) {
    use rand::seq::SliceRandom;
    let n = a.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    let (mut x, mut y) = (Bits::zeros(n), Bits::zeros(n));
    for (to, &from) in order.iter().enumerate() {
        x.set(to, a.get(from));
        y.set(to, b.get(from));
    }
    (x, y)
}

/// The secrecy the SNS(-AOPP) bound grants a block with these counts (`None`: nothing).
pub fn tf_secrecy(c: &TfCounts, hw: &TwinField, fk: FiniteKey, n: f64) -> Option<ExternalBound> {
    let b = sns_bound(c, hw, &Security::Finite(fk)).ok()?;
    granted(b.secrecy_bits, b.overhead_bits, n)
}

/// The secrecy the PM bound grants a block with these counts (`None`: nothing).
pub fn pm_secrecy(c: &TfCounts, hw: &TwinField, fk: FiniteKey, n: f64) -> Option<ExternalBound> {
    let b = qkdnet_keyrate::tf::pm_bound(c, hw, hw.mu_signal, hw.mu_decoy1, &Security::Finite(fk))
        .ok()?;
    granted(b.secrecy_bits, b.overhead_bits, n)
}

/// The secrecy the MDI bound grants a block with these counts (`None`: nothing).
pub fn mdi_secrecy(c: &MdiCounts, hw: &Mdi, fk: FiniteKey) -> Option<ExternalBound> {
    let b = mdi_bound(
        c,
        hw.signal,
        hw.decoy_strong,
        hw.decoy_weak,
        &Security::Finite(fk),
    );
    granted(b.secrecy_bits, b.overhead_bits, c.z_clicks)
}

/// The secrecy Lim et al. 2014's bound grants a decoy-BB84 block with these counts, for the
/// session to finish with (`None` when it grants nothing).
pub fn decoy_bound(c: &DecoyCounts, hw: &DecoyBb84, fk: FiniteKey) -> Option<ExternalBound> {
    let mu = [hw.mu1, hw.mu2, hw.mu3];
    let p = [hw.p_mu1, hw.p_mu2, 1.0 - hw.p_mu1 - hw.p_mu2];
    let b = lim_bound(c, mu, p, &Security::Finite(fk));
    granted(b.secrecy_bits, b.overhead_bits, c.key.iter().sum())
}

/// A link's runtime, whichever family.
pub enum Runner {
    /// BBM92 time–energy (the Nice links).
    Bbm92(Box<LinkRunner>),
    /// Decoy-state BB84.
    Bb84(Box<Bb84Runner>),
    /// MDI-QKD.
    Mdi(Box<MdiRunner>),
    /// Twin-field (SNS with or without AOPP, PM).
    Tf(Box<TfRunner>),
    /// CV-QKD (GG02), its blocks distilled by its own post-processing.
    Cv(Box<crate::cv::CvRunner>),
    /// DI-QKD over a trapped-ion memory link.
    Di(Box<crate::di::DiRunner>),
}

impl Runner {
    /// Runs one window.
    pub fn step(&mut self) -> WindowOutput {
        match self {
            Self::Bbm92(r) => r.step(),
            Self::Bb84(r) => r.step(),
            Self::Mdi(r) => r.step(),
            Self::Tf(r) => r.step(),
            Self::Cv(r) => r.step(),
            Self::Di(r) => r.step(),
        }
    }

    /// Virtual time reached, s.
    pub fn time_s(&self) -> f64 {
        match self {
            Self::Bbm92(r) => r.time_s(),
            Self::Bb84(r) => r.run.time_s(),
            Self::Mdi(r) => r.run.time_s(),
            Self::Tf(r) => r.run.time_s(),
            Self::Cv(r) => r.time_s(),
            Self::Di(r) => r.time_s(),
        }
    }

    /// The supervisor.
    pub fn supervisor(&self) -> &Supervisor {
        match self {
            Self::Bbm92(r) => r.supervisor(),
            Self::Bb84(r) => &r.run.sup,
            Self::Mdi(r) => &r.run.sup,
            Self::Tf(r) => &r.run.sup,
            Self::Cv(r) => r.supervisor(),
            Self::Di(r) => r.supervisor(),
        }
    }

    /// The pump power now, mW (BBM92 only).
    pub fn pump_mw(&self) -> Option<f64> {
        match self {
            Self::Bbm92(r) => Some(r.emulator().actuators.pump_mw),
            Self::Bb84(_) | Self::Mdi(_) | Self::Tf(_) | Self::Cv(_) | Self::Di(_) => None,
        }
    }

    /// The secrecy bound a block of this link's takes from outside the session: decoy
    /// BB84's (`Ok(None)` for BBM92, whose test basis the session bounds itself). A BB84
    /// block whose decoy bound grants nothing is an error: it must never fall back to the
    /// session's entanglement-based bound.
    pub fn external_bound(
        &self,
        block: &SiftedBlock,
        fk: FiniteKey,
    ) -> Result<Option<ExternalBound>, String> {
        match self {
            Self::Bbm92(_) => Ok(None),
            Self::Bb84(r) => {
                let c = block
                    .decoy
                    .as_ref()
                    .ok_or_else(|| format!("block {}: no decoy tallies", block.id))?;
                decoy_bound(c, &r.hw, fk).map(Some).ok_or_else(|| {
                    format!(
                        "block {}: Lim et al.'s bound grants no secrecy (too few single-photon detections)",
                        block.id
                    )
                })
            }
            Self::Mdi(r) => {
                let c = block
                    .mdi
                    .as_ref()
                    .ok_or_else(|| format!("block {}: no MDI tallies", block.id))?;
                mdi_secrecy(c, &r.hw, fk).map(Some).ok_or_else(|| {
                    format!(
                        "block {}: the MDI bound grants no secrecy (too few two-photon events)",
                        block.id
                    )
                })
            }
            Self::Cv(_) => Err(format!(
                "block {}: a CV-QKD link distils its symbols itself, not sifted bits",
                block.id
            )),
            Self::Di(_) => {
                let c = block
                    .di
                    .as_ref()
                    .ok_or_else(|| format!("block {}: no CHSH tallies", block.id))?;
                let b = qkdnet_keyrate::di::di_bound(c, &Security::Finite(fk));
                granted(b.secrecy_bits, b.overhead_bits, block.alice.len() as f64)
                    .map(Some)
                    .ok_or_else(|| {
                        format!(
                            "block {}: the DI bound grants no secrecy (CHSH {:.3} observed, {:.3} at its lower bound over {} rounds; no violation to certify)",
                            block.id,
                            c.chsh(),
                            b.chsh_lower,
                            c.chsh_rounds.iter().flatten().sum::<f64>()
                        )
                    })
            }
            Self::Tf(r) => {
                let c = block
                    .tf
                    .as_ref()
                    .ok_or_else(|| format!("block {}: no twin-field tallies", block.id))?;
                let n = block.alice.len() as f64;
                if r.hw.variant == qkdnet_keyrate::tf::TfVariant::Pm {
                    return pm_secrecy(c, &r.hw, fk, n).map(Some).ok_or_else(|| {
                        format!(
                            "block {}: the PM bound grants no secrecy (too few single-photon pairs among the matched key pulses)",
                            block.id
                        )
                    });
                }
                tf_secrecy(c, &r.hw, fk, n).map(Some).ok_or_else(|| {
                    format!(
                        "block {}: the SNS bound grants no secrecy (too few untagged pairs)",
                        block.id
                    )
                })
            }
        }
    }
}
