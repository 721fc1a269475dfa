//! Replaying recorded detections: a [`Frontend`] that reads a node's time tags from a file
//! (qkdnet `.qtt` or PicoQuant PTU T2, told apart by the magic) window by window, so hours
//! of recording never sit in memory at once.
//!
//! Bad files never panic and never yield records past the damage: a wrong magic or a
//! broken header fails at [`FileFrontend::open`]; a truncated file or a time that goes
//! backwards fails the call that reaches it, with the file and the record named, after
//! every good record before it has been delivered. (No resynchronisation past a damaged
//! record is attempted: times after it cannot be trusted to continue the same clock.)
//! A recording cannot be steered: actuations are refused with
//! [`FrontendError::Unsupported`].

use qkdnet_core::frontend::{Actuation, Frontend, FrontendError};
use qkdnet_core::timetag::{TagFormat, TagReader, TimeTag};
use std::io::Read;

/// Records read from the file per refill.
const CHUNK: usize = 1 << 16;

/// A node's recorded detections, replayed.
#[derive(Debug)]
pub struct FileFrontend<R: Read> {
    name: String,
    reader: TagReader<R>,
    pending: Vec<TimeTag>,
    head: usize,
    exhausted: bool,
    failed_with: Option<String>,
}

impl FileFrontend<std::io::BufReader<std::fs::File>> {
    /// Opens a recording.
    pub fn open_path(path: &std::path::Path) -> Result<Self, FrontendError> {
        let f = std::fs::File::open(path)
            .map_err(|e| FrontendError::Records(format!("{}: cannot open: {e}", path.display())))?;
        Self::open(
            path.display().to_string(),
            std::io::BufReader::with_capacity(1 << 20, f),
        )
    }
}

impl<R: Read> FileFrontend<R> {
    /// Reads the header of a recording; `name` (the path) goes into every error.
    pub fn open(name: impl Into<String>, input: R) -> Result<Self, FrontendError> {
        let name = name.into();
        let reader =
            TagReader::open(input).map_err(|e| FrontendError::Records(format!("{name}: {e}")))?;
        Ok(Self {
            name,
            reader,
            pending: Vec::new(),
            head: 0,
            exhausted: false,
            failed_with: None,
        })
    }

    /// The recording's format.
    pub fn format(&self) -> TagFormat {
        self.reader.format()
    }
}

impl<R: Read> Frontend for FileFrontend<R> {
    fn records_until(&mut self, until_ps: i64) -> Result<Option<Vec<TimeTag>>, FrontendError> {
        let mut out = Vec::new();
        loop {
            let ready = &self.pending[self.head..];
            let n = ready.partition_point(|t| t.time_ps < until_ps);
            out.extend_from_slice(&ready[..n]);
            self.head += n;
            if self.head < self.pending.len() || self.exhausted {
                break;
            }
            // Everything buffered is delivered: refill.
            self.pending.clear();
            self.head = 0;
            match self.reader.read_chunk(CHUNK, &mut self.pending) {
                Ok(0) => self.exhausted = true,
                Ok(_) => {}
                Err(e) => {
                    // The reader kept the chunk's good records before the damage: they
                    // are delivered first; once they are, every call reports the error.
                    self.exhausted = true;
                    self.failed_with = Some(format!("{}: {e}", self.name));
                }
            }
        }
        if out.is_empty() && self.exhausted && self.head >= self.pending.len() {
            if let Some(e) = &self.failed_with {
                return Err(FrontendError::Records(e.clone()));
            }
            return Ok(None);
        }
        Ok(Some(out))
    }

    fn actuate(&mut self, actuation: Actuation) -> Result<(), FrontendError> {
        Err(FrontendError::Unsupported {
            frontend: format!("the recording {}", self.name),
            actuator: actuation.name(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qkdnet_core::timetag::{write_ptu_t2, write_qtt};

    fn tags() -> Vec<TimeTag> {
        (0..200_000i64)
            .map(|i| TimeTag {
                time_ps: i * 5_000_000 + (i % 7) * 13,
                channel: (i % 3) as u32,
            })
            .collect()
    }

    fn replay(f: &mut impl Frontend, step: i64) -> Result<Vec<TimeTag>, FrontendError> {
        let mut all = Vec::new();
        let mut until = step;
        while let Some(w) = f.records_until(until)? {
            assert!(w.iter().all(|t| t.time_ps < until));
            all.extend(w);
            until += step;
        }
        Ok(all)
    }

    #[test]
    fn replays_both_formats_window_by_window() {
        let t = tags();
        let mut qtt = Vec::new();
        write_qtt(&mut qtt, &t).unwrap_or_else(|e| panic!("{e}"));
        let mut f = FileFrontend::open("mem.qtt", qtt.as_slice()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.format(), TagFormat::Qtt);
        assert_eq!(
            replay(&mut f, 500_000_000_000).unwrap_or_else(|e| panic!("{e}")),
            t
        );
        let mut ptu = Vec::new();
        write_ptu_t2(&mut ptu, &t).unwrap_or_else(|e| panic!("{e}"));
        let mut f = FileFrontend::open("mem.ptu", ptu.as_slice()).unwrap_or_else(|e| panic!("{e}"));
        let back = replay(&mut f, 77_000_000_000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.len(), t.len());
        assert!(back
            .iter()
            .zip(&t)
            .all(|(a, b)| a.time_ps == b.time_ps && a.channel == b.channel + 1));
        let e = f.actuate(Actuation::PhaseRad(0.1)).unwrap_err().to_string();
        assert!(e.contains("mem.ptu") && e.contains("phase shifter"), "{e}");
    }

    #[test]
    fn bad_files_give_clear_errors_after_the_good_records() {
        let t = tags();
        let mut qtt = Vec::new();
        write_qtt(&mut qtt, &t).unwrap_or_else(|e| panic!("{e}"));
        // Wrong magic: refused at open, naming the file.
        let mut bad = qtt.clone();
        bad[0] = b'X';
        let e = FileFrontend::open("rec.qtt", bad.as_slice())
            .unwrap_err()
            .to_string();
        assert!(e.contains("rec.qtt") && e.contains("magic"), "{e}");
        // Truncated: every record before the cut comes out, then the error, then again.
        let cut = &qtt[..16 + 12 * 150_000 + 7];
        let mut f = FileFrontend::open("rec.qtt", cut).unwrap_or_else(|e| panic!("{e}"));
        let mut good = Vec::new();
        let mut until = 1_000_000_000_000;
        let err = loop {
            match f.records_until(until) {
                Ok(Some(w)) => good.extend(w),
                Ok(None) => panic!("truncation not reported"),
                Err(e) => break e.to_string(),
            }
            until += 1_000_000_000_000;
        };
        assert_eq!(good.len(), 150_000);
        assert_eq!(&good[..], &t[..150_000]);
        assert!(
            err.contains("rec.qtt") && err.contains("record 150000") && err.contains("truncated"),
            "{err}"
        );
        assert!(f.records_until(i64::MAX).is_err());
        // Time going backwards.
        let mut back = qtt.clone();
        let at = 16 + 12 * 100_000;
        back[at..at + 8].copy_from_slice(&0i64.to_le_bytes());
        let mut f =
            FileFrontend::open("rec.qtt", back.as_slice()).unwrap_or_else(|e| panic!("{e}"));
        let e = replay(&mut f, 1_000_000_000_000).unwrap_err().to_string();
        assert!(e.contains("record 100000") && e.contains("before"), "{e}");
    }
}
