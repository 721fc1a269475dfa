//! A distillation session: the two ends of a link turn one block of sifted bits into
//! identical final keys, exchanging authenticated [`qkdnet_wire`] messages.
//!
//! ```text
//!  Alice                                         Bob
//!  Hello(params, seeds, pad offset), Sample  ──►
//!                                           ◄──  SampleVerdict(errors), ParityQueries
//!  ParityAnswers                             ──►
//!                                           ◄──  ParityQueries …   (until no frame asks)
//!  VerifyTag(hash key, tag)                  ──►
//!                                           ◄──  VerifyResult(ok)
//!  [only if not ok, once:]
//!  FrameTags(hash key, one tag per frame)    ──►
//!                                           ◄──  FrameVerdict(frames that differ)
//!  VerifyTag(hash key, tag over the rest)    ──►
//!                                           ◄──  VerifyResult(ok)
//!  PaSeed(ℓ, Toeplitz seed)                  ──►
//!                                           ◄──  Done(ℓ)
//! ```
//!
//! The block is cut into Cascade frames that are reconciled together: each message carries
//! the questions or answers of every frame still working, so the round trips of all frames
//! overlap. Every message carries a Wegman–Carter tag ([`crate::auth`]); a bad tag, a
//! malformed or unexpected message, an error rate above the threshold, a failed
//! verification or a non-positive key length ends the session with an error on that side
//! (and an `Abort` sent where possible), and no key. Both ends compute the key length
//! independently from the public transcript; Bob refuses a `PaSeed` whose length differs.
//! Alice's key is final only when Bob's `Done` arrives.
//!
//! Cascade leaves a residual error in a small fraction of frames (its frame error rate);
//! with hundreds of frames per block, some block would fail verification and lose every
//! frame. So a failed verification is followed, once, by a per-frame check: Alice sends a
//! [`FRAME_TAG_BITS`]-bit tag of each frame under a fresh hash key, both ends discard the
//! frames whose tags differ, and a fresh full-length tag verifies what remains (that tag
//! alone carries the ε_cor guarantee; the frame tags only locate the failures). Every tag
//! bit counts as leaked; the discarded frames' Cascade parities stay counted too.
//!
//! The state machines are sans-IO: [`AliceSession::start`] and the `handle` methods take
//! bytes and return the bytes to send.

use crate::auth::{AuthError, AuthKeys};
use crate::cascade::{self, CascadeError, Schedule, Shuffles, Step, Variant};
use crate::estimate::{key_length, Sample};
use crate::polyhash::{self, PolyHash};
use crate::random::{RandomError, SecureRandom};
use crate::toeplitz::{self, ToeplitzError};
use qkdnet_core::Bits;
use qkdnet_wire::{
    encode, BitString, Envelope, Hello, Limits, Message, MessageType, WireError,
    DEFAULT_MAX_PAYLOAD,
};
use std::sync::Arc;

/// How many Cascade frames Bob reconciles at once by default: all of the block's.
///
/// Every frame in flight keeps its state (shuffled copies, search trees) live between
/// rounds; past what the caches hold, a round spends its time in misses. Measured on a
/// 10⁷-bit block of 2¹⁶-bit frames (137 frames) at 2 % QBER (`qkdnet bench distill
/// --frames-in-flight W`): reconciliation at 51 Mbit/s with all frames at once (272 round
/// trips), 60 with 64 (518), 66 with 32 (839), 69 with 16 (1537). Each message spends one
/// authentication pad and a link reserves a fixed number per block
/// (`qkdnet_link::Pipelining::pads_per_block`, 1024 by default), and every round trip
/// waits a network round-trip time, so the default keeps the fewest round trips; a link
/// with pads to spare and a short round trip can trade them for speed.
pub const DEFAULT_FRAMES_IN_FLIGHT: usize = usize::MAX;

/// Session parameters (Alice proposes them in `Hello`).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Cascade frame length, bits.
    pub frame_bits: usize,
    /// Cascade schedule.
    pub variant: Variant,
    /// Extra BICONF passes.
    pub biconf: u8,
    /// Abort when the sample error rate exceeds this.
    pub qber_max: f64,
    /// Secrecy parameter.
    pub eps_sec: f64,
    /// Correctness parameter (sets the verification tag length).
    pub eps_cor: f64,
    /// Fraction of the sifted bits disclosed for parameter estimation.
    pub sample_fraction: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            frame_bits: 1 << 16,
            variant: Variant::YanEtAl,
            biconf: 0,
            qber_max: 0.11,
            eps_sec: 1e-10,
            eps_cor: 1e-15,
            sample_fraction: 0.1,
        }
    }
}

impl Config {
    /// Checks every field, naming it.
    pub fn validate(&self) -> Result<(), SessionError> {
        let bad = |field: &'static str, value: String| SessionError::Config { field, value };
        if !(64..=1 << 30).contains(&self.frame_bits) {
            return Err(bad("frame_bits", self.frame_bits.to_string()));
        }
        if !(self.qber_max.is_finite() && self.qber_max > 0.0 && self.qber_max < 0.5) {
            return Err(bad("qber_max", self.qber_max.to_string()));
        }
        for (f, v) in [("eps_sec", self.eps_sec), ("eps_cor", self.eps_cor)] {
            if !(v.is_finite() && v > 0.0 && v < 1.0) {
                return Err(bad(f, v.to_string()));
            }
        }
        if !(self.sample_fraction.is_finite()
            && self.sample_fraction > 0.0
            && self.sample_fraction < 1.0)
        {
            return Err(bad("sample_fraction", self.sample_fraction.to_string()));
        }
        Ok(())
    }
}

/// Why a session produced no key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// A configuration value is out of range.
    #[error("session config: {field} = {value} is out of range")]
    Config {
        /// Field.
        field: &'static str,
        /// Value.
        value: String,
    },
    /// Malformed bytes from the peer.
    #[error("malformed message from peer: {0}")]
    Wire(#[from] WireError),
    /// Authentication failed (forged or altered message) or pads ran out.
    #[error("authentication: {0}")]
    Auth(#[from] AuthError),
    /// The peer broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A Cascade message could not be handled.
    #[error("reconciliation: {0}")]
    Cascade(#[from] CascadeError),
    /// The sample error rate is above the threshold.
    #[error("error rate {observed:.4} in the sample exceeds qber_max {max}")]
    QberTooHigh {
        /// Sample error rate.
        observed: f64,
        /// Threshold.
        max: f64,
    },
    /// The keys differ after reconciliation.
    #[error("verification failed: the reconciled keys differ")]
    VerificationFailed,
    /// The finite-key bound leaves nothing.
    #[error("no secret key: the finite-key bound gives {length} bits")]
    NoKey {
        /// The (non-positive) length.
        length: i64,
    },
    /// The peer aborted.
    #[error("peer aborted (code {code}): {reason}")]
    PeerAborted {
        /// Code.
        code: u16,
        /// Reason.
        reason: String,
    },
    /// Randomness failed.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// Privacy amplification failed.
    #[error("privacy amplification: {0}")]
    Toeplitz(#[from] ToeplitzError),
}

/// Abort codes.
pub mod abort_code {
    /// Sample error rate above threshold.
    pub const QBER: u16 = 1;
    /// Verification failed.
    pub const VERIFY: u16 = 2;
    /// No key from the finite-key bound.
    pub const NO_KEY: u16 = 3;
    /// Protocol or message error.
    pub const PROTOCOL: u16 = 4;
}

/// Where a final key came from: everything needed to audit its security claim.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Provenance {
    /// Block id.
    pub block_id: u64,
    /// Sifted bits in the block.
    pub sifted_bits: u64,
    /// Bits disclosed for estimation (discarded).
    pub sample_bits: u64,
    /// Errors in the sample.
    pub sample_errors: u64,
    /// Test-basis coincidences of the block from sifting (0: the phase error is bounded
    /// from the sample, for protocols whose two bases both give key).
    pub test_bits: u64,
    /// Of which with disagreeing outcomes.
    pub test_errors: u64,
    /// Raw-key bits reconciled.
    pub raw_key_bits: u64,
    /// Cascade frames.
    pub frames: u64,
    /// Frames discarded after the per-frame check (their bits left the raw key; their
    /// parities stay in `leak_ec_bits`).
    pub discarded_frames: u64,
    /// Parity bits disclosed by Cascade.
    pub leak_ec_bits: u64,
    /// Verification tag bits disclosed.
    pub leak_verify_bits: u64,
    /// Bits Bob corrected.
    pub corrected_bits: u64,
    /// Message round trips.
    pub round_trips: u64,
    /// Authenticated messages exchanged.
    pub messages: u64,
    /// Final key bits.
    pub final_bits: u64,
    /// Secrecy parameter.
    pub eps_sec: f64,
    /// Correctness parameter.
    pub eps_cor: f64,
    /// The bound used.
    pub bound: &'static str,
    /// A protocol's own secrecy bound on the whole sifted block (decoy-state BB84: Lim et
    /// al. 2014's s₀ + s₁(1 − h(φ))), and its overhead, bits; `None`: the session's bound.
    pub external: Option<ExternalBound>,
}

/// A secrecy bound the protocol computes from statistics the session does not see (the
/// decoy intensities and test-basis tallies of decoy-state BB84), sent in the
/// authenticated `Hello` so both ends use the same one. The session's final length is then
/// `⌊secrecy − sample − leak_EC − leak_verify − overhead⌋`: the disclosed sample costs at
/// most one bit of smooth min-entropy per bit (chain rule), and reconciliation and
/// verification leak what they disclosed.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ExternalBound {
    /// Smooth min-entropy the bound grants the whole sifted block, bits.
    pub secrecy_bits: f64,
    /// The bound's composable overhead, bits.
    pub overhead_bits: f64,
}

/// The decoy-state bound's citation, for provenance.
pub const LIM_BOUND: &str = "Lim, Curty, Walenta, Xu, Zbinden, PRA 89, 022307 (2014), Eqs. (2)-(5)";

impl Provenance {
    fn empty(block_id: u64) -> Self {
        Self {
            block_id,
            sifted_bits: 0,
            sample_bits: 0,
            sample_errors: 0,
            test_bits: 0,
            test_errors: 0,
            raw_key_bits: 0,
            frames: 0,
            discarded_frames: 0,
            leak_ec_bits: 0,
            leak_verify_bits: 0,
            corrected_bits: 0,
            round_trips: 0,
            messages: 0,
            final_bits: 0,
            eps_sec: 0.0,
            eps_cor: 0.0,
            bound: BOUND,
            external: None,
        }
    }

    /// The finite-key length from the statistics so far (both ends compute it the same way).
    /// With a test-basis tally (BBM92 with a key basis and a test basis, like the Nice
    /// time–energy links) the phase error is bounded from the test basis — Tomamichel et
    /// al. 2012's `k` test bits and their error — otherwise from the random sample.
    fn secret_length(&self) -> i64 {
        if let Some(b) = self.external {
            let l = b.secrecy_bits
                - self.sample_bits as f64
                - (self.leak_ec_bits + self.leak_verify_bits) as f64
                - b.overhead_bits;
            return if l.is_finite() { l.floor() as i64 } else { -1 };
        }
        let (k, errors) = if self.test_bits > 0 {
            (self.test_bits, self.test_errors)
        } else {
            (self.sample_bits, self.sample_errors)
        };
        key_length(
            self.raw_key_bits,
            k,
            errors,
            self.leak_ec_bits + self.leak_verify_bits,
            self.eps_sec,
            self.eps_cor,
        )
    }

    /// Sample error rate.
    pub fn qber(&self) -> f64 {
        if self.sample_bits == 0 {
            0.0
        } else {
            self.sample_errors as f64 / self.sample_bits as f64
        }
    }

    /// Reconciliation efficiency f = leak_EC / (n h(QBER)) (NaN at zero QBER).
    pub fn efficiency(&self) -> f64 {
        self.leak_ec_bits as f64
            / (self.raw_key_bits as f64 * qkdnet_keyrate::math::h2(self.qber()))
    }
}

/// A final key with its provenance. No `Debug`; zeroized on drop (through [`Bits`]).
pub struct FinalKey {
    /// The key bits.
    pub key: Bits,
    /// Where it came from.
    pub provenance: Provenance,
}

/// The bound cited in provenance.
pub const BOUND: &str = "Tomamichel, Lim, Gisin, Renner, Nat. Commun. 3, 634 (2012), Eq. (2)";

/// What a `handle` call produced.
pub enum Output {
    /// Send these messages, in order.
    Send(Vec<Vec<u8>>),
    /// The session is over with this key (Bob also sends the given messages first).
    Finished(Box<FinalKey>, Vec<Vec<u8>>),
}

/// State shared by both ends.
/// One authenticated conversation between the two ends: the messages of one block id,
/// numbered from 0 across both directions, message `seq` tagged with pad
/// `pad_offset + seq` (Wegman–Carter, [`AuthKeys`]). A distillation session is one; so is
/// a sifting exchange (`qkdnet_link::sift`).
#[derive(Debug)]
pub struct AuthChannel {
    block_id: u64,
    seq: u32,
    pad_offset: u64,
    limits: Limits,
}

impl AuthChannel {
    /// A conversation about `block_id` whose first message uses pad `pad_offset`.
    pub fn new(block_id: u64, pad_offset: u64) -> Self {
        Self {
            block_id,
            seq: 0,
            pad_offset,
            limits: Limits::default(),
        }
    }

    /// Messages sent and received so far (the next sequence number).
    pub fn messages(&self) -> u32 {
        self.seq
    }

    /// Skips one sequence number and its pad: after a message from the peer failed its
    /// tag (its pad is spent), the reply (an `Abort`) takes the next one.
    pub fn skip(&mut self) {
        self.seq += 1;
    }

    /// Encodes and tags the next message.
    pub fn send(&mut self, auth: &mut AuthKeys, msg: &Message) -> Result<Vec<u8>, SessionError> {
        let pad = self.pad_offset + u64::from(self.seq);
        let mut err = None;
        let bytes = encode(self.block_id, self.seq, msg, |b| match auth.tag(pad, b) {
            Ok(t) => t,
            Err(e) => {
                err = Some(e);
                0
            }
        });
        if let Some(e) = err {
            return Err(e.into());
        }
        self.seq += 1;
        Ok(bytes)
    }

    /// Parses, authenticates and decodes the next message from the peer. An `Abort` is
    /// returned as [`SessionError::PeerAborted`].
    pub fn receive(&mut self, auth: &mut AuthKeys, bytes: &[u8]) -> Result<Message, SessionError> {
        let env = Envelope::parse(bytes, DEFAULT_MAX_PAYLOAD)?;
        if env.header.block_id != self.block_id {
            return Err(SessionError::Protocol(format!(
                "message for block {} in session of block {}",
                env.header.block_id, self.block_id
            )));
        }
        if env.header.seq != self.seq {
            return Err(SessionError::Protocol(format!(
                "message sequence {} where {} was expected",
                env.header.seq, self.seq
            )));
        }
        let pad = self.pad_offset + u64::from(self.seq);
        auth.check(pad, env.authenticated_bytes(), env.tag(), env.header.seq)?;
        self.seq += 1;
        let msg = env.message(&self.limits)?;
        if let Message::Abort { code, reason } = msg {
            return Err(SessionError::PeerAborted { code, reason });
        }
        Ok(msg)
    }
}

struct Common {
    chan: AuthChannel,
    /// The block's accounting, filled in as the session goes (both ends keep the same).
    prov: Provenance,
}

impl Common {
    fn new(block_id: u64, pad_offset: u64) -> Self {
        Self {
            chan: AuthChannel::new(block_id, pad_offset),
            prov: Provenance::empty(block_id),
        }
    }

    fn send(&mut self, auth: &mut AuthKeys, msg: &Message) -> Result<Vec<u8>, SessionError> {
        let bytes = self.chan.send(auth, msg)?;
        self.prov.messages += 1;
        Ok(bytes)
    }

    /// Parses, authenticates and decodes one message from the peer.
    fn receive(&mut self, auth: &mut AuthKeys, bytes: &[u8]) -> Result<Message, SessionError> {
        let before = self.chan.seq;
        let r = self.chan.receive(auth, bytes);
        // Every message that passed its tag counts (an Abort, a bad payload too).
        self.prov.messages += u64::from(self.chan.seq - before);
        r
    }
}

fn to_wire(b: &Bits) -> BitString {
    BitString {
        len: b.len() as u64,
        words: b.words().to_vec(),
    }
}

fn from_wire(b: &BitString) -> Bits {
    Bits::from_words(b.words.clone(), b.len as usize)
}

/// Splits `n` bits into frames of about `frame` bits (the last frame absorbs the rest
/// when it would be shorter than half a frame).
fn frame_bounds(n: usize, frame: usize) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    let mut s = 0;
    while s < n {
        let mut e = (s + frame).min(n);
        if n - e < frame / 2 {
            e = n;
        }
        v.push((s, e));
        s = e;
    }
    v
}

fn shuffles_for(bounds: &[(usize, usize)], seed: [u8; 32], passes: usize) -> Vec<Arc<Shuffles>> {
    // One shuffle set per distinct frame length.
    let mut cache: Vec<(usize, Arc<Shuffles>)> = Vec::new();
    bounds
        .iter()
        .map(|&(s, e)| {
            let len = e - s;
            if let Some((_, sh)) = cache.iter().find(|(l, _)| *l == len) {
                return Arc::clone(sh);
            }
            let sh = Arc::new(Shuffles::new(seed, len, passes));
            cache.push((len, Arc::clone(&sh)));
            sh
        })
        .collect()
}

thread_local! {
    /// Toeplitz plans and buffers reused by every session on this thread (their set-up
    /// costs more than the hash; buffers are zeroized after each use).
    static HASHER: std::cell::RefCell<toeplitz::Hasher> =
        std::cell::RefCell::new(toeplitz::Hasher::new());
}

fn with_hasher<T>(f: impl FnOnce(&mut toeplitz::Hasher) -> T) -> T {
    HASHER.with(|h| f(&mut h.borrow_mut()))
}

fn verification_tag_bits(n: u64, eps_cor: f64) -> u32 {
    polyhash::tag_bits_for(n, eps_cor)
}

/// Bits of each per-frame tag after a failed verification: a frame that still differs
/// escapes detection with probability ≤ (L + 1)/2³² ≈ 10⁻⁷ for 2¹⁶-bit frames, and then
/// only costs the block (the final tag fails), never correctness.
pub const FRAME_TAG_BITS: u8 = 32;

/// The key with the frames `failed` (indices into `bounds`, increasing) left out.
fn without_frames(key: &Bits, bounds: &[(usize, usize)], failed: &[u32]) -> Bits {
    let mut out = Bits::zeros(0);
    let mut skip = failed.iter().peekable();
    for (i, &(s, e)) in bounds.iter().enumerate() {
        if skip.peek().is_some_and(|&&f| f as usize == i) {
            skip.next();
            continue;
        }
        out.append_range(key, s, e);
    }
    out
}

/// Per-frame tags of `key` under `hash_key`.
fn frame_tags(key: &Bits, bounds: &[(usize, usize)], hash_key: u128) -> Vec<u64> {
    bounds
        .iter()
        .map(|&(s, e)| hash_key_bits(&key.slice(s, e), hash_key, u32::from(FRAME_TAG_BITS)) as u64)
        .collect()
}

fn hash_key_bits(key: &Bits, hash_key: u128, tag_bits: u32) -> u128 {
    let mut h = PolyHash::new(hash_key);
    h.update_words(key.words());
    polyhash::truncate(h.finish(), tag_bits)
}

enum AliceState {
    ExpectVerdict,
    ExpectQueries,
    ExpectVerifyResult,
    ExpectFrameVerdict,
    ExpectDone,
    Over,
}

/// Alice's end of a session.
pub struct AliceSession {
    common: Common,
    cfg: Config,
    state: AliceState,
    sample: Sample,
    raw: Bits,
    frames: Vec<cascade::Alice>,
    bounds: Vec<(usize, usize)>,
    final_key: Option<Bits>,
    shuffle_seed: [u8; 32],
    pending_abort: Option<Vec<u8>>,
    /// The per-frame check has been used (it runs at most once).
    retried: bool,
}

/// A block's test-basis tally from sifting: coincidences and those that disagreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestTally {
    /// Test-basis coincidences.
    pub bits: u64,
    /// Of which with disagreeing outcomes.
    pub errors: u64,
}

impl AliceSession {
    /// Starts a session on Alice's sifted bits; returns the session and the first flight.
    /// The phase error is bounded from the random sample (both bases give key).
    pub fn start(
        block_id: u64,
        sifted: Bits,
        cfg: Config,
        auth: &mut AuthKeys,
        rng: &mut dyn SecureRandom,
    ) -> Result<(Self, Vec<Vec<u8>>), SessionError> {
        Self::start_with_test(block_id, sifted, cfg, None, auth, rng)
    }

    /// Starts a session whose phase error is bounded from the block's test-basis tally
    /// (sent to Bob in the authenticated `Hello`, so both ends compute the same length);
    /// the sample still estimates the key-basis error for reconciliation. A test-basis
    /// error rate above `qber_max` aborts at once.
    pub fn start_with_test(
        block_id: u64,
        sifted: Bits,
        cfg: Config,
        test: Option<TestTally>,
        auth: &mut AuthKeys,
        rng: &mut dyn SecureRandom,
    ) -> Result<(Self, Vec<Vec<u8>>), SessionError> {
        Self::start_with_bound(block_id, sifted, cfg, test, None, auth, rng)
    }

    /// Starts a session whose secrecy comes from the protocol's own bound (`bound`, e.g.
    /// decoy-state BB84's), sent to Bob in the authenticated `Hello`; `test` may still
    /// carry a test-basis tally for the abort check.
    pub fn start_with_bound(
        block_id: u64,
        sifted: Bits,
        cfg: Config,
        test: Option<TestTally>,
        bound: Option<ExternalBound>,
        auth: &mut AuthKeys,
        rng: &mut dyn SecureRandom,
    ) -> Result<(Self, Vec<Vec<u8>>), SessionError> {
        cfg.validate()?;
        if let Some(b) = bound {
            let ok = |v: f64| v.is_finite() && v >= 0.0;
            if !ok(b.secrecy_bits) || !ok(b.overhead_bits) || b.secrecy_bits > sifted.len() as f64 {
                return Err(SessionError::Config {
                    field: "external_bound",
                    value: format!(
                        "secrecy {} bits, overhead {} bits, for {} sifted bits",
                        b.secrecy_bits,
                        b.overhead_bits,
                        sifted.len()
                    ),
                });
            }
        }
        let test = test.unwrap_or(TestTally { bits: 0, errors: 0 });
        if test.errors > test.bits {
            return Err(SessionError::Config {
                field: "test_errors",
                value: format!("{} of {} test bits", test.errors, test.bits),
            });
        }
        if test.bits > 0 && test.errors as f64 / test.bits as f64 > cfg.qber_max {
            return Err(SessionError::Protocol(format!(
                "test-basis error rate {:.4} above qber_max {}",
                test.errors as f64 / test.bits as f64,
                cfg.qber_max
            )));
        }
        let n = sifted.len();
        let k = ((n as f64 * cfg.sample_fraction).round() as usize).clamp(1, n.max(1));
        let sample_seed = rng.seed32()?;
        let shuffle_seed = rng.seed32()?;
        let sample = Sample::draw(sample_seed, n, k);
        let (sample_bits, raw) = sample.split(&sifted);
        let hello = Hello {
            sifted_bits: n as u64,
            frame_bits: cfg.frame_bits as u32,
            variant: match cfg.variant {
                Variant::Original => 0,
                Variant::YanEtAl => 1,
            },
            biconf: cfg.biconf,
            qber_max: cfg.qber_max,
            eps_sec: cfg.eps_sec,
            eps_cor: cfg.eps_cor,
            sample_bits: sample.len() as u32,
            sample_seed,
            shuffle_seed,
            pad_offset: auth.cursor(),
            test_bits: test.bits,
            test_errors: test.errors,
            secrecy_bits: bound.map_or(0.0, |b| b.secrecy_bits),
            secrecy_overhead_bits: bound.map_or(0.0, |b| b.overhead_bits),
        };
        let mut common = Common::new(block_id, auth.cursor());
        if let Some(b) = bound {
            common.prov.external = Some(b);
            common.prov.bound = LIM_BOUND;
        }
        common.prov.sifted_bits = n as u64;
        common.prov.test_bits = test.bits;
        common.prov.test_errors = test.errors;
        common.prov.sample_bits = sample.len() as u64;
        common.prov.raw_key_bits = raw.len() as u64;
        common.prov.eps_sec = cfg.eps_sec;
        common.prov.eps_cor = cfg.eps_cor;
        let out = vec![
            common.send(auth, &Message::Hello(hello))?,
            common.send(auth, &Message::Sample(to_wire(&sample_bits)))?,
        ];
        let bounds = frame_bounds(raw.len(), cfg.frame_bits);
        common.prov.frames = bounds.len() as u64;
        Ok((
            Self {
                common,
                cfg,
                state: AliceState::ExpectVerdict,
                sample,
                raw,
                frames: Vec::new(),
                bounds,
                final_key: None,
                shuffle_seed,
                pending_abort: None,
                retried: false,
            },
            out,
        ))
    }

    fn abort(&mut self, auth: &mut AuthKeys, code: u16, e: SessionError) -> SessionError {
        self.state = AliceState::Over;
        self.pending_abort = self
            .common
            .send(
                auth,
                &Message::Abort {
                    code,
                    reason: e.to_string(),
                },
            )
            .ok();
        e
    }

    /// The `Abort` message to send Bob after Alice ended the session with an error of her
    /// own decision (no key), if any.
    pub fn take_abort(&mut self) -> Option<Vec<u8>> {
        self.pending_abort.take()
    }

    /// Handles one message from Bob. After an error the session is over and no key exists.
    pub fn handle(
        &mut self,
        bytes: &[u8],
        auth: &mut AuthKeys,
        rng: &mut dyn SecureRandom,
    ) -> Result<Output, SessionError> {
        let msg = match self.common.receive(auth, bytes) {
            Ok(m) => m,
            Err(e) => {
                self.state = AliceState::Over;
                return Err(e);
            }
        };
        let r = self.step(msg, auth, rng);
        if r.is_err() {
            self.state = AliceState::Over;
        }
        r
    }

    fn step(
        &mut self,
        msg: Message,
        auth: &mut AuthKeys,
        rng: &mut dyn SecureRandom,
    ) -> Result<Output, SessionError> {
        match (&self.state, msg) {
            (AliceState::ExpectVerdict, Message::SampleVerdict { errors, proceed }) => {
                if u64::from(errors) > self.sample.len() as u64 {
                    return Err(SessionError::Protocol(format!(
                        "SampleVerdict: {errors} errors in a sample of {}",
                        self.sample.len()
                    )));
                }
                self.common.prov.sample_errors = u64::from(errors);
                let q = errors as f64 / self.sample.len().max(1) as f64;
                if !proceed || q > self.cfg.qber_max {
                    self.state = AliceState::Over;
                    return Err(SessionError::QberTooHigh {
                        observed: q,
                        max: self.cfg.qber_max,
                    });
                }
                let q = q.max(1e-3);
                let passes = Schedule::with_biconf(
                    self.cfg.variant,
                    q,
                    self.cfg.frame_bits,
                    usize::from(self.cfg.biconf),
                )
                .passes();
                let sh = shuffles_for(&self.bounds, self.shuffle_seed, passes);
                self.frames = self
                    .bounds
                    .iter()
                    .zip(&sh)
                    .map(|(&(s, e), sh)| {
                        let sched = Schedule::with_biconf(
                            self.cfg.variant,
                            q,
                            e - s,
                            usize::from(self.cfg.biconf),
                        );
                        cascade::Alice::new(self.raw.slice(s, e), sched, Arc::clone(sh))
                    })
                    .collect();
                self.state = AliceState::ExpectQueries;
                Ok(Output::Send(Vec::new()))
            }
            (AliceState::ExpectQueries, Message::ParityQueries(frames)) => {
                if frames.is_empty() {
                    // Reconciliation over: send the verification tag.
                    let prov = &mut self.common.prov;
                    prov.round_trips += 1;
                    prov.leak_ec_bits = self.frames.iter().map(|f| f.leaked_bits()).sum();
                    return self.send_verify_tag(auth, rng);
                }
                self.common.prov.round_trips += 1;
                let mut answers = Vec::with_capacity(frames.len());
                for (f, qs) in &frames {
                    let fa = self.frames.get_mut(*f as usize).ok_or_else(|| {
                        SessionError::Protocol(format!("ParityQueries: no frame {f}"))
                    })?;
                    let a = fa.answer(qs)?;
                    answers.push((*f, to_wire(&a)));
                }
                let m = Message::ParityAnswers(answers);
                Ok(Output::Send(vec![self.common.send(auth, &m)?]))
            }
            (AliceState::ExpectVerifyResult, Message::VerifyResult { ok }) => {
                if !ok && self.retried {
                    return Err(SessionError::VerificationFailed);
                }
                if !ok {
                    let mut kb = [0u8; 16];
                    rng.fill(&mut kb)?;
                    let hash_key = u128::from_le_bytes(kb);
                    let tags = frame_tags(&self.raw, &self.bounds, hash_key);
                    self.common.prov.leak_verify_bits +=
                        tags.len() as u64 * u64::from(FRAME_TAG_BITS);
                    self.common.prov.round_trips += 1;
                    self.state = AliceState::ExpectFrameVerdict;
                    let m = Message::FrameTags {
                        hash_key,
                        tag_bits: FRAME_TAG_BITS,
                        tags,
                    };
                    return Ok(Output::Send(vec![self.common.send(auth, &m)?]));
                }
                let len = self.common.prov.secret_length();
                if len <= 0 {
                    return Err(self.abort(
                        auth,
                        abort_code::NO_KEY,
                        SessionError::NoKey { length: len },
                    ));
                }
                let n = self.raw.len();
                let m = len as usize;
                let seed_len = n + m - 1;
                let mut words = vec![0u64; seed_len.div_ceil(64)];
                for w in words.iter_mut() {
                    *w = rng.next_u64()?;
                }
                let seed = Bits::from_words(words, seed_len);
                let key = with_hasher(|h| h.hash_expanded(&seed, &self.raw, m))?;
                self.final_key = Some(key);
                self.common.prov.final_bits = m as u64;
                self.state = AliceState::ExpectDone;
                let msg = Message::PaSeed {
                    output_bits: m as u64,
                    seed: to_wire(&seed),
                };
                Ok(Output::Send(vec![self.common.send(auth, &msg)?]))
            }
            (AliceState::ExpectFrameVerdict, Message::FrameVerdict { failed }) => {
                if failed
                    .last()
                    .is_some_and(|&f| f as usize >= self.bounds.len())
                {
                    return Err(SessionError::Protocol(format!(
                        "FrameVerdict: frame {:?} of {}",
                        failed.last(),
                        self.bounds.len()
                    )));
                }
                self.retried = true;
                self.raw = without_frames(&self.raw, &self.bounds, &failed);
                let prov = &mut self.common.prov;
                prov.raw_key_bits = self.raw.len() as u64;
                prov.discarded_frames = failed.len() as u64;
                if self.raw.is_empty() {
                    return Err(self.abort(
                        auth,
                        abort_code::NO_KEY,
                        SessionError::NoKey { length: 0 },
                    ));
                }
                self.send_verify_tag(auth, rng)
            }
            (AliceState::ExpectDone, Message::Done { output_bits }) => {
                if output_bits != self.common.prov.final_bits {
                    return Err(SessionError::Protocol(format!(
                        "Done: Bob has {output_bits} bits, Alice {}",
                        self.common.prov.final_bits
                    )));
                }
                self.state = AliceState::Over;
                let key = self.final_key.take().ok_or_else(|| {
                    SessionError::Protocol("Done before privacy amplification".into())
                })?;
                Ok(Output::Finished(
                    Box::new(FinalKey {
                        key,
                        provenance: self.common.prov.clone(),
                    }),
                    Vec::new(),
                ))
            }
            (_, m) => Err(SessionError::Wire(WireError::Unexpected {
                got: m.message_type(),
                expected: match self.state {
                    AliceState::ExpectVerdict => "SampleVerdict",
                    AliceState::ExpectQueries => "ParityQueries",
                    AliceState::ExpectVerifyResult => "VerifyResult",
                    AliceState::ExpectFrameVerdict => "FrameVerdict",
                    AliceState::ExpectDone => "Done",
                    AliceState::Over => "nothing (session over)",
                },
            })),
        }
    }

    /// A fresh hash key and the ε_cor-sized tag of Alice's current raw key (every tag bit
    /// counted as leaked); the session then waits for Bob's verdict.
    fn send_verify_tag(
        &mut self,
        auth: &mut AuthKeys,
        rng: &mut dyn SecureRandom,
    ) -> Result<Output, SessionError> {
        let tag_bits = verification_tag_bits(self.raw.len() as u64, self.cfg.eps_cor);
        self.common.prov.leak_verify_bits += u64::from(tag_bits);
        let mut kb = [0u8; 16];
        rng.fill(&mut kb)?;
        let hash_key = u128::from_le_bytes(kb);
        let tag = hash_key_bits(&self.raw, hash_key, tag_bits);
        self.state = AliceState::ExpectVerifyResult;
        let m = Message::VerifyTag {
            hash_key,
            tag_bits: tag_bits as u8,
            tag,
        };
        Ok(Output::Send(vec![self.common.send(auth, &m)?]))
    }

    /// Records Bob's correction count (for provenance in tests and benches; Alice cannot
    /// know it from the protocol).
    pub fn set_corrected(&mut self, corrected: u64) {
        self.common.prov.corrected_bits = corrected;
    }
}

enum BobState {
    ExpectHello,
    ExpectSample,
    ExpectAnswers,
    ExpectVerifyTag,
    ExpectFrameTags,
    ExpectPaSeed,
    Over,
}

/// Bob's end of a session.
pub struct BobSession {
    common: Common,
    state: BobState,
    sifted: Option<Bits>,
    hello: Option<Hello>,
    sample: Sample,
    frames: Vec<Option<cascade::Bob>>,
    done_frames: Vec<Option<Bits>>,
    /// Frames asked about in the last `ParityQueries`, whose answers are due.
    asked: Vec<bool>,
    /// Frames started so far (frames start in order).
    started: usize,
    /// Frames started and not finished.
    working: usize,
    /// Most frames reconciled at once.
    frames_in_flight: usize,
    bounds: Vec<(usize, usize)>,
    reconciled: Option<Bits>,
    /// The per-frame check has been used (it runs at most once).
    retried: bool,
    pending_abort: Option<Vec<u8>>,
    /// Bob's limit on frames per block (bounds memory on hostile Hello messages).
    max_sifted_bits: u64,
}

impl BobSession {
    /// A session waiting for Alice's `Hello`, on Bob's sifted bits.
    pub fn new(block_id: u64, sifted: Bits, auth: &AuthKeys) -> Self {
        Self {
            common: Common::new(block_id, auth.cursor()),
            state: BobState::ExpectHello,
            max_sifted_bits: sifted.len() as u64,
            sifted: Some(sifted),
            hello: None,
            sample: Sample::default(),
            frames: Vec::new(),
            done_frames: Vec::new(),
            asked: Vec::new(),
            started: 0,
            working: 0,
            frames_in_flight: DEFAULT_FRAMES_IN_FLIGHT,
            bounds: Vec::new(),
            reconciled: None,
            retried: false,
            pending_abort: None,
        }
    }

    /// Sets how many Cascade frames Bob reconciles at once (at least 1; default
    /// [`DEFAULT_FRAMES_IN_FLIGHT`]). Only Bob decides: Alice answers whichever frames
    /// are asked about, so the two ends need not agree on it.
    pub fn set_frames_in_flight(&mut self, frames: usize) {
        self.frames_in_flight = frames.max(1);
    }

    /// Starts frames in order until `frames_in_flight` are working or none is left,
    /// adding their first queries.
    fn start_frames(&mut self, queries: &mut Vec<(u32, Vec<cascade::Query>)>) {
        while self.working < self.frames_in_flight && self.started < self.frames.len() {
            let fi = self.started;
            self.started += 1;
            let Some(b) = self.frames[fi].as_mut() else {
                continue;
            };
            match b.start() {
                Step::Ask(qs) => {
                    queries.push((fi as u32, qs));
                    self.asked[fi] = true;
                    self.working += 1;
                }
                Step::Done => {
                    self.done_frames[fi] = self.frames[fi].take().map(cascade::Bob::into_bits);
                }
            }
        }
    }

    /// Handles one message from Alice.
    pub fn handle(&mut self, bytes: &[u8], auth: &mut AuthKeys) -> Result<Output, SessionError> {
        let failed_on_hello = matches!(self.state, BobState::ExpectHello);
        // Alice's Hello sets the pad offset; it is authenticated with that offset, which
        // must not be below Bob's cursor (no pad reuse).
        if matches!(self.state, BobState::ExpectHello) {
            let env = Envelope::parse(bytes, DEFAULT_MAX_PAYLOAD)?;
            if env.header.message_type == MessageType::Hello {
                let m = env.message(&self.common.chan.limits)?;
                if let Message::Hello(h) = m {
                    if h.pad_offset < auth.cursor() {
                        self.state = BobState::Over;
                        return Err(SessionError::Protocol(format!(
                            "Hello: pad offset {} is below Bob's cursor {} (pad reuse)",
                            h.pad_offset,
                            auth.cursor()
                        )));
                    }
                    self.common.chan.pad_offset = h.pad_offset;
                }
            }
        }
        let r = self
            .common
            .receive(auth, bytes)
            .and_then(|m| self.step(m, auth));
        if let Err(e) = &r {
            self.state = BobState::Over;
            // Tell Alice, unless a final message is already waiting (a negative verdict
            // or verification result) or she aborted first.
            let told =
                matches!(e, SessionError::PeerAborted { .. }) || self.pending_abort.is_some();
            if !told {
                if failed_on_hello {
                    // Alice's first flight is Hello + Sample: skip the Sample's sequence
                    // number (and pad) so that the Abort never shares a pad with it.
                    self.common.chan.skip();
                }
                let abort = Message::Abort {
                    code: abort_code::PROTOCOL,
                    reason: e.to_string(),
                };
                self.pending_abort = self.common.send(auth, &abort).ok();
            }
        }
        r
    }

    /// The last message to send Alice after Bob's end failed: the negative sample verdict
    /// or verification result that ended the session, or an `Abort` for an error she
    /// cannot know about (a bad tag, a malformed or unexpected message).
    pub fn take_abort(&mut self) -> Option<Vec<u8>> {
        self.pending_abort.take()
    }

    fn step(&mut self, msg: Message, auth: &mut AuthKeys) -> Result<Output, SessionError> {
        match (&self.state, msg) {
            (BobState::ExpectHello, Message::Hello(h)) => {
                if h.sifted_bits != self.max_sifted_bits {
                    return Err(SessionError::Protocol(format!(
                        "Hello: Alice has {} sifted bits, Bob {}",
                        h.sifted_bits, self.max_sifted_bits
                    )));
                }
                if u64::from(h.sample_bits) >= h.sifted_bits || h.sample_bits == 0 {
                    return Err(SessionError::Protocol(format!(
                        "Hello: sample of {} bits from {}",
                        h.sample_bits, h.sifted_bits
                    )));
                }
                if h.frame_bits < 64 || h.biconf > 64 {
                    return Err(SessionError::Protocol(format!(
                        "Hello: frame_bits {} / biconf {}",
                        h.frame_bits, h.biconf
                    )));
                }
                let prov = &mut self.common.prov;
                prov.sifted_bits = h.sifted_bits;
                prov.sample_bits = u64::from(h.sample_bits);
                prov.test_bits = h.test_bits;
                prov.test_errors = h.test_errors;
                if h.secrecy_bits > 0.0 {
                    prov.external = Some(ExternalBound {
                        secrecy_bits: h.secrecy_bits,
                        overhead_bits: h.secrecy_overhead_bits,
                    });
                    prov.bound = LIM_BOUND;
                }
                prov.eps_sec = h.eps_sec;
                prov.eps_cor = h.eps_cor;
                self.hello = Some(h);
                self.state = BobState::ExpectSample;
                Ok(Output::Send(Vec::new()))
            }
            (BobState::ExpectSample, Message::Sample(bits)) => {
                let h = self.hello()?;
                let sifted = self
                    .sifted
                    .take()
                    .ok_or_else(|| SessionError::Protocol("Sample twice".into()))?;
                self.sample = Sample::draw(h.sample_seed, sifted.len(), h.sample_bits as usize);
                if bits.len != self.sample.len() as u64 {
                    return Err(SessionError::Protocol(format!(
                        "Sample: {} bits for {} positions",
                        bits.len,
                        self.sample.len()
                    )));
                }
                let alice = from_wire(&bits);
                let (mine, raw) = self.sample.split(&sifted);
                let errors = alice
                    .words()
                    .iter()
                    .zip(mine.words())
                    .map(|(a, b)| (a ^ b).count_ones() as usize)
                    .sum::<usize>();
                self.common.prov.sample_errors = errors as u64;
                let q = errors as f64 / self.sample.len() as f64;
                let proceed = q <= h.qber_max;
                let verdict = Message::SampleVerdict {
                    errors: errors as u32,
                    proceed,
                };
                let mut out = vec![self.common.send(auth, &verdict)?];
                if !proceed {
                    self.state = BobState::Over;
                    // The negative verdict is the last message: Alice learns from it.
                    self.pending_abort = out.pop();
                    return Err(SessionError::QberTooHigh {
                        observed: q,
                        max: h.qber_max,
                    });
                }
                self.common.prov.raw_key_bits = raw.len() as u64;
                let variant = if h.variant == 0 {
                    Variant::Original
                } else {
                    Variant::YanEtAl
                };
                let q = q.max(1e-3);
                self.bounds = frame_bounds(raw.len(), h.frame_bits as usize);
                let passes =
                    Schedule::with_biconf(variant, q, h.frame_bits as usize, usize::from(h.biconf))
                        .passes();
                self.common.prov.frames = self.bounds.len() as u64;
                let sh = shuffles_for(&self.bounds, h.shuffle_seed, passes);
                self.frames = Vec::with_capacity(self.bounds.len());
                for (&(s, e), sh) in self.bounds.iter().zip(&sh) {
                    let sched = Schedule::with_biconf(variant, q, e - s, usize::from(h.biconf));
                    self.frames.push(Some(cascade::Bob::new(
                        raw.slice(s, e),
                        sched,
                        Arc::clone(sh),
                    )));
                }
                self.done_frames = (0..self.frames.len()).map(|_| None).collect();
                self.asked = vec![false; self.frames.len()];
                let mut queries = Vec::new();
                self.start_frames(&mut queries);
                self.common.prov.round_trips += 1;
                out.push(self.common.send(auth, &Message::ParityQueries(queries))?);
                self.state = BobState::ExpectAnswers;
                Ok(Output::Send(out))
            }
            (BobState::ExpectAnswers, Message::ParityAnswers(answers)) => {
                let mut queries = Vec::new();
                for (f, bits) in &answers {
                    let fi = *f as usize;
                    let slot = self.frames.get_mut(fi).ok_or_else(|| {
                        SessionError::Protocol(format!("ParityAnswers: no frame {f}"))
                    })?;
                    if !std::mem::replace(&mut self.asked[fi], false) {
                        return Err(SessionError::Protocol(format!(
                            "ParityAnswers: frame {f} was not asked (or answered twice)"
                        )));
                    }
                    let b = slot.as_mut().ok_or_else(|| {
                        SessionError::Protocol(format!("ParityAnswers: frame {f} is finished"))
                    })?;
                    match b.receive(&from_wire(bits))? {
                        Step::Ask(qs) => {
                            queries.push((*f, qs));
                        }
                        Step::Done => {
                            if let Some(b) = slot.take() {
                                let st = b.stats();
                                self.common.prov.leak_ec_bits += st.leaked_bits;
                                self.common.prov.corrected_bits += st.corrected_bits;
                                self.done_frames[fi] = Some(b.into_bits());
                                self.working -= 1;
                            }
                        }
                    }
                }
                // Every frame asked about must have been answered.
                if let Some(fi) = self.asked.iter().position(|&a| a) {
                    return Err(SessionError::Protocol(format!(
                        "ParityAnswers: frame {fi} not answered"
                    )));
                }
                for (f, _) in &queries {
                    self.asked[*f as usize] = true;
                }
                self.start_frames(&mut queries);
                self.common.prov.round_trips += 1;
                if queries.is_empty() {
                    // Assemble the reconciled key.
                    let mut key = Bits::zeros(0);
                    for b in self.done_frames.iter().flatten() {
                        key.append_range(b, 0, b.len());
                    }
                    self.reconciled = Some(key);
                    self.state = BobState::ExpectVerifyTag;
                }
                let m = Message::ParityQueries(queries);
                Ok(Output::Send(vec![self.common.send(auth, &m)?]))
            }
            (
                BobState::ExpectVerifyTag,
                Message::VerifyTag {
                    hash_key,
                    tag_bits,
                    tag,
                },
            ) => {
                let key = self
                    .reconciled
                    .as_ref()
                    .ok_or_else(|| SessionError::Protocol("no reconciled key".into()))?;
                let want = verification_tag_bits(key.len() as u64, self.common.prov.eps_cor);
                if u32::from(tag_bits) != want {
                    return Err(SessionError::Protocol(format!(
                        "VerifyTag: {tag_bits}-bit tag, ε_cor needs {want}"
                    )));
                }
                self.common.prov.leak_verify_bits += u64::from(want);
                let ok = hash_key_bits(key, hash_key, want) == tag;
                let m = Message::VerifyResult { ok };
                let out = vec![self.common.send(auth, &m)?];
                if !ok && self.retried {
                    self.state = BobState::Over;
                    self.reconciled = None;
                    let mut out = out;
                    self.pending_abort = out.pop();
                    return Err(SessionError::VerificationFailed);
                }
                if !ok {
                    self.state = BobState::ExpectFrameTags;
                    return Ok(Output::Send(out));
                }
                self.state = BobState::ExpectPaSeed;
                Ok(Output::Send(out))
            }
            (
                BobState::ExpectFrameTags,
                Message::FrameTags {
                    hash_key,
                    tag_bits,
                    tags,
                },
            ) => {
                if tag_bits != FRAME_TAG_BITS || tags.len() != self.bounds.len() {
                    return Err(SessionError::Protocol(format!(
                        "FrameTags: {} tags of {tag_bits} bits, expected {} of {FRAME_TAG_BITS}",
                        tags.len(),
                        self.bounds.len()
                    )));
                }
                let key = self
                    .reconciled
                    .take()
                    .ok_or_else(|| SessionError::Protocol("no reconciled key".into()))?;
                let mine = frame_tags(&key, &self.bounds, hash_key);
                let failed: Vec<u32> = (0..tags.len())
                    .filter(|&i| mine[i] != tags[i])
                    .map(|i| i as u32)
                    .collect();
                let rest = without_frames(&key, &self.bounds, &failed);
                let prov = &mut self.common.prov;
                prov.leak_verify_bits += tags.len() as u64 * u64::from(FRAME_TAG_BITS);
                prov.raw_key_bits = rest.len() as u64;
                prov.discarded_frames = failed.len() as u64;
                prov.round_trips += 1;
                self.reconciled = Some(rest);
                self.retried = true;
                self.state = BobState::ExpectVerifyTag;
                let m = Message::FrameVerdict { failed };
                Ok(Output::Send(vec![self.common.send(auth, &m)?]))
            }
            (BobState::ExpectPaSeed, Message::PaSeed { output_bits, seed }) => {
                let key = self
                    .reconciled
                    .take()
                    .ok_or_else(|| SessionError::Protocol("no reconciled key".into()))?;
                let len = self.common.prov.secret_length();
                if len <= 0 || output_bits != len as u64 {
                    return Err(SessionError::Protocol(format!(
                        "PaSeed: output {output_bits} bits, Bob's bound gives {len}"
                    )));
                }
                let m = len as usize;
                if seed.len != (key.len() + m - 1) as u64 {
                    return Err(SessionError::Protocol(format!(
                        "PaSeed: seed of {} bits, needs {}",
                        seed.len,
                        key.len() + m - 1
                    )));
                }
                let fin = with_hasher(|h| h.hash_expanded(&from_wire(&seed), &key, m))?;
                let done = self.common.send(auth, &Message::Done { output_bits })?;
                self.state = BobState::Over;
                self.common.prov.final_bits = output_bits;
                let provenance = self.common.prov.clone();
                Ok(Output::Finished(
                    Box::new(FinalKey {
                        key: fin,
                        provenance,
                    }),
                    vec![done],
                ))
            }
            (_, m) => Err(SessionError::Wire(WireError::Unexpected {
                got: m.message_type(),
                expected: match self.state {
                    BobState::ExpectHello => "Hello",
                    BobState::ExpectSample => "Sample",
                    BobState::ExpectAnswers => "ParityAnswers",
                    BobState::ExpectVerifyTag => "VerifyTag",
                    BobState::ExpectFrameTags => "FrameTags",
                    BobState::ExpectPaSeed => "PaSeed",
                    BobState::Over => "nothing (session over)",
                },
            })),
        }
    }

    fn hello(&self) -> Result<Hello, SessionError> {
        self.hello
            .clone()
            .ok_or_else(|| SessionError::Protocol("no Hello".into()))
    }

    /// Bits Bob corrected so far.
    pub fn corrected_bits(&self) -> u64 {
        self.common.prov.corrected_bits
    }
}

/// Both ends of a session in one process (emulation, tests, `qkdnet distill`, benches):
/// runs the message exchange to the end and returns Alice's and Bob's final keys.
pub fn run_local(
    block_id: u64,
    alice_bits: Bits,
    bob_bits: Bits,
    cfg: Config,
    alice_auth: &mut AuthKeys,
    bob_auth: &mut AuthKeys,
    rng: &mut dyn SecureRandom,
) -> Result<(FinalKey, FinalKey), SessionError> {
    run_local_with_test(
        block_id, alice_bits, bob_bits, cfg, None, alice_auth, bob_auth, rng,
    )
}

/// [`run_local`] with the phase error bounded from a test-basis tally.
#[allow(clippy::too_many_arguments)]
pub fn run_local_with_test(
    block_id: u64,
    alice_bits: Bits,
    bob_bits: Bits,
    cfg: Config,
    test: Option<TestTally>,
    alice_auth: &mut AuthKeys,
    bob_auth: &mut AuthKeys,
    rng: &mut dyn SecureRandom,
) -> Result<(FinalKey, FinalKey), SessionError> {
    run_local_with_bound(
        block_id, alice_bits, bob_bits, cfg, test, None, alice_auth, bob_auth, rng,
    )
}

/// [`run_local`] with the protocol's own secrecy bound ([`ExternalBound`]).
#[allow(clippy::too_many_arguments)]
pub fn run_local_with_bound(
    block_id: u64,
    alice_bits: Bits,
    bob_bits: Bits,
    cfg: Config,
    test: Option<TestTally>,
    bound: Option<ExternalBound>,
    alice_auth: &mut AuthKeys,
    bob_auth: &mut AuthKeys,
    rng: &mut dyn SecureRandom,
) -> Result<(FinalKey, FinalKey), SessionError> {
    let mut bob = BobSession::new(block_id, bob_bits, bob_auth);
    let (mut alice, mut to_bob) =
        AliceSession::start_with_bound(block_id, alice_bits, cfg, test, bound, alice_auth, rng)?;
    loop {
        let mut to_alice = Vec::new();
        let mut bob_key = None;
        for m in &to_bob {
            match bob.handle(m, bob_auth)? {
                Output::Send(v) => to_alice.extend(v),
                Output::Finished(k, v) => {
                    to_alice.extend(v);
                    bob_key = Some(k);
                }
            }
        }
        alice.set_corrected(bob.corrected_bits());
        let mut next = Vec::new();
        for m in &to_alice {
            match alice.handle(m, alice_auth, rng)? {
                Output::Send(v) => next.extend(v),
                Output::Finished(ka, _) => {
                    let kb = bob_key.take().ok_or_else(|| {
                        SessionError::Protocol("Alice finished before Bob".into())
                    })?;
                    return Ok((*ka, *kb));
                }
            }
        }
        if next.is_empty() {
            return Err(SessionError::Protocol("session stalled".into()));
        }
        to_bob = next;
    }
}
