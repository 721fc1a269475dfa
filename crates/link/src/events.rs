//! Time tags to sifted key, window by window: what a link's two nodes do with their
//! detections. Acquires the clock model from the streams alone ([`crate::sync::acquire`]),
//! then tracks it ([`crate::sync::Tracker`]) and sifts ([`crate::sift::sift`]) each window,
//! re-acquiring when the lock is lost or when asked to.
//!
//! Each window is sifted as it arrives, so a control loop sees the effect of the setting
//! it just applied. The windows must be the same span of time at both nodes (as the
//! emulator's are): pairs whose two detections fall in different windows — a fraction
//! (fibre delay difference)/(window), 5·10⁻⁴ for 250 µs in 0.5 s — are not counted.

use crate::sift::{sift, SiftConfig, Sifted};
use crate::sync::{acquire, SyncConfig, SyncError, Tracker};
use qkdnet_core::timetag::TimeTag;

/// One window's tags from both nodes (each on its own clock), with the window's bounds on
/// Alice's clock.
pub struct TagWindow {
    /// Alice's and Bob's tags, time ordered.
    pub tags: [Vec<TimeTag>; 2],
    /// Start of the window on Alice's clock, ps.
    pub start_ps: i64,
    /// End of the window on Alice's clock, ps.
    pub end_ps: i64,
}

/// What a processed window gave.
pub struct WindowResult {
    /// Detections in the window, Alice and Bob.
    pub singles: [u64; 2],
    /// The sifted key and test tally (empty while not locked).
    pub sifted: Option<Sifted>,
    /// Whether the sync held for this window.
    pub locked: bool,
    /// The tracker's residual, ps (`None` without a peak or lock).
    pub residual_ps: Option<f64>,
    /// Bob's offset on Alice's axis at the window's end, ps (`None` without a model).
    pub offset_ps: Option<f64>,
}

/// The state of sync and sifting across windows.
pub struct EventSifter {
    sync: SyncConfig,
    sift: SiftConfig,
    /// Data buffered for acquisition (whole windows), before a lock.
    buffer: Vec<TagWindow>,
    tracker: Option<Tracker>,
    /// Windows of data to buffer before trying to acquire.
    acquire_after: usize,
    /// Acquisitions tried and failed (kept for reports).
    pub failed_acquisitions: u64,
    /// The last acquisition error, if any.
    pub last_error: Option<SyncError>,
}

impl EventSifter {
    /// A sifter that acquires from `acquire_windows` windows of data.
    pub fn new(sync: SyncConfig, sift: SiftConfig, acquire_windows: usize) -> Self {
        Self {
            sync,
            sift,
            buffer: Vec::new(),
            tracker: None,
            acquire_after: acquire_windows.max(1),
            failed_acquisitions: 0,
            last_error: None,
        }
    }

    /// Whether a clock model is held.
    pub fn locked(&self) -> bool {
        self.tracker.is_some()
    }

    /// Drops the lock; the next windows are buffered for a new acquisition.
    pub fn drop_lock(&mut self) {
        self.tracker = None;
        self.buffer.clear();
    }

    /// Takes the next window and returns what it gave (no key while unlocked; the window
    /// that completes an acquisition gives none either).
    pub fn push(&mut self, w: TagWindow) -> WindowResult {
        let singles = [w.tags[0].len() as u64, w.tags[1].len() as u64];
        let Some(tracker) = self.tracker.as_mut() else {
            self.buffer.push(w);
            if self.buffer.len() >= self.acquire_after {
                let mut tags: [Vec<TimeTag>; 2] = [Vec::new(), Vec::new()];
                for b in &self.buffer {
                    for (all, part) in tags.iter_mut().zip(&b.tags) {
                        all.extend_from_slice(part);
                    }
                }
                match acquire(&tags[0], &tags[1], &self.sync) {
                    Ok(acq) => {
                        self.tracker = Some(Tracker::new(&acq, self.sync));
                        self.buffer.clear();
                        self.last_error = None;
                    }
                    Err(e) => {
                        self.failed_acquisitions += 1;
                        self.last_error = Some(e);
                        // Slide: keep the most recent half.
                        let keep = self.acquire_after / 2;
                        let drop = self.buffer.len().saturating_sub(keep);
                        self.buffer.drain(..drop);
                    }
                }
            }
            return WindowResult {
                singles,
                sifted: None,
                locked: self.tracker.is_some(),
                residual_ps: None,
                offset_ps: None,
            };
        };
        let step = tracker.update(&w.tags[0], &w.tags[1], w.start_ps, w.end_ps);
        let model = tracker.model();
        if !step.locked {
            self.drop_lock();
            return WindowResult {
                singles,
                sifted: None,
                locked: false,
                residual_ps: None,
                offset_ps: None,
            };
        }
        let s = sift(&w.tags[0], &w.tags[1], &model, &self.sift);
        WindowResult {
            singles,
            sifted: Some(s),
            locked: true,
            residual_ps: step.residual_ps,
            offset_ps: Some(model.predict(w.end_ps) - w.end_ps as f64),
        }
    }
}
