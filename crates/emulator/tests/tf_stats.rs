//! Statistical tests of the twin-field (SNS) emulator at fixed seeds: relay clicks per
//! setting pair, the Z-window error rate and the matched-phase error rate against
//! `keyrate::tf`'s forward model, window level against event level.
#![allow(clippy::needless_range_loop)]

mod common;
use common::z;
use qkdnet_emulator::tf::{TfEmulation, TfEmulator, TfLink, TfStats, SETTINGS};
use qkdnet_keyrate::tf::{TfVariant, TwinField};

fn hw() -> TwinField {
    TwinField {
        variant: TfVariant::SnsAopp,
        clock_hz: 1e9,
        detector_efficiency: 0.21,
        dark_count_probability: 1e-6,
        ..TwinField::default()
    }
}

fn link(loss_db: f64) -> TfLink {
    TfLink::new(hw(), loss_db, TfEmulation::default()).expect("valid")
}

fn add(total: &mut TfStats, s: &TfStats) {
    *total += s;
}

fn binom_z(what: &str, k: u64, n: u64, p: f64) {
    let (n, k) = (n as f64, k as f64);
    z(what, k, n * p, (n * p * (1.0 - p)).sqrt().max(1.0));
}

/// Every setting pair's single clicks, the Z-window errors and the matched-phase errors
/// against the forward model.
fn check(l: &TfLink, s: &TfStats, what: &str) {
    for a in 0..SETTINGS {
        for b in 0..SETTINGS {
            binom_z(
                &format!("{what}: single clicks, settings ({a}, {b})"),
                s.single[a][b],
                s.sent[a][b],
                l.single_click(a, b),
            );
        }
    }
    // Z window: Alice's bit is "sent", Bob's "not sent"; (0,0) and (1,1) are errors.
    let ones = s.single[1][0] + s.single[0][1];
    let errs = s.single[0][0] + s.single[1][1];
    assert!((s.qber_z() - errs as f64 / (errs + ones) as f64).abs() < 1e-15);
    let e_z = l.qber_z();
    let hw = l.model().hw;
    binom_z(&format!("{what}: Z-window errors"), errs, errs + ones, e_z);
    let (g, e) = l.matched();
    let m = hw.phase_slices as f64;
    binom_z(
        &format!("{what}: matched weak-decoy clicks"),
        s.matched_clicks,
        s.sent[3][3],
        2.0 / m * g,
    );
    binom_z(
        &format!("{what}: matched phase errors"),
        s.matched_errors,
        s.matched_clicks,
        e / g,
    );
}

#[test]
fn event_level_matches_keyrate_gains_and_error_rates() {
    let l = link(30.0);
    let mut e = TfEmulator::new(l.clone(), 1e-3).expect("window");
    let mut total = TfStats::default();
    let mut last = None;
    for _ in 0..600 {
        let w = e.step_events();
        assert_eq!(w.sent.iter().flatten().sum::<u64>(), w.pulses);
        assert!(w.clicks.windows(2).all(|c| c[0].pulse < c[1].pulse));
        assert!(w
            .clicks
            .iter()
            .all(|c| c.pulse >= w.first_pulse && c.pulse < w.first_pulse + w.pulses));
        if let (Some(p), Some(c)) = (last, w.clicks.first()) {
            assert!(c.pulse > p);
        }
        last = w.clicks.last().map(|c| c.pulse);
        add(&mut total, &l.tally(&w));
    }
    assert!(total.matched_clicks > 500, "{total:?}");
    check(&l, &total, "event level");
}

#[test]
fn window_level_matches_and_agrees_with_event_level() {
    let l = link(30.0);
    let mut w = TfEmulator::new(l.clone(), 0.05).expect("window");
    let mut total = TfStats::default();
    for _ in 0..4 {
        add(&mut total, &w.step_stats());
    }
    check(&l, &total, "window level");
    let mut e = TfEmulator::new(l.clone(), 1e-3).expect("window");
    let mut ev = TfStats::default();
    for _ in 0..200 {
        add(&mut ev, &l.tally(&e.step_events()));
    }
    // Same pulses in both (0.2 s): the click totals are two samples of one rate.
    let (a, b) = (
        ev.single.iter().flatten().sum::<u64>() as f64,
        total.single.iter().flatten().sum::<u64>() as f64,
    );
    z("event vs window single clicks", a - b, 0.0, (a + b).sqrt());
}

#[test]
fn phase_noise_raises_the_matched_error() {
    let mut noisy = hw();
    noisy.phase_noise.residual_rms_rad = 0.6;
    let l = TfLink::new(noisy, 30.0, TfEmulation::default()).expect("valid");
    let (g, e) = l.matched();
    let (g0, e0) = link(30.0).matched();
    assert!(
        e / g > 2.0 * e0 / g0,
        "noise raises the error: {} vs {}",
        e / g,
        e0 / g0
    );
    let mut em = TfEmulator::new(l.clone(), 1e-3).expect("window");
    let mut total = TfStats::default();
    for _ in 0..200 {
        add(&mut total, &l.tally(&em.step_events()));
    }
    binom_z(
        "noisy matched errors",
        total.matched_errors,
        total.matched_clicks,
        e / g,
    );
}

#[test]
fn same_seed_same_clicks_and_bad_values_named() {
    let a = TfEmulator::new(link(40.0), 1e-3).expect("w").step_events();
    let b = TfEmulator::new(link(40.0), 1e-3).expect("w").step_events();
    assert_eq!(a, b);
    assert!(!a.clicks.is_empty());
    let e = TfLink::new(
        TwinField {
            mode_visibility: 1.5,
            ..hw()
        },
        30.0,
        TfEmulation::default(),
    )
    .expect_err("visibility");
    assert_eq!(e.field, "hardware.mode_visibility");
    assert_eq!(
        TfLink::new(hw(), -1.0, TfEmulation::default())
            .expect_err("loss")
            .field,
        "channel.loss_db"
    );
}

#[test]
fn phase_error_process_has_the_budget_variance_and_interval_memory() {
    use rand::SeedableRng;
    let mut noisy = hw();
    noisy.phase_noise.fibre_drift_rad_per_s = 3000.0; // (ωT)²/3 = 0.03 rad²
    noisy.phase_noise.residual_rms_rad = 0.1;
    let l = TfLink::new(noisy, 30.0, TfEmulation::default()).expect("valid");
    let e = TfEmulator::new(l, 1e-3).expect("window");
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(9);
    // One pulse per 37 µs over 4 s: many correction intervals (100 µs), a few pulses each.
    let n = 108_000u64;
    let v: Vec<f64> = (0..n)
        .map(|i| e.phase_error(&mut rng, i * 37_000))
        .collect();
    let ms = v.iter().map(|x| x * x).sum::<f64>() / n as f64;
    let want = noisy.phase_noise.variance();
    // The mean square of a mixture: sd of the estimate ≈ √(Var(ν²)/n) ≤ √(3σ⁴·2/n).
    z(
        "mean-square phase error",
        ms,
        want,
        want * (6.0 / n as f64).sqrt(),
    );
    // Pulses 20 and 21 µs into one 100 µs correction interval share its residual error
    // and drift direction: covariance σ_res² + ω² · 20 µs · 21 µs.
    let pairs: Vec<(f64, f64)> = (0..20_000u64)
        .map(|i| {
            let p = i * 1_000_000 + 20_000;
            (
                e.phase_error(&mut rng, p),
                e.phase_error(&mut rng, p + 1_000),
            )
        })
        .collect();
    let cov = pairs.iter().map(|(a, b)| a * b).sum::<f64>() / pairs.len() as f64;
    let expect = 0.01 + 3000.0f64.powi(2) * 20e-6 * 21e-6;
    assert!(
        (cov / expect - 1.0).abs() < 0.1,
        "interval memory: covariance {cov} vs {expect} (variance {want})"
    );
}

/// PM-QKD at event and window level: each user sends a signal (either bit) with `p_z`,
/// else the weak decoy or vacuum; matched key pairs click and err as keyrate's forward
/// model says (Ma, Zeng, Zhou 2018: the matched error rate is the key error E_μ), and
/// matched weak-decoy pairs click at their matched gain.
#[test]
fn pm_qkd_matched_key_errors_match_keyrate() {
    let pm = TwinField {
        variant: TfVariant::Pm,
        mu_signal: 0.1,
        mu_decoy1: 0.02,
        p_z: 0.8,
        ..hw()
    };
    let l = TfLink::new(pm, 30.0, TfEmulation::default()).expect("valid");
    assert!(l.is_pm());
    let mut e = TfEmulator::new(l.clone(), 1e-3).expect("window");
    let mut total = TfStats::default();
    for _ in 0..300 {
        add(&mut total, &l.tally(&e.step_events()));
    }
    let pulses = 300 * 1_000_000;
    assert_eq!(total.sent.iter().flatten().sum::<u64>(), pulses);
    let key_sent: u64 = total.sent[0][0] + total.sent[0][1] + total.sent[1][0] + total.sent[1][1];
    binom_z("PM key pairs sent", key_sent, pulses, 0.8 * 0.8);
    let decoy = 0.2 * qkdnet_keyrate::tf::PM_DECOY_SHARE;
    binom_z(
        "PM weak-decoy pairs sent",
        total.sent[3][3],
        pulses,
        decoy * decoy,
    );
    let (g, err) = l.matched();
    binom_z(
        "PM matched clicks",
        total.matched_clicks,
        key_sent,
        2.0 / 16.0 * g,
    );
    binom_z(
        "PM matched weak-decoy clicks",
        total.matched_decoy_clicks,
        total.sent[3][3],
        2.0 / 16.0 * l.matched_decoy_gain(),
    );
    // keyrate's PM key error E_μ (Ma, Zeng, Zhou 2018) is the matched error rate.
    assert!((l.qber_z() - err / g).abs() < 1e-12);
    binom_z(
        "PM key errors",
        total.matched_errors,
        total.matched_clicks,
        l.qber_z(),
    );
    assert!(total.matched_clicks > 2_000, "{total:?}");
    // Window level: the same counts from the closed forms.
    let mut w = TfEmulator::new(l.clone(), 1e-3).expect("window");
    let mut stats = TfStats::default();
    for _ in 0..300 {
        add(&mut stats, &w.step_stats());
    }
    binom_z(
        "PM matched weak-decoy pairs (window level)",
        stats.matched_decoy_sent,
        stats.sent[3][3],
        2.0 / 16.0,
    );
    binom_z(
        "PM matched weak-decoy clicks (window level)",
        stats.matched_decoy_clicks,
        stats.matched_decoy_sent,
        l.matched_decoy_gain(),
    );
}

/// Faults act window by window at both fidelities: a 3 dB loss step on Alice's arm
/// (clicks as the faulted link predicts), Bob's fibre cut (only Alice's light), the relay's
/// detectors cooling (nothing at all), and the clear link again afterwards.
#[test]
fn faults_act_on_the_relay_clicks() {
    use qkdnet_emulator::faults::{Fault, FaultKind, FaultState, Side};
    let w = 0.002; // seconds per window: 2 M pulses
    let mut step = Fault::new(FaultKind::LossStep, Side::Alice, w, w);
    step.loss_db = 3.0;
    let faults = vec![
        step,
        Fault::new(FaultKind::FibreCut, Side::Bob, 2.0 * w, w),
        Fault::new(FaultKind::DetectorCooling, Side::Both, 3.0 * w, w),
    ];
    let base = link(20.0).with_faults(faults.clone()).expect("faults");
    // The checks below have the power to see the faults: the loss step halves Alice's
    // arriving light, which the clear link's click rate would miss by hundreds of σ.
    let clear = base.under(&FaultState::CLEAR);
    let stepped = base.under(&FaultState::at(&faults, 1.5 * w));
    assert!(stepped.single_click(1, 0) < 0.6 * clear.single_click(1, 0));
    let mut ev = TfEmulator::new(base.clone(), w).expect("window");
    let mut st = TfEmulator::new(base.clone(), w).expect("window");
    for k in 0..5u32 {
        let state = FaultState::at(&faults, (f64::from(k) + 0.5) * w);
        let expect = base.under(&state);
        let s = st.step_stats();
        let e = ev.step_events();
        if k == 3 {
            assert!(e.clicks.is_empty() && s.single.iter().flatten().all(|&c| c == 0));
            continue;
        }
        check(&expect, &s, &format!("window level, window {k}"));
        let tally = expect.tally(&e);
        let clicks: u64 = tally.single.iter().flatten().sum();
        let p: f64 = (0..SETTINGS)
            .flat_map(|a| (0..SETTINGS).map(move |b| (a, b)))
            .map(|(a, b)| e.sent[a][b] as f64 * expect.single_click(a, b))
            .sum();
        z(
            &format!("event level, window {k}: single clicks"),
            clicks as f64,
            p,
            p.max(1.0).sqrt(),
        );
    }
    // Kinds a twin-field link cannot have are named.
    let mut glitch = Fault::new(FaultKind::ClockGlitch, Side::Bob, 1.0, 0.0);
    glitch.offset_ps = 10.0;
    let e = link(40.0).with_faults(vec![glitch]).expect_err("glitch");
    assert_eq!(e.field, "fault[0].kind");
}

/// The phase actuator: with the reference held 0.6 rad off, the matched pairs' clicks and
/// errors at event and window level follow the forward model with that offset (the error
/// rate well above the aligned one).
#[test]
fn a_phase_offset_moves_the_matched_errors() {
    let l = link(20.0);
    let off = l.with_offset(-0.6);
    let (g0, e0) = l.matched();
    let (g, e) = off.matched();
    assert!(e / g > e0 / g0 + 0.05, "{} vs {}", e / g, e0 / g0);
    let m = l.model().hw.phase_slices as f64;
    let (mut ev, mut st) = (
        TfEmulator::new(l.clone(), 0.01).expect("window"),
        TfEmulator::new(l.clone(), 0.01).expect("window"),
    );
    ev.actuators.phase_rad = 0.6;
    st.actuators.phase_rad = 0.6;
    let (mut s_ev, mut s_st) = (TfStats::default(), TfStats::default());
    for _ in 0..20 {
        let w = ev.step_events();
        s_ev += &off.tally(&w);
        s_st += &st.step_stats();
    }
    for (what, s) in [("event", &s_ev), ("window", &s_st)] {
        binom_z(
            &format!("{what} level: matched clicks at 0.6 rad"),
            s.matched_clicks,
            s.sent[3][3],
            2.0 / m * g,
        );
        binom_z(
            &format!("{what} level: matched errors at 0.6 rad"),
            s.matched_errors,
            s.matched_clicks,
            e / g,
        );
    }
}
