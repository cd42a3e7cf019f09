//! The file format shared by the event log and the notification outbox: one JSON value per
//! line, a tab, and the CRC-32 of the JSON in hex.
//!
//! Writers append whole lines and fsync; [`recover`] reads a file back after a crash. A
//! damaged last line is the write that was in flight when the process died: it is cut off, so
//! nothing earlier is ever touched. A damaged line with good lines after it (disk corruption, a
//! hand edit) is reported and stepped over, never "repaired". This module does no other I/O.

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
}

/// One line, newline included.
pub fn encode<T: Serialize>(value: &T) -> String {
    let json = serde_json::to_string(value).expect("our records always serialize");
    let crc = crc32fast::hash(json.as_bytes());
    format!("{json}\t{crc:08x}\n")
}

/// The value of one line, if its CRC matches and it parses.
pub fn decode<T: DeserializeOwned>(line: &str) -> Option<T> {
    let (json, crc) = line.rsplit_once('\t')?;
    let crc = u32::from_str_radix(crc.trim_end(), 16).ok()?;
    if crc32fast::hash(json.as_bytes()) != crc {
        return None;
    }
    serde_json::from_str(json).ok()
}

/// Read `file` from the start, handing every good line to `each` in order; cut a torn final
/// line off (and fsync that). Leaves the file positioned at its end; returns the report and the
/// file's size.
pub fn recover<T: DeserializeOwned>(file: &mut File, mut each: impl FnMut(T)) -> std::io::Result<(OpenReport, u64)> {
    let mut report = OpenReport::default();
    let mut good_end: u64 = 0;
    {
        file.seek(SeekFrom::Start(0))?;
        let mut reader = BufReader::new(&*file);
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
            match std::str::from_utf8(&buf).ok().and_then(decode::<T>) {
                Some(v) if complete => {
                    each(v);
                    report.records += 1;
                    good_end = offset;
                }
                _ => {
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
    }
    if report.truncated_bytes > 0 {
        file.set_len(good_end)?;
        file.sync_data()?;
    }
    let size = file.seek(SeekFrom::End(0))?;
    Ok((report, size))
}
