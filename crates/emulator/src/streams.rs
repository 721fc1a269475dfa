//! Random generators of the emulator's windows.
//!
//! Each purpose (events, drifts, window-level counts) gets a key from the seeded ChaCha
//! stream of `core::rng` (master seed, component, purpose); each window then gets a
//! xoshiro256++ generator seeded (SplitMix64) from the key and the window index. Any window
//! can be drawn on any thread, in any order, with the same result, and the ChaCha setup is
//! paid once per purpose rather than once per window (ARCHITECTURE.md).

use qkdnet_core::rng::RngStream;
use rand::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// The key of one purpose of one component.
pub(crate) fn purpose_key(seed: u64, component: &str, purpose: &str) -> u64 {
    RngStream::derive(seed, component, purpose).next_u64()
}

/// The generator of window `index` under `key`.
pub(crate) fn window_rng(key: u64, index: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(key ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}
