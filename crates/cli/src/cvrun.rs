//! `qkdnet run` of a CV-QKD (`cv-gg02`) scenario: blocks of emulated symbols at event
//! level through the whole classical stack, reverse reconciled.
//!
//! Per block: the emulator's symbols (Alice's `x, p`, Bob's outcomes) at the modulation
//! variance the planner's optimiser chose; a random `estimation_fraction` of them disclosed
//! for parameter estimation (gain, noise, hence transmittance and excess noise); the rest
//! reconciled by 8-D multidimensional reconciliation and a multi-edge LDPC code designed
//! for the estimated SNR (`distill::cv`); verification by hashing each frame; and privacy
//! amplification to the length the observed-statistics bound allows
//! (`keyrate::cv::CvGg02::block_bound`: Leverrier et al. 2010 worst-case estimators,
//! Holevo bound, finite-size term). The key is really produced at both ends and compared.
//!
//! Every symbol is decoded, so a block costs real time: about 0.3 µs per reconciled bit on
//! one core at SNR 0.03 (docs/PERFORMANCE.md). The scenario's finite-key block (2e11
//! symbols at 120 km) is far beyond that; `--block-symbols` sets a smaller one, and the run
//! refuses blocks of more than 1e8 symbols, naming what the planner predicts for them.

use crate::run::{parse_duration, RunArgs};
use crate::CliError;
use qkdnet_core::Bits;
use qkdnet_distill::cv::block::{self, CodeChoice, ReconcileConfig};
use qkdnet_distill::cv::code::MetCode;
use qkdnet_distill::cv::design::awgn_capacity;
use qkdnet_distill::random::danger::InsecureDeterministic;
use qkdnet_distill::random::SecureRandom;
use qkdnet_distill::toeplitz;
use qkdnet_emulator::cv::{CvEmulator, CvLink};
use qkdnet_keyrate::cv::CvEstimate;
use qkdnet_keyrate::finite::{FiniteKey, Security};
use qkdnet_keyrate::model::KeyRateModel;
use qkdnet_keyrate::optimise::{optimise, OptimiseOptions};
use rand::{Rng, SeedableRng};

/// Most symbols per block the run accepts (two f64 per quadrature pair at both ends).
const MAX_BLOCK_SYMBOLS: f64 = 1e8;

/// One block's outcome.
#[derive(Debug, Clone, serde::Serialize)]
struct BlockReport {
    block: u64,
    symbols: u64,
    estimation_pairs: u64,
    transmittance: f64,
    excess_noise_snu: f64,
    snr: f64,
    design_snr: f64,
    code_rate: f64,
    beta: f64,
    frames: usize,
    frames_kept: usize,
    leaked_bits: u64,
    chi_be_worst: f64,
    secret_bits: u64,
    keys_equal: bool,
    wall_s: f64,
}

/// Runs a `cv-gg02` scenario.
pub fn run(a: &RunArgs, link: CvLink, fk: FiniteKey) -> Result<(), CliError> {
    let origin = a.scenario.display().to_string();
    if a.serve.is_some() || a.html.is_some() || a.block_s.is_some() || a.store_dir.is_some() {
        return Err(CliError::input(format!(
            "{origin}: --serve, --html, --block-s and --store-dir are not available for \
             CV-QKD runs yet (--block-symbols sets the block)"
        )));
    }
    let hw0 = link.hardware().clone();
    let rate_hz = hw0.symbol_rate_hz;
    let symbols = a.block_symbols.unwrap_or(fk.block_size).round();
    let block_s = symbols / rate_hz;
    let seconds = parse_duration(&a.duration)?;
    let blocks = (seconds / block_s).floor().max(1.0) as u64;
    // The planner's modulation variance for this block size.
    let sec = Security::Finite(FiniteKey {
        block_size: symbols,
        ..fk
    });
    let opt = optimise(
        &hw0,
        link.loss_db(),
        &hw0.initial(),
        &[true],
        &sec,
        &OptimiseOptions::default(),
    );
    let va = opt.x[0];
    let planned = opt.eval.raw_key_per_signal.max(0.0);
    if !(1e5..=MAX_BLOCK_SYMBOLS).contains(&symbols) {
        return Err(CliError::input(format!(
            "{origin}: a block of {symbols:.2e} symbols ({block_s} s at {rate_hz:.3e} Bd): \
             CV runs reconcile every symbol and take blocks of 1e5 to 1e8 symbols \
             (--block-symbols); the planner gives {planned:.3e} bit/symbol for this block"
        )));
    }
    let link = link
        .with_modulation_variance(va)
        .map_err(|e| CliError::input(format!("{origin}: {}: {}", e.field, e.reason)))?;
    let hw = link.hardware().clone();
    let seed = a.seed.unwrap_or(link.emulation().seed);
    let window_symbols = symbols.min(1e6);
    let mut emu = CvEmulator::new(link.clone(), window_symbols / rate_hz)
        .map_err(|e| CliError::input(format!("{origin}: {}: {}", e.field, e.reason)))?;
    let het = emu.moments().pairs_per_symbol == 2;
    let cfg = ReconcileConfig {
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        ..ReconcileConfig::default()
    };
    let mut code_cache: Option<(CodeChoice, MetCode)> = None;
    let mut pe_rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_c0de);
    let mut bob_rng = InsecureDeterministic::new(seed, "cv bob");
    let mut shared_rng = InsecureDeterministic::new(seed, "cv shared");
    let mut reports = Vec::new();
    // Progress in decoded frames (a 1e8-symbol block is minutes of decoding).
    let frames_per_block = (symbols * (1.0 - hw0.estimation_fraction) * hw0.pairs_per_symbol()
        / cfg.frame_bits as f64)
        .floor()
        .max(1.0) as u64;
    let bar = indicatif::ProgressBar::new(blocks * frames_per_block);
    let started = std::time::Instant::now();
    for b in 0..blocks {
        let t0 = std::time::Instant::now();
        // Symbols: disclosed ones into the estimate, the rest into the key vectors.
        let (mut x, mut y) = (Vec::new(), Vec::new());
        let mut est = CvEstimate::default();
        let mut done = 0f64;
        while done < symbols {
            let w = emu.step_symbols();
            for (al, bo) in w.alice.chunks_exact(2).zip(w.bob.chunks_exact(2)) {
                let pairs: &[(f64, f64)] = if het {
                    &[(al[0], bo[0]), (al[1], bo[1])]
                } else if bo[0] == 0.0 {
                    &[(al[0], bo[1])]
                } else {
                    &[(al[1], bo[1])]
                };
                if pe_rng.gen::<f64>() < hw.estimation_fraction {
                    for &(p, q) in pairs {
                        est.pairs += 1.0;
                        est.sum_aa += p * p;
                        est.sum_ab += p * q;
                        est.sum_bb += q * q;
                    }
                } else {
                    for &(p, q) in pairs {
                        x.push(p);
                        y.push(q);
                    }
                }
            }
            done += (w.alice.len() / 2) as f64;
        }
        let (g, noise) = est.gain_noise();
        let va_hat = est.sum_aa / est.pairs;
        let snr = g * g * va_hat / noise;
        let choice = CodeChoice::for_snr(snr, &cfg, seed ^ b);
        if code_cache
            .as_ref()
            .is_none_or(|(c, _)| c.design_snr != choice.design_snr)
        {
            code_cache = choice.build().ok().map(|(_, code)| (choice, code));
        }
        let (t_hat, xi_hat) = hw.channel_from(g, noise);
        // The block's report as it stands with no key; reconciliation fills in the rest.
        let mut report = BlockReport {
            block: b,
            symbols: done as u64,
            estimation_pairs: est.pairs as u64,
            transmittance: t_hat,
            excess_noise_snu: xi_hat,
            snr,
            design_snr: choice.design_snr,
            code_rate: 0.0,
            beta: 0.0,
            frames: 0,
            frames_kept: 0,
            leaked_bits: 0,
            chi_be_worst: f64::NAN,
            secret_bits: 0,
            keys_equal: true,
            wall_s: 0.0,
        };
        let Some((_, code)) = code_cache.as_ref() else {
            // No code for this SNR (a cut fibre, a dead source): the block gives no key.
            eprintln!("{origin}: block {b}: no reconciliation code for SNR {snr:.3e}; no key");
            report.wall_s = t0.elapsed().as_secs_f64();
            reports.push(report);
            continue;
        };
        let fail = |e: &dyn std::fmt::Display| CliError::input(format!("{origin}: block {b}: {e}"));
        let (bob, msg) =
            block::bob_reconcile(&y, code, choice, &cfg, &mut bob_rng).map_err(|e| fail(&e))?;
        let alice = block::alice_reconcile(&x, &msg, code, g, noise, &cfg, &|| bar.inc(1))
            .map_err(|e| fail(&e))?;
        let (kept, tag_bits) =
            block::verify(&alice, &bob, &cfg, &mut shared_rng).map_err(|e| fail(&e))?;
        let ka = block::concat(&alice, &kept);
        let kb = block::concat(&bob, &kept);
        let key_symbols = ka.len() as f64 / hw.pairs_per_symbol();
        let leaked = (kept.len() * code.syndrome_len()) as u64 + tag_bits;
        let net = ka.len() as f64 - leaked as f64;
        let bound = if kept.is_empty() {
            None
        } else {
            Some(hw.block_bound(&est, va_hat, key_symbols, net, fk.eps_sec))
        };
        let secret = bound.map_or(0, |bd| bd.secret_bits) as usize;
        let keys_equal = if secret > 0 {
            let mut draw = vec![0u8; (ka.len() + secret - 1).div_ceil(8)];
            shared_rng.fill(&mut draw).map_err(|e| fail(&e))?;
            let draw = Bits::from_msb_bytes(&draw, ka.len() + secret - 1)
                .ok_or_else(|| CliError::input("privacy-amplification seed"))?;
            let mut h = toeplitz::Hasher::new();
            let fa = h.hash_expanded(&draw, &ka, secret);
            let fb = h.hash_expanded(&draw, &kb, secret);
            match (fa, fb) {
                (Ok(fa), Ok(fb)) => fa.words() == fb.words(),
                (Err(e), _) | (_, Err(e)) => return Err(fail(&e)),
            }
        } else {
            ka.words() == kb.words()
        };
        report.code_rate = code.rate();
        report.beta = code.rate() / awgn_capacity(snr);
        report.frames = msg.frames.len();
        report.frames_kept = kept.len();
        report.leaked_bits = leaked;
        report.chi_be_worst = bound.map_or(f64::NAN, |bd| bd.chi_be);
        report.secret_bits = secret as u64;
        report.keys_equal = keys_equal;
        report.wall_s = t0.elapsed().as_secs_f64();
        reports.push(report);
    }
    bar.finish_and_clear();
    let wall = started.elapsed().as_secs_f64();
    let total_symbols: u64 = reports.iter().map(|r| r.symbols).sum();
    let secret: u64 = reports.iter().map(|r| r.secret_bits).sum();
    let virtual_s = total_symbols as f64 / rate_hz;
    if a.json {
        let out = serde_json::json!({
            "scenario": origin,
            "protocol": "cv-gg02",
            "loss_db": link.loss_db(),
            "modulation_variance_snu": va,
            "block_symbols": symbols,
            "planned_key_per_symbol": planned,
            "key_per_symbol": secret as f64 / total_symbols as f64,
            "key_rate_bps": secret as f64 / virtual_s,
            "virtual_seconds": virtual_s,
            "wall_seconds": wall,
            "blocks": reports,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(());
    }
    println!(
        "ran {origin} ({:.1} dB, V_A {va:.3} SNU) for {blocks} block(s) of {symbols:.3e} \
         symbols ({virtual_s:.3} s of virtual time) in {wall:.1} s",
        link.loss_db()
    );
    println!(
        "  block   T̂          ξ̂ (SNU)     SNR       code rate  β       frames  χ_BE(worst)  secret bits  equal"
    );
    for r in &reports {
        println!(
            "  {:>5}   {:.4e}  {:.3e}  {:.4e}  {:.5}    {:.3}   {:>2}/{:<2}   {:.4e}   {:>11}  {}",
            r.block,
            r.transmittance,
            r.excess_noise_snu,
            r.snr,
            r.code_rate,
            r.beta,
            r.frames_kept,
            r.frames,
            r.chi_be_worst,
            r.secret_bits,
            r.keys_equal
        );
    }
    println!(
        "key: {secret} bits, {:.4e} bit/symbol ({:.4e} bit/s); plan at this block size {planned:.4e} bit/symbol",
        secret as f64 / total_symbols as f64,
        secret as f64 / virtual_s
    );
    Ok(())
}
