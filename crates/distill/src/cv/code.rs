//! A multi-edge-type LDPC code drawn from an [`Ensemble`], its syndromes, and its
//! belief-propagation decoder for syndrome (Slepian–Wolf) decoding.
//!
//! Bit order: bits `0..K` are the core bits, bit `K + c` is the degree-one bit of type-2
//! check `c`. The syndrome lists the `M` type-2 checks, then the `P` precode checks.
//!
//! The decoder is layered sum-product (Hocevar, IEEE SiPS 2004): checks are updated one
//! after another, each from the core bits' current totals, so information travels within
//! an iteration. A degree-one bit only ever sends its channel LLR (flipped by its check's
//! syndrome bit), so it needs no state; once the core bits are known every degree-one bit
//! follows from its check's syndrome (`p = s ⊕ Σ core`).

use super::design::Ensemble;
use qkdnet_core::Bits;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// A code drawn from an ensemble.
#[derive(Debug, Clone)]
pub struct MetCode {
    k: usize,
    m: usize,
    /// Type-2 checks then precode checks: offsets into `idx` (`m + p + 1` entries).
    ptr: Vec<u32>,
    /// Core bit of each edge.
    idx: Vec<u32>,
    rate: f64,
}

/// Why a code could not be drawn.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodeError {
    /// Too few bits for the ensemble's degrees.
    #[error("a {n}-bit code is too short for this ensemble (needs at least {min} bits)")]
    TooShort {
        /// Bits asked for.
        n: usize,
        /// Fewest that work.
        min: usize,
    },
}

/// Deals `sockets` (core bit per socket) to checks of the given degrees so that no check
/// holds a core bit twice.
fn deal(degrees: &[u32], sockets: &mut [u32], rng: &mut ChaCha20Rng) -> Vec<u32> {
    sockets.shuffle(rng);
    let mut start = 0usize;
    for &d in degrees {
        let end = start + d as usize;
        for i in start..end {
            let mut tries = 0;
            while sockets[start..i].contains(&sockets[i]) && tries < 1000 {
                // Swap with a random socket anywhere whose bit this check does not hold
                // and whose own check would not then hold it twice (checked when that
                // check is dealt, or accepted if already dealt and distinct).
                let j = rng.gen_range(0..sockets.len());
                let (a, b) = (sockets[i], sockets[j]);
                if sockets[start..i].contains(&b) {
                    tries += 1;
                    continue;
                }
                if j < start {
                    // j's check is dealt: find its range and keep it duplicate-free.
                    let (lo, hi) = range_of(degrees, j);
                    if sockets[lo..hi].contains(&a) {
                        tries += 1;
                        continue;
                    }
                }
                sockets.swap(i, j);
            }
        }
        start = end;
    }
    sockets.to_vec()
}

/// The socket range of the check holding socket `j`.
fn range_of(degrees: &[u32], j: usize) -> (usize, usize) {
    let mut lo = 0usize;
    for &d in degrees {
        let hi = lo + d as usize;
        if j < hi {
            return (lo, hi);
        }
        lo = hi;
    }
    (lo, lo)
}

/// Integer counts proportional to `weights` summing to `total` (largest remainders).
fn apportion(weights: &[f64], total: usize) -> Vec<usize> {
    let sum: f64 = weights.iter().sum();
    let raw: Vec<f64> = weights.iter().map(|w| w / sum * total as f64).collect();
    let mut counts: Vec<usize> = raw.iter().map(|r| r.floor() as usize).collect();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| (raw[b] - raw[b].floor()).total_cmp(&(raw[a] - raw[a].floor())));
    let mut left = total - counts.iter().sum::<usize>();
    for i in order {
        if left == 0 {
            break;
        }
        counts[i] += 1;
        left -= 1;
    }
    counts
}

impl MetCode {
    /// Draws an `n`-bit code from `ens` (deterministic in `seed`). The core bits' degrees
    /// differ by at most one so that the sockets match the checks' exactly.
    pub fn new(ens: &Ensemble, n: usize, seed: u64) -> Result<Self, CodeError> {
        let cpe: f64 = ens.checks.iter().map(|&(d, w)| w / d as f64).sum();
        let k = (n as f64 / (1.0 + ens.core_degree as f64 * cpe)).round() as usize;
        let max_d = ens.checks.iter().map(|c| c.0).max().unwrap_or(1) as usize;
        let (e1, d1) = (ens.precode.0 as usize, ens.precode.1 as usize);
        if k < max_d.max(d1) * 2 || n <= k {
            return Err(CodeError::TooShort {
                n,
                min: ((max_d.max(d1) * 2) as f64 * (1.0 + ens.core_degree as f64 * cpe)) as usize,
            });
        }
        let m = n - k;
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        // Type-2 checks: node fractions ω_d/d.
        let node_w: Vec<f64> = ens.checks.iter().map(|&(d, w)| w / d as f64).collect();
        let counts = apportion(&node_w, m);
        let mut degrees: Vec<u32> = Vec::with_capacity(m);
        for (&(d, _), &c) in ens.checks.iter().zip(&counts) {
            degrees.extend(std::iter::repeat_n(d, c));
        }
        degrees.shuffle(&mut rng);
        let sockets2: usize = degrees.iter().map(|&d| d as usize).sum();
        let mut core: Vec<u32> = (0..sockets2).map(|i| (i % k) as u32).collect();
        let t2 = deal(&degrees, &mut core, &mut rng);
        // Precode: K·e₁ sockets over ⌈K e₁ / d₁⌉ checks of degree d₁ or d₁ − 1.
        let sockets1 = k * e1;
        let p = if e1 == 0 { 0 } else { sockets1.div_ceil(d1) };
        let mut pdeg = vec![(sockets1 / p.max(1)) as u32; p];
        for d in pdeg.iter_mut().take(sockets1 % p.max(1)) {
            *d += 1;
        }
        let mut core1: Vec<u32> = (0..sockets1).map(|i| (i % k) as u32).collect();
        let t1 = deal(&pdeg, &mut core1, &mut rng);
        let mut ptr = Vec::with_capacity(m + p + 1);
        ptr.push(0u32);
        for &d in degrees.iter().chain(&pdeg) {
            let last = *ptr.last().unwrap_or(&0);
            ptr.push(last + d);
        }
        let mut idx = t2;
        idx.extend(t1);
        Ok(Self {
            k,
            m,
            rate: (k - p) as f64 / n as f64,
            ptr,
            idx,
        })
    }

    /// Code length `n = K + M`.
    pub fn len(&self) -> usize {
        self.k + self.m
    }

    /// Whether the code has no bits (never, for a drawn code).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Core bits `K`.
    pub fn core(&self) -> usize {
        self.k
    }

    /// Syndrome length `M + P`: the bits reconciliation discloses.
    pub fn syndrome_len(&self) -> usize {
        self.ptr.len() - 1
    }

    /// Rate `(n − syndrome)/n`.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Edges.
    pub fn edges(&self) -> usize {
        self.idx.len() + self.m
    }

    /// The syndrome of `bits` (`n` bits).
    pub fn syndrome(&self, bits: &Bits) -> Bits {
        assert_eq!(
            bits.len(),
            self.len(),
            "syndrome of a word of the wrong length"
        );
        let mut s = Bits::zeros(self.syndrome_len());
        for c in 0..self.syndrome_len() {
            let mut v = c < self.m && bits.get(self.k + c);
            for &b in &self.idx[self.ptr[c] as usize..self.ptr[c + 1] as usize] {
                v ^= bits.get(b as usize);
            }
            if v {
                s.set(c, true);
            }
        }
        s
    }

    /// Decodes the word whose channel LLRs are `llr` (`n` values, `log P(0)/P(1)`) and whose
    /// syndrome is `syndrome`, in at most `max_iter` layered iterations. Returns the word
    /// and the iterations used, or `None` when the decoder did not settle (the precode
    /// unsatisfied, the decisions still changing, or a core bit's posterior LLR below 8). A returned word satisfies the
    /// syndrome; whether it is the right one is for the verification hash to say.
    pub fn decode(&self, llr: &[f32], syndrome: &Bits, max_iter: usize) -> Option<(Bits, usize)> {
        assert_eq!(llr.len(), self.len(), "LLRs for a word of the wrong length");
        assert_eq!(
            syndrome.len(),
            self.syndrome_len(),
            "syndrome of the wrong length"
        );
        const CLAMP: f32 = 1.0 - 1e-6;
        // Every core bit must be this sure before the decoder stops: a stable word that
        // satisfies the precode but still has weak bits is, at low SNR, often a wrong one.
        const SETTLED: f32 = 8.0;
        let k = self.k;
        let mut total: Vec<f32> = llr[..k].to_vec();
        let mut msg = vec![0f32; self.idx.len()];
        // The degree-one bits' fixed inputs, as tanh(L/2) with the syndrome's sign.
        let fixed: Vec<f32> = (0..self.m)
            .map(|c| {
                let t = tanh_half(llr[k + c]);
                if syndrome.get(c) {
                    -t
                } else {
                    t
                }
            })
            .collect();
        let max_d = self
            .ptr
            .windows(2)
            .map(|w| (w[1] - w[0]) as usize)
            .max()
            .unwrap_or(0);
        let mut q = vec![0f32; max_d];
        let mut t = vec![0f32; max_d];
        let mut suffix = vec![0f32; max_d + 1];
        let mut hard = Bits::zeros(k);
        let mut stable = 0;
        // Progress: the core posteriors' mean magnitude, every STRIDE iterations. A frame
        // whose mean has not grown by a fifth in three strides is stuck at a fixed point
        // (measured at SNR 0.011 and 0.03: failing frames plateau within ±10 % for hundreds
        // of iterations, and 1000 iterations rescue none of them; succeeding ones may
        // stall for two strides, then take off): give up on it from iteration 100 rather
        // than spend the rest of `max_iter`.
        const STRIDE: usize = 25;
        let mut means = [0f64; 3];
        for it in 1..=max_iter {
            #[allow(clippy::needless_range_loop)] // c indexes ptr, fixed and the syndrome
            for c in 0..self.syndrome_len() {
                let (lo, hi) = (self.ptr[c] as usize, self.ptr[c + 1] as usize);
                let (head, sign) = if let Some(&f) = fixed.get(c) {
                    (f, 1.0f32)
                } else {
                    (1.0f32, if syndrome.get(c) { -1.0 } else { 1.0 })
                };
                let d = hi - lo;
                let (idx, msg) = (&self.idx[lo..hi], &mut msg[lo..hi]);
                let (q, t) = (&mut q[..d], &mut t[..d]);
                for i in 0..d {
                    q[i] = total[idx[i] as usize] - msg[i];
                    t[i] = tanh_half(q[i]);
                }
                let suffix = &mut suffix[..=d];
                suffix[d] = 1.0;
                for i in (0..d).rev() {
                    suffix[i] = suffix[i + 1] * t[i];
                }
                let mut prefix = head * sign;
                for i in 0..d {
                    let z = (prefix * suffix[i + 1]).clamp(-CLAMP, CLAMP);
                    let r = ln_fast((1.0 + z) / (1.0 - z));
                    msg[i] = r;
                    total[idx[i] as usize] = q[i] + r;
                    prefix *= t[i];
                }
            }
            // Decisions and the precode.
            let mut changed = false;
            let mut weakest = f32::INFINITY;
            for (b, &l) in total.iter().enumerate() {
                let bit = l < 0.0;
                weakest = weakest.min(l.abs());
                if hard.get(b) != bit {
                    hard.set(b, bit);
                    changed = true;
                }
            }
            stable = if changed { 0 } else { stable + 1 };
            if stable >= 2 && weakest >= SETTLED && self.precode_holds(&hard, syndrome) {
                return Some((self.complete(&hard, syndrome), it));
            }
            if it % STRIDE == 0 {
                let mean = total.iter().map(|l| l.abs() as f64).sum::<f64>() / k.max(1) as f64;
                let slot = (it / STRIDE) % 3;
                if it >= 4 * STRIDE && mean < 1.2 * means[slot] {
                    return None;
                }
                means[slot] = mean;
            }
        }
        None
    }

    fn precode_holds(&self, core: &Bits, syndrome: &Bits) -> bool {
        (self.m..self.syndrome_len()).all(|c| {
            let mut v = syndrome.get(c);
            for &b in &self.idx[self.ptr[c] as usize..self.ptr[c + 1] as usize] {
                v ^= core.get(b as usize);
            }
            !v
        })
    }

    /// The whole word from its core bits: each degree-one bit from its check's syndrome.
    fn complete(&self, core: &Bits, syndrome: &Bits) -> Bits {
        let mut w = Bits::zeros(self.len());
        for b in 0..self.k {
            if core.get(b) {
                w.set(b, true);
            }
        }
        for c in 0..self.m {
            let mut v = syndrome.get(c);
            for &b in &self.idx[self.ptr[c] as usize..self.ptr[c + 1] as usize] {
                v ^= core.get(b as usize);
            }
            if v {
                w.set(self.k + c, true);
            }
        }
        w
    }
}

/// `2^x` for `|x| < 126`, relative error below 2e−6: the integer part into the exponent
/// bits, `2^f` on `[0, 1)` by its degree-7 Taylor polynomial in `f ln 2`.
#[inline(always)]
fn exp2_fast(x: f32) -> f32 {
    let x = x.clamp(-126.0, 126.0);
    // floor without a libm call: truncate, then step down for negative fractions.
    let mut n = x as i32;
    if (n as f32) > x {
        n -= 1;
    }
    let f = (x - n as f32) * std::f32::consts::LN_2;
    let p = 1.0
        + f * (1.0
            + f * (0.5
                + f * (1.0 / 6.0
                    + f * (1.0 / 24.0 + f * (1.0 / 120.0 + f * (1.0 / 720.0 + f / 5040.0))))));
    p * f32::from_bits(((n + 127) as u32) << 23)
}

/// `ln x` for positive normal `x`, absolute error below 1e−7: the exponent bits, and
/// `ln m = 2 atanh((m−1)/(m+1))` on the mantissa by its series to the ninth power.
#[inline(always)]
fn ln_fast(x: f32) -> f32 {
    let bits = x.to_bits();
    let e = ((bits >> 23) & 0xff) as i32 - 127;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let series = 2.0 * s * (1.0 + s2 * (1.0 / 3.0 + s2 * (0.2 + s2 * (1.0 / 7.0 + s2 / 9.0))));
    e as f32 * std::f32::consts::LN_2 + series
}

/// `tanh(x/2) = (1 − e^{−|x|})/(1 + e^{−|x|})`, signed.
#[inline(always)]
fn tanh_half(x: f32) -> f32 {
    let e = exp2_fast(-x.abs() * std::f32::consts::LOG2_E);
    ((1.0 - e) / (1.0 + e)).copysign(x)
}

/// Draws `n` uniformly random bits (test and bench helper).
pub fn random_bits(n: usize, rng: &mut impl Rng) -> Bits {
    let mut b = Bits::zeros(n);
    for i in 0..n {
        if rng.gen::<bool>() {
            b.set(i, true);
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::super::{design, mdr};
    use super::*;

    /// One frame through a Gaussian channel of signal-to-noise ratio `snr` and 8-D MDR:
    /// Bob's bits, Alice's LLRs.
    fn frame(n: usize, snr: f64, rng: &mut ChaCha20Rng) -> (Bits, Vec<f32>) {
        let (x, y) = super::super::gaussian_channel(n, snr, rng);
        let bits = random_bits(n, rng);
        let ann = mdr::bob_announce(&y, &bits, 8);
        (bits.duplicate(), mdr::alice_llr(&x, &ann, snr.sqrt(), 1.0))
    }

    #[test]
    fn drawn_code_matches_its_ensemble() {
        let ens = design::design(&design::DesignTarget::at(0.03)).expect("design");
        let c = MetCode::new(&ens, 100_000, 1).expect("code");
        assert_eq!(c.len(), 100_000);
        assert!(
            (c.rate() - ens.rate()).abs() < 0.002,
            "{} vs {}",
            c.rate(),
            ens.rate()
        );
        // No check holds a core bit twice (it would cancel out of the parity).
        for w in c.ptr.windows(2) {
            let mut v = c.idx[w[0] as usize..w[1] as usize].to_vec();
            v.sort_unstable();
            let before = v.len();
            v.dedup();
            assert_eq!(v.len(), before);
        }
        // Core degrees differ by at most one.
        let mut deg = vec![0u32; c.core()];
        for &b in &c.idx[..c.ptr[c.m] as usize] {
            deg[b as usize] += 1;
        }
        let (lo, hi) = (deg.iter().min(), deg.iter().max());
        assert!(
            hi.zip(lo).is_some_and(|(h, l)| h - l <= 1),
            "{lo:?}..{hi:?}"
        );
        assert!(matches!(
            MetCode::new(&ens, 1000, 1),
            Err(CodeError::TooShort { .. })
        ));
    }

    /// Above the code's threshold every frame decodes to Bob's bits; well below it the
    /// decoder gives up rather than return a wrong word.
    #[test]
    fn decodes_above_threshold_and_gives_up_below() {
        let ens = design::design(&design::DesignTarget::at(0.03)).expect("design");
        let c = MetCode::new(&ens, 200_000, 2).expect("code");
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        for _ in 0..2 {
            let (bits, llr) = frame(c.len(), 0.036, &mut rng);
            let s = c.syndrome(&bits);
            let (w, _) = c
                .decode(&llr, &s, 300)
                .expect("decodes at 1.2× the design SNR");
            assert_eq!(w.hamming_distance(&bits), 0);
            assert_eq!(c.syndrome(&w).words(), s.words());
        }
        let (bits, llr) = frame(c.len(), 0.018, &mut rng);
        assert!(c.decode(&llr, &c.syndrome(&bits), 60).is_none());
    }

    #[test]
    fn fast_functions_are_accurate() {
        let mut x = -30.0f32;
        while x < 30.0 {
            let exact = (0.5 * x as f64).tanh();
            assert!((tanh_half(x) as f64 - exact).abs() < 2e-6, "tanh_half({x})");
            x += 0.0137;
        }
        let mut r = 1e-7f32;
        while r < 1e7 {
            let err = (ln_fast(r) as f64 - (r as f64).ln()).abs();
            assert!(
                err < 2e-6 * (r as f64).ln().abs().max(1.0),
                "ln({r}): {err}"
            );
            r *= 1.013;
        }
    }
}
