//! The file format shared by the event log and the notification outbox: one JSON value per
//! line, a tab, and the CRC-32 of the JSON in hex.
//!
//! Writers append whole lines and fsync; [`recover`] reads a file back after a crash, and
//! [`scan`] reads one with the same rules without changing it (the API's reader). The rules:
//! - A damaged last line (bad CRC, or no newline) is the write that was in flight when the
//!   process died: [`recover`] cuts it off, so nothing earlier is ever touched.
//! - A damaged line with good lines after it (disk corruption, a hand edit) is reported and
//!   stepped over, never "repaired". Bytes that are not UTF-8 are just damage.
//! - A complete line whose CRC is right but which this build cannot use (a kind written by a
//!   newer version, a value out of range) was acknowledged by whoever wrote it: it is reported
//!   and stepped over, and never deleted, even when it is the last line.
//!
//! This module does no other I/O.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// What [`recover`] found besides the good lines.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// Good lines read.
    pub records: u64,
    /// Bytes cut off the end (a torn final write).
    pub truncated_bytes: u64,
    /// 1-based numbers of damaged lines that were skipped.
    pub skipped_lines: Vec<u64>,
    /// 1-based numbers of intact lines (right CRC) this build cannot read; kept in the file.
    pub unreadable_lines: Vec<u64>,
}

/// One line, newline included.
pub fn encode<T: Serialize>(value: &T) -> String {
    let json = serde_json::to_string(value).expect("our records always serialize");
    let crc = crc32fast::hash(json.as_bytes());
    format!("{json}\t{crc:08x}\n")
}

/// What one line holds.
#[derive(Debug, PartialEq)]
pub enum Decoded<T> {
    Good(T),
    /// The CRC is right but the value cannot be read by this build.
    Unreadable,
    /// The CRC is wrong or missing.
    Damaged,
}

/// The JSON of one line (with or without its newline) if its CRC is right.
pub fn checked_json(line: &[u8]) -> Option<&[u8]> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let tab = line.iter().rposition(|&b| b == b'\t')?;
    let (json, crc) = (&line[..tab], &line[tab + 1..]);
    let crc = std::str::from_utf8(crc).ok().and_then(|c| u32::from_str_radix(c.trim_end(), 16).ok());
    (crc == Some(crc32fast::hash(json))).then_some(json)
}

/// Check the CRC of one line (with or without its newline) and parse it.
pub fn decode_bytes<T: DeserializeOwned>(line: &[u8]) -> Decoded<T> {
    let Some(json) = checked_json(line) else {
        return Decoded::Damaged;
    };
    match serde_json::from_slice(json) {
        Ok(v) => Decoded::Good(v),
        Err(_) => Decoded::Unreadable,
    }
}

/// The value of one line, if its CRC matches and it parses.
pub fn decode<T: DeserializeOwned>(line: &str) -> Option<T> {
    match decode_bytes(line.as_bytes()) {
        Decoded::Good(v) => Some(v),
        _ => None,
    }
}

/// Read `file` from the start, handing every good line to `each` in order; cut a torn final
/// line off (and fsync that). Leaves the file positioned at its end; returns the report and the
/// file's size.
pub fn recover<T: DeserializeOwned>(file: &mut File, mut each: impl FnMut(T)) -> std::io::Result<(OpenReport, u64)> {
    let (report, good_end, _) = scan(&mut &*file, |v| {
        each(v);
        true
    })?;
    if report.truncated_bytes > 0 {
        file.set_len(good_end)?;
        file.sync_data()?;
    }
    let size = file.seek(SeekFrom::End(0))?;
    Ok((report, size))
}

/// Read like [`recover`] without changing anything: every good line goes to `each` until it
/// returns `false`. Returns the report (whose `truncated_bytes` says what `recover` would cut),
/// the offset after the last line to keep, and the bytes read.
pub fn scan<T: DeserializeOwned, R: std::io::Read + Seek>(file: &mut R, each: impl FnMut(T) -> bool) -> std::io::Result<(OpenReport, u64, u64)> {
    scan_with(file, decode_bytes::<T>, each)
}

/// [`scan`] with the caller's decoder for each complete line (it must check the CRC, e.g.
/// with [`checked_json`]).
pub fn scan_with<T, R: std::io::Read + Seek>(
    file: &mut R,
    decode: impl Fn(&[u8]) -> Decoded<T>,
    mut each: impl FnMut(T) -> bool,
) -> std::io::Result<(OpenReport, u64, u64)> {
    let mut report = OpenReport::default();
    let mut good_end: u64 = 0;
    file.seek(SeekFrom::Start(0))?;
    let mut reader = BufReader::new(file);
    let (mut offset, mut line_no) = (0u64, 0u64);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        offset += n as u64;
        let complete = buf.last() == Some(&b'\n');
        let decoded = if complete { decode(&buf) } else { Decoded::Damaged };
        match decoded {
            Decoded::Good(v) => {
                report.records += 1;
                good_end = offset;
                if !each(v) {
                    break;
                }
            }
            Decoded::Unreadable => {
                report.unreadable_lines.push(line_no);
                good_end = offset;
            }
            Decoded::Damaged => {
                let at_end = reader.fill_buf().map(|b| b.is_empty()).unwrap_or(true);
                if at_end {
                    report.truncated_bytes = offset - good_end;
                } else {
                    report.skipped_lines.push(line_no);
                    good_end = offset;
                }
            }
        }
    }
    Ok((report, good_end, offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct V {
        n: u32,
    }

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        std::fs::write(&path, bytes).unwrap();
        let f = std::fs::OpenOptions::new().read(true).append(true).open(&path).unwrap();
        (dir, f)
    }

    #[test]
    fn a_non_utf8_line_is_damage_and_reading_goes_on() {
        let mut bytes = Vec::from(&b"\xff\n"[..]);
        bytes.extend_from_slice(encode(&V { n: 2 }).as_bytes());
        let (_d, mut f) = file_with(&bytes);
        let mut got = Vec::new();
        let (report, _, _) = scan(&mut f, |v: V| {
            got.push(v.n);
            true
        })
        .unwrap();
        assert_eq!(got, vec![2]);
        assert_eq!(report.skipped_lines, vec![1]);
    }

    #[test]
    fn an_intact_last_line_this_build_cannot_read_is_kept() {
        // A kind from a newer version: the CRC is right, the shape is not ours.
        let newer = {
            let json = r#"{"m":"from the future"}"#;
            format!("{json}\t{:08x}\n", crc32fast::hash(json.as_bytes()))
        };
        let mut bytes = encode(&V { n: 1 }).into_bytes();
        bytes.extend_from_slice(newer.as_bytes());
        let (d, mut f) = file_with(&bytes);
        let mut got = Vec::new();
        let (report, size) = recover(&mut f, |v: V| got.push(v.n)).unwrap();
        assert_eq!(got, vec![1]);
        assert_eq!(report.truncated_bytes, 0);
        assert_eq!(report.unreadable_lines, vec![2]);
        assert_eq!(size, bytes.len() as u64);
        assert_eq!(std::fs::read(d.path().join("f.log")).unwrap(), bytes, "nothing deleted");
        // And appending after it keeps every line.
        f.write_all(encode(&V { n: 3 }).as_bytes()).unwrap();
        let mut got = Vec::new();
        recover(&mut f, |v: V| got.push(v.n)).unwrap();
        assert_eq!(got, vec![1, 3]);
    }
}
