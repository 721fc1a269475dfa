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
use qkdnet_emulator::bbm92::BasisCounts;
use qkdnet_network::runner::{
    BlockBuffer, Fidelity, LinkRunner, LocalDistiller, PumpObjective, RunnerConfig, SiftedBlock,
    WINDOW_S,
};
use std::path::PathBuf;

/// Flags of `qkdnet run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Scenario file (a `bbm92-cw` link with `[emulator]` and `[[fault]]` sections; a
    /// `decoy-bb84`, `mdi`, `sns`, `sns-aopp`, `pm` or `di-memory` link runs as a network
    /// of its two ends and its relay; a `cv-gg02` link runs its own blocks), or a network
    /// file (every link of the network with a runtime together: BBM92 CW, decoy BB84, MDI,
    /// twin-field SNS, SNS-AOPP and PM, CV-QKD, DI-QKD; see docs/NETWORK.md).
    pub scenario: PathBuf,
    /// Serve the live dashboard (key rate, QBERs, sync offset, key buffers, events) at this
    /// address, e.g. 127.0.0.1:8080, during the run and after it until interrupted.
    #[arg(long, value_name = "ADDR")]
    pub serve: Option<String>,
    /// Pace the run: this many virtual seconds per wall second (default: as fast as it goes).
    #[arg(long)]
    pub time_scale: Option<f64>,
    /// Network runs: store each node's keys in `DIR/<node>.sqlite` (a KME store).
    #[arg(long, value_name = "DIR")]
    pub store_dir: Option<PathBuf>,
    /// Virtual duration: a number with a unit, `s`, `min` or `h` (e.g. `325h`).
    #[arg(long, default_value = "1h")]
    pub duration: String,
    /// CV-QKD runs: symbols per block [default: the scenario's `[finite_key] block_size`];
    /// every symbol is reconciled, so 1e5 to 1e8.
    #[arg(long)]
    pub block_symbols: Option<f64>,
    /// Distillation block, seconds of sifted key [default: the scenario's `[run]
    /// block_s`, else 600].
    #[arg(long)]
    pub block_s: Option<f64>,
    /// QBER_Z the pump is steered to [default: the scenario's `[run] qber_target`, else
    /// 0.043, Nice's 4.3 %].
    #[arg(long)]
    pub qber_target: Option<f64>,
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
    /// `key-rate` (the estimated secret key rate's maximum, wherever it puts the QBERs)
    /// [default: the scenario's `[run] pump_objective`, else qber-z].
    #[arg(long)]
    pub pump_objective: Option<String>,
}

/// The runtime settings in force: each flag, else the scenario's `[run]` value, else the
/// built-in default.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunSettings {
    pub block_s: f64,
    pub qber_target: f64,
    pub pump_objective: String,
}

impl RunSettings {
    pub(crate) fn resolve(a: &RunArgs, file: &qkdnet_network::scenario::RunSection) -> Self {
        Self {
            block_s: a.block_s.or(file.block_s).unwrap_or(600.0),
            qber_target: a.qber_target.or(file.qber_target).unwrap_or(0.043),
            pump_objective: a
                .pump_objective
                .clone()
                .or_else(|| file.pump_objective.clone())
                .unwrap_or_else(|| "qber-z".into()),
        }
    }
}

pub(crate) fn parse_duration(s: &str) -> Result<f64, CliError> {
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

/// Starts the dashboard when `--serve` asks for it.
pub(crate) fn start_dashboard(
    a: &RunArgs,
    title: &str,
) -> Result<Option<std::sync::Arc<crate::dashboard::Dashboard>>, CliError> {
    if let Some(x) = a.time_scale {
        if !(x.is_finite() && x > 0.0) {
            return Err(CliError::input(format!(
                "--time-scale: must be a positive number, got {x}"
            )));
        }
    }
    let Some(addr) = &a.serve else {
        return Ok(None);
    };
    let d = crate::dashboard::Dashboard::new(title);
    let bound = crate::dashboard::spawn(addr, std::sync::Arc::clone(&d))
        .map_err(|e| CliError::input(format!("--serve: {e}")))?;
    eprintln!("dashboard: http://{bound}/");
    Ok(Some(d))
}

/// Sleeps so that virtual time runs at most `scale` times faster than wall time.
pub(crate) fn pace(started: std::time::Instant, virtual_s: f64, scale: Option<f64>) {
    if let Some(x) = scale {
        let due = std::time::Duration::from_secs_f64(virtual_s / x);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

/// With a dashboard, keeps serving after the run until the process is interrupted.
pub(crate) fn linger(dash: &Option<std::sync::Arc<crate::dashboard::Dashboard>>) {
    if dash.is_some() {
        eprintln!("run finished; the dashboard keeps serving until interrupted (Ctrl-C)");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

/// Whether `path` is a network file (it has `[[node]]` tables) rather than a link scenario.
fn is_network(path: &std::path::Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .is_some_and(|t| t.contains_key("node"))
}

/// A link scenario of a family whose runtime lives in network runs (decoy BB84, MDI,
/// twin-field, DI-QKD) as a network: its two ends, its relay for relay protocols, fibres
/// of the scenario's length (split evenly at the relay) and the scenario's total loss.
fn one_link_network(
    path: &std::path::Path,
    file: &qkdnet_network::scenario::ScenarioFile,
) -> Result<qkdnet_network::spec::Network, CliError> {
    let relay = match file.protocol.as_str() {
        "decoy-bb84" => false,
        "mdi" | "sns" | "sns-aopp" | "pm" | "di-memory" => true,
        other => {
            return Err(CliError::input(format!(
                "{}: protocol: qkdnet run has no link runtime for \"{other}\" yet \
                 (bbm92-cw, decoy-bb84, mdi, sns, sns-aopp, pm, cv-gg02 and di-memory run)",
                path.display()
            )))
        }
    };
    let c = &file.channel;
    let per_km = c.fibre_loss_db_per_km;
    let (km, loss) = match (c.distance_km, c.loss_db) {
        (_, Some(l)) => (c.distance_km.unwrap_or(l / per_km), l),
        (Some(d), None) => (d, d * per_km),
        (None, None) => {
            return Err(CliError::input(format!(
                "{}: channel: give loss_db or distance_km for qkdnet run",
                path.display()
            )))
        }
    };
    let scenario = std::fs::canonicalize(path)
        .map_err(|e| CliError::input(format!("{}: {e}", path.display())))?;
    let scenario = toml::Value::String(scenario.display().to_string());
    let name = toml::Value::String(file.name.clone());
    let mut text = format!("name = {name}\n[[node]]\nid = \"alice\"\n[[node]]\nid = \"bob\"\n");
    if relay {
        text += &format!(
            "[[node]]\nid = \"relay\"\nkind = \"relay\"\n\
             [[fibre]]\nid = \"alice-relay\"\nends = [\"alice\", \"relay\"]\nlength_km = {h}\nloss_db_per_km = {per_km}\n\
             [[fibre]]\nid = \"bob-relay\"\nends = [\"bob\", \"relay\"]\nlength_km = {h}\nloss_db_per_km = {per_km}\n\
             [[link]]\nid = {name}\nscenario = {scenario}\nends = [\"alice\", \"bob\"]\nvia = \"relay\"\nloss_db = {loss}\n",
            h = km / 2.0
        );
    } else {
        text += &format!(
            "[[fibre]]\nid = \"alice-bob\"\nends = [\"alice\", \"bob\"]\nlength_km = {km}\nloss_db_per_km = {per_km}\n\
             [[link]]\nid = {name}\nscenario = {scenario}\nends = [\"alice\", \"bob\"]\nloss_db = {loss}\n"
        );
    }
    Ok(qkdnet_network::spec::parse(&text, path)?)
}

/// The runtime settings the flags ask for.
fn runner_config(a: &RunArgs, set: &RunSettings) -> Result<RunnerConfig, CliError> {
    if !(set.qber_target > 0.0 && set.qber_target < 0.11) {
        return Err(CliError::input(format!(
            "--qber-target ([run] qber_target): must be in (0, 0.11), got {}",
            set.qber_target
        )));
    }
    if !(set.block_s.is_finite() && set.block_s >= 1.0) {
        return Err(CliError::input(format!(
            "--block-s ([run] block_s): must be ≥ 1, got {}",
            set.block_s
        )));
    }
    let pump = match (a.fixed_pump, set.pump_objective.as_str()) {
        (true, _) => PumpObjective::Fixed,
        (false, "qber-z") => PumpObjective::QberZ(set.qber_target),
        (false, "key-rate") => PumpObjective::KeyRate,
        (false, other) => {
            return Err(CliError::input(format!(
                "--pump-objective ([run] pump_objective): \"{other}\" is not qber-z or key-rate"
            )))
        }
    };
    let fidelity = match a.level.as_str() {
        "window" => Fidelity::Window,
        "event" => Fidelity::Event,
        other => {
            return Err(CliError::input(format!(
                "--level: \"{other}\" is not window or event"
            )))
        }
    };
    Ok(RunnerConfig { pump, fidelity })
}

/// Runs `qkdnet run`.
pub fn run(a: &RunArgs) -> Result<(), CliError> {
    let seconds = parse_duration(&a.duration)?;
    if is_network(&a.scenario) {
        // Network files set blocks per link; the flags give the defaults.
        let set = RunSettings::resolve(a, &Default::default());
        let cfg = runner_config(a, &set)?;
        return crate::netrun::run(a, seconds, cfg, set.block_s);
    }
    if a.store_dir.is_some() {
        return Err(CliError::input(
            "--store-dir: keys are stored per node in network runs; give a network file",
        ));
    }
    let file = qkdnet_network::scenario::load(&a.scenario)?;
    if file.protocol == "cv-gg02" {
        let EmulatedLink::Cv(link) = link_from_scenario(&a.scenario, a.seed)? else {
            return Err(CliError::input(format!(
                "{}: protocol: not a CV-QKD link",
                a.scenario.display()
            )));
        };
        let fk = file.finite_key.unwrap_or_default();
        return crate::cvrun::run(a, *link, fk);
    }
    let file_run = file.run.clone();
    file_run
        .check()
        .map_err(|e| CliError::input(format!("{}: {e}", a.scenario.display())))?;
    let set = RunSettings::resolve(a, &file_run);
    let cfg = runner_config(a, &set)?;
    if file.protocol != "bbm92-cw" {
        // The other families' runtimes run in networks: the link alone, as a network of
        // its two ends (and its relay).
        let net = one_link_network(&a.scenario, &file)?;
        return crate::netrun::run_network(a, &net, seconds, cfg, set.block_s);
    }
    let EmulatedLink::Bbm92(link) = link_from_scenario(&a.scenario, a.seed)? else {
        return Err(CliError::input(format!(
            "{}: protocol: qkdnet run drives bbm92-cw links so far",
            a.scenario.display()
        )));
    };
    let link = *link;
    let seed = link.emulation().seed;
    let mut runner = LinkRunner::new(link, &cfg)
        .map_err(|e| CliError::input(format!("{}: {e}", a.scenario.display())))?;
    let windows = (seconds / WINDOW_S).ceil() as u64;
    let mut block_start_s = 0.0;
    let mut sifted_total = 0u64;
    let (mut z_n, mut z_e, mut x_n, mut x_e) = (0u64, 0u64, 0u64, 0u64);
    let (mut producing_windows, mut key_coincidences, mut test_coincidences) = (0u64, 0u64, 0u64);
    let mut timeline = Vec::new();
    let mut minute = (0u64, 0u64, 0u64, 0u64, 0u64);
    let bar = indicatif::ProgressBar::new(windows);
    let started = std::time::Instant::now();
    let mut buffer = BlockBuffer::default();
    let mut blocks = Blocks {
        distiller: LocalDistiller::new(seed).map_err(CliError::runtime)?,
        final_bits: 0,
        distilled: 0,
        without_key: 0,
        first_error: None,
        points: Vec::new(),
    };
    let dash = start_dashboard(a, &format!("qkdnet run — {}", a.scenario.display()))?;
    let mut feed = crate::netrun::Feed::new(1, set.block_s);
    let name = a
        .scenario
        .file_stem()
        .map_or("link".into(), |s| s.to_string_lossy().into_owned());
    for w in 0..windows {
        let out = runner.step();
        if let Some(d) = &dash {
            feed.window(0, &out);
            for (from, to, fault) in &out.transitions {
                let why = fault
                    .as_ref()
                    .map(|f| format!(" ({f})"))
                    .unwrap_or_default();
                d.event(out.t_s, &name, &format!("{from} → {to}{why}"));
            }
            if (w + 1) % crate::netrun::FEED_WINDOWS == 0 {
                feed.point(d, &name, 0, blocks.final_bits);
                d.buffer(
                    &format!("{name} (stored)"),
                    out.t_s,
                    blocks.final_bits as f64,
                );
            }
        }
        pace(started, out.t_s, a.time_scale);
        let s = Counts { z: out.z, x: out.x };
        if let Some((ka, kb)) = &out.keys {
            buffer.push(ka, kb, s.x.coincidences, s.x.errors);
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
        let t_s = out.t_s;
        if t_s - block_start_s >= set.block_s {
            blocks.flush(buffer.take(), t_s, t_s - block_start_s);
            block_start_s = t_s;
        }
        if minute.4 == 120 {
            let r = |e: u64, n: u64| if n > 0 { e as f64 / n as f64 } else { f64::NAN };
            let act = &runner.emulator().actuators;
            timeline.push(Sample {
                t_s,
                state: format!("{:?}", runner.supervisor().state()),
                key_coincidences_per_s: minute.0 as f64 / 60.0,
                qber_z: r(minute.1, minute.0),
                qber_x: r(minute.3, minute.2),
                pump_mw: act.pump_mw,
                phase_rad: act.phase_rad[0],
                polarisation_rad: act.polarisation_rad,
                sync_offset_ns: out.sync_offset_ps * 1e-3,
            });
            minute = (0, 0, 0, 0, 0);
        }
        if w % 1024 == 0 {
            bar.set_position(w);
        }
    }
    let end_s = windows as f64 * WINDOW_S;
    blocks.flush(buffer.take(), end_s, end_s - block_start_s);
    if let Some(d) = &dash {
        // The last block, distilled at the end, on the charts too.
        feed.point(d, &name, 0, blocks.final_bits);
        d.buffer(&format!("{name} (stored)"), end_s, blocks.final_bits as f64);
    }
    bar.finish_and_clear();
    let wall = started.elapsed().as_secs_f64();
    let duration = end_s;
    let sup = runner.supervisor();
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
        "block_s": set.block_s,
        "pump_objective": if a.fixed_pump { "fixed" } else { set.pump_objective.as_str() },
        "qber_target": set.qber_target,
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
        "final_pump_mw": runner.emulator().actuators.pump_mw,
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
        linger(&dash);
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
            runner.emulator().actuators.pump_mw
        );
        linger(&dash);
    }
    Ok(())
}

/// What distillation has given.
struct Blocks {
    distiller: LocalDistiller,
    final_bits: u64,
    distilled: u64,
    without_key: u64,
    first_error: Option<String>,
    points: Vec<BlockPoint>,
}

impl Blocks {
    /// Distils a block (both ends in this process, their keys compared).
    fn flush(&mut self, block: SiftedBlock, t_s: f64, length_s: f64) {
        match self.distiller.distil(block) {
            Ok(None) => {}
            Ok(Some(d)) => {
                let kept = (d.alice.key.len() - d.replenished_bits) as u64;
                self.final_bits += kept;
                self.distilled += 1;
                self.points.push(BlockPoint {
                    t_s,
                    final_bits: kept,
                    length_s,
                });
            }
            Err(e) => {
                self.without_key += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(e);
                }
            }
        }
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
