//! Record tables: rows of real numbers. A continuous-variable link's symbols and
//! quadrature samples (`.cvq`), a twin-field relay's clicks and the users' emission logs
//! (`.qtab`) use this format.
//!
//! # Format
//!
//! All integers and floats little-endian.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `QKDNCV01` |
//! | 8 | 8 | number of rows `n` (u64) |
//! | 16 | 4 | columns per row `c` (u32, 1..=256) |
//! | 20 | 4 | reserved, 0 |
//! | 24 | 8·c·n | rows of `c` IEEE-754 f64 values |
//!
//! What the columns mean is the writer's to document (the emulator's CV-QKD files: Alice
//! `x, p`; Bob heterodyne `y_x, y_p`; Bob homodyne `quadrature (0 = x, 1 = p), y`; all in
//! shot-noise units; its twin-field files: docs/EMULATOR.md). Integers such as pulse
//! numbers are exact up to 2⁵³. A file whose length does not match its header is refused; a file
//! left unfinished by [`SampleWriter`] announces 0 rows and is refused too.

use crate::timetag::TagFileError;
use std::io::{Read, Seek, SeekFrom, Write};

const MAGIC: &[u8; 8] = b"QKDNCV01";
/// Most columns a row may have.
pub const MAX_COLUMNS: u32 = 256;

fn format(what: impl Into<String>) -> TagFileError {
    TagFileError::Format { what: what.into() }
}

/// Writes a sample file piece by piece; [`SampleWriter::finish`] fills in the row count.
pub struct SampleWriter<W: Write + Seek> {
    out: W,
    columns: u32,
    rows: u64,
    buf: Vec<u8>,
}

impl<W: Write + Seek> SampleWriter<W> {
    /// Starts a file of rows of `columns` values.
    pub fn new(mut out: W, columns: u32) -> Result<Self, TagFileError> {
        if columns == 0 || columns > MAX_COLUMNS {
            return Err(format(format!("{columns} columns (1..={MAX_COLUMNS})")));
        }
        out.write_all(MAGIC)?;
        out.write_all(&0u64.to_le_bytes())?;
        out.write_all(&columns.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        Ok(Self {
            out,
            columns,
            rows: 0,
            buf: Vec::new(),
        })
    }

    /// Appends whole rows (`values.len()` a multiple of the column count).
    pub fn write(&mut self, values: &[f64]) -> Result<(), TagFileError> {
        let c = self.columns as usize;
        if !values.len().is_multiple_of(c) {
            return Err(format(format!(
                "{} values are not whole rows of {c}",
                values.len()
            )));
        }
        self.buf.clear();
        for v in values {
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
        self.out.write_all(&self.buf)?;
        self.rows += (values.len() / c) as u64;
        Ok(())
    }

    /// Fills in the row count and returns the writer's output.
    pub fn finish(mut self) -> Result<W, TagFileError> {
        self.out.seek(SeekFrom::Start(8))?;
        self.out.write_all(&self.rows.to_le_bytes())?;
        self.out.seek(SeekFrom::End(0))?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads a sample file: the column count and the values, row after row.
pub fn read_samples(input: &mut impl Read) -> Result<(u32, Vec<f64>), TagFileError> {
    let mut head = [0u8; 24];
    input
        .read_exact(&mut head)
        .map_err(|_| format("shorter than the 24-byte qkdnet sample header"))?;
    if &head[..8] != MAGIC {
        return Err(format("not a qkdnet sample file (magic is not QKDNCV01)"));
    }
    let rows = u64::from_le_bytes(head[8..16].try_into().unwrap_or_default());
    let columns = u32::from_le_bytes(head[16..20].try_into().unwrap_or_default());
    if columns == 0 || columns > MAX_COLUMNS {
        return Err(format(format!(
            "header announces {columns} columns (1..={MAX_COLUMNS})"
        )));
    }
    let mut body = Vec::new();
    input.read_to_end(&mut body)?;
    let want = rows.saturating_mul(columns as u64).saturating_mul(8);
    if body.len() as u64 != want || rows == 0 && !body.is_empty() {
        return Err(format(format!(
            "header announces {rows} rows of {columns} ({want} bytes), the file holds {} bytes after it",
            body.len()
        )));
    }
    Ok((
        columns,
        body.chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap_or_default()))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips_in_pieces(values in proptest::collection::vec(-1e9f64..1e9, 0..200), cut in 0usize..100) {
            let values: Vec<f64> = values[..values.len() / 2 * 2].to_vec();
            let cut = (cut.min(values.len()) / 2) * 2;
            let mut w = SampleWriter::new(std::io::Cursor::new(Vec::new()), 2).unwrap();
            w.write(&values[..cut]).unwrap();
            w.write(&values[cut..]).unwrap();
            let bytes = w.finish().unwrap().into_inner();
            prop_assert_eq!(bytes.len(), 24 + 8 * values.len());
            let (c, back) = read_samples(&mut bytes.as_slice()).unwrap();
            prop_assert_eq!(c, 2);
            prop_assert_eq!(back, values);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = read_samples(&mut bytes.as_slice());
        }
    }

    #[test]
    fn bad_files_are_refused() {
        let mut w = SampleWriter::new(std::io::Cursor::new(Vec::new()), 2).unwrap();
        assert!(w.write(&[1.0, 2.0, 3.0]).is_err(), "half a row");
        w.write(&[1.0, 2.0]).unwrap();
        // Unfinished: announces 0 rows but holds one.
        let bytes = w.out.get_ref().clone();
        let e = read_samples(&mut bytes.as_slice()).unwrap_err().to_string();
        assert!(e.contains("0 rows"), "{e}");
        let bytes = w.finish().unwrap().into_inner();
        assert!(
            read_samples(&mut &bytes[..bytes.len() - 1]).is_err(),
            "truncated"
        );
        assert!(SampleWriter::new(std::io::Cursor::new(Vec::new()), 0).is_err());
        assert!(read_samples(&mut &b"QKDNTT01"[..]).is_err());
    }
}
