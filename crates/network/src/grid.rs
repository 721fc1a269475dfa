//! The ITU-T G.694.1 DWDM grid at 100 GHz, numbered as in `qkdnet_emulator::wdm`: channel
//! `n` sits at `190.0 THz + n · 100 GHz` (channel 34 = 193.40 THz = 1550.12 nm), `n` in
//! 1..=72 (190.1–197.2 THz, 1577.0–1520.2 nm).

use qkdnet_optics::consts::SPEED_OF_LIGHT_M_S;

/// Lowest channel number on the grid.
pub const FIRST: u32 = 1;
/// Highest channel number on the grid.
pub const LAST: u32 = 72;
/// Grid spacing, THz.
pub const SPACING_THZ: f64 = 0.1;

/// Whether `n` is a channel of the grid.
pub fn on_grid(n: u32) -> bool {
    (FIRST..=LAST).contains(&n)
}

/// Centre frequency of channel `n`, THz.
pub fn frequency_thz(n: u32) -> f64 {
    190.0 + SPACING_THZ * n as f64
}

/// Centre (vacuum) wavelength of channel `n`, nm.
pub fn wavelength_nm(n: u32) -> f64 {
    SPEED_OF_LIGHT_M_S / (frequency_thz(n) * 1e12) * 1e9
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
