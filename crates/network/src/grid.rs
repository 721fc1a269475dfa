//! Channel plans on the ITU grids, one number per channel:
//! - the ITU-T G.694.1 DWDM grid at 100 GHz, numbered as in `qkdnet_emulator::wdm`: channel
//!   `n` sits at `190.0 THz + n · 100 GHz` (channel 34 = 193.40 THz = 1550.12 nm), `n` in
//!   1..=72 (190.1–197.2 THz, 1577.0–1520.2 nm); its pass band is the network's
//!   `wdm.filter_bandwidth_nm`;
//! - the ITU-T G.694.2 CWDM grid, numbered by nominal wavelength in nm: 1271, 1291, …, 1611
//!   (20 nm spacing), each passing ±6.5 nm (G.694.2's centre-wavelength tolerance leaves a
//!   13 nm flat pass band in standard filters). The Nice source's bands are CWDM 1531,
//!   1551, 1571 and 1591.

use qkdnet_optics::consts::SPEED_OF_LIGHT_M_S;

/// Lowest channel number on the grid.
pub const FIRST: u32 = 1;
/// Highest channel number on the grid.
pub const LAST: u32 = 72;
/// Grid spacing, THz.
pub const SPACING_THZ: f64 = 0.1;

/// CWDM spacing, nm.
pub const CWDM_SPACING_NM: f64 = 20.0;
/// CWDM pass band (flat top), nm.
pub const CWDM_PASSBAND_NM: f64 = 13.0;

/// Whether `n` is a channel of the 100 GHz DWDM grid.
pub fn is_dwdm(n: u32) -> bool {
    (FIRST..=LAST).contains(&n)
}

/// Whether `n` is a CWDM channel (its nominal wavelength in nm, 1271–1611 by 20).
pub fn is_cwdm(n: u32) -> bool {
    (1271..=1611).contains(&n) && (n - 1271).is_multiple_of(20)
}

/// Whether `n` is a channel of either grid.
pub fn on_grid(n: u32) -> bool {
    is_dwdm(n) || is_cwdm(n)
}

/// Centre frequency of channel `n`, THz.
pub fn frequency_thz(n: u32) -> f64 {
    if is_cwdm(n) {
        thz_of_nm(n as f64)
    } else {
        190.0 + SPACING_THZ * n as f64
    }
}

/// Centre (vacuum) wavelength of channel `n`, nm.
pub fn wavelength_nm(n: u32) -> f64 {
    if is_cwdm(n) {
        n as f64
    } else {
        SPEED_OF_LIGHT_M_S / (frequency_thz(n) * 1e12) * 1e9
    }
}

/// Pass-band width of channel `n`, nm (`dwdm_filter_nm` for DWDM channels).
pub fn passband_nm(n: u32, dwdm_filter_nm: f64) -> f64 {
    if is_cwdm(n) {
        CWDM_PASSBAND_NM
    } else {
        dwdm_filter_nm
    }
}

/// Spacing of channel `n`'s grid, THz (at its wavelength for CWDM).
pub fn spacing_thz(n: u32) -> f64 {
    if is_cwdm(n) {
        frequency_thz(n) * CWDM_SPACING_NM / n as f64
    } else {
        SPACING_THZ
    }
}

/// Channel `n`'s pass band as a frequency interval, THz.
pub fn band_thz(n: u32, dwdm_filter_nm: f64) -> (f64, f64) {
    let nm = wavelength_nm(n);
    let half = passband_nm(n, dwdm_filter_nm) / 2.0;
    (thz_of_nm(nm + half), thz_of_nm(nm - half))
}

/// Whether two channels' pass bands overlap (they cannot share a fibre).
pub fn overlaps(a: u32, b: u32, dwdm_filter_nm: f64) -> bool {
    let (a0, a1) = band_thz(a, dwdm_filter_nm);
    let (b0, b1) = band_thz(b, dwdm_filter_nm);
    a0 < b1 && b0 < a1
}

/// The spectrum a classical channel at `nm` takes, THz: 90 GHz of its 100 GHz slot (the
/// guard between slots keeps neighbours apart).
pub fn classical_band_thz(nm: f64) -> (f64, f64) {
    let f = thz_of_nm(nm);
    (f - 0.045, f + 0.045)
}

/// What uses the spectrum of one fibre (or one source or relay): pieces of spectrum with
/// their channel and user.
#[derive(Debug, Clone, Default)]
pub struct Occupancy {
    items: Vec<(f64, f64, Option<u32>, String)>,
}

impl Occupancy {
    /// Takes `[lo, hi]` THz for `who` (on channel `ch`, if it is one).
    pub fn add(&mut self, band: (f64, f64), ch: Option<u32>, who: String) {
        self.items.push((band.0, band.1, ch, who));
    }

    /// The first user whose spectrum overlaps `band`, with its channel.
    pub fn clash(&self, band: (f64, f64)) -> Option<(Option<u32>, &str)> {
        self.items
            .iter()
            .find(|(lo, hi, _, _)| band.0 < *hi && *lo < band.1)
            .map(|(_, _, c, w)| (*c, w.as_str()))
    }

    /// How a clash of `ch` (new, for `who`) with an earlier user reads.
    pub fn describe(ch: Option<u32>, prev_ch: Option<u32>, prev: &str, who: &str) -> String {
        match (ch, prev_ch) {
            (Some(a), Some(b)) if a == b => {
                format!("{} is used twice (by {prev} and {who})", name(a))
            }
            (Some(a), Some(b)) => format!(
                "{} overlaps {} (used by {prev}) for {who}",
                name(a),
                name(b)
            ),
            (Some(a), None) => format!("{} overlaps {prev} for {who}", name(a)),
            (None, Some(b)) => format!("{who} falls in {} (used by {prev})", name(b)),
            (None, None) => format!("{who} overlaps {prev}"),
        }
    }
}

/// The channel name people use: `ITU 34` or `CWDM 1551`.
pub fn name(n: u32) -> String {
    if is_cwdm(n) {
        format!("CWDM {n}")
    } else {
        format!("ITU {n}")
    }
}

/// The frequency of a wavelength, THz.
pub fn thz_of_nm(nm: f64) -> f64 {
    SPEED_OF_LIGHT_M_S / (nm * 1e-9) * 1e-12
}

/// The grid channel whose centre is nearest `nm`, if that centre is within half a spacing.
pub fn channel_of_nm(nm: f64) -> Option<u32> {
    let n = ((thz_of_nm(nm) - 190.0) / SPACING_THZ).round();
    if n >= FIRST as f64 && n <= LAST as f64 {
        Some(n as u32)
    } else {
        None
    }
}

/// The energy-conjugate pairs `(long, short)` of an SPDC source pumped at `pump_nm`: both on
/// the grid, `ν_long + ν_short = ν_pump` within half a spacing, nearest degeneracy first.
/// The long-wavelength channel of each pair goes to Alice (as in the Nice network).
pub fn conjugate_pairs(pump_nm: f64) -> Vec<(u32, u32)> {
    let fp = thz_of_nm(pump_nm);
    let mut pairs = Vec::new();
    for long in FIRST..=LAST {
        let want = fp - frequency_thz(long);
        let short = ((want - 190.0) / SPACING_THZ).round();
        if short < FIRST as f64 || short > LAST as f64 {
            continue;
        }
        let short = short as u32;
        if short > long && (frequency_thz(short) - want).abs() <= SPACING_THZ / 2.0 {
            pairs.push((long, short));
        }
    }
    pairs.sort_by_key(|&(l, s)| s - l);
    pairs
}

/// The energy-conjugate CWDM pairs `(long, short)` (nominal nm) of a source pumped at
/// `pump_nm`: `ν_long + ν_short = ν_pump` within half a pass band; nearest degeneracy first.
pub fn cwdm_conjugate_pairs(pump_nm: f64) -> Vec<(u32, u32)> {
    let fp = thz_of_nm(pump_nm);
    let chans: Vec<u32> = (1271..=1611).step_by(20).collect();
    let mut pairs = Vec::new();
    for &long in &chans {
        for &short in chans.iter().filter(|&&s| s < long) {
            let half = 0.5 * (thz_of_nm(short as f64 - 6.5) - thz_of_nm(short as f64 + 6.5));
            if (frequency_thz(long) + frequency_thz(short) - fp).abs() <= half {
                pairs.push((long, short));
            }
        }
    }
    pairs.sort_by_key(|&(l, s)| l - s);
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_34_is_1550_12_nm() {
        assert!((wavelength_nm(34) - 1550.12).abs() < 0.01);
        assert_eq!(channel_of_nm(1550.12), Some(34));
        assert_eq!(channel_of_nm(1310.0), None);
    }

    #[test]
    fn cwdm_channels_are_named_by_wavelength_and_overlap_dwdm() {
        assert!(is_cwdm(1551) && !is_cwdm(1550) && !is_dwdm(1551) && on_grid(1551));
        assert_eq!(wavelength_nm(1551), 1551.0);
        // CWDM 1551 (1544.5–1557.5 nm) covers ITU 34 (1550.12 nm), not ITU 56 (1532.7 nm).
        assert!(overlaps(1551, 34, 0.6) && !overlaps(1551, 56, 0.6));
        assert!(!overlaps(34, 35, 0.6) && overlaps(34, 34, 0.6));
        // The CWDM pairs around 1560.2 nm (the Nice source's bands are the first two).
        assert_eq!(
            cwdm_conjugate_pairs(780.1),
            [(1571, 1551), (1591, 1531), (1611, 1511)]
        );
        assert_eq!(name(1551), "CWDM 1551");
        assert_eq!(name(34), "ITU 34");
    }

    #[test]
    fn nice_pump_pairs_start_at_21_22_and_are_conjugate() {
        let pairs = conjugate_pairs(780.1);
        assert_eq!(pairs[0], (21, 22));
        assert_eq!(pairs[1], (20, 23));
        // 20 pairs fit between channel 2 and 41 around 192.15 THz, and more down to 1.
        assert!(pairs.len() >= 20);
        for &(l, s) in &pairs {
            let sum = frequency_thz(l) + frequency_thz(s);
            assert!((sum - thz_of_nm(780.1)).abs() <= 0.05 + 1e-9, "{l} {s}");
        }
    }
}
