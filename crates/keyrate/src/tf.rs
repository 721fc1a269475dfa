//! Twin-field QKD: sending-or-not-sending (SNS) with optional actively-odd-parity pairing
//! (AOPP), and phase-matching QKD (PM-QKD).
//!
//! Channel convention: the loss passed to `evaluate` is the total Alice–Bob loss through
//! the relay, split between the arms by `alice_loss_fraction`; the relay's detector
//! efficiency comes on top. The interference error is not a pinned constant: it is
//! computed from the phase-noise budget of [`qkdnet_optics::phase::PhaseNoise`]
//! (laser linewidth, fibre drift between corrections, stabilisation floor; Bertaina et
//! al., arXiv:2310.08621), the phase-slice width of the post-selection, and the mode
//! overlap (polarisation, timing, spectrum) of the two fields.

use crate::finite::{composable_overhead, lower, upper, Security};
use crate::math::{bessel_i0, h2, h2_sat};
use crate::model::{Evaluation, FreeParam, KeyRateModel, Scale};
use crate::rules;
use qkdnet_optics::fibre::split_transmittance;
use qkdnet_optics::phase::PhaseNoise;
use qkdnet_optics::{check, ParamError};
use serde::{Deserialize, Serialize};

/// Which twin-field protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TfVariant {
    /// Sending-or-not-sending, finite key after Jiang et al. PR Applied 12, 024061 (2019).
    Sns,
    /// SNS with actively odd-parity pairing (Xu et al., PRA 101, 042330 (2020)).
    SnsAopp,
    /// Phase-matching QKD (Ma, Zeng, Zhou, PRX 8, 031043 (2018)); finite key with a
    /// vacuum + weak decoy estimate of the single-photon fraction and Chernoff bounds.
    Pm,
}

/// Hardware of a twin-field link.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TwinField {
    /// Protocol variant.
    pub variant: TfVariant,
    /// Pulse rate, Hz.
    pub clock_hz: f64,
    /// Relay detector efficiency.
    pub detector_efficiency: f64,
    /// Dark-count (and other background) probability per detector per pulse.
    pub dark_count_probability: f64,
    /// Fraction of the total loss on Alice's side.
    pub alice_loss_fraction: f64,
    /// Visibility of the two fields' mode overlap (polarisation, timing, spectrum), ≤ 1.
    pub mode_visibility: f64,
    /// Number of phase slices M of the post-selection.
    pub phase_slices: u32,
    /// Phase-noise budget.
    pub phase_noise: PhaseNoise,
    /// Error-correction efficiency f.
    pub ec_efficiency: f64,
    /// SNS: Z-window signal intensity μ_z; PM: total signal intensity μ.
    pub mu_signal: f64,
    /// SNS: sending probability ε.
    pub send_probability: f64,
    /// Weak decoy intensity μ₁ (X window).
    pub mu_decoy1: f64,
    /// Strong decoy intensity μ₂ (X window).
    pub mu_decoy2: f64,
    /// Probability of the Z (signal) window.
    pub p_z: f64,
    /// SNS with source parameters of its own for Bob (Hu, Jiang, Yu, Wang, PRA 100,
    /// 062337 (2019)), for arms of unequal loss. The fields above are then Alice's; Bob's
    /// decoys follow from the security condition (see `sns`).
    pub asymmetric: bool,
    /// Bob's Z-window signal intensity (asymmetric SNS).
    pub bob_mu_signal: f64,
    /// Asymmetric SNS: the weak decoys' arriving intensities, Bob's over Alice's
    /// (`μ_B1 η_B / μ_A1 η_A`; 1 = balanced at the relay). Bob's sending probability
    /// follows from it and the security condition.
    pub decoy_balance: f64,
}

impl Default for TwinField {
    fn default() -> Self {
        Self {
            variant: TfVariant::SnsAopp,
            clock_hz: 1e9,
            detector_efficiency: 0.5,
            dark_count_probability: 1e-8,
            alice_loss_fraction: 0.5,
            mode_visibility: 0.98,
            phase_slices: 16,
            phase_noise: PhaseNoise::default(),
            ec_efficiency: 1.1,
            mu_signal: 0.4,
            send_probability: 0.2,
            mu_decoy1: 0.05,
            mu_decoy2: 0.3,
            p_z: 0.8,
            asymmetric: false,
            bob_mu_signal: 0.4,
            decoy_balance: 1.0,
        }
    }
}

/// Probability of the signal (Z) window, shared by SNS and PM.
const P_Z: FreeParam = FreeParam {
    name: "p_z",
    lo: 0.05,
    hi: 0.98,
    scale: Scale::Linear,
};

const FREE_SNS: [FreeParam; 5] = [
    FreeParam {
        name: "mu_signal",
        lo: 0.01,
        hi: 1.5,
        scale: Scale::Log,
    },
    FreeParam {
        name: "send_probability",
        lo: 0.01,
        hi: 0.5,
        scale: Scale::Linear,
    },
    FreeParam {
        name: "mu_decoy1",
        lo: 1e-3,
        hi: 0.5,
        scale: Scale::Log,
    },
    FreeParam {
        name: "mu_decoy2_ratio",
        lo: 1.5,
        hi: 20.0,
        scale: Scale::Log,
    },
    P_Z,
];

const FREE_SNS_ASYM: [FreeParam; 7] = [
    FREE_SNS[0],
    FREE_SNS[1],
    FREE_SNS[2],
    FREE_SNS[3],
    FREE_SNS[4],
    FreeParam {
        name: "bob_mu_signal",
        lo: 0.01,
        hi: 1.5,
        scale: Scale::Log,
    },
    FreeParam {
        name: "decoy_balance",
        lo: 0.1,
        hi: 10.0,
        scale: Scale::Log,
    },
];

const FREE_PM: [FreeParam; 3] = [
    FreeParam {
        name: "mu_signal",
        lo: 1e-4,
        hi: 1.0,
        scale: Scale::Log,
    },
    FreeParam {
        name: "mu_decoy1_ratio",
        lo: 0.01,
        hi: 0.9,
        scale: Scale::Log,
    },
    P_Z,
];

/// PM-QKD test pulses: fraction sent as the weak decoy ν (the rest are vacuum).
pub const PM_DECOY_SHARE: f64 = 0.75;

// 8-point Gauss–Hermite (physicists') nodes and weights (Abramowitz & Stegun Table 25.10).
const GH_X: [f64; 4] = [
    0.381_186_990_207_322,
    1.157_193_712_446_78,
    1.981_656_756_695_84,
    2.930_637_420_257_24,
];
const GH_W: [f64; 4] = [
    0.661_147_012_558_241,
    0.207_802_325_814_892,
    0.017_077_983_007_413_4,
    0.000_199_604_072_211_368,
];
// 8-point Gauss–Legendre on [−1, 1] (A&S Table 25.4).
const GL_X: [f64; 4] = [
    0.183_434_642_495_649_8,
    0.525_532_409_916_329,
    0.796_666_477_413_626_7,
    0.960_289_856_497_536_3,
];
const GL_W: [f64; 4] = [
    0.362_683_783_378_362,
    0.313_706_645_877_887_3,
    0.222_381_034_453_374_5,
    0.101_228_536_290_376_3,
];

/// A twin-field model with its phase-difference quadrature prepared.
#[derive(Debug, Clone)]
pub struct TwinFieldModel {
    /// The configuration.
    pub hw: TwinField,
    /// Quadrature of E[f(cos δ)]: (V·cos δ, weight) pairs; V is the mode visibility.
    nodes: Vec<(f64, f64)>,
}

impl TwinField {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ParamError> {
        rules::clock_hz("hardware.clock_hz", self.clock_hz)?;
        rules::detector_efficiency(self.detector_efficiency)?;
        rules::dark_count_probability(self.dark_count_probability)?;
        rules::alice_loss_fraction(self.alice_loss_fraction)?;
        rules::probability("hardware.mode_visibility", self.mode_visibility)?;
        check(
            "hardware.phase_slices",
            self.phase_slices as f64,
            1.0,
            4096.0,
        )?;
        self.phase_noise.validate().map_err(|e| ParamError {
            field: format!("hardware.{}", e.field),
            reason: e.reason,
        })?;
        rules::ec_efficiency(self.ec_efficiency)?;
        check("hardware.mu_signal", self.mu_signal, 0.0, 100.0)?;
        rules::probability("hardware.send_probability", self.send_probability)?;
        check("hardware.mu_decoy1", self.mu_decoy1, 0.0, 100.0)?;
        check("hardware.mu_decoy2", self.mu_decoy2, self.mu_decoy1, 100.0)?;
        rules::probability("hardware.p_z", self.p_z)?;
        check("hardware.bob_mu_signal", self.bob_mu_signal, 0.0, 100.0)?;
        check("hardware.decoy_balance", self.decoy_balance, 1e-3, 1e3)?;
        if self.asymmetric && self.variant == TfVariant::Pm {
            return Err(ParamError {
                field: "hardware.asymmetric".into(),
                reason: "asymmetric source parameters are implemented for SNS only".into(),
            });
        }
        Ok(())
    }

    /// Prepares the quadrature over the phase difference δ = (slice mismatch) + (noise):
    /// the difference of two phases uniform within one slice of width Δ = 2π/M has the
    /// triangular density 2(Δ−t)/Δ² on |t| ≤ Δ; the noise is Gaussian with the budget's σ².
    pub fn prepare(&self) -> TwinFieldModel {
        self.prepare_offset(0.0)
    }

    /// [`TwinField::prepare`] with a constant phase offset `offset_rad` added to δ (an
    /// uncorrected reference drift, as the emulator's phase tracking sees it). The slice
    /// mismatch takes both signs, each with half its weight, so the offset is exact; at 0
    /// the nodes pair up into the symmetric quadrature.
    pub fn prepare_offset(&self, offset_rad: f64) -> TwinFieldModel {
        let delta = 2.0 * std::f64::consts::PI / self.phase_slices as f64;
        let sigma = self.phase_noise.variance().sqrt();
        let mut nodes = Vec::with_capacity(64);
        for (xt, wt) in GL_X
            .iter()
            .flat_map(|&x| [x, -x])
            .zip(GL_W.iter().flat_map(|&w| [w, w]))
        {
            let t = delta * (1.0 + xt) / 2.0;
            let w_t = 2.0 * (delta - t) / (delta * delta) * delta / 2.0 * wt;
            for (xg, wg) in GH_X
                .iter()
                .flat_map(|&x| [x, -x])
                .zip(GH_W.iter().flat_map(|&w| [w, w]))
            {
                let noise = std::f64::consts::SQRT_2 * sigma * xg;
                let w = w_t * wg / std::f64::consts::PI.sqrt();
                if offset_rad == 0.0 {
                    nodes.push((self.mode_visibility * (t + noise).cos(), w));
                } else {
                    for sign in [1.0, -1.0] {
                        let d = sign * t + noise + offset_rad;
                        nodes.push((self.mode_visibility * d.cos(), w / 2.0));
                    }
                }
            }
        }
        TwinFieldModel { hw: *self, nodes }
    }
}

/// Probability that exactly one of two detectors clicks given mean photon numbers at each.
#[inline]
fn one_click(i1: f64, i2: f64, pd: f64) -> (f64, f64) {
    let (a, b) = ((1.0 - pd) * (-i1).exp(), (1.0 - pd) * (-i2).exp());
    ((1.0 - a) * b, (1.0 - b) * a)
}

/// SNS single-photon yield lower bound from vacuum and two decoys μ₁ < μ₂ (one party
/// sending, the other vacuum): `s₁ ≥ [μ₂² e^{μ₁} S₁ − μ₁² e^{μ₂} S₂ − (μ₂² − μ₁²) S₀₀] / (μ₁ μ₂ (μ₂ − μ₁))`
/// (Yu, Hu, Jiang, Xu, Wang, Sci. Rep. 9, 3080 (2019), Eq. (10); Jiang et al. 2019 Eq. (3)).
pub fn s1_lower(s1: f64, s2: f64, s00: f64, mu1: f64, mu2: f64) -> f64 {
    (mu2 * mu2 * mu1.exp() * s1 - mu1 * mu1 * mu2.exp() * s2 - (mu2 * mu2 - mu1 * mu1) * s00)
        / (mu1 * mu2 * (mu2 - mu1))
}

impl TwinFieldModel {
    /// Each arm's transmittance times the relay detector efficiency, `(η_A, η_B)`.
    pub fn arms(&self, loss_db: f64) -> (f64, f64) {
        let (ta, tb) = split_transmittance(loss_db, self.hw.alice_loss_fraction);
        (
            ta * self.hw.detector_efficiency,
            tb * self.hw.detector_efficiency,
        )
    }

    /// Single-click gain with one party sending intensity μ through η (the other vacuum).
    pub fn gain_one(&self, eta_mu: f64) -> f64 {
        let pd = self.hw.dark_count_probability;
        let (a, b) = one_click(eta_mu / 2.0, eta_mu / 2.0, pd);
        a + b
    }

    /// Single-click gain with both sending, phases independently random: averaging
    /// `e^{−I±}`, `I± = s/2 ± V√(η_A μ_A η_B μ_B) cos δ`, over a uniform δ gives the
    /// Bessel function `I₀(V √(η_A μ_A η_B μ_B))`.
    pub fn gain_both_random(&self, ea_mu: f64, eb_mu: f64) -> f64 {
        let pd = self.hw.dark_count_probability;
        let s = ea_mu + eb_mu;
        let v = self.hw.mode_visibility;
        2.0 * (1.0 - pd) * (-s / 2.0).exp() * bessel_i0(v * (ea_mu * eb_mu).sqrt())
            - 2.0 * (1.0 - pd).powi(2) * (-s).exp()
    }

    /// (gain, error-gain) with both sending and phases post-selected as matched (same
    /// slice, or opposite slices with the bit flipped): the error is a click of the
    /// detector that is dark for δ = 0.
    pub fn gain_both_matched(&self, ea_mu: f64, eb_mu: f64) -> (f64, f64) {
        let pd = self.hw.dark_count_probability;
        let half = (ea_mu + eb_mu) / 2.0;
        let amp = (ea_mu * eb_mu).sqrt();
        // one_click(half + amp·v, half − amp·v) with the common factor e^{−half} hoisted:
        // a = c e^{−amp·v}, b = c e^{+amp·v}, so each node costs one exponential.
        let c = (1.0 - pd) * (-half).exp();
        let (mut g, mut e) = (0.0, 0.0);
        for &(vc, w) in &self.nodes {
            let up = (amp * vc).exp();
            let (a, b) = (c / up, c * up);
            let wrong = (1.0 - b) * a;
            g += w * ((1.0 - a) * b + wrong);
            e += w * wrong;
        }
        (g, e)
    }

    /// Sending-or-not-sending, finite key after Jiang et al., PR Applied 12, 024061 (2019),
    /// with AOPP after Xu et al., PRA 101, 042330 (2020).
    ///
    /// Asymmetric sources (Hu, Jiang, Yu, Wang, PRA 100, 062337 (2019)): Alice (μ_A, ε_A,
    /// decoys μ_A1 < μ_A2) and Bob (μ_B, ε_B) differ. The untagged single-photon state of the
    /// Z window is |10⟩ and |01⟩ mixed with weights w_A = ε_A(1−ε_B)μ_A e^{−μ_A} and
    /// w_B = ε_B(1−ε_A)μ_B e^{−μ_B}; the X window's weak-decoy pair gives them in the ratio
    /// μ_A1 : μ_B1. The phase error of the first can be taken from the second only if they
    /// agree, so Bob's decoys are `μ_B1 = μ_A1 w_B / w_A` (their condition) and
    /// `μ_B2 = μ_B1 μ_A2 / μ_A1`. Each side's one-sided decoys bound its single-photon yield
    /// (`s_10`, `s_01`); `s_1 = (μ_A1 s_10 + μ_B1 s_01)/(μ_A1 + μ_B1)` and the matched pairs'
    /// error bound the phase error with μ_A1 + μ_B1 in place of 2μ₁. With equal parameters
    /// this is the symmetric protocol, whose two one-sided tallies are pooled.
    fn sns(&self, loss_db: f64, x: &[f64], sec: &Security) -> Evaluation {
        let (ea, eb) = self.arms(loss_db);
        let (mz, eps_send, mu1, mu2, pz) = (x[0], x[1], x[2], x[2] * x[3], x[4]);
        let (mz_b, eps_b) = if self.hw.asymmetric {
            // Bob's weak decoy must be μ_B1 = μ_A1 w_B/w_A (below); asking for the arriving
            // ratio `balance` fixes w_B/w_A = r = balance·η_A/η_B, and w_B/w_A =
            // ε_B(1−ε_A)m_B / (ε_A(1−ε_B)m_A) with m = μe^{−μ} solves for ε_B.
            let (mz_b, r) = (x[5], x[6] * ea / eb);
            let (m_a, m_b) = (mz * (-mz).exp(), mz_b * (-mz_b).exp());
            let e_b = r * eps_send * m_a / ((1.0 - eps_send) * m_b + r * eps_send * m_a);
            (mz_b, e_b)
        } else {
            (mz, eps_send)
        };
        let pd = self.hw.dark_count_probability;
        let n = match sec {
            Security::Finite(f) => f.block_size,
            Security::Asymptotic => 1.0,
        };
        let eps = sec.per_bound_eps(12.0);
        let px = 1.0 - pz;
        // X-window intensity probabilities: vacuum, μ₁, μ₂ (fixed split, Jiang et al. 2019's choice).
        let (q0, q1, q2) = (0.2, 0.6, 0.2);
        // Z window.
        let s00 = 2.0 * pd * (1.0 - pd);
        let sz0 = self.gain_one(ea * mz);
        let s0z = self.gain_one(eb * mz_b);
        let szz = self.gain_both_random(ea * mz, eb * mz_b);
        let nz = n * pz * pz;
        let c00 = nz * (1.0 - eps_send) * (1.0 - eps_b) * s00;
        let cz0 = nz * eps_send * (1.0 - eps_b) * sz0;
        let c0z = nz * (1.0 - eps_send) * eps_b * s0z;
        let czz = nz * eps_send * eps_b * szz;
        let n_t = c00 + cz0 + c0z + czz;
        let e_z = (c00 + czz) / n_t;
        // Untagged weights and Bob's decoys from the condition.
        let w_a = eps_send * (1.0 - eps_b) * mz * (-mz).exp();
        let w_b = eps_b * (1.0 - eps_send) * mz_b * (-mz_b).exp();
        let (mu1_b, mu2_b) = (mu1 * w_b / w_a, mu2 * w_b / w_a);
        // X-window decoys, one side vacuum.
        let nx = n * px * px;
        let cnt = |q: f64| nx * q;
        let n00 = cnt(q0 * q0) * s00;
        let s00_u = upper(n00, eps) / cnt(q0 * q0);
        let s1 = if self.hw.asymmetric {
            // One side's single-photon yield from its own decoy counts.
            let side = |eta: f64, m1: f64, m2: f64| {
                let c = cnt(q1 * q0);
                let c2 = cnt(q2 * q0);
                s1_lower(
                    lower(c * self.gain_one(eta * m1), eps) / c,
                    upper(c2 * self.gain_one(eta * m2), eps) / c2,
                    s00_u,
                    m1,
                    m2,
                )
            };
            let (s10, s01) = (side(ea, mu1, mu2), side(eb, mu1_b, mu2_b));
            (mu1 * s10 + mu1_b * s01) / (mu1 + mu1_b)
        } else {
            let s_k = |mu: f64| 0.5 * (self.gain_one(ea * mu) + self.gain_one(eb * mu));
            let (sk1, sk2) = (s_k(mu1), s_k(mu2));
            let n10 = cnt(2.0 * q1 * q0) * sk1;
            let n20 = cnt(2.0 * q2 * q0) * sk2;
            s1_lower(
                lower(n10, eps) / cnt(2.0 * q1 * q0),
                upper(n20, eps) / cnt(2.0 * q2 * q0),
                s00_u,
                mu1,
                mu2,
            )
        };
        let s00_l = lower(n00, eps) / cnt(q0 * q0);
        // Both send their weak decoy with matched phase slices (fraction 2/M of those pairs).
        let (_, e_d) = self.gain_both_matched(ea * mu1, eb * mu1_b);
        let mu_pair = mu1 + mu1_b;
        let n_delta = cnt(q1 * q1) * 2.0 / self.hw.phase_slices as f64;
        let t_delta = upper(n_delta * e_d, eps) / n_delta;
        if s1 <= 0.0 {
            return Evaluation {
                raw_key_per_signal: s1.min(0.0) - 1e-12,
                qber_key: e_z,
                qber_test: 0.5,
            };
        }
        let n_ns = c00 + cz0;
        let n_s = c0z + czz;
        let aopp = self.hw.variant == TfVariant::SnsAopp;
        let (secrecy, e1) = sns_secrecy(
            &SnsTerms {
                s1,
                s00_l,
                t_delta,
                mu_pair,
                untagged_weight: nz * (w_a + w_b),
                share_a: w_a / (w_a + w_b),
                not_sent: n_ns,
                sent: n_s,
                pairs: aopp.then(|| n_ns.min(n_s)),
            },
            eps,
        );
        let overhead = composable_overhead(sec, 12.0);
        let leak = if aopp {
            // Bob's bits grouped by his own choice: not-sent (c00 errors, cz0 correct) and
            // sent (c0z correct, czz errors). Pairs take one bit from each group; Alice keeps
            // pairs whose parity is odd for her too (Xu et al. 2020, §II–III).
            let (e_ns, e_s) = (c00 / n_ns, czz / n_s);
            let kept = (1.0 - e_ns) * (1.0 - e_s) + e_ns * e_s;
            let n_kept = n_ns.min(n_s) * kept;
            let e_after = e_ns * e_s / kept;
            n_kept * h2(e_after)
        } else {
            n_t * h2(e_z)
        };
        let ell = secrecy - self.hw.ec_efficiency * leak - overhead;
        Evaluation {
            raw_key_per_signal: ell / n,
            qber_key: e_z,
            qber_test: e1,
        }
    }

    /// PM-QKD (Ma, Zeng, Zhou, PRX 8, 031043 (2018)). Key from the phase-matched signal
    /// pulses (phase slices equal or π apart, a fraction 2/M), `E_μ` their bit error; the
    /// phase error is bounded by the even photon-number fraction, `E_X ≤ q_even` (Eq. (8)).
    ///
    /// - Asymptotic, ideal decoys: `R = (2/M) Q_μ [1 − f h(E_μ) − h(q_even)]` with yields
    ///   `Y_k = 1 − (1−p_d)²(1−η)^k` of the symmetric channel.
    /// - Finite key: each user sends a signal (total intensity μ over the pair, either
    ///   bit) with probability `p_z`, else a test pulse, a share [`PM_DECOY_SHARE`] at the
    ///   weak decoy (ν = μ·`x[1]` over the pair) and the rest vacuum, each user
    ///   independently; pairs of unlike kinds are discarded (stop 21: the choice used to
    ///   be taken per pair, `p_z` of the pairs signals, which two independent users cannot
    ///   do). Decoy pulses are phase post-selected like signals. [`pm_bound`] on the
    ///   expected counts: the single-photon yield by the vacuum + weak decoy lower bound of
    ///   Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005), Eq. (34), every count bounded by Chernoff
    ///   at ε_sec/6; `E_X ≤ 1 − n₁ᴸ / n_key` (dropping the odd fractions above one photon,
    ///   which only loosens the bound) and `ℓ = n_key [1 − h(E_X)] − f n_key h(E_μ) − Δ`
    ///   with Δ of [`composable_overhead`].
    fn pm(&self, loss_db: f64, x: &[f64], sec: &Security) -> Evaluation {
        let (ea, eb) = self.arms(loss_db);
        let mu = x[0];
        let (q, eq) = self.gain_both_matched(ea * mu / 2.0, eb * mu / 2.0);
        let e_mu = eq / q;
        let pd = self.hw.dark_count_probability;
        let matched = 2.0 / self.hw.phase_slices as f64;
        let f = match sec {
            Security::Asymptotic => {
                let eta = (ea + eb) / 2.0;
                let (mut even, mut pk, mut total) = (0.0, (-mu).exp(), 0.0);
                for k in 0..60u32 {
                    if k > 0 {
                        pk *= mu / k as f64;
                    }
                    let yk = 1.0 - (1.0 - pd).powi(2) * (1.0 - eta).powi(k as i32);
                    total += pk * yk;
                    if k % 2 == 0 {
                        even += pk * yk;
                    }
                }
                let q_even = (even / total).min(0.5);
                return Evaluation {
                    raw_key_per_signal: matched
                        * q
                        * (1.0 - self.hw.ec_efficiency * h2(e_mu) - h2(q_even)),
                    qber_key: e_mu,
                    qber_test: q_even,
                };
            }
            Security::Finite(f) => f,
        };
        let n = f.block_size;
        let (nu, pz) = (mu * x[1], x[2]);
        let (q_nu, _) = self.gain_both_matched(ea * nu / 2.0, eb * nu / 2.0);
        // Each user picks a signal (either bit) with p_z, else a test pulse: the weak decoy
        // ν/2 with PM_DECOY_SHARE, vacuum otherwise; pairs of unlike kinds are discarded.
        let (p_nu, p_0) = (
            (1.0 - pz) * PM_DECOY_SHARE,
            (1.0 - pz) * (1.0 - PM_DECOY_SHARE),
        );
        let mut c = TfCounts {
            matched_sent: n * pz * pz * matched,
            ..TfCounts::default()
        };
        c.matched_clicks = c.matched_sent * q;
        c.matched_errors = c.matched_sent * eq;
        c.decoy_matched_sent = n * p_nu * p_nu * matched;
        c.decoy_matched_clicks = c.decoy_matched_sent * q_nu;
        c.sent[2][2] = n * p_0 * p_0;
        c.single[2][2] = c.sent[2][2] * 2.0 * pd * (1.0 - pd);
        let b = match pm_bound(&c, &self.hw, mu, nu, sec) {
            Ok(b) => b,
            Err(_) => {
                return Evaluation {
                    raw_key_per_signal: -1e-12,
                    qber_key: e_mu,
                    qber_test: 0.5,
                }
            }
        };
        let (y1_l, e_x) = (b.s1, b.e1);
        let n_key = c.matched_clicks;
        let ell = b.secrecy_bits - self.hw.ec_efficiency * n_key * h2(e_mu) - b.overhead_bits;
        Evaluation {
            raw_key_per_signal: if y1_l > 0.0 {
                ell / n
            } else {
                y1_l.min(0.0) - 1e-12
            },
            qber_key: e_mu,
            qber_test: e_x,
        }
    }
}

impl KeyRateModel for TwinFieldModel {
    fn free_params(&self) -> &'static [FreeParam] {
        match self.hw.variant {
            TfVariant::Pm => &FREE_PM,
            _ if self.hw.asymmetric => &FREE_SNS_ASYM,
            _ => &FREE_SNS,
        }
    }

    fn initial(&self) -> Vec<f64> {
        match self.hw.variant {
            TfVariant::Pm => vec![
                self.hw.mu_signal,
                (self.hw.mu_decoy1 / self.hw.mu_signal.max(1e-12)).clamp(0.01, 0.9),
                self.hw.p_z,
            ],
            _ => {
                let mut x = vec![
                    self.hw.mu_signal,
                    self.hw.send_probability,
                    self.hw.mu_decoy1,
                    self.hw.mu_decoy2 / self.hw.mu_decoy1.max(1e-12),
                    self.hw.p_z,
                ];
                if self.hw.asymmetric {
                    x.extend([self.hw.bob_mu_signal, self.hw.decoy_balance]);
                }
                x
            }
        }
    }

    fn evaluate(&self, loss_db: f64, x: &[f64], sec: &Security) -> Evaluation {
        match self.hw.variant {
            TfVariant::Pm => self.pm(loss_db, x, sec),
            _ => self.sns(loss_db, x, sec),
        }
    }

    fn signals_per_second(&self) -> f64 {
        self.hw.clock_hz
    }
}

impl TwinField {
    /// The hardware with the free parameters `x` set, as an optimiser chose them, in the
    /// order of [`KeyRateModel::free_params`]: symmetric SNS (signal intensity, send
    /// probability, weak decoy, strong/weak ratio, Z-window probability) or PM (signal
    /// intensity μ, ν/μ, signal probability); asymmetric SNS and short vectors leave it as
    /// it is.
    pub fn with_parameters(&self, x: &[f64]) -> TwinField {
        if self.variant == TfVariant::Pm {
            // PM: (μ, ν/μ, p_z).
            if x.len() < 3 {
                return *self;
            }
            return TwinField {
                mu_signal: x[0],
                mu_decoy1: x[0] * x[1],
                p_z: x[2],
                ..*self
            };
        }
        if self.asymmetric || x.len() < 5 {
            return *self;
        }
        TwinField {
            mu_signal: x[0],
            send_probability: x[1],
            mu_decoy1: x[2],
            mu_decoy2: x[2] * x[3],
            p_z: x[4],
            ..*self
        }
    }
}

/// What the SNS bound's last step takes, from the forward model or from observed counts.
struct SnsTerms {
    /// Lower bound on the single-photon yield `s₁`.
    s1: f64,
    /// Lower bound on the vacuum yield `s₀₀`.
    s00_l: f64,
    /// Upper bound on the matched weak-decoy pairs' error gain `T_Δ`.
    t_delta: f64,
    /// Total intensity of the matched pairs, `μ_A1 + μ_B1`.
    mu_pair: f64,
    /// Z-window pulse pairs weighted by the untagged probability, `N_Z (w_A + w_B)`.
    untagged_weight: f64,
    /// Alice's share of the untagged bits, `w_A / (w_A + w_B)`.
    share_a: f64,
    /// Raw bits in Bob's not-sent group and in his sent group.
    not_sent: f64,
    sent: f64,
    /// AOPP: the pairs Bob formed (`None`: no pairing).
    pairs: Option<f64>,
}

/// The secrecy (before error correction and the composable overhead) and the untagged
/// bits' phase-error bound `e₁` of SNS: `e₁` from the matched pairs (Jiang et al., PR
/// Applied 12, 024061 (2019), Eq. (5)), the untagged count `n₁` (Chernoff lower), then
/// `n₁(1 − h(e₁))`; with AOPP (Xu et al., PRA 101, 042330 (2020)), the untagged pairs
/// `n₁′` (both bits untagged: Alice's single photons sit in Bob's not-sent group, Bob's
/// in his sent group) and their phase error `e₁′ = 2e₁(1 − e₁)` (Eq. (7)), `n₁′(1 − h(e₁′))`.
fn sns_secrecy(t: &SnsTerms, eps: Option<f64>) -> (f64, f64) {
    let e1_exp = ((t.t_delta - (-t.mu_pair).exp() * t.s00_l / 2.0)
        / (t.mu_pair * (-t.mu_pair).exp() * t.s1))
        .clamp(0.0, 0.5);
    let n1 = lower(t.untagged_weight * t.s1, eps);
    let e1 = match eps {
        None => e1_exp,
        Some(e) => (crate::math::chernoff_upper(n1 * e1_exp, e) / n1).min(0.5),
    };
    let secrecy = match t.pairs {
        Some(pairs) => {
            let n1p = pairs
                * (t.share_a * n1 / t.not_sent).min(1.0)
                * ((1.0 - t.share_a) * n1 / t.sent).min(1.0);
            let e1p = 2.0 * e1 * (1.0 - e1);
            n1p * (1.0 - h2_sat(e1p))
        }
        None => n1 * (1.0 - h2_sat(e1)),
    };
    (secrecy, e1)
}

/// A block of SNS counts as the two users know them after sifting: pulses sent and
/// single clicks per setting pair (settings as in the emulator: 0 key window not sending,
/// 1 sending, 2–4 decoy windows vacuum, weak, strong), the weak-decoy pairs whose phase
/// slices matched, with their errors, and the pairs AOPP formed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TfCounts {
    /// Pulses sent per setting pair `[alice][bob]`.
    pub sent: [[f64; 5]; 5],
    /// Single clicks per setting pair.
    pub single: [[f64; 5]; 5],
    /// Pulse pairs with matched phase slices (same or opposite): SNS the weak decoys, PM
    /// the signals (the key pulses).
    pub matched_sent: f64,
    /// Their single clicks (PM: the key bits; SNS leaves it 0).
    pub matched_clicks: f64,
    /// Their single clicks on the detector that should have stayed dark.
    pub matched_errors: f64,
    /// Pairs Bob formed for AOPP (each of one not-sent and one sent bit).
    pub aopp_pairs: f64,
    /// PM: weak-decoy pulse pairs with matched phase slices.
    pub decoy_matched_sent: f64,
    /// PM: their single clicks.
    pub decoy_matched_clicks: f64,
}

impl TfCounts {
    /// Adds another window's counts (a block is the sum of its windows').
    pub fn add(&mut self, c: &TfCounts) {
        for a in 0..5 {
            for b in 0..5 {
                self.sent[a][b] += c.sent[a][b];
                self.single[a][b] += c.single[a][b];
            }
        }
        self.matched_sent += c.matched_sent;
        self.matched_clicks += c.matched_clicks;
        self.matched_errors += c.matched_errors;
        self.aopp_pairs += c.aopp_pairs;
        self.decoy_matched_sent += c.decoy_matched_sent;
        self.decoy_matched_clicks += c.decoy_matched_clicks;
    }
}

/// The PM-QKD bound on a block's observed counts (Ma, Zeng, Zhou, PRX 8, 031043 (2018),
/// Eq. (8): the phase error is at most the key pulses' even-photon fraction, so at most
/// `1 − n₁/n_key`), signal intensity `mu` and weak decoy `nu` (totals over the two users):
/// the single-photon yield of the matched pair by the vacuum + weak decoy bound of Ma, Qi,
/// Zhao, Lo, PRA 72, 012326 (2005), Eq. (34), from the matched key pulses' gain (upper),
/// the matched weak decoys' (lower) and the vacuum pairs' (upper), each count bounded by
/// Chernoff at ε_sec/6. `s1` in the result is that yield's bound, `e1` the phase error's;
/// the secrecy is `n_key (1 − h(e1))`, before error correction, which the caller subtracts.
/// The model's finite key is this bound on its expected counts.
pub fn pm_bound(
    c: &TfCounts,
    hw: &TwinField,
    mu: f64,
    nu: f64,
    sec: &Security,
) -> Result<TfBound, String> {
    if hw.variant != TfVariant::Pm {
        return Err("the PM bound covers PM-QKD only".into());
    }
    let eps = sec.per_bound_eps(6.0);
    let rate = |n: f64, of: f64, name: &str| {
        if of > 0.0 {
            Ok(n / of)
        } else {
            Err(format!("no {name} pulse pairs in the block"))
        }
    };
    let n_key = c.matched_clicks;
    let q_mu_u = rate(upper(n_key, eps), c.matched_sent, "matched key")?;
    let q_nu_l = rate(
        lower(c.decoy_matched_clicks, eps),
        c.decoy_matched_sent,
        "matched weak-decoy",
    )?;
    let y0_u = rate(upper(c.single[2][2], eps), c.sent[2][2], "vacuum")?;
    // Ma, Qi, Zhao, Lo 2005, Eq. (34), for the total photon number of the matched pair.
    let y1_l = mu / (mu * nu - nu * nu)
        * (q_nu_l * nu.exp()
            - q_mu_u * mu.exp() * nu * nu / (mu * mu)
            - (mu * mu - nu * nu) / (mu * mu) * y0_u);
    let n1 = lower(c.matched_sent * mu * (-mu).exp() * y1_l.max(0.0), eps);
    let e1 = if n_key > 0.0 {
        (1.0 - n1 / n_key).clamp(0.0, 0.5)
    } else {
        0.5
    };
    Ok(TfBound {
        secrecy_bits: if y1_l > 0.0 {
            n_key * (1.0 - h2_sat(e1))
        } else {
            0.0
        },
        overhead_bits: composable_overhead(sec, 6.0),
        s1: y1_l,
        e1,
    })
}

/// What [`sns_bound`] grants a block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TfBound {
    /// Secrecy before error correction, bits (0 or less: none).
    pub secrecy_bits: f64,
    /// Composable overhead (12 bounds), bits.
    pub overhead_bits: f64,
    /// Lower bound on the single-photon yield.
    pub s1: f64,
    /// Upper bound on the untagged bits' phase error (before AOPP's pairing).
    pub e1: f64,
}

/// The SNS(-AOPP) bound on a block's observed counts, symmetric sources (what the
/// emulator runs): the same estimates as the forward model ([`TwinFieldModel`], after
/// Jiang et al. 2019 and Xu et al. 2020), with every count bounded by Chernoff: `s₀₀` from
/// the (vacuum, vacuum) pairs, `s₁` from the one-sided weak and strong decoys pooled,
/// `T_Δ` from the matched weak pairs' errors, the untagged weight from the Z-window pairs
/// where exactly one user sent. The caller subtracts the error-correction leakage (of the
/// AOPP-kept key with AOPP).
pub fn sns_bound(c: &TfCounts, hw: &TwinField, sec: &Security) -> Result<TfBound, String> {
    if hw.asymmetric || hw.variant == TfVariant::Pm {
        return Err("the count bound covers symmetric SNS and SNS-AOPP only".into());
    }
    let eps = sec.per_bound_eps(12.0);
    let (mz, mu1, mu2) = (hw.mu_signal, hw.mu_decoy1, hw.mu_decoy2);
    let rate = |n: f64, of: f64, name: &str| {
        if of > 0.0 {
            Ok(n / of)
        } else {
            Err(format!("no {name} pulses in the block"))
        }
    };
    let n00 = c.single[2][2];
    let s00_u = rate(upper(n00, eps), c.sent[2][2], "vacuum-decoy pair")?;
    let s00_l = rate(lower(n00, eps), c.sent[2][2], "vacuum-decoy pair")?;
    let n10 = c.single[3][2] + c.single[2][3];
    let n20 = c.single[4][2] + c.single[2][4];
    let s1 = s1_lower(
        rate(
            lower(n10, eps),
            c.sent[3][2] + c.sent[2][3],
            "one-sided weak-decoy",
        )?,
        rate(
            upper(n20, eps),
            c.sent[4][2] + c.sent[2][4],
            "one-sided strong-decoy",
        )?,
        s00_u,
        mu1,
        mu2,
    );
    let overhead_bits = composable_overhead(sec, 12.0);
    if s1 <= 0.0 {
        return Ok(TfBound {
            secrecy_bits: 0.0,
            overhead_bits,
            s1,
            e1: 0.5,
        });
    }
    let t_delta = rate(
        upper(c.matched_errors, eps),
        c.matched_sent,
        "matched weak-decoy",
    )?;
    let not_sent = c.single[0][0] + c.single[1][0];
    let sent = c.single[0][1] + c.single[1][1];
    let aopp = hw.variant == TfVariant::SnsAopp;
    let (secrecy_bits, e1) = sns_secrecy(
        &SnsTerms {
            s1,
            s00_l,
            t_delta,
            mu_pair: 2.0 * mu1,
            untagged_weight: (c.sent[1][0] + c.sent[0][1]) * mz * (-mz).exp(),
            share_a: 0.5,
            not_sent,
            sent,
            pairs: aopp.then_some(c.aopp_pairs),
        },
        eps,
    );
    Ok(TfBound {
        secrecy_bits,
        overhead_bits,
        s1,
        e1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimise::{optimise, OptimiseOptions};

    fn best(m: &TwinFieldModel, loss: f64, sec: &Security) -> f64 {
        let free = vec![true; m.free_params().len()];
        optimise(
            m,
            loss,
            &m.initial(),
            &free,
            sec,
            &OptimiseOptions::default(),
        )
        .eval
        .key_per_signal()
    }

    /// The count bound at the forward model's expected counts is the model: same
    /// secrecy, so a block that matches the model gets the model's key.
    #[test]
    fn sns_bound_at_the_expected_counts_is_the_forward_model() {
        for variant in [TfVariant::Sns, TfVariant::SnsAopp] {
            let (loss, n) = (40.0, 1e13);
            let sec = Security::Finite(crate::FiniteKey {
                block_size: n,
                ..crate::FiniteKey::default()
            });
            let m0 = TwinField {
                variant,
                ..TwinField::default()
            }
            .prepare();
            let free = vec![true; m0.free_params().len()];
            let opts = OptimiseOptions::default();
            let x = optimise(&m0, loss, &m0.initial(), &free, &sec, &opts).x;
            let m = m0.hw.with_parameters(&x).prepare();
            let hw = m.hw;
            let model = m.evaluate(loss, &x, &sec).raw_key_per_signal * n;
            let (ea, eb) = m.arms(loss);
            let (pz, px, eps) = (hw.p_z, 1.0 - hw.p_z, hw.send_probability);
            let p = [pz * (1.0 - eps), pz * eps, px * 0.2, px * 0.6, px * 0.2];
            let mu = [0.0, hw.mu_signal, 0.0, hw.mu_decoy1, hw.mu_decoy2];
            let pd = hw.dark_count_probability;
            let mut c = TfCounts::default();
            for a in 0..5 {
                for b in 0..5 {
                    c.sent[a][b] = n * p[a] * p[b];
                    let (x, y) = (ea * mu[a], eb * mu[b]);
                    let g = match (x > 0.0, y > 0.0) {
                        (false, false) => 2.0 * pd * (1.0 - pd),
                        (true, false) => m.gain_one(x),
                        (false, true) => m.gain_one(y),
                        (true, true) => m.gain_both_random(x, y),
                    };
                    c.single[a][b] = c.sent[a][b] * g;
                }
            }
            c.matched_sent = c.sent[3][3] * 2.0 / hw.phase_slices as f64;
            c.matched_errors = c.matched_sent * m.gain_both_matched(ea * mu[3], eb * mu[3]).1;
            let (n_ns, n_s) = (
                c.single[0][0] + c.single[1][0],
                c.single[0][1] + c.single[1][1],
            );
            c.aopp_pairs = n_ns.min(n_s);
            let b = sns_bound(&c, &hw, &sec).unwrap();
            let leak = if variant == TfVariant::SnsAopp {
                let (e_ns, e_s) = (c.single[0][0] / n_ns, c.single[1][1] / n_s);
                let kept = (1.0 - e_ns) * (1.0 - e_s) + e_ns * e_s;
                c.aopp_pairs * kept * h2(e_ns * e_s / kept)
            } else {
                (n_ns + n_s) * h2((c.single[0][0] + c.single[1][1]) / (n_ns + n_s))
            };
            let from_counts = b.secrecy_bits - hw.ec_efficiency * leak - b.overhead_bits;
            assert!(model > 0.0, "{variant:?}: no key at {loss} dB");
            assert!(
                ((from_counts - model) / model).abs() < 1e-9,
                "{variant:?}: counts {from_counts} against model {model}"
            );
        }
    }

    /// Structural: at long distance the twin-field key scales as √η (Lucamarini et al.,
    /// Nature 557, 400 (2018)): 20 dB more loss costs one decade, not two.
    #[test]
    fn twin_field_rates_scale_as_sqrt_eta() {
        for variant in [TfVariant::Sns, TfVariant::SnsAopp, TfVariant::Pm] {
            let m = TwinField {
                variant,
                dark_count_probability: 1e-10,
                ..TwinField::default()
            }
            .prepare();
            let (a, b) = (
                best(&m, 40.0, &Security::Asymptotic),
                best(&m, 60.0, &Security::Asymptotic),
            );
            let decades = (a / b).log10();
            assert!(
                (decades - 1.0).abs() < 0.12,
                "{variant:?}: {decades} decades per 20 dB ({a:e} → {b:e})"
            );
        }
    }

    /// PM-QKD finite key: zero for small blocks, growing with the block, and approaching
    /// (from below) the asymptotic rate with ideal decoys, whose phase error is the exact
    /// even photon-number fraction (Ma, Zeng, Zhou 2018, Eq. (8)).
    /// The PM bound on observed counts: it refuses other variants and blocks without the
    /// pairs it estimates from, naming them; with more single-photon events among the key
    /// pulses (a brighter weak decoy's gain) the phase error falls and the secrecy grows;
    /// a block whose weak decoys barely click certifies nothing.
    #[test]
    fn the_pm_bound_on_counts_names_what_is_missing_and_follows_the_decoys() {
        let hw = TwinField {
            variant: TfVariant::Pm,
            ..TwinField::default()
        };
        let sec = Security::Finite(crate::FiniteKey {
            block_size: 1e12,
            ..crate::FiniteKey::default()
        });
        let (mu, nu) = (0.12, 0.03);
        let counts = |decoy_gain: f64| {
            let mut c = TfCounts {
                matched_sent: 1e10,
                matched_clicks: 1e10 * 6e-5,
                matched_errors: 1e10 * 6e-5 * 0.02,
                decoy_matched_sent: 1e8,
                decoy_matched_clicks: 1e8 * decoy_gain,
                ..TfCounts::default()
            };
            c.sent[2][2] = 1e9;
            c.single[2][2] = 1e9 * 2e-6;
            c
        };
        let sns = TwinField {
            variant: TfVariant::Sns,
            ..hw
        };
        assert!(pm_bound(&counts(1.6e-5), &sns, mu, nu, &sec).is_err());
        let mut none = counts(1.6e-5);
        none.decoy_matched_sent = 0.0;
        let e = pm_bound(&none, &hw, mu, nu, &sec).unwrap_err();
        assert!(e.contains("matched weak-decoy"), "{e}");
        let lo = pm_bound(&counts(1.5e-5), &hw, mu, nu, &sec).unwrap();
        let hi = pm_bound(&counts(1.6e-5), &hw, mu, nu, &sec).unwrap();
        assert!(hi.s1 > lo.s1 && hi.e1 < lo.e1, "{lo:?} {hi:?}");
        assert!(hi.secrecy_bits > lo.secrecy_bits, "{lo:?} {hi:?}");
        let dark = pm_bound(&counts(1e-7), &hw, mu, nu, &sec).unwrap();
        assert_eq!(dark.secrecy_bits, 0.0, "{dark:?}");
    }

    #[test]
    fn pm_finite_key_grows_with_the_block_towards_the_asymptotic_rate() {
        let m = TwinField {
            variant: TfVariant::Pm,
            ..TwinField::default()
        }
        .prepare();
        let loss = 40.0;
        let asym = best(&m, loss, &Security::Asymptotic);
        let at = |n: f64| {
            best(
                &m,
                loss,
                &Security::Finite(crate::FiniteKey {
                    block_size: n,
                    ..crate::FiniteKey::default()
                }),
            )
        };
        let rates: Vec<f64> = [1e8, 1e11, 1e13, 1e16].iter().map(|&n| at(n)).collect();
        assert_eq!(rates[0], 0.0, "{rates:?}");
        assert!(
            rates.windows(2).all(|w| w[1] > w[0]),
            "not increasing: {rates:?}"
        );
        let last = rates[3] / asym;
        assert!(
            (0.7..1.0).contains(&last),
            "finite/asymptotic at 1e16 = {last} ({rates:?}, {asym:e})"
        );
    }

    /// Asymmetric SNS (Hu et al., PRA 100, 062337 (2019)): on equal arms it gives the
    /// symmetric key; on unequal arms its own parameters for Bob recover much of the key that
    /// symmetric sources lose (their Figs. 2–3 show the same ordering).
    #[test]
    fn asymmetric_sns_matches_symmetric_on_equal_arms_and_wins_on_unequal_arms() {
        for variant in [TfVariant::Sns, TfVariant::SnsAopp] {
            let rate = |fraction: f64, asymmetric: bool, sec: &Security| {
                let m = TwinField {
                    variant,
                    alice_loss_fraction: fraction,
                    asymmetric,
                    ..TwinField::default()
                }
                .prepare();
                best(&m, 50.0, sec)
            };
            let fk = Security::Finite(crate::FiniteKey::default());
            let (sym, asym) = (
                rate(0.5, false, &Security::Asymptotic),
                rate(0.5, true, &Security::Asymptotic),
            );
            assert!(
                asym >= 0.995 * sym && asym <= 1.1 * sym,
                "{variant:?} equal arms: {asym:e} vs {sym:e}"
            );
            for sec in [Security::Asymptotic, fk] {
                // 5 dB between the arms: both give key, the asymmetric one more.
                let (sym, asym) = (rate(0.55, false, &sec), rate(0.55, true, &sec));
                assert!(
                    asym > 1.2 * sym && sym > 0.0,
                    "{variant:?}: {asym:e} vs {sym:e}"
                );
                // 10 dB: the weak decoys of symmetric sources interfere with visibility
                // 2√10/11 = 0.58 (plain SNS keeps no key); balanced ones keep most of it.
                let (sym, asym) = (rate(0.6, false, &sec), rate(0.6, true, &sec));
                assert!(
                    asym > 5.0 * sym && asym > 1e-6,
                    "{variant:?}: {asym:e} vs {sym:e}"
                );
            }
        }
    }

    /// More phase noise means a larger interference error and a lower key.
    #[test]
    fn interference_error_grows_with_phase_noise() {
        let quiet = TwinField::default().prepare();
        let noisy = TwinField {
            phase_noise: PhaseNoise {
                laser_linewidth_hz: 2e5,
                ..PhaseNoise::default()
            },
            ..TwinField::default()
        }
        .prepare();
        let fk = Security::Finite(crate::FiniteKey::default());
        let (q, n) = (
            quiet.evaluate(50.0, &quiet.initial(), &fk),
            noisy.evaluate(50.0, &noisy.initial(), &fk),
        );
        assert!(
            n.qber_test > q.qber_test && n.key_per_signal() < q.key_per_signal(),
            "{q:?} vs {n:?}"
        );
    }
}
