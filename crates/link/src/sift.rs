//! Sifting of a time–energy BBM92 link (the Nice receivers: key arm on channel 0, the
//! analyser's two outputs on channels 1 and 2): coincidences found with the synchronised
//! clock model, key bits from arrival times, test bits from the analyser outputs.
//!
//! - A coincidence is an Alice detection and the Bob detection nearest the model's
//!   prediction, within ±`window_ps / 2`; each detection is used at most once.
//! - Key basis (both on channel 0): the bit is the parity of the time bin of width
//!   `z_bin_ps` holding the detection, each side on Alice's time axis (Bob maps his reading
//!   through the clock model). A true pair disagrees when a bin edge falls between its
//!   two detections (probability `E|Δt| / z_bin_ps`), an accidental when one falls within
//!   its spread (`window/4 / z_bin_ps` for a uniform spread); detections within
//!   `guard_ps` of an edge of Alice's bin are discarded (Alice announces which, which says
//!   nothing of the parity). The bin is the link's choice: longer bins mean fewer
//!   edge errors; each coincidence gives one bit whatever the bin (the pump's coherence
//!   time is far longer).
//! - Test basis (both on channels 1–2): the bit is the output; with the analysers' phase
//!   sum locked to 0 the outputs agree for true pairs.
//! - Mixed bases are discarded. A window shifted off the peak counts accidentals.
//!
//! This is the sifting arithmetic on both records at once; the exchange of announcements
//! over the `Transport` between two nodes is still to come (issue 4).

use crate::sync::ClockModel;
use qkdnet_core::bits::Bits;
use qkdnet_core::timetag::TimeTag;

/// Settings of [`sift`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SiftConfig {
    /// Coincidence window (full width), ps.
    pub window_ps: f64,
    /// Key-basis time bin, ps.
    pub z_bin_ps: f64,
    /// Detections this close to an edge of Alice's bin are discarded, ps.
    pub guard_ps: f64,
    /// Shift of the accidentals-counting window, ps (clear of the analyser's side peaks).
    pub off_peak_ps: f64,
    /// Key-arm channel.
    pub z_channel: u32,
    /// The analyser's two output channels (bit 0, bit 1).
    pub x_channels: [u32; 2],
}

impl Default for SiftConfig {
    /// Nice: 120 ps window; 10 ns key bins without guard (edge errors ≈ 0.5 %).
    fn default() -> Self {
        Self {
            window_ps: 120.0,
            z_bin_ps: 10_000.0,
            guard_ps: 0.0,
            off_peak_ps: 20_000.0,
            z_channel: 0,
            x_channels: [1, 2],
        }
    }
}

/// What one window sifted to.
pub struct Sifted {
    /// Alice's key bits.
    pub key_alice: Bits,
    /// Bob's key bits (same positions).
    pub key_bob: Bits,
    /// Test-basis coincidences.
    pub test_coincidences: u64,
    /// Of which disagreeing.
    pub test_errors: u64,
    /// Key-basis coincidences discarded by the guard.
    pub guarded: u64,
    /// Mixed-basis coincidences (discarded).
    pub mixed: u64,
    /// Key-basis coincidences in the off-peak window (accidentals estimate).
    pub key_off_peak: u64,
}

impl std::fmt::Debug for Sifted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key bits are never printed.
        f.debug_struct("Sifted")
            .field("key_bits", &self.key_alice.len())
            .field("test_coincidences", &self.test_coincidences)
            .field("test_errors", &self.test_errors)
            .field("guarded", &self.guarded)
            .field("mixed", &self.mixed)
            .field("key_off_peak", &self.key_off_peak)
            .finish()
    }
}

impl Sifted {
    /// Key-basis error rate (Alice's and Bob's bits compared; for tests and emulation —
    /// a real link estimates it from disclosed bits).
    pub fn qber_key(&self) -> f64 {
        let n = self.key_alice.len();
        if n == 0 {
            return 0.5;
        }
        self.key_alice.hamming_distance(&self.key_bob) as f64 / n as f64
    }

    /// Test-basis error rate.
    pub fn qber_test(&self) -> f64 {
        if self.test_coincidences == 0 {
            return 0.5;
        }
        self.test_errors as f64 / self.test_coincidences as f64
    }
}

/// Finds coincidences between `alice` and `bob` (each time ordered, on its own clock)
/// within ±window/2 of `model`'s prediction shifted by `shift_ps`; calls `f(a, b)` for
/// each, each detection used at most once, the nearest Bob detection taken.
fn coincidences(
    alice: &[TimeTag],
    bob: &[TimeTag],
    model: &ClockModel,
    half: f64,
    shift_ps: f64,
    mut f: impl FnMut(&TimeTag, &TimeTag),
) {
    let mut j = 0;
    for a in alice {
        let p = model.predict(a.time_ps) + shift_ps;
        while j < bob.len() && (bob[j].time_ps as f64) < p - half {
            j += 1;
        }
        let mut best: Option<(usize, f64)> = None;
        let mut k = j;
        while k < bob.len() && (bob[k].time_ps as f64) <= p + half {
            let d = (bob[k].time_ps as f64 - p).abs();
            if best.is_none_or(|(_, bd)| d < bd) {
                best = Some((k, d));
            }
            k += 1;
        }
        if let Some((k, _)) = best {
            f(a, &bob[k]);
            // Used: later Alice detections start after it.
            j = k + 1;
        }
    }
}

/// Sifts one window of both nodes' records.
pub fn sift(alice: &[TimeTag], bob: &[TimeTag], model: &ClockModel, cfg: &SiftConfig) -> Sifted {
    let mut out = Sifted {
        key_alice: Bits::zeros(0),
        key_bob: Bits::zeros(0),
        test_coincidences: 0,
        test_errors: 0,
        guarded: 0,
        mixed: 0,
        key_off_peak: 0,
    };
    let half = cfg.window_ps / 2.0;
    let is_x = |c: u32| c == cfg.x_channels[0] || c == cfg.x_channels[1];
    let bin = cfg.z_bin_ps.max(1.0);
    coincidences(alice, bob, model, half, 0.0, |a, b| {
        if a.channel == cfg.z_channel && b.channel == cfg.z_channel {
            let ta = a.time_ps as f64;
            let pos = ta.rem_euclid(bin);
            if pos < cfg.guard_ps || bin - pos < cfg.guard_ps {
                out.guarded += 1;
                return;
            }
            // Bob's reading on Alice's axis: remove the model's offset at this time.
            let tb = b.time_ps as f64 - (model.predict(a.time_ps) - ta);
            out.key_alice.push((ta / bin).floor() as i64 & 1 == 1);
            out.key_bob.push((tb / bin).floor() as i64 & 1 == 1);
        } else if is_x(a.channel) && is_x(b.channel) {
            out.test_coincidences += 1;
            out.test_errors += (a.channel != b.channel) as u64;
        } else {
            out.mixed += 1;
        }
    });
    coincidences(alice, bob, model, half, cfg.off_peak_ps, |a, b| {
        if a.channel == cfg.z_channel && b.channel == cfg.z_channel {
            out.key_off_peak += 1;
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_give_equal_bits_and_noise_none() {
        let model = ClockModel {
            reference_ps: 0,
            offset_ps: 1_000_000.0,
            rate: 0.0,
        };
        let tag = |t: i64, c: u32| TimeTag {
            time_ps: t,
            channel: c,
        };
        // Three key pairs (one near a bin edge), one test pair in error, one mixed.
        let alice = vec![
            tag(5_000, 0),
            tag(15_000, 0),
            tag(29_990, 0),
            tag(40_000, 1),
            tag(60_000, 0),
        ];
        let bob = vec![
            tag(1_005_010, 0),
            tag(1_014_990, 0),
            tag(1_030_020, 0),
            tag(1_040_000, 2),
            tag(1_060_000, 1),
        ];
        let s = sift(&alice, &bob, &model, &SiftConfig::default());
        assert_eq!(s.key_alice.len(), 3);
        // The pair straddling the 30 ns edge disagrees.
        assert_eq!(s.key_alice.hamming_distance(&s.key_bob), 1);
        assert_eq!((s.test_coincidences, s.test_errors, s.mixed), (1, 1, 1));
        let guarded = sift(
            &alice,
            &bob,
            &model,
            &SiftConfig {
                guard_ps: 100.0,
                ..SiftConfig::default()
            },
        );
        assert_eq!((guarded.key_alice.len(), guarded.guarded), (2, 1));
        assert_eq!(guarded.qber_key(), 0.0);
        assert!(
            !format!("{s:?}").contains("key_alice:"),
            "no key bits in Debug"
        );
    }
}
