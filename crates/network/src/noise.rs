//! Noise photons that classical channels put into a quantum channel, span by span along an
//! arm's route, counted at the arm's receiver inside the quantum channel's filter.
//!
//! - Raman scattering (`qkdnet_optics::raman::noise_power_w`, after Eraerds et al., NJP
//!   12, 063027 (2010), Eqs. (1)–(2)): forward scattering of channels launched at the
//!   span's transmitter end, backward scattering of channels launched at its receiver end.
//!   Each fibre's classical channels are launched and terminated at that fibre's ends.
//! - Crosstalk: a co-propagating classical channel's power at the span's end, suppressed
//!   by the quantum receiver's demultiplexer isolation (`adjacent_isolation_db` one grid
//!   slot away, `non_adjacent_isolation_db` further). Counter-propagating channels exit
//!   at the other end; their Rayleigh backscatter is left out.
//!
//! Both are attenuated by the spans between the span where they arise and the receiver.
//! A channel on the quantum channel's own grid slot is refused earlier (a clash).

use crate::grid;
use crate::spec::{Arm, Network, WdmPlan};
use qkdnet_optics::consts::photon_energy_j;
use qkdnet_optics::fibre::{db_to_transmittance, Fibre as OpticsFibre};
use qkdnet_optics::raman::{noise_power_w, ClassicalChannel, Direction};

/// Noise photon rates at one arm's receiver, photons/s inside the channel filter.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ArmNoise {
    /// Spontaneous Raman scattering.
    pub raman_hz: f64,
    /// Classical light leaking through the demultiplexer.
    pub crosstalk_hz: f64,
}

impl ArmNoise {
    /// Both together.
    pub fn total_hz(&self) -> f64 {
        self.raman_hz + self.crosstalk_hz
    }
}

/// Isolation of a quantum receiver on `channel` from a classical channel at
/// `classical_nm`, dB: adjacent within 1.5 of the channel's grid spacings, else non-adjacent.
pub fn isolation_db(wdm: &WdmPlan, channel: u32, classical_nm: f64) -> f64 {
    let slots = (grid::frequency_thz(channel) - grid::thz_of_nm(classical_nm)).abs()
        / grid::spacing_thz(channel);
    if slots < 1.5 {
        wdm.adjacent_isolation_db
    } else {
        wdm.non_adjacent_isolation_db
    }
}

/// The noise at `arm`'s receiver on channel `channel` (either grid), with every classical launch
/// power on the route shifted by `offset_db` (0 for the file's powers).
pub fn arm_noise(net: &Network, arm: &Arm, channel: u32, offset_db: f64) -> ArmNoise {
    let quantum_nm = grid::wavelength_nm(channel);
    let e_photon = photon_energy_j(quantum_nm);
    let mut out = ArmNoise::default();
    // Walk the route, tracking the node each span starts at.
    let mut at = arm.from;
    for (k, &fi) in arm.fibres.iter().enumerate() {
        let f = &net.fibres[fi];
        let start = at;
        // Routes are checked to join up when the file is read.
        at = crate::spec::other_end(f.ends, at).unwrap_or(f.ends[1]);
        // Loss from this span's end to the receiver.
        let after_db: f64 = arm.fibres[k + 1..]
            .iter()
            .map(|&g| net.fibres[g].loss_db_at(quantum_nm))
            .sum();
        let after = db_to_transmittance(after_db);
        let fibre = OpticsFibre {
            length_km: f.length_km,
            attenuation_db_per_km: f.loss_db_per_km,
            reference_wavelength_nm: f.loss_reference_nm,
            ..OpticsFibre::default()
        };
        for c in &f.classical {
            let direction = if c.from == start {
                Direction::CoPropagating
            } else {
                Direction::CounterPropagating
            };
            let launch = c.launch_power_dbm + offset_db;
            let ch = ClassicalChannel {
                wavelength_nm: c.wavelength_nm,
                launch_power_dbm: launch,
                direction,
            };
            let filter_nm = grid::passband_nm(channel, net.wdm.filter_bandwidth_nm);
            let raman_w = noise_power_w(&ch, quantum_nm, &fibre, filter_nm)
                * db_to_transmittance(f.extra_loss_db);
            out.raman_hz += raman_w * after / e_photon;
            if direction == Direction::CoPropagating {
                let iso = isolation_db(&net.wdm, channel, c.wavelength_nm);
                let span_t = db_to_transmittance(f.loss_db_at(c.wavelength_nm));
                let leak_w =
                    qkdnet_optics::consts::dbm_to_watts(launch) * span_t * db_to_transmittance(iso);
                out.crosstalk_hz += leak_w * after / e_photon;
            }
        }
    }
    out
}

/// Whether any fibre on the arm carries classical channels.
pub fn has_classical(net: &Network, arm: &Arm) -> bool {
    arm.fibres
        .iter()
        .any(|&f| !net.fibres[f].classical.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse;
    use std::path::Path;

    fn two_spans(from: &str, power: f64) -> Network {
        let text = format!(
            r#"
name = "t"
[[node]]
id = "a"
[[node]]
id = "m"
kind = "patch"
[[node]]
id = "b"
[[fibre]]
id = "am"
ends = ["a", "m"]
length_km = 10.0
classical = [{{ from = "{from}", itu_channel = 40, launch_power_dbm = {power} }}]
[[fibre]]
id = "mb"
ends = ["m", "b"]
length_km = 15.0
[[link]]
id = "l"
protocol = "decoy-bb84"
ends = ["a", "b"]
"#
        );
        parse(&text, Path::new("t.toml")).expect("valid")
    }

    #[test]
    fn raman_is_the_optics_span_noise_carried_through_the_later_spans() {
        let net = two_spans("a", 0.0);
        let got = arm_noise(&net, &net.links[0].arms[0], 20, 0.0);
        let q = grid::wavelength_nm(20);
        let span = OpticsFibre {
            length_km: 10.0,
            attenuation_db_per_km: 0.2,
            reference_wavelength_nm: 1550.0,
            ..OpticsFibre::default()
        };
        // The second span (15 km) at the quantum wavelength: a little under 3 dB at
        // 1561 nm (Rayleigh scattering falls as λ⁻⁴).
        let after = net.fibres[1].loss_db_at(q);
        assert!(after < 3.0 && after > 2.9, "{after}");
        let ch = ClassicalChannel {
            wavelength_nm: grid::wavelength_nm(40),
            launch_power_dbm: 0.0,
            direction: Direction::CoPropagating,
        };
        let want =
            noise_power_w(&ch, q, &span, 0.6) * db_to_transmittance(after) / photon_energy_j(q);
        assert!(
            (got.raman_hz / want - 1.0).abs() < 1e-12,
            "{} {want}",
            got.raman_hz
        );
        // Crosstalk: the classical power after the first span (at its own wavelength), 110 dB
        // down, then the second span at the quantum wavelength.
        let first = net.fibres[0].loss_db_at(grid::wavelength_nm(40));
        let leak = 1e-3 * db_to_transmittance(first + 110.0 + after) / photon_energy_j(q);
        assert!((got.crosstalk_hz / leak - 1.0).abs() < 1e-12);
        // Shifting the launch power by 10 dB scales both by 10.
        let up = arm_noise(&net, &net.links[0].arms[0], 20, 10.0);
        assert!((up.total_hz() / got.total_hz() - 10.0).abs() < 1e-9);
    }

    #[test]
    fn counter_propagating_traffic_brings_backward_raman_but_no_crosstalk() {
        let co = two_spans("a", 0.0);
        let counter = two_spans("m", 0.0);
        let a = arm_noise(&co, &co.links[0].arms[0], 20, 0.0);
        let b = arm_noise(&counter, &counter.links[0].arms[0], 20, 0.0);
        assert_eq!(b.crosstalk_hz, 0.0);
        // Over 10 km backward scattering collects more than forward (no e^{−αL} on all of it).
        assert!(
            b.raman_hz > a.raman_hz && b.raman_hz < 2.0 * a.raman_hz,
            "{b:?} {a:?}"
        );
    }

    #[test]
    fn adjacent_channels_get_the_weaker_isolation() {
        let w = WdmPlan::default();
        assert_eq!(isolation_db(&w, 40, grid::wavelength_nm(41)), 80.0);
        assert_eq!(isolation_db(&w, 40, grid::wavelength_nm(39)), 80.0);
        assert_eq!(isolation_db(&w, 40, grid::wavelength_nm(42)), 110.0);
        // A CWDM band's neighbours are a 20 nm slot away.
        assert_eq!(isolation_db(&w, 1311, 1290.0), 80.0);
        assert_eq!(isolation_db(&w, 1311, 1550.0), 110.0);
    }
}
