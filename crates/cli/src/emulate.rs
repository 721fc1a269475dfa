//! `qkdnet emulate`: runs a scenario's link in the emulator at event level and writes each
//! node's time-tag stream (qkdnet `.qtt` and PicoQuant PTU T2) plus a manifest.

use crate::scenario;
use crate::CliError;
use clap::Args;
use qkdnet_core::samples::SampleWriter;
use qkdnet_core::timetag::{PtuT2Writer, QttWriter, TimeTag};
use qkdnet_emulator::analysis::{count, Coincidences, CountSettings};
use qkdnet_emulator::bb84::{Bb84Emulation, Bb84Emulator, Bb84Link, Bb84Stats};
use qkdnet_emulator::bbm92::{Bbm92Emulation, Bbm92Emulator, Bbm92Link};
use qkdnet_emulator::cv::{scatter, CvEmulation, CvEmulator, CvLink, CvStats};
use qkdnet_emulator::ion::{tally, IonEmulation, IonEmulator, IonLink};
use qkdnet_emulator::mdi::{MdiEmulation, MdiEmulator, MdiLink, STATES};
use qkdnet_emulator::tf::{TfEmulation, TfEmulator, TfLink, TfStats, SETTINGS};
use qkdnet_keyrate::Protocol;
use serde::Deserialize;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// Flags of `qkdnet emulate`.
#[derive(Args, Debug)]
pub struct EmulateArgs {
    /// Scenario file (TOML): protocol, hardware, channel, `[emulator]`, `[[fault]]`.
    #[arg(long)]
    pub scenario: PathBuf,
    /// Emulated time, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Output directory (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// File formats, comma separated: `qtt`, `ptu`.
    #[arg(long, default_value = "qtt,ptu")]
    pub formats: String,
    /// Master seed (overrides `[emulator] seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Worker threads (the records do not depend on it); default: all cores.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Event-level window, seconds.
    #[arg(long, default_value_t = 0.01)]
    pub window_s: f64,
    /// Print the manifest as JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// A scenario's link, ready to emulate.
pub enum EmulatedLink {
    /// Time–energy BBM92.
    Bbm92(Box<Bbm92Link>),
    /// CV-QKD GG02.
    Cv(Box<CvLink>),
    /// Trapped-ion memory link.
    Ion(Box<IonLink>),
    /// Twin-field, sending-or-not-sending.
    Tf(Box<TfLink>),
    /// Decoy-state BB84.
    Bb84(Box<Bb84Link>),
    /// MDI-QKD.
    Mdi(Box<MdiLink>),
}

fn table<T: for<'de> Deserialize<'de> + Default>(
    t: &Option<toml::Table>,
    origin: &str,
) -> Result<T, CliError> {
    Ok(scenario::emulator_settings(t, origin)?)
}

/// Builds the emulated link of a scenario file.
pub fn link_from_scenario(path: &Path, seed: Option<u64>) -> Result<EmulatedLink, CliError> {
    let s = scenario::load(path)?;
    let origin = path.display().to_string();
    let protocol = scenario::build_protocol(
        &s.protocol,
        &s.hardware.clone().unwrap_or_default(),
        &origin,
    )?;
    let ch = &s.channel;
    let distance = ch.distance_km.unwrap_or(0.0);
    let loss = ch
        .loss_db
        .unwrap_or(distance * ch.fibre_loss_db_per_km + ch.extra_loss_db);
    let bad = |e: qkdnet_optics::ParamError| {
        CliError::input(format!("{origin}: {}: {}", e.field, e.reason))
    };
    // The `[emulator]` table as the family's settings, the seed overridden when given.
    macro_rules! settings {
        ($t:ty) => {{
            let mut e: $t = table(&s.emulator, &origin)?;
            if let Some(seed) = seed {
                e.seed = seed;
            }
            e
        }};
    }
    let faults = s.faults.clone();
    match protocol {
        Protocol::Bbm92Cw(hw) => {
            let emu = settings!(Bbm92Emulation);
            let link = Bbm92Link::new(hw, loss, distance, emu, faults).map_err(bad)?;
            Ok(EmulatedLink::Bbm92(Box::new(link)))
        }
        Protocol::Cv(hw) => {
            let link = CvLink::new(hw, loss, settings!(CvEmulation))
                .and_then(|l| l.with_faults(faults))
                .map_err(bad)?;
            Ok(EmulatedLink::Cv(Box::new(link)))
        }
        Protocol::Di(di) => {
            let length = ch.distance_km.unwrap_or(loss / di.fibre_attenuation_db_per_km);
            let link = IonLink::new(di.link, loss, length, settings!(IonEmulation))
                .and_then(|l| l.with_faults(faults))
                .map_err(bad)?;
            Ok(EmulatedLink::Ion(Box::new(link)))
        }
        Protocol::DecoyBb84(hw) => {
            let link = Bb84Link::new(hw, loss, settings!(Bb84Emulation))
                .and_then(|l| l.with_faults(faults))
                .map_err(bad)?;
            Ok(EmulatedLink::Bb84(Box::new(link)))
        }
        Protocol::Mdi(hw) => {
            let link = MdiLink::new(hw, loss, settings!(MdiEmulation))
                .and_then(|l| l.with_faults(faults))
                .map_err(bad)?;
            Ok(EmulatedLink::Mdi(Box::new(link)))
        }
        Protocol::TwinField(m) => {
            let link = TfLink::new(m.hw, loss, settings!(TfEmulation))
                .and_then(|l| l.with_faults(faults))
                .map_err(bad)?;
            Ok(EmulatedLink::Tf(Box::new(link)))
        }
        _ => Err(CliError::input(format!(
            "{origin}: protocol: the emulator implements \"bbm92-cw\", \"cv-gg02\", \"di-memory\", \"sns\", \"sns-aopp\", \"pm\", \"decoy-bb84\" and \"mdi\" so far, not \"{}\"",
            s.protocol
        ))),
    }
}

enum Sink {
    Qtt(QttWriter<BufWriter<File>>),
    Ptu(PtuT2Writer<BufWriter<File>>),
}

impl Sink {
    fn write(&mut self, tags: &[TimeTag]) -> Result<(), String> {
        match self {
            Sink::Qtt(w) => w.write(tags).map_err(|e| e.to_string()),
            Sink::Ptu(w) => w.write(tags).map_err(|e| e.to_string()),
        }
    }

    fn finish(self) -> Result<(), String> {
        match self {
            Sink::Qtt(w) => w.finish().map(|_| ()).map_err(|e| e.to_string()),
            Sink::Ptu(w) => w.finish().map(|_| ()).map_err(|e| e.to_string()),
        }
    }
}

/// Runs `qkdnet emulate`.
pub fn run(a: &EmulateArgs) -> Result<(), CliError> {
    if !(a.seconds.is_finite() && a.seconds > 0.0 && a.seconds <= 1e7) {
        return Err(CliError::input(format!(
            "--seconds: must be in (0, 1e7], got {}",
            a.seconds
        )));
    }
    let mut formats = Vec::new();
    for f in a
        .formats
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
    {
        match f {
            "qtt" | "ptu" => formats.push(f.to_string()),
            other => {
                return Err(CliError::input(format!(
                    "--formats: unknown format \"{other}\" (expected qtt, ptu)"
                )))
            }
        }
    }
    match link_from_scenario(&a.scenario, a.seed)? {
        EmulatedLink::Bbm92(link) => run_bbm92(a, &formats, *link),
        EmulatedLink::Cv(link) => run_cv(a, *link),
        EmulatedLink::Ion(link) => run_ion(a, *link),
        EmulatedLink::Tf(link) => run_tf(a, *link),
        EmulatedLink::Bb84(link) => run_bb84(a, *link),
        EmulatedLink::Mdi(link) => run_mdi(a, *link),
    }
}

fn run_bbm92(a: &EmulateArgs, formats: &[String], link: Bbm92Link) -> Result<(), CliError> {
    let mut emu = Bbm92Emulator::new(link.clone(), a.window_s).map_err(window_error)?;
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 256);
    std::fs::create_dir_all(&a.out)
        .map_err(|e| CliError::runtime(format!("{}: cannot create: {e}", a.out.display())))?;
    // Files are written under temporary names and renamed at the end: a run that fails or
    // is interrupted leaves no file that looks complete.
    let mut sinks: Vec<(usize, PathBuf, PathBuf, Sink)> = Vec::new();
    for f in formats {
        for (side, who) in ["alice", "bob"].iter().enumerate() {
            let path = a.out.join(format!("{who}.{f}"));
            let tmp = a.out.join(format!(".{who}.{f}.partial"));
            let file = File::create(&tmp)
                .map_err(|e| CliError::runtime(format!("{}: cannot create: {e}", tmp.display())))?;
            let w = BufWriter::with_capacity(1 << 20, file);
            let sink = if f == "qtt" {
                Sink::Qtt(QttWriter::new(w).map_err(|e| CliError::runtime(e.to_string()))?)
            } else {
                Sink::Ptu(PtuT2Writer::new(w).map_err(|e| CliError::runtime(e.to_string()))?)
            };
            sinks.push((side, tmp, path, sink));
        }
    }
    let windows = (a.seconds / a.window_s).ceil() as u64;
    let bar = indicatif::ProgressBar::new(windows);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} windows, {elapsed} ({eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let settings = CountSettings {
        window_ps: link.hardware().coincidence_window_ps,
        z_bin_ps: 1_000.0,
        off_peak_shift_ps: 20_000.0,
        delay_ps: link.fibre_delay_ps(),
    };
    let mut total = Coincidences::default();
    let mut tags_written = [0u64; 2];
    let mut failure: Option<String> = None;
    let first = link.conditions(0, emu.window_ps(), &emu.drift(), &emu.actuators);
    let expected = link.expected(&first);
    let started = std::time::Instant::now();
    emu.run_events(windows, threads, |w| {
        if failure.is_some() {
            return;
        }
        let c = count(&link, [&w.tags[0], &w.tags[1]], &settings);
        total += &c;
        for (n, tags) in tags_written.iter_mut().zip(&w.tags) {
            *n += tags.len() as u64;
        }
        for (side, tmp, _, sink) in sinks.iter_mut() {
            if let Err(e) = sink.write(&w.tags[*side]) {
                failure = Some(format!("{}: {e}", tmp.display()));
                return;
            }
        }
        bar.inc(1);
    });
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(f) = failure {
        for (_, tmp, _, _) in &sinks {
            let _ = std::fs::remove_file(tmp);
        }
        return Err(CliError::runtime(f));
    }
    let mut files = Vec::new();
    for (_, tmp, path, sink) in sinks {
        sink.finish()
            .map_err(|e| CliError::runtime(format!("{}: {e}", tmp.display())))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| CliError::runtime(format!("{}: cannot rename: {e}", path.display())))?;
        files.push(path.display().to_string());
    }
    let seconds = windows as f64 * a.window_s;
    let rate = |n: u64| n as f64 / seconds;
    let qber = |e: u64, n: u64| if n > 0 { e as f64 / n as f64 } else { f64::NAN };
    let emu_cfg = link.emulation();
    let manifest = serde_json::json!({
        "scenario": a.scenario.display().to_string(),
        "protocol": "bbm92-cw",
        "level": "event",
        "seed": emu_cfg.seed,
        "seconds": seconds,
        "window_s": a.window_s,
        "files": files,
        "format_doc": "docs/EMULATOR.md; .qtt: crates/core/src/timetag.rs; .ptu: PicoQuant PTU T2, HydraHarp V2 records at 1 ps",
        "channels": {"0": "key arm (arrival time)", "1": "analyser output 0", "2": "analyser output 1"},
        "tags": {"alice": tags_written[0], "bob": tags_written[1]},
        "ground_truth": {
            "note": "coincidences counted with the emulator's own knowledge of the clocks and delays; a link finds them from the streams alone",
            "clock_offset_ps": emu_cfg.clock_offset_ps,
            "clock_frequency_error": emu_cfg.clock_frequency_error,
            "fibre_delay_ps": link.fibre_delay_ps(),
            "singles_hz": total.singles.map(|s| s.map(rate)),
            "key_coincidences_hz": rate(total.z.coincidences),
            "key_accidentals_hz": rate(total.z_off_peak),
            "qber_z_accidental_limited": 0.5 * qber(total.z_off_peak, total.z.coincidences),
            "test_coincidences_hz": rate(total.x.coincidences),
            "qber_x": qber(total.x.errors, total.x.coincidences),
        },
        "expected_at_start": {
            "singles_hz": expected.singles_hz,
            "key_coincidences_hz": expected.zz_true_hz + expected.zz_accidental_hz,
            "key_accidentals_hz": expected.zz_accidental_hz,
            "qber_z_accidental_limited": expected.qber_z(),
            "test_coincidences_hz": expected.xx_true_hz + expected.xx_accidental_hz,
            "qber_x": expected.qber_x(),
        },
        "wall_seconds": elapsed,
        "events_per_second": (tags_written[0] + tags_written[1]) as f64 / elapsed,
    });
    if let Some(mpath) = write_manifest(a, &manifest)? {
        println!(
            "emulated {seconds} s of {} (seed {}) in {elapsed:.1} s: {} + {} tags",
            a.scenario.display(),
            emu_cfg.seed,
            tags_written[0],
            tags_written[1]
        );
        println!(
            "singles  alice {:.0}/s  bob {:.0}/s",
            rate(total.singles[0].iter().sum()),
            rate(total.singles[1].iter().sum())
        );
        println!(
            "key      {:.0} coincidences/s, {:.0} accidentals/s, QBER_Z (accidental-limited) {:.2} % (expected {:.2} %)",
            rate(total.z.coincidences),
            rate(total.z_off_peak),
            50.0 * qber(total.z_off_peak, total.z.coincidences),
            100.0 * expected.qber_z()
        );
        println!(
            "test     {:.0} coincidences/s, QBER_X {:.2} % (expected {:.2} %)",
            rate(total.x.coincidences),
            100.0 * qber(total.x.errors, total.x.coincidences),
            100.0 * expected.qber_x()
        );
        for f in &files {
            println!("wrote {f}");
        }
        println!("wrote {}", mpath.display());
    }
    Ok(())
}

/// CV-QKD: Alice's symbols and Bob's outcomes as `.cvq` sample files.
fn run_cv(a: &EmulateArgs, link: CvLink) -> Result<(), CliError> {
    let symbols = a.seconds * link.hardware().symbol_rate_hz;
    if symbols > 1e10 {
        return Err(CliError::input(format!(
            "--seconds: {} s at {} Bd is {symbols:.2e} symbols (over 1e10, {:.0} GB of files); emulate less",
            a.seconds,
            link.hardware().symbol_rate_hz,
            symbols * 32.0 / 1e9
        )));
    }
    let mut emu = CvEmulator::new(link.clone(), a.window_s.min(a.seconds)).map_err(window_error)?;
    let m = emu.moments();
    let mut tables = Tables::create(&a.out, &[("alice.cvq", 2), ("bob.cvq", 2)])?;
    let windows = (symbols / emu.symbols_per_window() as f64).ceil().max(1.0) as u64;
    let bar = indicatif::ProgressBar::new(windows);
    let mut total = CvStats::default();
    let started = std::time::Instant::now();
    for _ in 0..windows {
        let w = emu.step_symbols();
        let s = scatter(&m, &w);
        total.pairs += s.pairs;
        total.sum_aa += s.sum_aa;
        total.sum_ab += s.sum_ab;
        total.sum_bb += s.sum_bb;
        tables.write(0, &w.alice)?;
        tables.write(1, &w.bob)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let files = tables.finish()?;
    let n = total.pairs as f64;
    let hw = link.hardware();
    let (t_hat, xi_hat) = m.estimate(
        total.sum_aa / n,
        total.sum_ab / n,
        total.sum_bb / n,
        hw.detector_efficiency,
        hw.electronic_noise_snu,
    );
    let het = m.pairs_per_symbol == 2;
    let manifest = serde_json::json!({
        "scenario": a.scenario.display().to_string(),
        "protocol": "cv-gg02",
        "level": "event",
        "detection": if het { "heterodyne" } else { "homodyne" },
        "symbols": windows * emu.symbols_per_window(),
        "files": files,
        "format_doc": "docs/EMULATOR.md; .cvq: crates/core/src/samples.rs",
        "columns": {
            "alice": ["x", "p"],
            "bob": if het { ["y_x", "y_p"] } else { ["quadrature (0 = x, 1 = p)", "y"] },
            "units": "shot-noise units",
        },
        "expected": {
            "var_a": m.var_a, "cov_ab": m.cov_ab, "var_b": m.var_b,
            "transmittance": m.gain * m.gain * if het { 2.0 } else { 1.0 } / hw.detector_efficiency,
            "excess_noise_snu": m.excess_noise_snu,
        },
        "measured": {
            "var_a": total.sum_aa / n, "cov_ab": total.sum_ab / n, "var_b": total.sum_bb / n,
            "transmittance": t_hat, "excess_noise_snu": xi_hat,
        },
        "wall_seconds": elapsed,
    });
    if let Some(mpath) = write_manifest(a, &manifest)? {
        println!(
            "emulated {} symbols of {} in {elapsed:.1} s ({})",
            windows * emu.symbols_per_window(),
            a.scenario.display(),
            if het { "heterodyne" } else { "homodyne" }
        );
        println!(
            "estimated T {t_hat:.4e}, excess noise {xi_hat:.4} SNU (model: {:.4} SNU, Raman included)",
            m.excess_noise_snu
        );
        for f in &files {
            println!("wrote {f}");
        }
        println!("wrote {}", mpath.display());
    }
    Ok(())
}

/// Writes `manifest.json`; prints it with `--json` (then returns `None`), else returns its
/// path for the summary.
fn write_manifest(
    a: &EmulateArgs,
    manifest: &serde_json::Value,
) -> Result<Option<PathBuf>, CliError> {
    let text = serde_json::to_string_pretty(manifest).unwrap_or_default();
    let mpath = a.out.join("manifest.json");
    std::fs::write(&mpath, format!("{text}\n"))
        .map_err(|e| CliError::runtime(format!("{}: cannot write: {e}", mpath.display())))?;
    if a.json {
        println!("{text}");
        Ok(None)
    } else {
        Ok(Some(mpath))
    }
}

/// Trapped-ion memory link: heralds and deliveries as tab-separated text (a few per second).
fn run_ion(a: &EmulateArgs, link: IonLink) -> Result<(), CliError> {
    use std::io::Write;
    let window = a.window_s.max(1.0).min(a.seconds);
    let mut emu = IonEmulator::new(link.clone(), window).map_err(window_error)?;
    let windows = (a.seconds / window).ceil().max(1.0) as u64;
    let mut heralds = Vec::new();
    let mut deliveries = Vec::new();
    for _ in 0..windows {
        let w = emu.step_events();
        heralds.extend(w.heralds);
        deliveries.extend(w.deliveries);
    }
    std::fs::create_dir_all(&a.out)
        .map_err(|e| CliError::runtime(format!("{}: cannot create: {e}", a.out.display())))?;
    let write = |name: &str, text: String| -> Result<String, CliError> {
        let path = a.out.join(name);
        let tmp = a.out.join(format!(".{name}.partial"));
        let mut f = File::create(&tmp)
            .map_err(|e| CliError::runtime(format!("{}: cannot create: {e}", tmp.display())))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| CliError::runtime(format!("{}: cannot write: {e}", tmp.display())))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| CliError::runtime(format!("{}: cannot rename: {e}", path.display())))?;
        Ok(path.display().to_string())
    };
    let mut h = String::from(
        "time_ps\tattempt\tdetector\talice_setting\tbob_setting\talice_outcome\tbob_outcome\n",
    );
    for x in &heralds {
        h.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            x.time_ps,
            x.attempt,
            x.detector,
            x.alice_setting,
            x.bob_setting,
            x.outcomes[0],
            x.outcomes[1]
        ));
    }
    let mut d = String::from("time_ps\tage_s\tfidelity\n");
    for x in &deliveries {
        d.push_str(&format!(
            "{}\t{}\t{}\n",
            x.time_ps,
            x.age_s.map_or("none".to_string(), |v| v.to_string()),
            x.fidelity
        ));
    }
    let files = vec![write("heralds.tsv", h)?, write("deliveries.tsv", d)?];
    let s = tally(&heralds);
    let p = link.point();
    let seconds = windows as f64 * window;
    let mean_f = if deliveries.is_empty() {
        f64::NAN
    } else {
        deliveries.iter().map(|d| d.fidelity).sum::<f64>() / deliveries.len() as f64
    };
    let manifest = serde_json::json!({
        "scenario": a.scenario.display().to_string(),
        "protocol": "di-memory",
        "level": "event",
        "seconds": seconds,
        "files": files,
        "format_doc": "docs/EMULATOR.md (trapped-ion link)",
        "expected": {
            "attempt_rate_hz": p.attempt_rate_hz,
            "success_probability": p.success_probability,
            "heralds_per_second": 1.0 / p.generation_time_s,
            "eta_link": p.eta_link,
            "chsh": link.chsh_after(0.0),
            "mean_delivery_fidelity": link.expected_delivery_fidelity(),
        },
        "measured": {
            "heralds": s.heralds,
            "heralds_per_second": s.heralds as f64 / seconds,
            "chsh": s.chsh(),
            "key_error": if s.key_pairs > 0 { s.key_errors as f64 / s.key_pairs as f64 } else { f64::NAN },
            "mean_delivery_fidelity": mean_f,
        },
    });
    if let Some(mpath) = write_manifest(a, &manifest)? {
        println!(
            "emulated {seconds} s of {}: {} heralds ({:.3}/s, model {:.3}/s), CHSH {:.3} (model {:.3}), mean delivered fidelity {mean_f:.3} (model {:.3})",
            a.scenario.display(),
            s.heralds,
            s.heralds as f64 / seconds,
            1.0 / p.generation_time_s,
            s.chsh(),
            link.chsh_after(0.0),
            link.expected_delivery_fidelity()
        );
        for f in &files {
            println!("wrote {f}");
        }
        println!("wrote {}", mpath.display());
    }
    Ok(())
}

/// Twin-field: the relay's clicks and each user's emission log of the clicked pulses, plus
/// the pulses sent per setting pair in each window, as `.qtab` record tables.
fn run_tf(a: &EmulateArgs, link: TfLink) -> Result<(), CliError> {
    let (window, windows) = pulse_windows(a, link.model().hw.clock_hz)?;
    let mut emu = TfEmulator::new(link.clone(), window).map_err(window_error)?;
    let mut tables = Tables::create(
        &a.out,
        &[
            ("relay.qtab", 2),
            ("alice.qtab", 3),
            ("bob.qtab", 3),
            ("sent.qtab", 2 + (SETTINGS * SETTINGS) as u32),
        ],
    )?;
    let mut total = TfStats::default();
    let mut clicks = 0u64;
    let bar = indicatif::ProgressBar::new(windows);
    let started = std::time::Instant::now();
    for _ in 0..windows {
        let w = emu.step_events();
        let s = link.tally(&w);
        total += &s;
        clicks += w.clicks.len() as u64;
        let mut rows: [Vec<f64>; 4] = Default::default();
        for c in &w.clicks {
            rows[0].extend([c.pulse as f64, c.detector as f64]);
            rows[1].extend([c.pulse as f64, c.settings[0] as f64, c.slices[0] as f64]);
            rows[2].extend([c.pulse as f64, c.settings[1] as f64, c.slices[1] as f64]);
        }
        rows[3].extend([w.first_pulse as f64, w.pulses as f64]);
        rows[3].extend(w.sent.iter().flatten().map(|&n| n as f64));
        for (i, r) in rows.iter().enumerate() {
            tables.write(i, r)?;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let files = tables.finish()?;
    let seconds = (windows * emu.pulses_per_window()) as f64 / link.model().hw.clock_hz;
    let e_ph = total.matched_errors as f64 / total.matched_clicks.max(1) as f64;
    // PM's key bits are the matched pulses'; SNS's come from the Z window.
    let e_z = if link.is_pm() { e_ph } else { total.qber_z() };
    let model_e_z = link.qber_z();
    let (g, e) = link.matched();
    let manifest = serde_json::json!({
        "scenario": a.scenario.display().to_string(),
        "protocol": if link.is_pm() { "pm" } else { "sns" },
        "level": "event",
        "seconds": seconds,
        "pulses": windows * emu.pulses_per_window(),
        "files": files,
        "format_doc": "docs/EMULATOR.md (twin-field); .qtab: crates/core/src/samples.rs",
        "columns": {
            "relay": ["pulse", "detector (0 bright at δ = 0, 1 other, 2 both)"],
            "alice": ["pulse", if link.is_pm() { "setting (0 signal bit 0, 1 signal bit 1, 2 vacuum, 3 weak decoy)" } else { "setting (0 Z not sending, 1 Z sending, 2 X vacuum, 3 X μ1, 4 X μ2)" }, "phase slice"],
            "bob": ["pulse", "setting", "phase slice"],
            "sent": ["first pulse", "pulses", "sent per setting pair [alice][bob], 25 columns"],
        },
        "expected": {
            "click_probability": emu.click_probability(),
            "qber_z": model_e_z,
            "matched_phase_error": e / g,
        },
        "measured": {
            "clicks": clicks,
            "click_probability": clicks as f64 / (windows * emu.pulses_per_window()) as f64,
            "qber_z": e_z,
            "matched_clicks": total.matched_clicks,
            "matched_phase_error": e_ph,
        },
        "wall_seconds": elapsed,
    });
    if let Some(mpath) = write_manifest(a, &manifest)? {
        println!(
            "emulated {seconds} s of {}: {clicks} relay clicks; key error {:.2} % (model {:.2} %), matched-phase error {:.2} % (model {:.2} %)",
            a.scenario.display(),
            100.0 * e_z,
            100.0 * model_e_z,
            100.0 * e_ph,
            100.0 * e / g
        );
        for f in &files {
            println!("wrote {f}");
        }
        println!("wrote {}", mpath.display());
    }
    Ok(())
}

/// Record-table outputs (`crates/core/src/samples.rs`), written under temporary names and
/// renamed when all are complete; on an error all temporary files are removed.
struct Tables {
    sinks: Vec<(PathBuf, PathBuf, SampleWriter<BufWriter<File>>)>,
}

impl Tables {
    /// Creates `DIR/NAME` for each `(NAME, columns)`.
    fn create(dir: &Path, files: &[(&str, u32)]) -> Result<Self, CliError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::runtime(format!("{}: cannot create: {e}", dir.display())))?;
        let mut t = Self { sinks: Vec::new() };
        for &(name, cols) in files {
            let path = dir.join(name);
            let tmp = dir.join(format!(".{name}.partial"));
            let file = match File::create(&tmp) {
                Ok(f) => f,
                Err(e) => {
                    t.abort();
                    return Err(CliError::runtime(format!(
                        "{}: cannot create: {e}",
                        tmp.display()
                    )));
                }
            };
            let w = SampleWriter::new(BufWriter::with_capacity(1 << 20, file), cols)
                .map_err(|e| CliError::runtime(e.to_string()))?;
            t.sinks.push((tmp, path, w));
        }
        Ok(t)
    }

    /// Appends rows to table `i`.
    fn write(&mut self, i: usize, rows: &[f64]) -> Result<(), CliError> {
        let (tmp, _, sink) = &mut self.sinks[i];
        if let Err(e) = sink.write(rows) {
            let msg = format!("{}: {e}", tmp.display());
            self.abort();
            return Err(CliError::runtime(msg));
        }
        Ok(())
    }

    fn abort(&self) {
        for (t, _, _) in &self.sinks {
            let _ = std::fs::remove_file(t);
        }
    }

    /// Completes every table; returns their paths.
    fn finish(self) -> Result<Vec<String>, CliError> {
        let mut files = Vec::new();
        for (tmp, path, sink) in self.sinks {
            sink.finish()
                .map_err(|e| CliError::runtime(format!("{}: {e}", tmp.display())))?;
            std::fs::rename(&tmp, &path).map_err(|e| {
                CliError::runtime(format!("{}: cannot rename: {e}", path.display()))
            })?;
            files.push(path.display().to_string());
        }
        Ok(files)
    }
}

/// Decoy BB84: Bob's clicks and Alice's log of the clicked pulses, plus the pulses sent per
/// (intensity, bases) in each window, as `.qtab` record tables.
fn run_bb84(a: &EmulateArgs, link: Bb84Link) -> Result<(), CliError> {
    let clock = link.hardware().clock_hz;
    let (window, windows) = pulse_windows(a, clock)?;
    let mut emu = Bb84Emulator::new(link.clone(), window).map_err(window_error)?;
    let mut tables = Tables::create(
        &a.out,
        &[("bob.qtab", 3), ("alice.qtab", 4), ("sent.qtab", 14)],
    )?;
    let mut total = Bb84Stats::default();
    let mut clicks = 0u64;
    let mut sent_pulses = 0u64;
    let bar = indicatif::ProgressBar::new(windows);
    for _ in 0..windows {
        let w = emu.step_events();
        total += &qkdnet_emulator::bb84::tally(&w);
        clicks += w.clicks.len() as u64;
        sent_pulses += w.pulses;
        let mut rows: [Vec<f64>; 3] = Default::default();
        for c in &w.clicks {
            rows[0].extend([c.pulse as f64, c.bob_basis as f64, c.detector as f64]);
            rows[1].extend([
                c.pulse as f64,
                c.alice_basis as f64,
                c.alice_bit as f64,
                c.intensity as f64,
            ]);
        }
        rows[2].extend([w.first_pulse as f64, w.pulses as f64]);
        rows[2].extend(w.sent.iter().flatten().flatten().map(|&n| n as f64));
        for (i, r) in rows.iter().enumerate() {
            tables.write(i, r)?;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let files = tables.finish()?;
    let qber = total.qber_z();
    let manifest = serde_json::json!({
        "scenario": a.scenario.display().to_string(),
        "protocol": "decoy-bb84",
        "level": "event",
        "seconds": sent_pulses as f64 / clock,
        "pulses": sent_pulses,
        "files": files,
        "format_doc": "docs/EMULATOR.md (decoy BB84); .qtab: crates/core/src/samples.rs",
        "columns": {
            "bob": ["pulse", "basis (0 Z, 1 X)", "detector (0, 1, 2 both)"],
            "alice": ["pulse", "basis", "bit", "intensity (0 μ1, 1 μ2, 2 μ3)"],
            "sent": ["first pulse", "pulses", "sent per [intensity][alice basis][bob basis], 12 columns"],
        },
        "measured": {"clicks": clicks, "qber_z": qber},
        "expected": {"clicks_per_pulse_matched_basis": (0..3).map(|k| link.expected(k).0).collect::<Vec<_>>()},
    });
    if let Some(mpath) = write_manifest(a, &manifest)? {
        println!(
            "emulated {} pulses of {}: {clicks} clicks, QBER_Z {:.2} %",
            sent_pulses,
            a.scenario.display(),
            100.0 * qber
        );
        for f in &files {
            println!("wrote {f}");
        }
        println!("wrote {}", mpath.display());
    }
    Ok(())
}

/// MDI-QKD: the relay's clicks and both users' states of the clicked pulses, plus the
/// pulses sent per state pair in each window, as `.qtab` record tables.
fn run_mdi(a: &EmulateArgs, link: MdiLink) -> Result<(), CliError> {
    let clock = link.hardware().clock_hz;
    let (window, windows) = pulse_windows(a, clock)?;
    let mut emu = MdiEmulator::new(link.clone(), window).map_err(window_error)?;
    let mut tables = Tables::create(
        &a.out,
        &[
            ("relay.qtab", 2),
            ("alice.qtab", 2),
            ("bob.qtab", 2),
            ("sent.qtab", 2 + (STATES * STATES) as u32),
        ],
    )?;
    let mut psi = [[0u64; STATES]; STATES];
    let (mut clicks, mut sent_pulses) = (0u64, 0u64);
    let bar = indicatif::ProgressBar::new(windows);
    for _ in 0..windows {
        let w = emu.step_events();
        let p = qkdnet_emulator::mdi::psi_minus_counts(&w);
        for (row, add) in psi.iter_mut().zip(&p) {
            for (x, y) in row.iter_mut().zip(add) {
                *x += y;
            }
        }
        clicks += w.clicks.len() as u64;
        sent_pulses += w.pulses;
        let mut rows: [Vec<f64>; 4] = Default::default();
        for c in &w.clicks {
            rows[0].extend([c.pulse as f64, c.detectors as f64]);
            rows[1].extend([c.pulse as f64, c.states[0] as f64]);
            rows[2].extend([c.pulse as f64, c.states[1] as f64]);
        }
        rows[3].extend([w.first_pulse as f64, w.pulses as f64]);
        rows[3].extend(w.sent.iter().flatten().map(|&n| n as f64));
        for (i, r) in rows.iter().enumerate() {
            tables.write(i, r)?;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let files = tables.finish()?;
    let qber = qkdnet_emulator::mdi::qber_z(&psi);
    let psi_total: u64 = psi.iter().flatten().sum();
    let manifest = serde_json::json!({
        "scenario": a.scenario.display().to_string(),
        "protocol": "mdi",
        "level": "event",
        "seconds": sent_pulses as f64 / clock,
        "pulses": sent_pulses,
        "files": files,
        "format_doc": "docs/EMULATOR.md (MDI); .qtab: crates/core/src/samples.rs",
        "columns": {
            "relay": ["pulse", "detectors (bit 0 cH, 1 cV, 2 dH, 3 dV)"],
            "alice": ["pulse", "state (0,1: Z bit at s; 2+2i+bit: X at intensity i of 0, ν, μ)"],
            "bob": ["pulse", "state"],
            "sent": ["first pulse", "pulses", "sent per state pair [alice][bob], 64 columns"],
        },
        "measured": {"clicks": clicks, "psi_minus": psi_total, "qber_z": qber},
    });
    if let Some(mpath) = write_manifest(a, &manifest)? {
        println!(
            "emulated {sent_pulses} pulses of {}: {clicks} relay events, {psi_total} ψ⁻, QBER_Z {:.2} %",
            a.scenario.display(),
            100.0 * qber
        );
        for f in &files {
            println!("wrote {f}");
        }
        println!("wrote {}", mpath.display());
    }
    Ok(())
}

/// The windows of a pulsed link's run: window length (s) and count; refuses runs of more
/// than 1e15 pulses.
fn pulse_windows(a: &EmulateArgs, clock_hz: f64) -> Result<(f64, u64), CliError> {
    let pulses = a.seconds * clock_hz;
    if pulses > 1e15 {
        return Err(CliError::input(format!(
            "--seconds: {} s is {pulses:.2e} pulses (over 1e15); emulate less",
            a.seconds
        )));
    }
    let window = a.window_s.min(a.seconds);
    let per = (window * clock_hz).round().max(1.0);
    Ok((window, (pulses / per).ceil().max(1.0) as u64))
}

/// A window length the emulator refused.
fn window_error(e: qkdnet_optics::ParamError) -> CliError {
    CliError::input(format!("--window-s: {}", e.reason))
}
