//! `qkdnet-distill`: turns sifted bits at the two ends of a link into identical, secret,
//! authenticated final keys.
//!
//! What it has:
//! - [`cascade`]: Cascade reconciliation as sans-IO state machines (original and Yan et al.
//!   schedules, BICONF passes), bit-parallel parities, one round trip per parity round;
//! - [`polyhash`] over [`gf128`]: universal hashing for key verification (tag length from
//!   ε_cor) and for Wegman–Carter authentication ([`auth`]);
//! - [`toeplitz`]: privacy amplification by Toeplitz hashing, exact over GF(2) by FFT;
//! - [`estimate`]: parameter estimation by random sampling, and the finite-key output
//!   length with every leaked bit counted ([`plan`]);
//! - [`session`]: the two ends run as state machines exchanging typed messages.
//! - [`random`]: the `SecureRandom` provider every security-relevant draw comes from.
//!
//! What it deliberately does not do: I/O, clocks or sockets (the link runtime and the CLI
//! carry messages), sifting (the link runtime), or storing keys (`qkdnet-kms`).

pub mod aopp;
pub mod auth;
pub mod cascade;
pub mod cv;
pub mod estimate;
pub mod gf128;
pub mod gf2x;
pub mod polyhash;
pub mod random;
pub mod session;
pub mod testdata;
pub mod toeplitz;
