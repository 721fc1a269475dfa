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
    /// unsatisfied, the decisions still changing, or a core bit's posterior LLR below 8). A
    /// returned word satisfies the syndrome; whether it is the right one is for the
    /// verification hash to say.
    pub fn decode(&self, llr: &[f32], syndrome: &Bits, max_iter: usize) -> Option<(Bits, usize)> {
        self.decode_many(&[(llr, syndrome)], max_iter)
            .pop()
            .flatten()
    }

    /// Decodes several frames of this code together, one per SIMD lane (up to [`LANES`] at
    /// a time; more are taken in groups): the checks' arithmetic runs on all lanes at once
    /// over the one graph walk, and each lane stops by the same rules as [`Self::decode`]
    /// (a finished lane is carried along until the group's last one finishes). Each frame's
    /// result is [`Self::decode`]'s on it, bit for bit: the lanes do the same IEEE
    /// operations in the same order.
    pub fn decode_many(
        &self,
        frames: &[(&[f32], &Bits)],
        max_iter: usize,
    ) -> Vec<Option<(Bits, usize)>> {
        for (llr, syndrome) in frames {
            assert_eq!(llr.len(), self.len(), "LLRs for a word of the wrong length");
            assert_eq!(
                syndrome.len(),
                self.syndrome_len(),
                "syndrome of the wrong length"
            );
        }
        let mut out = Vec::with_capacity(frames.len());
        for group in frames.chunks(LANES) {
            out.extend(match group.len() {
                1 => self.decode_lanes::<1>(group, max_iter),
                2..=4 => self.decode_lanes::<4>(group, max_iter),
                _ => self.decode_lanes::<LANES>(group, max_iter),
            });
        }
        out
    }

    /// [`Self::decode_lanes_generic`] compiled for AVX2 where the CPU has it.
    fn decode_lanes<const L: usize>(
        &self,
        frames: &[(&[f32], &Bits)],
        max_iter: usize,
    ) -> Vec<Option<(Bits, usize)>> {
        #[cfg(target_arch = "x86_64")]
        if L > 1 && std::is_x86_feature_detected!("avx2") {
            return avx2::decode_lanes::<L>(self, frames, max_iter);
        }
        self.decode_lanes_generic::<L>(frames, max_iter)
    }

    /// Layered sum-product on `frames.len() ≤ L` frames in `L` lanes (lanes past the
    /// frames carry zero LLRs and are finished from the start).
    #[inline(always)]
    fn decode_lanes_generic<const L: usize>(
        &self,
        frames: &[(&[f32], &Bits)],
        max_iter: usize,
    ) -> Vec<Option<(Bits, usize)>> {
        const CLAMP: f32 = 1.0 - 1e-6;
        // Every core bit must be this sure before the decoder stops: a stable word that
        // satisfies the precode but still has weak bits is, at low SNR, often a wrong one.
        const SETTLED: f32 = 8.0;
        // Progress: the core posteriors' mean magnitude, every STRIDE iterations. A frame
        // whose mean has not grown by a fifth in three strides is stuck at a fixed point
        // (measured at SNR 0.011 and 0.03: failing frames plateau within ±10 % for hundreds
        // of iterations, and 1000 iterations rescue none of them; succeeding ones may
        // stall for two strides, then take off): give up on it from iteration 100 rather
        // than spend the rest of `max_iter`.
        const STRIDE: usize = 25;
        let (k, lanes) = (self.k, frames.len());
        debug_assert!(lanes <= L);
        let lane_llr = |l: usize, i: usize| frames.get(l).map_or(0.0, |f| f.0[i]);
        let lane_syn = |l: usize, c: usize| frames.get(l).is_some_and(|f| f.1.get(c));
        let mut total: Vec<[f32; L]> = (0..k)
            .map(|b| core::array::from_fn(|l| lane_llr(l, b)))
            .collect();
        let mut msg = vec![[0f32; L]; self.idx.len()];
        // Each check's fixed factor: a type-2 check's degree-one bit as tanh(L/2) with the
        // syndrome's sign; a precode check's syndrome sign.
        let head: Vec<[f32; L]> = (0..self.syndrome_len())
            .map(|c| {
                core::array::from_fn(|l| {
                    let t = if c < self.m {
                        tanh_half(lane_llr(l, k + c))
                    } else {
                        1.0
                    };
                    if lane_syn(l, c) {
                        -t
                    } else {
                        t
                    }
                })
            })
            .collect();
        let max_d = self
            .ptr
            .windows(2)
            .map(|w| (w[1] - w[0]) as usize)
            .max()
            .unwrap_or(0);
        // A check's edges × lanes, flat (edge-major), so that the transcendental steps are
        // plain loops over a slice, which vectorise.
        let mut q = vec![0f32; max_d * L];
        let mut t = vec![0f32; max_d * L];
        let mut z = vec![0f32; max_d * L];
        let mut suffix = vec![[0f32; L]; max_d + 1];
        let mut hard: Vec<Bits> = (0..lanes).map(|_| Bits::zeros(k)).collect();
        let mut stable = [0u32; L];
        let mut means = [[0f64; 3]; L];
        let mut done: Vec<Option<Option<(Bits, usize)>>> = (0..lanes).map(|_| None).collect();
        for it in 1..=max_iter {
            for (c, head) in head.iter().enumerate() {
                let (lo, hi) = (self.ptr[c] as usize, self.ptr[c + 1] as usize);
                let d = hi - lo;
                let (idx, msg) = (&self.idx[lo..hi], &mut msg[lo..hi]);
                let (q, t, z) = (&mut q[..d * L], &mut t[..d * L], &mut z[..d * L]);
                for i in 0..d {
                    let tot = &total[idx[i] as usize];
                    for l in 0..L {
                        q[i * L + l] = tot[l] - msg[i][l];
                    }
                }
                for (t, &q) in t.iter_mut().zip(q.iter()) {
                    *t = tanh_half(q);
                }
                let suffix = &mut suffix[..=d];
                suffix[d] = [1.0; L];
                for i in (0..d).rev() {
                    for l in 0..L {
                        suffix[i][l] = suffix[i + 1][l] * t[i * L + l];
                    }
                }
                let mut prefix = *head;
                for i in 0..d {
                    for l in 0..L {
                        z[i * L + l] = prefix[l] * suffix[i + 1][l];
                        prefix[l] *= t[i * L + l];
                    }
                }
                for z in z.iter_mut() {
                    let v = z.clamp(-CLAMP, CLAMP);
                    *z = ln_fast((1.0 + v) / (1.0 - v));
                }
                for i in 0..d {
                    let tot = &mut total[idx[i] as usize];
                    for l in 0..L {
                        let r = z[i * L + l];
                        msg[i][l] = r;
                        tot[l] = q[i * L + l] + r;
                    }
                }
            }
            // Decisions, the precode and progress, lane by lane.
            for l in 0..lanes {
                if done[l].is_some() {
                    continue;
                }
                let (hard, syndrome) = (&mut hard[l], frames[l].1);
                let mut changed = false;
                let mut weakest = f32::INFINITY;
                for (b, tot) in total.iter().enumerate() {
                    let v = tot[l];
                    let bit = v < 0.0;
                    weakest = weakest.min(v.abs());
                    if hard.get(b) != bit {
                        hard.set(b, bit);
                        changed = true;
                    }
                }
                stable[l] = if changed { 0 } else { stable[l] + 1 };
                if stable[l] >= 2 && weakest >= SETTLED && self.precode_holds(hard, syndrome) {
                    done[l] = Some(Some((self.complete(hard, syndrome), it)));
                    continue;
                }
                if it % STRIDE == 0 {
                    let mean =
                        total.iter().map(|v| v[l].abs() as f64).sum::<f64>() / k.max(1) as f64;
                    let slot = (it / STRIDE) % 3;
                    if it >= 4 * STRIDE && mean < 1.2 * means[l][slot] {
                        done[l] = Some(None);
                        continue;
                    }
                    means[l][slot] = mean;
                }
            }
            if done.iter().all(Option::is_some) {
                break;
            }
        }
        done.into_iter().map(Option::flatten).collect()
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

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The one place the CV decoder uses `unsafe`: the lanes compiled for AVX2, called
    //! behind a run-time feature check.
    #![allow(unsafe_code)]
    #![deny(clippy::undocumented_unsafe_blocks)]
    use super::MetCode;
    use qkdnet_core::Bits;

    /// [`MetCode::decode_lanes_generic`] with AVX2; the caller has checked the CPU has it.
    pub(super) fn decode_lanes<const L: usize>(
        code: &MetCode,
        frames: &[(&[f32], &Bits)],
        max_iter: usize,
    ) -> Vec<Option<(Bits, usize)>> {
        debug_assert!(std::is_x86_feature_detected!("avx2"));
        // SAFETY: only called after `is_x86_feature_detected!("avx2")` returned true.
        unsafe { lanes_avx2::<L>(code, frames, max_iter) }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn lanes_avx2<const L: usize>(
        code: &MetCode,
        frames: &[(&[f32], &Bits)],
        max_iter: usize,
    ) -> Vec<Option<(Bits, usize)>> {
        code.decode_lanes_generic::<L>(frames, max_iter)
    }
}

/// Frames [`MetCode::decode_many`] decodes together (AVX2: 8 single-precision lanes).
pub const LANES: usize = 8;

/// `2^x` for `|x| < 126`, relative error below 2e−6: the integer part into the exponent
/// bits, `2^f` on `[0, 1)` by its degree-7 Taylor polynomial in `f ln 2`. Branch-free, so
/// that lanes vectorise.
#[inline(always)]
fn exp2_fast(x: f32) -> f32 {
    let x = x.clamp(-126.0, 126.0);
    // floor without a libm call or a saturating conversion (which keeps lanes from
    // vectorising): adding 1.5·2²³ rounds x to an integer in the mantissa's low bits,
    // then step down where that rounded up.
    const MAGIC: f32 = 12_582_912.0;
    let y = x + MAGIC;
    let n = (y.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let n = n - i32::from(y - MAGIC > x);
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

    /// Frames decoded together in lanes give each frame's lone result, words and
    /// iterations, whether they decode or not (a group of 8 mixing both, and a group of 3
    /// in 4 lanes).
    #[test]
    fn lanes_decode_each_frame_as_it_decodes_alone() {
        let ens = design::design(&design::DesignTarget::at(0.03)).expect("design");
        let c = MetCode::new(&ens, 100_000, 3).expect("code");
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let words: Vec<(Bits, Vec<f32>)> =
            [0.036, 0.04, 0.018, 0.033, 0.036, 0.02, 0.05, 0.036, 0.036]
                .iter()
                .map(|&snr| frame(c.len(), snr, &mut rng))
                .collect();
        let syn: Vec<Bits> = words.iter().map(|(b, _)| c.syndrome(b)).collect();
        let frames: Vec<(&[f32], &Bits)> = words
            .iter()
            .zip(&syn)
            .map(|((_, llr), s)| (llr.as_slice(), s))
            .collect();
        let alone: Vec<_> = frames.iter().map(|(l, s)| c.decode(l, s, 200)).collect();
        assert!(alone.iter().filter(|r| r.is_some()).count() >= 5);
        assert!(alone.iter().any(Option::is_none));
        let same = |a: &[Option<(Bits, usize)>], b: &[Option<(Bits, usize)>]| {
            a.len() == b.len()
                && a.iter().zip(b).all(|(x, y)| match (x, y) {
                    (Some((w, i)), Some((v, j))) => w.words() == v.words() && i == j,
                    (None, None) => true,
                    _ => false,
                })
        };
        assert!(same(&c.decode_many(&frames, 200), &alone));
        assert!(same(&c.decode_many(&frames[2..5], 200), &alone[2..5]));
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
