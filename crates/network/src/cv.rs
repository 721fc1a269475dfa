//! CV-QKD (GG02) links at runtime: the emulated symbols a link's post-processing keeps up
//! with, the supervisor on the received pilot, and each block through the whole CV stack —
//! parameter estimation on disclosed symbols, 8-D multidimensional reverse reconciliation
//! with a multi-edge LDPC code designed for the estimated SNR, verification, privacy
//! amplification to the length the observed-statistics bound allows — with every message
//! authenticated by the link's Wegman–Carter pads and the pads given back from the key.
//!
//! A CV link sends 1e8 symbols per second and every one of them must be reconciled to
//! become key; a CPU reconciles about 0.5 Mbit/s (docs/PERFORMANCE.md). So a link here
//! processes `block_symbols` symbols per block — spread evenly over the block's windows,
//! the rest of the stream dropped, as a deployment whose post-processing keeps up with
//! only part of the stream would — and the finite-size bound is that of those symbols.
//! At 120 km that leaves no key: the published rate needs blocks of ~2e11 symbols
//! (`qkdnet plan` gives it). Short links produce key at feasible block sizes.
//!
//! The supervisor ([`qkdnet_link::supervisor`]) watches the pilot tone that carries the
//! phase reference: its received power stands for the singles (a cut or a large loss step
//! is a count drop), and the phase recovery holds while the pilot is above −20 dB of its
//! nominal power (the sync). Windows that are not `Producing` give no symbols.

use crate::runner::{replenish_share, WindowOutput, WINDOW_S};
use crate::InputError;
use qkdnet_core::bits::Bits;
use qkdnet_distill::auth::AuthKeys;
use qkdnet_distill::cv::block::{self, CodeChoice, ReconcileConfig};
use qkdnet_distill::cv::code::MetCode;
use qkdnet_distill::cv::design::awgn_capacity;
use qkdnet_distill::random::danger::InsecureDeterministic;
use qkdnet_distill::random::SecureRandom;
use qkdnet_distill::toeplitz;
use qkdnet_emulator::bbm92::BasisCounts;
use qkdnet_emulator::cv::{CvEmulator, CvLink};
use qkdnet_keyrate::cv::{CvEstimate, CvGg02};
use qkdnet_keyrate::finite::{FiniteKey, Security};
use qkdnet_keyrate::model::KeyRateModel;
use qkdnet_keyrate::optimise::{optimise, OptimiseOptions};
use qkdnet_link::supervisor::{Observation, Supervisor, SupervisorConfig, Tally};
use rand::{Rng, SeedableRng};
use zeroize::Zeroize;

/// Fewest symbols a CV block may process.
pub const MIN_BLOCK_SYMBOLS: f64 = 1e5;
/// Most symbols a CV block may process (two `f64` per quadrature pair at both ends, and
/// minutes of decoding).
pub const MAX_BLOCK_SYMBOLS: f64 = 1e8;
/// Symbols a CV link processes per block in network runs when its scenario's `[run]`
/// sets none: two 2²⁰-bit frames of heterodyne pairs after a 10 % estimation share
/// (about 4 s of decoding on two cores).
pub const DEFAULT_BLOCK_SYMBOLS: f64 = 1.2e6;

/// Checks a block's symbol count against what a CV run processes.
pub fn check_block_symbols(symbols: f64) -> Result<(), String> {
    if (MIN_BLOCK_SYMBOLS..=MAX_BLOCK_SYMBOLS).contains(&symbols) {
        Ok(())
    } else {
        Err(format!(
            "a CV block processes 1e5 to 1e8 symbols (every one is reconciled), got {symbols:.3e}"
        ))
    }
}

/// The operating point of a CV link for blocks of `symbols`: the modulation variance the
/// planner's optimiser chooses at that finite size, and its key per symbol there.
pub fn operating_point(hw: &CvGg02, loss_db: f64, symbols: f64, fk: FiniteKey) -> (f64, f64) {
    let sec = Security::Finite(FiniteKey {
        block_size: symbols,
        ..fk
    });
    let opt = optimise(
        hw,
        loss_db,
        &hw.initial(),
        &[true],
        &sec,
        &OptimiseOptions::default(),
    );
    (opt.x[0], opt.eval.raw_key_per_signal.max(0.0))
}

/// Flattened quadratures of one end (key material before reconciliation: wiped on drop,
/// no `Debug`).
#[derive(Default)]
pub struct Quadratures(pub Vec<f64>);

impl Drop for Quadratures {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// What a block gathered: the symbols kept for key at both ends, and the disclosed ones'
/// estimation sums (and Alice's disclosed values, which the disclosure message carries).
#[derive(Default)]
pub struct CvSymbols {
    /// Alice's quadratures of the key symbols (one value per quadrature pair).
    pub alice: Quadratures,
    /// Bob's outcomes of the key symbols.
    pub bob: Quadratures,
    /// Alice's values of the disclosed pairs (public once disclosed).
    pub disclosed: Vec<f64>,
    /// The disclosed pairs' sums.
    pub estimate: CvEstimate,
    /// Symbols gathered (key and disclosed).
    pub symbols: u64,
}

impl CvSymbols {
    /// Splits an event-level window's symbols: each symbol disclosed for estimation with
    /// probability `fraction` (drawn from `rng`), else kept for key. Homodyne symbols
    /// carry one pair (the measured quadrature), heterodyne two.
    pub fn push_window(
        &mut self,
        w: &qkdnet_emulator::cv::CvWindow,
        heterodyne: bool,
        fraction: f64,
        rng: &mut impl Rng,
    ) {
        for (al, bo) in w.alice.chunks_exact(2).zip(w.bob.chunks_exact(2)) {
            let pairs: &[(f64, f64)] = if heterodyne {
                &[(al[0], bo[0]), (al[1], bo[1])]
            } else if bo[0] == 0.0 {
                &[(al[0], bo[1])]
            } else {
                &[(al[1], bo[1])]
            };
            if rng.gen::<f64>() < fraction {
                for &(p, q) in pairs {
                    self.estimate.pairs += 1.0;
                    self.estimate.sum_aa += p * p;
                    self.estimate.sum_ab += p * q;
                    self.estimate.sum_bb += q * q;
                    self.disclosed.push(p);
                }
            } else {
                for &(p, q) in pairs {
                    self.alice.0.push(p);
                    self.bob.0.push(q);
                }
            }
            self.symbols += 1;
        }
    }
}

/// One CV block's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CvBlockReport {
    /// Block number.
    pub block: u64,
    /// Symbols gathered.
    pub symbols: u64,
    /// Quadrature pairs disclosed for estimation.
    pub estimation_pairs: u64,
    /// Estimated transmittance.
    pub transmittance: f64,
    /// Estimated excess noise at the channel input, SNU.
    pub excess_noise_snu: f64,
    /// Estimated SNR per quadrature pair.
    pub snr: f64,
    /// SNR the code was designed for.
    pub design_snr: f64,
    /// Code rate (0: no code).
    pub code_rate: f64,
    /// Reconciliation efficiency `rate / C(SNR)`.
    pub beta: f64,
    /// Frames announced.
    pub frames: usize,
    /// Frames decoded and verified.
    pub frames_kept: usize,
    /// Bits disclosed in reconciliation and verification.
    pub leaked_bits: u64,
    /// Holevo bound per symbol at the worst case (NaN: not reached).
    pub chi_be_worst: f64,
    /// Secret bits after privacy amplification.
    pub secret_bits: u64,
    /// Authentication pads used by the block's messages, bits.
    pub auth_bits: u64,
    /// Whether the two ends' final keys are equal (always, unless a wrong frame passed
    /// verification).
    pub keys_equal: bool,
    /// Wall-clock time of the block, s.
    pub wall_s: f64,
    /// Why the block gave no key, when it gave none.
    pub no_key: Option<String>,
}

/// A block's final keys at both ends, and what of them went back to the pads.
pub struct CvDistilled {
    /// Alice's final key (the replenished prefix removed).
    pub alice: Bits,
    /// Bob's final key (the replenished prefix removed).
    pub bob: Bits,
}

/// Both ends of a CV link's post-processing in one process (an emulation: the messages
/// are built, authenticated with the link's pads at the sender and checked at the
/// receiver, in memory). Randomness is insecure and deterministic from the seed, so a run
/// is reproducible: emulation only.
pub struct CvPostProcessor {
    hw: CvGg02,
    cfg: ReconcileConfig,
    code: Option<(CodeChoice, MetCode)>,
    auth: [AuthKeys; 2],
    bob_rng: InsecureDeterministic,
    shared_rng: InsecureDeterministic,
    seed: u64,
}

/// Authenticates one message: tagged by the sender, checked by the receiver, with the
/// next pad of both ends' pools.
fn authenticate(
    auth: &mut [AuthKeys; 2],
    from: usize,
    bytes: &[u8],
    seq: u32,
) -> Result<(), String> {
    let (s, r) = if from == 0 { (0, 1) } else { (1, 0) };
    let index = auth[s].cursor();
    let tag = auth[s].tag(index, bytes).map_err(|e| e.to_string())?;
    auth[r]
        .check(index, bytes, tag, seq)
        .map_err(|e| e.to_string())
}

impl CvPostProcessor {
    /// Post-processing for `hw` (at its operating modulation variance) with the link's
    /// pre-shared authentication key and `seed`; Alice decodes on `threads` threads.
    pub fn new(hw: CvGg02, psk: &Bits, seed: u64, threads: usize) -> Result<Self, String> {
        let auth_a = AuthKeys::from_preshared(psk.duplicate()).map_err(|e| e.to_string())?;
        let auth_b = AuthKeys::from_preshared(psk.duplicate()).map_err(|e| e.to_string())?;
        Ok(Self {
            hw,
            cfg: ReconcileConfig {
                threads: threads.max(1),
                ..ReconcileConfig::default()
            },
            code: None,
            auth: [auth_a, auth_b],
            bob_rng: InsecureDeterministic::new(seed, "cv bob"),
            shared_rng: InsecureDeterministic::new(seed, "cv shared"),
            seed,
        })
    }

    /// Reconciliation settings.
    pub fn config(&self) -> &ReconcileConfig {
        &self.cfg
    }

    /// Decoded frames a block of `symbols` symbols announces.
    pub fn frames_for(&self, symbols: f64) -> u64 {
        (symbols * (1.0 - self.hw.estimation_fraction) * self.hw.pairs_per_symbol()
            / self.cfg.frame_bits as f64)
            .floor()
            .max(1.0) as u64
    }

    /// Runs block `b` of `sym` through the stack; `on_frame` after each decoded frame.
    /// A block that cannot give key (no code for its SNR, every frame failed, the bound
    /// grants nothing) gives a report with `no_key` set and no keys; `Err` only when a
    /// message fails authentication or randomness fails.
    pub fn block(
        &mut self,
        b: u64,
        sym: CvSymbols,
        eps_sec: f64,
        on_frame: &(dyn Fn() + Sync),
    ) -> Result<(CvBlockReport, Option<CvDistilled>), String> {
        let t0 = std::time::Instant::now();
        let consumed = self.auth[0].consumed_bits();
        let hw = &self.hw;
        let est = sym.estimate;
        let mut report = CvBlockReport {
            block: b,
            symbols: sym.symbols,
            estimation_pairs: est.pairs as u64,
            transmittance: f64::NAN,
            excess_noise_snu: f64::NAN,
            snr: f64::NAN,
            design_snr: f64::NAN,
            code_rate: 0.0,
            beta: 0.0,
            frames: 0,
            frames_kept: 0,
            leaked_bits: 0,
            chi_be_worst: f64::NAN,
            secret_bits: 0,
            auth_bits: 0,
            keys_equal: true,
            wall_s: 0.0,
            no_key: None,
        };
        let done = |mut r: CvBlockReport, why: Option<String>, auth: &[AuthKeys; 2]| {
            r.no_key = why;
            r.auth_bits = auth[0].consumed_bits() - consumed;
            r.wall_s = t0.elapsed().as_secs_f64();
            r
        };
        if est.pairs < 2.0 || sym.alice.0.is_empty() {
            let why = format!(
                "{} symbols gathered: nothing to estimate or reconcile",
                sym.symbols
            );
            return Ok((done(report, Some(why), &self.auth), None));
        }
        // Message 1, Alice → Bob: her values of the disclosed symbols.
        let bytes: Vec<u8> = sym.disclosed.iter().flat_map(|v| v.to_le_bytes()).collect();
        authenticate(&mut self.auth, 0, &bytes, 1)?;
        let (g, noise) = est.gain_noise();
        let va_hat = est.sum_aa / est.pairs;
        let snr = g * g * va_hat / noise;
        let (t_hat, xi_hat) = hw.channel_from(g, noise);
        report.transmittance = t_hat;
        report.excess_noise_snu = xi_hat;
        report.snr = snr;
        let choice = CodeChoice::for_snr(snr, &self.cfg, self.seed ^ b);
        report.design_snr = choice.design_snr;
        if !(snr.is_finite() && snr > 0.0) {
            let why = format!("estimated SNR {snr:.3e}: no signal");
            return Ok((done(report, Some(why), &self.auth), None));
        }
        if self
            .code
            .as_ref()
            .is_none_or(|(c, _)| c.design_snr != choice.design_snr)
        {
            self.code = choice.build().ok().map(|(_, code)| (choice, code));
        }
        let Some((_, code)) = self.code.as_ref() else {
            let why = format!("no reconciliation code for SNR {snr:.3e}");
            return Ok((done(report, Some(why), &self.auth), None));
        };
        let fail = |e: &dyn std::fmt::Display| format!("block {b}: {e}");
        // Message 2, Bob → Alice: the code, the MDR announcements and the syndromes.
        let (bob, msg) =
            block::bob_reconcile(&sym.bob.0, code, choice, &self.cfg, &mut self.bob_rng)
                .map_err(|e| fail(&e))?;
        authenticate(&mut self.auth, 1, &msg.to_bytes(), 2)?;
        let alice = block::alice_reconcile(&sym.alice.0, &msg, code, g, noise, &self.cfg, on_frame)
            .map_err(|e| fail(&e))?;
        // Message 3, Bob → Alice: verification keys and Bob's tags; message 4, Alice →
        // Bob: the frames kept.
        let vmsg =
            block::verify_message(&bob, &self.cfg, &mut self.shared_rng).map_err(|e| fail(&e))?;
        authenticate(&mut self.auth, 1, &vmsg.to_bytes(), 3)?;
        let (kept, tag_bits) = block::verify_check(&alice, &vmsg).map_err(|e| fail(&e))?;
        let kept_bytes: Vec<u8> = kept
            .iter()
            .flat_map(|&i| (i as u32).to_le_bytes())
            .collect();
        authenticate(&mut self.auth, 0, &kept_bytes, 4)?;
        let ka = block::concat(&alice, &kept);
        let kb = block::concat(&bob, &kept);
        let key_symbols = ka.len() as f64 / hw.pairs_per_symbol();
        let leaked = (kept.len() * code.syndrome_len()) as u64 + tag_bits;
        report.code_rate = code.rate();
        report.beta = code.rate() / awgn_capacity(snr);
        report.frames = msg.frames.len();
        report.frames_kept = kept.len();
        report.leaked_bits = leaked;
        if kept.is_empty() {
            let why = format!("none of {} frames decoded and verified", msg.frames.len());
            return Ok((done(report, Some(why), &self.auth), None));
        }
        let net = ka.len() as f64 - leaked as f64;
        let bound = hw.block_bound(&est, va_hat, key_symbols, net, eps_sec);
        report.chi_be_worst = bound.chi_be;
        let secret = bound.secret_bits as usize;
        if secret == 0 {
            let why = format!(
                "finite-size bound grants nothing on {key_symbols:.3e} key symbols (worst-case T {:.3e}, ξ {:.3e} SNU)",
                bound.worst_transmittance, bound.worst_excess_noise_snu
            );
            return Ok((done(report, Some(why), &self.auth), None));
        }
        // Message 5, Bob → Alice: the privacy-amplification seed and length.
        let mut draw = vec![0u8; (ka.len() + secret - 1).div_ceil(8)];
        self.shared_rng.fill(&mut draw).map_err(|e| fail(&e))?;
        let mut pa_bytes = draw.clone();
        pa_bytes.extend_from_slice(&(secret as u64).to_le_bytes());
        authenticate(&mut self.auth, 1, &pa_bytes, 5)?;
        let draw = Bits::from_msb_bytes(&draw, ka.len() + secret - 1)
            .ok_or_else(|| fail(&"privacy-amplification seed"))?;
        let mut h = toeplitz::Hasher::new();
        let fa = h.hash_expanded(&draw, &ka, secret).map_err(|e| fail(&e))?;
        let fb = h.hash_expanded(&draw, &kb, secret).map_err(|e| fail(&e))?;
        report.keys_equal = fa.words() == fb.words();
        report.secret_bits = secret as u64;
        // The pads the block used go back first (and more while the pool runs low).
        let used = (self.auth[0].consumed_bits() - consumed) as usize;
        let held = self.auth[0].available_pads() as usize * qkdnet_distill::auth::TAG_BITS as usize;
        let take = replenish_share(used, held, fa.len());
        self.auth[0].replenish(&fa.slice(0, take));
        self.auth[1].replenish(&fb.slice(0, take));
        let out = CvDistilled {
            alice: fa.slice(take, fa.len()),
            bob: fb.slice(take, fb.len()),
        };
        Ok((done(report, None, &self.auth), Some(out)))
    }
}

/// Relative received pilot power below which the phase recovery loses the reference.
const PILOT_LOCK: f64 = 0.01;
/// Pilot power in the supervisor's count units at nominal transmission.
const PILOT_UNITS: f64 = 1e6;

/// One emulated CV-QKD link at runtime: windows of the emulator sampled to the block's
/// processed share, the supervisor on the pilot, and the post-processing of each block.
pub struct CvRunner {
    emu: CvEmulator,
    hw: CvGg02,
    per_window: usize,
    nominal_gain2: f64,
    sup: Supervisor,
    pe_rng: rand_chacha::ChaCha8Rng,
    window: u64,
    gathered: CvSymbols,
    post: CvPostProcessor,
    next_block: u64,
    block_symbols: f64,
    planned: f64,
}

impl CvRunner {
    /// A runner for `link` (its emulation seed drives the symbols, the estimation draws and
    /// the post-processing) processing `block_symbols` per block of `block_s` seconds,
    /// with the modulation variance the optimiser chooses for that block size, and the
    /// pre-shared authentication key `psk`.
    pub fn new(
        link: CvLink,
        block_s: f64,
        block_symbols: f64,
        fk: FiniteKey,
        psk: &Bits,
    ) -> Result<Self, InputError> {
        check_block_symbols(block_symbols).map_err(InputError::new)?;
        let per_window = (block_symbols * WINDOW_S / block_s).round().max(1.0);
        let rate = link.hardware().symbol_rate_hz;
        if per_window > rate * WINDOW_S {
            return Err(InputError::new(format!(
                "block_symbols: {block_symbols:.3e} per {block_s} s block is more than the {rate:.3e} Bd link sends"
            )));
        }
        let (va, planned) = operating_point(link.hardware(), link.loss_db(), block_symbols, fk);
        let link = link
            .with_modulation_variance(va)
            .map_err(|e| InputError::new(format!("{}: {}", e.field, e.reason)))?;
        let hw = link.hardware().clone();
        let seed = link.emulation().seed;
        let nominal = link.moments().gain;
        let emu = CvEmulator::new(link, WINDOW_S)
            .map_err(|e| InputError::new(format!("{}: {}", e.field, e.reason)))?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let psk = psk.duplicate();
        let post =
            CvPostProcessor::new(hw.clone(), &psk, seed, threads).map_err(InputError::new)?;
        Ok(Self {
            emu,
            hw,
            per_window: per_window as usize,
            nominal_gain2: nominal * nominal,
            sup: Supervisor::new(SupervisorConfig::default()),
            pe_rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_c0de),
            window: 0,
            gathered: CvSymbols::default(),
            post,
            next_block: 0,
            block_symbols,
            planned,
        })
    }

    /// The hardware at the operating point.
    pub fn hardware(&self) -> &CvGg02 {
        &self.hw
    }

    /// Symbols processed per block, and the planner's key per symbol at that size.
    pub fn block_plan(&self) -> (f64, f64) {
        (self.block_symbols, self.planned)
    }

    /// The supervisor.
    pub fn supervisor(&self) -> &Supervisor {
        &self.sup
    }

    /// Virtual time reached, s.
    pub fn time_s(&self) -> f64 {
        self.window as f64 * WINDOW_S
    }

    /// Runs one window: its sampled symbols, the pilot judged, and the symbols of a
    /// producing window gathered for the block.
    pub fn step(&mut self) -> WindowOutput {
        let w = self.emu.step_sample(self.per_window);
        let m = self.emu.moments();
        self.window += 1;
        let t_s = self.time_s();
        let pilot = m.gain * m.gain / self.nominal_gain2;
        let units = (pilot * PILOT_UNITS).round() as u64;
        let obs = Observation {
            time_ps: (t_s * 1e12) as i64,
            length_ps: (WINDOW_S * 1e12) as i64,
            singles: [units, units],
            key: Tally::default(),
            test: Tally::default(),
            sync_locked: pilot >= PILOT_LOCK,
        };
        let (produced, _, transitions) = crate::runner::observe(&mut self.sup, &obs);
        let mut window_est = None;
        if produced {
            let before = self.gathered.estimate;
            self.gathered.push_window(
                &w,
                m.pairs_per_symbol == 2,
                self.hw.estimation_fraction,
                &mut self.pe_rng,
            );
            let after = self.gathered.estimate;
            window_est = Some(CvEstimate {
                pairs: after.pairs - before.pairs,
                sum_aa: after.sum_aa - before.sum_aa,
                sum_ab: after.sum_ab - before.sum_ab,
                sum_bb: after.sum_bb - before.sum_bb,
            });
        }
        WindowOutput {
            t_s,
            conditions: None,
            decoy: None,
            mdi: None,
            tf: None,
            cv: window_est,
            singles: [units, units],
            z: BasisCounts::default(),
            x: BasisCounts::default(),
            locked: obs.sync_locked,
            produced,
            keys: None,
            transitions,
            sync_offset_ps: f64::NAN,
        }
    }

    /// Symbols gathered for the next block.
    pub fn gathered_symbols(&self) -> u64 {
        self.gathered.symbols
    }

    /// Distils what has gathered as the next block (numbered even when it gives no key).
    pub fn distil(
        &mut self,
        fk: FiniteKey,
        on_frame: &(dyn Fn() + Sync),
    ) -> Result<(CvBlockReport, Option<CvDistilled>), String> {
        let b = self.next_block;
        self.next_block += 1;
        let sym = std::mem::take(&mut self.gathered);
        self.post.block(b, sym, fk.eps_sec, on_frame)
    }
}
