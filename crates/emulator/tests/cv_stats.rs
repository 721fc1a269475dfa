//! Statistical tests of the CV-QKD emulator at fixed seeds: event-level sample moments and
//! window-level Wishart draws against the closed forms, and the link's estimates of T and ξ
//! against `keyrate`'s parameters (including Raman noise from classical traffic).

use qkdnet_emulator::cv::{scatter, CvEmulation, CvEmulator, CvLink, CvMoments, CvStats};
use qkdnet_keyrate::cv::CvGg02;
use qkdnet_optics::detector::CoherentDetection;
use qkdnet_optics::raman::{ClassicalChannel, Direction};

mod common;
use common::z;

/// Checks pooled sums against the moments: each second moment's estimator has the
/// standard deviation of a bivariate Gaussian's sample moment.
fn check_moments(m: &CvMoments, s: &CvStats, what: &str) {
    let n = s.pairs as f64;
    let (va, c, vb) = (m.var_a, m.cov_ab, m.var_b);
    z(
        &format!("{what}: Var a"),
        s.sum_aa / n,
        va,
        va * (2.0 / n).sqrt(),
    );
    z(
        &format!("{what}: Cov ab"),
        s.sum_ab / n,
        c,
        ((va * vb + c * c) / n).sqrt(),
    );
    z(
        &format!("{what}: Var b"),
        s.sum_bb / n,
        vb,
        vb * (2.0 / n).sqrt(),
    );
}

fn add(total: &mut CvStats, s: &CvStats) {
    total.pairs += s.pairs;
    total.sum_aa += s.sum_aa;
    total.sum_ab += s.sum_ab;
    total.sum_bb += s.sum_bb;
}

fn hw(detection: CoherentDetection) -> CvGg02 {
    CvGg02 {
        detection,
        excess_noise_snu: 0.02,
        ..CvGg02::default()
    }
}

#[test]
fn event_level_moments_match_closed_forms_both_receivers() {
    for det in [CoherentDetection::Homodyne, CoherentDetection::Heterodyne] {
        let link = CvLink::new(hw(det), 6.0, CvEmulation::default()).expect("valid");
        let mut e = CvEmulator::new(link, 1e-3).expect("window");
        let m = e.moments();
        let mut total = CvStats::default();
        for _ in 0..4 {
            let w = e.step_symbols();
            assert_eq!(w.alice.len(), 2 * e.symbols_per_window() as usize);
            add(&mut total, &scatter(&m, &w));
        }
        assert_eq!(total.pairs, 4 * 100_000 * m.pairs_per_symbol as u64);
        check_moments(&m, &total, &format!("{det:?}"));
    }
}

#[test]
fn window_level_is_wishart_and_agrees_with_event_level() {
    let link = CvLink::new(
        hw(CoherentDetection::Heterodyne),
        6.0,
        CvEmulation::default(),
    )
    .expect("valid");
    // 1 000-pair windows: the spread of each window's variance estimate must be the
    // Wishart one, 2 V²/n, not just the mean right.
    let mut w = CvEmulator::new(link.clone(), 5e-6).expect("window");
    let m = w.moments();
    let k = 4000;
    let mut total = CvStats::default();
    let mut vals = Vec::with_capacity(k);
    for _ in 0..k {
        let s = w.step_stats();
        assert_eq!(s.pairs, 1000);
        vals.push(s.sum_bb / s.pairs as f64);
        add(&mut total, &s);
    }
    check_moments(&m, &total, "window level");
    let mean = vals.iter().sum::<f64>() / k as f64;
    let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (k - 1) as f64;
    let want = 2.0 * m.var_b * m.var_b / 1000.0;
    // The sample variance of k values has relative sd √(2/(k−1)) (near-Gaussian values).
    z(
        "window spread of Var b",
        var,
        want,
        want * (2.0 / (k - 1) as f64).sqrt(),
    );
    // The event level over the same number of pairs, against the same closed forms.
    let mut e = CvEmulator::new(link, 5e-6 * k as f64).expect("window");
    let s = scatter(&m, &e.step_symbols());
    check_moments(&m, &s, "event level");
}

#[test]
fn estimates_recover_keyrate_parameters_with_raman_noise() {
    // The 120 km coexistence scenario's hardware: 8 co-propagating channels at −10 dBm.
    let channels: Vec<ClassicalChannel> = (0..8)
        .map(|i| ClassicalChannel {
            wavelength_nm: 1530.33 + 0.78 * i as f64,
            launch_power_dbm: -10.0,
            direction: Direction::CoPropagating,
        })
        .collect();
    let hw = CvGg02 {
        excess_noise_snu: 0.005,
        wavelength_nm: 1550.12,
        fibre_attenuation_db_per_km: 0.16,
        classical_channels: channels,
        ..CvGg02::default()
    };
    let loss = 120.0 * 0.16;
    let raman = hw.raman_excess_noise(loss);
    assert!(raman > 1e-3, "Raman noise present: {raman}");
    let link = CvLink::new(hw.clone(), loss, CvEmulation::default()).expect("valid");
    // 1 000 s at 100 MBd in one window-level window (1e11 symbols): ξ̂ is then resolved to
    // about 1e-3 SNU, so the Raman part (0.035 SNU here) is some 40 standard deviations.
    let mut e = CvEmulator::new(link, 1000.0).expect("window");
    let m = e.moments();
    let s = e.step_stats();
    let n = s.pairs as f64;
    let (t_hat, xi_hat) = m.estimate(
        s.sum_aa / n,
        s.sum_ab / n,
        s.sum_bb / n,
        hw.detector_efficiency,
        hw.electronic_noise_snu,
    );
    let t = 10f64.powf(-loss / 10.0);
    assert!((t_hat / t - 1.0).abs() < 0.01, "T̂ {t_hat} vs {t}");
    let xi = 0.005 + raman;
    // sd of ξ̂ ≈ 2 · Var b · √(2/n) / (ηT) (the noise estimate's, scaled).
    let sd = 2.0 * m.var_b * (2.0 / n).sqrt() / (hw.detector_efficiency * t);
    z("ξ̂ with Raman", xi_hat, xi, sd);
    assert!(
        raman > 20.0 * sd,
        "the test resolves the Raman noise: {raman} vs sd {sd}"
    );
    assert!((m.excess_noise_snu - xi).abs() < 1e-15);
}

#[test]
fn phase_noise_lowers_the_covariance() {
    let emu = CvEmulation {
        phase_noise_rad: 0.2,
        ..CvEmulation::default()
    };
    let link = CvLink::new(hw(CoherentDetection::Heterodyne), 3.0, emu).expect("valid");
    let mut e = CvEmulator::new(link, 2e-3).expect("window");
    let m = e.moments();
    assert!((m.cov_ab / (m.gain * m.var_a) - (-0.02f64).exp()).abs() < 1e-12);
    let s = scatter(&m, &e.step_symbols());
    check_moments(&m, &s, "phase noise");
}

#[test]
fn same_seed_same_samples_and_bad_values_named() {
    let link =
        CvLink::new(hw(CoherentDetection::Homodyne), 6.0, CvEmulation::default()).expect("valid");
    let a = CvEmulator::new(link.clone(), 1e-5)
        .expect("w")
        .step_symbols();
    let b = CvEmulator::new(link, 1e-5).expect("w").step_symbols();
    assert_eq!(a, b);
    assert!(a.bob.chunks_exact(2).all(|r| r[0] == 0.0 || r[0] == 1.0));
    let e = CvLink::new(
        hw(CoherentDetection::Homodyne),
        6.0,
        CvEmulation {
            phase_noise_rad: -1.0,
            ..CvEmulation::default()
        },
    )
    .expect_err("negative");
    assert_eq!(e.field, "emulator.phase_noise_rad");
    let e = CvLink::new(
        CvGg02 {
            modulation_variance_snu: -2.0,
            ..CvGg02::default()
        },
        6.0,
        CvEmulation::default(),
    )
    .expect_err("negative");
    assert!(e.field.contains("modulation_variance"), "{e}");
}

/// Faults act window by window: a 3 dB loss step, a fibre cut (Bob sees noise only, no
/// correlation) and Alice's laser at half power, each at event and window level against
/// the faulted link's moments; kinds that do not apply are named.
#[test]
fn faults_act_on_the_moments() {
    use qkdnet_emulator::faults::{Fault, FaultKind, FaultState, Side};
    let w = 1e-3;
    let mut step = Fault::new(FaultKind::LossStep, Side::Both, 0.0, w);
    step.loss_db = 3.0;
    let mut drop = Fault::new(FaultKind::PumpDrop, Side::Alice, 2.0 * w, w);
    drop.factor = 0.5;
    let faults = vec![
        step,
        Fault::new(FaultKind::FibreCut, Side::Alice, w, w),
        drop,
    ];
    let base = CvLink::new(hw(CoherentDetection::Homodyne), 6.0, CvEmulation::default())
        .expect("valid")
        .with_faults(faults.clone())
        .expect("faults");
    let (mut ev, mut st) = (
        CvEmulator::new(base.clone(), w).expect("window"),
        CvEmulator::new(base.clone(), w).expect("window"),
    );
    for k in 0..4u32 {
        let m = base
            .under(&FaultState::at(&faults, (f64::from(k) + 0.5) * w))
            .moments();
        let win = ev.step_symbols();
        assert_eq!(ev.moments(), m, "window {k}");
        check_moments(&m, &scatter(&m, &win), &format!("event level, window {k}"));
        check_moments(&m, &st.step_stats(), &format!("window level, window {k}"));
        if k == 1 {
            assert_eq!(m.cov_ab, 0.0, "a cut fibre carries no correlation");
        }
    }
    let mut cooling = Fault::new(FaultKind::DetectorCooling, Side::Bob, 0.0, 1.0);
    cooling.duration_s = 1.0;
    let e = CvLink::new(hw(CoherentDetection::Homodyne), 6.0, CvEmulation::default())
        .expect("valid")
        .with_faults(vec![cooling])
        .expect_err("cooling");
    assert_eq!(e.field, "fault[0].kind");
}

/// The reference phase actuator: with Bob's reference held 0.5 rad off, both fidelities'
/// moments follow the offset link (covariance × cos 0.5, Bob's variance unchanged).
#[test]
fn a_reference_offset_turns_the_correlation() {
    let base = CvLink::new(
        hw(CoherentDetection::Heterodyne),
        6.0,
        CvEmulation::default(),
    )
    .expect("valid");
    let m = base.with_offset(-0.5).moments();
    let m0 = base.moments();
    assert!((m.cov_ab / m0.cov_ab - 0.5f64.cos()).abs() < 1e-12);
    assert_eq!(m.var_b, m0.var_b);
    let (mut ev, mut st) = (
        CvEmulator::new(base.clone(), 1e-3).expect("window"),
        CvEmulator::new(base, 1e-3).expect("window"),
    );
    ev.actuators.phase_rad = 0.5;
    st.actuators.phase_rad = 0.5;
    let (mut te, mut ts) = (CvStats::default(), CvStats::default());
    for _ in 0..3 {
        let w = ev.step_symbols();
        assert_eq!(ev.moments(), m);
        add(&mut te, &scatter(&m, &w));
        add(&mut ts, &st.step_stats());
    }
    check_moments(&m, &te, "event level at 0.5 rad");
    check_moments(&m, &ts, "window level at 0.5 rad");
}
