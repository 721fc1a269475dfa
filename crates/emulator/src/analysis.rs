//! Ground-truth coincidence analysis of emulated streams: what the emulator's statistical
//! tests and `qkdnet emulate`'s summary count.
//!
//! It uses what only the emulator knows — each tagger's clock and each side's delay — to
//! put both streams on one time axis. The link runtime cannot: it finds the offset and
//! drift from the streams themselves (the link crate's synchronisation).

use crate::bbm92::{BasisCounts, Bbm92Link, CHANNELS, CH_X0, CH_X1, CH_Z};
use qkdnet_core::timetag::TimeTag;

/// What a coincidence count found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Coincidences {
    /// Singles per channel, each side.
    pub singles: [[u64; CHANNELS]; 2],
    /// Key-arm coincidences in the window, with time-bin parity errors.
    pub z: BasisCounts,
    /// Test-arm coincidences in the window, with output disagreements.
    pub x: BasisCounts,
    /// Key-arm coincidences in a window shifted off the peak (accidentals only).
    pub z_off_peak: u64,
    /// Test-arm coincidences in the shifted window.
    pub x_off_peak: u64,
}

impl std::ops::AddAssign<&Coincidences> for Coincidences {
    fn add_assign(&mut self, c: &Coincidences) {
        for s in 0..2 {
            for ch in 0..CHANNELS {
                self.singles[s][ch] += c.singles[s][ch];
            }
        }
        self.z.coincidences += c.z.coincidences;
        self.z.errors += c.z.errors;
        self.x.coincidences += c.x.coincidences;
        self.x.errors += c.x.errors;
        self.z_off_peak += c.z_off_peak;
        self.x_off_peak += c.x_off_peak;
    }
}

/// Settings of the count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CountSettings {
    /// Coincidence window (full width), ps.
    pub window_ps: f64,
    /// Key-basis time bin, ps: the key bit is the parity of the bin holding the pair's
    /// Alice detection (Bob's for Bob).
    pub z_bin_ps: f64,
    /// Shift of the off-peak window, ps (clear of the analyser's side peaks).
    pub off_peak_shift_ps: f64,
    /// Each side's delay (fibre plus delay line), ps.
    pub delay_ps: [f64; 2],
}

/// Counts singles and coincidences of two streams of tags (each on its own clock).
pub fn count(link: &Bbm92Link, tags: [&[TimeTag]; 2], s: &CountSettings) -> Coincidences {
    let mut out = Coincidences::default();
    let mut times: [Vec<(i64, u32)>; 2] = [Vec::new(), Vec::new()];
    for side in 0..2 {
        times[side] = tags[side]
            .iter()
            .map(|t| {
                if (t.channel as usize) < CHANNELS {
                    out.singles[side][t.channel as usize] += 1;
                }
                (
                    link.to_true(side, t.time_ps) - s.delay_ps[side].round() as i64,
                    t.channel,
                )
            })
            .collect();
    }
    let half = (s.window_ps / 2.0).round() as i64;
    let bin = s.z_bin_ps.max(1.0);
    for (shift, on_peak) in [(0i64, true), (s.off_peak_shift_ps.round() as i64, false)] {
        let b = &times[1];
        let mut lo = 0usize;
        for &(ta, ca) in &times[0] {
            let centre = ta + shift;
            while lo < b.len() && b[lo].0 < centre - half {
                lo += 1;
            }
            let mut k = lo;
            while k < b.len() && b[k].0 <= centre + half {
                let (tb, cb) = b[k];
                k += 1;
                let is_x = |c: u32| c == CH_X0 || c == CH_X1;
                if ca == CH_Z && cb == CH_Z {
                    if on_peak {
                        out.z.coincidences += 1;
                        let bit = |t: i64| (t as f64 / bin).floor() as i64 & 1;
                        if bit(ta) != bit(tb - shift) {
                            out.z.errors += 1;
                        }
                    } else {
                        out.z_off_peak += 1;
                    }
                } else if is_x(ca) && is_x(cb) {
                    if on_peak {
                        out.x.coincidences += 1;
                        if ca != cb {
                            out.x.errors += 1;
                        }
                    } else {
                        out.x_off_peak += 1;
                    }
                }
            }
        }
    }
    out
}
