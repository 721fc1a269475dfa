//! Time synchronisation from the quantum signal alone: no shared clock, no auxiliary sync
//! light (Lecaron et al. 2025: the Nice network synchronises on its photon pairs).
//!
//! The two taggers' readings are related by a clock model, Bob's reading of the partner of
//! an Alice detection at Alice time `t` being
//!
//! `t_B ≈ t + Δ + δ (t − t_ref)`
//!
//! (`Δ` the offset at `t_ref`, fibre delays included; `δ` the relative frequency error).
//! [`acquire`] finds `Δ` (unknown up to ±1 s by default) and `δ` (up to ±1 ppm) from a few
//! seconds of both streams, in three stages:
//!
//! 1. **coarse**: both streams binned at `coarse_bin_ps` (5 µs) over the acquisition, the
//!    histograms' means removed, and cross-correlated by FFT over the whole offset range;
//!    the pairs make a peak of height `R T` over a background of standard deviation
//!    `√(T/b) · √(S_A b · S_B b)` (rates `R` of pairs, `S` of singles), so the
//!    signal-to-noise ratio is `R √T / √(S_A S_B b)` — for a pair source `η_B √(T/b)`,
//!    whatever the pump: about 20 at the Nice 50 km link after 5 s. A drift `δ T` of up to
//!    two bins only spreads the peak over adjacent lags, which are summed;
//! 2. **medium**: short segments (`segment_ps`, 100 ms, so that `δ` moves the peak by less
//!    than a bin) binned at `medium_bin_ps` (100 ns) and cross-correlated by FFT within the
//!    coarse uncertainty; a straight-line fit of the segments' offsets gives `Δ` and `δ`;
//! 3. **fine**: coincidences counted directly (sorted sweep) within a few hundred ps of the
//!    model, histogrammed at 4 ps, the peak's centroid per sub-segment refit: picoseconds.
//!
//! [`Tracker`] then follows the peak window by window (every 0.5 s in Nice), correcting the
//! offset and the rate so the peak stays centred, and says when the lock is lost.

use qkdnet_core::timetag::TimeTag;
use realfft::num_complex::Complex;
use realfft::RealFftPlanner;

/// Settings of [`acquire`] and [`Tracker`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyncConfig {
    /// Largest |Δ| searched, ps.
    pub max_offset_ps: i64,
    /// Largest |δ| searched.
    pub max_frequency_error: f64,
    /// Data used for acquisition (from the streams' common start), ps.
    pub acquisition_ps: i64,
    /// Coarse bin, ps.
    pub coarse_bin_ps: i64,
    /// Medium segment length, ps.
    pub segment_ps: i64,
    /// Medium bin, ps.
    pub medium_bin_ps: i64,
    /// Fine histogram bin, ps.
    pub fine_bin_ps: i64,
    /// Half-width of the window searched at the fine stage and when tracking, ps.
    pub fine_window_ps: i64,
    /// Half-width of the cut around the peak for its centroid, ps: about 4 standard
    /// deviations of the coincidence jitter, and short of the test arm's side peaks (±1/FSR).
    pub peak_halfwidth_ps: i64,
    /// Smallest peak signal-to-noise ratio accepted (in standard deviations of the
    /// background); below it the data do not show the peak.
    pub min_snr: f64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            max_offset_ps: 1_000_000_000_000,
            max_frequency_error: 1e-6,
            acquisition_ps: 5_000_000_000_000,
            coarse_bin_ps: 5_000_000,
            segment_ps: 100_000_000_000,
            medium_bin_ps: 100_000,
            fine_bin_ps: 4,
            fine_window_ps: 2_000,
            peak_halfwidth_ps: 250,
            min_snr: 8.0,
        }
    }
}

/// Bob's clock against Alice's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockModel {
    /// Alice time at which `offset_ps` holds, ps.
    pub reference_ps: i64,
    /// Δ: Bob's reading minus Alice's for a pair at `reference_ps`, ps.
    pub offset_ps: f64,
    /// δ: relative frequency error of Bob's clock.
    pub rate: f64,
}

impl ClockModel {
    /// Bob's expected reading of the partner of an Alice detection at `t_ps`.
    pub fn predict(&self, t_ps: i64) -> f64 {
        t_ps as f64 + self.offset_ps + self.rate * (t_ps - self.reference_ps) as f64
    }

    /// The model re-expressed at another reference time.
    pub fn at(&self, reference_ps: i64) -> Self {
        Self {
            reference_ps,
            offset_ps: self.predict(reference_ps) - reference_ps as f64,
            rate: self.rate,
        }
    }
}

/// What [`acquire`] found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Acquisition {
    /// The clock model, referenced to the end of the data used.
    pub model: ClockModel,
    /// Signal-to-noise ratio of the coarse peak.
    pub coarse_snr: f64,
    /// Coincidences in the fine peak over the acquisition.
    pub coincidences: u64,
    /// Standard deviation of the fine peak (the coincidence jitter), ps.
    pub peak_rms_ps: f64,
    /// Data used, ps.
    pub data_ps: i64,
}

/// Why synchronisation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// Too little data to search the configured ranges.
    #[error("not enough data: {have_ps} ps of streams, acquisition needs {need_ps} ps")]
    NotEnoughData {
        /// Data available, ps.
        have_ps: i64,
        /// Data needed, ps.
        need_ps: i64,
    },
    /// The correlation peak is not above the noise.
    #[error("no coincidence peak at the {stage} stage: signal-to-noise {snr:.1} below {needed:.1} (more data or a brighter source needed)")]
    NoPeak {
        /// Which stage.
        stage: &'static str,
        /// The best peak's signal-to-noise ratio.
        snr: f64,
        /// The threshold.
        needed: f64,
    },
    /// A setting is out of range.
    #[error("sync setting {field}: {reason}")]
    Config {
        /// Which one.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

fn histogram(tags: &[TimeTag], start: i64, bin: i64, n: usize) -> Vec<f64> {
    let mut h = vec![0.0; n];
    let lo = tags.partition_point(|t| t.time_ps < start);
    for t in &tags[lo..] {
        let k = (t.time_ps - start) / bin;
        if k as usize >= n {
            break;
        }
        h[k as usize] += 1.0;
    }
    h
}

/// `c[k] = Σ_i a[i] b[i + k]` for `k` in `0..=b.len() − a.len()`, by FFT.
fn correlate(planner: &mut RealFftPlanner<f64>, a: &[f64], b: &[f64]) -> Vec<f64> {
    let n = (a.len() + b.len()).next_power_of_two();
    let fwd = planner.plan_fft_forward(n);
    let inv = planner.plan_fft_inverse(n);
    let mut pa = vec![0.0; n];
    pa[..a.len()].copy_from_slice(a);
    let mut pb = vec![0.0; n];
    pb[..b.len()].copy_from_slice(b);
    let mut fa = fwd.make_output_vec();
    let mut fb = fwd.make_output_vec();
    // Lengths are the planner's own, so these cannot fail.
    let _ = fwd.process(&mut pa, &mut fa);
    let _ = fwd.process(&mut pb, &mut fb);
    let mut prod: Vec<Complex<f64>> = fa
        .iter()
        .zip(&fb)
        .map(|(x, y)| x.conj() * y / n as f64)
        .collect();
    // The imaginary parts of the DC and Nyquist terms must be zero for the inverse.
    if let Some(first) = prod.first_mut() {
        first.im = 0.0;
    }
    if let Some(last) = prod.last_mut() {
        last.im = 0.0;
    }
    let mut out = inv.make_output_vec();
    let _ = inv.process(&mut prod, &mut out);
    out.truncate(b.len() - a.len() + 1);
    out
}

/// Removes a histogram's mean over the bins its stream covers (`[first, last]` in time),
/// and zeroes the bins it does not cover. Correlating mean-free histograms leaves a
/// background of variance `n m_a m_b` per lag instead of `n (m² + 2m³)`, which at MHz
/// rates and µs bins (tens of counts per bin) is what makes the peak visible.
fn remove_mean(h: &mut [f64], start: i64, bin: i64, first: i64, last: i64) {
    let lo = ((first - start + bin - 1) / bin).clamp(0, h.len() as i64) as usize;
    let hi = ((last - start) / bin).clamp(0, h.len() as i64) as usize;
    if hi <= lo {
        h.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    let mean = h[lo..hi].iter().sum::<f64>() / (hi - lo) as f64;
    for (i, v) in h.iter_mut().enumerate() {
        *v = if (lo..hi).contains(&i) {
            *v - mean
        } else {
            0.0
        };
    }
}

/// The peak of a correlation of mean-free histograms and its signal-to-noise ratio.
///
/// Drift during the data smears the peak over up to three adjacent lags, so sums of 1, 2
/// and 3 adjacent lags are each scored against their own spread over the other lags, and
/// the best score wins (a single-lag peak keeps its full ratio; a split one is summed).
fn peak(c: &[f64]) -> (usize, f64) {
    let mut best = (0usize, f64::MIN);
    for width in 1..=3usize {
        if c.len() < width + 4 {
            continue;
        }
        let lags = c.len() + 1 - width;
        let z: Vec<f64> = (0..lags).map(|k| c[k..k + width].iter().sum()).collect();
        let top = (0..lags).fold(0, |b, k| if z[k] > z[b] { k } else { b });
        let (mut sum, mut sq, mut m) = (0.0, 0.0, 0.0);
        for (k, &v) in z.iter().enumerate() {
            if k + 2 + width >= top && k <= top + 2 + width {
                continue;
            }
            sum += v;
            sq += v * v;
            m += 1.0;
        }
        if m < 2.0 {
            continue;
        }
        let mean = sum / m;
        let sd = (sq / m - mean * mean).max(1e-300).sqrt();
        let score = (z[top] - mean) / sd;
        if score > best.1 {
            // The lag of the group's largest member.
            let k = (top..top + width).fold(top, |b, k| if c[k] > c[b] { k } else { b });
            best = (k, score);
        }
    }
    (best.0, best.1.max(0.0))
}

/// Finds the clock model from both streams (each time ordered, on its own clock).
pub fn acquire(
    alice: &[TimeTag],
    bob: &[TimeTag],
    cfg: &SyncConfig,
) -> Result<Acquisition, SyncError> {
    let cfg_err = |field: &'static str, reason: String| SyncError::Config { field, reason };
    if cfg.coarse_bin_ps <= 0 || cfg.medium_bin_ps <= 0 || cfg.fine_bin_ps <= 0 {
        return Err(cfg_err("bins", "bins must be > 0 ps".into()));
    }
    if !(0.0..1e-3).contains(&cfg.max_frequency_error) {
        return Err(cfg_err(
            "max_frequency_error",
            format!("{} is outside [0, 1e-3)", cfg.max_frequency_error),
        ));
    }
    let (Some(a0), Some(a1)) = (alice.first(), alice.last()) else {
        return Err(SyncError::NotEnoughData {
            have_ps: 0,
            need_ps: cfg.acquisition_ps,
        });
    };
    let t0 = a0.time_ps;
    let have = a1.time_ps - t0;
    if have < cfg.acquisition_ps {
        return Err(SyncError::NotEnoughData {
            have_ps: have,
            need_ps: cfg.acquisition_ps,
        });
    }
    let t_acq = cfg.acquisition_ps;
    let mut planner = RealFftPlanner::new();

    // 1. Coarse: the whole offset range at coarse_bin_ps.
    let b1 = cfg.coarse_bin_ps;
    let r = cfg.max_offset_ps;
    let na = (t_acq / b1) as usize;
    let nb = ((t_acq + 2 * r) / b1) as usize + 1;
    let (b_first, b_last) = match (bob.first(), bob.last()) {
        (Some(f), Some(l)) => (f.time_ps, l.time_ps),
        _ => {
            return Err(SyncError::NotEnoughData {
                have_ps: 0,
                need_ps: t_acq,
            })
        }
    };
    let c = if na <= COARSE_CHUNK_BINS {
        let mut ha = histogram(alice, t0, b1, na);
        let mut hb = histogram(bob, t0 - r, b1, nb);
        remove_mean(&mut ha, t0, b1, t0, t0 + t_acq);
        remove_mean(&mut hb, t0 - r, b1, b_first, b_last);
        correlate(&mut planner, &ha, &hb)
    } else {
        correlate_long(&mut planner, alice, bob, t0, na, b1, -r, nb - na + 1)
    };
    let (k, snr) = peak(&c);
    if snr < cfg.min_snr {
        return Err(SyncError::NoPeak {
            stage: "coarse",
            snr,
            needed: cfg.min_snr,
        });
    }
    // Bob bin i + k against Alice bin i: Bob − Alice = k b1 − r (± one bin).
    let coarse = (k as i64 * b1 - r) as f64;

    // 2. Medium: segments spread over the acquisition, each within the coarse uncertainty.
    let b2 = cfg.medium_bin_ps;
    let w = b1 * 2 + (cfg.max_frequency_error * t_acq as f64) as i64 + b2;
    let seg = cfg.segment_ps.min(t_acq);
    let n_seg = ((t_acq / seg) as usize).clamp(1, 12);
    let stride = (t_acq - seg) / (n_seg as i64).max(2).saturating_sub(1).max(1);
    let mut points: Vec<(f64, f64, f64)> = Vec::new(); // (mid, offset, weight)
    for j in 0..n_seg {
        let s = t0 + j as i64 * stride;
        let na = (seg / b2) as usize;
        let nb = ((seg + 2 * w) / b2) as usize + 1;
        let c = if na <= COARSE_CHUNK_BINS {
            let mut ha = histogram(alice, s, b2, na);
            let mut hb = histogram(bob, s + coarse as i64 - w, b2, nb);
            remove_mean(&mut ha, s, b2, s, s + seg);
            remove_mean(&mut hb, s + coarse as i64 - w, b2, b_first, b_last);
            correlate(&mut planner, &ha, &hb)
        } else {
            let lag0 = coarse as i64 - w;
            correlate_long(&mut planner, alice, bob, s, na, b2, lag0, nb - na + 1)
        };
        let (k, snr) = peak(&c);
        if snr >= cfg.min_snr.min(6.0) {
            let off = coarse - w as f64 + k as f64 * b2 as f64;
            points.push(((s + seg / 2) as f64, off, snr * snr));
        }
    }
    if points.len() < 2 {
        return Err(SyncError::NoPeak {
            stage: "medium",
            snr: 0.0,
            needed: cfg.min_snr.min(6.0),
        });
    }
    let t_ref = t0 + t_acq / 2;
    let (off, rate) = fit_line(&points, t_ref as f64);
    let mut model = ClockModel {
        reference_ps: t_ref,
        offset_ps: off,
        rate,
    };

    // 3. Fine: sub-segment centroids within narrowing windows. Each pass's cut (`reach`)
    // is wide enough for the peak as the previous model smears it over a sub-segment, so
    // the centroid is unbiased, and each refit narrows the smear for the next.
    let mut coincidences = 0;
    let mut peak_rms = 0.0;
    let w1 = (3 * b2).max(cfg.fine_window_ps);
    let passes = [
        (w1, w1 / 3, (w1 / 2000).max(cfg.fine_bin_ps)),
        (
            20_000.max(cfg.fine_window_ps),
            5_000,
            20.max(cfg.fine_bin_ps),
        ),
        (cfg.fine_window_ps, cfg.peak_halfwidth_ps, cfg.fine_bin_ps),
    ];
    for (window, reach, bin) in passes {
        let parts = 10;
        let mut pts = Vec::new();
        let (mut n_all, mut rms_acc) = (0u64, 0.0);
        for p in 0..parts {
            let s = t0 + p * t_acq / parts;
            let e = s + t_acq / parts;
            let hist = residuals(alice, bob, &model, s, e, window, bin);
            if let Some(c) = centroid(&hist, window, bin, reach) {
                pts.push((
                    ((s + e) / 2) as f64,
                    model.predict((s + e) / 2) - ((s + e) / 2) as f64 + c.mean,
                    c.count,
                ));
                n_all += c.count as u64;
                rms_acc += c.var * c.count;
            }
        }
        if pts.len() < 2 {
            return Err(SyncError::NoPeak {
                stage: "fine",
                snr: 0.0,
                needed: cfg.min_snr,
            });
        }
        let (off, rate) = fit_line(&pts, t_ref as f64);
        model = ClockModel {
            reference_ps: t_ref,
            offset_ps: off,
            rate,
        };
        coincidences = n_all;
        peak_rms = (rms_acc / n_all.max(1) as f64).sqrt();
    }
    Ok(Acquisition {
        model: model.at(t0 + t_acq),
        coarse_snr: snr,
        coincidences,
        peak_rms_ps: peak_rms,
        data_ps: t_acq,
    })
}

/// Alice bins beyond which a correlation is computed by [`correlate_long`].
const COARSE_CHUNK_BINS: usize = 1 << 21;

/// Pair counts below which [`correlate_long`] counts tag pairs directly.
const DIRECT_PAIRS: f64 = 5e7;

/// `c[k] = Σ_i (a_i − m_a)(b_{i+k} − m_b)` for long acquisitions (minutes at high loss):
/// Alice's `na` bins of `bin` ps from `a_start`, Bob's bins from `a_start + lag0`,
/// lags `0..reach`.
///
/// Sparse streams (few Bob tags within the lag range of each Alice tag) are correlated by
/// counting tag pairs per lag bin, which differs from the mean-free form by a constant
/// over the lags, immaterial to [`peak`]. Dense ones are correlated by FFT in chunks of
/// Alice's data against the stretch of Bob's each chunk reaches, summed (correlation is
/// additive over Alice's bins), with the streams' means over the whole acquisition; memory
/// then follows the lag range, not the integration time.
#[allow(clippy::too_many_arguments)]
fn correlate_long(
    planner: &mut RealFftPlanner<f64>,
    alice: &[TimeTag],
    bob: &[TimeTag],
    a_start: i64,
    na: usize,
    bin: i64,
    lag0: i64,
    reach: usize,
) -> Vec<f64> {
    let a_end = a_start + na as i64 * bin;
    let range = |tags: &[TimeTag], lo: i64, hi: i64| {
        tags.partition_point(|t| t.time_ps < lo)..tags.partition_point(|t| t.time_ps < hi)
    };
    let ar = range(alice, a_start, a_end);
    let (b_first, b_last) = match (bob.first(), bob.last()) {
        (Some(f), Some(l)) => (f.time_ps, l.time_ps),
        _ => return vec![0.0; reach],
    };
    let span = reach as i64 * bin;
    let b_rate = bob.len() as f64 / (b_last - b_first).max(1) as f64;
    let mut acc = vec![0.0; reach];
    if ar.len() as f64 * b_rate * span as f64 <= DIRECT_PAIRS {
        let mut lo = 0usize;
        for t in &alice[ar] {
            let from = t.time_ps + lag0;
            while lo < bob.len() && bob[lo].time_ps < from {
                lo += 1;
            }
            for u in &bob[lo..] {
                let k = ((u.time_ps - from) / bin) as usize;
                if k >= reach {
                    break;
                }
                acc[k] += 1.0;
            }
        }
        return acc;
    }
    let mean_a = ar.len() as f64 / na as f64;
    let b_bins = ((b_last - b_first) / bin).max(1);
    let mean_b = range(bob, b_first, b_first + b_bins * bin).len() as f64 / b_bins as f64;
    let chunk = COARSE_CHUNK_BINS.max(2 * reach);
    let mut i = 0;
    while i < na {
        let len = chunk.min(na - i);
        let start = a_start + i as i64 * bin;
        let mut ha = histogram(alice, start, bin, len);
        ha.iter_mut().for_each(|v| *v -= mean_a);
        let bstart = start + lag0;
        let mut hb = histogram(bob, bstart, bin, len + reach - 1);
        for (j, v) in hb.iter_mut().enumerate() {
            let t = bstart + j as i64 * bin;
            *v = if t >= b_first && t + bin <= b_last {
                *v - mean_b
            } else {
                0.0
            };
        }
        for (a, c) in acc.iter_mut().zip(correlate(planner, &ha, &hb)) {
            *a += c;
        }
        i += len;
    }
    acc
}

/// Weighted least-squares line `y = a + b (x − x0)` through `(x, y, weight)`.
fn fit_line(points: &[(f64, f64, f64)], x0: f64) -> (f64, f64) {
    let (mut sw, mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(x, y, w) in points {
        let x = x - x0;
        sw += w;
        sx += w * x;
        sy += w * y;
        sxx += w * x * x;
        sxy += w * x * y;
    }
    let det = sw * sxx - sx * sx;
    if det.abs() < 1e-300 {
        return (sy / sw, 0.0);
    }
    let b = (sw * sxy - sx * sy) / det;
    ((sy - b * sx) / sw, b)
}

/// Histogram of Bob − predicted for pairs with Alice times in `[start, end)` and
/// residuals within ±`window`, `bin` wide.
fn residuals(
    alice: &[TimeTag],
    bob: &[TimeTag],
    model: &ClockModel,
    start: i64,
    end: i64,
    window: i64,
    bin: i64,
) -> Vec<u64> {
    let n = (2 * window / bin) as usize + 1;
    let mut h = vec![0u64; n];
    let a_lo = alice.partition_point(|t| t.time_ps < start);
    let a_hi = alice.partition_point(|t| t.time_ps < end);
    let first = model.predict(start) as i64 - window;
    let mut j = bob.partition_point(|t| t.time_ps < first);
    for a in &alice[a_lo..a_hi] {
        let p = model.predict(a.time_ps);
        let lo = p - window as f64;
        while j < bob.len() && (bob[j].time_ps as f64) < lo {
            j += 1;
        }
        let mut k = j;
        while k < bob.len() {
            let d = bob[k].time_ps as f64 - p;
            if d > window as f64 {
                break;
            }
            let idx = ((d + window as f64) / bin as f64) as usize;
            if idx < n {
                h[idx] += 1;
            }
            k += 1;
        }
    }
    h
}

/// A peak's centroid (ps from the window's centre), variance and count, background
/// removed; `None` when there is no clear peak.
#[derive(Debug, Clone, Copy)]
struct Peak {
    mean: f64,
    var: f64,
    count: f64,
}

fn centroid(h: &[u64], window: i64, bin: i64, halfwidth: i64) -> Option<Peak> {
    let n = h.len();
    if n < 8 {
        return None;
    }
    // Background: the outer quarters' mean level.
    let q = n / 4;
    let bg = (h[..q].iter().sum::<u64>() + h[n - q..].iter().sum::<u64>()) as f64 / (2 * q) as f64;
    // Smooth over ~40 ps (prefix sums) to find the maximum robustly.
    let half = ((20 / bin).max(1)) as usize;
    let mut prefix = Vec::with_capacity(n + 1);
    prefix.push(0u64);
    for &v in h {
        prefix.push(prefix.last().copied().unwrap_or(0) + v);
    }
    let smooth = |i: usize| -> f64 {
        let lo = i.saturating_sub(half);
        let hi = (i + half + 1).min(n);
        (prefix[hi] - prefix[lo]) as f64 - bg * (hi - lo) as f64
    };
    let mut top = 0;
    let mut top_v = f64::MIN;
    for i in 0..n {
        let v = smooth(i);
        if v > top_v {
            top_v = v;
            top = i;
        }
    }
    // Mean shift: the centroid within ±reach of the current centre, re-centred until it
    // settles, so the cut stays symmetric about the peak (a cut off-centre would take
    // more of one of the analysers' side peaks, 400 ps away, than of the other).
    let reach = ((halfwidth / bin).max(2)) as usize;
    let mut centre = top as f64;
    let (mut w, mut m1, mut m2, mut lo, mut hi) = (0.0, 0.0, 0.0, 0, 0);
    for _ in 0..6 {
        let c = centre.round() as usize;
        lo = c.saturating_sub(reach);
        hi = (c + reach + 1).min(n);
        (w, m1, m2) = (0.0, 0.0, 0.0);
        for (i, &v) in h.iter().enumerate().take(hi).skip(lo) {
            let x = i as f64 - centre;
            let c = v as f64 - bg;
            w += c;
            m1 += c * x;
            m2 += c * x * x;
        }
        if w <= 0.0 {
            return None;
        }
        let shift = m1 / w;
        centre += shift;
        if shift.abs() < 0.05 {
            break;
        }
    }
    // A peak needs to stand out: at least 5 standard deviations of its background.
    let noise = (bg * (hi - lo) as f64).sqrt().max(1.0);
    if w < 5.0 * noise || w <= 0.0 {
        return None;
    }
    // `centre` already includes the last shift; bin i's counts sit at its middle, i + ½.
    let var_bins = (m2 / w - (m1 / w).powi(2)).max(0.0);
    Some(Peak {
        mean: (centre + 0.5) * bin as f64 - window as f64,
        var: var_bins * (bin * bin) as f64,
        count: w,
    })
}

/// One tracking step's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackStep {
    /// Where the peak was found relative to the model's prediction, ps (`None`: no peak).
    pub residual_ps: Option<f64>,
    /// Coincidences in the peak.
    pub coincidences: f64,
    /// Whether the lock holds (the peak was found in this step or in one of the last
    /// `max_misses` ones).
    pub locked: bool,
}

/// Follows the coincidence peak window by window after [`acquire`].
#[derive(Debug, Clone)]
pub struct Tracker {
    model: ClockModel,
    cfg: SyncConfig,
    /// Proportional gain on the offset (fraction of each residual corrected at once).
    pub offset_gain: f64,
    /// Integral gain on the rate (fraction of residual / window corrected per step).
    pub rate_gain: f64,
    /// Consecutive steps without a peak before the lock counts as lost.
    pub max_misses: u32,
    misses: u32,
}

impl Tracker {
    /// Starts from an acquisition. Gains: the offset correction removes the whole
    /// measured residual each step (bandwidth ≈ 1 / step), the rate correction a quarter
    /// of the residual's slope (a critically damped second-order loop for steps of equal
    /// length).
    pub fn new(acq: &Acquisition, cfg: SyncConfig) -> Self {
        Self {
            model: acq.model,
            cfg,
            offset_gain: 1.0,
            rate_gain: 0.25,
            max_misses: 4,
            misses: 0,
        }
    }

    /// The current model.
    pub fn model(&self) -> ClockModel {
        self.model
    }

    /// Processes the Alice window `[start, end)` (Bob's stream must extend past the
    /// prediction for `end` plus the window).
    pub fn update(
        &mut self,
        alice: &[TimeTag],
        bob: &[TimeTag],
        start: i64,
        end: i64,
    ) -> TrackStep {
        let window = self.cfg.fine_window_ps;
        let hist = residuals(
            alice,
            bob,
            &self.model,
            start,
            end,
            window,
            self.cfg.fine_bin_ps,
        );
        match centroid(
            &hist,
            window,
            self.cfg.fine_bin_ps,
            self.cfg.peak_halfwidth_ps,
        ) {
            Some(p) => {
                self.misses = 0;
                // The residual e was measured at the window's middle. The rate takes
                // k_r e / Δt; the offset, re-referenced at the window's end, takes k_o e
                // plus the new rate's share over the half window.
                let dt = (end - start) as f64;
                let e = p.mean;
                let m = self.model.at(end);
                self.model = ClockModel {
                    reference_ps: end,
                    offset_ps: m.offset_ps + (self.offset_gain + self.rate_gain / 2.0) * e,
                    rate: m.rate + self.rate_gain * e / dt,
                };
                TrackStep {
                    residual_ps: Some(e),
                    coincidences: p.count,
                    locked: true,
                }
            }
            None => {
                self.misses += 1;
                // Coast on the model.
                TrackStep {
                    residual_ps: None,
                    coincidences: 0.0,
                    locked: self.misses <= self.max_misses,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Two synthetic streams: pairs at `pairs_hz` (Gaussian jitter `sigma` per side) plus
    /// uncorrelated singles at `noise_hz` each; Bob's clock `offset` and `rate` off.
    fn streams(
        seconds: f64,
        pairs_hz: f64,
        noise_hz: f64,
        sigma: f64,
        offset: f64,
        rate: f64,
        seed: u64,
    ) -> (Vec<TimeTag>, Vec<TimeTag>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let span = seconds * 1e12;
        let mut a = Vec::new();
        let mut b = Vec::new();
        let normal = |rng: &mut rand::rngs::StdRng| -> f64 {
            let (u, v): (f64, f64) = (rng.gen::<f64>().max(1e-300), rng.gen());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        };
        let n_pairs = (pairs_hz * seconds) as usize;
        for _ in 0..n_pairs {
            let t = rng.gen::<f64>() * span + 1e9;
            a.push(t + sigma * normal(&mut rng));
            b.push(t + sigma * normal(&mut rng));
        }
        for _ in 0..(noise_hz * seconds) as usize {
            a.push(rng.gen::<f64>() * span + 1e9);
            b.push(rng.gen::<f64>() * span + 1e9);
        }
        let to_tags = |v: Vec<f64>, bob: bool| {
            let mut t: Vec<TimeTag> = v
                .into_iter()
                .map(|x| TimeTag {
                    time_ps: if bob {
                        (x * (1.0 + rate) + offset) as i64
                    } else {
                        x as i64
                    },
                    channel: 0,
                })
                .collect();
            t.sort_unstable();
            t
        };
        (to_tags(a, false), to_tags(b, true))
    }

    #[test]
    fn acquires_a_large_offset_and_frequency_error() {
        let (a, b) = streams(2.0, 20_000.0, 200_000.0, 45.0, -0.6123e12, 8e-7, 1);
        let cfg = SyncConfig {
            acquisition_ps: 1_900_000_000_000,
            ..SyncConfig::default()
        };
        let acq = acquire(&a, &b, &cfg).expect("locks");
        let m = acq.model;
        // At the end of the data the true offset is −0.6123 s + 8e-7 · t.
        let t = m.reference_ps as f64;
        let truth = -0.6123e12 + 8e-7 * t;
        assert!(
            (m.offset_ps - truth).abs() < 5.0,
            "offset {} vs {truth}",
            m.offset_ps
        );
        assert!((m.rate - 8e-7).abs() < 1e-10, "rate {}", m.rate);
        assert!(
            (acq.peak_rms_ps - 45.0 * std::f64::consts::SQRT_2).abs() < 10.0,
            "{acq:?}"
        );
    }

    #[test]
    fn pure_noise_gives_no_peak() {
        let (a, b) = streams(2.0, 0.0, 200_000.0, 45.0, 0.0, 0.0, 2);
        let cfg = SyncConfig {
            acquisition_ps: 1_900_000_000_000,
            ..SyncConfig::default()
        };
        match acquire(&a, &b, &cfg) {
            Err(SyncError::NoPeak { stage, .. }) => assert_eq!(stage, "coarse"),
            other => panic!("expected no peak, got {other:?}"),
        }
        assert!(matches!(
            acquire(&a[..10], &b, &cfg),
            Err(SyncError::NotEnoughData { .. })
        ));
    }

    #[test]
    fn tracker_follows_a_drifting_clock() {
        let (a, b) = streams(5.0, 20_000.0, 100_000.0, 45.0, 0.025e12, 3e-8, 3);
        let cfg = SyncConfig {
            acquisition_ps: 1_000_000_000_000,
            max_offset_ps: 50_000_000_000,
            ..SyncConfig::default()
        };
        let acq = acquire(&a, &b, &cfg).expect("locks");
        let mut tr = Tracker::new(&acq, cfg);
        let mut res = Vec::new();
        let mut s = acq.model.reference_ps;
        while s + 500_000_000_000 < 5_000_000_000_000 {
            let step = tr.update(&a, &b, s, s + 500_000_000_000);
            assert!(step.locked);
            res.push(step.residual_ps.expect("peak found"));
            s += 500_000_000_000;
        }
        let rms = (res.iter().map(|r| r * r).sum::<f64>() / res.len() as f64).sqrt();
        assert!(rms < 5.0, "tracking residual rms {rms} ps: {res:?}");
    }
}
