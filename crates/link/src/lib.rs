//! `qkdnet-link`: the runtime of one QKD link.
//!
//! What it has so far:
//! - [`Transport`]: ordered, reliable byte messages between the two ends of a link, with an
//!   in-process implementation ([`MemTransport`]) and a TCP one ([`TcpTransport`]);
//! - [`drive_alice`] / [`drive_bob`]: run a distillation session of `qkdnet-distill` over a
//!   transport until it ends.
//!
//! What it does not have yet: time synchronisation, sifting, control loops and the
//! supervisor (issue 4). `TcpTransport` is the one place in the library crates that touches
//! sockets: the session logic stays sans-IO in `qkdnet-distill`, and this crate only moves
//! its bytes.

use qkdnet_core::Bits;
use qkdnet_distill::auth::AuthKeys;
use qkdnet_distill::random::SecureRandom;
use qkdnet_distill::session::{AliceSession, BobSession, Config, FinalKey, Output, SessionError};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;

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

/// One end of an in-process channel pair.
pub struct MemTransport {
    tx: mpsc::Sender<Vec<u8>>,
    rx: mpsc::Receiver<Vec<u8>>,
}

impl MemTransport {
    /// A connected pair.
    pub fn pair() -> (Self, Self) {
        let (ta, rb) = mpsc::channel();
        let (tb, ra) = mpsc::channel();
        (Self { tx: ta, rx: ra }, Self { tx: tb, rx: rb })
    }
}

impl Transport for MemTransport {
    fn send(&mut self, msg: &[u8]) -> Result<(), TransportError> {
        self.tx
            .send(msg.to_vec())
            .map_err(|_| TransportError::Closed)
    }
    fn recv(&mut self) -> Result<Vec<u8>, TransportError> {
        self.rx.recv().map_err(|_| TransportError::Closed)
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
    let (mut s, first) = AliceSession::start(block_id, sifted, cfg, auth, rng)?;
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
            Ok(Output::Finished(k, _)) => return Ok(k),
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
        match s.handle(&msg, auth)? {
            Output::Send(v) => {
                for m in &v {
                    t.send(m)?;
                }
            }
            Output::Finished(k, v) => {
                for m in &v {
                    t.send(m)?;
                }
                return Ok(k);
            }
        }
    }
}
