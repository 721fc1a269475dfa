//! Continuous-variable QKD, GG02 (Hajomer et al. 2024/2025; REFERENCE.md §1.3): Alice's
//! Gaussian-modulated coherent states, a lossy noisy fibre that may carry classical WDM
//! traffic (Raman photons), and Bob's homodyne or heterodyne receiver with efficiency,
//! electronic noise and residual phase noise.
//!
//! Conventions of `keyrate::cv` (Laudenbach et al., Adv. Quantum Technol. 1, 1800011
//! (2018)): shot-noise units (vacuum variance 1), excess noise ξ referred to the channel
//! input. Per symbol Alice draws `x, p ~ N(0, V_A)`. Bob's outcome on a quadrature `q`:
//!
//! - homodyne (quadrature chosen at random per symbol): `y = √(ηT) q_θ + n`,
//!   `Var n = 1 + ηTξ + v_el`;
//! - heterodyne (both quadratures, each output rescaled by √2): `y = √(ηT/2) q_θ + n`,
//!   `Var n = 1 + ηTξ/2 + v_el`,
//!
//! (the signal-to-noise ratios of Laudenbach Eqs. (41)/(43) that `keyrate` uses), where
//! `q_θ` is the quadrature of Alice's displacement rotated by the residual phase error
//! `θ ~ N(0, σ_φ²)` of the phase-reference recovery, and `ξ = ξ_sys + ξ_Raman` with the
//! Raman part from `keyrate::cv::CvGg02::raman_excess_noise` (the `optics` Raman model).
//! Phase noise is not in ξ: it lowers the covariance by `e^{−σ_φ²/2}` and so shows up in a
//! link's estimate of T and ξ, as it does in a real system.
//!
//! Event level gives every symbol (there is no "only detections" shortcut: every symbol
//! is measured). Window level gives each window's scatter matrix of (Alice, Bob) quadrature
//! pairs, drawn from its exact Wishart distribution (Bartlett decomposition), which is all a
//! link's parameter estimation uses.

use crate::faults::{Fault, FaultKind, FaultState, Side};
use crate::streams::{purpose_key, walk_step, window_rng};
use qkdnet_keyrate::cv::CvGg02;
use qkdnet_optics::detector::CoherentDetection;
use qkdnet_optics::{check, ParamError};
use rand::{Rng, RngCore};
use rand_distr::{ChiSquared, Distribution, StandardNormal};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

/// Emulation settings beyond the key-rate model (`[emulator]` of a `cv-gg02` scenario).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CvEmulation {
    /// Master seed.
    pub seed: u64,
    /// Residual phase error of the reference recovery, rad rms per symbol.
    pub phase_noise_rad: f64,
    /// Random walk of the reference phase that the recovery does not follow, rad/√s (0:
    /// none). The phase actuator ([`CvActuators`]) takes it back.
    pub reference_drift_rad_per_sqrt_s: f64,
}

/// What the link runtime sets on a CV-QKD link (applied from the next window).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CvActuators {
    /// Phase correction of Bob's reference, rad (subtracted from the drifted phase).
    pub phase_rad: f64,
}

impl Default for CvEmulation {
    /// Seed 1, no residual phase noise (the scenario's `excess_noise_snu` then holds all
    /// system noise, as in `keyrate`).
    fn default() -> Self {
        Self {
            seed: 1,
            phase_noise_rad: 0.0,
            reference_drift_rad_per_sqrt_s: 0.0,
        }
    }
}

/// A validated CV-QKD link.
#[derive(Debug, Clone)]
pub struct CvLink {
    hw: CvGg02,
    loss_db: f64,
    emu: CvEmulation,
    /// Scheduled faults (applied window by window by [`CvEmulator`]).
    faults: Vec<Fault>,
    /// Transmittance factor from faults (cuts, loss steps).
    fault_t: f64,
    /// Modulation variance factor from faults (Alice's laser power).
    fault_va: f64,
    /// Reference phase offset in force (drift minus actuator), rad.
    offset_rad: f64,
}

/// Second moments of one quadrature pair (Alice's `a`, Bob's `b`), SNU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CvMoments {
    /// `Var a = V_A`.
    pub var_a: f64,
    /// `Cov(a, b) = g V_A e^{−σ_φ²/2}`.
    pub cov_ab: f64,
    /// `Var b = g² V_A + Var n`.
    pub var_b: f64,
    /// Signal gain `g`: `√(ηT)` (homodyne) or `√(ηT/2)` (heterodyne).
    pub gain: f64,
    /// Noise variance `Var n`.
    pub noise: f64,
    /// Excess noise at the channel input, SNU (system + Raman).
    pub excess_noise_snu: f64,
    /// Quadrature pairs per symbol: 1 (homodyne) or 2 (heterodyne).
    pub pairs_per_symbol: u32,
}

impl CvMoments {
    /// The link's estimates from measured moments (Laudenbach et al. 2018, §VI): `T̂` from
    /// the covariance, `ξ̂` from Bob's variance, with η and v_el known (trusted receiver).
    pub fn estimate(&self, var_a: f64, cov_ab: f64, var_b: f64, eta: f64, vel: f64) -> (f64, f64) {
        let het = self.pairs_per_symbol == 2;
        let g = cov_ab / var_a;
        let eta_t = if het { 2.0 * g * g } else { g * g };
        let noise = var_b - g * g * var_a;
        let xi = if het {
            2.0 * (noise - 1.0 - vel) / eta_t
        } else {
            (noise - 1.0 - vel) / eta_t
        };
        (eta_t / eta, xi)
    }
}

/// Scatter-matrix sums of one window's quadrature pairs.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CvStats {
    /// Window index.
    pub index: u64,
    /// Quadrature pairs.
    pub pairs: u64,
    /// `Σ a²`.
    pub sum_aa: f64,
    /// `Σ a b`.
    pub sum_ab: f64,
    /// `Σ b²`.
    pub sum_bb: f64,
}

/// One window of symbols at event level.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CvWindow {
    /// Window index.
    pub index: u64,
    /// Alice's `x, p` per symbol, flattened.
    pub alice: Vec<f64>,
    /// Bob's outcomes per symbol, flattened: heterodyne `y_x, y_p`; homodyne
    /// `quadrature (0 = x, 1 = p), y`.
    pub bob: Vec<f64>,
}

impl CvLink {
    /// Builds and validates a link of `loss_db` channel loss.
    pub fn new(hw: CvGg02, loss_db: f64, emu: CvEmulation) -> Result<Self, ParamError> {
        hw.validate()?;
        check("channel.loss_db", loss_db, 0.0, 100.0)?;
        check("emulator.phase_noise_rad", emu.phase_noise_rad, 0.0, 3.0)?;
        crate::streams::check_walk(
            "reference_drift_rad_per_sqrt_s",
            emu.reference_drift_rad_per_sqrt_s,
        )?;
        Ok(Self {
            hw,
            loss_db,
            emu,
            faults: Vec::new(),
            fault_t: 1.0,
            fault_va: 1.0,
            offset_rad: 0.0,
        })
    }

    /// The link with Bob's reference `offset_rad` off Alice's: his quadratures turn by it,
    /// so the correlation falls by `cos(offset)` and the rest becomes noise.
    pub fn with_offset(&self, offset_rad: f64) -> Self {
        let mut l = self.clone();
        l.offset_rad = offset_rad;
        l
    }

    /// The link with a fault schedule: fibre cuts and loss steps (either side: one fibre)
    /// and drops of Alice's laser power (`pump-drop`, which scales her modulation
    /// variance). Detector cooling and clock glitches do not apply to a homodyne or
    /// heterodyne receiver sampling symbols and are refused. The Raman noise stays that of
    /// the scenario's classical load.
    pub fn with_faults(mut self, faults: Vec<Fault>) -> Result<Self, ParamError> {
        crate::faults::check_kinds(
            &faults,
            &[
                FaultKind::FibreCut,
                FaultKind::LossStep,
                FaultKind::PumpDrop,
            ],
            "CV-QKD",
        )?;
        if let Some(i) = faults
            .iter()
            .position(|f| f.kind == FaultKind::PumpDrop && f.side == Side::Bob)
        {
            return Err(ParamError {
                field: format!("fault[{i}].side"),
                reason: "PumpDrop on side Bob: Bob has no source in CV-QKD".into(),
            });
        }
        self.faults = faults;
        Ok(self)
    }

    /// The link as it is while `st` holds.
    pub fn under(&self, st: &FaultState) -> Self {
        let mut l = self.clone();
        l.faults = Vec::new();
        l.fault_t = st.transmittance[0] * st.transmittance[1];
        l.fault_va = st.source[0];
        l
    }

    /// The hardware.
    pub fn hardware(&self) -> &CvGg02 {
        &self.hw
    }

    /// The link with modulation variance `va` (what an operator sets from the planner's
    /// optimum), faults and settings kept.
    pub fn with_modulation_variance(&self, va: f64) -> Result<Self, ParamError> {
        let mut hw = self.hw.clone();
        hw.modulation_variance_snu = va;
        hw.validate()?;
        let mut l = self.clone();
        l.hw = hw;
        Ok(l)
    }

    /// Channel loss, dB.
    pub fn loss_db(&self) -> f64 {
        self.loss_db
    }

    /// Emulation settings.
    pub fn emulation(&self) -> &CvEmulation {
        &self.emu
    }

    /// Expected second moments of a quadrature pair.
    pub fn moments(&self) -> CvMoments {
        let t = 10f64.powf(-self.loss_db / 10.0) * self.fault_t;
        let xi = self.hw.excess_noise_snu + self.hw.raman_excess_noise(self.loss_db);
        let (eta, vel, va) = (
            self.hw.detector_efficiency,
            self.hw.electronic_noise_snu,
            self.hw.modulation_variance_snu * self.fault_va,
        );
        let (gain, noise, pairs) = match self.hw.detection {
            CoherentDetection::Homodyne => ((eta * t).sqrt(), 1.0 + eta * t * xi + vel, 1),
            CoherentDetection::Heterodyne => {
                ((eta * t / 2.0).sqrt(), 1.0 + eta * t * xi / 2.0 + vel, 2)
            }
        };
        let s2 = self.emu.phase_noise_rad.powi(2);
        CvMoments {
            var_a: va,
            cov_ab: gain * va * (-s2 / 2.0).exp() * self.offset_rad.cos(),
            var_b: gain * gain * va + noise,
            gain,
            noise,
            excess_noise_snu: xi,
            pairs_per_symbol: pairs,
        }
    }
}

/// A running CV-QKD emulation in windows of a fixed number of symbols.
#[derive(Debug, Clone)]
pub struct CvEmulator {
    /// What the link runtime sets (applied from the next window).
    pub actuators: CvActuators,
    /// The reference's accumulated drift, rad.
    drift_rad: f64,
    /// The link with its fault schedule.
    base: CvLink,
    /// The fault state of the current window, and the link under it.
    state: FaultState,
    link: CvLink,
    moments: CvMoments,
    symbols_per_window: u64,
    next_index: u64,
    keys: [u64; 3],
}

impl CvEmulator {
    /// An emulation in windows of `window_s` seconds of symbols.
    pub fn new(link: CvLink, window_s: f64) -> Result<Self, ParamError> {
        check("window_s", window_s, 1e-9, 3600.0)?;
        let n = (window_s * link.hw.symbol_rate_hz).round().max(1.0) as u64;
        let key = |p: &str| purpose_key(link.emu.seed, "emulator/cv", p);
        Ok(Self {
            moments: link.moments(),
            keys: [key("symbols"), key("stats"), key("drift")],
            actuators: CvActuators::default(),
            drift_rad: 0.0,
            state: FaultState::CLEAR,
            link: link.under(&FaultState::CLEAR),
            base: link,
            symbols_per_window: n,
            next_index: 0,
        })
    }

    /// Applies the faults in force at the start of window `index`.
    fn refresh(&mut self, index: u64) {
        let window_s = self.symbols_per_window as f64 / self.base.hw.symbol_rate_hz;
        let st = FaultState::at(&self.base.faults, index as f64 * window_s);
        let offset = self.drift_rad - self.actuators.phase_rad;
        if st != self.state || offset != self.link.offset_rad {
            self.state = st;
            self.link = self.base.under(&st).with_offset(offset);
            self.moments = self.link.moments();
        }
        self.drift_rad += walk_step(
            self.keys[2],
            index,
            self.base.emu.reference_drift_rad_per_sqrt_s,
            window_s,
        );
    }

    /// The link.
    pub fn link(&self) -> &CvLink {
        &self.link
    }

    /// Expected moments.
    pub fn moments(&self) -> CvMoments {
        self.moments
    }

    /// Symbols per window.
    pub fn symbols_per_window(&self) -> u64 {
        self.symbols_per_window
    }

    /// The next window's symbols and Bob's outcomes.
    pub fn step_symbols(&mut self) -> CvWindow {
        self.step_sample(self.symbols_per_window as usize)
    }

    /// The first `n` symbols of the next window and Bob's outcomes, the rest of the window
    /// left undrawn: what a link whose post-processing keeps up with only part of the
    /// stream samples (the window's faults and drift are those of its whole span). With
    /// `n` = [`CvEmulator::symbols_per_window`] this is [`CvEmulator::step_symbols`].
    pub fn step_sample(&mut self, n: usize) -> CvWindow {
        let index = self.next_index;
        self.next_index += 1;
        self.refresh(index);
        let mut rng = window_rng(self.keys[0], index);
        let m = self.moments;
        let sa = m.var_a.sqrt();
        let sn = m.noise.sqrt();
        let sphi = self.link.emu.phase_noise_rad;
        let offset = self.link.offset_rad;
        let mut alice = Vec::with_capacity(2 * n);
        let mut bob = Vec::with_capacity(2 * n);
        let het = m.pairs_per_symbol == 2;
        for _ in 0..n {
            let x: f64 = sa * rng.sample::<f64, _>(StandardNormal);
            let p: f64 = sa * rng.sample::<f64, _>(StandardNormal);
            let (xr, pr) = if sphi > 0.0 || offset != 0.0 {
                let noise: f64 = if sphi > 0.0 {
                    sphi * rng.sample::<f64, _>(StandardNormal)
                } else {
                    0.0
                };
                let th = offset + noise;
                let (s, c) = th.sin_cos();
                (x * c - p * s, x * s + p * c)
            } else {
                (x, p)
            };
            alice.push(x);
            alice.push(p);
            if het {
                bob.push(m.gain * xr + sn * rng.sample::<f64, _>(StandardNormal));
                bob.push(m.gain * pr + sn * rng.sample::<f64, _>(StandardNormal));
            } else {
                let quad = rng.next_u32() & 1;
                let q = if quad == 0 { xr } else { pr };
                bob.push(quad as f64);
                bob.push(m.gain * q + sn * rng.sample::<f64, _>(StandardNormal));
            }
        }
        CvWindow { index, alice, bob }
    }

    /// The next window's scatter matrix, drawn from the Wishart distribution of its
    /// quadrature pairs (Bartlett: `S = L A Aᵀ Lᵀ`, `L` the Cholesky factor of the pair
    /// covariance, `A` lower triangular with `A₁₁² ~ χ²(n)`, `A₂₂² ~ χ²(n − 1)`,
    /// `A₂₁ ~ N(0, 1)`). Exact without phase noise; with it, the Gaussian approximation of
    /// the rotated pairs.
    pub fn step_stats(&mut self) -> CvStats {
        let index = self.next_index;
        self.next_index += 1;
        self.refresh(index);
        let mut rng = window_rng(self.keys[1], index);
        let m = self.moments;
        let n = self.symbols_per_window * m.pairs_per_symbol as u64;
        let chi = |rng: &mut Xoshiro256PlusPlus, k: u64| -> f64 {
            if k == 0 {
                return 0.0;
            }
            ChiSquared::new(k as f64).map_or(0.0, |d| d.sample(rng))
        };
        let a11 = chi(&mut rng, n).sqrt();
        let a22 = chi(&mut rng, n.saturating_sub(1)).sqrt();
        let a21: f64 = rng.sample(StandardNormal);
        let l11 = m.var_a.sqrt();
        let l21 = m.cov_ab / l11;
        let l22 = (m.var_b - l21 * l21).max(0.0).sqrt();
        // B = L A: columns of correlated sums.
        let b11 = l11 * a11;
        let b21 = l21 * a11 + l22 * a21;
        let b22 = l22 * a22;
        CvStats {
            index,
            pairs: n,
            sum_aa: b11 * b11,
            sum_ab: b11 * b21,
            sum_bb: b21 * b21 + b22 * b22,
        }
    }
}

/// Pools quadrature pairs of event-level windows into scatter sums (what a link's
/// parameter estimation computes from disclosed symbols).
pub fn scatter(m: &CvMoments, w: &CvWindow) -> CvStats {
    let mut s = CvStats {
        index: w.index,
        ..CvStats::default()
    };
    for (a, b) in w.alice.chunks_exact(2).zip(w.bob.chunks_exact(2)) {
        let pairs: [(f64, f64); 2] = if m.pairs_per_symbol == 2 {
            [(a[0], b[0]), (a[1], b[1])]
        } else {
            let q = if b[0] == 0.0 { a[0] } else { a[1] };
            [(q, b[1]), (f64::NAN, f64::NAN)]
        };
        for (x, y) in pairs.into_iter().filter(|(x, _)| !x.is_nan()) {
            s.pairs += 1;
            s.sum_aa += x * x;
            s.sum_ab += x * y;
            s.sum_bb += y * y;
        }
    }
    s
}
