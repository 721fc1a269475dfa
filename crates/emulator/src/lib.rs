//! qkdnet emulator: the seed systems' photonics in software.
//!
//! Transmitters, channels and receivers, driven by the `optics` models, producing the
//! records their hardware produces (DESIGN.md): time tags per detector channel on each
//! node's own clock. Two fidelities share one model: event level samples only the
//! detections; window level draws per-window counts from the closed forms the event level
//! is tested against.
//!
//! Implemented: the Nice time–energy BBM92 link ([`bbm92`]) with DWDM/CWDM channel
//! selection ([`wdm`]), actuators and scheduled faults ([`faults`]); the GG02 CV-QKD link
//! ([`cv`]); the trapped-ion memory link ([`ion`]); sending-or-not-sending twin-field links
//! and PM-QKD ([`tf`]); decoy-state BB84 ([`bb84`]); MDI-QKD ([`mdi`]). Actuators and
//! faults are emulated for the BBM92 link only so far.
//!
//! The emulator knows nothing about keys: bits, sifting and distillation belong to the
//! link runtime and `distill`.

pub mod analysis;
pub mod bb84;
pub mod bbm92;
pub mod cv;
pub mod faults;
pub mod frontend;
pub mod ion;
pub mod mdi;
mod streams;
pub mod tf;
pub mod wdm;

pub use bbm92::{Actuators, Bbm92Emulation, Bbm92Emulator, Bbm92Link};
pub use faults::{Fault, FaultKind, Side};
