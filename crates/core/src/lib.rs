//! `qkdnet-core`: the vocabulary every other qkdnet crate shares.
//!
//! What it has:
//! - [`units`]: physical quantities as newtypes with their unit in the name
//!   ([`Decibels`], [`DbPerKm`], [`Kilometres`], [`Hertz`], [`Seconds`], [`Probability`]),
//!   each validated on construction so NaN, infinities and out-of-range values never
//!   travel further than the boundary where they entered;
//! - [`time`]: simulation time as integer picoseconds ([`Picoseconds`]);
//! - [`bits`]: packed, zeroize-on-drop bit strings ([`Bits`]) with word-parallel parity;
//! - [`rng`]: deterministic random streams derived from (master seed, component, purpose),
//!   so that the same scenario and seed give the same records whatever the thread count.
//!
//! What it deliberately does not have: physics (see `qkdnet-optics`), security analysis
//! (see `qkdnet-keyrate`), or any I/O.

pub mod bits;
pub mod frontend;
pub mod rng;
pub mod samples;
pub mod time;
pub mod timetag;
pub mod units;

pub use bits::Bits;
pub use rng::{RngStream, StreamId};
pub use time::Picoseconds;
pub use units::{
    DbPerKm, Decibels, Hertz, Kilometres, Nanometres, Probability, Seconds, UnitError,
};
