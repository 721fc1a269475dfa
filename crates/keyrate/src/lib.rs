//! `qkdnet-keyrate`: security analysis of QKD protocol families.
//!
//! For each family a **forward model** (hardware + channel → expected gains, error rates,
//! yields) and a **key-length bound** (observed statistics → secret bits), asymptotic and
//! finite-key, with the paper and equation cited at each formula:
//!
//! | family | module | forward model | finite key |
//! |---|---|---|---|
//! | decoy-state BB84 | [`decoy_bb84`] | Lim et al. 2014 | Lim et al. 2014 |
//! | BBM92, CW source | [`bbm92::Bbm92Cw`] | Neumann et al. 2021 | Tomamichel et al. 2012 |
//! | BBM92, pulsed source | [`bbm92::Bbm92Pulsed`] | Ma, Fung, Lo 2007 | Tomamichel et al. 2012 |
//! | MDI-QKD | [`mdi`] | Ma & Razavi 2012 | two-decoy Y₁₁ bound + Chernoff |
//! | twin-field SNS (+AOPP) | [`tf`] | phase-noise budget (Bertaina et al.) | Jiang et al. 2019, Xu et al. 2020 |
//! | twin-field PM-QKD | [`tf`] | same | vacuum + weak decoy, Chernoff (Ma, Qi, Zhao, Lo 2005 Eq. (34)) |
//! | CV-QKD GG02 | [`cv`] | Laudenbach et al. 2018 | Leverrier et al. 2010 |
//! | DI-QKD over a memory link | [`di`] | Humphreys et al. 2018 | Hoeffding on CHSH |
//!
//! plus the repeaterless bounds ([`bounds`]: PLOB, TGW), an optimiser of free parameters
//! ([`optimise`]) and distance/loss sweeps ([`sweep`]).
//!
//! What it deliberately does not do: sample events (see `qkdnet-emulator`) or distil keys
//! (see `qkdnet-distill`). Asymptotic rates here are for planning; only finite-key bounds
//! may size stored keys.

pub mod bbm92;
pub mod bounds;
pub mod cv;
pub mod decoy_bb84;
pub mod di;
pub mod finite;
pub mod math;
pub mod mdi;
pub mod model;
pub mod optimise;
pub mod protocol;
pub mod rules;
pub mod sweep;
pub mod tf;

pub use finite::{FiniteKey, Security};
pub use model::{Evaluation, FreeParam, KeyRateModel};
pub use protocol::Protocol;
pub use sweep::{sweep, Row, SweepOptions};
