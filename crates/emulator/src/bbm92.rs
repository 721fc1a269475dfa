//! The Nice time–energy BBM92 link (Lecaron et al., arXiv:2511.02578; REFERENCE.md §1.2)
//! in software: a CW-pumped SPDC source, DWDM channel selection, fibre, passive basis
//! choice, unbalanced Mach–Zehnder analysers, SNSPDs and time taggers.
//!
//! # Receiver layout (each side)
//!
//! A passive beam splitter sends a photon to the key (Z, time-of-arrival) arm with
//! probability `p_key_basis`, else to the test (X, energy) arm: an unbalanced
//! Mach–Zehnder interferometer with a delay `τ = 1/FSR` (400 ps at 2.5 GHz) whose two
//! outputs each go to a detector. So each side has three SNSPD channels:
//!
//! | channel | detector |
//! |---|---|
//! | [`CH_Z`] = 0 | key arm, arrival time |
//! | [`CH_X0`] = 1 | analyser output 0 (constructive for a pair when the phase sum is 0) |
//! | [`CH_X1`] = 2 | analyser output 1 |
//!
//! # Physics
//!
//! - Pairs are emitted as a Poisson process of rate `B = brightness · pump ·
//!   relative_brightness(channel pair)`; both photons leave together (the pump's coherence
//!   time is far longer than any time here).
//! - Each photon reaches its detectors with probability `p_s = T_s η (p_Z + (1 − p_Z) t_U)
//!   π_s` — fibre transmittance `T_s` (the scenario's loss split by
//!   `alice_loss_fraction`, plus faults and demultiplexer loss), detector efficiency `η`,
//!   analyser transmission `t_U`, polarisation factor `π_s = 1 − d sin²(θ_s − θ̂_s)` (an
//!   SNSPD's polarisation dependence `d` at mismatch `θ_s`, compensated by the
//!   controller's setting `θ̂_s`).
//! - Franson interference (Franson, PRL 62, 2205 (1989)): with both photons in the test
//!   arm, the short–short and long–long paths are indistinguishable (coincidence at the
//!   same relative time) and interfere; the two outputs agree with probability
//!   `(1 + V cos φ)/2`, `φ` the analysers' phase sum. Short–long and long–short pairs
//!   land ±τ away from the central peak, with independent outputs. With independent
//!   paths that is half the pairs; the hardware's `test_central_share` sets the share on
//!   one path (1/2: two Franson analysers; 1: every pair interferes, the receiver the
//!   Nice scenarios assume, see docs/EMULATOR.md "The test basis's share").
//! - Timing: each detection gets Gaussian jitter of `σ = FWHM_cc / (2.3548 √2)`, so the
//!   coincidence peak has the FWHM `√(coincidence_fwhm² + dispersion_spread²)`
//!   (`Bbm92Cw::effective_fwhm_ps`: the chromatic dispersion's spread of the pairs'
//!   arrival-time difference, `qkdnet_optics::fibre::entangled_dispersion_spread_ps`, or
//!   0 when the scenario's FWHM includes it). Fibre delay `L n_g / c` per side.
//! - Dark counts (Poisson, per detector) and crosstalk photons from adjacent channels
//!   (Poisson, uncorrelated) add singles; a non-paralysable dead time per detector drops
//!   clicks within `dead_time_s` of the previous one.
//! - Each tagger has its own clock: `t_local = t + δ t + offset + jumps` (`δ` the
//!   frequency error, 7·10⁻¹² for the rubidium reference's 7 ps/s).
//! - Drifts: the phase sum and each side's polarisation mismatch do random walks; the
//!   actuators (phase shifter, polarisation controller, pump power, delay line,
//!   detector enable) act on them from the next window.
//!
//! # Two fidelities (DESIGN.md)
//!
//! [`Bbm92Emulator::step_events`] samples only detections (never a draw per time slot):
//! thinned Poisson processes of pairs with at least one photon detected, of dark counts
//! and of crosstalk photons, then jitter, dead time and the tagger clock.
//! [`Bbm92Emulator::step_stats`] draws per-window counts from the closed forms of
//! [`expected`], which the event level must reproduce (tested statistically).
//!
//! Every window draws from its own random stream, derived from (seed, window index), so a
//! run's records are identical whatever the thread count.

use crate::faults::{Fault, FaultKind};
use crate::streams::{binomial, poisson, purpose_key, window_rng};
use crate::wdm::{ChannelPair, Wdm};
use qkdnet_core::bits::Bits;
use qkdnet_core::timetag::TimeTag;
use qkdnet_keyrate::bbm92::Bbm92Cw;
use qkdnet_optics::consts::{FIBRE_GROUP_INDEX, SPEED_OF_LIGHT_M_S};
use qkdnet_optics::detector::{window_capture_fraction, FWHM_PER_SIGMA};
use qkdnet_optics::fibre::{db_to_transmittance, split_transmittance};
use qkdnet_optics::{check, ParamError};
use rand::{Rng, RngCore};
use rand_distr::{Exp1, StandardNormal};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

/// Key-arm (time of arrival) detector channel.
pub const CH_Z: u32 = 0;
/// Test-arm analyser output 0.
pub const CH_X0: u32 = 1;
/// Test-arm analyser output 1.
pub const CH_X1: u32 = 2;
/// Detector channels per side.
pub const CHANNELS: usize = 3;
/// Jitter draws are clipped at this many standard deviations, so that windows can be
/// stitched in order (the probability beyond is 1.2·10⁻¹⁵).
pub const JITTER_CLIP_SIGMAS: f64 = 8.0;

/// Emulation settings beyond the key-rate model's hardware (`[emulator]` in a scenario).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bbm92Emulation {
    /// Master seed of every random stream.
    pub seed: u64,
    /// Analyser free spectral range, GHz (Nice: 2.5 GHz, a 400 ps delay).
    pub umzi_fsr_ghz: f64,
    /// Analyser insertion loss, dB.
    pub umzi_insertion_loss_db: f64,
    /// Analysers' phase sum at the start, before any actuator, rad.
    pub phase_offset_rad: f64,
    /// Random-walk strength of the phase sum, rad/√s.
    pub phase_drift_rad_per_sqrt_s: f64,
    /// Relative detection-efficiency loss at full polarisation mismatch (SNSPD
    /// polarisation dependence).
    pub polarisation_dependence: f64,
    /// Random-walk strength of each side's polarisation mismatch angle, rad/√s.
    pub polarisation_drift_rad_per_sqrt_s: f64,
    /// Tagger clock offsets, Alice and Bob, ps.
    pub clock_offset_ps: [f64; 2],
    /// Tagger clock frequency errors, Alice and Bob (dimensionless; 7e-12 = 7 ps/s).
    pub clock_frequency_error: [f64; 2],
    /// The link's key-bit rule: the parity of the time bin of this width on Alice's
    /// axis, ps (what `qkdnet_link::sift` does). A pair whose two detections fall in
    /// different bins is an error. 0: every accidental carries a random bit and true
    /// pairs `intrinsic_error_key` (`keyrate`'s model, which the calibrated scenarios use).
    #[serde(default)]
    pub key_bin_ps: f64,
    /// Channel selection on the grid.
    pub wdm: Wdm,
}

impl Default for Bbm92Emulation {
    /// Nice-like: 2.5 GHz analysers without loss, a slow phase walk (the paper's
    /// interferometers hold 10⁻⁷ rad/s; the 10⁻³ rad/√s walk stands for the environment the
    /// phase lock fights), 3 % polarisation dependence, Bob's rubidium-referenced tagger
    /// 7 ps/s off Alice's.
    fn default() -> Self {
        Self {
            seed: 1,
            umzi_fsr_ghz: 2.5,
            umzi_insertion_loss_db: 0.0,
            phase_offset_rad: 0.0,
            phase_drift_rad_per_sqrt_s: 1e-3,
            polarisation_dependence: 0.03,
            polarisation_drift_rad_per_sqrt_s: 1e-3,
            clock_offset_ps: [0.0, 0.0],
            clock_frequency_error: [0.0, 7e-12],
            key_bin_ps: 0.0,
            wdm: Wdm::default(),
        }
    }
}

/// What the link runtime can set (applied from the next window).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Actuators {
    /// Pump power, mW.
    pub pump_mw: f64,
    /// Phase shifter of each side's analyser, rad (their sum adds to the phase sum).
    pub phase_rad: [f64; 2],
    /// Polarisation controller setting of each side, rad (compensates the mismatch).
    pub polarisation_rad: [f64; 2],
    /// Extra delay line on each side, ps (non-negative).
    pub delay_ps: [f64; 2],
    /// Detector bias on or off, each side.
    pub detectors_enabled: [bool; 2],
}

/// The link: hardware, channel, emulation settings and fault schedule, validated.
#[derive(Debug, Clone)]
pub struct Bbm92Link {
    hw: Bbm92Cw,
    loss_db: f64,
    distance_km: f64,
    emu: Bbm92Emulation,
    faults: Vec<Fault>,
    pair: ChannelPair,
    /// Error probabilities of true and accidental key coincidences ([`key_bin_errors`]).
    key_errors: (f64, f64),
}

/// Error probabilities `(true pairs, accidentals)` of the time-bin key rule: Alice's and
/// Bob's bits are the parities of their detections' bins of `bin_ps` on Alice's axis, so a
/// coincidence is an error when a bin edge falls between its two detections. For a time
/// difference d < bin that happens with probability d/bin (the grid's phase is uniform),
/// so the error is E|Δt|/bin over the coincidences kept in the window of width `w`:
/// true pairs have Δt ~ N(0, σ²) cut to |Δt| ≤ w/2, whence
/// `E|Δt| = σ√(2/π)(1 − e^{−a²/2σ²}) / erf(a/(σ√2))` with a = w/2; accidentals are uniform
/// in the window, `E|Δt| = w/4`. A true pair's intrinsic error `e` combines as
/// `e + p − 2ep`. `bin_ps = 0` stands for random accidental bits: `(e, 1/2)`.
pub fn key_bin_errors(window_ps: f64, sigma_ps: f64, bin_ps: f64, intrinsic: f64) -> (f64, f64) {
    if bin_ps <= 0.0 {
        return (intrinsic, 0.5);
    }
    let a = window_ps / 2.0;
    let mean_true = if sigma_ps > 0.0 {
        let r = a / sigma_ps;
        sigma_ps * (2.0 / std::f64::consts::PI).sqrt() * (1.0 - (-r * r / 2.0).exp())
            / qkdnet_optics::special::erf(r / std::f64::consts::SQRT_2)
    } else {
        0.0
    };
    let p = (mean_true / bin_ps).min(0.5);
    (
        intrinsic + p - 2.0 * intrinsic * p,
        (window_ps / 4.0 / bin_ps).min(0.5),
    )
}

/// The physical conditions of one window, from settings, drifts, actuators and faults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conditions {
    /// Window start, ps of true time.
    pub start_ps: i64,
    /// Window length, ps.
    pub length_ps: i64,
    /// Pair rate into the channel pair, 1/s.
    pub pair_rate_hz: f64,
    /// Probability that a photon of a pair is detected on each side (any channel).
    pub p_detect: [f64; 2],
    /// Fraction of each side's detected photons that go to the key arm.
    pub z_fraction: [f64; 2],
    /// Uncorrelated crosstalk photons detected per second, each side.
    pub noise_rate_hz: [f64; 2],
    /// Dark-count rate per detector, each side (0 while the detectors are off).
    pub dark_rate_hz: [f64; 2],
    /// Probability that the two test-arm outputs agree for an interfering pair,
    /// `(1 + V cos φ)/2`.
    pub p_agree: f64,
    /// Fibre plus delay-line delay, each side, ps.
    pub delay_ps: [f64; 2],
    /// Total clock-glitch jumps in force, each side, ps.
    pub clock_jump_ps: [f64; 2],
}

/// Expected rates in one window (the closed forms the event level must reproduce).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expected {
    /// Measured singles per channel, each side, 1/s (after dead time).
    pub singles_hz: [[f64; CHANNELS]; 2],
    /// Key-arm coincidences from pairs within the coincidence window, 1/s.
    pub zz_true_hz: f64,
    /// Key-arm accidental coincidences, 1/s.
    pub zz_accidental_hz: f64,
    /// Test-arm central-peak coincidences from interfering pairs, 1/s.
    pub xx_true_hz: f64,
    /// Test-arm accidental coincidences (any outputs), 1/s.
    pub xx_accidental_hz: f64,
    /// Error probability of a true test-arm coincidence, `(1 − V cos φ)/2`.
    pub xx_true_error: f64,
    /// Error probability of a true key-arm coincidence under the key-bit rule.
    pub zz_true_error: f64,
    /// Error probability of an accidental key-arm coincidence under the key-bit rule.
    pub zz_accidental_error: f64,
}

impl Expected {
    /// Key-basis error rate under the link's key-bit rule ([`key_bin_errors`]). With no
    /// bin (`key_bin_ps = 0`) every accidental carries a random bit and true coincidences
    /// `intrinsic_error_key`: `keyrate`'s model (Neumann et al. 2021, Eq. (7)).
    pub fn qber_z(&self) -> f64 {
        let t = self.zz_true_hz + self.zz_accidental_hz;
        if t > 0.0 {
            (self.zz_true_hz * self.zz_true_error
                + self.zz_accidental_hz * self.zz_accidental_error)
                / t
        } else {
            0.5
        }
    }

    /// Test-basis error rate.
    pub fn qber_x(&self) -> f64 {
        let t = self.xx_true_hz + self.xx_accidental_hz;
        if t > 0.0 {
            (self.xx_true_hz * self.xx_true_error + 0.5 * self.xx_accidental_hz) / t
        } else {
            0.5
        }
    }
}

impl Bbm92Link {
    /// Builds and validates a link. `loss_db` is the two-arm channel loss (as in
    /// `keyrate`), `distance_km` the total fibre length (delays).
    pub fn new(
        hw: Bbm92Cw,
        loss_db: f64,
        distance_km: f64,
        emu: Bbm92Emulation,
        faults: Vec<Fault>,
    ) -> Result<Self, ParamError> {
        hw.validate()?;
        check("channel.loss_db", loss_db, 0.0, 200.0)?;
        check("channel.distance_km", distance_km, 0.0, 20_000.0)?;
        check("emulator.umzi_fsr_ghz", emu.umzi_fsr_ghz, 0.01, 1000.0)?;
        check(
            "emulator.umzi_insertion_loss_db",
            emu.umzi_insertion_loss_db,
            0.0,
            30.0,
        )?;
        check("emulator.phase_offset_rad", emu.phase_offset_rad, -1e3, 1e3)?;
        crate::streams::check_walk("phase_drift_rad_per_sqrt_s", emu.phase_drift_rad_per_sqrt_s)?;
        check(
            "emulator.polarisation_dependence",
            emu.polarisation_dependence,
            0.0,
            1.0,
        )?;
        crate::streams::check_walk(
            "polarisation_drift_rad_per_sqrt_s",
            emu.polarisation_drift_rad_per_sqrt_s,
        )?;
        for s in 0..2 {
            let who = ["alice", "bob"][s];
            check(
                &format!("emulator.clock_offset_ps.{who}"),
                emu.clock_offset_ps[s],
                -1e13,
                1e13,
            )?;
            check(
                &format!("emulator.clock_frequency_error.{who}"),
                emu.clock_frequency_error[s],
                -1e-4,
                1e-4,
            )?;
        }
        if hw.coincidence_fwhm_ps <= 0.0 {
            return Err(ParamError {
                field: "hardware.coincidence_fwhm_ps".into(),
                reason: "the emulator needs a jitter > 0 ps".into(),
            });
        }
        let pair = emu.wdm.channel_pair()?;
        crate::faults::validate(&faults)?;
        let bin_ok = emu.key_bin_ps == 0.0 || emu.key_bin_ps >= hw.coincidence_window_ps;
        if !bin_ok {
            return Err(ParamError {
                field: "emulator.key_bin_ps".into(),
                reason: format!(
                    "{} ps: give 0 (random accidental bits) or a bin at least the coincidence window ({} ps)",
                    emu.key_bin_ps, hw.coincidence_window_ps
                ),
            });
        }
        let key_errors = key_bin_errors(
            hw.coincidence_window_ps,
            hw.effective_fwhm_ps() / FWHM_PER_SIGMA,
            emu.key_bin_ps,
            hw.intrinsic_error_key,
        );
        Ok(Self {
            hw,
            loss_db,
            distance_km,
            emu,
            faults,
            pair,
            key_errors,
        })
    }

    /// The hardware.
    pub fn hardware(&self) -> &Bbm92Cw {
        &self.hw
    }

    /// The emulation settings.
    pub fn emulation(&self) -> &Bbm92Emulation {
        &self.emu
    }

    /// The fault schedule.
    pub fn faults(&self) -> &[Fault] {
        &self.faults
    }

    /// Jitter of one detection, ps rms.
    pub fn jitter_sigma_ps(&self) -> f64 {
        self.hw.effective_fwhm_ps() / FWHM_PER_SIGMA / std::f64::consts::SQRT_2
    }

    /// Analyser delay τ = 1/FSR, ps.
    pub fn umzi_delay_ps(&self) -> f64 {
        1e3 / self.emu.umzi_fsr_ghz
    }

    /// Fibre delay of each side, ps (the length split like the loss).
    pub fn fibre_delay_ps(&self) -> [f64; 2] {
        let f = self.hw.alice_loss_fraction;
        let per_km = 1e3 * FIBRE_GROUP_INDEX / SPEED_OF_LIGHT_M_S * 1e12;
        [
            self.distance_km * f * per_km,
            self.distance_km * (1.0 - f) * per_km,
        ]
    }

    /// Actuators at their scenario settings: the scenario's pump power, no phase or
    /// polarisation correction, no extra delay, detectors on.
    pub fn initial_actuators(&self) -> Actuators {
        Actuators {
            pump_mw: self.hw.pump_power_mw,
            phase_rad: [0.0; 2],
            polarisation_rad: [0.0; 2],
            delay_ps: [0.0; 2],
            detectors_enabled: [true; 2],
        }
    }

    /// The conditions of the window `[start_ps, start_ps + length_ps)` under the given
    /// drift state and actuator settings.
    pub fn conditions(
        &self,
        start_ps: i64,
        length_ps: i64,
        drift: &Drift,
        act: &Actuators,
    ) -> Conditions {
        let t_s = start_ps as f64 * 1e-12;
        let mut pump_factor = 1.0;
        let mut extra_db = [self.emu.wdm.demux_loss_db; 2];
        let mut light = [true; 2];
        let mut detectors = act.detectors_enabled;
        let mut jump = [0.0; 2];
        for f in self.faults.iter().filter(|f| f.active_at(t_s)) {
            for (s, det) in detectors.iter_mut().enumerate() {
                if !f.side.hits(s) {
                    continue;
                }
                match f.kind {
                    FaultKind::DetectorCooling => *det = false,
                    FaultKind::FibreCut => light[s] = false,
                    FaultKind::LossStep => extra_db[s] += f.loss_db,
                    FaultKind::ClockGlitch => jump[s] += f.offset_ps,
                    FaultKind::PumpDrop => {}
                }
            }
            if f.kind == FaultKind::PumpDrop {
                pump_factor *= f.factor;
            }
        }
        let pump = act.pump_mw.clamp(0.0, self.hw.max_pump_power_mw) * pump_factor;
        let pair_rate_hz =
            self.hw.brightness_pairs_per_s_per_mw * pump * self.pair.relative_brightness;
        let centre_rate = self.hw.brightness_pairs_per_s_per_mw * pump;
        let (ta, tb) = split_transmittance(self.loss_db, self.hw.alice_loss_fraction);
        let t_u = db_to_transmittance(self.emu.umzi_insertion_loss_db);
        let pk = self.hw.p_key_basis;
        let arm = pk + (1.0 - pk) * t_u;
        let mut p_detect = [0.0; 2];
        let mut noise = [0.0; 2];
        let mut dark = [0.0; 2];
        for s in 0..2 {
            if !detectors[s] {
                continue;
            }
            dark[s] = self.hw.dark_count_rate_hz;
            if !light[s] {
                continue;
            }
            let pol = 1.0
                - self.emu.polarisation_dependence
                    * (drift.polarisation_rad[s] - act.polarisation_rad[s])
                        .sin()
                        .powi(2);
            let t = [ta, tb][s] * db_to_transmittance(extra_db[s]);
            p_detect[s] = t * self.hw.detector_efficiency * arm * pol;
            // Crosstalk from the adjacent channels' pairs, plus the hardware's noise photons
            // at the receiver input (Raman scattering from classical traffic).
            let outside = [self.hw.alice_noise_hz, self.hw.bob_noise_hz][s];
            noise[s] = centre_rate * self.pair.crosstalk_fraction * p_detect[s]
                + outside * self.hw.detector_efficiency * arm * pol;
        }
        let phase =
            self.emu.phase_offset_rad + drift.phase_rad + act.phase_rad[0] + act.phase_rad[1];
        Conditions {
            start_ps,
            length_ps,
            pair_rate_hz,
            p_detect,
            z_fraction: [pk / arm; 2],
            noise_rate_hz: noise,
            dark_rate_hz: dark,
            p_agree: 0.5 * (1.0 + self.hw.visibility_test * phase.cos()),
            delay_ps: {
                let d = self.fibre_delay_ps();
                [
                    d[0] + act.delay_ps[0].max(0.0),
                    d[1] + act.delay_ps[1].max(0.0),
                ]
            },
            clock_jump_ps: jump,
        }
    }

    /// The closed-form rates of a window (Neumann et al., PRA 104, 022406 (2021), Eqs.
    /// (1)–(7), for this receiver): raw singles `B p_s f_c + n_s f_c + d` per channel (`f_c`
    /// the channel's share: `z` for the key arm, `(1 − z)/2` for each analyser output),
    /// through a non-paralysable dead time `S = R / (1 + R τ_d)`; true key-arm
    /// coincidences `B p_A p_B z_A z_B η_t(t_cc)` with each detector's live fraction;
    /// true test-arm coincidences the same with `(1 − z)` and the hardware's
    /// `test_central_share` (1/2 for independent paths: only the short–short and
    /// long–long paths land in the central peak); accidentals
    /// `S_A S_B t_cc` over the arm's channels.
    pub fn expected(&self, c: &Conditions) -> Expected {
        let tau_d = self.hw.dead_time_s;
        let mut singles = [[0.0; CHANNELS]; 2];
        let mut live = [[0.0; CHANNELS]; 2];
        for s in 0..2 {
            let z = c.z_fraction[s];
            let light = c.pair_rate_hz * c.p_detect[s] + c.noise_rate_hz[s];
            let shares = [z, 0.5 * (1.0 - z), 0.5 * (1.0 - z)];
            for ch in 0..CHANNELS {
                let raw = light * shares[ch] + c.dark_rate_hz[s];
                live[s][ch] = 1.0 / (1.0 + raw * tau_d);
                singles[s][ch] = raw * live[s][ch];
            }
        }
        let w = self.hw.coincidence_window_ps;
        let capture = window_capture_fraction(w, self.hw.effective_fwhm_ps() / FWHM_PER_SIGMA);
        let pairs = c.pair_rate_hz * c.p_detect[0] * c.p_detect[1] * capture;
        let (za, zb) = (c.z_fraction[0], c.z_fraction[1]);
        let zz_true = pairs * za * zb * live[0][0] * live[1][0];
        let x_live = |s: usize| 0.5 * (live[s][1] + live[s][2]);
        let xx_true =
            pairs * (1.0 - za) * (1.0 - zb) * self.hw.test_central_share * x_live(0) * x_live(1);
        let tw = w * 1e-12;
        Expected {
            singles_hz: singles,
            zz_true_hz: zz_true,
            zz_accidental_hz: singles[0][0] * singles[1][0] * tw,
            xx_true_hz: xx_true,
            xx_accidental_hz: (singles[0][1] + singles[0][2])
                * (singles[1][1] + singles[1][2])
                * tw,
            xx_true_error: 1.0 - c.p_agree,
            zz_true_error: self.key_errors.0,
            zz_accidental_error: self.key_errors.1,
        }
    }

    /// The tagger reading at true time `t_ps` on side `s` under the given glitch jumps.
    pub fn to_local(&self, s: usize, t_ps: i64, jump_ps: f64) -> i64 {
        let e = &self.emu;
        t_ps + round_i64(t_ps as f64 * e.clock_frequency_error[s] + e.clock_offset_ps[s] + jump_ps)
    }

    /// The true time of a tagger reading on side `s` (inverse of the clock, glitches
    /// included), to the picosecond.
    pub fn to_true(&self, s: usize, local_ps: i64) -> i64 {
        let e = &self.emu;
        let d = e.clock_frequency_error[s];
        let guess = |jump: f64| {
            ((local_ps as f64 - e.clock_offset_ps[s] - jump) / (1.0 + d)).round() as i64
        };
        // Glitches in force at the reading's time; the jumps are forward so one pass over
        // the guesses settles it.
        let mut jump = 0.0;
        for f in &self.faults {
            if f.kind == FaultKind::ClockGlitch && f.side.hits(s) {
                let t = guess(jump + f.offset_ps) as f64 * 1e-12;
                if t >= f.start_s {
                    jump += f.offset_ps;
                }
            }
        }
        guess(jump)
    }
}

/// The slow processes: the analysers' phase sum and each side's polarisation mismatch.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Drift {
    /// Phase-sum drift, rad.
    pub phase_rad: f64,
    /// Polarisation mismatch, each side, rad.
    pub polarisation_rad: [f64; 2],
}

/// One window of event-level records: each side's time tags, on its own tagger clock.
#[derive(Debug, Clone, PartialEq)]
pub struct EventWindow {
    /// Window index.
    pub index: u64,
    /// The conditions it was drawn under.
    pub conditions: Conditions,
    /// Alice's and Bob's tags, time ordered (the last few events of a window may be
    /// delivered with the next window, where their jitter and delay put them).
    pub tags: [Vec<TimeTag>; 2],
}

/// Counts of one basis in one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BasisCounts {
    /// Coincidences in the window.
    pub coincidences: u64,
    /// Of which with disagreeing bits.
    pub errors: u64,
}

/// One window at window level: counts drawn from the closed forms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatsWindow {
    /// Window index.
    pub index: u64,
    /// The conditions it was drawn under.
    pub conditions: Conditions,
    /// Singles per channel, each side.
    pub singles: [[u64; CHANNELS]; 2],
    /// Key basis.
    pub z: BasisCounts,
    /// Test basis.
    pub x: BasisCounts,
}

/// A running emulation of one link.
#[derive(Debug, Clone)]
pub struct Bbm92Emulator {
    link: Bbm92Link,
    /// Actuator settings, read at the start of each window.
    pub actuators: Actuators,
    window_ps: i64,
    next_index: u64,
    drift: Drift,
    carry: [Vec<TimeTag>; 2],
    last_click: [[i64; CHANNELS]; 2],
    streams: Streams,
    /// Sampling buffers to reuse.
    pool: Vec<Vec<TimeTag>>,
}

const UNSET: i64 = i64::MIN / 2;

/// The random streams of one emulation: a key per purpose from the seeded ChaCha stream
/// (`core::rng`), and per window a xoshiro256++ generator seeded (SplitMix64) from the key
/// and the window index, so any window can be drawn on any thread, cheaply.
#[derive(Debug, Clone, Copy)]
struct Streams {
    drift: u64,
    events: u64,
    stats: u64,
}

impl Streams {
    fn new(seed: u64) -> Self {
        let key = |purpose: &str| purpose_key(seed, "emulator/bbm92", purpose);
        Self {
            drift: key("drift"),
            events: key("events"),
            stats: key("stats"),
        }
    }
}

impl Bbm92Emulator {
    /// An emulation in windows of `window_s` seconds (event level: about 10 ms keeps a
    /// window's events in cache; window level: the link's 0.5 s cadence).
    pub fn new(link: Bbm92Link, window_s: f64) -> Result<Self, ParamError> {
        check("window_s", window_s, 1e-6, 3600.0)?;
        let actuators = link.initial_actuators();
        let streams = Streams::new(link.emu.seed);
        Ok(Self {
            link,
            actuators,
            window_ps: (window_s * 1e12).round() as i64,
            next_index: 0,
            drift: Drift::default(),
            carry: [Vec::new(), Vec::new()],
            last_click: [[UNSET; CHANNELS]; 2],
            streams,
            pool: Vec::new(),
        })
    }

    /// The link.
    pub fn link(&self) -> &Bbm92Link {
        &self.link
    }

    /// The drift state the next window will see.
    pub fn drift(&self) -> Drift {
        self.drift
    }

    /// True time of the next window's start, ps.
    pub fn now_ps(&self) -> i64 {
        self.next_index as i64 * self.window_ps
    }

    /// Window length, ps.
    pub fn window_ps(&self) -> i64 {
        self.window_ps
    }

    /// Conditions of the next window, and advances the drifts past it.
    fn advance(&mut self) -> (u64, Conditions) {
        let index = self.next_index;
        let c = self.link.conditions(
            index as i64 * self.window_ps,
            self.window_ps,
            &self.drift,
            &self.actuators,
        );
        let e = &self.link.emu;
        let mut rng = window_rng(self.streams.drift, index);
        let sq = (self.window_ps as f64 * 1e-12).sqrt();
        let n = |r: &mut Xoshiro256PlusPlus| -> f64 { r.sample(StandardNormal) };
        self.drift.phase_rad += e.phase_drift_rad_per_sqrt_s * sq * n(&mut rng);
        for s in 0..2 {
            self.drift.polarisation_rad[s] +=
                e.polarisation_drift_rad_per_sqrt_s * sq * n(&mut rng);
        }
        self.next_index += 1;
        (index, c)
    }

    /// Emulates the next window at event level.
    pub fn step_events(&mut self) -> EventWindow {
        let (index, c) = self.advance();
        let buffers = self.buffers();
        let raw = sample_window(
            &self.link,
            &c,
            &mut window_rng(self.streams.events, index),
            buffers,
        );
        self.stitch(index, c, raw)
    }

    /// Two sampling buffers from the pool (the previous windows' photon runs, so a
    /// window's megabytes are not allocated and faulted in afresh each time).
    fn buffers(&mut self) -> [Vec<TimeTag>; 2] {
        [
            self.pool.pop().unwrap_or_default(),
            self.pool.pop().unwrap_or_default(),
        ]
    }

    /// Emulates the next `n` windows at event level with up to `threads` threads (same
    /// records whatever the thread count); the actuators stay as they are for all `n`.
    /// `sink` gets the windows in order.
    pub fn run_events(&mut self, n: u64, threads: usize, mut sink: impl FnMut(EventWindow)) {
        let threads = threads.max(1);
        let batch = (threads * 4) as u64;
        let mut done = 0;
        while done < n {
            let m = batch.min(n - done);
            let mut conds: Vec<(u64, Conditions, [Vec<TimeTag>; 2])> = (0..m)
                .map(|_| {
                    // Fresh buffers here: reusing the pool across the batch's threads
                    // measured slower than the allocator (docs/PERFORMANCE.md).
                    let (i, c) = self.advance();
                    (i, c, [Vec::new(), Vec::new()])
                })
                .collect();
            let link = &self.link;
            let key = self.streams.events;
            let mut raws: Vec<Option<[RawSide; 2]>> = vec![None; conds.len()];
            std::thread::scope(|scope| {
                let per = conds.len().div_ceil(threads);
                for (cs, out) in conds.chunks_mut(per).zip(raws.chunks_mut(per)) {
                    scope.spawn(move || {
                        for ((i, c, bufs), o) in cs.iter_mut().zip(out.iter_mut()) {
                            let bufs = std::mem::take(bufs);
                            *o = Some(sample_window(link, c, &mut window_rng(key, *i), bufs));
                        }
                    });
                }
            });
            for ((i, c, _), raw) in conds.into_iter().zip(raws) {
                if let Some(raw) = raw {
                    sink(self.stitch(i, c, raw));
                }
            }
            done += m;
        }
    }

    /// Orders a window's events with the previous window's late ones, applies dead time and
    /// the tagger clocks.
    fn stitch(&mut self, index: u64, c: Conditions, raw: [RawSide; 2]) -> EventWindow {
        let margin = (JITTER_CLIP_SIGMAS * self.link.jitter_sigma_ps()).ceil() as i64 + 2;
        let next_start = c.start_ps + c.length_ps;
        let dead_ps = (self.link.hw.dead_time_s * 1e12).round() as i64;
        let mut tags: [Vec<TimeTag>; 2] = [Vec::new(), Vec::new()];
        for (s, (mut photons, extras)) in raw.into_iter().enumerate() {
            let carry = std::mem::take(&mut self.carry[s]);
            // Events of the next window start no earlier than this.
            let boundary = next_start + c.delay_ps[s].floor() as i64 - margin;
            let mut out = Vec::with_capacity(photons.len() + extras.len() + carry.len());
            let mut late = Vec::new();
            let last = &mut self.last_click[s];
            let (mut i, mut j, mut k) = (0, 0, 0);
            // A three-way merge of the carried-over, photon and extra runs, without copying
            // them first: emit before the boundary, carry the rest.
            loop {
                let mut best = i64::MAX;
                let mut from = 3;
                if let Some(t) = carry.get(i) {
                    best = t.time_ps;
                    from = 0;
                }
                if let Some(t) = photons.get(j) {
                    if t.time_ps < best {
                        best = t.time_ps;
                        from = 1;
                    }
                }
                if let Some(t) = extras.get(k) {
                    if t.time_ps < best {
                        from = 2;
                    }
                }
                let t = match from {
                    0 => {
                        i += 1;
                        carry[i - 1]
                    }
                    1 => {
                        j += 1;
                        photons[j - 1]
                    }
                    2 => {
                        k += 1;
                        extras[k - 1]
                    }
                    _ => break,
                };
                if t.time_ps >= boundary {
                    late.push(t);
                    continue;
                }
                let prev = &mut last[t.channel as usize];
                if t.time_ps - *prev < dead_ps {
                    continue;
                }
                *prev = t.time_ps;
                out.push(TimeTag {
                    time_ps: self.link.to_local(s, t.time_ps, c.clock_jump_ps[s]),
                    channel: t.channel,
                });
            }
            self.carry[s] = late;
            tags[s] = out;
            if self.pool.len() < 2 {
                photons.clear();
                self.pool.push(photons);
            }
        }
        EventWindow {
            index,
            conditions: c,
            tags,
        }
    }

    /// Emulates the next window at window level: singles, coincidences and errors drawn
    /// from [`Bbm92Link::expected`].
    pub fn step_stats(&mut self) -> StatsWindow {
        let (index, c) = self.advance();
        let e = self.link.expected(&c);
        let mut rng = window_rng(self.streams.stats, index);
        let w = c.length_ps as f64 * 1e-12;
        let mut singles = [[0; CHANNELS]; 2];
        for (s, side) in singles.iter_mut().enumerate() {
            for (ch, v) in side.iter_mut().enumerate() {
                *v = poisson(&mut rng, e.singles_hz[s][ch] * w);
            }
        }
        let basis = |rng: &mut Xoshiro256PlusPlus, t: f64, a: f64, et: f64, ea: f64| {
            let nt = poisson(rng, t * w);
            let na = poisson(rng, a * w);
            BasisCounts {
                coincidences: nt + na,
                errors: binomial(rng, nt, et) + binomial(rng, na, ea),
            }
        };
        let z = basis(
            &mut rng,
            e.zz_true_hz,
            e.zz_accidental_hz,
            e.zz_true_error,
            e.zz_accidental_error,
        );
        let x = basis(
            &mut rng,
            e.xx_true_hz,
            e.xx_accidental_hz,
            e.xx_true_error,
            0.5,
        );
        StatsWindow {
            index,
            conditions: c,
            singles,
            z,
            x,
        }
    }
}

/// `n` correlated bit pairs with exactly `errors` disagreements at uniformly random
/// positions, Alice's bits uniform: the sifted key of a window-level window.
pub fn correlated_bits(n: usize, errors: usize, rng: &mut impl Rng) -> (Bits, Bits) {
    let words: Vec<u64> = (0..n.div_ceil(64)).map(|_| rng.next_u64()).collect();
    let alice = Bits::from_words(words, n);
    let mut bob = alice.duplicate();
    // Floyd's sampling of `errors` distinct positions.
    let errors = errors.min(n);
    let mut chosen = std::collections::HashSet::with_capacity(errors);
    for j in (n - errors)..n {
        let t = rng.gen_range(0..=j);
        let pick = if chosen.insert(t) { t } else { j };
        chosen.insert(pick);
        bob.flip(pick);
    }
    (alice, bob)
}

/// Rounds to the nearest integer, halves away from zero, without a libm call (`f64::round`
/// is a function call on baseline x86-64 and showed up as 13 % of event-level time).
#[inline]
fn round_i64(x: f64) -> i64 {
    if x >= 0.0 {
        (x + 0.5) as i64
    } else {
        (x - 0.5) as i64
    }
}

/// Sorts a vector that is sorted up to small local displacements (jitter, the analyser
/// delay): insertion sort, falling back to a full sort if the disorder turns out large.
fn sort_nearly_sorted(v: &mut [TimeTag]) {
    let budget = v.len() * 8 + 64;
    let mut moves = 0usize;
    for i in 1..v.len() {
        let x = v[i];
        let mut j = i;
        while j > 0 && v[j - 1].time_ps > x.time_ps {
            v[j] = v[j - 1];
            j -= 1;
            moves += 1;
        }
        v[j] = x;
        if moves > budget {
            v.sort_by_key(|t| t.time_ps);
            return;
        }
    }
}

/// Samples one window's detections, in true time, each side sorted, before dead time and
/// clocks.
fn sample_window(
    link: &Bbm92Link,
    c: &Conditions,
    rng: &mut Xoshiro256PlusPlus,
    buffers: [Vec<TimeTag>; 2],
) -> [RawSide; 2] {
    let w = c.length_ps as f64;
    let sigma = link.jitter_sigma_ps();
    let clip = JITTER_CLIP_SIGMAS * sigma;
    let tau = link.umzi_delay_ps();
    let [pa, pb] = c.p_detect;
    let p_any = pa + pb - pa * pb;
    let rate_ps = c.pair_rate_hz * p_any * 1e-12;
    let expect = (rate_ps * w) as usize;
    let mut out = buffers;
    for b in &mut out {
        b.clear();
        b.reserve(expect + expect / 8 + 16);
    }
    let to_u32 = |p: f64| (p.clamp(0.0, 1.0) * 4_294_967_295.0) as u32;
    if rate_ps > 0.0 {
        // Given at least one detection: both, Alice only, Bob only.
        let th_both = to_u32(pa * pb / p_any);
        let th_a = to_u32(pa / p_any);
        let z_th = [to_u32(c.z_fraction[0]), to_u32(c.z_fraction[1])];
        let agree = to_u32(c.p_agree);
        // Independent paths put half the test-arm pairs on the same path (Franson); a
        // central share s ≠ 1/2 forces the paths equal (s > 1/2) or different (s < 1/2)
        // with probability |2s − 1| (always, without a draw, when that is 1).
        let share = link.hardware().test_central_share;
        let force = ((2.0 * share - 1.0).abs() * (1u64 << 32) as f64) as u64;
        let force_same = share > 0.5;
        let base = [
            c.start_ps as f64 + c.delay_ps[0],
            c.start_ps as f64 + c.delay_ps[1],
        ];
        let jitter = |rng: &mut Xoshiro256PlusPlus| -> f64 {
            let g: f64 = rng.sample(StandardNormal);
            (g * sigma).clamp(-clip, clip)
        };
        let mut t = 0.0;
        loop {
            let gap: f64 = rng.sample(Exp1);
            t += gap / rate_ps;
            if t >= w {
                break;
            }
            let u = rng.next_u64();
            let cat = (u >> 32) as u32;
            let v = rng.next_u64();
            let present = if cat < th_both {
                [true, true]
            } else if cat < th_a {
                [true, false]
            } else {
                [false, true]
            };
            let z = [(v as u32) < z_th[0], ((v >> 32) as u32) < z_th[1]];
            // Path (short 0 / long 1) and output of each side from spare bits.
            let mut long = [u & 1 == 1, u & 2 == 2];
            if force > 0 && (force >= 1 << 32 || (rng.next_u64() >> 32) < force) {
                long[1] = if force_same { long[0] } else { !long[0] };
            }
            let mut port = [(u >> 2) & 1 == 1, (u >> 3) & 1 == 1];
            let both_x = present[0] && present[1] && !z[0] && !z[1];
            if both_x && long[0] == long[1] {
                // Franson interference: the outputs agree with probability (1 + V cos φ)/2.
                let agrees = (((u >> 4) & 0xffff_ffff) as u32) < agree;
                port[1] = if agrees { port[0] } else { !port[0] };
            }
            for s in 0..2 {
                if !present[s] {
                    continue;
                }
                let (ch, extra) = if z[s] {
                    (CH_Z, 0.0)
                } else {
                    (
                        if port[s] { CH_X1 } else { CH_X0 },
                        if long[s] { tau } else { 0.0 },
                    )
                };
                let time = base[s] + t + extra + jitter(rng);
                out[s].push(TimeTag {
                    time_ps: round_i64(time),
                    channel: ch,
                });
            }
        }
    }
    // Dark counts and crosstalk photons: uniform in the window, uncorrelated; kept apart
    // and merged while stitching (they are few, far from their place in the photon run).
    let mut extras: [Vec<TimeTag>; 2] = [Vec::new(), Vec::new()];
    for (s, extra) in extras.iter_mut().enumerate() {
        let n_dark = poisson(rng, c.dark_rate_hz[s] * CHANNELS as f64 * w * 1e-12);
        let n_noise = poisson(rng, c.noise_rate_hz[s] * w * 1e-12);
        let z_th = c.z_fraction[s];
        *extra = (0..n_dark + n_noise)
            .map(|i| {
                let ch = if i < n_dark {
                    rng.gen_range(0..CHANNELS as u32)
                } else if rng.gen::<f64>() < z_th {
                    CH_Z
                } else if rng.gen::<bool>() {
                    CH_X1
                } else {
                    CH_X0
                };
                TimeTag {
                    time_ps: round_i64(c.start_ps as f64 + c.delay_ps[s] + rng.gen::<f64>() * w),
                    channel: ch,
                }
            })
            .collect();
        extra.sort_unstable_by_key(|t| t.time_ps);
    }
    for side in &mut out {
        sort_nearly_sorted(side);
    }
    let [a, b] = out;
    let [ea, eb] = extras;
    [(a, ea), (b, eb)]
}

/// One side's raw window: photon detections and (dark, crosstalk) extras, each sorted.
type RawSide = (Vec<TimeTag>, Vec<TimeTag>);

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn correlated_bits_have_exactly_the_errors() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        for (n, e) in [(0, 0), (10, 10), (1000, 37), (100_000, 4_300)] {
            let (a, b) = correlated_bits(n, e, &mut rng);
            assert_eq!(a.len(), n);
            assert_eq!(a.hamming_distance(&b), e);
        }
    }

    #[test]
    fn nearly_sorted_sort_matches_sort() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        for spread in [0i64, 10, 1_000, 1_000_000] {
            let mut v: Vec<TimeTag> = (0..5000i64)
                .map(|i| TimeTag {
                    time_ps: i * 100 + rng.gen_range(-spread..=spread),
                    channel: 0,
                })
                .collect();
            let mut w = v.clone();
            sort_nearly_sorted(&mut v);
            w.sort_by_key(|t| t.time_ps);
            assert_eq!(
                v.iter().map(|t| t.time_ps).collect::<Vec<_>>(),
                w.iter().map(|t| t.time_ps).collect::<Vec<_>>()
            );
        }
    }
}
