//! The link's control loops on the emulated Nice link at window level (0.5 s windows, as
//! Nice runs them): the phase lock tracks the analysers' drift, the polarisation lock
//! holds the detection efficiency, the pump steering reaches the QBER_Z target.
//! The loops see only per-window counts; the emulator's drifts are the truth.

use qkdnet_emulator::bbm92::{Bbm92Emulation, Bbm92Emulator, Bbm92Link};
use qkdnet_keyrate::bbm92::Bbm92Cw;
use qkdnet_link::control::{PhaseLock, PolarisationLock, PumpSteering};

fn link(emu: Bbm92Emulation) -> Bbm92Link {
    let hw = Bbm92Cw {
        pump_power_mw: 5.0,
        coincidence_fwhm_ps: 150.0,
        ..Bbm92Cw::default()
    };
    Bbm92Link::new(hw, 33.5, 50.0, emu, vec![]).expect("valid")
}

fn mean_qber_x(locked: bool) -> (f64, f64) {
    let emu = Bbm92Emulation {
        seed: 21,
        phase_offset_rad: 1.0,
        phase_drift_rad_per_sqrt_s: 0.05,
        polarisation_drift_rad_per_sqrt_s: 0.0,
        ..Bbm92Emulation::default()
    };
    let l = link(emu);
    let mut e = Bbm92Emulator::new(l.clone(), 0.5).expect("window");
    let mut lock = PhaseLock::new(0.0, l.hardware().visibility_test);
    let (mut err, mut n) = (0u64, 0u64);
    for w in 0..7200 {
        if locked {
            e.actuators.phase_rad[0] = lock.setting();
        }
        let s = e.step_stats();
        lock.update(s.x.errors, s.x.coincidences);
        if w >= 600 {
            err += s.x.errors;
            n += s.x.coincidences;
        }
    }
    // The floor: QBER_X with the phase sum at 0.
    let c = l.conditions(
        0,
        e.window_ps(),
        &Default::default(),
        &l.initial_actuators(),
    );
    let mut c0 = c;
    c0.p_agree = 0.5 * (1.0 + l.hardware().visibility_test);
    (err as f64 / n as f64, l.expected(&c0).qber_x())
}

#[test]
fn phase_lock_tracks_the_analyser_drift() {
    let (locked, floor) = mean_qber_x(true);
    let (free, _) = mean_qber_x(false);
    eprintln!("QBER_X locked {locked:.4}, free {free:.4}, floor {floor:.4}");
    // One hour with a 0.05 rad/√s walk (3 rad rms): locked within 0.5 % of the floor
    // (the dither costs ~0.1 %), free-running far above it.
    assert!(
        locked - floor < 0.005,
        "locked QBER_X {locked}, floor {floor}"
    );
    assert!(free > floor + 0.05, "free-running QBER_X {free}");
}

#[test]
fn polarisation_lock_holds_the_efficiency() {
    let run = |locked: bool| {
        let emu = Bbm92Emulation {
            seed: 22,
            phase_drift_rad_per_sqrt_s: 0.0,
            polarisation_dependence: 0.3,
            polarisation_drift_rad_per_sqrt_s: 0.02,
            ..Bbm92Emulation::default()
        };
        let l = link(emu);
        let mut e = Bbm92Emulator::new(l.clone(), 0.5).expect("window");
        let nominal = l
            .conditions(
                0,
                e.window_ps(),
                &Default::default(),
                &l.initial_actuators(),
            )
            .p_detect[0];
        let mut lock = PolarisationLock::new(0.0, 0.3);
        let mut eff = 0.0;
        let windows = 7200;
        for _ in 0..windows {
            if locked {
                e.actuators.polarisation_rad[0] = lock.setting();
            }
            let s = e.step_stats();
            eff += s.conditions.p_detect[0] / nominal;
            lock.update(s.singles[0].iter().sum());
        }
        eff / windows as f64
    };
    let (locked, free) = (run(true), run(false));
    eprintln!("efficiency locked {locked:.4}, free {free:.4}");
    // Nice: "detection efficiency variation < 3 %" under control.
    assert!(locked > 0.97, "locked efficiency {locked}");
    assert!(
        free < locked - 0.02,
        "free-running efficiency {free} vs locked {locked}"
    );
}

#[test]
fn pump_steering_reaches_the_qber_z_target() {
    let emu = Bbm92Emulation {
        seed: 23,
        phase_drift_rad_per_sqrt_s: 0.0,
        polarisation_drift_rad_per_sqrt_s: 0.0,
        ..Bbm92Emulation::default()
    };
    let l = link(emu);
    let mut e = Bbm92Emulator::new(l.clone(), 0.5).expect("window");
    e.actuators.pump_mw = 1.0;
    let mut pump = PumpSteering::new(1.0, 0.043, 1000.0);
    for _ in 0..200 {
        let s = e.step_stats();
        let q = s.z.errors as f64 / s.z.coincidences.max(1) as f64;
        e.actuators.pump_mw = pump.update(q, s.z.coincidences);
    }
    // The pump at which the model's accidental-limited QBER_Z is 4.3 % (bisection).
    let qz = |p: f64| {
        let mut a = l.initial_actuators();
        a.pump_mw = p;
        l.expected(&l.conditions(0, e.window_ps(), &Default::default(), &a))
            .qber_z()
    };
    let (mut lo, mut hi) = (0.01f64, 100.0f64);
    for _ in 0..60 {
        let mid = (lo * hi).sqrt();
        if qz(mid) < 0.043 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    eprintln!("pump {:.3} mW, target pump {lo:.3} mW", pump.pump_mw);
    assert!(
        (pump.pump_mw / lo - 1.0).abs() < 0.1,
        "pump {} vs {lo}",
        pump.pump_mw
    );
}

/// Twin-field phase tracking: the two fields' reference walks at 0.02 rad/√s; the phase
/// lock, fed each 1 s window's matched weak-decoy pairs (clicks on the detector that should
/// be dark are errors), holds their error rate near the floor of the stabilised link;
/// free-running it climbs towards 50 %.
#[test]
fn twin_field_phase_tracking_follows_the_reference_drift() {
    use qkdnet_emulator::tf::{TfEmulation, TfEmulator, TfLink};
    use qkdnet_keyrate::tf::{TfVariant, TwinField};
    let hw = TwinField {
        variant: TfVariant::Sns,
        clock_hz: 1e9,
        detector_efficiency: 0.5,
        dark_count_probability: 1e-8,
        ..TwinField::default()
    };
    let emu = TfEmulation {
        seed: 5,
        phase_drift_rad_per_sqrt_s: 0.02,
    };
    let l = TfLink::new(hw, 20.0, emu).expect("valid");
    let (g0, e0) = l.matched();
    let floor = e0 / g0;
    let run = |locked: bool| {
        let mut e = TfEmulator::new(l.clone(), 1.0).expect("window");
        let mut lock = PhaseLock::new(0.0, hw.mode_visibility);
        let (mut err, mut n) = (0u64, 0u64);
        for w in 0..3600 {
            if locked {
                e.actuators.phase_rad = lock.setting();
            }
            let s = e.step_stats();
            lock.update(s.matched_errors, s.matched_clicks);
            if w >= 300 {
                err += s.matched_errors;
                n += s.matched_clicks;
            }
        }
        err as f64 / n as f64
    };
    let (locked, free) = (run(true), run(false));
    eprintln!("matched-pair error locked {locked:.4}, free {free:.4}, floor {floor:.4}");
    assert!(locked - floor < 0.01, "locked {locked}, floor {floor}");
    assert!(free > floor + 0.1, "free-running {free}");
}

/// Decoy-BB84 polarisation tracking: the frame walks at 0.5 rad/√s; a dithered loop on
/// each 1 ms window's key-basis error rate (QBER ≈ e + θ² near the optimum) holds it near
/// the hardware's misalignment floor; free-running it climbs far above.
#[test]
fn bb84_polarisation_tracking_follows_the_frame_drift() {
    use qkdnet_emulator::bb84::{tally, Bb84Emulation, Bb84Emulator, Bb84Link};
    use qkdnet_keyrate::decoy_bb84::DecoyBb84;
    use qkdnet_link::control::DitherLoop;
    let emu = Bb84Emulation {
        seed: 9,
        polarisation_drift_rad_per_sqrt_s: 0.5,
    };
    let l = Bb84Link::new(DecoyBb84::default(), 10.0, emu).expect("valid");
    let floor = l.expected(0).1 / l.expected(0).0;
    let run = |locked: bool| {
        let mut e = Bb84Emulator::new(l.clone(), 1e-3).expect("window");
        let mut lock = DitherLoop::new(0.0, 0.03, 0.5, 1.0, 0.3);
        let (mut err, mut n) = (0.0, 0.0);
        for w in 0..2000 {
            if locked {
                e.actuators.polarisation_rad = lock.setting();
            }
            let t = tally(&e.step_events());
            let (c, x) = (t.clicks[0][0] as f64, t.errors[0][0]);
            lock.update((c > 100.0).then(|| x / c));
            if w >= 200 {
                err += x;
                n += c;
            }
        }
        err / n
    };
    let (locked, free) = (run(true), run(false));
    eprintln!("BB84 QBER locked {locked:.4}, free {free:.4}, floor {floor:.4}");
    assert!(locked - floor < 0.01, "locked {locked}, floor {floor}");
    assert!(free > floor + 0.05, "free-running {free}");
}
