//! `qkdnet bench …`: throughput measurements printed as JSON, in domain units, with the
//! machine they ran on. Criterion benches (`cargo bench`) remain the reference for
//! statistically careful numbers; this command is for a user checking their own machine.

use crate::CliError;
use clap::{Args, Subcommand};
use qkdnet_keyrate::optimise::OptimiseOptions;
use qkdnet_keyrate::{protocol, sweep, FiniteKey, Protocol, Security, SweepOptions};
use serde::Serialize;
use std::time::Instant;

/// `qkdnet bench` subcommands.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Key-rate sweeps: fixed and fully optimised finite-key sweeps per protocol family.
    Rate(RateBenchArgs),
    /// Key distillation of one block of correlated random bits, stage by stage.
    Distill(DistillBenchArgs),
    /// ETSI 014 key delivery: enc_keys + dec_keys pairs over mutual TLS on loopback.
    Kms(KmsBenchArgs),
    /// The photonic emulator: event level (detections/s, one core) and window level
    /// (emulated hours per wall second).
    Emulate(EmulateBenchArgs),
    /// CV-QKD reconciliation: 8-D MDR and a multi-edge LDPC code designed for the SNR, on
    /// frames through a Gaussian channel (decoded Mbit/s, β, frame errors).
    Cv(CvBenchArgs),
    /// Network planning (links planned per second) and a network run in virtual time
    /// (virtual seconds per wall second, with full distillation).
    Plan(PlanBenchArgs),
}

/// Flags of `qkdnet bench cv`.
#[derive(Args, Debug)]
pub struct CvBenchArgs {
    /// Signal-to-noise ratio per real dimension of the Gaussian channel (0.011: the 120 km
    /// scenario at the planner's modulation variance; 0.5: 30 km).
    #[arg(long, default_value_t = 0.03)]
    pub snr: f64,
    /// Frames decoded.
    #[arg(long, default_value_t = 4)]
    pub frames: usize,
    /// Code length, bits (a multiple of 8).
    #[arg(long, default_value_t = 1 << 20)]
    pub frame_bits: usize,
    /// Decoder threads (default: all logical CPUs).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The code is designed for SNR / (gap + 0.13 SNR) (default: the runtime's 1.07): lower
    /// for a higher rate and more frame errors.
    #[arg(long)]
    pub design_gap: Option<f64>,
    /// Most decoder iterations per frame (default: the runtime's).
    #[arg(long)]
    pub max_iter: Option<usize>,
    /// Print JSON (the only format; accepted for symmetry).
    #[arg(long)]
    pub json: bool,
}

/// Flags of `qkdnet bench plan`.
#[derive(Args, Debug)]
pub struct PlanBenchArgs {
    /// Network file; default: the embedded 40-user DWDM network.
    #[arg(long)]
    pub network: Option<std::path::PathBuf>,
    /// Plans to time (the median is reported).
    #[arg(long, default_value_t = 9)]
    pub repeats: usize,
    /// Virtual time of the network run, seconds (0: skip it).
    #[arg(long, default_value_t = 600.0)]
    pub run_seconds: f64,
    /// Print JSON (the only format; accepted for symmetry).
    #[arg(long)]
    pub json: bool,
}

/// Flags of `qkdnet bench emulate`.
#[derive(Args, Debug)]
pub struct EmulateBenchArgs {
    /// Scenario file; default: the embedded Nice 50 km link (scenarios/nice-50km.toml).
    #[arg(long)]
    pub scenario: Option<std::path::PathBuf>,
    /// Emulated seconds at event level.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Emulated hours at window level (0.5 s windows).
    #[arg(long, default_value_t = 325.0)]
    pub hours: f64,
    /// Print JSON (the only format; accepted for symmetry).
    #[arg(long)]
    pub json: bool,
}

/// Flags of `qkdnet bench kms`.
#[derive(Args, Debug)]
pub struct KmsBenchArgs {
    /// Concurrent SAE pairs, each with a connection to each KME.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Measurement time, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Key size, bits (a multiple of 8, 64..=8192).
    #[arg(long, default_value_t = 256)]
    pub key_bits: u32,
    /// Key store: `sqlite` (files in a temporary directory) or `postgres` (a throwaway
    /// server started on loopback from Debian's postgresql package).
    #[arg(long, default_value = "sqlite", value_parser = ["sqlite", "postgres"])]
    pub store: String,
    /// Print JSON (the only format; accepted for symmetry).
    #[arg(long)]
    pub json: bool,
}

/// Flags of `qkdnet bench distill`.
#[derive(Args, Debug)]
pub struct DistillBenchArgs {
    /// Bit error rate between Alice's and Bob's strings.
    #[arg(long, default_value_t = 0.02)]
    pub qber: f64,
    /// Sifted bits in the block (accepts 1e8).
    #[arg(long, default_value = "1e7")]
    pub bits: String,
    /// Round-trip time of the classical channel, ms. Above 0 the bench also runs the
    /// link's pipeline (`--depth` blocks in flight, Alice and Bob as two threads pinned
    /// to one core) over an in-process channel that delays every message by half of it,
    /// and once more without the delay, and reports both throughputs.
    #[arg(long, default_value_t = 0.0)]
    pub rtt_ms: f64,
    /// Blocks in flight in the pipelined run of `--rtt-ms` (the link's default).
    #[arg(long, default_value_t = 4)]
    pub depth: usize,
    /// Cascade frame length, bits.
    #[arg(long, default_value_t = 1 << 16)]
    pub frame_bits: usize,
    /// Cascade schedule: original or yanetal.
    #[arg(long, default_value = "yanetal")]
    pub variant: String,
    /// Cascade frames Bob reconciles at once (default: all of the block's). Fewer keep
    /// the frames' state in cache (faster rounds) at the cost of more round trips.
    #[arg(long)]
    pub frames_in_flight: Option<usize>,
    /// Seed of the generated strings.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Blocks distilled one after another, each on fresh strings, as a link does. The
    /// first is cold (buffers allocated, pages faulted in); the figures are the mean of
    /// the others (of the first when there is only one), and the first is reported beside.
    #[arg(long, default_value_t = 3)]
    pub blocks: usize,
    /// Print JSON (the only format; accepted for symmetry).
    #[arg(long)]
    pub json: bool,
}

/// Flags of `qkdnet bench rate`.
#[derive(Args, Debug)]
pub struct RateBenchArgs {
    /// Protocol families to measure (default: every family).
    #[arg(long, value_delimiter = ',')]
    pub protocol: Vec<String>,
    /// Points per sweep (losses spread evenly over 0–80 dB).
    #[arg(long, default_value_t = 400)]
    pub points: usize,
    /// Timed repetitions per sweep; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Print JSON (the default output is also JSON; the flag is accepted for symmetry).
    #[arg(long)]
    pub json: bool,
}

/// Where a measurement ran.
#[derive(Debug, Serialize)]
pub struct MachineInfo {
    /// CPU model name, from /proc/cpuinfo where available.
    pub cpu: String,
    /// Logical CPUs available to this process.
    pub logical_cpus: usize,
    /// Threads the measurement used.
    pub threads_used: usize,
    /// Target architecture and OS.
    pub target: String,
    /// qkdnet version.
    pub qkdnet_version: &'static str,
    /// Whether this binary was built with optimisations.
    pub optimised_build: bool,
}

impl MachineInfo {
    /// Describes the current machine; `threads_used` is what the benchmark used.
    pub fn current(threads_used: usize) -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".to_string());
        Self {
            cpu,
            logical_cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            threads_used,
            target: format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
            qkdnet_version: env!("CARGO_PKG_VERSION"),
            optimised_build: !cfg!(debug_assertions),
        }
    }
}

#[derive(Debug, Serialize)]
struct SweepResult {
    protocol: String,
    mode: &'static str,
    security: &'static str,
    points: usize,
    median_ms: f64,
    points_per_second: f64,
    points_with_key: usize,
}

#[derive(Debug, Serialize)]
struct RateReport {
    benchmark: &'static str,
    finite_key: &'static str,
    machine: MachineInfo,
    results: Vec<SweepResult>,
}

/// Runs a `qkdnet bench` subcommand.
pub fn run(cmd: &BenchCommand) -> Result<(), CliError> {
    match cmd {
        BenchCommand::Rate(a) => rate(a),
        BenchCommand::Distill(a) => distill(a),
        BenchCommand::Kms(a) => kms(a),
        BenchCommand::Emulate(a) => emulate(a),
        BenchCommand::Plan(a) => plan(a),
        BenchCommand::Cv(a) => cv(a),
    }
}

fn cv(a: &CvBenchArgs) -> Result<(), CliError> {
    use qkdnet_distill::cv::block::{self, CodeChoice, ReconcileConfig};
    use qkdnet_distill::cv::design::awgn_capacity;
    use qkdnet_distill::random::danger::InsecureDeterministic;
    use rand::SeedableRng;
    if !(a.snr > 1e-3 && a.snr <= 2.0) {
        return Err(CliError::input(format!(
            "--snr: must be in (0.001, 2], got {}",
            a.snr
        )));
    }
    if a.frames == 0 || a.frames > 1000 || !a.frame_bits.is_multiple_of(8) || a.frame_bits < 1 << 14
    {
        return Err(CliError::input(format!(
            "--frames {} / --frame-bits {}: 1..=1000 frames of at least 16384 bits, a multiple of 8",
            a.frames, a.frame_bits
        )));
    }
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let defaults = ReconcileConfig::default();
    let design_gap = a.design_gap.unwrap_or(defaults.design_gap);
    if !(1.0..=2.0).contains(&design_gap) {
        return Err(CliError::input(format!(
            "--design-gap: must be in [1, 2], got {design_gap}"
        )));
    }
    let max_iter = a.max_iter.unwrap_or(defaults.max_iter);
    if !(1..=100_000).contains(&max_iter) {
        return Err(CliError::input(format!(
            "--max-iter: must be in 1..=100000, got {max_iter}"
        )));
    }
    let cfg = ReconcileConfig {
        frame_bits: a.frame_bits,
        threads,
        design_gap,
        max_iter,
        ..defaults
    };
    let t0 = Instant::now();
    let choice = CodeChoice::for_snr(a.snr, &cfg, 1);
    let (ens, code) = choice
        .build()
        .map_err(|e| CliError::input(format!("--snr {}: {e}", a.snr)))?;
    let build_s = t0.elapsed().as_secs_f64();
    let n = a.frames * code.len();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let g = a.snr.sqrt();
    let (x, y) = qkdnet_distill::cv::gaussian_channel(n, a.snr, &mut rng);
    let mut r = InsecureDeterministic::new(7, "bench cv");
    let t1 = Instant::now();
    let (bob, msg) = block::bob_reconcile(&y, &code, choice, &cfg, &mut r)
        .map_err(|e| CliError::runtime(e.to_string()))?;
    let bob_s = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let alice = block::alice_reconcile(&x, &msg, &code, g, 1.0, &cfg, &|| ())
        .map_err(|e| CliError::runtime(e.to_string()))?;
    let alice_s = t2.elapsed().as_secs_f64();
    let decoded = alice.0.iter().filter(|f| f.is_some()).count();
    let (kept, _) =
        block::verify(&alice, &bob, &cfg, &mut r).map_err(|e| CliError::runtime(e.to_string()))?;
    let report = serde_json::json!({
        "benchmark": "cv reconciliation (8-D MDR, multi-edge LDPC, layered sum-product)",
        "snr": a.snr,
        "design_snr": choice.design_snr,
        "ensemble_rate": ens.rate(),
        "code_rate": code.rate(),
        "beta": code.rate() / awgn_capacity(a.snr),
        "frame_bits": code.len(),
        "design_gap": design_gap,
        "max_iter": max_iter,
        "core_bits": code.core(),
        "edges": code.edges(),
        "frames": a.frames,
        "frames_decoded": decoded,
        "frames_verified": kept.len(),
        "code_design_seconds": build_s,
        "bob_mbit_per_s": n as f64 / bob_s / 1e6,
        "alice_decode_mbit_per_s": n as f64 / alice_s / 1e6,
        "reconciled_key_kbit_per_s": (kept.len() * code.len()) as f64 * code.rate() / alice_s / 1e3,
        "threads": threads,
        "machine": MachineInfo::current(threads),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).map_err(|e| CliError::runtime(e.to_string()))?
    );
    Ok(())
}

const DWDM_40: &str = include_str!("../../../networks/dwdm-40-user.toml");

fn plan(a: &PlanBenchArgs) -> Result<(), CliError> {
    use qkdnet_network::plan::{plan, PlanOptions};
    if a.repeats == 0 || a.repeats > 1000 {
        return Err(CliError::input(format!(
            "--repeats: must be in 1..=1000, got {}",
            a.repeats
        )));
    }
    if !(a.run_seconds >= 0.0 && a.run_seconds <= 86_400.0) {
        return Err(CliError::input(format!(
            "--run-seconds: must be in [0, 86400], got {}",
            a.run_seconds
        )));
    }
    let (path, _tmp) = match &a.network {
        Some(p) => (p.clone(), None),
        None => {
            let dir =
                std::env::temp_dir().join(format!("qkdnet-bench-plan-{}", std::process::id()));
            std::fs::create_dir_all(dir.join("networks"))
                .and_then(|()| std::fs::create_dir_all(dir.join("scenarios")))
                .map_err(|e| CliError::runtime(e.to_string()))?;
            let p = dir.join("networks/dwdm-40-user.toml");
            std::fs::write(&p, DWDM_40)
                .and_then(|()| std::fs::write(dir.join("scenarios/nice-50km.toml"), NICE_50KM))
                .map_err(|e| CliError::runtime(e.to_string()))?;
            (p, Some(TempDir(dir)))
        }
    };
    let net = qkdnet_network::spec::load(&path)?;
    let mut times = Vec::with_capacity(a.repeats);
    let mut with_survival = Vec::with_capacity(a.repeats);
    for _ in 0..a.repeats {
        let t = Instant::now();
        let p = plan(&net, &PlanOptions::PLACEMENT);
        times.push(t.elapsed().as_secs_f64());
        std::hint::black_box(p);
        let t = Instant::now();
        std::hint::black_box(plan(&net, &PlanOptions::default()));
        with_survival.push(t.elapsed().as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (t_plan, t_surv) = (median(&mut times), median(&mut with_survival));
    let links = net.links.len() as f64;
    let mut run = serde_json::Value::Null;
    if a.run_seconds > 0.0 {
        use qkdnet_network::sim::{CountingSink, NetworkSim, SimConfig};
        let p = plan(&net, &PlanOptions::PLACEMENT);
        let cfg = SimConfig {
            runner: Default::default(),
            block_s: 300.0,
            seed: 1,
        };
        let mut sim = NetworkSim::new(&net, &p, &cfg)?;
        let mut sink = CountingSink::default();
        let t = Instant::now();
        let windows = (a.run_seconds / qkdnet_network::runner::WINDOW_S).ceil() as usize;
        for _ in 0..windows {
            sim.step(&net, &mut sink, &mut |_| {}, &mut |_, _| {})
                .map_err(CliError::runtime)?;
        }
        sim.finish(&net, &mut sink, &mut |_| {})
            .map_err(CliError::runtime)?;
        let wall = t.elapsed().as_secs_f64();
        let bits: u64 = sim.links().map(|(_, _, t)| t.final_bits).sum();
        let running = sim.links().count();
        run = serde_json::json!({
            "virtual_seconds": sim.time_s(),
            "links_run": running,
            "wall_seconds": wall,
            "virtual_seconds_per_wall_second": sim.time_s() / wall,
            "link_virtual_seconds_per_wall_second": sim.time_s() * running as f64 / wall,
            "final_key_bits": bits,
            "final_key_mbit_per_wall_second": bits as f64 / wall / 1e6,
        });
    }
    let out = serde_json::json!({
        "benchmark": "plan",
        "network": net.name,
        "links": net.links.len(),
        "plan_seconds": t_plan,
        "links_planned_per_second": links / t_plan,
        "plan_with_survival_seconds": t_surv,
        "repeats": a.repeats,
        "network_run": run,
        "machine": MachineInfo::current(1),
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(())
}

/// The Nice 50 km scenario, embedded so the bench runs anywhere.
const NICE_50KM: &str = include_str!("../../../scenarios/nice-50km.toml");

fn emulate(a: &EmulateBenchArgs) -> Result<(), CliError> {
    use qkdnet_emulator::bbm92::Bbm92Emulator;
    if !(a.seconds > 0.0 && a.seconds <= 3600.0) {
        return Err(CliError::input(format!(
            "--seconds: must be in (0, 3600], got {}",
            a.seconds
        )));
    }
    if !(a.hours > 0.0 && a.hours <= 1e5) {
        return Err(CliError::input(format!(
            "--hours: must be in (0, 1e5], got {}",
            a.hours
        )));
    }
    let (path, _tmp) = match &a.scenario {
        Some(p) => (p.clone(), None),
        None => {
            let dir =
                std::env::temp_dir().join(format!("qkdnet-bench-emulate-{}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(|e| CliError::runtime(e.to_string()))?;
            let p = dir.join("nice-50km.toml");
            std::fs::write(&p, NICE_50KM).map_err(|e| CliError::runtime(e.to_string()))?;
            (p, Some(TempDir(dir)))
        }
    };
    let crate::emulate::EmulatedLink::Bbm92(link) =
        crate::emulate::link_from_scenario(&path, None)?
    else {
        return Err(CliError::input(format!(
            "{}: protocol: bench emulate measures the bbm92-cw emulator",
            path.display()
        )));
    };
    let link = *link;
    // Event level, one thread, 10 ms windows.
    let mut emu =
        Bbm92Emulator::new(link.clone(), 0.01).map_err(|e| CliError::input(e.to_string()))?;
    let windows = (a.seconds / 0.01).ceil() as u64;
    let mut events = 0u64;
    let t = std::time::Instant::now();
    emu.run_events(windows, 1, |w| {
        events += (w.tags[0].len() + w.tags[1].len()) as u64
    });
    let event_s = t.elapsed().as_secs_f64();
    // Window level, 0.5 s windows, as the link runtime drives it.
    let mut emu = Bbm92Emulator::new(link, 0.5).map_err(|e| CliError::input(e.to_string()))?;
    let n = (a.hours * 7200.0).ceil() as u64;
    let mut coincidences = 0u64;
    let t = std::time::Instant::now();
    for _ in 0..n {
        coincidences += emu.step_stats().z.coincidences;
    }
    let window_s = t.elapsed().as_secs_f64();
    let out = serde_json::json!({
        "benchmark": "emulate",
        "scenario": a.scenario.as_ref().map_or("nice-50km (embedded)".to_string(), |p| p.display().to_string()),
        "event_level": {
            "emulated_seconds": windows as f64 * 0.01,
            "events": events,
            "wall_seconds": event_s,
            "events_per_second": events as f64 / event_s,
            "threads": 1,
        },
        "window_level": {
            "emulated_hours": n as f64 / 7200.0,
            "windows": n,
            "key_coincidences": coincidences,
            "wall_seconds": window_s,
            "windows_per_second": n as f64 / window_s,
            "emulated_hours_per_wall_second": n as f64 / 7200.0 / window_s,
        },
        "events_per_second": events as f64 / event_s,
        "machine": MachineInfo::current(1),
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(())
}

/// Removes a temporary directory when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn kms(a: &KmsBenchArgs) -> Result<(), CliError> {
    if a.clients == 0 || a.clients > 4096 {
        return Err(CliError::input(format!(
            "--clients: {} is outside 1..=4096",
            a.clients
        )));
    }
    if !(a.seconds.is_finite() && a.seconds > 0.0 && a.seconds <= 3600.0) {
        return Err(CliError::input(format!(
            "--seconds: {} is outside (0, 3600]",
            a.seconds
        )));
    }
    if !a.key_bits.is_multiple_of(8) || !(64..=8192).contains(&a.key_bits) {
        return Err(CliError::input(format!(
            "--key-bits: {} is not a multiple of 8 in 64..=8192",
            a.key_bits
        )));
    }
    let dir = std::env::temp_dir().join(format!("qkdnet-bench-kms-{}", std::process::id()));
    let (store, _server) = match a.store.as_str() {
        "postgres" => {
            eprintln!("starting a PostgreSQL server on loopback …");
            let server = qkdnet_kms::pg::local::LocalServer::start()
                .map_err(|e| CliError::runtime(format!("bench kms --store postgres: {e}")))?;
            let mk = |n: &str| {
                server
                    .create_db(n)
                    .map_err(|e| CliError::runtime(format!("bench kms: {e}")))
            };
            let (da, db) = (mk("qkdnet_bench_a")?, mk("qkdnet_bench_b")?);
            (
                qkdnet_kms::bench::StoreChoice::Postgres { a: da, b: db },
                Some(server),
            )
        }
        _ => (qkdnet_kms::bench::StoreChoice::Sqlite, None),
    };
    let opts = qkdnet_kms::bench::BenchOptions {
        clients: a.clients,
        seconds: a.seconds,
        key_bits: a.key_bits,
        dir,
        store,
    };
    let r =
        qkdnet_kms::bench::run(&opts).map_err(|e| CliError::runtime(format!("bench kms: {e}")))?;
    let report = serde_json::json!({
        "benchmark": "kms",
        "keys_per_second": r.keys_per_second,
        "p50_ms": r.p50_ms,
        "p99_ms": r.p99_ms,
        "pairs": r.pairs,
        "errors": r.errors,
        "clients": r.clients,
        "key_bits": r.key_bits,
        "durable": r.durable,
        "first_error": r.first_error,
        "cpu_us_per_pair": r.cpu_us_per_pair,
        "store": if a.store == "postgres" {
            "postgres (synchronous_commit=on, group commit)"
        } else {
            "sqlite (WAL, synchronous=FULL, group commit)"
        },
        "note": "each pair: enc_keys (1 key) at the master's KME, then dec_keys at the slave's KME; both KMEs, all clients and the stores share this machine",
        "machine": MachineInfo::current(std::thread::available_parallelism().map_or(1, |n| n.get())),
    });
    println!("{report:#}");
    Ok(())
}

fn median_ms(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn rate(a: &RateBenchArgs) -> Result<(), CliError> {
    if a.points == 0 || a.points > 1_000_000 {
        return Err(CliError::input(format!(
            "--points: {} is outside 1..=1000000",
            a.points
        )));
    }
    if a.repeat == 0 || a.repeat > 1000 {
        return Err(CliError::input(format!(
            "--repeat: {} is outside 1..=1000",
            a.repeat
        )));
    }
    let names: Vec<String> = if a.protocol.is_empty() {
        protocol::NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        a.protocol.clone()
    };
    let step = if a.points > 1 {
        80.0 / (a.points - 1) as f64
    } else {
        0.0
    };
    let points: Vec<(Option<f64>, f64)> = (0..a.points).map(|i| (None, step * i as f64)).collect();
    let mut results = Vec::new();
    for name in &names {
        let p = Protocol::default_for(name).ok_or_else(|| {
            CliError::input(format!(
                "--protocol: unknown protocol '{name}' (known: {})",
                protocol::NAMES.join(", ")
            ))
        })?;
        let n_free = p.model().free_params().len();
        let (sec, security) = (Security::Finite(FiniteKey::default()), "finite");
        for (mode, free) in [("fixed", false), ("optimised", true)] {
            let opts = SweepOptions {
                points: points.clone(),
                free: vec![free; n_free],
                security: sec,
                optimiser: OptimiseOptions::default(),
            };
            let mut samples = Vec::with_capacity(a.repeat);
            let mut with_key = 0;
            for _ in 0..a.repeat {
                let t = Instant::now();
                let rows = std::hint::black_box(sweep(&p, &opts));
                samples.push(t.elapsed().as_secs_f64() * 1e3);
                with_key = rows.iter().filter(|r| r.key_rate_per_pulse > 0.0).count();
            }
            let ms = median_ms(samples);
            results.push(SweepResult {
                protocol: name.clone(),
                mode,
                security,
                points: a.points,
                median_ms: ms,
                points_per_second: a.points as f64 / (ms / 1e3),
                points_with_key: with_key,
            });
        }
    }
    let report = RateReport {
        benchmark: "rate-sweep",
        finite_key: "block 1e12, eps_sec 1e-10, eps_cor 1e-15",
        machine: MachineInfo::current(1),
        results,
    };
    let text = serde_json::to_string_pretty(&report)
        .map_err(|e| CliError::runtime(format!("cannot encode the report: {e}")))?;
    println!("{text}");
    Ok(())
}

/// Stages a message's handling is charged to.
fn stage_of(t: qkdnet_wire::MessageType, alice_side: bool) -> usize {
    use qkdnet_wire::MessageType as M;
    match t {
        M::Hello => 0,
        // Alice's sample is cheap; Bob's handling of it also builds every Cascade frame.
        M::Sample => usize::from(!alice_side),
        M::SampleVerdict | M::ParityQueries | M::ParityAnswers => 1,
        M::VerifyTag | M::FrameTags | M::FrameVerdict => 2,
        M::VerifyResult if alice_side => 3,
        M::VerifyResult => 2,
        M::PaSeed | M::Done | M::Abort => 3,
        // Sifting is not part of a distillation session.
        M::SiftAnnounce
        | M::SiftReply
        | M::BasisAnnounce
        | M::BasisReply
        | M::RelayAnnounce
        | M::TfAnnounce
        | M::TfReply => 0,
    }
}

fn distill(a: &DistillBenchArgs) -> Result<(), CliError> {
    use qkdnet_distill::random::danger::InsecureDeterministic;

    let bits: f64 = a
        .bits
        .parse()
        .map_err(|_| CliError::input(format!("--bits: '{}' is not a number", a.bits)))?;
    if !(bits.is_finite() && (1e4..=1e9).contains(&bits)) {
        return Err(CliError::input(format!(
            "--bits: {bits} is outside 1e4..=1e9"
        )));
    }
    let n = bits as usize;
    if !(a.qber.is_finite() && (0.0..0.5).contains(&a.qber)) {
        return Err(CliError::input(format!(
            "--qber: {} is outside [0, 0.5)",
            a.qber
        )));
    }
    if !(a.rtt_ms.is_finite() && a.rtt_ms >= 0.0) {
        return Err(CliError::input(format!(
            "--rtt-ms: {} is not a non-negative number",
            a.rtt_ms
        )));
    }
    let cfg = crate::distill::config_from(&a.variant, a.frame_bits, 0, 0.11, 0.1, 1e-10, 1e-15)?;
    let (alice, bob) = qkdnet_distill::testdata::correlated(n, a.qber, a.seed);
    // Frame error rate of this Cascade configuration on the same kind of data, measured
    // on separate frames (the session itself cannot see per-frame residuals: verification
    // covers the whole block).
    let (fer, fer_frames) = {
        use qkdnet_distill::cascade::{reconcile_local, Schedule, Shuffles, Variant};
        let variant = Variant::parse(&a.variant).unwrap_or(Variant::YanEtAl);
        let f = a.frame_bits.min(n);
        let frames = (n / f).clamp(1, 100);
        let sched = Schedule::new(variant, a.qber.max(1e-3), f);
        let sh = std::sync::Arc::new(Shuffles::new([5; 32], f, sched.passes()));
        let mut failed = 0usize;
        for k in 0..frames {
            let (s, e) = (k * f, (k + 1) * f);
            let (fixed, _) =
                reconcile_local(&alice.slice(s, e), bob.slice(s, e), sched.clone(), &sh)
                    .map_err(|e| CliError::runtime(e.to_string()))?;
            if fixed != alice.slice(s, e) {
                failed += 1;
            }
        }
        (failed as f64 / frames as f64, frames)
    };
    if a.frames_in_flight == Some(0) {
        return Err(CliError::input(
            "--frames-in-flight: 0 frames; give at least 1",
        ));
    }
    if !(1..=100).contains(&a.blocks) {
        return Err(CliError::input(format!(
            "--blocks: {} is outside 1..=100",
            a.blocks
        )));
    }
    let mut rng = InsecureDeterministic::new(a.seed, "bench distill");
    let (mut ka, mut kb) = crate::distill::auth_pair(None, &mut rng, 1 << 16)?;
    let mut runs = Vec::with_capacity(a.blocks);
    let mut strings = Some((alice, bob));
    for block in 0..a.blocks {
        let (alice, bob) = match strings.take() {
            Some(s) => s,
            None => qkdnet_distill::testdata::correlated(n, a.qber, a.seed + block as u64),
        };
        runs.push(distill_block(
            block as u64 + 1,
            alice,
            bob,
            cfg.clone(),
            a.frames_in_flight,
            (&mut ka, &mut kb),
            &mut rng,
        )?);
    }
    let first = &runs[0];
    let steady = if runs.len() > 1 {
        &runs[1..]
    } else {
        &runs[..]
    };
    let mean =
        |f: &dyn Fn(&BlockRun) -> f64| steady.iter().map(f).sum::<f64>() / steady.len() as f64;
    let compute = mean(&|r| r.seconds);
    let stage: Vec<f64> = (0..4).map(|i| mean(&|r| r.stages[i])).collect();
    let p = &runs
        .last()
        .map(|r| r.provenance.clone())
        .unwrap_or_else(|| first.provenance.clone());
    let with_rtt = compute + p.round_trips as f64 * a.rtt_ms / 1e3;
    let mbps = |secs: f64| n as f64 / secs / 1e6;
    let pipelined = if a.rtt_ms > 0.0 {
        if !(1..=64).contains(&a.depth) {
            return Err(CliError::input(format!(
                "--depth: {} is outside 1..=64",
                a.depth
            )));
        }
        let blocks = a.blocks.max(2 * a.depth);
        let run = |rtt_ms: f64| pipelined_run(n, a, &cfg, blocks, rtt_ms);
        let (zero, pinned) = run(0.0)?;
        let (delayed, _) = run(a.rtt_ms)?;
        let per = |secs: f64| (n * blocks) as f64 / secs / 1e6;
        serde_json::json!({
            "depth": a.depth,
            "blocks": blocks,
            "pinned_to_one_core": pinned,
            "sifted_mbps_no_rtt": per(zero),
            "sifted_mbps_with_rtt": per(delayed),
            "ratio": zero / delayed,
        })
    } else {
        serde_json::Value::Null
    };
    let with_rtt_mbps = match &pipelined {
        serde_json::Value::Null => mbps(with_rtt),
        v => v["sifted_mbps_with_rtt"].as_f64().unwrap_or(0.0),
    };
    let report = serde_json::json!({
        "benchmark": "distill",
        "qber": a.qber,
        "sifted_bits": n,
        "variant": a.variant,
        "frame_bits": a.frame_bits,
        "frames": p.frames,
        "frames_in_flight": a.frames_in_flight.unwrap_or(p.frames as usize),
        "sifted_mbps": mbps(compute),
        "blocks": a.blocks,
        "first_block_sifted_mbps": mbps(first.seconds),
        "sifted_mbps_with_rtt": with_rtt_mbps,
        "sifted_mbps_with_rtt_one_block": mbps(with_rtt),
        "rtt_ms": a.rtt_ms,
        "pipelined": pipelined,
        "stages_mbps": {
            "estimate": mbps(stage[0]),
            "reconcile": mbps(stage[1]),
            "verify": mbps(stage[2]),
            "privacy_amplification": mbps(stage[3]),
        },
        "stages_seconds": {
            "estimate": stage[0],
            "reconcile": stage[1],
            "verify": stage[2],
            "privacy_amplification": stage[3],
        },
        "efficiency_f": p.efficiency(),
        "round_trips": p.round_trips,
        "frame_error_rate": fer,
        "fer_frames_tested": fer_frames,
        "frames_discarded": p.discarded_frames,
        "sample_qber": p.qber(),
        "corrected_bits": p.corrected_bits,
        "leak_ec_bits": p.leak_ec_bits,
        "final_bits": p.final_bits,
        "auth_bits_consumed": ka.consumed_bits(),
        "pa_backend": qkdnet_distill::toeplitz::Backend::Auto.name(),
        "gf2x_multiplier": qkdnet_distill::gf2x::backend(),
        "note": "both ends run in this process, one thread: every stage time is Alice's plus Bob's work; Bob's Cascade set-up (shuffled copies per pass) is charged to reconcile; figures are the mean over blocks 2..N (steady state, buffers reused), first_block_sifted_mbps the cold first block; provenance fields are the last block's; sifted_mbps_with_rtt is the pipelined run's (see pipelined) when --rtt-ms is set, sifted_mbps_with_rtt_one_block one block alone with every round trip waited out",
        "machine": MachineInfo::current(1),
    });
    println!("{report:#}");
    Ok(())
}

/// Seconds for `blocks` blocks of `n` bits through the link's pipeline
/// (`qkdnet_link::pipeline_alice` / `pipeline_bob`, `a.depth` blocks in flight) over an
/// in-process channel with round-trip time `rtt_ms`, and whether both ends' threads could
/// be pinned to one core (so the figure compares with the one-thread bench).
fn pipelined_run(
    n: usize,
    a: &DistillBenchArgs,
    cfg: &qkdnet_distill::session::Config,
    blocks: usize,
    rtt_ms: f64,
) -> Result<(f64, bool), CliError> {
    use qkdnet_core::Bits;
    use qkdnet_distill::random::danger::InsecureDeterministic;
    use qkdnet_link::{pipeline_alice, pipeline_bob, MemTransport, Pipelining};
    let strings: Vec<(u64, Bits, Bits)> = (0..blocks)
        .map(|b| {
            let (x, y) = qkdnet_distill::testdata::correlated(n, a.qber, a.seed + b as u64);
            (b as u64 + 1, x, y)
        })
        .collect();
    let mut rng = InsecureDeterministic::new(a.seed, "bench distill pipelined");
    let (mut ka, mut kb) = crate::distill::auth_pair(None, &mut rng, 1024 * blocks + 64)?;
    let p = Pipelining {
        depth: a.depth,
        pads_per_block: 1024,
    };
    let (mut ta, mut tb) =
        MemTransport::pair_with_latency(std::time::Duration::from_secs_f64(rtt_ms / 2e3));
    let core = core_affinity::get_core_ids().and_then(|ids| ids.first().copied());
    let pin = move || core.is_some_and(core_affinity::set_for_current);
    let mut bob_bits: std::collections::HashMap<u64, Bits> = strings
        .iter()
        .map(|(id, _, y)| (*id, y.duplicate()))
        .collect();
    let alice_blocks: Vec<(u64, Bits)> = strings.into_iter().map(|(id, x, _)| (id, x)).collect();
    let t = Instant::now();
    let (ra, rb, pinned) = std::thread::scope(|s| {
        let bob = s.spawn(move || {
            let pinned = pin();
            let r = pipeline_bob(&mut tb, |id| bob_bits.remove(&id), blocks, p, &mut kb);
            (r, pinned)
        });
        let pinned = pin();
        let ra = pipeline_alice(&mut ta, alice_blocks, cfg.clone(), p, &mut ka, &mut rng);
        let (rb, pinned_b) = bob
            .join()
            .unwrap_or_else(|_| (Err(qkdnet_link::TransportError::Closed), false));
        (ra, rb, pinned && pinned_b)
    });
    let secs = t.elapsed().as_secs_f64();
    let err = |e: qkdnet_link::TransportError| CliError::runtime(format!("pipelined run: {e}"));
    let (ra, rb) = (ra.map_err(err)?, rb.map_err(err)?);
    for (id, x) in &ra {
        // Bob reports blocks as they end, Alice in block order.
        let y = rb.iter().find(|(b, _)| b == id).map(|(_, y)| y);
        match (x, y) {
            (Ok(x), Some(Ok(y))) if x.key == y.key => {}
            (Err(e), _) | (_, Some(Err(e))) => {
                return Err(CliError::runtime(format!(
                    "pipelined run: block {id} failed: {e}"
                )))
            }
            _ => {
                return Err(CliError::runtime(format!(
                    "pipelined run: block {id} gave different keys or none at Bob"
                )))
            }
        }
    }
    Ok((secs, pinned))
}

/// One distilled block of `qkdnet bench distill`: seconds in total and per stage
/// (estimate, reconcile, verify, privacy amplification), and Alice's provenance.
struct BlockRun {
    seconds: f64,
    stages: [f64; 4],
    provenance: qkdnet_distill::session::Provenance,
}

/// Runs one session with both ends in this thread, timing each message's handling.
fn distill_block(
    id: u64,
    alice: qkdnet_core::Bits,
    bob: qkdnet_core::Bits,
    cfg: qkdnet_distill::session::Config,
    frames_in_flight: Option<usize>,
    (ka, kb): (
        &mut qkdnet_distill::auth::AuthKeys,
        &mut qkdnet_distill::auth::AuthKeys,
    ),
    rng: &mut qkdnet_distill::random::danger::InsecureDeterministic,
) -> Result<BlockRun, CliError> {
    use qkdnet_distill::session::{AliceSession, BobSession, Output};
    let mut stage = [0.0f64; 4];
    let t_all = Instant::now();
    let mut bob_s = BobSession::new(id, bob, kb);
    if let Some(w) = frames_in_flight {
        bob_s.set_frames_in_flight(w);
    }
    let t = Instant::now();
    let (mut alice_s, mut to_bob) = AliceSession::start(id, alice, cfg, ka, rng)
        .map_err(|e| CliError::runtime(e.to_string()))?;
    stage[0] += t.elapsed().as_secs_f64();
    let err = |e: qkdnet_distill::session::SessionError| {
        CliError::runtime(format!("session failed: {e}"))
    };
    let ty = |m: &[u8]| qkdnet_wire::Envelope::parse(m, u32::MAX).map(|e| e.header.message_type);
    let (fa, fb) = 'outer: loop {
        let mut to_alice = Vec::new();
        let mut bob_key = None;
        for m in &to_bob {
            let st = ty(m).map(|t| stage_of(t, false)).unwrap_or(1);
            let t = Instant::now();
            let out = bob_s.handle(m, kb).map_err(err)?;
            stage[st] += t.elapsed().as_secs_f64();
            match out {
                Output::Send(v) => to_alice.extend(v),
                Output::Finished(k, v) => {
                    to_alice.extend(v);
                    bob_key = Some(k);
                }
            }
        }
        alice_s.set_corrected(bob_s.corrected_bits());
        let mut next = Vec::new();
        for m in &to_alice {
            let st = ty(m).map(|t| stage_of(t, true)).unwrap_or(1);
            let t = Instant::now();
            let out = alice_s.handle(m, ka, rng).map_err(err)?;
            stage[st] += t.elapsed().as_secs_f64();
            match out {
                Output::Send(v) => next.extend(v),
                Output::Finished(k, _) => match bob_key.take() {
                    Some(kb) => break 'outer (k, kb),
                    None => return Err(CliError::runtime("Alice finished before Bob")),
                },
            }
        }
        if next.is_empty() {
            return Err(CliError::runtime("session stalled"));
        }
        to_bob = next;
    };
    let seconds = t_all.elapsed().as_secs_f64();
    if fa.key != fb.key {
        return Err(CliError::runtime("final keys differ"));
    }
    Ok(BlockRun {
        seconds,
        stages: stage,
        provenance: fa.provenance.clone(),
    })
}
