//! `qkdnet-wire`: the messages of the classical channel between the two ends of a link,
//! as versioned, length-checked byte codecs.
//!
//! Every message travels in an [`Envelope`]: a fixed header, the payload, and an
//! authentication tag. Parsing never panics: every length is checked against the bytes
//! present and against a maximum before anything is allocated, and each failure is a
//! typed [`WireError`] naming the message and field. This crate does not compute tags
//! (authentication needs the key pool, which lives in `qkdnet-distill`): it exposes the
//! authenticated bytes ([`Envelope::authenticated_bytes`]) and the tag field.
//!
//! ## Wire format
//!
//! All integers little-endian.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version, [`VERSION`] |
//! | 1 | 1 | message type ([`MessageType`]) |
//! | 2 | 8 | block id |
//! | 10 | 4 | sequence number within the block's session (starts at 0, +1 per message either way) |
//! | 14 | 4 | payload length `L` (≤ the receiver's maximum) |
//! | 18 | L | payload (per type, below) |
//! | 18+L | 8 | authentication tag (Wegman–Carter, over bytes 0..18+L) |
//!
//! A bit string is `u64 bit count` + `⌈count/64⌉ u64 words` (bit i = bit i%64 of word i/64;
//! bits past the count must be zero). Payloads:
//!
//! - `Hello` (1), Alice → Bob: `u64 sifted_bits, u32 frame_bits, u8 variant, u8 biconf,
//!   f64 qber_max, f64 eps_sec, f64 eps_cor, u32 sample_bits, [u8; 32] sample_seed,
//!   [u8; 32] shuffle_seed, u64 pad_offset, u64 test_bits, u64 test_errors` (the
//!   test-basis tally of the block from sifting; 0 and 0 when the phase error is estimated
//!   from the sample instead), `f64 secrecy_bits, f64 secrecy_overhead_bits` (a secrecy
//!   bound computed by the protocol, e.g. decoy-state BB84's; 0 and 0 when the session
//!   bounds secrecy itself). Version 3 added `test_bits`, `test_errors`. Version 4 changed
//!   how Cascade's shuffles follow from `shuffle_seed` (qkdnet_distill::random::permutation:
//!   xoshiro256++ in place of ChaCha8), so the two ends must run the same version. Version
//!   5 added the secrecy fields. Version 8 changed how the sample positions follow from
//!   `sample_seed` (qkdnet_distill::estimate::Sample::draw: one `Uniform` over the
//!   positions in place of a fresh range per draw).
//! - `Sample` (2), Alice → Bob: her sample bits (bit string).
//! - `SampleVerdict` (3), Bob → Alice: `u32 errors, u8 proceed (0/1)`.
//! - `ParityQueries` (4), Bob → Alice: `u32 count`, then per frame `u32 frame, u32 n`, then
//!   `n` queries: `u8 kind` (0 = all block parities of a pass: `u16 pass`; 1 = range:
//!   `u16 pass, u32 start, u32 end`).
//! - `ParityAnswers` (5), Alice → Bob: `u32 count`, then per frame `u32 frame` + bit string.
//! - `VerifyTag` (6), Alice → Bob: `u128 hash_key, u8 tag_bits, u128 tag`.
//! - `VerifyResult` (7), Bob → Alice: `u8 ok`.
//! - `PaSeed` (8), Alice → Bob: `u64 output_bits` + seed bit string.
//! - `Abort` (9), either way: `u16 code, u32 n, n bytes UTF-8 reason`.
//! - `Done` (10), Bob → Alice: `u64 output_bits` (Bob has the final key).
//! - `FrameTags` (11), Alice → Bob, after a failed verification: `u128 hash_key,
//!   u8 tag_bits (1..=64), u32 count, count × u64 tag` (one tag per Cascade frame).
//! - `FrameVerdict` (12), Bob → Alice: `u32 count, count × u32 frame` (the frames whose
//!   tags differ, strictly increasing; both ends discard them).
//! - `SiftAnnounce` (13), Bob → Alice, time–energy BBM92 sifting of one batch of windows
//!   (the block id is the batch's number): `u64 pad_offset` (the first of the two pads the
//!   exchange uses), `u32 count`, then `count × (i64 time_ps, u8 kind)` in non-decreasing
//!   time order. Kind 0: a key-basis detection, its time *folded* to hide the time-bin
//!   parity that is the key bit (`t − bin·(⌊t/bin⌋ mod 2)`); kinds 1 and 2: a test-basis
//!   detection at analyser output 0 or 1 (test bits are public), time as measured. Times are
//!   on Bob's clock. Since version 7.
//! - `SiftReply` (14), Alice → Bob: `u32 count, count × u32` (the announced key-basis
//!   detections that made key, in key-bit order, each at most once), then `u64
//!   test_coincidences, u64 test_errors, u64 mixed, u64 guarded, u64 key_off_peak`. Since
//!   version 7.
//! - `BasisAnnounce` (15), Bob → Alice, sifting of one batch of decoy-state BB84 detections
//!   or MDI relay events: `u64 pad_offset, u32 count`, then `count × (u64 pulse, u8 code)`,
//!   pulses strictly increasing; code bits 0–1: 0 a key-basis (Z) choice, its bit withheld,
//!   1 and 2 the test basis X with bit 0 or 1 (test bits are public); bits 2–3: Bob's
//!   intensity index 0..=2 (MDI; 0 for BB84, where Bob sends nothing). Since version 7.
//! - `BasisReply` (16), Alice → Bob: `u32 count, count × u8` (per announced event, in
//!   order: bit 0 Alice's basis, bits 1–2 her intensity index 0..=2), then `u8 n` (3 or 9)
//!   and `n × u64` test-basis errors where both chose X: per Alice's intensity (BB84), or
//!   per intensity pair, Alice's major (MDI). Since version 7.
//! - `RelayAnnounce` (17), relay → each user: `u64 pad_offset, u32 count,
//!   count × (u64 pulse, u8 outcome)`, pulses strictly increasing. MDI: the pulses whose
//!   Bell-state measurement succeeded, outcome 0 = ψ⁻, 1 = ψ⁺; twin-field: the single
//!   clicks, outcome the detector (0 = bright at δ = 0). Since version 7.
//! - `TfAnnounce` (18), Bob → Alice, twin-field sifting of one batch of relay clicks:
//!   `u64 pad_offset, u32 count`, then `count × (u64 pulse, u8 window, u16 slice)`: window 0
//!   a key window (whether he sent, or his key phase, withheld), 2–4 a decoy window's
//!   setting (vacuum, weak, strong); slice the phase slice of his random phase (PM: every
//!   pulse; SNS: decoy windows, 0 for key windows). Since version 7.
//! - `TfReply` (19), Alice → Bob: `u32 count, count × (u8 window, u16 slice)`, hers for each
//!   announced click, in the same code. Since version 7.

use std::fmt;

/// The protocol version this crate speaks.
pub const VERSION: u8 = 8;
/// Header length in bytes.
pub const HEADER_LEN: usize = 18;
/// Tag length in bytes.
pub const TAG_LEN: usize = 8;
/// Default largest payload accepted (256 MiB).
pub const DEFAULT_MAX_PAYLOAD: u32 = 256 << 20;

/// Why bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer bytes than the structure needs.
    #[error("{what}: truncated, needs {needed} bytes, has {available}")]
    Truncated {
        /// Message or field.
        what: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// A length field exceeds its maximum.
    #[error("{what}: length {len} exceeds the maximum {max}")]
    Oversized {
        /// Message or field.
        what: &'static str,
        /// The length read.
        len: u64,
        /// The maximum.
        max: u64,
    },
    /// Unknown protocol version.
    #[error("unsupported wire version {0} (this build speaks {VERSION})")]
    Version(u8),
    /// Unknown message type.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// A message of a type that is not expected now.
    #[error("unexpected {got} message (expected {expected})")]
    Unexpected {
        /// Type received.
        got: MessageType,
        /// What the state machine expected.
        expected: &'static str,
    },
    /// A field has a value outside its domain.
    #[error("{what}: invalid value {value}")]
    Invalid {
        /// Message and field.
        what: &'static str,
        /// The value, printed.
        value: String,
    },
    /// Bytes left over after the payload's fields.
    #[error("{what}: {extra} unexpected trailing bytes")]
    Trailing {
        /// Message.
        what: &'static str,
        /// Extra bytes.
        extra: usize,
    },
}

/// Message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    /// Session parameters.
    Hello = 1,
    /// Alice's sample bits.
    Sample = 2,
    /// Bob's error count on the sample.
    SampleVerdict = 3,
    /// Cascade parity questions.
    ParityQueries = 4,
    /// Cascade parity answers.
    ParityAnswers = 5,
    /// Verification hash.
    VerifyTag = 6,
    /// Verification outcome.
    VerifyResult = 7,
    /// Privacy-amplification seed.
    PaSeed = 8,
    /// Session abort.
    Abort = 9,
    /// Bob confirms the final key.
    Done = 10,
    /// Per-frame tags after a failed verification.
    FrameTags = 11,
    /// Frames whose tags differ.
    FrameVerdict = 12,
    /// Bob's detections for sifting (key-basis times folded).
    SiftAnnounce = 13,
    /// Alice's coincidences: which announced detections made key, and the tallies.
    SiftReply = 14,
    /// Bob's BB84 detections: pulse numbers and bases (test-basis bits in clear).
    BasisAnnounce = 15,
    /// Alice's bases and intensities for those detections, and the test errors.
    BasisReply = 16,
    /// An MDI relay's successful Bell-state measurements.
    RelayAnnounce = 17,
    /// Bob's twin-field windows and phase slices for the relay's clicks.
    TfAnnounce = 18,
    /// Alice's windows and phase slices for them.
    TfReply = 19,
}

impl MessageType {
    fn from_u8(v: u8) -> Result<Self, WireError> {
        Ok(match v {
            1 => Self::Hello,
            2 => Self::Sample,
            3 => Self::SampleVerdict,
            4 => Self::ParityQueries,
            5 => Self::ParityAnswers,
            6 => Self::VerifyTag,
            7 => Self::VerifyResult,
            8 => Self::PaSeed,
            9 => Self::Abort,
            10 => Self::Done,
            11 => Self::FrameTags,
            12 => Self::FrameVerdict,
            13 => Self::SiftAnnounce,
            14 => Self::SiftReply,
            15 => Self::BasisAnnounce,
            16 => Self::BasisReply,
            17 => Self::RelayAnnounce,
            18 => Self::TfAnnounce,
            19 => Self::TfReply,
            other => return Err(WireError::UnknownType(other)),
        })
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What an announced detection is (`SiftAnnounce`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SiftKind {
    /// Key basis; the time is folded (its time-bin parity removed).
    Key = 0,
    /// Test basis, analyser output 0.
    Test0 = 1,
    /// Test basis, analyser output 1.
    Test1 = 2,
}

/// One detection Bob announces for sifting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiftEvent {
    /// Time on Bob's clock, ps (folded for [`SiftKind::Key`]).
    pub time_ps: i64,
    /// Basis and, for the test basis, the output.
    pub kind: SiftKind,
}

/// Alice's answer to a `SiftAnnounce`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SiftReply {
    /// Indices of the announced key-basis detections that made key, in key-bit order.
    pub key: Vec<u32>,
    /// Test-basis coincidences.
    pub test_coincidences: u64,
    /// Of which the outputs disagree.
    pub test_errors: u64,
    /// Coincidences in different bases (discarded).
    pub mixed: u64,
    /// Key-basis coincidences discarded near a bin edge.
    pub guarded: u64,
    /// Key-basis coincidences in the off-peak window (accidentals).
    pub key_off_peak: u64,
}

/// One BB84 detection or MDI relay event Bob announces (`BasisAnnounce`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BasisEvent {
    /// Pulse number.
    pub pulse: u64,
    /// Bits 0–1: 0 key basis Z (bit withheld); 1, 2 test basis X with bit 0, 1. Bits 2–3:
    /// Bob's intensity index (MDI).
    pub code: u8,
}

/// Alice's answer to a `BasisAnnounce`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BasisReply {
    /// Per announced event: bit 0 her basis (0 = Z, 1 = X), bits 1–2 her intensity.
    pub choices: Vec<u8>,
    /// Test-basis errors where both chose X: 3 (per Alice's intensity, BB84) or 9 (per
    /// intensity pair, Alice's major, MDI).
    pub test_errors: Vec<u64>,
}

/// One pulse a relay announces (`RelayAnnounce`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayEvent {
    /// Pulse number.
    pub pulse: u64,
    /// MDI: 0 = ψ⁻, 1 = ψ⁺. Twin-field: the detector that clicked.
    pub bell: u8,
}

/// A user's twin-field choice for one relay click (`TfAnnounce`, `TfReply`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TfChoice {
    /// 0: key window (its content withheld); 2, 3, 4: decoy window setting.
    pub window: u8,
    /// Phase slice of the random phase (0 where not announced).
    pub slice: u16,
}

/// A bit string on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BitString {
    /// Number of bits.
    pub len: u64,
    /// Packed words (bits past `len` zero).
    pub words: Vec<u64>,
}

/// One Cascade parity question (mirrors `qkdnet_distill::cascade::Query`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParityQuery {
    /// All top-level block parities of a pass.
    Blocks {
        /// Pass.
        pass: u16,
    },
    /// Parity of a range of a pass's shuffled string.
    Range {
        /// Pass.
        pass: u16,
        /// Start.
        start: u32,
        /// End (exclusive).
        end: u32,
    },
}

/// Session parameters proposed by Alice.
#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    /// Sifted bits in the block (before sampling).
    pub sifted_bits: u64,
    /// Cascade frame length.
    pub frame_bits: u32,
    /// Cascade variant (0 original, 1 Yan et al.).
    pub variant: u8,
    /// Extra BICONF passes.
    pub biconf: u8,
    /// Abort threshold on the estimated error rate.
    pub qber_max: f64,
    /// Secrecy parameter.
    pub eps_sec: f64,
    /// Correctness parameter.
    pub eps_cor: f64,
    /// Sample size for parameter estimation.
    pub sample_bits: u32,
    /// Seed of the sample positions.
    pub sample_seed: [u8; 32],
    /// Seed of the Cascade shuffles.
    pub shuffle_seed: [u8; 32],
    /// Index of the first authentication pad this session uses (never below either end's
    /// cursor, so pads are never reused).
    pub pad_offset: u64,
    /// Test-basis coincidences of the block (0: phase error from the sample).
    pub test_bits: u64,
    /// Of which with disagreeing outcomes.
    pub test_errors: u64,
    /// Secrecy the protocol's own bound grants the whole sifted block, bits (0: the session
    /// bounds it itself from the test tally or the sample). Decoy-state protocols send
    /// s₀ + s₁(1 − h(φ)) here (Lim et al. 2014).
    pub secrecy_bits: f64,
    /// The composable overhead that bound subtracts, bits.
    pub secrecy_overhead_bits: f64,
}

/// A message payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Session parameters.
    Hello(Hello),
    /// Alice's sample bits.
    Sample(BitString),
    /// Bob's count of sample errors and whether he proceeds.
    SampleVerdict {
        /// Errors in the sample.
        errors: u32,
        /// Whether Bob continues.
        proceed: bool,
    },
    /// Parity questions per frame.
    ParityQueries(Vec<(u32, Vec<ParityQuery>)>),
    /// Parity answers per frame.
    ParityAnswers(Vec<(u32, BitString)>),
    /// Verification hash of Alice's reconciled key.
    VerifyTag {
        /// The (public, fresh) hash key.
        hash_key: u128,
        /// Tag length in bits.
        tag_bits: u8,
        /// The tag.
        tag: u128,
    },
    /// Whether Bob's tag matched.
    VerifyResult {
        /// Match.
        ok: bool,
    },
    /// Privacy-amplification seed and output length.
    PaSeed {
        /// Final key length.
        output_bits: u64,
        /// The shared random draw the Toeplitz seed expands from
        /// (`qkdnet_distill::toeplitz::expand_seed`; since version 6, by the transposed
        /// basis change since version 8).
        seed: BitString,
    },
    /// One tag per Cascade frame, sent when the whole-key verification failed, so the
    /// frames that still differ can be found and discarded.
    FrameTags {
        /// The (public, fresh) hash key.
        hash_key: u128,
        /// Bits per tag, 1..=64.
        tag_bits: u8,
        /// The low `tag_bits` bits of each frame's hash, in frame order.
        tags: Vec<u64>,
    },
    /// The frames whose tags differ (strictly increasing indices).
    FrameVerdict {
        /// Failed frame indices.
        failed: Vec<u32>,
    },
    /// Bob has the final key.
    Done {
        /// Its length.
        output_bits: u64,
    },
    /// Bob's detections of a batch of windows, for sifting.
    SiftAnnounce {
        /// First of the two pads the exchange uses.
        pad_offset: u64,
        /// The detections, in non-decreasing time order.
        events: Vec<SiftEvent>,
    },
    /// Alice's coincidences with an announcement.
    SiftReply(SiftReply),
    /// Bob's BB84 detections of a batch.
    BasisAnnounce {
        /// First of the two pads the exchange uses.
        pad_offset: u64,
        /// The detections, pulses strictly increasing.
        events: Vec<BasisEvent>,
    },
    /// Alice's bases and intensities for them.
    BasisReply(BasisReply),
    /// Bob's twin-field choices for a batch's relay clicks.
    TfAnnounce {
        /// First of the two pads the exchange uses.
        pad_offset: u64,
        /// Per relay click: pulse number and Bob's choice, pulses strictly increasing.
        events: Vec<(u64, TfChoice)>,
    },
    /// Alice's choices for the same clicks, in order.
    TfReply(Vec<TfChoice>),
    /// A relay's announcement of a batch (MDI Bell states, twin-field single clicks).
    RelayAnnounce {
        /// The pad this message uses (of the relay–user pool).
        pad_offset: u64,
        /// The events, pulses strictly increasing.
        events: Vec<RelayEvent>,
    },
    /// The session stops.
    Abort {
        /// Machine-readable reason.
        code: u16,
        /// Human-readable reason.
        reason: String,
    },
}

impl Message {
    /// The message's type.
    pub fn message_type(&self) -> MessageType {
        match self {
            Self::Hello(_) => MessageType::Hello,
            Self::Sample(_) => MessageType::Sample,
            Self::SampleVerdict { .. } => MessageType::SampleVerdict,
            Self::ParityQueries(_) => MessageType::ParityQueries,
            Self::ParityAnswers(_) => MessageType::ParityAnswers,
            Self::VerifyTag { .. } => MessageType::VerifyTag,
            Self::VerifyResult { .. } => MessageType::VerifyResult,
            Self::PaSeed { .. } => MessageType::PaSeed,
            Self::Abort { .. } => MessageType::Abort,
            Self::Done { .. } => MessageType::Done,
            Self::FrameTags { .. } => MessageType::FrameTags,
            Self::FrameVerdict { .. } => MessageType::FrameVerdict,
            Self::SiftAnnounce { .. } => MessageType::SiftAnnounce,
            Self::SiftReply(_) => MessageType::SiftReply,
            Self::BasisAnnounce { .. } => MessageType::BasisAnnounce,
            Self::BasisReply(_) => MessageType::BasisReply,
            Self::RelayAnnounce { .. } => MessageType::RelayAnnounce,
            Self::TfAnnounce { .. } => MessageType::TfAnnounce,
            Self::TfReply(_) => MessageType::TfReply,
        }
    }
}

/// Header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message type.
    pub message_type: MessageType,
    /// Block id.
    pub block_id: u64,
    /// Sequence number.
    pub seq: u32,
}

/// A checked view of one message's bytes: header parsed, payload and tag located.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// The header.
    pub header: Header,
    bytes: &'a [u8],
    payload_len: usize,
}

impl<'a> Envelope<'a> {
    /// Checks the header and lengths of one complete message (no more, no less).
    /// If this returns `Ok`, no accessor panics.
    pub fn parse(bytes: &'a [u8], max_payload: u32) -> Result<Self, WireError> {
        if bytes.len() < HEADER_LEN {
            return Err(WireError::Truncated {
                what: "header",
                needed: HEADER_LEN,
                available: bytes.len(),
            });
        }
        if bytes[0] != VERSION {
            return Err(WireError::Version(bytes[0]));
        }
        let message_type = MessageType::from_u8(bytes[1])?;
        let mut r = Reader::new(&bytes[2..HEADER_LEN], "header");
        let block_id = r.u64()?;
        let seq = r.u32()?;
        let payload_len = r.u32()?;
        if payload_len > max_payload {
            return Err(WireError::Oversized {
                what: "payload",
                len: u64::from(payload_len),
                max: u64::from(max_payload),
            });
        }
        let payload_len = payload_len as usize;
        let total = HEADER_LEN + payload_len + TAG_LEN;
        if bytes.len() < total {
            return Err(WireError::Truncated {
                what: "message",
                needed: total,
                available: bytes.len(),
            });
        }
        if bytes.len() > total {
            return Err(WireError::Trailing {
                what: "message",
                extra: bytes.len() - total,
            });
        }
        Ok(Self {
            header: Header {
                message_type,
                block_id,
                seq,
            },
            bytes,
            payload_len,
        })
    }

    /// Header and payload: the bytes the tag authenticates.
    pub fn authenticated_bytes(&self) -> &'a [u8] {
        &self.bytes[..HEADER_LEN + self.payload_len]
    }

    /// The tag field.
    pub fn tag(&self) -> u64 {
        let t = &self.bytes[HEADER_LEN + self.payload_len..];
        let mut a = [0u8; 8];
        a.copy_from_slice(t);
        u64::from_le_bytes(a)
    }

    /// Decodes the payload (call after the tag has been checked).
    pub fn message(&self, limits: &Limits) -> Result<Message, WireError> {
        decode_payload(
            self.header.message_type,
            &self.bytes[HEADER_LEN..HEADER_LEN + self.payload_len],
            limits,
        )
    }
}

/// Largest sizes a receiver accepts inside payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bit string, bits.
    pub max_bits: u64,
    /// Largest number of frames in one parity message.
    pub max_frames: u32,
    /// Largest number of queries per frame.
    pub max_queries: u32,
    /// Largest abort-reason text, bytes.
    pub max_reason: u32,
    /// Largest number of detections in one sifting announcement.
    pub max_events: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bits: 1 << 31,
            max_frames: 1 << 20,
            max_queries: 1 << 24,
            max_reason: 4096,
            max_events: 1 << 26,
        }
    }
}

/// Encodes a message with its header; the tag field is filled by `tag_of`, which receives
/// the authenticated bytes (header + payload).
pub fn encode(
    block_id: u64,
    seq: u32,
    msg: &Message,
    tag_of: impl FnOnce(&[u8]) -> u64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(VERSION);
    out.push(msg.message_type() as u8);
    out.extend_from_slice(&block_id.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    encode_payload(msg, &mut out);
    let len = (out.len() - HEADER_LEN) as u32;
    out[14..18].copy_from_slice(&len.to_le_bytes());
    let tag = tag_of(&out);
    out.extend_from_slice(&tag.to_le_bytes());
    out
}

fn put_bits(out: &mut Vec<u8>, b: &BitString) {
    out.extend_from_slice(&b.len.to_le_bytes());
    for w in &b.words {
        out.extend_from_slice(&w.to_le_bytes());
    }
}

fn encode_payload(msg: &Message, out: &mut Vec<u8>) {
    match msg {
        Message::Hello(h) => {
            out.extend_from_slice(&h.sifted_bits.to_le_bytes());
            out.extend_from_slice(&h.frame_bits.to_le_bytes());
            out.push(h.variant);
            out.push(h.biconf);
            out.extend_from_slice(&h.qber_max.to_le_bytes());
            out.extend_from_slice(&h.eps_sec.to_le_bytes());
            out.extend_from_slice(&h.eps_cor.to_le_bytes());
            out.extend_from_slice(&h.sample_bits.to_le_bytes());
            out.extend_from_slice(&h.sample_seed);
            out.extend_from_slice(&h.shuffle_seed);
            out.extend_from_slice(&h.pad_offset.to_le_bytes());
            out.extend_from_slice(&h.test_bits.to_le_bytes());
            out.extend_from_slice(&h.test_errors.to_le_bytes());
            out.extend_from_slice(&h.secrecy_bits.to_le_bytes());
            out.extend_from_slice(&h.secrecy_overhead_bits.to_le_bytes());
        }
        Message::Done { output_bits } => out.extend_from_slice(&output_bits.to_le_bytes()),
        Message::Sample(b) => put_bits(out, b),
        Message::SampleVerdict { errors, proceed } => {
            out.extend_from_slice(&errors.to_le_bytes());
            out.push(u8::from(*proceed));
        }
        Message::ParityQueries(frames) => {
            out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
            for (f, qs) in frames {
                out.extend_from_slice(&f.to_le_bytes());
                out.extend_from_slice(&(qs.len() as u32).to_le_bytes());
                for q in qs {
                    match *q {
                        ParityQuery::Blocks { pass } => {
                            out.push(0);
                            out.extend_from_slice(&pass.to_le_bytes());
                        }
                        ParityQuery::Range { pass, start, end } => {
                            out.push(1);
                            out.extend_from_slice(&pass.to_le_bytes());
                            out.extend_from_slice(&start.to_le_bytes());
                            out.extend_from_slice(&end.to_le_bytes());
                        }
                    }
                }
            }
        }
        Message::ParityAnswers(frames) => {
            out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
            for (f, b) in frames {
                out.extend_from_slice(&f.to_le_bytes());
                put_bits(out, b);
            }
        }
        Message::VerifyTag {
            hash_key,
            tag_bits,
            tag,
        } => {
            out.extend_from_slice(&hash_key.to_le_bytes());
            out.push(*tag_bits);
            out.extend_from_slice(&tag.to_le_bytes());
        }
        Message::VerifyResult { ok } => out.push(u8::from(*ok)),
        Message::FrameTags {
            hash_key,
            tag_bits,
            tags,
        } => {
            out.extend_from_slice(&hash_key.to_le_bytes());
            out.push(*tag_bits);
            out.extend_from_slice(&(tags.len() as u32).to_le_bytes());
            for t in tags {
                out.extend_from_slice(&t.to_le_bytes());
            }
        }
        Message::FrameVerdict { failed } => {
            out.extend_from_slice(&(failed.len() as u32).to_le_bytes());
            for f in failed {
                out.extend_from_slice(&f.to_le_bytes());
            }
        }
        Message::PaSeed { output_bits, seed } => {
            out.extend_from_slice(&output_bits.to_le_bytes());
            put_bits(out, seed);
        }
        Message::SiftAnnounce { pad_offset, events } => {
            out.extend_from_slice(&pad_offset.to_le_bytes());
            out.extend_from_slice(&(events.len() as u32).to_le_bytes());
            out.reserve(9 * events.len());
            for e in events {
                out.extend_from_slice(&e.time_ps.to_le_bytes());
                out.push(e.kind as u8);
            }
        }
        Message::SiftReply(r) => {
            out.extend_from_slice(&(r.key.len() as u32).to_le_bytes());
            for k in &r.key {
                out.extend_from_slice(&k.to_le_bytes());
            }
            for v in [
                r.test_coincidences,
                r.test_errors,
                r.mixed,
                r.guarded,
                r.key_off_peak,
            ] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        Message::BasisAnnounce { pad_offset, events } => {
            out.extend_from_slice(&pad_offset.to_le_bytes());
            out.extend_from_slice(&(events.len() as u32).to_le_bytes());
            out.reserve(9 * events.len());
            for e in events {
                out.extend_from_slice(&e.pulse.to_le_bytes());
                out.push(e.code);
            }
        }
        Message::BasisReply(r) => {
            out.extend_from_slice(&(r.choices.len() as u32).to_le_bytes());
            out.extend_from_slice(&r.choices);
            out.push(r.test_errors.len() as u8);
            for e in &r.test_errors {
                out.extend_from_slice(&e.to_le_bytes());
            }
        }
        Message::TfAnnounce { pad_offset, events } => {
            out.extend_from_slice(&pad_offset.to_le_bytes());
            out.extend_from_slice(&(events.len() as u32).to_le_bytes());
            out.reserve(11 * events.len());
            for (pulse, c) in events {
                out.extend_from_slice(&pulse.to_le_bytes());
                out.push(c.window);
                out.extend_from_slice(&c.slice.to_le_bytes());
            }
        }
        Message::TfReply(choices) => {
            out.extend_from_slice(&(choices.len() as u32).to_le_bytes());
            for c in choices {
                out.push(c.window);
                out.extend_from_slice(&c.slice.to_le_bytes());
            }
        }
        Message::RelayAnnounce { pad_offset, events } => {
            out.extend_from_slice(&pad_offset.to_le_bytes());
            out.extend_from_slice(&(events.len() as u32).to_le_bytes());
            out.reserve(9 * events.len());
            for e in events {
                out.extend_from_slice(&e.pulse.to_le_bytes());
                out.push(e.bell);
            }
        }
        Message::Abort { code, reason } => {
            out.extend_from_slice(&code.to_le_bytes());
            out.extend_from_slice(&(reason.len() as u32).to_le_bytes());
            out.extend_from_slice(reason.as_bytes());
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8], what: &'static str) -> Self {
        Self { b, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.b.len() < n {
            return Err(WireError::Truncated {
                what: self.what,
                needed: n,
                available: self.b.len(),
            });
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }

    fn arr<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    fn u128(&mut self) -> Result<u128, WireError> {
        Ok(u128::from_le_bytes(self.arr()?))
    }
    fn f64(&mut self) -> Result<f64, WireError> {
        Ok(f64::from_le_bytes(self.arr()?))
    }

    fn flag(&mut self, field: &'static str) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(WireError::Invalid {
                what: field,
                value: v.to_string(),
            }),
        }
    }

    fn bits(&mut self, limits: &Limits) -> Result<BitString, WireError> {
        let len = self.u64()?;
        if len > limits.max_bits {
            return Err(WireError::Oversized {
                what: self.what,
                len,
                max: limits.max_bits,
            });
        }
        let nw = len.div_ceil(64) as usize;
        // Check the bytes are present before allocating.
        if self.b.len() < nw * 8 {
            return Err(WireError::Truncated {
                what: self.what,
                needed: nw * 8,
                available: self.b.len(),
            });
        }
        let mut words = Vec::with_capacity(nw);
        for _ in 0..nw {
            words.push(self.u64()?);
        }
        let r = (len % 64) as u32;
        if r != 0 {
            if let Some(&last) = words.last() {
                if last >> r != 0 {
                    return Err(WireError::Invalid {
                        what: self.what,
                        value: "bits set past the bit count".into(),
                    });
                }
            }
        }
        Ok(BitString { len, words })
    }

    fn count(&mut self, max: u32, what: &'static str) -> Result<u32, WireError> {
        let n = self.u32()?;
        if n > max {
            return Err(WireError::Oversized {
                what,
                len: u64::from(n),
                max: u64::from(max),
            });
        }
        Ok(n)
    }

    fn finish(self) -> Result<(), WireError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(WireError::Trailing {
                what: self.what,
                extra: self.b.len(),
            })
        }
    }
}

fn finite(what: &'static str, v: f64, lo: f64, hi: f64) -> Result<f64, WireError> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(v)
    } else {
        Err(WireError::Invalid {
            what,
            value: v.to_string(),
        })
    }
}

fn tf_choice(r: &mut Reader<'_>, what: &'static str) -> Result<TfChoice, WireError> {
    let window = r.u8()?;
    if window == 1 || window > 4 {
        return Err(WireError::Invalid {
            what,
            value: window.to_string(),
        });
    }
    let slice = r.u16()?;
    Ok(TfChoice { window, slice })
}

fn decode_payload(t: MessageType, b: &[u8], limits: &Limits) -> Result<Message, WireError> {
    let msg = match t {
        MessageType::Hello => {
            let mut r = Reader::new(b, "Hello");
            let h = Hello {
                sifted_bits: r.u64()?,
                frame_bits: r.u32()?,
                variant: r.u8()?,
                biconf: r.u8()?,
                qber_max: finite("Hello.qber_max", r.f64()?, 0.0, 0.5)?,
                eps_sec: finite("Hello.eps_sec", r.f64()?, 1e-300, 1.0)?,
                eps_cor: finite("Hello.eps_cor", r.f64()?, 1e-300, 1.0)?,
                sample_bits: r.u32()?,
                sample_seed: r.arr()?,
                shuffle_seed: r.arr()?,
                pad_offset: r.u64()?,
                test_bits: r.u64()?,
                test_errors: r.u64()?,
                secrecy_bits: finite("Hello.secrecy_bits", r.f64()?, 0.0, 1e18)?,
                secrecy_overhead_bits: finite("Hello.secrecy_overhead_bits", r.f64()?, 0.0, 1e9)?,
            };
            if h.secrecy_bits > h.sifted_bits as f64 {
                return Err(WireError::Invalid {
                    what: "Hello.secrecy_bits",
                    value: format!("{} for {} sifted bits", h.secrecy_bits, h.sifted_bits),
                });
            }
            if h.test_errors > h.test_bits {
                return Err(WireError::Invalid {
                    what: "Hello.test_errors",
                    value: format!("{} of {} test bits", h.test_errors, h.test_bits),
                });
            }
            if h.variant > 1 {
                return Err(WireError::Invalid {
                    what: "Hello.variant",
                    value: h.variant.to_string(),
                });
            }
            if h.sifted_bits > limits.max_bits {
                return Err(WireError::Oversized {
                    what: "Hello.sifted_bits",
                    len: h.sifted_bits,
                    max: limits.max_bits,
                });
            }
            r.finish()?;
            Message::Hello(h)
        }
        MessageType::Sample => {
            let mut r = Reader::new(b, "Sample");
            let bits = r.bits(limits)?;
            r.finish()?;
            Message::Sample(bits)
        }
        MessageType::SampleVerdict => {
            let mut r = Reader::new(b, "SampleVerdict");
            let errors = r.u32()?;
            let proceed = r.flag("SampleVerdict.proceed")?;
            r.finish()?;
            Message::SampleVerdict { errors, proceed }
        }
        MessageType::ParityQueries => {
            let mut r = Reader::new(b, "ParityQueries");
            let nf = r.count(limits.max_frames, "ParityQueries.frames")?;
            let mut frames = Vec::with_capacity((nf as usize).min(r.b.len() / 8));
            for _ in 0..nf {
                let f = r.u32()?;
                let nq = r.count(limits.max_queries, "ParityQueries.queries")?;
                let mut qs = Vec::with_capacity((nq as usize).min(r.b.len() / 3));
                for _ in 0..nq {
                    qs.push(match r.u8()? {
                        0 => ParityQuery::Blocks { pass: r.u16()? },
                        1 => ParityQuery::Range {
                            pass: r.u16()?,
                            start: r.u32()?,
                            end: r.u32()?,
                        },
                        k => {
                            return Err(WireError::Invalid {
                                what: "ParityQueries.kind",
                                value: k.to_string(),
                            })
                        }
                    });
                }
                frames.push((f, qs));
            }
            r.finish()?;
            Message::ParityQueries(frames)
        }
        MessageType::ParityAnswers => {
            let mut r = Reader::new(b, "ParityAnswers");
            let nf = r.count(limits.max_frames, "ParityAnswers.frames")?;
            let mut frames = Vec::with_capacity((nf as usize).min(r.b.len() / 12));
            for _ in 0..nf {
                let f = r.u32()?;
                frames.push((f, r.bits(limits)?));
            }
            r.finish()?;
            Message::ParityAnswers(frames)
        }
        MessageType::VerifyTag => {
            let mut r = Reader::new(b, "VerifyTag");
            let hash_key = r.u128()?;
            let tag_bits = r.u8()?;
            if tag_bits == 0 || tag_bits > 128 {
                return Err(WireError::Invalid {
                    what: "VerifyTag.tag_bits",
                    value: tag_bits.to_string(),
                });
            }
            let tag = r.u128()?;
            r.finish()?;
            Message::VerifyTag {
                hash_key,
                tag_bits,
                tag,
            }
        }
        MessageType::FrameTags => {
            let mut r = Reader::new(b, "FrameTags");
            let hash_key = r.u128()?;
            let tag_bits = r.u8()?;
            if tag_bits == 0 || tag_bits > 64 {
                return Err(WireError::Invalid {
                    what: "FrameTags.tag_bits",
                    value: tag_bits.to_string(),
                });
            }
            let n = r.count(limits.max_frames, "FrameTags.count")?;
            let mut tags = Vec::with_capacity((n as usize).min(r.b.len() / 8));
            for _ in 0..n {
                let t = r.u64()?;
                if tag_bits < 64 && t >> tag_bits != 0 {
                    return Err(WireError::Invalid {
                        what: "FrameTags.tag",
                        value: format!("{t:#x} wider than {tag_bits} bits"),
                    });
                }
                tags.push(t);
            }
            r.finish()?;
            Message::FrameTags {
                hash_key,
                tag_bits,
                tags,
            }
        }
        MessageType::FrameVerdict => {
            let mut r = Reader::new(b, "FrameVerdict");
            let n = r.count(limits.max_frames, "FrameVerdict.count")?;
            let mut failed: Vec<u32> = Vec::with_capacity((n as usize).min(r.b.len() / 4));
            for _ in 0..n {
                let f = r.u32()?;
                if failed.last().is_some_and(|&p| p >= f) {
                    return Err(WireError::Invalid {
                        what: "FrameVerdict.failed",
                        value: format!("{f} after {}", failed.last().copied().unwrap_or(0)),
                    });
                }
                failed.push(f);
            }
            r.finish()?;
            Message::FrameVerdict { failed }
        }
        MessageType::VerifyResult => {
            let mut r = Reader::new(b, "VerifyResult");
            let ok = r.flag("VerifyResult.ok")?;
            r.finish()?;
            Message::VerifyResult { ok }
        }
        MessageType::PaSeed => {
            let mut r = Reader::new(b, "PaSeed");
            let output_bits = r.u64()?;
            let seed = r.bits(limits)?;
            r.finish()?;
            Message::PaSeed { output_bits, seed }
        }
        MessageType::Done => {
            let mut r = Reader::new(b, "Done");
            let output_bits = r.u64()?;
            r.finish()?;
            Message::Done { output_bits }
        }
        MessageType::SiftAnnounce => {
            let mut r = Reader::new(b, "SiftAnnounce");
            let pad_offset = r.u64()?;
            let n = r.count(limits.max_events, "SiftAnnounce.count")?;
            let mut events: Vec<SiftEvent> = Vec::with_capacity((n as usize).min(r.b.len() / 9));
            for _ in 0..n {
                let time_ps = i64::from_le_bytes(r.arr()?);
                let kind = match r.u8()? {
                    0 => SiftKind::Key,
                    1 => SiftKind::Test0,
                    2 => SiftKind::Test1,
                    k => {
                        return Err(WireError::Invalid {
                            what: "SiftAnnounce.kind",
                            value: k.to_string(),
                        })
                    }
                };
                if let Some(prev) = events.last() {
                    if time_ps < prev.time_ps {
                        return Err(WireError::Invalid {
                            what: "SiftAnnounce.time_ps",
                            value: format!("{time_ps} after {} (not time ordered)", prev.time_ps),
                        });
                    }
                }
                events.push(SiftEvent { time_ps, kind });
            }
            r.finish()?;
            Message::SiftAnnounce { pad_offset, events }
        }
        MessageType::SiftReply => {
            let mut r = Reader::new(b, "SiftReply");
            let n = r.count(limits.max_events, "SiftReply.count")?;
            let mut key = Vec::with_capacity((n as usize).min(r.b.len() / 4));
            for _ in 0..n {
                key.push(r.u32()?);
            }
            let reply = SiftReply {
                key,
                test_coincidences: r.u64()?,
                test_errors: r.u64()?,
                mixed: r.u64()?,
                guarded: r.u64()?,
                key_off_peak: r.u64()?,
            };
            if reply.test_errors > reply.test_coincidences {
                return Err(WireError::Invalid {
                    what: "SiftReply.test_errors",
                    value: format!(
                        "{} of {} test coincidences",
                        reply.test_errors, reply.test_coincidences
                    ),
                });
            }
            r.finish()?;
            Message::SiftReply(reply)
        }
        MessageType::BasisAnnounce => {
            let mut r = Reader::new(b, "BasisAnnounce");
            let pad_offset = r.u64()?;
            let n = r.count(limits.max_events, "BasisAnnounce.count")?;
            let mut events: Vec<BasisEvent> = Vec::with_capacity((n as usize).min(r.b.len() / 9));
            for _ in 0..n {
                let pulse = r.u64()?;
                let code = r.u8()?;
                if code & 3 > 2 || code >> 2 > 2 {
                    return Err(WireError::Invalid {
                        what: "BasisAnnounce.code",
                        value: code.to_string(),
                    });
                }
                if let Some(prev) = events.last() {
                    if pulse <= prev.pulse {
                        return Err(WireError::Invalid {
                            what: "BasisAnnounce.pulse",
                            value: format!("{pulse} after {} (not increasing)", prev.pulse),
                        });
                    }
                }
                events.push(BasisEvent { pulse, code });
            }
            r.finish()?;
            Message::BasisAnnounce { pad_offset, events }
        }
        MessageType::BasisReply => {
            let mut r = Reader::new(b, "BasisReply");
            let n = r.count(limits.max_events, "BasisReply.count")?;
            let choices = r.take(n as usize)?.to_vec();
            if let Some(&c) = choices.iter().find(|&&c| c > 5) {
                return Err(WireError::Invalid {
                    what: "BasisReply.choice",
                    value: c.to_string(),
                });
            }
            let n = r.u8()?;
            if n != 3 && n != 9 {
                return Err(WireError::Invalid {
                    what: "BasisReply.test_errors",
                    value: format!("{n} counts (3 or 9)"),
                });
            }
            let mut test_errors = Vec::with_capacity(usize::from(n));
            for _ in 0..n {
                test_errors.push(r.u64()?);
            }
            r.finish()?;
            Message::BasisReply(BasisReply {
                choices,
                test_errors,
            })
        }
        MessageType::TfAnnounce => {
            let mut r = Reader::new(b, "TfAnnounce");
            let pad_offset = r.u64()?;
            let n = r.count(limits.max_events, "TfAnnounce.count")?;
            let mut events: Vec<(u64, TfChoice)> =
                Vec::with_capacity((n as usize).min(r.b.len() / 11));
            for _ in 0..n {
                let pulse = r.u64()?;
                let c = tf_choice(&mut r, "TfAnnounce.window")?;
                if events.last().is_some_and(|p| pulse <= p.0) {
                    return Err(WireError::Invalid {
                        what: "TfAnnounce.pulse",
                        value: format!("{pulse} not after the previous pulse"),
                    });
                }
                events.push((pulse, c));
            }
            r.finish()?;
            Message::TfAnnounce { pad_offset, events }
        }
        MessageType::TfReply => {
            let mut r = Reader::new(b, "TfReply");
            let n = r.count(limits.max_events, "TfReply.count")?;
            let mut choices = Vec::with_capacity((n as usize).min(r.b.len() / 3));
            for _ in 0..n {
                choices.push(tf_choice(&mut r, "TfReply.window")?);
            }
            r.finish()?;
            Message::TfReply(choices)
        }
        MessageType::RelayAnnounce => {
            let mut r = Reader::new(b, "RelayAnnounce");
            let pad_offset = r.u64()?;
            let n = r.count(limits.max_events, "RelayAnnounce.count")?;
            let mut events: Vec<RelayEvent> = Vec::with_capacity((n as usize).min(r.b.len() / 9));
            for _ in 0..n {
                let pulse = r.u64()?;
                let bell = r.u8()?;
                if bell > 1 {
                    return Err(WireError::Invalid {
                        what: "RelayAnnounce.bell",
                        value: bell.to_string(),
                    });
                }
                if events.last().is_some_and(|p| pulse <= p.pulse) {
                    return Err(WireError::Invalid {
                        what: "RelayAnnounce.pulse",
                        value: format!("{pulse} not after the previous pulse"),
                    });
                }
                events.push(RelayEvent { pulse, bell });
            }
            r.finish()?;
            Message::RelayAnnounce { pad_offset, events }
        }
        MessageType::Abort => {
            let mut r = Reader::new(b, "Abort");
            let code = r.u16()?;
            let n = r.count(limits.max_reason, "Abort.reason")?;
            let text = r.take(n as usize)?;
            let reason = String::from_utf8(text.to_vec()).map_err(|_| WireError::Invalid {
                what: "Abort.reason",
                value: "not UTF-8".into(),
            })?;
            r.finish()?;
            Message::Abort { code, reason }
        }
    };
    Ok(msg)
}

#[cfg(test)]
mod tests;
