//! Control loops of a BBM92 link (Lecaron et al. 2025: polarisation control at 1 Hz,
//! a piezo phase lock minimising QBER_X, the pump steered to the QBER_Z optimum). Each
//! loop is a controller fed with one window's measurement and returning the actuator's
//! next setting; it knows nothing about where the measurement came from (emulator,
//! recording, hardware).
//!
//! The two extremum loops (phase, polarisation) dither: they alternate the actuator
//! `± d` around a centre on successive windows, estimate the slope from the pair of
//! measurements, and move the centre against it. Near the optimum the measured quantity
//! is quadratic in the error (`QBER_X ≈ Q₀ + (V/4) φ²`, rate `≈ R₀ (1 − D θ²)`), so the
//! slope over a dither pair estimates the error directly and a gain `k` removes the
//! fraction `k` of it per pair: a first-order loop with time constant `2/k` windows (four
//! windows, 2 s at Nice's 0.5 s cadence, for `k = 0.5`). The dither itself costs `(V/4) d²`
//! of QBER_X (0.12 % at `d = 0.07` rad).

/// Dithering extremum-seeking loop (shared by the phase and polarisation locks).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DitherLoop {
    /// Current centre of the actuator.
    pub centre: f64,
    /// Dither amplitude, actuator units.
    pub dither: f64,
    /// Fraction of the estimated error removed per dither pair.
    pub gain: f64,
    /// Curvature of the measured quantity around the optimum (`d²y/dx² / 2`), used to turn
    /// the slope into an error; its sign says whether the loop minimises (> 0) or
    /// maximises (< 0).
    pub curvature: f64,
    /// Largest correction per pair, actuator units.
    pub max_step: f64,
    plus: Option<f64>,
    sign: f64,
}

impl DitherLoop {
    /// A loop around `centre`.
    pub fn new(centre: f64, dither: f64, gain: f64, curvature: f64, max_step: f64) -> Self {
        Self {
            centre,
            dither,
            gain,
            curvature,
            max_step,
            plus: None,
            sign: 1.0,
        }
    }

    /// The setting to apply for the next window.
    pub fn setting(&self) -> f64 {
        self.centre + self.sign * self.dither
    }

    /// Feeds the measurement taken at the last [`DitherLoop::setting`]; `None` for a
    /// window without a usable measurement (the pair restarts).
    pub fn update(&mut self, measured: Option<f64>) {
        let Some(y) = measured else {
            self.plus = None;
            self.sign = 1.0;
            return;
        };
        if self.sign > 0.0 {
            self.plus = Some(y);
            self.sign = -1.0;
            return;
        }
        self.sign = 1.0;
        if let Some(yp) = self.plus.take() {
            // y ≈ y₀ + c (x − x*)²: slope 2c (x − x*) at the centre.
            let slope = (yp - y) / (2.0 * self.dither);
            let error = slope / (2.0 * self.curvature);
            let step = (self.gain * error).clamp(-self.max_step, self.max_step);
            self.centre -= step;
        }
    }
}

/// The analysers' phase lock: minimises QBER_X with the phase shifter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhaseLock {
    /// The loop.
    pub dither: DitherLoop,
    /// Fewest test-basis coincidences a measurement needs: windows are pooled (the
    /// setting held) until they reach it, so a weak link (100 km: ~150 per window) still
    /// locks, with a proportionally slower loop.
    pub min_coincidences: u64,
    pooled: (u64, u64),
}

impl PhaseLock {
    /// Nice-like defaults: 0.07 rad dither, gain 0.5, for a visibility `v` (QBER_X
    /// curvature `v/4`), steps of at most 0.5 rad.
    pub fn new(start_rad: f64, visibility: f64) -> Self {
        Self {
            dither: DitherLoop::new(start_rad, 0.07, 0.5, visibility / 4.0, 0.5),
            min_coincidences: 200,
            pooled: (0, 0),
        }
    }

    /// Phase to apply next, rad.
    pub fn setting(&self) -> f64 {
        self.dither.setting()
    }

    /// Feeds a window's test-basis errors and coincidences. A window without any (an
    /// outage) breaks the dither cycle; otherwise windows are pooled up to
    /// `min_coincidences` and then measured as one.
    pub fn update(&mut self, errors: u64, coincidences: u64) {
        if coincidences == 0 {
            self.pooled = (0, 0);
            self.dither.update(None);
            return;
        }
        self.pooled.0 += errors;
        self.pooled.1 += coincidences;
        if self.pooled.1 >= self.min_coincidences {
            let (e, n) = std::mem::take(&mut self.pooled);
            self.dither.update(Some(e as f64 / n as f64));
        }
    }
}

/// Polarisation compensation: maximises a detection rate with the polarisation controller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolarisationLock {
    /// The loop (on the rate normalised by its running mean, so the curvature is the
    /// detector's polarisation dependence).
    pub dither: DitherLoop,
    mean: Option<f64>,
}

impl PolarisationLock {
    /// A lock for a detector whose efficiency drops by `dependence` at full mismatch
    /// (rate ∝ 1 − D sin² θ ≈ 1 − D θ²): curvature −D, dither 0.1 rad, gain 0.5.
    pub fn new(start_rad: f64, dependence: f64) -> Self {
        Self {
            dither: DitherLoop::new(start_rad, 0.1, 0.5, -dependence.max(1e-6), 0.3),
            mean: None,
        }
    }

    /// Setting to apply next, rad.
    pub fn setting(&self) -> f64 {
        self.dither.setting()
    }

    /// Feeds a window's count (singles of the node's detectors).
    pub fn update(&mut self, count: u64) {
        if count == 0 {
            self.dither.update(None);
            return;
        }
        let c = count as f64;
        let mean = *self.mean.get_or_insert(c);
        self.mean = Some(0.9 * mean + 0.1 * c);
        self.dither.update(Some(c / mean));
    }
}

/// Pump steering: holds the key-basis error at a target (Nice: the 4.3 % optimum) by
/// scaling the pump power. The accidental-limited error grows about linearly with the
/// pump at these rates, so each window scales the pump by `(target / measured)^γ`
/// (γ = 0.5: half the logarithmic error per window, a time constant of about two
/// windows), at most ×1.25 or ÷1.25 per window, within `[min, max]` mW.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PumpSteering {
    /// Current pump power, mW.
    pub pump_mw: f64,
    /// Target key-basis error rate.
    pub target: f64,
    /// Loop exponent γ.
    pub gamma: f64,
    /// Pump limits, mW.
    pub limits: (f64, f64),
    /// Fewest key coincidences a window needs to count.
    pub min_coincidences: u64,
}

impl PumpSteering {
    /// A loop from `pump_mw` towards `target`.
    pub fn new(pump_mw: f64, target: f64, max_mw: f64) -> Self {
        Self {
            pump_mw,
            target,
            gamma: 0.5,
            limits: (1e-3, max_mw),
            min_coincidences: 200,
        }
    }

    /// Feeds a window's measured key-basis error rate and coincidences; returns the pump
    /// power to apply next.
    pub fn update(&mut self, qber: f64, coincidences: u64) -> f64 {
        if coincidences >= self.min_coincidences && qber > 0.0 {
            let factor = (self.target / qber).powf(self.gamma).clamp(0.8, 1.25);
            self.pump_mw = (self.pump_mw * factor).clamp(self.limits.0, self.limits.1);
        }
        self.pump_mw
    }
}

/// Binary entropy, bits.
fn h2(p: f64) -> f64 {
    if p <= 0.0 || p >= 1.0 {
        0.0
    } else {
        -p * p.log2() - (1.0 - p) * (1.0 - p).log2()
    }
}

/// Pump optimiser: maximises the estimated secret key rate,
/// `n_z [1 − f h(Q_Z) − h(Q_X)]` per window (the asymptotic BBM92 fraction, Ma, Fung, Lo,
/// PRA 76, 012307 (2007)), over the logarithm of the pump power. The pump trades
/// coincidences (∝ P) against accidentals (∝ P²) in both QBERs; the optimum is where the
/// two balance, wherever that puts the QBERs. A [`DitherLoop`] on `ln P` (dither ±`d`)
/// whose measurement is the estimate summed at each side of the dither over at least
/// `windows_per_half` windows and `test_per_half` test-basis coincidences (so a weak link
/// averages longer), normalised by the mean key coincidences (so the curvature is of
/// order 1).
/// The fraction is not clamped at zero, so a pump that gives no key still sees which way
/// the key lies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PumpOptimiser {
    loop_: DitherLoop,
    /// Error-correction efficiency assumed in the estimate.
    pub ec_efficiency: f64,
    /// Fewest windows summed at each side of the dither.
    pub windows_per_half: u32,
    /// Fewest test-basis coincidences summed at each side of the dither.
    pub test_per_half: u64,
    /// Pump limits, mW.
    pub limits: (f64, f64),
    acc: (u64, u64, u64, u64, u32),
    mean_nz: Option<f64>,
}

impl PumpOptimiser {
    /// An optimiser starting at `pump_mw`, at most `max_mw`.
    pub fn new(pump_mw: f64, max_mw: f64, ec_efficiency: f64) -> Self {
        Self {
            loop_: DitherLoop::new(pump_mw.max(1e-3).ln(), 0.1, 0.5, -1.0, 0.25),
            ec_efficiency,
            windows_per_half: 8,
            test_per_half: 4_000,
            limits: (1e-3, max_mw),
            acc: (0, 0, 0, 0, 0),
            mean_nz: None,
        }
    }

    /// The pump power to apply for the next window, mW.
    pub fn pump_mw(&self) -> f64 {
        self.loop_
            .setting()
            .exp()
            .clamp(self.limits.0, self.limits.1)
    }

    /// Feeds a window's key-basis and test-basis tallies (coincidences, errors); returns
    /// the pump power for the next window.
    pub fn update(&mut self, z: (u64, u64), x: (u64, u64)) -> f64 {
        let a = &mut self.acc;
        a.0 += z.0;
        a.1 += z.1;
        a.2 += x.0;
        a.3 += x.1;
        a.4 += 1;
        if a.4 >= self.windows_per_half && a.2 >= self.test_per_half {
            let (nz, ez, nx, ex, w) = std::mem::take(a);
            if nz == 0 || nx == 0 {
                self.loop_.update(None);
            } else {
                let per_window = nz as f64 / w as f64;
                let mean = *self.mean_nz.get_or_insert(per_window);
                self.mean_nz = Some(0.8 * mean + 0.2 * per_window);
                let (qz, qx) = (ez as f64 / nz as f64, ex as f64 / nx as f64);
                let fraction = 1.0 - self.ec_efficiency * h2(qz) - h2(qx);
                self.loop_.update(Some(per_window * fraction / mean));
            }
            let (lo, hi) = (self.limits.0.ln(), self.limits.1.ln());
            self.loop_.centre = self.loop_.centre.clamp(lo, hi);
        }
        self.pump_mw()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dither_loop_finds_the_minimum_of_a_parabola() {
        let mut l = DitherLoop::new(1.0, 0.05, 0.5, 0.25, 0.5);
        for _ in 0..60 {
            let x = l.setting();
            l.update(Some(0.01 + 0.25 * (x - 0.3) * (x - 0.3)));
        }
        assert!((l.centre - 0.3).abs() < 1e-3, "{}", l.centre);
        // A maximiser.
        let mut l = DitherLoop::new(0.0, 0.05, 0.5, -0.1, 0.5);
        for _ in 0..60 {
            let x = l.setting();
            l.update(Some(1.0 - 0.1 * (x + 0.2) * (x + 0.2)));
        }
        assert!((l.centre + 0.2).abs() < 1e-3, "{}", l.centre);
    }

    /// A weak link's windows (120 test coincidences, under the 200 a measurement needs) are
    /// pooled: the lock still finds the fringe; an outage window breaks the cycle.
    #[test]
    fn phase_lock_pools_weak_windows() {
        let offset = 0.6;
        let mut l = PhaseLock::new(0.0, 0.997);
        let mut moved_after = None;
        for w in 0..400 {
            let x = l.setting();
            let q = 0.5 * (1.0 - 0.997 * (x - offset).cos());
            let n = 120u64;
            l.update((q * n as f64).round() as u64, n);
            if moved_after.is_none() && (l.dither.centre - 0.0).abs() > 1e-12 {
                moved_after = Some(w);
            }
        }
        assert!(moved_after.is_some_and(|w| w >= 3), "{moved_after:?}");
        assert!(
            (l.dither.centre - offset).abs() < 0.1,
            "{}",
            l.dither.centre
        );
        // An outage: the pooled tally is dropped, nothing moves.
        let c = l.dither.centre;
        l.update(30, 100);
        l.update(0, 0);
        l.update(50, 100);
        assert_eq!(l.dither.centre, c);
    }

    #[test]
    fn pump_steering_converges_on_a_linear_error() {
        let mut p = PumpSteering::new(1.0, 0.043, 1000.0);
        for _ in 0..40 {
            let q = 0.0086 * p.pump_mw; // 0.86 % per mW
            p.update(q, 10_000);
        }
        assert!((p.pump_mw - 5.0).abs() < 0.01, "{}", p.pump_mw);
    }

    /// On the window level's own law (key coincidences ∝ P, accidentals ∝ P², both QBERs
    /// from the accidentals), the optimiser settles where the estimated key rate peaks.
    #[test]
    fn pump_optimiser_finds_the_key_rate_maximum() {
        // n_z = 1000 P, Q_Z = 0.6 % P, Q_X = 1.2 % P + 0.15 %: the estimate
        // P (1 − 1.16 h(0.006P) − h(0.012P + 0.0015)) peaks near P = 5.2.
        let rate = |p: f64| p * (1.0 - 1.16 * h2(0.006 * p) - h2(0.012 * p + 0.0015));
        let best = (1..2000)
            .map(|i| i as f64 * 0.005)
            .max_by(|a, b| rate(*a).total_cmp(&rate(*b)))
            .unwrap();
        let mut o = PumpOptimiser::new(0.5, 1000.0, 1.16);
        for _ in 0..4000 {
            let p = o.pump_mw();
            let nz = (1_000.0 * p) as u64;
            let nx = (600.0 * p) as u64;
            let ez = (nz as f64 * 0.006 * p) as u64;
            let ex = (nx as f64 * (0.012 * p + 0.0015)) as u64;
            o.update((nz, ez), (nx, ex));
        }
        // The peak is flat: judge the rate reached, and that the pump moved to it.
        let centre = o.loop_.centre.exp();
        assert!(
            rate(centre) > 0.99 * rate(best) && (centre / best - 1.0).abs() < 0.15,
            "{centre} ({}) vs {best} ({})",
            rate(centre),
            rate(best)
        );
    }
}
