//! `qkdnet`: the command-line front end of the qkdnet QKD network stack.
//!
//! This binary holds no physics or protocol logic: it parses inputs, calls the library
//! crates, and formats their results. Exit codes: 0 success, 1 runtime failure,
//! 2 bad input (flags, files, scenario fields), with one line on stderr naming the problem.

mod bench;
mod certs;
mod cvrun;
mod dashboard;
mod demo;
mod distill;
mod emulate;
mod kme;
mod netrun;
mod node;
mod pads;
mod plan;
mod plot;
mod rate;
mod report;
mod run;
mod scenario;
mod sift;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// qkdnet: quantum key distribution networks, from photons in fibre to keys in applications.
#[derive(Parser, Debug)]
#[command(name = "qkdnet", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Predict secret key rates (finite-key by default) against distance or loss.
    Rate(Box<rate::RateArgs>),
    /// The Nice network end to end on this machine: node processes, keys over ETSI 014,
    /// a file encrypted with AES-256-GCM at one site and decrypted at another.
    Demo(Box<demo::DemoArgs>),
    /// Plan a network: channels, predicted finite-key rate per link and per SAE pair,
    /// the classical load each link survives, an SVG drawing.
    Plan(Box<plan::PlanArgs>),
    /// Run one site of a network: its KME (ETSI 014) and its QKD links, distilling with the
    /// neighbouring sites over TCP.
    Node(Box<node::NodeArgs>),
    /// Distil final keys from two files of sifted bits (the full authenticated session).
    Distill(Box<distill::DistillArgs>),
    /// Sift a BBM92 link's two recordings as two processes over TCP (`alice` listens and
    /// synchronises on Bob's announcements, `bob` connects and announces).
    Sift(Box<sift::SiftArgs>),
    /// Run a BBM92 link unattended in virtual time (window level) with full distillation.
    Run(Box<run::RunArgs>),
    /// Emulate a scenario's link at event level and write each node's time tags.
    Emulate(Box<emulate::EmulateArgs>),
    /// Measure throughput on this machine and print JSON (domain units, machine info).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Generate a test PKI: a CA, KME server certificates, SAE client certificates.
    Certs(certs::CertsArgs),
    /// Run a key management entity: ETSI GS QKD 014 over mutual TLS, key import.
    #[command(subcommand)]
    Kme(kme::KmeCommand),
}

/// An error for the user: one line, and whether it was their input (exit 2) or not (exit 1).
#[derive(Debug)]
pub struct CliError {
    /// The message.
    pub message: String,
    /// Exit code.
    pub code: u8,
}

impl CliError {
    /// Bad input (exit code 2).
    pub fn input(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 2,
        }
    }

    /// Runtime failure (exit code 1).
    pub fn runtime(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 1,
        }
    }
}

fn main() -> ExitCode {
    // Output piped into a reader that stops early (`qkdnet plan … | head`): end quietly, as
    // a command-line tool should, instead of reporting a panic.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default_hook(info);
    }));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Kme(cmd) => kme::run(&cmd),
        Command::Rate(args) => rate::run(&args),
        Command::Plan(args) => plan::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Node(args) => node::run(&args),
        Command::Emulate(args) => emulate::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Bench(cmd) => bench::run(&cmd),
        Command::Distill(args) => distill::run(&args),
        Command::Sift(args) => sift::run(&args),
        Command::Certs(args) => certs::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}
