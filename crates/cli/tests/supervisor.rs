//! The supervisor on the emulated Nice link with a compressed fault history, at window
//! level: every fault is found, each costs exactly one automatic restart, and the
//! availability is the time without faults less the re-acquisitions.

use qkdnet_emulator::bbm92::{Bbm92Emulation, Bbm92Emulator, Bbm92Link};
use qkdnet_emulator::faults::{Fault, FaultKind, Side};
use qkdnet_keyrate::bbm92::Bbm92Cw;
use qkdnet_link::supervisor::{
    Action, LinkState, Observation, Supervisor, SupervisorConfig, Tally, WindowLockModel,
};

fn fault(kind: FaultKind, side: Side, start_s: f64, duration_s: f64) -> Fault {
    Fault {
        loss_db: 8.0,
        offset_ps: 40_000.0,
        ..Fault::new(kind, side, start_s, duration_s)
    }
}

#[test]
fn every_fault_costs_one_restart_and_the_rest_produces() {
    let faults = vec![
        fault(FaultKind::DetectorCooling, Side::Alice, 600.0, 300.0),
        fault(FaultKind::LossStep, Side::Bob, 1800.0, 300.0),
        fault(FaultKind::DetectorCooling, Side::Bob, 3000.0, 300.0),
        fault(FaultKind::ClockGlitch, Side::Bob, 4200.0, 0.0),
        fault(FaultKind::DetectorCooling, Side::Alice, 5400.0, 300.0),
    ];
    let hw = Bbm92Cw {
        pump_power_mw: 5.0,
        coincidence_fwhm_ps: 150.0,
        ..Bbm92Cw::default()
    };
    let emu = Bbm92Emulation {
        seed: 31,
        phase_drift_rad_per_sqrt_s: 0.0,
        polarisation_drift_rad_per_sqrt_s: 0.0,
        ..Bbm92Emulation::default()
    };
    let link = Bbm92Link::new(hw, 33.5, 50.0, emu, faults).expect("valid");
    let mut e = Bbm92Emulator::new(link, 0.5).expect("window");
    let mut sup = Supervisor::new(SupervisorConfig::default());
    let mut sync = WindowLockModel::default();
    for _ in 0..(2 * 3600 * 2) {
        let s = e.step_stats();
        let c = s.conditions;
        let singles = [s.singles[0].iter().sum(), s.singles[1].iter().sum()];
        let locked = sync.update(
            &qkdnet_network::runner::window_light(singles, &c),
            c.clock_jump_ps[1],
        );
        let t = |b: &qkdnet_emulator::bbm92::BasisCounts| Tally {
            coincidences: b.coincidences,
            errors: b.errors,
        };
        let obs = Observation {
            time_ps: c.start_ps + c.length_ps,
            length_ps: c.length_ps,
            singles,
            key: t(&s.z),
            test: t(&s.x),
            sync_locked: locked,
        };
        let (_, action) = sup.observe(&obs);
        if action == Action::Reacquire {
            sync.drop_lock();
        }
    }
    assert_eq!(sup.restarts, 5, "{:?}", sup.events);
    assert_eq!(sup.state(), LinkState::Producing);
    // Down: 4 × 300 s of faults, plus per fault the wait before a restart (3 s), the
    // re-acquisition (5 s) and stabilisation (2 s): about 1 250 s of 7 200.
    let a = sup.availability();
    assert!(
        (a - (1.0 - 1250.0 / 7200.0)).abs() < 0.01,
        "availability {a}"
    );
}
