//! `qkdnet-link`: the runtime of one QKD link.
//!
//! What it has so far:
//! - [`Transport`]: ordered, reliable byte messages between the two ends of a link, with an
//!   in-process implementation ([`MemTransport`]) and a TCP one ([`TcpTransport`]);
//! - [`drive_alice`] / [`drive_bob`]: run a distillation session of `qkdnet-distill` over a
//!   transport until it ends;
//! - [`pipeline_alice`] / [`pipeline_bob`]: many blocks over one transport with several
//!   sessions in flight, each authenticated from its own reserved pad range.
//!
//! - [`sync`]: time synchronisation from the quantum signal alone — acquisition of an
//!   unknown offset (±1 s) and frequency error (±1 ppm) by FFT cross-correlation, and
//!   tracking of the coincidence peak window by window.
//!
//! - [`replay`]: a [`qkdnet_core::frontend::Frontend`] that replays a recorded node
//!   (qkdnet `.qtt` or PicoQuant PTU) window by window.
//!
//! - [`sift`]: time–energy BBM92 sifting of synchronised records (key bits from time
//!   bins, test bits from the analyser outputs, accidentals off the peak), in one place or
//!   between the two ends over a [`Transport`] (folded key times);
//! - [`sift_bb84`]: decoy-state BB84 sifting between the two ends over a [`Transport`];
//! - [`sift_mdi`]: MDI-QKD sifting among the relay and the two users;
//! - [`sift_tf`]: twin-field (SNS, PM) sifting among the relay and the two users.
//!
//! - [`control`]: the control loops as controllers of per-window measurements — the
//!   analysers' phase lock (dithered minimum of QBER_X), polarisation compensation
//!   (dithered maximum of the count rate) and pump steering to a QBER_Z target.
//!
//! - [`supervisor`]: the link's state machine (acquiring, stabilising, producing,
//!   degraded, recovering), fault detection, one automatic restart per fault,
//!   availability.
//!
//! `qkdnet run` (in the CLI) ties the supervisor, the loops and distillation to the
//! emulator at window level ([`events`] at event level); `qkdnet sift` runs the BBM92
//! exchange between two processes. `TcpTransport` is the one place in the library crates
//! that touches sockets: the session logic stays sans-IO in `qkdnet-distill`, and this
//! crate only moves its bytes.

pub mod control;
pub mod events;
pub mod replay;
pub mod sift;
pub mod sift_bb84;
pub mod sift_mdi;
pub mod sift_tf;
pub mod supervisor;
pub mod sync;

use qkdnet_core::Bits;
use qkdnet_distill::auth::AuthKeys;
use qkdnet_distill::random::SecureRandom;
use qkdnet_distill::session::{
    AliceSession, BobSession, Config, ExternalBound, FinalKey, Output, SessionError, TestTally,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Transport failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The peer closed the connection.
    #[error("peer closed the connection")]
    Closed,
    /// A frame announced more bytes than the limit.
    #[error("incoming frame of {len} bytes exceeds the limit {max}")]
    Oversized {
        /// Announced length.
        len: u64,
        /// Limit.
        max: u64,
    },
    /// Socket error.
    #[error("transport I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Ordered, reliable message delivery between the two ends of a link.
pub trait Transport {
    /// Sends one message.
    fn send(&mut self, msg: &[u8]) -> Result<(), TransportError>;
    /// Receives the next message (blocking).
    fn recv(&mut self) -> Result<Vec<u8>, TransportError>;
}

/// One end of an in-process channel pair, optionally with a fixed one-way latency (a
/// message sent at `t` is received no earlier than `t + latency`; messages keep their
/// order).
pub struct MemTransport {
    tx: mpsc::Sender<(Instant, Vec<u8>)>,
    rx: mpsc::Receiver<(Instant, Vec<u8>)>,
    latency: Duration,
}

impl MemTransport {
    /// A connected pair.
    pub fn pair() -> (Self, Self) {
        Self::pair_with_latency(Duration::ZERO)
    }

    /// A connected pair whose messages each take `one_way` to arrive (a round trip takes
    /// twice that): a link's network delay, in process.
    pub fn pair_with_latency(one_way: Duration) -> (Self, Self) {
        let (ta, rb) = mpsc::channel();
        let (tb, ra) = mpsc::channel();
        let end = |tx, rx| Self {
            tx,
            rx,
            latency: one_way,
        };
        (end(ta, ra), end(tb, rb))
    }
}

impl Transport for MemTransport {
    fn send(&mut self, msg: &[u8]) -> Result<(), TransportError> {
        self.tx
            .send((Instant::now() + self.latency, msg.to_vec()))
            .map_err(|_| TransportError::Closed)
    }
    fn recv(&mut self) -> Result<Vec<u8>, TransportError> {
        let (due, msg) = self.rx.recv().map_err(|_| TransportError::Closed)?;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        Ok(msg)
    }
}

/// Messages over TCP, each framed as a little-endian `u32` length and the bytes.
pub struct TcpTransport {
    stream: TcpStream,
    max_len: u32,
    /// Set after a framing error: the stream is out of step and must not be read again.
    broken: bool,
}

impl TcpTransport {
    /// Wraps a connected stream; frames longer than `max_len` bytes are refused.
    pub fn new(stream: TcpStream, max_len: u32) -> Result<Self, TransportError> {
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            max_len,
            broken: false,
        })
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, msg: &[u8]) -> Result<(), TransportError> {
        let len = u32::try_from(msg.len()).map_err(|_| TransportError::Oversized {
            len: msg.len() as u64,
            max: u64::from(self.max_len),
        })?;
        self.stream.write_all(&len.to_le_bytes())?;
        self.stream.write_all(msg)?;
        self.stream.flush()?;
        Ok(())
    }

    fn recv(&mut self) -> Result<Vec<u8>, TransportError> {
        if self.broken {
            return Err(TransportError::Closed);
        }
        let mut l = [0u8; 4];
        match self.stream.read_exact(&mut l) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(TransportError::Closed)
            }
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_le_bytes(l);
        if len > self.max_len {
            self.broken = true;
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
            return Err(TransportError::Oversized {
                len: u64::from(len),
                max: u64::from(self.max_len),
            });
        }
        let mut buf = vec![0u8; len as usize];
        self.stream.read_exact(&mut buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                TransportError::Closed
            } else {
                TransportError::Io(e)
            }
        })?;
        Ok(buf)
    }
}

/// Why a driven session ended without a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriveError {
    /// The session failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// Runs Alice's end of a session over `t` until it ends.
pub fn drive_alice(
    t: &mut dyn Transport,
    block_id: u64,
    sifted: Bits,
    cfg: Config,
    auth: &mut AuthKeys,
    rng: &mut dyn SecureRandom,
) -> Result<FinalKey, DriveError> {
    drive_alice_with_test(t, block_id, sifted, cfg, None, auth, rng)
}

/// Runs Alice's end of a session over `t`, with the test basis's tally for the phase error
/// (entanglement-based links), until it ends.
pub fn drive_alice_with_test(
    t: &mut dyn Transport,
    block_id: u64,
    sifted: Bits,
    cfg: Config,
    test: Option<TestTally>,
    auth: &mut AuthKeys,
    rng: &mut dyn SecureRandom,
) -> Result<FinalKey, DriveError> {
    drive_alice_with_bound(t, block_id, sifted, cfg, test, None, auth, rng)
}

/// Runs Alice's end of a session over `t` under a protocol's own secrecy bound (decoy
/// BB84's; `None`: the session's), until it ends. Bob learns the bound from the
/// authenticated `Hello`.
#[allow(clippy::too_many_arguments)]
pub fn drive_alice_with_bound(
    t: &mut dyn Transport,
    block_id: u64,
    sifted: Bits,
    cfg: Config,
    test: Option<TestTally>,
    bound: Option<ExternalBound>,
    auth: &mut AuthKeys,
    rng: &mut dyn SecureRandom,
) -> Result<FinalKey, DriveError> {
    let (mut s, first) =
        AliceSession::start_with_bound(block_id, sifted, cfg, test, bound, auth, rng)?;
    for m in &first {
        t.send(m)?;
    }
    loop {
        let msg = t.recv()?;
        match s.handle(&msg, auth, rng) {
            Ok(Output::Send(v)) => {
                for m in &v {
                    t.send(m)?;
                }
            }
            Ok(Output::Finished(k, _)) => return Ok(*k),
            Err(e) => {
                if let Some(abort) = s.take_abort() {
                    let _ = t.send(&abort);
                }
                return Err(e.into());
            }
        }
    }
}

/// Runs Bob's end of a session over `t` until it ends.
pub fn drive_bob(
    t: &mut dyn Transport,
    block_id: u64,
    sifted: Bits,
    auth: &mut AuthKeys,
) -> Result<FinalKey, DriveError> {
    let mut s = BobSession::new(block_id, sifted, auth);
    loop {
        let msg = t.recv()?;
        let out = match s.handle(&msg, auth) {
            Ok(out) => out,
            Err(e) => {
                if let Some(abort) = s.take_abort() {
                    let _ = t.send(&abort);
                }
                return Err(e.into());
            }
        };
        match out {
            Output::Send(v) => {
                for m in &v {
                    t.send(m)?;
                }
            }
            Output::Finished(k, v) => {
                for m in &v {
                    t.send(m)?;
                }
                return Ok(*k);
            }
        }
    }
}

/// Per-block outcomes of a pipelined run, in block order: the final key or why there is
/// none.
pub type BlockResults = Vec<(u64, Result<FinalKey, DriveError>)>;

/// How many blocks a pipelined link keeps in flight, and the authentication pads each
/// block's session may use. Both ends must agree on `pads_per_block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pipelining {
    /// Sessions open at once (≥ 1).
    pub depth: usize,
    /// Pads reserved per block (one per message); a session that needs more fails with an
    /// authentication error. Unused pads are spent, not reused: 1024 pads are 64 kbit,
    /// ~1 % of a 10⁷-bit block's key at 2 % QBER.
    pub pads_per_block: u64,
}

impl Default for Pipelining {
    fn default() -> Self {
        Self {
            depth: 4,
            pads_per_block: 1024,
        }
    }
}

/// The block id of an encoded message, without checking its tag (for routing only: the
/// session that receives it authenticates it).
fn block_of(msg: &[u8]) -> Result<u64, SessionError> {
    let env = qkdnet_wire::Envelope::parse(msg, u32::MAX).map_err(SessionError::from)?;
    Ok(env.header.block_id)
}

struct AliceSlot {
    session: AliceSession,
    auth: AuthKeys,
}

/// Runs Alice's end of many blocks over one transport with up to `p.depth` sessions in
/// flight: while one block waits for Bob's reply, the others' messages are handled, so
/// round trips overlap with computation. Each session authenticates with its own range of
/// `p.pads_per_block` pads reserved from `auth` in block order. Returns one result per
/// block, in the order the blocks were given; a failed block does not stop the others.
pub fn pipeline_alice(
    t: &mut dyn Transport,
    blocks: impl IntoIterator<Item = (u64, Bits)>,
    cfg: Config,
    p: Pipelining,
    auth: &mut AuthKeys,
    rng: &mut dyn SecureRandom,
) -> Result<BlockResults, TransportError> {
    let mut pending = blocks.into_iter();
    let mut open: std::collections::HashMap<u64, AliceSlot> = std::collections::HashMap::new();
    let mut results: BlockResults = Vec::new();
    let mut order = Vec::new();
    let depth = p.depth.max(1);
    loop {
        while open.len() < depth {
            let Some((id, bits)) = pending.next() else {
                break;
            };
            order.push(id);
            let mut child = match auth.reserve(auth.cursor(), p.pads_per_block) {
                Ok(c) => c,
                Err(e) => {
                    results.push((id, Err(DriveError::Session(SessionError::Auth(e)))));
                    continue;
                }
            };
            match AliceSession::start(id, bits, cfg.clone(), &mut child, rng) {
                Ok((session, first)) => {
                    for m in &first {
                        t.send(m)?;
                    }
                    open.insert(
                        id,
                        AliceSlot {
                            session,
                            auth: child,
                        },
                    );
                }
                Err(e) => {
                    auth.absorb(child);
                    results.push((id, Err(e.into())));
                }
            }
        }
        if open.is_empty() {
            break;
        }
        let msg = t.recv()?;
        let Ok(id) = block_of(&msg) else {
            continue; // Unparseable: no session can own it.
        };
        let Some(slot) = open.get_mut(&id) else {
            continue; // A late message of a block that already ended.
        };
        let outcome = slot.session.handle(&msg, &mut slot.auth, rng);
        let finished = match outcome {
            Ok(Output::Send(v)) => {
                for m in &v {
                    t.send(m)?;
                }
                None
            }
            Ok(Output::Finished(k, _)) => Some(Ok(*k)),
            Err(e) => {
                if let Some(abort) = slot.session.take_abort() {
                    t.send(&abort)?;
                }
                Some(Err(e.into()))
            }
        };
        if let Some(r) = finished {
            if let Some(slot) = open.remove(&id) {
                auth.absorb(slot.auth);
            }
            results.push((id, r));
        }
    }
    // Report in the order the blocks were given.
    results.sort_by_key(|(id, _)| order.iter().position(|o| o == id));
    Ok(results)
}

/// Runs Bob's end of a pipelined link (see [`pipeline_alice`]) until `count` blocks have
/// ended. `sifted(block_id)` supplies Bob's bits for a block when its `Hello` arrives
/// (`None`: unknown block; the session refuses it and Alice gets an `Abort`). Each session's pads are reserved
/// from `auth` at the offset its `Hello` names.
pub fn pipeline_bob(
    t: &mut dyn Transport,
    mut sifted: impl FnMut(u64) -> Option<Bits>,
    count: usize,
    p: Pipelining,
    auth: &mut AuthKeys,
) -> Result<BlockResults, TransportError> {
    let mut open: std::collections::HashMap<u64, (BobSession, AuthKeys)> =
        std::collections::HashMap::new();
    let mut ended = std::collections::HashSet::new();
    let mut results = Vec::new();
    while results.len() < count {
        let msg = t.recv()?;
        let Ok(id) = block_of(&msg) else {
            continue;
        };
        if ended.contains(&id) {
            continue;
        }
        if let std::collections::hash_map::Entry::Vacant(slot) = open.entry(id) {
            // A new block: its first message must be a Hello naming the pad offset.
            let hello = qkdnet_wire::Envelope::parse(&msg, u32::MAX)
                .ok()
                .and_then(|e| e.message(&qkdnet_wire::Limits::default()).ok());
            let Some(qkdnet_wire::Message::Hello(h)) = hello else {
                continue;
            };
            // Unknown block: an empty session refuses the Hello and tells Alice.
            let bits = sifted(id).unwrap_or_else(|| Bits::zeros(0));
            match auth.reserve(h.pad_offset, p.pads_per_block) {
                Ok(child) => {
                    let s = BobSession::new(id, bits, &child);
                    slot.insert((s, child));
                }
                Err(e) => {
                    ended.insert(id);
                    results.push((id, Err(DriveError::Session(SessionError::Auth(e)))));
                    continue;
                }
            }
        }
        let Some((s, child)) = open.get_mut(&id) else {
            continue;
        };
        let finished = match s.handle(&msg, child) {
            Ok(Output::Send(v)) => {
                for m in &v {
                    t.send(m)?;
                }
                None
            }
            Ok(Output::Finished(k, v)) => {
                for m in &v {
                    t.send(m)?;
                }
                Some(Ok(*k))
            }
            Err(e) => {
                if let Some(abort) = s.take_abort() {
                    t.send(&abort)?;
                }
                Some(Err(DriveError::Session(e)))
            }
        };
        if let Some(r) = finished {
            if let Some((_, child)) = open.remove(&id) {
                auth.absorb(child);
            }
            ended.insert(id);
            results.push((id, r));
        }
    }
    Ok(results)
}
