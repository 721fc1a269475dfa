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
    }
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
        // Families without a finite-key bound are measured on their asymptotic bound.
        let (sec, security) = if p.has_finite_key() {
            (Security::Finite(FiniteKey::default()), "finite")
        } else {
            (Security::Asymptotic, "asymptotic")
        };
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
