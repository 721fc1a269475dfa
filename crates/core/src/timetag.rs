//! Time-tag records, what a time tagger gives a QKD link, and their two file formats.
//!
//! A [`TimeTag`] is one detection: a channel and an arrival time in picoseconds on the
//! tagger's own clock. Streams are kept in time order.
//!
//! # The qkdnet format (`.qtt`)
//!
//! All integers are little-endian.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `QKDNTT01` |
//! | 8 | 8 | number of records `n` (u64) |
//! | 16 | 12·n | records: `time_ps` (i64), `channel` (u32) |
//!
//! Times never decrease from one record to the next. A file whose length does not
//! match `n`, or whose times go backwards, is refused with the record named.
//!
//! # PicoQuant PTU, T2 mode
//!
//! [`write_ptu_t2`] writes HydraHarp V2 T2 records (record type `0x01010204`, 1 ps
//! resolution) under a PTU tag header, the format PicoQuant documents for its unified
//! time-tagged files and reads with its published demo readers. A T2 record is 32 bits:
//! bit 31 "special", bits 30–25 the channel, bits 24–0 the time modulo 2²⁵ units; a
//! special record with channel 63 counts overflows of 2²⁵ units in its time field. Our
//! channel `c` is written as input channel `c`, which the demo readers print as `c + 1`.
//! [`read_ptu_t2`] reads the T2 record types of the HydraHarp (V1 and V2), MultiHarp
//! and TimeHarp 260 and returns photons and sync events; markers are counted and
//! skipped.
//!
//! Checked against PicoQuant's own demo reader (`Read_PTU.py` of PicoQuant's
//! PicoQuant-Time-Tagged-File-Format-Demos, run beside the project on 2026-11-23): a
//! file from [`write_ptu_t2`] with detections at 1 000, 1 250 and 40 000 000 ps and one
//! after a 10 s gap (a single record counting 298 022 overflows) read back with every
//! header tag and the same times, channels printed as `c + 1`.
//!
//! These formats live in `core`, not in the emulator: the link's file replayer reads
//! them, and `link` must not depend on `emulator`.

use std::io::{Read, Seek, SeekFrom, Write};

/// One detection: a channel and its arrival time, picoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeTag {
    /// Arrival time on the tagger's clock, ps.
    pub time_ps: i64,
    /// Input channel.
    pub channel: u32,
}

/// Why a time-tag file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TagFileError {
    /// The bytes could not be read or written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file is not in the expected format.
    #[error("{what}")]
    Format {
        /// What is wrong, and where.
        what: String,
    },
    /// A record cannot be written in this format.
    #[error("record {index}: {what}")]
    Record {
        /// Record index.
        index: usize,
        /// What is wrong.
        what: String,
    },
}

fn format(what: impl Into<String>) -> TagFileError {
    TagFileError::Format { what: what.into() }
}

const QTT_MAGIC: &[u8; 8] = b"QKDNTT01";

/// Writes `tags` (in time order) in the qkdnet format.
pub fn write_qtt(out: &mut impl Write, tags: &[TimeTag]) -> Result<(), TagFileError> {
    check_order(tags)?;
    out.write_all(QTT_MAGIC)?;
    out.write_all(&(tags.len() as u64).to_le_bytes())?;
    let mut buf = Vec::with_capacity(12 * tags.len().min(1 << 16));
    for chunk in tags.chunks(1 << 16) {
        buf.clear();
        encode_qtt(&mut buf, chunk);
        out.write_all(&buf)?;
    }
    Ok(())
}

fn encode_qtt(buf: &mut Vec<u8>, tags: &[TimeTag]) {
    for t in tags {
        buf.extend_from_slice(&t.time_ps.to_le_bytes());
        buf.extend_from_slice(&t.channel.to_le_bytes());
    }
}

/// Writes a qkdnet-format file piece by piece, for streams too long to hold in memory:
/// the record count in the header is filled in by [`QttWriter::finish`]. A file left
/// unfinished announces 0 records and is refused by [`read_qtt`] (never half-read).
pub struct QttWriter<W: Write + Seek> {
    out: W,
    count: u64,
    last: i64,
    buf: Vec<u8>,
}

impl<W: Write + Seek> QttWriter<W> {
    /// Starts a file.
    pub fn new(mut out: W) -> Result<Self, TagFileError> {
        out.write_all(QTT_MAGIC)?;
        out.write_all(&0u64.to_le_bytes())?;
        Ok(Self {
            out,
            count: 0,
            last: i64::MIN,
            buf: Vec::new(),
        })
    }

    /// Appends tags, which must continue the time order.
    pub fn write(&mut self, tags: &[TimeTag]) -> Result<(), TagFileError> {
        check_continues(self.last, self.count, tags)?;
        self.buf.clear();
        encode_qtt(&mut self.buf, tags);
        self.out.write_all(&self.buf)?;
        self.count += tags.len() as u64;
        if let Some(t) = tags.last() {
            self.last = t.time_ps;
        }
        Ok(())
    }

    /// Fills in the record count and returns the writer's output.
    pub fn finish(mut self) -> Result<W, TagFileError> {
        self.out.seek(SeekFrom::Start(8))?;
        self.out.write_all(&self.count.to_le_bytes())?;
        self.out.seek(SeekFrom::End(0))?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn check_continues(last: i64, count: u64, tags: &[TimeTag]) -> Result<(), TagFileError> {
    if let Some(first) = tags.first() {
        if first.time_ps < last {
            return Err(TagFileError::Record {
                index: count as usize,
                what: format!(
                    "time {} ps comes before the previous record's {last} ps",
                    first.time_ps
                ),
            });
        }
    }
    check_order(tags).map_err(|e| match e {
        TagFileError::Record { index, what } => TagFileError::Record {
            index: index + count as usize,
            what,
        },
        other => other,
    })
}

/// Reads a qkdnet-format stream.
pub fn read_qtt(input: &mut impl Read) -> Result<Vec<TimeTag>, TagFileError> {
    let mut r = TagReader::open(input)?;
    if r.format() != TagFormat::Qtt {
        return Err(format("not a qkdnet time-tag file (magic is not QKDNTT01)"));
    }
    r.read_all()
}

fn check_order(tags: &[TimeTag]) -> Result<(), TagFileError> {
    match tags.windows(2).position(|w| w[1].time_ps < w[0].time_ps) {
        Some(i) => Err(TagFileError::Record {
            index: i + 1,
            what: format!(
                "time {} ps comes before the previous record's {} ps",
                tags[i + 1].time_ps,
                tags[i].time_ps
            ),
        }),
        None => Ok(()),
    }
}

// PTU tag types (PicoQuant's unified file format).
const TY_EMPTY8: u32 = 0xFFFF_0008;
const TY_BOOL8: u32 = 0x0000_0008;
const TY_INT8: u32 = 0x1000_0008;
const TY_BITSET64: u32 = 0x1100_0008;
const TY_COLOR8: u32 = 0x1200_0008;
const TY_FLOAT8: u32 = 0x2000_0008;
const TY_TDATETIME: u32 = 0x2100_0008;
const TY_FLOAT8_ARRAY: u32 = 0x2001_FFFF;
const TY_ANSI_STRING: u32 = 0x4001_FFFF;
const TY_WIDE_STRING: u32 = 0x4002_FFFF;
const TY_BINARY_BLOB: u32 = 0xFFFF_FFFF;

// T2 record types.
const RT_HYDRAHARP_T2: i64 = 0x0001_0204;
const RT_HYDRAHARP2_T2: i64 = 0x0101_0204;
const RT_TIMEHARP260N_T2: i64 = 0x0001_0205;
const RT_TIMEHARP260P_T2: i64 = 0x0001_0206;
const RT_MULTIHARP_T2: i64 = 0x0001_0207;

/// Units per overflow: HydraHarp V1, then every later T2 format.
const WRAP_V1: i64 = 33_552_000;
const WRAP_V2: i64 = 1 << 25;

fn tag_head(out: &mut Vec<u8>, ident: &str, typ: u32) {
    let mut name = [0u8; 32];
    name[..ident.len()].copy_from_slice(ident.as_bytes());
    out.extend_from_slice(&name);
    out.extend_from_slice(&(-1i32).to_le_bytes());
    out.extend_from_slice(&typ.to_le_bytes());
}

fn tag_int(out: &mut Vec<u8>, ident: &str, v: i64) {
    tag_head(out, ident, TY_INT8);
    out.extend_from_slice(&v.to_le_bytes());
}

fn tag_float(out: &mut Vec<u8>, ident: &str, v: f64) {
    tag_head(out, ident, TY_FLOAT8);
    out.extend_from_slice(&v.to_le_bytes());
}

fn tag_string(out: &mut Vec<u8>, ident: &str, s: &str) {
    tag_head(out, ident, TY_ANSI_STRING);
    // NUL-terminated, padded to a multiple of 8 bytes.
    let len = (s.len() + 1).div_ceil(8) * 8;
    out.extend_from_slice(&(len as i64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    out.resize(out.len() + len - s.len(), 0);
}

/// Turns time tags into HydraHarp V2 T2 records, inserting overflow records.
#[derive(Debug, Default)]
struct T2Encoder {
    /// Start of the current 2²⁵ ps window.
    base: i64,
    /// Records produced so far.
    records: u64,
    /// Tags consumed so far (for error positions).
    tags: u64,
}

impl T2Encoder {
    fn encode(&mut self, tags: &[TimeTag], out: &mut Vec<u8>) -> Result<(), TagFileError> {
        for t in tags {
            let index = self.tags as usize;
            if t.time_ps < 0 {
                return Err(TagFileError::Record {
                    index,
                    what: format!("negative time {} ps", t.time_ps),
                });
            }
            if t.channel >= 63 {
                return Err(TagFileError::Record {
                    index,
                    what: format!("channel {} (T2 records hold channels 0 to 62)", t.channel),
                });
            }
            let mut wraps = (t.time_ps - self.base) / WRAP_V2;
            while wraps > 0 {
                let n = wraps.min(WRAP_V2 - 1);
                out.extend_from_slice(&(0x8000_0000u32 | (0x3F << 25) | n as u32).to_le_bytes());
                self.records += 1;
                wraps -= n;
                self.base += n * WRAP_V2;
            }
            out.extend_from_slice(
                &((t.channel << 25) | (t.time_ps - self.base) as u32).to_le_bytes(),
            );
            self.records += 1;
            self.tags += 1;
        }
        Ok(())
    }
}

/// The PTU header for `records` HydraHarp V2 T2 records at 1 ps, and the offset of the
/// record count's value in it.
fn ptu_header(records: u64) -> (Vec<u8>, usize) {
    let mut head = Vec::with_capacity(1024);
    let mut magic = [0u8; 8];
    magic[..6].copy_from_slice(b"PQTTTR");
    head.extend_from_slice(&magic);
    let mut version = [0u8; 8];
    version[..6].copy_from_slice(b"1.0.00");
    head.extend_from_slice(&version);
    tag_string(&mut head, "CreatorSW_Name", "qkdnet");
    tag_string(&mut head, "CreatorSW_Version", env!("CARGO_PKG_VERSION"));
    tag_int(&mut head, "Measurement_Mode", 2);
    tag_int(&mut head, "Measurement_SubMode", 0);
    tag_float(&mut head, "MeasDesc_Resolution", 1e-12);
    tag_float(&mut head, "MeasDesc_GlobalResolution", 1e-12);
    tag_int(&mut head, "TTResult_SyncRate", 0);
    tag_int(&mut head, "TTResult_NumberOfRecords", records as i64);
    let count_at = head.len() - 8;
    tag_int(&mut head, "TTResultFormat_TTTRRecType", RT_HYDRAHARP2_T2);
    tag_int(&mut head, "TTResultFormat_BitsPerRecord", 32);
    tag_head(&mut head, "Header_End", TY_EMPTY8);
    head.extend_from_slice(&[0u8; 8]);
    (head, count_at)
}

/// Writes `tags` (in time order, times ≥ 0, channels < 63) as a PTU file of HydraHarp
/// V2 T2 records at 1 ps resolution.
pub fn write_ptu_t2(out: &mut impl Write, tags: &[TimeTag]) -> Result<(), TagFileError> {
    check_order(tags)?;
    let mut records = Vec::with_capacity(4 * tags.len() + 64);
    let mut enc = T2Encoder::default();
    enc.encode(tags, &mut records)?;
    out.write_all(&ptu_header(enc.records).0)?;
    out.write_all(&records)?;
    Ok(())
}

/// Writes a PTU T2 file piece by piece; [`PtuT2Writer::finish`] fills in the record count.
pub struct PtuT2Writer<W: Write + Seek> {
    out: W,
    enc: T2Encoder,
    count_at: u64,
    last: i64,
    buf: Vec<u8>,
}

impl<W: Write + Seek> PtuT2Writer<W> {
    /// Starts a file.
    pub fn new(mut out: W) -> Result<Self, TagFileError> {
        let start = out.stream_position()?;
        let (head, count_at) = ptu_header(0);
        out.write_all(&head)?;
        Ok(Self {
            out,
            enc: T2Encoder::default(),
            count_at: start + count_at as u64,
            last: i64::MIN,
            buf: Vec::new(),
        })
    }

    /// Appends tags, which must continue the time order.
    pub fn write(&mut self, tags: &[TimeTag]) -> Result<(), TagFileError> {
        check_continues(self.last, self.enc.tags, tags)?;
        self.buf.clear();
        self.enc.encode(tags, &mut self.buf)?;
        self.out.write_all(&self.buf)?;
        if let Some(t) = tags.last() {
            self.last = t.time_ps;
        }
        Ok(())
    }

    /// Fills in the record count and returns the writer's output.
    pub fn finish(mut self) -> Result<W, TagFileError> {
        self.out.seek(SeekFrom::Start(self.count_at))?;
        self.out
            .write_all(&(self.enc.records as i64).to_le_bytes())?;
        self.out.seek(SeekFrom::End(0))?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// What [`read_ptu_t2`] found besides the detections.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PtuSummary {
    /// Seconds per time unit (`MeasDesc_GlobalResolution`).
    pub resolution_s: f64,
    /// Record type (`TTResultFormat_TTTRRecType`).
    pub record_type: i64,
    /// Marker records, skipped.
    pub markers: u64,
}

fn read_n<const N: usize>(input: &mut impl Read, what: &str) -> Result<[u8; N], TagFileError> {
    let mut b = [0u8; N];
    input
        .read_exact(&mut b)
        .map_err(|_| format(format!("PTU file ends inside {what}")))?;
    Ok(b)
}

/// Reads a PTU file of T2 records: detections on input channel `c` come back as
/// channel `c + 1` and sync events as channel 0 (the demo readers' numbering), with
/// times converted to picoseconds.
pub fn read_ptu_t2(input: &mut impl Read) -> Result<(Vec<TimeTag>, PtuSummary), TagFileError> {
    let mut r = TagReader::open(input)?;
    if r.format() != TagFormat::PtuT2 {
        return Err(format("not a PTU file (magic is not PQTTTR)"));
    }
    let tags = r.read_all()?;
    let summary = r.ptu_summary().unwrap_or_default();
    Ok((tags, summary))
}

/// Which format a [`TagReader`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagFormat {
    /// The qkdnet `.qtt` format.
    Qtt,
    /// PicoQuant PTU, T2 records.
    PtuT2,
}

#[derive(Debug)]
enum Decoder {
    Qtt,
    Ptu {
        v1: bool,
        ps_per_unit: f64,
        ofl: i64,
        summary: PtuSummary,
    },
}

/// Reads a time-tag file piece by piece, either format (told apart by the magic), for
/// files too long to hold in memory. Errors name the record: a file that ends before the
/// records its header announces is reported as truncated at that record; a time that goes
/// backwards is reported with both times; a qkdnet file with bytes after its last record
/// is refused. Nothing is ever returned past an error.
#[derive(Debug)]
pub struct TagReader<R: Read> {
    input: R,
    decoder: Decoder,
    /// Records announced by the header.
    announced: u64,
    /// Records read so far.
    read: u64,
    last: i64,
    failed: bool,
}

impl<R: Read> TagReader<R> {
    /// Reads the header.
    pub fn open(mut input: R) -> Result<Self, TagFileError> {
        let mut magic = [0u8; 8];
        input
            .read_exact(&mut magic)
            .map_err(|_| format("shorter than a time-tag file's 8-byte magic"))?;
        if &magic == QTT_MAGIC {
            let mut n = [0u8; 8];
            input
                .read_exact(&mut n)
                .map_err(|_| format("shorter than the 16-byte qkdnet time-tag header"))?;
            return Ok(Self {
                input,
                decoder: Decoder::Qtt,
                announced: u64::from_le_bytes(n),
                read: 0,
                last: i64::MIN,
                failed: false,
            });
        }
        if &magic[..6] != b"PQTTTR" {
            return Err(format(format!(
                "unknown magic {:?}: neither a qkdnet time-tag file (QKDNTT01) nor a PTU file (PQTTTR)",
                String::from_utf8_lossy(&magic)
            )));
        }
        let (n, res, rt) = parse_ptu_header(&mut input)?;
        let v1 = match rt {
            RT_HYDRAHARP_T2 => true,
            RT_HYDRAHARP2_T2 | RT_MULTIHARP_T2 | RT_TIMEHARP260N_T2 | RT_TIMEHARP260P_T2 => false,
            other => {
                return Err(format(format!(
                    "PTU record type {other:#010x} is not a T2 format this reader knows"
                )))
            }
        };
        if !(res.is_finite() && res > 0.0) || n < 0 {
            return Err(format(format!(
                "PTU header: resolution {res} s, {n} records"
            )));
        }
        Ok(Self {
            input,
            decoder: Decoder::Ptu {
                v1,
                ps_per_unit: res * 1e12,
                ofl: 0,
                summary: PtuSummary {
                    resolution_s: res,
                    record_type: rt,
                    markers: 0,
                },
            },
            announced: n as u64,
            read: 0,
            last: i64::MIN,
            failed: false,
        })
    }

    /// The file's format.
    pub fn format(&self) -> TagFormat {
        match self.decoder {
            Decoder::Qtt => TagFormat::Qtt,
            Decoder::Ptu { .. } => TagFormat::PtuT2,
        }
    }

    /// Records the header announces (PTU: including overflow and marker records).
    pub fn announced(&self) -> u64 {
        self.announced
    }

    /// What the PTU header and records said besides detections (`None` for qkdnet files).
    pub fn ptu_summary(&self) -> Option<PtuSummary> {
        match self.decoder {
            Decoder::Ptu { summary, .. } => Some(summary),
            Decoder::Qtt => None,
        }
    }

    /// Appends up to `max` records' detections to `out`; returns how many records were
    /// consumed (0 at the end of the file).
    pub fn read_chunk(
        &mut self,
        max: usize,
        out: &mut Vec<TimeTag>,
    ) -> Result<usize, TagFileError> {
        if self.failed {
            return Err(format("an earlier error ended this file"));
        }
        let result = self.read_chunk_inner(max, out);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn read_chunk_inner(
        &mut self,
        max: usize,
        out: &mut Vec<TimeTag>,
    ) -> Result<usize, TagFileError> {
        let left = self.announced - self.read;
        let want = (max as u64).min(left) as usize;
        if want == 0 {
            if left == 0 && matches!(self.decoder, Decoder::Qtt) {
                let mut extra = [0u8; 1];
                if self.input.read(&mut extra)? != 0 {
                    return Err(format(format!(
                        "bytes after the {} records the header announces",
                        self.announced
                    )));
                }
            }
            return Ok(0);
        }
        let size = match self.decoder {
            Decoder::Qtt => 12,
            Decoder::Ptu { .. } => 4,
        };
        let mut buf = vec![0u8; want * size];
        let mut got = 0;
        while got < buf.len() {
            match self.input.read(&mut buf[got..])? {
                0 => break,
                k => got += k,
            }
        }
        let whole = got / size;
        for r in buf[..whole * size].chunks_exact(size) {
            let index = self.read as usize;
            self.read += 1;
            let tag = match &mut self.decoder {
                Decoder::Qtt => Some(TimeTag {
                    time_ps: i64::from_le_bytes(r[..8].try_into().unwrap_or_default()),
                    channel: u32::from_le_bytes(r[8..].try_into().unwrap_or_default()),
                }),
                Decoder::Ptu {
                    v1,
                    ps_per_unit,
                    ofl,
                    summary,
                } => {
                    let r = u32::from_le_bytes([r[0], r[1], r[2], r[3]]);
                    let special = r >> 31 == 1;
                    let channel = (r >> 25) & 0x3F;
                    let t = i64::from(r & 0x01FF_FFFF);
                    let at = |ofl: i64| ((ofl + t) as f64 * *ps_per_unit).round() as i64;
                    if special {
                        match channel {
                            0x3F if *v1 || t == 0 => {
                                *ofl += if *v1 { WRAP_V1 } else { WRAP_V2 };
                                None
                            }
                            0x3F => {
                                *ofl += WRAP_V2 * t;
                                None
                            }
                            1..=15 => {
                                summary.markers += 1;
                                None
                            }
                            0 => Some(TimeTag {
                                time_ps: at(*ofl),
                                channel: 0,
                            }),
                            _ => None,
                        }
                    } else {
                        Some(TimeTag {
                            time_ps: at(*ofl),
                            channel: channel + 1,
                        })
                    }
                }
            };
            if let Some(tag) = tag {
                if tag.time_ps < self.last {
                    return Err(TagFileError::Record {
                        index,
                        what: format!(
                            "time {} ps comes before the previous record's {} ps",
                            tag.time_ps, self.last
                        ),
                    });
                }
                self.last = tag.time_ps;
                out.push(tag);
            }
        }
        if whole < want {
            return Err(TagFileError::Record {
                index: self.read as usize,
                what: format!(
                    "the file ends here (truncated): its header announces {} records",
                    self.announced
                ),
            });
        }
        Ok(whole)
    }

    /// Reads the rest of the file.
    pub fn read_all(&mut self) -> Result<Vec<TimeTag>, TagFileError> {
        let mut out = Vec::with_capacity(self.announced.min(1 << 24) as usize);
        while self.read_chunk(1 << 16, &mut out)? > 0 {}
        Ok(out)
    }
}

/// Parses a PTU tag header after the magic: (records, resolution s, record type).
fn parse_ptu_header(input: &mut impl Read) -> Result<(i64, f64, i64), TagFileError> {
    let _version = read_n::<8>(input, "the version")?;
    let (mut records, mut resolution, mut rec_type) = (None, None, None);
    for index in 0.. {
        if index > 100_000 {
            return Err(format("PTU header has no Header_End within 100 000 tags"));
        }
        let ident = read_n::<32>(input, "a tag name")?;
        let name_len = ident.iter().position(|&b| b == 0).unwrap_or(32);
        let name = String::from_utf8_lossy(&ident[..name_len]).into_owned();
        let _idx = i32::from_le_bytes(read_n::<4>(input, &name)?);
        let typ = u32::from_le_bytes(read_n::<4>(input, &name)?);
        let value = read_n::<8>(input, &name)?;
        match typ {
            TY_EMPTY8 | TY_BOOL8 | TY_BITSET64 | TY_COLOR8 | TY_TDATETIME => {}
            TY_INT8 => {
                let v = i64::from_le_bytes(value);
                match name.as_str() {
                    "TTResult_NumberOfRecords" => records = Some(v),
                    "TTResultFormat_TTTRRecType" => rec_type = Some(v),
                    _ => {}
                }
            }
            TY_FLOAT8 => {
                if name == "MeasDesc_GlobalResolution" {
                    resolution = Some(f64::from_le_bytes(value));
                }
            }
            TY_FLOAT8_ARRAY | TY_ANSI_STRING | TY_WIDE_STRING | TY_BINARY_BLOB => {
                let len = i64::from_le_bytes(value);
                if !(0..=1 << 30).contains(&len) {
                    return Err(format(format!("PTU tag {name}: length {len}")));
                }
                let copied = std::io::copy(&mut input.take(len as u64), &mut std::io::sink())?;
                if copied != len as u64 {
                    return Err(format(format!("PTU file ends inside tag {name}")));
                }
            }
            t => {
                return Err(format(format!(
                    "PTU tag {name}: unknown tag type {t:#010x}"
                )))
            }
        }
        if name == "Header_End" {
            break;
        }
    }
    Ok((
        records.ok_or_else(|| format("PTU header lacks TTResult_NumberOfRecords"))?,
        resolution.ok_or_else(|| format("PTU header lacks MeasDesc_GlobalResolution"))?,
        rec_type.ok_or_else(|| format("PTU header lacks TTResultFormat_TTTRRecType"))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stream() -> impl Strategy<Value = Vec<TimeTag>> {
        proptest::collection::vec((0i64..200_000_000_000, 0u32..8), 0..300).prop_map(|mut v| {
            v.sort_unstable();
            v.into_iter()
                .map(|(time_ps, channel)| TimeTag { time_ps, channel })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn qtt_round_trips(tags in stream()) {
            let mut buf = Vec::new();
            write_qtt(&mut buf, &tags).unwrap();
            prop_assert_eq!(buf.len(), 16 + 12 * tags.len());
            prop_assert_eq!(read_qtt(&mut buf.as_slice()).unwrap(), tags);
        }

        #[test]
        fn ptu_round_trips_with_overflows(tags in stream()) {
            let mut buf = Vec::new();
            write_ptu_t2(&mut buf, &tags).unwrap();
            let (back, s) = read_ptu_t2(&mut buf.as_slice()).unwrap();
            let want: Vec<TimeTag> = tags
                .iter()
                .map(|t| TimeTag { time_ps: t.time_ps, channel: t.channel + 1 })
                .collect();
            prop_assert_eq!(back, want);
            prop_assert_eq!(s.record_type, RT_HYDRAHARP2_T2);
            prop_assert_eq!(s.resolution_s, 1e-12);
        }

        #[test]
        fn streaming_writers_give_the_same_bytes(tags in stream(), cut in 0usize..300) {
            let cut = cut.min(tags.len());
            let mut whole = Vec::new();
            write_qtt(&mut whole, &tags).unwrap();
            let mut w = QttWriter::new(std::io::Cursor::new(Vec::new())).unwrap();
            w.write(&tags[..cut]).unwrap();
            w.write(&tags[cut..]).unwrap();
            prop_assert_eq!(w.finish().unwrap().into_inner(), whole);
            let mut whole = Vec::new();
            write_ptu_t2(&mut whole, &tags).unwrap();
            let mut w = PtuT2Writer::new(std::io::Cursor::new(Vec::new())).unwrap();
            w.write(&tags[..cut]).unwrap();
            w.write(&tags[cut..]).unwrap();
            prop_assert_eq!(w.finish().unwrap().into_inner(), whole);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = read_qtt(&mut bytes.as_slice());
            let mut ptu = b"PQTTTR\0\x001.0.00\0\0".to_vec();
            ptu.extend_from_slice(&bytes);
            let _ = read_ptu_t2(&mut ptu.as_slice());
        }
    }

    #[test]
    fn streaming_writers_refuse_time_going_back_across_pieces() {
        let t = |time_ps| TimeTag {
            time_ps,
            channel: 0,
        };
        let mut w = QttWriter::new(std::io::Cursor::new(Vec::new())).unwrap();
        w.write(&[t(5), t(9)]).unwrap();
        let err = w.write(&[t(7)]).unwrap_err().to_string();
        assert!(err.contains("record 2") && err.contains("before"), "{err}");
        let mut w = PtuT2Writer::new(std::io::Cursor::new(Vec::new())).unwrap();
        w.write(&[t(5)]).unwrap();
        assert!(w.write(&[t(4)]).is_err());
        // An unfinished qkdnet file announces no records and is refused, not half-read.
        let mut w = QttWriter::new(std::io::Cursor::new(Vec::new())).unwrap();
        w.write(&[t(1), t(2)]).unwrap();
        let bytes = w.out.get_ref().clone();
        assert!(read_qtt(&mut bytes.as_slice()).is_err());
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let tags = [
            TimeTag {
                time_ps: 5,
                channel: 1,
            },
            TimeTag {
                time_ps: 3,
                channel: 1,
            },
        ];
        let err = write_qtt(&mut Vec::new(), &tags).unwrap_err().to_string();
        assert!(err.contains("record 1") && err.contains("before"), "{err}");
        let mut buf = Vec::new();
        write_qtt(&mut buf, &tags[..1]).unwrap();
        buf.pop();
        let err = read_qtt(&mut buf.as_slice()).unwrap_err().to_string();
        assert!(err.contains("announces 1 records"), "{err}");
        let err = read_qtt(&mut &b"NOTQTT00........"[..])
            .unwrap_err()
            .to_string();
        assert!(err.contains("magic"), "{err}");
        let big = [TimeTag {
            time_ps: 0,
            channel: 63,
        }];
        assert!(write_ptu_t2(&mut Vec::new(), &big).is_err());
        let neg = [TimeTag {
            time_ps: -1,
            channel: 0,
        }];
        assert!(write_ptu_t2(&mut Vec::new(), &neg).is_err());
        let err = read_ptu_t2(&mut &b"PQTTTR\0\x001.0.00\0\0"[..])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ends inside"), "{err}");
    }

    #[test]
    fn streaming_reader_reads_both_formats_in_pieces_and_names_bad_records() {
        let tags: Vec<TimeTag> = (0..1000i64)
            .map(|i| TimeTag {
                time_ps: i * 40_000_000 + 7,
                channel: (i % 3) as u32,
            })
            .collect();
        let mut qtt = Vec::new();
        write_qtt(&mut qtt, &tags).unwrap();
        let mut r = TagReader::open(qtt.as_slice()).unwrap();
        assert_eq!(r.format(), TagFormat::Qtt);
        let mut out = Vec::new();
        while r.read_chunk(37, &mut out).unwrap() > 0 {}
        assert_eq!(out, tags);
        let mut ptu = Vec::new();
        write_ptu_t2(&mut ptu, &tags).unwrap();
        let mut r = TagReader::open(ptu.as_slice()).unwrap();
        assert_eq!(r.format(), TagFormat::PtuT2);
        let out = r.read_all().unwrap();
        assert!(out
            .iter()
            .zip(&tags)
            .all(|(a, b)| a.time_ps == b.time_ps && a.channel == b.channel + 1));
        assert_eq!(out.len(), tags.len());
        // Truncated mid-way: the record where it ends is named, after the good ones.
        let cut = &qtt[..16 + 12 * 500 + 5];
        let mut r = TagReader::open(cut).unwrap();
        let mut out = Vec::new();
        let err = loop {
            match r.read_chunk(64, &mut out) {
                Ok(0) => panic!("truncation not seen"),
                Ok(_) => {}
                Err(e) => break e.to_string(),
            }
        };
        assert!(
            err.contains("record 500") && err.contains("truncated"),
            "{err}"
        );
        assert_eq!(out.len(), 500);
        assert!(
            r.read_chunk(64, &mut out).is_err(),
            "nothing after an error"
        );
        // Time going backwards in a (hand-made) qkdnet file.
        let mut bad = qtt.clone();
        let at = 16 + 12 * 10;
        bad[at..at + 8].copy_from_slice(&0i64.to_le_bytes());
        let err = TagReader::open(bad.as_slice())
            .unwrap()
            .read_all()
            .unwrap_err()
            .to_string();
        assert!(err.contains("record 10") && err.contains("before"), "{err}");
        // Trailing bytes after the announced records.
        let mut long = qtt.clone();
        long.push(0);
        assert!(TagReader::open(long.as_slice())
            .unwrap()
            .read_all()
            .is_err());
    }

    #[test]
    fn a_long_gap_is_written_as_counted_overflows() {
        // 10 s between two detections: 10e12 / 2^25 ≈ 298 023 overflows in one record.
        let tags = [
            TimeTag {
                time_ps: 1,
                channel: 0,
            },
            TimeTag {
                time_ps: 10_000_000_000_001,
                channel: 2,
            },
        ];
        let mut buf = Vec::new();
        write_ptu_t2(&mut buf, &tags).unwrap();
        let (back, _) = read_ptu_t2(&mut buf.as_slice()).unwrap();
        assert_eq!(back[1].time_ps, 10_000_000_000_001);
        // Header (under 1 KiB), then 3 records: photon, one overflow record, photon.
        assert!(buf.len() < 1024, "{} bytes", buf.len());
        assert_eq!((buf.len() % 4, back.len()), (0, 2));
    }
}
