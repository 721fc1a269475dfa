//! The emulated BBM92 link as two node devices: each node's handle is a
//! [`Frontend`] that gives that node's time tags on its own clock and drives that node's
//! actuators, while one emulation behind both keeps the pairs correlated.
//!
//! The handles share the emulator in one thread (virtual time in one process): asking
//! either node for its records up to a time steps the emulation as far as needed and
//! queues the other node's records for it.

use crate::bbm92::Bbm92Emulator;
use qkdnet_core::frontend::{Actuation, Frontend, FrontendError};
use qkdnet_core::timetag::TimeTag;
use std::cell::RefCell;
use std::rc::Rc;

#[derive(Debug)]
struct Shared {
    emu: Bbm92Emulator,
    queues: [Vec<TimeTag>; 2],
}

/// One node (0 = Alice, 1 = Bob) of an emulated link.
#[derive(Debug, Clone)]
pub struct NodeFrontend {
    shared: Rc<RefCell<Shared>>,
    side: usize,
}

/// Splits an emulation into its two nodes' devices.
pub fn node_frontends(emu: Bbm92Emulator) -> [NodeFrontend; 2] {
    let shared = Rc::new(RefCell::new(Shared {
        emu,
        queues: [Vec::new(), Vec::new()],
    }));
    [
        NodeFrontend {
            shared: shared.clone(),
            side: 0,
        },
        NodeFrontend { shared, side: 1 },
    ]
}

impl NodeFrontend {
    /// Which node: 0 Alice, 1 Bob.
    pub fn side(&self) -> usize {
        self.side
    }
}

impl Frontend for NodeFrontend {
    fn records_until(&mut self, until_ps: i64) -> Result<Option<Vec<TimeTag>>, FrontendError> {
        let mut sh = self.shared.borrow_mut();
        let s = self.side;
        // A detection read before `until_ps` on this node's clock happened before this
        // true time; the emulator's windows are in emission time and reach the node a
        // fibre delay later, so emulate until the next window starts past it.
        let link = sh.emu.link().clone();
        let true_until = link.to_true(s, until_ps);
        let delay = link.fibre_delay_ps()[s] + sh.emu.actuators.delay_ps[s].max(0.0);
        while sh.emu.now_ps() as f64 + delay - 1e6 <= true_until as f64 {
            let w = sh.emu.step_events();
            for (q, tags) in sh.queues.iter_mut().zip(w.tags) {
                q.extend(tags);
            }
        }
        let q = &mut sh.queues[s];
        let n = q.partition_point(|t| t.time_ps < until_ps);
        Ok(Some(q.drain(..n).collect()))
    }

    fn actuate(&mut self, actuation: Actuation) -> Result<(), FrontendError> {
        let mut sh = self.shared.borrow_mut();
        let s = self.side;
        let range = |v: f64, ok: bool, reason: &'static str| {
            if v.is_finite() && ok {
                Ok(v)
            } else {
                Err(FrontendError::OutOfRange {
                    actuator: actuation.name(),
                    value: v,
                    reason,
                })
            }
        };
        let max_pump = sh.emu.link().hardware().max_pump_power_mw;
        let a = &mut sh.emu.actuators;
        match actuation {
            Actuation::PumpPowerMw(p) => {
                a.pump_mw = range(
                    p,
                    (0.0..=max_pump).contains(&p),
                    "0 to the source's maximum",
                )?
            }
            Actuation::PhaseRad(p) => a.phase_rad[s] = range(p, p.abs() < 1e6, "finite")?,
            Actuation::PolarisationRad(p) => {
                a.polarisation_rad[s] = range(p, p.abs() < 1e6, "finite")?
            }
            Actuation::DelayPs(d) => {
                a.delay_ps[s] = range(d, (0.0..1e12).contains(&d), "0 to 1 s")?
            }
            Actuation::DetectorsEnabled(on) => a.detectors_enabled[s] = on,
        }
        Ok(())
    }
}
