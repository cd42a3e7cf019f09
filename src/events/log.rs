//! The durable event log: `events.log` in the data directory.
//!
//! One record per line: the record as JSON, a tab, and the CRC-32 of the JSON in hex. Each
//! append is written with one `write` and made durable with `fdatasync` before `append`
//! returns: an event is acknowledged only once it is on disk, so `kill -9` at any moment loses
//! nothing acknowledged. Opening the log verifies every line; a torn last line (the write that
//! was in flight when the process died) is cut off, so nothing earlier is ever damaged. A bad
//! line in the middle (disk corruption, hand edits) is reported and skipped, never "repaired".
//!
//! A recent window of records stays in memory for the API; older ones are read from the file.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use super::{Event, Record};

/// Records kept in memory for `since` queries without touching the disk.
const MEMORY_WINDOW: usize = 50_000;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot open event log {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("cannot append to event log {path}: {source}")]
    Append { path: PathBuf, source: std::io::Error },
    #[error("cannot read event log {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
}

pub use crate::crclog::OpenReport;

pub struct EventLog {
    path: PathBuf,
    file: File,
    next_seq: u64,
    recent: VecDeque<Record>,
    /// Whether to fdatasync each append (always true outside benchmarks of other parts).
    sync: bool,
}

fn encode(record: &Record) -> String {
    crate::crclog::encode(record)
}

impl EventLog {
    /// Open (or create) `dir/events.log`, verify it and return every record in order.
    pub fn open(dir: &Path) -> Result<(EventLog, Vec<Record>, OpenReport), LogError> {
        std::fs::create_dir_all(dir).map_err(|source| LogError::Open { path: dir.to_owned(), source })?;
        let path = dir.join("events.log");
        let open_err = |source| LogError::Open { path: path.clone(), source };
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(open_err)?;

        let mut records = Vec::new();
        let (report, _) = crate::crclog::recover(&mut file, |r: Record| records.push(r)).map_err(open_err)?;
        let next_seq = records.last().map(|r| r.seq + 1).unwrap_or(1);
        let recent = records.iter().rev().take(MEMORY_WINDOW).rev().cloned().collect();
        Ok((EventLog { path, file, next_seq, recent, sync: true }, records, report))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sequence number the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Append one event, durably. Returns the stored record.
    pub fn append(&mut self, event: Event, time_us: u64) -> Result<Record, LogError> {
        let record = Record { seq: self.next_seq, time_us, event };
        let line = encode(&record);
        let err = |source| LogError::Append { path: self.path.clone(), source };
        self.file.write_all(line.as_bytes()).map_err(err)?;
        if self.sync {
            self.file.sync_data().map_err(err)?;
        }
        self.next_seq += 1;
        if self.recent.len() == MEMORY_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(record.clone());
        Ok(record)
    }

    /// Records with `seq > since`, at most `limit` of them, oldest first.
    pub fn since(&self, since: u64, limit: usize) -> Result<Vec<Record>, LogError> {
        match self.since_in_memory(since, limit) {
            Some(records) => Ok(records),
            None => read_since(&self.path, since, limit),
        }
    }

    /// The same, when the in-memory window covers it; `None` means read the file
    /// ([`read_since`]), which callers holding a lock on the log should do after releasing it.
    pub fn since_in_memory(&self, since: u64, limit: usize) -> Option<Vec<Record>> {
        let covered = self.recent.front().is_some_and(|r| r.seq <= since + 1) || self.recent.len() as u64 + 1 >= self.next_seq;
        covered.then(|| self.recent.iter().filter(|r| r.seq > since).take(limit).cloned().collect())
    }
}

/// Records with `seq > since` from the log file at `path`, at most `limit`, oldest first.
pub fn read_since(path: &Path, since: u64, limit: usize) -> Result<Vec<Record>, LogError> {
    let err = |source| LogError::Read { path: path.to_owned(), source };
    let f = File::open(path).map_err(err)?;
    let mut out = Vec::new();
    for line in BufReader::new(f).lines() {
        let line = line.map_err(err)?;
        if let Some(r) = crate::crclog::decode::<Record>(&line)
            && r.seq > since
        {
            out.push(r);
            if out.len() >= limit {
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u32) -> Event {
        Event::DaemonStopped { reason: format!("test {n}") }
    }

    #[test]
    fn appends_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, recs, _) = EventLog::open(dir.path()).unwrap();
            assert!(recs.is_empty());
            for i in 0..5 {
                assert_eq!(log.append(ev(i), 100 + i as u64).unwrap().seq, i as u64 + 1);
            }
        }
        let (log, recs, report) = EventLog::open(dir.path()).unwrap();
        assert_eq!(recs.len(), 5);
        assert_eq!(recs[4].event, ev(4));
        assert_eq!(log.next_seq(), 6);
        assert_eq!(report.truncated_bytes, 0);
        assert_eq!(log.since(3, 10).unwrap().iter().map(|r| r.seq).collect::<Vec<_>>(), vec![4, 5]);
    }

    #[test]
    fn old_records_come_from_the_file_once_they_leave_the_memory_window() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = EventLog::open(dir.path()).unwrap();
        log.sync = false; // 50,000 fsyncs would only make this slow
        for i in 0..(MEMORY_WINDOW as u32 + 10) {
            log.append(ev(i), i as u64).unwrap();
        }
        assert!(log.since_in_memory(5, 3).is_none(), "seq 6 left the window");
        let old = log.since(5, 3).unwrap();
        assert_eq!(old.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![6, 7, 8]);
        assert_eq!(old[0].event, ev(5));
        let recent = log.since_in_memory(MEMORY_WINDOW as u64 + 5, 100).unwrap();
        assert_eq!(recent.first().map(|r| r.seq), Some(MEMORY_WINDOW as u64 + 6));
    }

    #[test]
    fn torn_tail_is_cut_and_earlier_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _, _) = EventLog::open(dir.path()).unwrap();
            log.append(ev(1), 1).unwrap();
            log.append(ev(2), 2).unwrap();
        }
        let path = dir.path().join("events.log");
        let full = std::fs::read(&path).unwrap();
        // Simulate a crash in the middle of writing a third record, at every possible byte.
        let third = encode(&Record { seq: 3, time_us: 3, event: ev(3) });
        for cut in 1..third.len() {
            let mut bytes = full.clone();
            bytes.extend_from_slice(&third.as_bytes()[..cut]);
            std::fs::write(&path, &bytes).unwrap();
            let (mut log, recs, report) = EventLog::open(dir.path()).unwrap();
            assert_eq!(recs.len(), 2, "cut at {cut}");
            assert_eq!(report.truncated_bytes, cut as u64);
            assert_eq!(log.append(ev(9), 9).unwrap().seq, 3);
            drop(log);
            let (_, recs, _) = EventLog::open(dir.path()).unwrap();
            assert_eq!(recs.len(), 3);
            std::fs::write(&path, &full).unwrap();
        }
    }

    #[test]
    fn damaged_middle_line_is_skipped_not_truncated() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _, _) = EventLog::open(dir.path()).unwrap();
            for i in 0..3 {
                log.append(ev(i), 1).unwrap();
            }
        }
        let path = dir.path().join("events.log");
        let text = std::fs::read_to_string(&path).unwrap();
        let damaged = text.replacen("test 1", "test X", 1);
        std::fs::write(&path, damaged).unwrap();
        let (_, recs, report) = EventLog::open(dir.path()).unwrap();
        assert_eq!(recs.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(report.skipped_lines, vec![2]);
    }
}
