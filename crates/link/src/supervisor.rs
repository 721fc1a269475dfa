//! The link supervisor: what the Nice link did for 325 hours without a person (Lecaron et
//! al. 2025: 9 automatic restarts, 7 of them detector cooling cycles, availability > 99 %).
//!
//! A state machine fed one observation per window (0.5 s):
//!
//! ```text
//! Acquiring ──lock──▶ Stabilising ──N good windows──▶ Producing
//!     ▲                    │ fault                        │ fault
//!     │                    ▼                              ▼
//!     └──signal back── Recovering ◀──fault persists── Degraded ──fault clears──▶ Producing
//! ```
//!
//! Faults: the singles of either node below `min_singles_fraction` of their running
//! baseline (detector outage, fibre cut, loss excursion), the key or test error rate above
//! its limit, or the time sync lost. A fault that persists `degraded_windows` windows
//! triggers a restart (counted once per fault): the supervisor asks for re-acquisition
//! and waits in `Recovering` until the signal is back, then acquires again. Keys are
//! produced only in `Producing`; availability is the producing fraction of the time.

/// The supervisor's states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkState {
    /// Looking for the coincidence peak.
    Acquiring,
    /// Locked; control loops settling.
    Stabilising,
    /// Producing key.
    Producing,
    /// A fault seen; waiting to see if it clears.
    Degraded,
    /// Restarted; waiting for the signal to come back.
    Recovering,
}

/// One window's observation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// Window end, ps of link time.
    pub time_ps: i64,
    /// Window length, ps.
    pub length_ps: i64,
    /// Singles of Alice's and Bob's detectors in the window.
    pub singles: [u64; 2],
    /// Key-basis coincidences and errors in the window.
    pub key: Tally,
    /// Test-basis coincidences and errors in the window.
    pub test: Tally,
    /// Whether the time sync holds.
    pub sync_locked: bool,
}

/// Coincidences and errors of one basis in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    /// Coincidences.
    pub coincidences: u64,
    /// Of which in error.
    pub errors: u64,
}

/// Fewest coincidences on which a window's error rate is judged.
pub const MIN_JUDGED: u64 = 100;

impl Tally {
    /// Whether the error rate is significantly above `max`: its 3σ lower bound (binomial,
    /// normal approximation) exceeds it. A window of few coincidences is not judged, and
    /// shot noise alone (a mean just under `max`) does not declare a fault, while a real
    /// excursion does within a window or two.
    pub fn above(&self, max: f64) -> bool {
        if self.coincidences < MIN_JUDGED {
            return false;
        }
        let n = self.coincidences as f64;
        let q = self.errors as f64 / n;
        q - 3.0 * (q * (1.0 - q) / n).sqrt() > max
    }
}

/// Why a fault was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A node's singles fell below the threshold (0 = Alice, 1 = Bob).
    CountDrop(usize),
    /// The key-basis error rate exceeded its limit.
    QberKey,
    /// The test-basis error rate exceeded its limit.
    QberTest,
    /// The time sync was lost.
    SyncLost,
}

/// What the supervisor asks of the link after a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Carry on.
    None,
    /// Drop the lock and acquire the sync again (a restart).
    Reacquire,
}

/// A logged transition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event {
    /// When, ps.
    pub time_ps: i64,
    /// From.
    pub from: LinkState,
    /// To.
    pub to: LinkState,
    /// The fault, if one caused it.
    pub fault: Option<Fault>,
}

/// Thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SupervisorConfig {
    /// A window's singles below this fraction of the baseline is a fault.
    pub min_singles_fraction: f64,
    /// Largest key-basis error rate tolerated.
    pub max_qber_key: f64,
    /// Largest test-basis error rate tolerated.
    pub max_qber_test: f64,
    /// Good windows in `Stabilising` before producing.
    pub stabilise_windows: u32,
    /// Faulty windows in `Degraded` before a restart.
    pub degraded_windows: u32,
    /// Weight of each producing window in the singles baseline (exponential average).
    pub baseline_weight: f64,
}

impl Default for SupervisorConfig {
    /// Counts below 30 % of normal, QBER_Z above 8 % or QBER_X above 11 % (at 3σ) are faults;
    /// 4 good windows (2 s) to stabilise; 6 faulty windows (3 s) before a restart.
    fn default() -> Self {
        Self {
            min_singles_fraction: 0.3,
            max_qber_key: 0.08,
            max_qber_test: 0.11,
            stabilise_windows: 4,
            degraded_windows: 6,
            baseline_weight: 0.01,
        }
    }
}

/// The supervisor.
#[derive(Debug, Clone)]
pub struct Supervisor {
    cfg: SupervisorConfig,
    state: LinkState,
    count: u32,
    baseline: [Option<f64>; 2],
    /// Restarts so far.
    pub restarts: u32,
    /// Time spent producing, ps.
    pub producing_ps: i64,
    /// Time observed, ps.
    pub total_ps: i64,
    /// Transitions, in order.
    pub events: Vec<Event>,
}

impl Supervisor {
    /// A supervisor starting in `Acquiring`.
    pub fn new(cfg: SupervisorConfig) -> Self {
        Self {
            cfg,
            state: LinkState::Acquiring,
            count: 0,
            baseline: [None; 2],
            restarts: 0,
            producing_ps: 0,
            total_ps: 0,
            events: Vec::new(),
        }
    }

    /// The current state.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// Producing fraction of the time observed.
    pub fn availability(&self) -> f64 {
        if self.total_ps == 0 {
            0.0
        } else {
            self.producing_ps as f64 / self.total_ps as f64
        }
    }

    fn fault(&self, o: &Observation) -> Option<Fault> {
        if !o.sync_locked {
            return Some(Fault::SyncLost);
        }
        for s in 0..2 {
            if let Some(b) = self.baseline[s] {
                if (o.singles[s] as f64) < self.cfg.min_singles_fraction * b {
                    return Some(Fault::CountDrop(s));
                }
            }
        }
        if o.key.above(self.cfg.max_qber_key) {
            return Some(Fault::QberKey);
        }
        if o.test.above(self.cfg.max_qber_test) {
            return Some(Fault::QberTest);
        }
        None
    }

    fn go(&mut self, time_ps: i64, to: LinkState, fault: Option<Fault>) {
        self.events.push(Event {
            time_ps,
            from: self.state,
            to,
            fault,
        });
        self.state = to;
        self.count = 0;
    }

    /// Takes one window's observation; says whether the key of this window may be kept
    /// (`Producing` through the whole window) and what the link should do.
    pub fn observe(&mut self, o: &Observation) -> (bool, Action) {
        self.total_ps += o.length_ps;
        let fault = self.fault(o);
        let t = o.time_ps;
        let mut action = Action::None;
        let produced = match self.state {
            LinkState::Acquiring => {
                if o.sync_locked && fault.is_none() {
                    self.go(t, LinkState::Stabilising, None);
                }
                false
            }
            LinkState::Stabilising => {
                if let Some(f) = fault {
                    self.go(t, LinkState::Degraded, Some(f));
                } else {
                    self.count += 1;
                    if self.count >= self.cfg.stabilise_windows {
                        self.go(t, LinkState::Producing, None);
                    }
                }
                false
            }
            LinkState::Producing => match fault {
                Some(f) => {
                    self.go(t, LinkState::Degraded, Some(f));
                    false
                }
                None => {
                    for s in 0..2 {
                        let x = o.singles[s] as f64;
                        let w = self.cfg.baseline_weight;
                        self.baseline[s] =
                            Some(self.baseline[s].map_or(x, |b| (1.0 - w) * b + w * x));
                    }
                    self.producing_ps += o.length_ps;
                    true
                }
            },
            LinkState::Degraded => {
                match fault {
                    None => self.go(t, LinkState::Producing, None),
                    Some(f) => {
                        self.count += 1;
                        if self.count >= self.cfg.degraded_windows || f == Fault::SyncLost {
                            self.restarts += 1;
                            self.go(t, LinkState::Recovering, Some(f));
                            action = Action::Reacquire;
                        }
                    }
                }
                false
            }
            LinkState::Recovering => {
                // Wait for the light to come back (the sync is re-acquired next).
                let counts_back = (0..2).all(|s| {
                    self.baseline[s]
                        .is_none_or(|b| o.singles[s] as f64 >= self.cfg.min_singles_fraction * b)
                });
                if counts_back {
                    self.go(t, LinkState::Acquiring, None);
                }
                false
            }
        };
        // Before the first production there is no baseline: seed it from locked windows.
        if self.baseline.iter().any(Option::is_none)
            && o.sync_locked
            && self.state == LinkState::Stabilising
        {
            for s in 0..2 {
                self.baseline[s].get_or_insert(o.singles[s] as f64);
            }
        }
        (produced, action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(t: i64, singles: u64, locked: bool) -> Observation {
        Observation {
            time_ps: t,
            length_ps: 1,
            singles: [singles, singles],
            key: Tally {
                coincidences: 10_000,
                errors: 400,
            },
            test: Tally {
                coincidences: 10_000,
                errors: 500,
            },
            sync_locked: locked,
        }
    }

    #[test]
    fn error_rates_are_judged_at_three_sigma() {
        let t = |n: u64, e: u64| Tally {
            coincidences: n,
            errors: e,
        };
        // Too few coincidences: not judged, whatever the rate.
        assert!(!t(99, 99).above(0.11));
        // 150 coincidences at a true 9 %: 13.3 % (20 errors) is within shot noise of 11 %.
        assert!(!t(150, 20).above(0.11));
        // A real excursion (25 %) is declared at once, and any clear one on many counts.
        assert!(t(150, 38).above(0.11));
        assert!(t(100_000, 11_500).above(0.11));
        assert!(!t(100_000, 10_900).above(0.11));
    }

    #[test]
    fn a_transient_dip_does_not_restart_an_outage_restarts_once() {
        let mut s = Supervisor::new(SupervisorConfig::default());
        let mut t = 0;
        let mut feed = |s: &mut Supervisor, n: usize, singles: u64, locked: bool| {
            let mut acts = Vec::new();
            for _ in 0..n {
                t += 1;
                acts.push(s.observe(&obs(t, singles, locked)).1);
            }
            acts
        };
        feed(&mut s, 10, 1000, true);
        assert_eq!(s.state(), LinkState::Producing);
        // Two windows of low counts: degraded, then back, no restart.
        feed(&mut s, 2, 100, true);
        feed(&mut s, 1, 1000, true);
        assert_eq!((s.state(), s.restarts), (LinkState::Producing, 0));
        // A long outage (detector warm-up): one restart, recovery, acquisition, production.
        let acts = feed(&mut s, 100, 0, false);
        assert_eq!(acts.iter().filter(|a| **a == Action::Reacquire).count(), 1);
        assert_eq!(s.restarts, 1);
        feed(&mut s, 3, 1000, false);
        feed(&mut s, 10, 1000, true);
        assert_eq!(s.state(), LinkState::Producing);
        // 10 of the 126 windows produced key (acquisition and stabilisation take 5 each time).
        assert!(
            (s.availability() - 10.0 / 126.0).abs() < 0.02,
            "{}",
            s.availability()
        );
        assert!(s.events.iter().any(|e| e.fault == Some(Fault::SyncLost)));
    }

    #[test]
    fn window_lock_waits_for_the_coarse_peak_to_stand_out() {
        // 0.5 s windows. Nice 50 km: 8.5 M singles/s, 1.4·10⁵ pairs/s each side: the peak
        // stands out within a second, so the 5 s of data decide. 56.6 dB at 1.5 mW:
        // 1.8·10⁵ singles/s and 210 pairs/s: η √(T/b) = 0.53 √T reaches 6√2 after ~260 s.
        let lock_time = |singles: f64, pairs: f64| {
            let mut m = WindowLockModel::default();
            let w = WindowLight {
                singles: [(singles * 0.5) as u64; 2],
                pairs: pairs * 0.5,
                length_s: 0.5,
            };
            (1..100_000)
                .find(|_| m.update(&w, 0.0))
                .map(|n| n as f64 * 0.5)
        };
        assert_eq!(lock_time(8.5e6, 1.4e5), Some(5.0));
        let t = lock_time(1.8e5, 210.0).expect("locks");
        assert!((230.0..300.0).contains(&t), "{t} s");
        // No light, no lock; a dark window restarts the count.
        let mut m = WindowLockModel::default();
        let dark = WindowLight {
            singles: [0, 0],
            pairs: 0.0,
            length_s: 0.5,
        };
        assert!(!(0..100).any(|_| m.update(&dark, 0.0)));
    }
}

/// The time sync as seen at window level (where there are counts, not time tags): a lock
/// needs `windows_to_lock` consecutive windows with light on both sides (the acquisition's
/// data, 5 s = 10 windows by default) *and* enough of them for the acquisition's coarse
/// cross-correlation to show the peak: with `C` pairs detected on both sides and `n_A`,
/// `n_B` singles in windows of `L` seconds, the peak stands `ΣC / √(Σ n_A n_B b / L)`
/// standard deviations above the background of coarse bins of `b` seconds, and the lock
/// waits until that reaches `min_snr` and the medium stage's 6σ in each half of the data
/// (as [`crate::sync::acquire`] with two medium segments does). At 33.5 dB the 5 s
/// dominate; at 56.6 dB the light of minutes is needed. A jump of either clock beyond
/// the tracker's window (`jump_tolerance_ps`, its ±2 ns) loses the lock. The sync itself,
/// on time tags, is `crate::sync`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowLockModel {
    /// Windows of light needed to lock.
    pub windows_to_lock: u32,
    /// Largest clock jump the tracker follows, ps.
    pub jump_tolerance_ps: f64,
    /// The acquisition's coarse bin, s.
    pub coarse_bin_s: f64,
    /// Peak significance the acquisition needs, standard deviations.
    pub min_snr: f64,
    locked: bool,
    light_windows: u32,
    signal: f64,
    noise: f64,
    jump_at_lock: f64,
}

impl Default for WindowLockModel {
    fn default() -> Self {
        let sync = crate::sync::SyncConfig::default();
        Self {
            windows_to_lock: 10,
            jump_tolerance_ps: 2_000.0,
            coarse_bin_s: sync.coarse_bin_ps as f64 * 1e-12,
            min_snr: sync.min_snr,
            locked: false,
            light_windows: 0,
            signal: 0.0,
            noise: 0.0,
            jump_at_lock: 0.0,
        }
    }
}

/// What one window shows the time sync at window level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowLight {
    /// Singles on each side.
    pub singles: [u64; 2],
    /// Pairs detected on both sides (expected, any detector).
    pub pairs: f64,
    /// Window length, s.
    pub length_s: f64,
}

impl WindowLockModel {
    /// Updates with a window and the clocks' accumulated jump (Bob against Alice), ps.
    /// Returns whether the sync is locked.
    pub fn update(&mut self, w: &WindowLight, clock_jump_ps: f64) -> bool {
        if self.locked && (clock_jump_ps - self.jump_at_lock).abs() > self.jump_tolerance_ps {
            self.drop_lock();
        }
        if !self.locked {
            let light = w.singles[0] > 100 && w.singles[1] > 100;
            if light {
                self.light_windows += 1;
                self.signal += w.pairs;
                self.noise += w.singles[0] as f64 * w.singles[1] as f64 * self.coarse_bin_s
                    / w.length_s.max(1e-12);
            } else {
                self.light_windows = 0;
                self.signal = 0.0;
                self.noise = 0.0;
            }
            // The coarse stage needs `min_snr` over all the data, the medium stage 6σ in
            // each of two halves (6√2 over all).
            let needed = self.min_snr.max(6.0 * std::f64::consts::SQRT_2);
            if self.light_windows >= self.windows_to_lock
                && self.signal >= needed * self.noise.sqrt()
            {
                self.locked = true;
                self.jump_at_lock = clock_jump_ps;
            }
        }
        self.locked
    }

    /// Seconds of light the lock has gathered so far (0 once locked).
    pub fn gathering_s(&self, window_s: f64) -> f64 {
        if self.locked {
            0.0
        } else {
            self.light_windows as f64 * window_s
        }
    }

    /// Drops the lock (a restart).
    pub fn drop_lock(&mut self) {
        self.locked = false;
        self.light_windows = 0;
        self.signal = 0.0;
        self.noise = 0.0;
    }
}
