//! `qkdnet run` of a CV-QKD (`cv-gg02`) scenario: blocks of emulated symbols at event
//! level through the whole classical stack, reverse reconciled.
//!
//! Per block: the emulator's symbols (Alice's `x, p`, Bob's outcomes) at the modulation
//! variance where qkdnet's own codes give the most key for the block
//! (`network::cv::code_operating_point`, as network runs use; the planner's optimum, at the
//! scenario's published β, is reported beside it); a random `estimation_fraction` of them disclosed
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
use qkdnet_emulator::cv::{CvEmulator, CvLink};
use qkdnet_keyrate::finite::FiniteKey;
use qkdnet_network::cv::{
    check_block_symbols, code_operating_point, operating_point, CvBlockReport, CvPostProcessor,
    CvSymbols,
};
use qkdnet_network::runner::emulated_preshared_key;
use rand::SeedableRng;

/// Runs a `cv-gg02` scenario.
pub fn run(a: &RunArgs, link: CvLink, fk: FiniteKey) -> Result<(), CliError> {
    let origin = a.scenario.display().to_string();
    if a.serve.is_some() || a.html.is_some() || a.block_s.is_some() || a.store_dir.is_some() {
        return Err(CliError::input(format!(
            "{origin}: --serve, --html, --block-s and --store-dir are not available for \
             CV-QKD runs yet (--block-symbols sets the block; a network file with this \
             link runs it with stores and the dashboard)"
        )));
    }
    let hw0 = link.hardware().clone();
    let rate_hz = hw0.symbol_rate_hz;
    let symbols = a.block_symbols.unwrap_or(fk.block_size).round();
    let block_s = symbols / rate_hz;
    let seconds = parse_duration(&a.duration)?;
    let blocks = (seconds / block_s).floor().max(1.0) as u64;
    // The planner's operating point for this block size (the scenario's β), and the one
    // the run takes: where this crate's codes give the most key.
    let (plan_va, planned) = operating_point(&hw0, link.loss_db(), symbols, fk);
    let (va, code_planned) = code_operating_point(&hw0, link.loss_db(), symbols, fk);
    if let Err(e) = check_block_symbols(symbols) {
        return Err(CliError::input(format!(
            "{origin}: a block of {symbols:.2e} symbols ({block_s} s at {rate_hz:.3e} Bd): \
             {e} (--block-symbols); the planner gives {planned:.3e} bit/symbol for this block"
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
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut post = CvPostProcessor::new(hw.clone(), &emulated_preshared_key(seed), seed, threads)
        .map_err(CliError::runtime)?;
    let mut pe_rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_c0de);
    let mut reports: Vec<CvBlockReport> = Vec::new();
    // Progress in decoded frames (a 1e8-symbol block is minutes of decoding).
    let bar = indicatif::ProgressBar::new(blocks * post.frames_for(symbols));
    let started = std::time::Instant::now();
    for b in 0..blocks {
        // Symbols: disclosed ones into the estimate, the rest into the key vectors.
        let mut sym = CvSymbols::default();
        while (sym.symbols as f64) < symbols {
            let w = emu.step_symbols();
            sym.push_window(&w, het, hw.estimation_fraction, &mut pe_rng);
        }
        let (report, _) = post
            .block(b, sym, fk.eps_sec, &|| bar.inc(1))
            .map_err(|e| CliError::runtime(format!("{origin}: {e}")))?;
        if let Some(why) = &report.no_key {
            bar.suspend(|| eprintln!("{origin}: block {b}: {why}"));
        }
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
            "planned_modulation_variance_snu": plan_va,
            "planned_key_per_symbol_at_codes_beta": code_planned,
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
        "key: {secret} bits, {:.4e} bit/symbol ({:.4e} bit/s); at this block size the plan \
         gives {planned:.4e} bit/symbol (V_A {plan_va:.3} SNU, the scenario's β), and \
         {code_planned:.4e} at the codes' β (V_A {va:.3} SNU, this run's)",
        secret as f64 / total_symbols as f64,
        secret as f64 / virtual_s
    );
    Ok(())
}
