//! `qkdnet distill`: distil final keys from two files of sifted bits, running the real
//! two-party session (authenticated messages, sampling, Cascade, verification, privacy
//! amplification) in one process.
//!
//! Input files hold bits packed MSB-first (the `qkdnet_core::bits` file format, as
//! `numpy.packbits` writes); `--bits N` takes the first N bits, otherwise all of them.
//! Keys are written only when the session succeeds, each to a temporary file renamed into
//! place, so a key file is never half-written.

use crate::CliError;
use clap::Args;
use qkdnet_core::Bits;
use qkdnet_distill::auth::AuthKeys;
use qkdnet_distill::cascade::Variant;
use qkdnet_distill::random::{danger::InsecureDeterministic, OsRandom, SecureRandom};
use qkdnet_distill::session::{run_local, Config, FinalKey, SessionError};
use std::path::{Path, PathBuf};

/// Flags of `qkdnet distill`.
#[derive(Args, Debug)]
pub struct DistillArgs {
    /// Alice's sifted bits (packed MSB-first).
    #[arg(long)]
    pub alice: PathBuf,
    /// Bob's sifted bits (packed MSB-first).
    #[arg(long)]
    pub bob: PathBuf,
    /// Use only the first N bits of each file (default: all).
    #[arg(long)]
    pub bits: Option<u64>,
    /// Abort when the sampled error rate exceeds this.
    #[arg(long, default_value_t = 0.11)]
    pub qber_max: f64,
    /// Fraction of the sifted bits disclosed for parameter estimation.
    #[arg(long, default_value_t = 0.1)]
    pub sample_fraction: f64,
    /// Cascade frame length, bits.
    #[arg(long, default_value_t = 1 << 16)]
    pub frame_bits: usize,
    /// Cascade schedule: original or yanetal.
    #[arg(long, default_value = "yanetal")]
    pub variant: String,
    /// Extra BICONF passes.
    #[arg(long, default_value_t = 0)]
    pub biconf: u8,
    /// Secrecy parameter ε_sec.
    #[arg(long, default_value_t = 1e-10)]
    pub eps_sec: f64,
    /// Correctness parameter ε_cor.
    #[arg(long, default_value_t = 1e-15)]
    pub eps_cor: f64,
    /// Pre-shared authentication key file (packed bits, ≥ 192 bits; both ends use it).
    /// Without it a fresh random key is generated for this run.
    #[arg(long)]
    pub psk: Option<PathBuf>,
    /// Directory for alice.key, bob.key and provenance.json (written only on success).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// INSECURE: draw every security-relevant random number from this seed (reproducible
    /// runs for testing only; anyone who knows the seed knows the key).
    #[arg(long)]
    pub insecure_seed: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Reads a bit file, naming it in errors.
pub fn read_bits(path: &Path, bits: Option<u64>) -> Result<Bits, CliError> {
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::input(format!("{}: cannot read: {e}", path.display())))?;
    let n = match bits {
        Some(n) => {
            usize::try_from(n).map_err(|_| CliError::input(format!("--bits: {n} is too large")))?
        }
        None => bytes.len() * 8,
    };
    Bits::from_msb_bytes(&bytes, n).ok_or_else(|| {
        CliError::input(format!(
            "{}: holds {} bits, --bits asks for {n}",
            path.display(),
            bytes.len() * 8
        ))
    })
}

/// Writes `data` to `path` through a temporary file and a rename.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), CliError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)
        .map_err(|e| CliError::runtime(format!("{}: cannot write: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| CliError::runtime(format!("{}: cannot rename: {e}", path.display())))
}

/// The session configuration from flags, validated.
pub fn config_from(
    variant: &str,
    frame_bits: usize,
    biconf: u8,
    qber_max: f64,
    sample_fraction: f64,
    eps_sec: f64,
    eps_cor: f64,
) -> Result<Config, CliError> {
    let variant = Variant::parse(variant).ok_or_else(|| {
        CliError::input(format!(
            "--variant: unknown Cascade variant '{variant}' (known: original, yanetal)"
        ))
    })?;
    let cfg = Config {
        frame_bits,
        variant,
        biconf,
        qber_max,
        eps_sec,
        eps_cor,
        sample_fraction,
    };
    cfg.validate().map_err(|e| match e {
        SessionError::Config { field, value } => CliError::input(format!(
            "--{}: {value} is out of range",
            field.replace('_', "-")
        )),
        other => CliError::input(other.to_string()),
    })?;
    Ok(cfg)
}

/// A pre-shared key pair (the same bits at both ends).
pub fn auth_pair(
    psk: Option<&Path>,
    rng: &mut dyn SecureRandom,
    pads: usize,
) -> Result<(AuthKeys, AuthKeys), CliError> {
    let bits = match psk {
        Some(p) => read_bits(p, None)?,
        None => {
            let mut words = vec![0u64; 2 + pads];
            for w in &mut words {
                *w = rng
                    .next_u64()
                    .map_err(|e| CliError::runtime(e.to_string()))?;
            }
            let n = words.len() * 64;
            Bits::from_words(words, n)
        }
    };
    let a = AuthKeys::from_preshared(bits.duplicate());
    let b = AuthKeys::from_preshared(bits);
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (Err(e), _) | (_, Err(e)) => Err(CliError::input(format!(
            "{}: {e}",
            psk.map_or("generated key".into(), |p| p.display().to_string())
        ))),
    }
}

/// Runs `qkdnet distill`.
pub fn run(a: &DistillArgs) -> Result<(), CliError> {
    let cfg = config_from(
        &a.variant,
        a.frame_bits,
        a.biconf,
        a.qber_max,
        a.sample_fraction,
        a.eps_sec,
        a.eps_cor,
    )?;
    let alice = read_bits(&a.alice, a.bits)?;
    let bob = read_bits(&a.bob, a.bits)?;
    if alice.len() != bob.len() {
        return Err(CliError::input(format!(
            "{} has {} bits but {} has {}; pass --bits to use a common prefix",
            a.alice.display(),
            alice.len(),
            a.bob.display(),
            bob.len()
        )));
    }
    if alice.len() < 1000 {
        return Err(CliError::input(format!(
            "{}: {} bits is too few to distil (at least 1000)",
            a.alice.display(),
            alice.len()
        )));
    }
    let mut rng: Box<dyn SecureRandom> = match a.insecure_seed {
        Some(s) => Box::new(InsecureDeterministic::new(s, "qkdnet distill")),
        None => Box::new(OsRandom),
    };
    let (mut ka, mut kb) = auth_pair(a.psk.as_deref(), rng.as_mut(), 1 << 14)?;
    let n = alice.len();
    let result = run_local(1, alice, bob, cfg, &mut ka, &mut kb, rng.as_mut());
    let (fa, fb) = match result {
        Ok(k) => k,
        Err(e) => return Err(CliError::runtime(format!("no key: {e}"))),
    };
    if fa.key != fb.key {
        // Verification makes this impossible short of a hash collision (≤ ε_cor).
        return Err(CliError::runtime("final keys differ; nothing written"));
    }
    report(n, &fa, ka.consumed_bits(), a.json)?;
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::runtime(format!("{}: cannot create: {e}", dir.display())))?;
        let prov = serde_json::to_string_pretty(&fa.provenance)
            .map_err(|e| CliError::runtime(e.to_string()))?;
        write_atomic(&dir.join("provenance.json"), prov.as_bytes())?;
        write_atomic(&dir.join("alice.key"), &fa.key.to_msb_bytes())?;
        write_atomic(&dir.join("bob.key"), &fb.key.to_msb_bytes())?;
    }
    Ok(())
}

fn report(n: usize, k: &FinalKey, auth_bits: u64, json: bool) -> Result<(), CliError> {
    let p = &k.provenance;
    if json {
        let v = serde_json::json!({
            "sifted_bits": n,
            "final_bits": p.final_bits,
            "qber": p.qber(),
            "efficiency_f": p.efficiency(),
            "leak_ec_bits": p.leak_ec_bits,
            "leak_verify_bits": p.leak_verify_bits,
            "round_trips": p.round_trips,
            "auth_bits_consumed": auth_bits,
            "eps_sec": p.eps_sec,
            "eps_cor": p.eps_cor,
            "provenance": p,
        });
        println!("{v}");
    } else {
        println!("sifted bits        {n}");
        println!(
            "sample             {} bits, {} errors (QBER {:.3} %)",
            p.sample_bits,
            p.sample_errors,
            100.0 * p.qber()
        );
        println!(
            "reconciliation     {} frames, {} parity bits leaked (f = {:.3}), {} round trips",
            p.frames,
            p.leak_ec_bits,
            p.efficiency(),
            p.round_trips
        );
        println!("verification       {}-bit tag", p.leak_verify_bits);
        println!(
            "final key          {} bits (ε_sec {:e}, ε_cor {:e}; {})",
            p.final_bits, p.eps_sec, p.eps_cor, p.bound
        );
        println!("authentication     {auth_bits} key bits consumed by tags");
    }
    Ok(())
}
