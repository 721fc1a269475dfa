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

/// A Poisson draw of mean `mean` (0 for a non-positive or non-finite mean).
pub(crate) fn poisson(rng: &mut impl rand::Rng, mean: f64) -> u64 {
    use rand_distr::{Distribution, Poisson};
    if mean <= 0.0 || !mean.is_finite() {
        return 0;
    }
    Poisson::new(mean).map_or(0, |p| p.sample(rng) as u64)
}

/// A binomial draw (0 when `n` is 0 or `p` ≤ 0; `p` capped at 1).
pub(crate) fn binomial(rng: &mut impl rand::Rng, n: u64, p: f64) -> u64 {
    use rand_distr::{Binomial, Distribution};
    if n == 0 || p <= 0.0 || p.is_nan() {
        return 0;
    }
    Binomial::new(n, p.min(1.0)).map_or(0, |b| b.sample(rng))
}

/// Calls `f` for each pulse in `[first, end)` that "succeeds", each independently with
/// probability `p`, drawing only the successes: geometric gaps by inversion. Successes are
/// memoryless, so a window may start its own gaps at its own first pulse.
pub(crate) fn successes<R: rand::Rng>(
    rng: &mut R,
    first: u64,
    end: u64,
    p: f64,
    mut f: impl FnMut(&mut R, u64),
) {
    if p <= 0.0 || first >= end {
        return;
    }
    let ln_q = (-p.min(1.0)).ln_1p();
    let mut pulse = first;
    while pulse < end {
        let u: f64 = rng.gen::<f64>().max(f64::MIN_POSITIVE);
        let gap = if ln_q == f64::NEG_INFINITY {
            0.0
        } else {
            (u.ln() / ln_q).floor()
        };
        if gap >= (end - pulse) as f64 {
            break;
        }
        pulse += gap as u64;
        f(rng, pulse);
        pulse += 1;
    }
}

/// Splits `n` trials over categories of probabilities `p` (summing to 1) by sequential
/// binomials: an exact multinomial draw.
pub(crate) fn multinomial(rng: &mut impl rand::Rng, n: u64, p: &[f64]) -> Vec<u64> {
    let mut out = vec![0; p.len()];
    let (mut left, mut mass) = (n, 1.0);
    for (i, &pi) in p.iter().enumerate() {
        let k = if i + 1 == p.len() {
            left
        } else {
            binomial(rng, left, (pi / mass).clamp(0.0, 1.0))
        };
        out[i] = k;
        left -= k;
        mass = (mass - pi).max(f64::MIN_POSITIVE);
    }
    out
}

/// The index of the first cumulative weight above `r` (the last one if none is).
pub(crate) fn pick(cumulative: &[f64], r: f64) -> usize {
    cumulative
        .iter()
        .position(|&c| r < c)
        .unwrap_or(cumulative.len().saturating_sub(1))
}

/// The window bookkeeping of a pulsed link: fixed pulses per window, and per window a
/// generator for the clicks and one for the sent-pulse counts.
#[derive(Debug, Clone)]
pub(crate) struct PulseWindows {
    /// Pulses per window.
    pub pulses_per_window: u64,
    next_index: u64,
    clicks_key: u64,
    sent_key: u64,
}

/// One window of a [`PulseWindows`].
pub(crate) struct PulseWindow {
    pub index: u64,
    pub first: u64,
    pub end: u64,
    pub clicks_rng: Xoshiro256PlusPlus,
    pub sent_rng: Xoshiro256PlusPlus,
}

impl PulseWindows {
    /// Windows of `window_s` seconds at `clock_hz`, keyed by (seed, component).
    pub fn new(
        window_s: f64,
        clock_hz: f64,
        seed: u64,
        component: &str,
    ) -> Result<Self, qkdnet_optics::ParamError> {
        qkdnet_optics::check("window_s", window_s, 1e-9, 3600.0)?;
        Ok(Self {
            pulses_per_window: (window_s * clock_hz).round().max(1.0) as u64,
            next_index: 0,
            clicks_key: purpose_key(seed, component, "clicks"),
            sent_key: purpose_key(seed, component, "sent"),
        })
    }

    /// The next window.
    pub fn next_window(&mut self) -> PulseWindow {
        let index = self.next_index;
        self.next_index += 1;
        let first = index * self.pulses_per_window;
        PulseWindow {
            index,
            first,
            end: first + self.pulses_per_window,
            clicks_rng: window_rng(self.clicks_key, index),
            sent_rng: window_rng(self.sent_key, index),
        }
    }

    /// The index the next window will have (and advances past it).
    pub fn take_index(&mut self) -> u64 {
        self.next_index += 1;
        self.next_index - 1
    }
}

/// Checks a random walk's strength (`emulator.<name>`, rad/√s, 0 to 100).
pub(crate) fn check_walk(name: &str, rad_per_sqrt_s: f64) -> Result<(), qkdnet_optics::ParamError> {
    qkdnet_optics::check(&format!("emulator.{name}"), rad_per_sqrt_s, 0.0, 100.0).map(|_| ())
}

/// One window's step of a random walk of strength `rad_per_sqrt_s` over `seconds`, drawn
/// from the window's own generator (so windows may be emulated in any order).
pub(crate) fn walk_step(key: u64, index: u64, rad_per_sqrt_s: f64, seconds: f64) -> f64 {
    use rand::Rng;
    if rad_per_sqrt_s <= 0.0 {
        return 0.0;
    }
    let n: f64 = window_rng(key, index).sample(rand_distr::StandardNormal);
    rad_per_sqrt_s * seconds.sqrt() * n
}
