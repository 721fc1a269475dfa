//! Statistical tests of the trapped-ion memory-link emulator at fixed seeds: heralding
//! rates against `keyrate::di::MemoryLink`, CHSH values and key errors against the
//! dephasing closed forms, window level against event level, deterministic delivery.

use qkdnet_emulator::ion::{tally, IonEmulation, IonEmulator, IonLink, IonStats};
use qkdnet_keyrate::di::MemoryLink;

mod common;
use common::z;

fn liu() -> IonLink {
    // The 10 km operating point of scenarios/ion-memory-10km.toml.
    IonLink::new(MemoryLink::default(), 2.0, 10.0, IonEmulation::default()).expect("valid")
}

fn bright(delay: f64) -> IonLink {
    let hw = MemoryLink {
        photon_efficiency: 0.5,
        ..MemoryLink::default()
    };
    let emu = IonEmulation {
        measure_delay_s: delay,
        ..IonEmulation::default()
    };
    IonLink::new(hw, 2.0, 10.0, emu).expect("valid")
}

fn events(link: IonLink, windows: u64, window_s: f64) -> (IonStats, Vec<f64>, Vec<u64>) {
    let mut e = IonEmulator::new(link, window_s).expect("window");
    let mut heralds = Vec::new();
    let mut fids = Vec::new();
    for _ in 0..windows {
        let w = e.step_events();
        heralds.extend(w.heralds);
        fids.extend(w.deliveries.iter().map(|d| d.fidelity));
    }
    assert!(heralds
        .windows(2)
        .all(|w| w[0].time_ps < w[1].time_ps && w[0].attempt < w[1].attempt));
    let attempts = heralds.iter().map(|h| h.attempt).collect();
    (tally(&heralds), fids, attempts)
}

fn check_chsh(link: &IonLink, s: &IonStats, t: f64, what: &str) {
    let mut var = 0.0;
    for a in 0..2 {
        for b in 0..2 {
            let n = s.chsh_pairs[a][b] as f64;
            let e = 2.0 * link.agree_probability(a, b, t) - 1.0;
            var += (1.0 - e * e) / n;
        }
    }
    z(
        &format!("{what}: CHSH"),
        s.chsh(),
        link.chsh_after(t),
        var.sqrt(),
    );
    let n = s.key_pairs as f64;
    let q = link.key_error();
    z(
        &format!("{what}: key errors"),
        s.key_errors as f64,
        n * q,
        (n * q * (1.0 - q)).sqrt(),
    );
}

#[test]
fn heralding_rate_matches_keyrate_at_10km() {
    let link = liu();
    let p = link.point();
    // keyrate's 10 km point: generation time ≈ 450 ms (η_link 1.22).
    assert!((p.generation_time_s - 0.45).abs() < 0.05, "{p:?}");
    let seconds = 4000.0;
    let (s, _, attempts) = events(link, 400, 10.0);
    let expect = seconds / p.generation_time_s;
    z("heralds in 4000 s", s.heralds as f64, expect, expect.sqrt());
    // Attempts between heralds are geometric with mean 1/p.
    let gaps: Vec<f64> = attempts.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    let sd =
        ((1.0 - p.success_probability).sqrt() / p.success_probability) / (gaps.len() as f64).sqrt();
    z(
        "mean attempts per herald",
        mean,
        1.0 / p.success_probability,
        sd,
    );
}

#[test]
fn chsh_and_key_errors_follow_dephasing() {
    for delay in [0.0, 0.3] {
        let link = bright(delay);
        let (s, _, _) = events(link.clone(), 40, 1.0);
        assert!(s.heralds > 5_000, "{s:?}");
        // Measured after `delay`: S = √2 V (1 + e^{−t/T}), key error (1 − V)/2.
        check_chsh(&link, &s, delay, &format!("after {delay} s"));
    }
    // Fresh pairs violate CHSH; after 0.3 s of a 0.55 s coherence far less.
    assert!(bright(0.0).chsh_after(0.0) > 2.3);
    assert!(bright(0.3).chsh_after(0.3) < 2.05);
}

#[test]
fn window_level_agrees_with_event_level() {
    let link = bright(0.0);
    let (ev, _, _) = events(link.clone(), 40, 1.0);
    let mut w = IonEmulator::new(link.clone(), 1.0).expect("window");
    let mut st = IonStats::default();
    for _ in 0..40 {
        st.add(&w.step_stats());
    }
    let expect = 40.0 * link.point().attempt_rate_hz * link.point().success_probability;
    z(
        "window-level heralds",
        st.heralds as f64,
        expect,
        expect.sqrt(),
    );
    // Two samples of the same Poisson-like count.
    z(
        "event vs window heralds",
        ev.heralds as f64 - st.heralds as f64,
        0.0,
        (ev.heralds as f64 + st.heralds as f64).sqrt(),
    );
    check_chsh(&link, &st, 0.0, "window level");
    check_chsh(&link, &ev, 0.0, "event level");
}

#[test]
fn deterministic_delivery_fidelity() {
    let link = liu();
    let (_, fids, _) = events(link.clone(), 2000, 10.0);
    assert_eq!(fids.len(), 19_999);
    // Skip the start (memory empty), then average.
    let f = &fids[100..];
    let mean = f.iter().sum::<f64>() / f.len() as f64;
    let want = link.expected_delivery_fidelity();
    // Deliveries 1 s apart see overlapping ages; with η_link ≈ 1.2 the age decorrelates
    // within a few deliveries, so a 0.01 band is many standard deviations wide.
    assert!((mean - want).abs() < 0.01, "mean fidelity {mean} vs {want}");
    assert!(want > 0.5 && want < link.fidelity_after(0.0));
}

#[test]
fn same_seed_same_heralds_and_bad_values_named() {
    let a = IonEmulator::new(liu(), 100.0).expect("w").step_events();
    let b = IonEmulator::new(liu(), 100.0).expect("w").step_events();
    assert_eq!(a, b);
    let e = IonLink::new(
        MemoryLink::default(),
        2.0,
        10.0,
        IonEmulation {
            key_fraction: 1.5,
            ..IonEmulation::default()
        },
    )
    .expect_err("fraction");
    assert_eq!(e.field, "emulator.key_fraction");
    let e = IonLink::new(
        MemoryLink {
            herald_fidelity: 1.2,
            ..MemoryLink::default()
        },
        2.0,
        10.0,
        IonEmulation::default(),
    )
    .expect_err("fidelity");
    assert_eq!(e.field, "hardware.herald_fidelity");
}

/// Faults on the ion link: a 3 dB loss step on both arms halves each photon's
/// transmittance and so the heralding rate (p ∝ one arm's transmittance), a cut or a
/// cooling cycle of the station's detectors stops the heralds — at event and window
/// level; a clock glitch (the ion link has no tagger clocks) is refused, naming the field.
#[test]
fn faults_act_on_the_heralds() {
    use qkdnet_emulator::faults::{Fault, FaultKind, Side};
    let mut step = Fault::new(FaultKind::LossStep, Side::Both, 10.0, 10.0);
    step.loss_db = 10.0 * 2f64.log10();
    let faults = vec![
        step,
        Fault::new(FaultKind::FibreCut, Side::Both, 20.0, 5.0),
        Fault::new(FaultKind::DetectorCooling, Side::Alice, 25.0, 5.0),
    ];
    let link = bright(0.0).with_faults(faults).expect("valid");
    let rate = link.point().attempt_rate_hz * link.point().success_probability;
    // Event level, one window per second: heralds per second in each phase.
    let mut e = IonEmulator::new(link.clone(), 1.0).expect("window");
    let per_window: Vec<u64> = (0..40)
        .map(|_| e.step_events().heralds.len() as u64)
        .collect();
    let mut w = IonEmulator::new(link, 1.0).expect("window");
    let stats: Vec<u64> = (0..40).map(|_| w.step_stats().heralds).collect();
    for (what, counts) in [("event", &per_window), ("window", &stats)] {
        let sum = |a: usize, b: usize| counts[a..b].iter().sum::<u64>() as f64;
        z(
            &format!("{what}: clear"),
            sum(0, 10),
            10.0 * rate,
            (10.0 * rate).sqrt(),
        );
        z(
            &format!("{what}: 3 dB step"),
            sum(10, 20),
            5.0 * rate,
            (5.0 * rate).sqrt(),
        );
        assert_eq!(sum(20, 30), 0.0, "{what}: cut and cooling");
        z(
            &format!("{what}: after"),
            sum(30, 40),
            10.0 * rate,
            (10.0 * rate).sqrt(),
        );
    }
    let mut glitch = Fault::new(FaultKind::ClockGlitch, Side::Bob, 1.0, 0.0);
    glitch.offset_ps = 1000.0;
    let e = bright(0.0)
        .with_faults(vec![glitch])
        .expect_err("no clock to glitch");
    assert_eq!(e.field, "fault[0].kind");
}

#[test]
fn one_arm_faults_and_excitation_drops_change_the_heralded_state() {
    use qkdnet_emulator::faults::{Fault, FaultKind, Side};
    // 0–400 s clear; 400–800 s Bob's arm cut; 800–1200 s both excitations halved.
    let mut drop = Fault::new(FaultKind::PumpDrop, Side::Both, 800.0, 400.0);
    drop.factor = 0.5;
    let faults = vec![
        Fault::new(FaultKind::FibreCut, Side::Bob, 400.0, 400.0),
        drop,
    ];
    let link = bright(0.0).with_faults(faults).expect("valid");
    let clear = link.herald_state_at(0.0);
    let cut = link.herald_state_at(500.0);
    let dropped = link.herald_state_at(900.0);
    assert_eq!(clear, link.nominal_state());
    // One arm: half the heralds, no coherence, CHSH √2 V < 2, the same key error.
    assert!((cut.success_probability / clear.success_probability - 0.5).abs() < 1e-12);
    assert_eq!(cut.coherence, 0.0);
    assert!(cut.chsh_after(0.0) < 2.0);
    assert_eq!(cut.key_error(), clear.key_error());
    // Half the excitation: half the heralds, fewer double excitations, a better pair.
    assert!((dropped.success_probability / clear.success_probability - 0.5).abs() < 1e-12);
    assert_eq!(dropped.coherence, 1.0);
    assert!(dropped.fidelity_after(0.0) > clear.fidelity_after(0.0));
    assert!(dropped.chsh_after(0.0) > clear.chsh_after(0.0));
    // The excitation actuator does what a drop does; disabled detectors herald nothing.
    use qkdnet_emulator::ion::IonActuators;
    let half = IonActuators {
        excitation: [0.5, 0.5],
        ..IonActuators::default()
    };
    assert_eq!(link.herald_state(0.0, &half), dropped);
    let off = IonActuators {
        detectors_enabled: false,
        ..IonActuators::default()
    };
    assert_eq!(link.herald_state(0.0, &off).success_probability, 0.0);
    // Both fidelities hold them to these closed forms.
    let phases = [
        (0usize, 400usize, clear),
        (400, 800, cut),
        (800, 1200, dropped),
    ];
    let mut e = IonEmulator::new(link.clone(), 10.0).expect("window");
    let ev: Vec<IonStats> = (0..120).map(|_| tally(&e.step_events().heralds)).collect();
    let mut w = IonEmulator::new(link, 10.0).expect("window");
    let win: Vec<IonStats> = (0..120).map(|_| w.step_stats()).collect();
    let attempts_per_s = w.link().point().attempt_rate_hz;
    for (what, stats) in [("event", &ev), ("window", &win)] {
        for &(from, to, state) in &phases {
            let mut sum = IonStats::default();
            for s in &stats[from / 10..to / 10] {
                sum.add(s);
            }
            let expect = (to - from) as f64 * attempts_per_s * state.success_probability;
            let label = format!("{what} {from}–{to} s");
            z(
                &format!("{label}: heralds"),
                sum.heralds as f64,
                expect,
                expect.sqrt(),
            );
            let mut var = 0.0;
            for a in 0..2 {
                for b in 0..2 {
                    let c = 2.0 * state.agree_probability(a, b, 0.0) - 1.0;
                    var += (1.0 - c * c) / sum.chsh_pairs[a][b] as f64;
                }
            }
            z(
                &format!("{label}: CHSH"),
                sum.chsh(),
                state.chsh_after(0.0),
                var.sqrt(),
            );
            let (n, q) = (sum.key_pairs as f64, state.key_error());
            z(
                &format!("{label}: key errors"),
                sum.key_errors as f64,
                n * q,
                (n * q * (1.0 - q)).sqrt(),
            );
        }
    }
}
