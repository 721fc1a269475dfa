//! The emulated link seen as two node devices: same records as the emulator gives
//! directly, whichever node asks first, and actuators that act.

use qkdnet_core::frontend::{Actuation, Frontend, FrontendError};
use qkdnet_core::timetag::TimeTag;
use qkdnet_emulator::bbm92::{Bbm92Emulation, Bbm92Emulator, Bbm92Link};
use qkdnet_emulator::frontend::node_frontends;
use qkdnet_keyrate::bbm92::Bbm92Cw;

fn emulator() -> Bbm92Emulator {
    let hw = Bbm92Cw {
        pump_power_mw: 0.5,
        coincidence_fwhm_ps: 150.0,
        ..Bbm92Cw::default()
    };
    let emu = Bbm92Emulation {
        seed: 5,
        clock_offset_ps: [0.0, 3.0e9],
        ..Bbm92Emulation::default()
    };
    let link = Bbm92Link::new(hw, 33.5, 50.0, emu, vec![]).expect("valid");
    Bbm92Emulator::new(link, 0.01).expect("window")
}

#[test]
fn node_handles_give_the_emulators_records_whoever_asks_first() {
    let [mut a, mut b] = node_frontends(emulator());
    let step = 50_000_000_000i64; // 50 ms
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    for k in 1..=8 {
        // Alternate who asks first.
        if k % 2 == 0 {
            got_b.extend(
                b.records_until(k * step + 3_000_000_000)
                    .expect("ok")
                    .expect("endless"),
            );
            got_a.extend(a.records_until(k * step).expect("ok").expect("endless"));
        } else {
            got_a.extend(a.records_until(k * step).expect("ok").expect("endless"));
            got_b.extend(
                b.records_until(k * step + 3_000_000_000)
                    .expect("ok")
                    .expect("endless"),
            );
        }
    }
    // The same emulation stepped directly.
    let mut e = emulator();
    let mut direct: [Vec<TimeTag>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..60 {
        let w = e.step_events();
        for (d, t) in direct.iter_mut().zip(w.tags) {
            d.extend(t);
        }
    }
    let end_a = 8 * step;
    let end_b = 8 * step + 3_000_000_000;
    let want_a: Vec<TimeTag> = direct[0]
        .iter()
        .copied()
        .filter(|t| t.time_ps < end_a)
        .collect();
    let want_b: Vec<TimeTag> = direct[1]
        .iter()
        .copied()
        .filter(|t| t.time_ps < end_b)
        .collect();
    assert!(got_a.len() > 100_000);
    assert_eq!(got_a, want_a);
    assert_eq!(got_b, want_b);
}

#[test]
fn actuators_act_and_bad_values_are_refused() {
    let [mut a, mut b] = node_frontends(emulator());
    let step = 20_000_000_000i64;
    let before = a.records_until(step).expect("ok").expect("endless").len();
    a.actuate(Actuation::DetectorsEnabled(false)).expect("ok");
    // The change shows from the next emulated window (10 ms): skip one, then silence.
    let _ = a.records_until(2 * step + 20_000_000_000).expect("ok");
    let off = a
        .records_until(4 * step)
        .expect("ok")
        .expect("endless")
        .len();
    assert!(
        before > 1000 && off == 0,
        "before {before}, while off {off}"
    );
    b.actuate(Actuation::PumpPowerMw(0.05)).expect("ok");
    let e = b.actuate(Actuation::PumpPowerMw(-1.0)).unwrap_err();
    assert!(
        matches!(
            e,
            FrontendError::OutOfRange {
                actuator: "pump power",
                ..
            }
        ),
        "{e}"
    );
    assert!(b.actuate(Actuation::DelayPs(f64::NAN)).is_err());
}
