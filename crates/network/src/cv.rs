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
use qkdnet_link::{MemTransport, Transport};
use rand::{Rng, SeedableRng};
use std::sync::{Arc, Mutex};
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

/// The operating point of a CV link run with this crate's codes, for blocks of `symbols`:
/// the modulation variance that maximises the finite-size key when reconciliation reaches
/// [`block::expected_beta`] at the SNR that variance gives (a scan over 0.5–50 SNU in 2 %
/// steps), and the key per symbol there. The scenario's own β (a published system's
/// codes) sets the plan; this sets what the runtime operates at.
pub fn code_operating_point(hw: &CvGg02, loss_db: f64, symbols: f64, fk: FiniteKey) -> (f64, f64) {
    let sec = Security::Finite(FiniteKey {
        block_size: symbols,
        ..fk
    });
    let t = 10f64.powf(-loss_db / 10.0);
    let xi = hw.excess_noise_snu + hw.raman_excess_noise(loss_db);
    let (g, noise) = hw.expected_gain_noise(t, xi);
    let mut best = (hw.modulation_variance_snu, f64::NEG_INFINITY);
    let mut va = 0.5f64;
    while va <= 50.0 {
        let mut h = hw.clone();
        h.reconciliation_efficiency = block::expected_beta(g * g * va / noise);
        let k = h.evaluate(loss_db, &[va], &sec).raw_key_per_signal;
        if k > best.1 {
            best = (va, k);
        }
        va *= 1.02;
    }
    (best.0, best.1.max(0.0))
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
    /// Bob's values of the disclosed pairs.
    pub disclosed_bob: Vec<f64>,
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
                    self.estimate.push(p, q);
                    self.disclosed.push(p);
                    self.disclosed_bob.push(q);
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

    /// The two ends' halves: what Alice holds and what Bob holds.
    pub fn split(mut self) -> (CvAliceHalf, CvBobHalf) {
        let alice = CvAliceHalf {
            key: std::mem::take(&mut self.alice),
            disclosed: std::mem::take(&mut self.disclosed),
            symbols: self.symbols,
        };
        let bob = CvBobHalf {
            key: std::mem::take(&mut self.bob),
            disclosed: std::mem::take(&mut self.disclosed_bob),
            symbols: self.symbols,
        };
        (alice, bob)
    }
}

/// Alice's half of a block: her quadratures of the key symbols and of the disclosed ones.
pub struct CvAliceHalf {
    /// Key symbols' quadratures.
    pub key: Quadratures,
    /// Disclosed symbols' quadratures (sent to Bob).
    pub disclosed: Vec<f64>,
    /// Symbols in the block.
    pub symbols: u64,
}

/// Bob's half of a block: his outcomes on the key symbols and on the disclosed ones.
pub struct CvBobHalf {
    /// Key symbols' outcomes.
    pub key: Quadratures,
    /// Disclosed symbols' outcomes (paired with Alice's values when she sends them).
    pub disclosed: Vec<f64>,
    /// Symbols in the block.
    pub symbols: u64,
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

/// The code held: its choice and graph.
type HeldCode = Option<(CodeChoice, Arc<MetCode>)>;

/// The reconciliation code in use, shared by the blocks of a link (and, in one process,
/// by its two ends: both draw the same graph from the announced choice).
#[derive(Clone, Default)]
pub struct CodeCache(Arc<Mutex<HeldCode>>);

impl CodeCache {
    /// The code of `choice`, drawn when it is not the one held.
    pub fn get(&self, choice: CodeChoice) -> Result<Arc<MetCode>, String> {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((c, code)) = held.as_ref() {
            if *c == choice {
                return Ok(Arc::clone(code));
            }
        }
        let (_, code) = choice.build().map_err(|e| e.to_string())?;
        let code = Arc::new(code);
        *held = Some((choice, Arc::clone(&code)));
        Ok(code)
    }
}

/// What one end of a CV session brings: the hardware at its operating point, the
/// reconciliation settings, the code cache, and the link's authentication pads (a pool
/// whose cursor is where both ends start).
pub struct CvEnd<'a> {
    /// Hardware at the operating point.
    pub hw: &'a CvGg02,
    /// Reconciliation settings (Alice's `threads` decode her frames).
    pub cfg: &'a ReconcileConfig,
    /// The code in use.
    pub codes: &'a CodeCache,
    /// Authentication pads.
    pub auth: &'a mut AuthKeys,
}

/// Message numbers of a CV session (each message is `[number][payload][tag]`).
mod msg {
    pub const DISCLOSED: u8 = 1;
    pub const RECONCILE: u8 = 2;
    pub const FRAME: u8 = 3;
    pub const VERIFY: u8 = 4;
    pub const KEPT: u8 = 5;
    pub const AMPLIFY: u8 = 6;
}

/// Sends `payload` as message `n`, tagged with the next pad.
fn send(t: &mut dyn Transport, auth: &mut AuthKeys, n: u8, payload: &[u8]) -> Result<(), String> {
    let mut m = Vec::with_capacity(payload.len() + 9);
    m.push(n);
    m.extend_from_slice(payload);
    let tag = auth
        .tag(auth.cursor(), &m)
        .map_err(|e| format!("CV message {n}: {e}"))?;
    m.extend_from_slice(&tag.to_le_bytes());
    t.send(&m).map_err(|e| format!("CV message {n}: {e}"))
}

/// Receives message `n`, checking its tag with the next pad.
fn recv(t: &mut dyn Transport, auth: &mut AuthKeys, n: u8) -> Result<Vec<u8>, String> {
    let mut m = t.recv().map_err(|e| format!("CV message {n}: {e}"))?;
    if m.len() < 9 || m[0] != n {
        return Err(format!(
            "CV message {n}: got {} bytes starting {:?}",
            m.len(),
            m.first()
        ));
    }
    let at = m.len() - 8;
    let tag = u64::from_le_bytes(m[at..].try_into().unwrap_or([0; 8]));
    m.truncate(at);
    auth.check(auth.cursor(), &m, tag, n as u32)
        .map_err(|e| format!("CV message {n}: {e}"))?;
    m.remove(0);
    Ok(m)
}

/// Little-endian reads with errors naming the message.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    n: u8,
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8], n: u8) -> Self {
        Self { b, at: 0, n }
    }
    fn take(&mut self, k: usize) -> Result<&'a [u8], String> {
        let s = self
            .b
            .get(self.at..self.at.saturating_add(k))
            .ok_or_else(|| format!("CV message {}: truncated at byte {}", self.n, self.at))?;
        self.at += k;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or([0; 8]),
        ))
    }
    fn f64(&mut self) -> Result<f64, String> {
        Ok(f64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or([0; 8]),
        ))
    }
    fn rest(&mut self) -> &'a [u8] {
        let r = &self.b[self.at.min(self.b.len())..];
        self.at = self.b.len();
        r
    }
}

/// How a session ended at one end.
pub enum CvEnded {
    /// The block's final key (before the pads' share).
    Key(Bits),
    /// No key, and why (the same at both ends).
    NoKey(String),
}

/// Alice's end of block `b`: she discloses her estimation values, decodes Bob's frames
/// (`on_frame` after each), answers his verification, and applies his privacy
/// amplification.
pub fn cv_alice(
    t: &mut dyn Transport,
    end: CvEnd<'_>,
    half: CvAliceHalf,
    on_frame: &(dyn Fn() + Sync),
) -> Result<CvEnded, String> {
    let bytes: Vec<u8> = half
        .disclosed
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    send(t, end.auth, msg::DISCLOSED, &bytes)?;
    let m = recv(t, end.auth, msg::RECONCILE)?;
    let mut r = Reader::new(&m, msg::RECONCILE);
    if r.u8()? == 0 {
        return Ok(CvEnded::NoKey(
            String::from_utf8_lossy(r.rest()).into_owned(),
        ));
    }
    let (g, noise) = (r.f64()?, r.f64()?);
    if !(g.is_finite() && g > 0.0 && noise.is_finite() && noise > 0.0) {
        return Err(format!("CV message 2: gain {g}, noise {noise}"));
    }
    let choice = CodeChoice::from_bytes(r.take(24)?).map_err(|e| e.to_string())?;
    let frames = r.u64()? as usize;
    let code = end.codes.get(choice)?;
    if frames != half.key.0.len() / code.len() {
        return Err(format!(
            "CV message 2: {frames} frames announced for {} of Alice's",
            half.key.0.len() / code.len()
        ));
    }
    let mut announced = Vec::with_capacity(frames);
    for _ in 0..frames {
        let f = recv(t, end.auth, msg::FRAME)?;
        announced.push(block::BobMessage::parse_frame(&f, &code).map_err(|e| e.to_string())?);
    }
    let bob_msg = block::BobMessage {
        code: choice,
        frames: announced,
    };
    let alice = block::alice_reconcile(&half.key.0, &bob_msg, &code, g, noise, end.cfg, on_frame)
        .map_err(|e| e.to_string())?;
    let v = recv(t, end.auth, msg::VERIFY)?;
    let v = block::VerifyMessage::from_bytes(&v, frames).map_err(|e| e.to_string())?;
    let (kept, _) = block::verify_check(&alice, &v).map_err(|e| e.to_string())?;
    let kept_bytes: Vec<u8> = kept
        .iter()
        .flat_map(|&i| (i as u32).to_le_bytes())
        .collect();
    send(t, end.auth, msg::KEPT, &kept_bytes)?;
    let m = recv(t, end.auth, msg::AMPLIFY)?;
    let mut r = Reader::new(&m, msg::AMPLIFY);
    if r.u8()? == 0 {
        return Ok(CvEnded::NoKey(
            String::from_utf8_lossy(r.rest()).into_owned(),
        ));
    }
    let secret = r.u64()? as usize;
    let ka = block::concat(&alice, &kept);
    if secret == 0 || secret > ka.len() {
        return Err(format!(
            "CV message 6: {secret} secret bits from {}",
            ka.len()
        ));
    }
    let seed = Bits::from_msb_bytes(r.rest(), ka.len() + secret - 1)
        .ok_or_else(|| "CV message 6: seed too short".to_string())?;
    let key = toeplitz::Hasher::new()
        .hash_expanded(&seed, &ka, secret)
        .map_err(|e| e.to_string())?;
    Ok(CvEnded::Key(key))
}

/// Bob's end of block `b`: he estimates the channel from Alice's disclosed values and
/// his, chooses the code, announces his frames, verifies, and sets the key's length from
/// the observed-statistics bound (`eps_sec`). His bits come from `bits_rng`, the
/// verification keys and privacy-amplification seed from `public_rng`. Returns the
/// block's report and how it ended.
pub fn cv_bob(
    t: &mut dyn Transport,
    end: CvEnd<'_>,
    b: u64,
    half: CvBobHalf,
    eps_sec: f64,
    rngs: (&mut dyn SecureRandom, &mut dyn SecureRandom),
) -> Result<(CvBlockReport, CvEnded), String> {
    let t0 = std::time::Instant::now();
    let (bits_rng, public_rng) = rngs;
    let consumed = end.auth.consumed_bits();
    let hw = end.hw;
    let mut report = CvBlockReport {
        block: b,
        symbols: half.symbols,
        estimation_pairs: half.disclosed.len() as u64,
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
    let m = recv(t, end.auth, msg::DISCLOSED)?;
    if m.len() != 8 * half.disclosed.len() {
        return Err(format!(
            "CV message 1: {} bytes for {} disclosed values",
            m.len(),
            half.disclosed.len()
        ));
    }
    let mut est = CvEstimate::default();
    for (a, &q) in m.chunks_exact(8).zip(&half.disclosed) {
        est.push(f64::from_le_bytes(a.try_into().unwrap_or([0; 8])), q);
    }
    // Ends the session without key: both ends learn why (`n`: the message that says so).
    let stop = |t: &mut dyn Transport,
                auth: &mut AuthKeys,
                n: u8,
                mut report: CvBlockReport,
                why: String|
     -> Result<(CvBlockReport, CvEnded), String> {
        let mut m = vec![0u8];
        m.extend_from_slice(why.as_bytes());
        send(t, auth, n, &m)?;
        report.no_key = Some(why.clone());
        report.auth_bits = auth.consumed_bits() - consumed;
        report.wall_s = t0.elapsed().as_secs_f64();
        Ok((report, CvEnded::NoKey(why)))
    };
    let (g, noise) = est.gain_noise();
    let va_hat = est.sum_aa / est.pairs;
    let snr = g * g * va_hat / noise;
    let (t_hat, xi_hat) = hw.channel_from(g, noise);
    report.transmittance = t_hat;
    report.excess_noise_snu = xi_hat;
    report.snr = snr;
    if est.pairs < 2.0 || half.key.0.is_empty() {
        let why = format!(
            "{} symbols gathered: nothing to estimate or reconcile",
            half.symbols
        );
        return stop(t, end.auth, msg::RECONCILE, report, why);
    }
    if !(snr.is_finite() && snr > 0.0) {
        let why = format!("estimated SNR {snr:.3e}: no signal");
        return stop(t, end.auth, msg::RECONCILE, report, why);
    }
    let choice = CodeChoice::for_snr(snr, end.cfg, CODE_SEED);
    report.design_snr = choice.design_snr;
    let code = match end.codes.get(choice) {
        Ok(c) => c,
        Err(_) => {
            let why = format!("no reconciliation code for SNR {snr:.3e}");
            return stop(t, end.auth, msg::RECONCILE, report, why);
        }
    };
    let fail = |e: &dyn std::fmt::Display| format!("block {b}: {e}");
    let (bob, announced) = block::bob_reconcile(&half.key.0, &code, choice, end.cfg, bits_rng)
        .map_err(|e| fail(&e))?;
    let mut head = vec![1u8];
    head.extend_from_slice(&g.to_le_bytes());
    head.extend_from_slice(&noise.to_le_bytes());
    head.extend_from_slice(&choice.to_bytes());
    head.extend_from_slice(&(announced.frames.len() as u64).to_le_bytes());
    send(t, end.auth, msg::RECONCILE, &head)?;
    for i in 0..announced.frames.len() {
        send(t, end.auth, msg::FRAME, &announced.frame_bytes(i))?;
    }
    let v = block::verify_message(&bob, end.cfg, public_rng).map_err(|e| fail(&e))?;
    send(t, end.auth, msg::VERIFY, &v.to_bytes())?;
    let m = recv(t, end.auth, msg::KEPT)?;
    if m.len() % 4 != 0 || m.len() / 4 > bob.0.len() {
        return Err(format!("CV message 5: {} bytes", m.len()));
    }
    let mut kept = Vec::with_capacity(m.len() / 4);
    for c in m.chunks_exact(4) {
        let i = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize;
        if i >= bob.0.len() || kept.last().is_some_and(|&l| l >= i) {
            return Err(format!("CV message 5: frame {i} out of order or range"));
        }
        kept.push(i);
    }
    // Tag bits disclosed on the frames Alice decoded: at most one tag per kept frame
    // plus those she failed to match, all counted (every tag Bob sent is public).
    let tag_bits = v.tags.iter().flatten().count() as u64 * v.tag_bits as u64;
    let kb = block::concat(&bob, &kept);
    let key_symbols = kb.len() as f64 / hw.pairs_per_symbol();
    let leaked = (kept.len() * code.syndrome_len()) as u64 + tag_bits;
    report.code_rate = code.rate();
    report.beta = code.rate() / awgn_capacity(snr);
    report.frames = announced.frames.len();
    report.frames_kept = kept.len();
    report.leaked_bits = leaked;
    if kept.is_empty() {
        let why = format!(
            "none of {} frames decoded and verified",
            announced.frames.len()
        );
        return stop(t, end.auth, msg::AMPLIFY, report, why);
    }
    let net = kb.len() as f64 - leaked as f64;
    let bound = hw.block_bound(&est, va_hat, key_symbols, net, eps_sec);
    report.chi_be_worst = bound.chi_be;
    let secret = bound.secret_bits as usize;
    if secret == 0 {
        let why = format!(
            "finite-size bound grants nothing on {key_symbols:.3e} key symbols (worst-case T {:.3e}, ξ {:.3e} SNU)",
            bound.worst_transmittance, bound.worst_excess_noise_snu
        );
        return stop(t, end.auth, msg::AMPLIFY, report, why);
    }
    let mut seed = vec![0u8; (kb.len() + secret - 1).div_ceil(8)];
    public_rng.fill(&mut seed).map_err(|e| fail(&e))?;
    let mut m = vec![1u8];
    m.extend_from_slice(&(secret as u64).to_le_bytes());
    m.extend_from_slice(&seed);
    send(t, end.auth, msg::AMPLIFY, &m)?;
    let seed = Bits::from_msb_bytes(&seed, kb.len() + secret - 1)
        .ok_or_else(|| fail(&"privacy-amplification seed"))?;
    let key = toeplitz::Hasher::new()
        .hash_expanded(&seed, &kb, secret)
        .map_err(|e| fail(&e))?;
    report.secret_bits = secret as u64;
    report.auth_bits = end.auth.consumed_bits() - consumed;
    report.wall_s = t0.elapsed().as_secs_f64();
    Ok((report, CvEnded::Key(key)))
}

/// The seed of the code graphs Bob chooses (announced with the code; one seed, so a
/// link's blocks of similar SNR share one code and its cache entry).
const CODE_SEED: u64 = 0x6376_636f_6465;

/// Both ends of a CV link's post-processing in one process (an emulation: the two
/// sessions run on two threads and exchange their authenticated messages in memory; they
/// share the code cache, since both draw the same graph from the announced choice).
/// Randomness is insecure and deterministic from the seed, so a run is reproducible:
/// emulation only.
pub struct CvPostProcessor {
    hw: CvGg02,
    cfg: ReconcileConfig,
    codes: CodeCache,
    auth: [AuthKeys; 2],
    bob_rng: InsecureDeterministic,
    shared_rng: InsecureDeterministic,
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
            codes: CodeCache::default(),
            auth: [auth_a, auth_b],
            bob_rng: InsecureDeterministic::new(seed, "cv bob"),
            shared_rng: InsecureDeterministic::new(seed, "cv shared"),
        })
    }

    /// Decoded frames a block of `symbols` symbols announces.
    pub fn frames_for(&self, symbols: f64) -> u64 {
        (symbols * (1.0 - self.hw.estimation_fraction) * self.hw.pairs_per_symbol()
            / self.cfg.frame_bits as f64)
            .floor()
            .max(1.0) as u64
    }

    /// Runs block `b` of `sym` through both ends; `on_frame` after each decoded frame.
    /// A block that gives no key (no code for its SNR, every frame failed, the bound grants
    /// nothing) gives a report with `no_key` set; `Err` when a message fails
    /// authentication or the two ends disagree.
    pub fn block(
        &mut self,
        b: u64,
        sym: CvSymbols,
        eps_sec: f64,
        on_frame: &(dyn Fn() + Sync),
    ) -> Result<(CvBlockReport, Option<CvDistilled>), String> {
        let (alice_half, bob_half) = sym.split();
        let (ta, mut tb) = MemTransport::pair();
        let [auth_a, auth_b] = &mut self.auth;
        let consumed = auth_a.consumed_bits();
        let (hw, cfg, codes) = (&self.hw, &self.cfg, &self.codes);
        let (bob_rng, shared_rng) = (&mut self.bob_rng, &mut self.shared_rng);
        let (alice, bob) = std::thread::scope(|s| {
            let bob = s.spawn(move || {
                let end = CvEnd {
                    hw,
                    cfg,
                    codes,
                    auth: auth_b,
                };
                // The transport closes when Bob's end returns, so Alice never waits on it.
                let r = cv_bob(&mut tb, end, b, bob_half, eps_sec, (bob_rng, shared_rng));
                drop(tb);
                r
            });
            let alice = {
                let mut ta = ta;
                let end = CvEnd {
                    hw,
                    cfg,
                    codes,
                    auth: auth_a,
                };
                cv_alice(&mut ta, end, alice_half, on_frame)
            };
            let bob = bob
                .join()
                .unwrap_or_else(|_| Err("Bob's session panicked".into()));
            (alice, bob)
        });
        let (mut report, bob) = bob?;
        let alice = alice?;
        let (fa, fb) = match (alice, bob) {
            (CvEnded::Key(a), CvEnded::Key(b)) => (a, b),
            (CvEnded::NoKey(_), CvEnded::NoKey(_)) => return Ok((report, None)),
            _ => return Err(format!("block {b}: one end has a key and the other none")),
        };
        report.keys_equal = fa.words() == fb.words();
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
        Ok((report, Some(out)))
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
    /// at the modulation variance where this crate's codes give the most key for that
    /// block size ([`code_operating_point`]), with the pre-shared authentication key `psk`.
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
        let (va, planned) =
            code_operating_point(link.hardware(), link.loss_db(), block_symbols, fk);
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

    /// Symbols processed per block, and the key per symbol the model gives at that size
    /// and operating point with the codes' expected β.
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
            cv: window_est,
            locked: obs.sync_locked,
            ..WindowOutput::pulsed(
                t_s,
                units,
                BasisCounts::default(),
                produced,
                None,
                transitions,
            )
        }
    }

    /// Takes what has gathered as the next block, numbered (a node daemon distils its two
    /// halves between two processes).
    pub fn take_block(&mut self) -> (u64, CvSymbols) {
        let b = self.next_block;
        self.next_block += 1;
        (b, std::mem::take(&mut self.gathered))
    }

    /// The next block's number (blocks taken so far).
    pub fn blocks_taken(&self) -> u64 {
        self.next_block
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
        let (b, sym) = self.take_block();
        self.post.block(b, sym, fk.eps_sec, on_frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qkdnet_emulator::cv::CvEmulation;
    use qkdnet_optics::detector::CoherentDetection;

    /// A 10 km heterodyne link's block of 2.4e6 symbols (four frames), both halves.
    fn block_symbols(seed: u64) -> (CvGg02, CvSymbols) {
        let hw = CvGg02 {
            detection: CoherentDetection::Heterodyne,
            modulation_variance_snu: 3.0,
            ..CvGg02::default()
        };
        let link = CvLink::new(
            hw.clone(),
            1.6,
            CvEmulation {
                seed,
                ..CvEmulation::default()
            },
        )
        .expect("link");
        let mut emu = CvEmulator::new(link, 2.4e6 / hw.symbol_rate_hz).expect("emulator");
        let w = emu.step_symbols();
        let mut sym = CvSymbols::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        sym.push_window(&w, true, 0.1, &mut rng);
        (hw, sym)
    }

    /// Alters the first byte past the message number of message `n` when it is sent.
    struct Tamper<T> {
        inner: T,
        n: u8,
    }

    impl<T: Transport> Transport for Tamper<T> {
        fn send(&mut self, m: &[u8]) -> Result<(), qkdnet_link::TransportError> {
            let mut m = m.to_vec();
            if m.first() == Some(&self.n) && m.len() > 9 {
                m[1] ^= 1;
            }
            self.inner.send(&m)
        }
        fn recv(&mut self) -> Result<Vec<u8>, qkdnet_link::TransportError> {
            self.inner.recv()
        }
    }

    fn session(
        n_tampered: u8,
    ) -> (
        Result<CvEnded, String>,
        Result<(CvBlockReport, CvEnded), String>,
    ) {
        let (hw, sym) = block_symbols(4);
        let (alice_half, bob_half) = sym.split();
        let psk = crate::runner::emulated_preshared_key(9);
        let mut auth_a = AuthKeys::from_preshared(psk.duplicate()).expect("pads");
        let mut auth_b = AuthKeys::from_preshared(psk).expect("pads");
        let cfg = ReconcileConfig {
            threads: 2,
            ..ReconcileConfig::default()
        };
        let codes = CodeCache::default();
        let (ta, tb) = MemTransport::pair();
        let mut tb = Tamper {
            inner: tb,
            n: n_tampered,
        };
        let mut r1 = InsecureDeterministic::new(1, "test");
        let mut r2 = InsecureDeterministic::new(2, "test");
        std::thread::scope(|s| {
            let (hw2, cfg2, codes2) = (&hw, &cfg, &codes);
            let bob = s.spawn(move || {
                let end = CvEnd {
                    hw: hw2,
                    cfg: cfg2,
                    codes: codes2,
                    auth: &mut auth_b,
                };
                let r = cv_bob(&mut tb, end, 0, bob_half, 1e-10, (&mut r1, &mut r2));
                drop(tb);
                r
            });
            let alice = {
                let mut ta = Tamper {
                    inner: ta,
                    n: n_tampered,
                };
                let end = CvEnd {
                    hw: &hw,
                    cfg: &cfg,
                    codes: &codes,
                    auth: &mut auth_a,
                };
                cv_alice(&mut ta, end, alice_half, &|| ())
            };
            (alice, bob.join().expect("bob"))
        })
    }

    #[test]
    fn both_ends_reach_the_same_key_and_a_forged_message_is_refused() {
        let (alice, bob) = session(0);
        let (report, bob) = bob.expect("bob");
        match (alice.expect("alice"), bob) {
            (CvEnded::Key(a), CvEnded::Key(b)) => {
                assert!(a.len() > 1000, "{report:?}");
                assert_eq!(a.words(), b.words());
            }
            _ => panic!("no key: {report:?}"),
        }
        // Six messages and one per frame, each one pad at both ends.
        assert_eq!(
            report.auth_bits,
            64 * (5 + report.frames as u64),
            "{report:?}"
        );
        // Alice's disclosure altered on the way: Bob's check refuses it by message.
        let (_, bob) = session(msg::DISCLOSED);
        let e = bob.err().expect("refused");
        assert!(e.contains("CV message 1") && e.contains("tag"), "{e}");
        // Bob's announcement altered: Alice refuses it before decoding.
        let (alice, _) = session(msg::RECONCILE);
        let e = alice.err().expect("refused");
        assert!(e.contains("CV message 2") && e.contains("tag"), "{e}");
    }

    #[test]
    fn messages_that_do_not_fit_are_refused_by_name() {
        assert!(CodeChoice::from_bytes(&[0u8; 10]).is_err());
        let c = CodeChoice {
            design_snr: 0.5,
            seed: 3,
            frame_bits: 1 << 20,
        };
        assert_eq!(CodeChoice::from_bytes(&c.to_bytes()).expect("choice"), c);
        let mut bad = c.to_bytes();
        bad[..8].copy_from_slice(&f64::NAN.to_le_bytes());
        assert!(CodeChoice::from_bytes(&bad).is_err());
        assert!(block::VerifyMessage::from_bytes(&[64, 0, 0, 0, 1], 1).is_err());
        let mut r = Reader::new(&[1, 2, 3], 7);
        assert!(r.u64().unwrap_err().contains("CV message 7: truncated"));
    }
}
