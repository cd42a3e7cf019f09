//! Fuzz crash recovery of the CRC-per-line files (`crclog.rs`), which the event log and the
//! notification outbox both use, with the append-then-reopen property:
//!
//! 1. Any file content (lines the fuzzer writes raw, or as JSON with a correct CRC so recovery
//!    reaches the JSON parser) is recovered without panicking; recovery only ever cuts a tail
//!    off (the bytes before the cut are untouched) and reports exactly what it cut.
//! 2. A record appended after recovery is read back by the next recovery, after every record
//!    the first one read, in order, with nothing cut and the same damaged lines reported.
//!
//! The same bytes are also recovered as event-log records (`events::Record`): no panic, and
//! the cut-a-tail-only rule holds. Files live in /dev/shm when it exists (tmpfs: no disk
//! wear, fast), else in the temp directory; nothing else is touched.
#![no_main]

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use understudy::crclog::{OpenReport, encode, recover};

#[derive(Debug, Arbitrary)]
enum Line {
    /// Bytes written as they are.
    Raw(Vec<u8>),
    /// `json TAB crc NEWLINE` with the right CRC, so the content reaches the parser.
    Sealed(String),
    /// A sealed line with its end cut off (a torn write).
    Torn(String, u8),
}

#[derive(Debug, Arbitrary)]
struct Input {
    lines: Vec<Line>,
    append: Value2,
}

/// A JSON value to append (serde_json's `Value` has no `Arbitrary`).
#[derive(Debug, Arbitrary)]
enum Value2 {
    Str(String),
    Num(u64),
    Pair(String, i64),
}

impl Value2 {
    fn json(&self) -> Value {
        match self {
            Value2::Str(s) => Value::from(s.as_str()),
            Value2::Num(n) => Value::from(*n),
            Value2::Pair(k, v) => serde_json::json!({ "k": k, "v": v }),
        }
    }
}

fn sealed(json: &str) -> Vec<u8> {
    format!("{json}\t{:08x}\n", crc32fast_hash(json.as_bytes())).into_bytes()
}

/// CRC-32 (IEEE), as `crclog` computes it; recomputed here so the target does not depend on
/// how `crclog` is written, only on its file format.
fn crc32fast_hash(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn temp() -> File {
    if std::path::Path::new("/dev/shm").is_dir()
        && let Ok(f) = tempfile::tempfile_in("/dev/shm")
    {
        return f;
    }
    tempfile::tempfile().expect("temp file")
}

fn contents(f: &mut File) -> Vec<u8> {
    let pos = f.stream_position().unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    f.seek(SeekFrom::Start(pos)).unwrap();
    v
}

/// Recover `bytes` as `T` and check the cut-a-tail-only rule; returns the file (positioned at
/// its end), the report and what was read.
fn recover_checked<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> (File, OpenReport, Vec<T>) {
    let mut f = temp();
    f.write_all(bytes).unwrap();
    let mut read = Vec::new();
    let (report, size) = recover(&mut f, |v: T| read.push(v)).expect("recover on a healthy file");
    assert_eq!(report.records as usize, read.len());
    assert_eq!(size, bytes.len() as u64 - report.truncated_bytes, "size after recovery");
    let now = contents(&mut f);
    assert_eq!(now.as_slice(), &bytes[..size as usize], "recovery changed bytes it kept");
    assert!(now.is_empty() || now.ends_with(b"\n"), "a kept file ends with a complete line");
    assert_eq!(f.stream_position().unwrap(), size, "left at the end");
    (f, report, read)
}

fuzz_target!(|input: Input| {
    let mut bytes = Vec::new();
    for l in input.lines.iter().take(200) {
        match l {
            Line::Raw(b) => bytes.extend_from_slice(b),
            Line::Sealed(j) => bytes.extend(sealed(j)),
            Line::Torn(j, cut) => {
                let s = sealed(j);
                let keep = s.len().saturating_sub(1 + usize::from(*cut) % s.len().max(1));
                bytes.extend_from_slice(&s[..keep]);
            }
        }
    }

    // As event-log records: never panics, only cuts a tail.
    let _ = recover_checked::<understudy::events::Record>(&bytes);

    // As any JSON: the append-then-reopen property.
    let (mut f, first, read) = recover_checked::<Value>(&bytes);
    let value = input.append.json();
    let line = encode(&value);
    f.write_all(line.as_bytes()).unwrap();
    f.sync_data().unwrap();
    let after = contents(&mut f);
    let (_f, second, read_again) = recover_checked::<Value>(&after);
    assert_eq!(second.truncated_bytes, 0, "nothing cut after a clean append: {first:?} then {second:?}");
    assert_eq!(second.skipped_lines, first.skipped_lines, "the same damaged lines");
    assert_eq!(read_again.len(), read.len() + 1);
    assert_eq!(&read_again[..read.len()], read.as_slice(), "earlier records unchanged");
    assert_eq!(read_again.last(), Some(&value), "the appended record reads back last");
});
