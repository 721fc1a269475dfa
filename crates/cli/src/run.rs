//! `qkdnet run`: a BBM92 link run unattended in virtual time at window level — the
//! emulator's windows, the link's supervisor and control loops, and full distillation of
//! the sifted key in blocks (keys really produced at both ends and compared).
//!
//! Window level: each 0.5 s window's counts come from the emulator's closed forms
//! (`Bbm92Emulator::step_stats`), its sifted key from correlated bits with the window's
//! drawn errors. The time sync is modelled at this level (a lock needs 10 windows of light
//! on both sides; a clock jump beyond the tracker's ±2 ns window loses it); the sync
//! itself runs on event-level streams (`link::sync`, tested there).

use crate::emulate::{link_from_scenario, EmulatedLink};
use crate::report::{BlockPoint, Event, Sample};
use crate::CliError;
use clap::Args;
use qkdnet_core::bits::Bits;
use qkdnet_distill::auth::AuthKeys;
use qkdnet_distill::random::danger::InsecureDeterministic;
use qkdnet_distill::session::{run_local_with_test, Config, TestTally};
use qkdnet_emulator::bbm92::{correlated_bits, BasisCounts, Bbm92Emulator};
use qkdnet_link::control::{PhaseLock, PolarisationLock, PumpOptimiser, PumpSteering};
use qkdnet_link::events::{EventSifter, TagWindow};
use qkdnet_link::sift::SiftConfig;
use qkdnet_link::supervisor::{Action, Observation, Supervisor, SupervisorConfig, WindowLockModel};
use qkdnet_link::sync::SyncConfig;
use rand::SeedableRng;
use std::path::PathBuf;

/// Flags of `qkdnet run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Scenario file (a `bbm92-cw` link with `[emulator]` and `[[fault]]` sections).
    pub scenario: PathBuf,
    /// Virtual duration: a number with a unit, `s`, `min` or `h` (e.g. `325h`).
    #[arg(long, default_value = "1h")]
    pub duration: String,
    /// Distillation block, seconds of sifted key.
    #[arg(long, default_value_t = 600.0)]
    pub block_s: f64,
    /// QBER_Z the pump is steered to (Nice: 4.3 %).
    #[arg(long, default_value_t = 0.043)]
    pub qber_target: f64,
    /// Master seed (overrides the scenario's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write an HTML report with SVG plots over time (key rate, QBERs, sync offset,
    /// actuators, events) to this file.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// `window`: counts drawn per 0.5 s window from the closed forms (fast, for hundreds
    /// of hours). `event`: every detection emulated as a time tag, the clocks synchronised
    /// from the streams, each window sifted into key (needs `key_bin_ps` in [emulator]).
    #[arg(long, default_value = "window")]
    pub level: String,
    /// Keep the pump at the scenario's power (no steering).
    #[arg(long)]
    pub fixed_pump: bool,
    /// What the pump is steered by: `qber-z` (to `--qber-target`, as Nice describes) or
    /// `key-rate` (the estimated secret key rate's maximum, wherever it puts the QBERs).
    #[arg(long, default_value = "qber-z")]
    pub pump_objective: String,
}

/// The pump's controller.
enum Pump {
    Target(PumpSteering),
    KeyRate(PumpOptimiser),
}

/// Where a window's counts come from.
enum Level {
    /// Closed-form draws, the sync modelled.
    Window(WindowLockModel),
    /// Time tags, synchronised and sifted.
    Event(Box<EventSifter>),
}

fn parse_duration(s: &str) -> Result<f64, CliError> {
    let s = s.trim();
    let (num, mult) = if let Some(v) = s.strip_suffix("min") {
        (v, 60.0)
    } else if let Some(v) = s.strip_suffix('h') {
        (v, 3600.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1.0)
    } else {
        (s, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v * mult <= 1e8 => Ok(v * mult),
        _ => Err(CliError::input(format!(
            "--duration: \"{s}\" is not a positive duration like 600s, 30min or 325h"
        ))),
    }
}

/// Runs `qkdnet run`.
pub fn run(a: &RunArgs) -> Result<(), CliError> {
    let seconds = parse_duration(&a.duration)?;
    if !(a.block_s.is_finite() && a.block_s >= 1.0) {
        return Err(CliError::input(format!(
            "--block-s: must be ≥ 1, got {}",
            a.block_s
        )));
    }
    if !(a.qber_target > 0.0 && a.qber_target < 0.11) {
        return Err(CliError::input(format!(
            "--qber-target: must be in (0, 0.11), got {}",
            a.qber_target
        )));
    }
    let EmulatedLink::Bbm92(link) = link_from_scenario(&a.scenario, a.seed)? else {
        return Err(CliError::input(format!(
            "{}: protocol: qkdnet run drives bbm92-cw links so far",
            a.scenario.display()
        )));
    };
    let link = *link;
    let hw = *link.hardware();
    let seed = link.emulation().seed;
    let (clock_offset_ps, clock_rate) = (
        link.emulation().clock_offset_ps,
        link.emulation().clock_frequency_error,
    );
    let mut emu =
        Bbm92Emulator::new(link.clone(), 0.5).map_err(|e| CliError::input(e.to_string()))?;
    let windows = (seconds / 0.5).ceil() as u64;
    let mut sup = Supervisor::new(SupervisorConfig::default());
    let mut phase = PhaseLock::new(0.0, hw.visibility_test);
    let mut pol = [
        PolarisationLock::new(0.0, link.emulation().polarisation_dependence.max(0.01)),
        PolarisationLock::new(0.0, link.emulation().polarisation_dependence.max(0.01)),
    ];
    let mut pump = match a.pump_objective.as_str() {
        "qber-z" => Pump::Target(PumpSteering::new(
            hw.pump_power_mw,
            a.qber_target,
            hw.max_pump_power_mw,
        )),
        "key-rate" => Pump::KeyRate(PumpOptimiser::new(
            hw.pump_power_mw,
            hw.max_pump_power_mw,
            hw.ec_efficiency,
        )),
        other => {
            return Err(CliError::input(format!(
                "--pump-objective: \"{other}\" is not qber-z or key-rate"
            )))
        }
    };
    let mut bits_rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x0051_574b_4559);
    let pa_rng = InsecureDeterministic::new(seed, "qkdnet run: emulation only");
    // A pre-shared authentication key for the emulated link, replenished from its keys.
    let psk = {
        let mut g = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x50_534b);
        let words: Vec<u64> = (0..4096).map(|_| rand::RngCore::next_u64(&mut g)).collect();
        Bits::from_words(words, 4096 * 64)
    };
    let auth_err = |e: qkdnet_distill::auth::AuthError| CliError::runtime(e.to_string());
    let auth_a = AuthKeys::from_preshared(psk.duplicate()).map_err(auth_err)?;
    let auth_b = AuthKeys::from_preshared(psk).map_err(auth_err)?;
    let cfg = Config {
        sample_fraction: 0.05,
        ..Config::default()
    };
    let mut block_start_s = 0.0;
    let mut sifted_total = 0u64;
    let (mut z_n, mut z_e, mut x_n, mut x_e) = (0u64, 0u64, 0u64, 0u64);
    let mut level = match a.level.as_str() {
        "window" => Level::Window(WindowLockModel::default()),
        "event" => {
            let bin = link.emulation().key_bin_ps;
            if bin <= 0.0 {
                return Err(CliError::input(format!(
                    "{}: emulator.key_bin_ps: --level event sifts keys from time bins; set key_bin_ps (ps, ≥ the coincidence window) in [emulator]",
                    a.scenario.display()
                )));
            }
            let sync_cfg = SyncConfig::default();
            let sift_cfg = SiftConfig {
                window_ps: hw.coincidence_window_ps,
                z_bin_ps: bin,
                ..SiftConfig::default()
            };
            // The acquisition's data plus 1.5 s of margin for Bob's offset.
            let windows = ((sync_cfg.acquisition_ps as f64 * 1e-12 + 1.5) / 0.5).ceil() as usize;
            Level::Event(Box::new(EventSifter::new(sync_cfg, sift_cfg, windows)))
        }
        other => {
            return Err(CliError::input(format!(
                "--level: \"{other}\" is not window or event"
            )))
        }
    };
    let mut locked = false;
    let (mut producing_windows, mut key_coincidences, mut test_coincidences) = (0u64, 0u64, 0u64);
    let mut timeline = Vec::new();
    let mut minute = (0u64, 0u64, 0u64, 0u64, 0u64);
    let bar = indicatif::ProgressBar::new(windows);
    let started = std::time::Instant::now();
    let mut blocks = Blocks {
        alice: Bits::zeros(0),
        bob: Bits::zeros(0),
        test: TestTally { bits: 0, errors: 0 },
        next_id: 0,
        cfg,
        auth: [auth_a, auth_b],
        rng: pa_rng,
        final_bits: 0,
        distilled: 0,
        without_key: 0,
        first_error: None,
        points: Vec::new(),
    };
    for w in 0..windows {
        // The loops act whenever the sync holds (they need coincidences to measure).
        if locked {
            emu.actuators.phase_rad[0] = phase.setting();
            emu.actuators.polarisation_rad[0] = pol[0].setting();
            emu.actuators.polarisation_rad[1] = pol[1].setting();
        }
        let (c, singles, s, keys) = match &mut level {
            Level::Window(sync) => {
                let s = emu.step_stats();
                let singles = [
                    s.singles[0].iter().sum::<u64>(),
                    s.singles[1].iter().sum::<u64>(),
                ];
                let c = s.conditions;
                locked = sync.update(singles[0] > 100 && singles[1] > 100, c.clock_jump_ps[1]);
                (c, singles, Counts { z: s.z, x: s.x }, None)
            }
            Level::Event(sifter) => {
                let ev = emu.step_events();
                let c = ev.conditions;
                let end = c.start_ps + c.length_ps;
                let r = sifter.push(TagWindow {
                    tags: ev.tags,
                    start_ps: link.to_local(0, c.start_ps, c.clock_jump_ps[0]),
                    end_ps: link.to_local(0, end, c.clock_jump_ps[0]),
                });
                locked = r.locked;
                let (counts, keys) = match r.sifted {
                    Some(sf) => {
                        let errors = sf.key_alice.hamming_distance(&sf.key_bob) as u64;
                        let counts = Counts {
                            z: BasisCounts {
                                coincidences: sf.key_alice.len() as u64,
                                errors,
                            },
                            x: BasisCounts {
                                coincidences: sf.test_coincidences,
                                errors: sf.test_errors,
                            },
                        };
                        (counts, Some((sf.key_alice, sf.key_bob)))
                    }
                    None => (Counts::default(), None),
                };
                (c, r.singles, counts, keys)
            }
        };
        let q = |e: u64, n: u64| (n >= 100).then(|| e as f64 / n as f64);
        let obs = Observation {
            time_ps: c.start_ps + c.length_ps,
            length_ps: c.length_ps,
            singles,
            qber_key: q(s.z.errors, s.z.coincidences),
            qber_test: q(s.x.errors, s.x.coincidences),
            sync_locked: locked,
        };
        let (produced, action) = sup.observe(&obs);
        if action == Action::Reacquire {
            match &mut level {
                Level::Window(sync) => sync.drop_lock(),
                Level::Event(sifter) => sifter.drop_lock(),
            }
            locked = false;
        }
        if locked {
            phase.update(s.x.errors, s.x.coincidences);
            pol[0].update(singles[0]);
            pol[1].update(singles[1]);
            if !a.fixed_pump {
                emu.actuators.pump_mw = match &mut pump {
                    Pump::Target(p) => p.update(
                        s.z.errors as f64 / s.z.coincidences.max(1) as f64,
                        s.z.coincidences,
                    ),
                    Pump::KeyRate(p) => p.update(
                        (s.z.coincidences, s.z.errors),
                        (s.x.coincidences, s.x.errors),
                    ),
                };
            }
        }
        if produced {
            let (ka, kb) = match keys {
                Some(k) => k,
                None => correlated_bits(
                    s.z.coincidences as usize,
                    s.z.errors as usize,
                    &mut bits_rng,
                ),
            };
            blocks.push(&ka, &kb, s.x.coincidences, s.x.errors);
            producing_windows += 1;
            key_coincidences += s.z.coincidences;
            test_coincidences += s.x.coincidences;
            sifted_total += s.z.coincidences;
            z_n += s.z.coincidences;
            z_e += s.z.errors;
            x_n += s.x.coincidences;
            x_e += s.x.errors;
            minute.0 += s.z.coincidences;
            minute.1 += s.z.errors;
            minute.2 += s.x.coincidences;
            minute.3 += s.x.errors;
        }
        minute.4 += 1;
        let t_s = (w + 1) as f64 * 0.5;
        if t_s - block_start_s >= a.block_s {
            blocks.flush(t_s, t_s - block_start_s)?;
            block_start_s = t_s;
        }
        if minute.4 == 120 {
            let r = |e: u64, n: u64| if n > 0 { e as f64 / n as f64 } else { f64::NAN };
            let offset_ps = clock_offset_ps[1] - clock_offset_ps[0]
                + (clock_rate[1] - clock_rate[0]) * t_s * 1e12
                + c.clock_jump_ps[1]
                - c.clock_jump_ps[0]
                + c.delay_ps[1]
                - c.delay_ps[0];
            timeline.push(Sample {
                t_s,
                state: format!("{:?}", sup.state()),
                key_coincidences_per_s: minute.0 as f64 / 60.0,
                qber_z: r(minute.1, minute.0),
                qber_x: r(minute.3, minute.2),
                pump_mw: emu.actuators.pump_mw,
                phase_rad: emu.actuators.phase_rad[0],
                polarisation_rad: emu.actuators.polarisation_rad,
                sync_offset_ns: offset_ps * 1e-3,
            });
            minute = (0, 0, 0, 0, 0);
        }
        if w % 1024 == 0 {
            bar.set_position(w);
        }
    }
    blocks.flush(windows as f64 * 0.5, windows as f64 * 0.5 - block_start_s)?;
    bar.finish_and_clear();
    let wall = started.elapsed().as_secs_f64();
    let duration = windows as f64 * 0.5;
    let ratio = |e: u64, n: u64| if n > 0 { e as f64 / n as f64 } else { f64::NAN };
    let events: Vec<Event> = sup
        .events
        .iter()
        .map(|e| Event {
            t_s: e.time_ps as f64 * 1e-12,
            transition: format!("{:?} → {:?}", e.from, e.to),
            fault: e.fault.map(|f| format!("{f:?}")),
        })
        .collect();
    let (final_bits, first_error) = (blocks.final_bits, blocks.first_error.clone());
    let report = serde_json::json!({
        "scenario": a.scenario.display().to_string(),
        "level": a.level,
        "producing_s": producing_windows as f64 * 0.5,
        "key_coincidences": key_coincidences,
        "test_coincidences": test_coincidences,
        "duration_s": duration,
        "seed": seed,
        "mean_secret_key_rate_bps": final_bits as f64 / duration,
        "final_key_bits": final_bits,
        "sifted_bits": sifted_total,
        "blocks_distilled": blocks.distilled,
        "blocks_without_key": blocks.without_key,
        "first_distillation_error": first_error,
        "availability": sup.availability(),
        "automatic_restarts": sup.restarts,
        "manual_interventions": 0,
        "qber_z": ratio(z_e, z_n),
        "qber_x": ratio(x_e, x_n),
        "final_pump_mw": emu.actuators.pump_mw,
        "wall_seconds": wall,
        "events": events,
        "blocks": blocks.points,
        "timeline_per_minute": timeline,
        "notes": if a.level == "event" {
            "event level: every detection emulated as a time tag; the clock model acquired from the two streams and tracked per window; each window sifted into key bits (time-bin parity) and test-basis tallies; each block distilled in full (Cascade, verification, privacy amplification, finite key with the phase error from the test basis)"
        } else {
            "window level: counts from the emulator's closed forms, sifted keys as correlated bits, each block distilled in full (Cascade, verification, privacy amplification, finite key with the phase error from the test basis); the time sync modelled per window"
        },
    });
    if let Some(path) = &a.html {
        write_html(path, a, &report, &timeline, &blocks.points, &events)?;
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        println!(
            "ran {} for {:.0} s of virtual time in {wall:.1} s",
            a.scenario.display(),
            duration
        );
        println!(
            "secret key {final_bits} bits ({:.1} bit/s) from {} blocks; availability {:.2} %, {} automatic restarts, 0 manual interventions",
            final_bits as f64 / duration,
            blocks.distilled,
            100.0 * sup.availability(),
            sup.restarts
        );
        println!(
            "QBER_Z {:.2} %, QBER_X {:.2} %, pump {:.2} mW",
            100.0 * ratio(z_e, z_n),
            100.0 * ratio(x_e, x_n),
            emu.actuators.pump_mw
        );
    }
    Ok(())
}

/// The sifted key waiting for distillation, and what distillation has given.
struct Blocks {
    alice: Bits,
    bob: Bits,
    test: TestTally,
    next_id: u64,
    cfg: Config,
    auth: [AuthKeys; 2],
    rng: InsecureDeterministic,
    final_bits: u64,
    distilled: u64,
    without_key: u64,
    first_error: Option<String>,
    points: Vec<BlockPoint>,
}

impl Blocks {
    /// Adds a window's sifted bits and test-basis tally.
    fn push(&mut self, alice: &Bits, bob: &Bits, test_bits: u64, test_errors: u64) {
        self.alice.append_range(alice, 0, alice.len());
        self.bob.append_range(bob, 0, bob.len());
        self.test.bits += test_bits;
        self.test.errors += test_errors;
    }

    /// Distils what has gathered (both ends in this process, their keys compared); part of
    /// each key — twice the authentication pads the block used — replenishes the pads.
    fn flush(&mut self, t_s: f64, length_s: f64) -> Result<(), CliError> {
        let ka = std::mem::replace(&mut self.alice, Bits::zeros(0));
        let kb = std::mem::replace(&mut self.bob, Bits::zeros(0));
        let test = std::mem::replace(&mut self.test, TestTally { bits: 0, errors: 0 });
        let id = self.next_id;
        self.next_id += 1;
        if ka.len() < 10_000 {
            return Ok(());
        }
        let [auth_a, auth_b] = &mut self.auth;
        let consumed = auth_a.consumed_bits();
        match run_local_with_test(
            id,
            ka,
            kb,
            self.cfg.clone(),
            Some(test),
            auth_a,
            auth_b,
            &mut self.rng,
        ) {
            Ok((fa, fb)) => {
                if fa.key.words() != fb.key.words() {
                    return Err(CliError::runtime(format!(
                        "block {id}: the two ends' keys differ"
                    )));
                }
                let used = (auth_a.consumed_bits() - consumed) as usize;
                let take = fa.key.len().min(2 * used + 4096);
                auth_a.replenish(&fa.key.slice(0, take));
                auth_b.replenish(&fb.key.slice(0, take));
                self.final_bits += (fa.key.len() - take) as u64;
                self.distilled += 1;
                self.points.push(BlockPoint {
                    t_s,
                    final_bits: (fa.key.len() - take) as u64,
                    length_s,
                });
            }
            Err(e) => {
                self.without_key += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(format!("block {id}: {e}"));
                }
            }
        }
        Ok(())
    }
}

/// Writes the HTML report under a temporary name, then renames it into place.
fn write_html(
    path: &std::path::Path,
    a: &RunArgs,
    report: &serde_json::Value,
    timeline: &[Sample],
    blocks: &[BlockPoint],
    events: &[Event],
) -> Result<(), CliError> {
    let f = |k: &str| report[k].as_f64().unwrap_or(f64::NAN);
    let scenario = a.scenario.display().to_string();
    let summary = vec![
        (
            "virtual duration",
            format!(
                "{:.0} s ({:.1} h)",
                f("duration_s"),
                f("duration_s") / 3600.0
            ),
        ),
        (
            "mean secret key rate",
            format!("{:.1} bit/s", f("mean_secret_key_rate_bps")),
        ),
        ("final key", format!("{} bits", report["final_key_bits"])),
        (
            "blocks distilled / without key",
            format!(
                "{} / {}",
                report["blocks_distilled"], report["blocks_without_key"]
            ),
        ),
        (
            "availability",
            format!("{:.3} %", 100.0 * f("availability")),
        ),
        (
            "automatic restarts",
            report["automatic_restarts"].to_string(),
        ),
        ("manual interventions", "0".to_string()),
        (
            "QBER_Z / QBER_X",
            format!(
                "{:.2} % / {:.2} %",
                100.0 * f("qber_z"),
                100.0 * f("qber_x")
            ),
        ),
        ("seed", report["seed"].to_string()),
        ("wall time", format!("{:.1} s", f("wall_seconds"))),
    ];
    let html = crate::report::html(&crate::report::Report {
        scenario: &scenario,
        summary,
        samples: timeline,
        blocks,
        events,
    })
    .map_err(|e| CliError::runtime(format!("--html: drawing the report: {e}")))?;
    let tmp = path.with_extension("html.partial");
    std::fs::write(&tmp, html)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| CliError::runtime(format!("--html: {}: {e}", path.display())))
}

/// A window's key- and test-basis tallies.
#[derive(Default)]
struct Counts {
    z: BasisCounts,
    x: BasisCounts,
}
