//! qkdnet network: whole QKD networks on paper.
//!
//! - [`scenario`]: link scenario files (one link, its protocol, hardware and published
//!   figures), used by `qkdnet rate`, `emulate`, `run` and by network files;
//! - [`spec`]: network files (nodes, fibres with their classical traffic, links of any
//!   protocol family over fibre routes, trusted nodes, untrusted relays and sources, SAEs),
//!   parsed and checked with errors that name the item;
//! - [`grid`]: the ITU-T G.694.1 100 GHz DWDM grid and energy-conjugate channel pairs;
//! - [`noise`]: Raman scattering and filter crosstalk from classical channels into each
//!   quantum channel, span by span along its route;
//! - [`plan`]: the planner: channel assignment, predicted finite-key rate per link with the
//!   noise of its route, the classical load each link survives, and per-SAE-pair rates
//!   through trusted nodes (a relayed pair is limited by its path's weakest link).
//!
//! - [`runner`]: one emulated BBM92 link at runtime, window by window (emulator, sync,
//!   supervisor, control loops, sifted key, blocks, distillation with both ends here);
//! - [`sim`]: every link of a network in virtual time, keys handed to each node's store;
//!
//! What it deliberately does not do: draw (the `qkdnet` binary renders plans as SVG), store
//! or deliver keys (`qkdnet-kms`), or run links (`qkdnet-link`, `qkdnet-emulator`).

pub mod cv;
pub mod di;
pub mod grid;
pub mod noise;
pub mod plan;
pub mod runner;
pub mod scenario;
pub mod sim;
pub mod spec;

/// Bad input: one line naming the file, the item or field, and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

impl InputError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}
