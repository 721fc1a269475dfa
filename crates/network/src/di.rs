//! A trapped-ion memory link run for DI-QKD in virtual time (Liu et al., arXiv:2602.08472;
//! REFERENCE.md §1.5): heralded memory–memory pairs measured in CHSH or key settings, each
//! block's key finished under the DI bound on its own counts
//! ([`qkdnet_keyrate::di::di_bound`], Pironio et al. 2009, collective attacks).
//!
//! - Window level: the emulator's attempts, heralds, CHSH and key tallies per 0.5 s window
//!   from its closed forms (`IonEmulator::step_stats`), under the link's faults.
//! - Key: Alice's `A₀` and Bob's key setting `B₂` agree but for the Werner state's
//!   `(1 − V)/2` (z correlations do not dephase); each window's key rounds are drawn with
//!   their errors, as the other pulsed families' sifted keys are.
//! - Test rounds: the CHSH game. A round of settings `(a, b)` is won when the outcomes
//!   agree, or for `(1, 1)` disagree; the winning probability is `½ + S/8`, so a lost
//!   game is the test basis's "error" and S ≤ 2 (no violation, no device-independent
//!   key) is an error rate of at least ¼.
//! - Supervision: at a few heralds a second (Liu et al. at 10 km: 2.2/s) a 0.5 s window
//!   holds about one, too few to judge. The supervisor sees trailing tallies over the
//!   last [`TRAIL_WINDOWS`] windows (120 s): heralds below 30 % of normal (a cut of both
//!   arms, the station's detectors warming), or a key error rate above 8 % or a lost-game
//!   rate above ¼ at 3σ, is a fault. A cut of one arm halves the heralds, no count drop
//!   by that rule, and takes S below 2: with thousands of CHSH rounds in the trail (a lab
//!   link) the lost games show it within about 90 s (test); with the ~60 rounds of Liu et
//!   al.'s link at half rate the error rate is not judged (fewer than 100 rounds), and
//!   only the block's bound sees it (S_L < 2: no key). Either way no key comes of it.
//! - The share of test rounds is the plan's `test_fraction` (the emulator's
//!   `key_fraction` is set to its complement), so the run and the plan count alike.

use crate::runner::{PulsedLoop, WindowOutput};
use crate::InputError;
use qkdnet_emulator::bbm92::{correlated_bits, BasisCounts};
use qkdnet_emulator::ion::{IonEmulator, IonLink, IonStats};
use qkdnet_keyrate::di::DiQkd;
use qkdnet_link::supervisor::{SupervisorConfig, Tally};
use std::collections::VecDeque;

/// Windows in the supervisor's trailing tallies (120 s).
pub const TRAIL_WINDOWS: usize = 240;

/// The CHSH game's tally of CHSH rounds: rounds played and games lost.
pub fn chsh_game(s: &IonStats) -> Tally {
    let mut t = Tally::default();
    for a in 0..2 {
        for b in 0..2 {
            let (n, agree) = (s.chsh_pairs[a][b], s.chsh_agree[a][b]);
            t.coincidences += n;
            t.errors += if (a, b) == (1, 1) { agree } else { n - agree };
        }
    }
    t
}

/// One emulated ion memory link at runtime (see the module's notes).
pub struct DiRunner {
    emu: IonEmulator,
    hw: DiQkd,
    run: PulsedLoop,
    trail: VecDeque<IonStats>,
}

impl DiRunner {
    /// A runner for `link` with the plan's DI settings `hw`; `seed` drives the key draws.
    pub fn new(link: IonLink, hw: DiQkd, seed: u64) -> Result<Self, InputError> {
        let emu = IonEmulator::new(link, crate::runner::WINDOW_S)
            .map_err(|e| InputError::new(format!("{}: {}", e.field, e.reason)))?;
        let cfg = SupervisorConfig {
            max_qber_test: 0.25,
            ..SupervisorConfig::default()
        };
        Ok(Self {
            emu,
            hw,
            run: PulsedLoop::with_supervisor(seed ^ 0x0044_4951_4b44, cfg),
            trail: VecDeque::with_capacity(TRAIL_WINDOWS + 1),
        })
    }

    /// The plan's DI settings.
    pub fn hardware(&self) -> &DiQkd {
        &self.hw
    }

    /// The emulated link.
    pub fn link(&self) -> &IonLink {
        self.emu.link()
    }

    /// Virtual time, s.
    pub fn time_s(&self) -> f64 {
        self.run.time_s()
    }

    /// The supervisor.
    pub fn supervisor(&self) -> &qkdnet_link::supervisor::Supervisor {
        &self.run.sup
    }

    /// Runs one window.
    pub fn step(&mut self) -> WindowOutput {
        let st = self.emu.step_stats();
        self.trail.push_back(st);
        if self.trail.len() > TRAIL_WINDOWS {
            self.trail.pop_front();
        }
        let mut sum = IonStats::default();
        for w in &self.trail {
            sum.add(w);
        }
        // Until the trail is full its heralds stand for a full trail's, so that the
        // singles baseline starts at the link's level.
        let scale = TRAIL_WINDOWS as f64 / self.trail.len() as f64;
        let heralds = (sum.heralds as f64 * scale).round() as u64;
        let trailing_key = BasisCounts {
            coincidences: sum.key_pairs,
            errors: sum.key_errors,
        };
        let (t_s, produced, transitions) =
            self.run
                .judge(heralds, &trailing_key, chsh_game(&sum), None);
        let z = BasisCounts {
            coincidences: st.key_pairs,
            errors: st.key_errors,
        };
        let keys = produced.then(|| {
            correlated_bits(
                st.key_pairs as usize,
                st.key_errors as usize,
                &mut self.run.bits_rng,
            )
        });
        // The CHSH rounds are not a test basis of the session's (their lost games run at
        // ½ − S/8, 15 % at best): the block's bound takes them from `di`.
        WindowOutput {
            di: produced.then(|| st.di_counts()),
            ..WindowOutput::pulsed(t_s, st.heralds, z, produced, keys, transitions)
        }
    }
}
