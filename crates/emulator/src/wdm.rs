//! Wavelength-division demultiplexing of SPDC pairs: the ITU DWDM 100 GHz grid and the
//! CWDM bands of the Nice network, energy conservation between a user pair's channels,
//! the source's spectral envelope, and adjacent-channel crosstalk.

use qkdnet_optics::consts::SPEED_OF_LIGHT_M_S;
use qkdnet_optics::ParamError;
use serde::{Deserialize, Serialize};

/// Which grid the channel numbers refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Grid {
    /// ITU-T G.694.1 DWDM grid at 100 GHz: channel `n` is at `190.0 THz + n · 100 GHz`
    /// (channel 34 = 193.40 THz = 1550.12 nm), `n` in 1..=72. Written `"dwdm-100ghz"`.
    #[serde(rename = "dwdm-100ghz")]
    Dwdm100Ghz,
    /// The four 18 nm CWDM bands of the Nice source (Lecaron et al. 2025): channel 0..=3
    /// centred at 1531, 1551, 1571, 1591 nm.
    Cwdm,
    /// The ITU-T G.694.2 CWDM grid: channels named by their nominal wavelength, 1271,
    /// 1291, …, 1611 nm, each with a 13 nm pass band (as the network planner's grid).
    /// Written `"cwdm-itu"`.
    #[serde(rename = "cwdm-itu")]
    CwdmItu,
}

/// Pass band of an ITU CWDM channel, nm (G.694.2: ±6.5 nm around the nominal wavelength).
pub const ITU_CWDM_PASSBAND_NM: f64 = 13.0;

/// The CWDM band centres of the Nice network, nm (Lecaron et al. 2025).
pub const CWDM_CENTRES_NM: [f64; 4] = [1531.0, 1551.0, 1571.0, 1591.0];
/// The CWDM band width, nm.
pub const CWDM_WIDTH_NM: f64 = 18.0;

/// Channel selection for one user pair.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Wdm {
    /// The grid.
    pub grid: Grid,
    /// Alice's channel number on the grid (long wavelengths go to Alice).
    pub alice_channel: u32,
    /// Bob's channel number on the grid.
    pub bob_channel: u32,
    /// Pump wavelength, nm (vacuum). Pair frequencies sum to the pump frequency.
    pub pump_wavelength_nm: f64,
    /// FWHM of the SPDC spectrum, nm (Gaussian envelope around the degenerate wavelength).
    pub spdc_fwhm_nm: f64,
    /// Leakage of each adjacent channel into a user's channel, dB (negative).
    pub adjacent_crosstalk_db: f64,
    /// Insertion loss of each side's demultiplexer, dB, on top of the channel loss.
    pub demux_loss_db: f64,
}

impl Default for Wdm {
    /// The Nice source (780.1 nm pump, 1560.2 nm centre, 80 nm FWHM) on DWDM channels 21
    /// and 22, the conjugate pair nearest degeneracy; −40 dB crosstalk ("negligible" in
    /// the paper); no demultiplexer loss beyond the scenario's channel loss.
    fn default() -> Self {
        Self {
            grid: Grid::Dwdm100Ghz,
            alice_channel: 21,
            bob_channel: 22,
            pump_wavelength_nm: 780.1,
            spdc_fwhm_nm: 80.0,
            adjacent_crosstalk_db: -40.0,
            demux_loss_db: 0.0,
        }
    }
}

/// The photon-pair budget of a channel pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChannelPair {
    /// Pair rate into this channel pair relative to the degenerate (centre) pair.
    pub relative_brightness: f64,
    /// Uncorrelated photons leaking in from the adjacent channels, per side, as a
    /// fraction of the pair rate of the centre pair.
    pub crosstalk_fraction: f64,
    /// Alice's and Bob's channel centre wavelengths, nm.
    pub wavelengths_nm: [f64; 2],
}

fn err(field: &str, reason: String) -> ParamError {
    ParamError {
        field: field.to_string(),
        reason,
    }
}

impl Wdm {
    fn centre_thz(&self, field: &str, ch: u32) -> Result<(f64, f64), ParamError> {
        match self.grid {
            Grid::Dwdm100Ghz => {
                if !(1..=72).contains(&ch) {
                    return Err(err(
                        field,
                        format!("channel {ch} is off the ITU DWDM 100 GHz grid (1..=72)"),
                    ));
                }
                Ok((190.0 + 0.1 * ch as f64, 0.1))
            }
            Grid::Cwdm => {
                let Some(nm) = CWDM_CENTRES_NM.get(ch as usize) else {
                    return Err(err(
                        field,
                        format!("channel {ch} is not one of the 4 CWDM bands (0..=3)"),
                    ));
                };
                let f = SPEED_OF_LIGHT_M_S / (nm * 1e-9) * 1e-12;
                let width = f * CWDM_WIDTH_NM / nm;
                Ok((f, width))
            }
            Grid::CwdmItu => {
                if !((1271..=1611).contains(&ch) && (ch - 1271).is_multiple_of(20)) {
                    return Err(err(
                        field,
                        format!("{ch} nm is not an ITU CWDM channel (1271, 1291, …, 1611 nm)"),
                    ));
                }
                let nm = ch as f64;
                let f = SPEED_OF_LIGHT_M_S / (nm * 1e-9) * 1e-12;
                Ok((f, f * ITU_CWDM_PASSBAND_NM / nm))
            }
        }
    }

    /// Checks the fields and the pair: both channels on the grid, distinct, and energy
    /// conjugate (`ν_A + ν_B = ν_pump` within half a channel width), else no pair would
    /// ever reach both users.
    pub fn channel_pair(&self) -> Result<ChannelPair, ParamError> {
        qkdnet_optics::check(
            "emulator.wdm.pump_wavelength_nm",
            self.pump_wavelength_nm,
            300.0,
            1200.0,
        )?;
        qkdnet_optics::check("emulator.wdm.spdc_fwhm_nm", self.spdc_fwhm_nm, 0.01, 1000.0)?;
        qkdnet_optics::check(
            "emulator.wdm.adjacent_crosstalk_db",
            self.adjacent_crosstalk_db,
            -200.0,
            0.0,
        )?;
        qkdnet_optics::check("emulator.wdm.demux_loss_db", self.demux_loss_db, 0.0, 60.0)?;
        let (fa, width) = self.centre_thz("emulator.wdm.alice_channel", self.alice_channel)?;
        let (fb, _) = self.centre_thz("emulator.wdm.bob_channel", self.bob_channel)?;
        if self.alice_channel == self.bob_channel {
            return Err(err(
                "emulator.wdm.bob_channel",
                format!("channel {} is also Alice's channel", self.bob_channel),
            ));
        }
        let fp = SPEED_OF_LIGHT_M_S / (self.pump_wavelength_nm * 1e-9) * 1e-12;
        if (fa + fb - fp).abs() > width / 2.0 {
            return Err(err(
                "emulator.wdm.bob_channel",
                format!(
                    "channels {} ({fa:.2} THz) and {} ({fb:.2} THz) are not energy conjugate \
                     for a {} nm pump ({fp:.2} THz): their sum is off by {:.3} THz",
                    self.alice_channel,
                    self.bob_channel,
                    self.pump_wavelength_nm,
                    fa + fb - fp
                ),
            ));
        }
        let to_nm = |f: f64| SPEED_OF_LIGHT_M_S / (f * 1e12) * 1e9;
        let (la, lb) = (to_nm(fa), to_nm(fb));
        let centre = 2.0 * self.pump_wavelength_nm;
        // Gaussian spectral envelope of the pair rate around degeneracy.
        let envelope = |l: f64| {
            (-4.0 * std::f64::consts::LN_2 * ((l - centre) / self.spdc_fwhm_nm).powi(2)).exp()
        };
        let relative_brightness = envelope(lb);
        // Each adjacent channel carries photons whose partners go to other users.
        let dl = la - to_nm(fa + width);
        let crosstalk = 10f64.powf(self.adjacent_crosstalk_db / 10.0);
        let crosstalk_fraction = crosstalk * (envelope(lb - dl) + envelope(lb + dl));
        Ok(ChannelPair {
            relative_brightness,
            crosstalk_fraction,
            wavelengths_nm: [la, lb],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_centre_pair_is_conjugate_and_full_brightness() {
        let p = Wdm::default().channel_pair().expect("valid");
        assert!(p.relative_brightness > 0.999, "{p:?}");
        assert!(p.wavelengths_nm[0] > p.wavelengths_nm[1], "long to Alice");
        assert!((p.crosstalk_fraction - 2e-4).abs() < 1e-5);
    }

    #[test]
    fn off_grid_and_non_conjugate_channels_are_named() {
        let w = Wdm {
            bob_channel: 80,
            ..Wdm::default()
        };
        let e = w.channel_pair().expect_err("off grid");
        assert_eq!(e.field, "emulator.wdm.bob_channel");
        assert!(e.reason.contains("80"), "{e}");
        let w = Wdm {
            bob_channel: 30,
            ..Wdm::default()
        };
        let e = w.channel_pair().expect_err("not conjugate");
        assert!(e.reason.contains("conjugate"), "{e}");
        // A pair far from degeneracy is dimmer, following the 80 nm envelope.
        let w = Wdm {
            alice_channel: 1,
            bob_channel: 42,
            ..Wdm::default()
        };
        let p = w.channel_pair().expect("conjugate");
        assert!(
            p.relative_brightness < 0.95 && p.relative_brightness > 0.5,
            "{p:?}"
        );
    }

    #[test]
    fn cwdm_bands() {
        let w = Wdm {
            grid: Grid::Cwdm,
            alice_channel: 2,
            bob_channel: 1,
            ..Wdm::default()
        };
        // 1551 + 1571 nm: sum frequency 386.1 THz vs 384.3 THz pump, within the band.
        let p = w.channel_pair().expect("conjugate within 18 nm bands");
        assert!(p.relative_brightness > 0.9);
        let w = Wdm {
            grid: Grid::Cwdm,
            alice_channel: 4,
            ..w
        };
        assert!(w.channel_pair().is_err());
    }
}
