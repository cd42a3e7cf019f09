//! The durable event log: `events.log` in the data directory.
//!
//! One record per line: the record as JSON, a tab, and the CRC-32 of the JSON in hex (see
//! `crclog.rs`). Opening the log verifies every line; a torn last line (the write that was in
//! flight when the process died) is cut off, so nothing earlier is ever damaged. A bad line in
//! the middle (disk corruption, hand edits) is reported and skipped, never "repaired".
//!
//! # Who touches the disk
//! [`EventLog::append`] never does I/O: it gives the record the next sequence number, keeps it
//! in the memory window and queues it for the **writer thread**, which owns the file. The writer
//! writes everything queued in one `write` and makes it durable with `fdatasync` (group commit),
//! then hands each record, in order, to the `on_durable` hook (the notification dispatcher) and
//! wakes [`Durability::wait`]ers. The core waits for durability only up to a bound (a stuck disk
//! must not hold a failover hostage) and carries on; the records are written, in order, when the
//! disk comes back.
//!
//! # Failed writes
//! The writer remembers the offset after the last durable line. A failed or short `write`, or a
//! failed `fdatasync`, cuts the file back to that offset before anything else is written (so
//! the next record is never glued onto a torn line, and data whose fsync failed is written
//! again rather than trusted), then retries the same records with backoff. Sequence numbers are
//! assigned once, in order, and never reused while the daemon runs; nothing queued is dropped.
//!
//! # Read-only or full disks
//! When the file cannot be opened for writing, the history is read from a read-only handle and
//! the writer keeps trying to open it; the daemon runs meanwhile (its events wait in memory).
//!
//! A recent window of *durable* records stays in memory for the API; older ones are read from
//! the file with the same recovery rules as start-up ([`read_since`]).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{Event, Record};

/// Records kept in memory for `since` queries without touching the disk.
const MEMORY_WINDOW: usize = 50_000;

/// Longest pause between two attempts of a failing write.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

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

/// Called by the writer thread with each record once it is durable, in sequence order.
pub type OnDurable = Box<dyn FnMut(&Record) + Send>;

/// Where the writer thread puts bytes. The file in production; tests inject stalls and short
/// writes through it.
pub(crate) trait Sink: Send {
    /// Append `bytes` at the end (a failure may leave any prefix of them written).
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// Make everything appended durable.
    fn sync(&mut self) -> std::io::Result<()>;
    /// Cut the file to `len` bytes, durably.
    fn truncate(&mut self, len: u64) -> std::io::Result<()>;
}

/// The real file, opened for appending on first use when it could not be at start-up.
struct FileSink {
    path: PathBuf,
    file: Option<File>,
    sync: Arc<AtomicBool>,
}

impl FileSink {
    fn file(&mut self) -> std::io::Result<&mut File> {
        if self.file.is_none() {
            self.file = Some(OpenOptions::new().append(true).create(true).open(&self.path)?);
        }
        Ok(self.file.as_mut().expect("just opened"))
    }
}

impl Sink for FileSink {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file()?.write_all(bytes)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        if self.sync.load(Ordering::Relaxed) { self.file()?.sync_data() } else { Ok(()) }
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        let f = self.file()?;
        f.set_len(len)?;
        f.sync_data()
    }
}

/// How far the disk is behind the events, for status, `/healthz`, metrics and the core.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStatus {
    /// Highest sequence number given out.
    pub last_seq: u64,
    /// Highest sequence number on disk (every lower one is too).
    pub durable_seq: u64,
    /// Records waiting for the disk.
    pub behind: u64,
    /// How long the oldest of them has been waiting (0 when none).
    pub oldest_pending_ms: u64,
    /// The last write error, while the writer is failing (cleared by a successful write).
    pub error: Option<String>,
    /// Failed write attempts since start.
    pub write_errors: u64,
}

struct Pending {
    record: Record,
    line: String,
    queued: Instant,
}

#[derive(Default)]
struct State {
    /// Not yet durable, in sequence order (the writer may be writing a prefix of them).
    pending: VecDeque<Pending>,
    durable_seq: u64,
    last_seq: u64,
    error: Option<String>,
    write_errors: u64,
    /// Durable records not yet taken into the memory window by the front end.
    landed: Vec<Record>,
    closed: bool,
}

/// Shared between the front end, the writer thread and whoever waits for durability.
pub struct Durability {
    state: Mutex<State>,
    /// The writer waits here for work.
    work: Condvar,
    /// Waiters for durability wait here.
    done: Condvar,
    on_durable: Mutex<Option<OnDurable>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Durability {
    /// Wait until `seq` is on disk, but not past `bound` after the oldest record still waiting
    /// for the disk was queued: once the disk is stuck, later callers do not wait at all.
    /// Returns whether `seq` is durable.
    pub fn wait(&self, seq: u64, bound: Duration) -> bool {
        let mut st = lock(&self.state);
        loop {
            if st.durable_seq >= seq {
                return true;
            }
            let Some(oldest) = st.pending.front().map(|p| p.queued) else {
                return st.durable_seq >= seq;
            };
            let now = Instant::now();
            let deadline = oldest + bound;
            if now >= deadline {
                return false;
            }
            st = self.done.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    pub fn status(&self) -> LogStatus {
        let st = lock(&self.state);
        LogStatus {
            last_seq: st.last_seq,
            durable_seq: st.durable_seq,
            behind: st.last_seq - st.durable_seq,
            oldest_pending_ms: st.pending.front().map(|p| p.queued.elapsed().as_millis() as u64).unwrap_or(0),
            error: st.error.clone(),
            write_errors: st.write_errors,
        }
    }
}

pub struct EventLog {
    path: PathBuf,
    next_seq: u64,
    /// Durable records, newest last.
    recent: VecDeque<Record>,
    shared: Arc<Durability>,
    sync: Arc<AtomicBool>,
}

impl EventLog {
    /// Open (or create) `dir/events.log`, verify it and return every record in order. When the
    /// file cannot be opened for writing (read-only or full disk) it is read as it is and the
    /// writer keeps trying; only an unreadable existing log is an error.
    pub fn open(dir: &Path) -> Result<(EventLog, Vec<Record>, OpenReport), LogError> {
        let path = dir.join("events.log");
        let open_err = |source| LogError::Open { path: path.clone(), source };
        let _ = std::fs::create_dir_all(dir);
        let writable = OpenOptions::new().read(true).append(true).create(true).open(&path);
        let (file, writable) = match writable {
            Ok(f) => (Some(f), true),
            Err(e) => match File::open(&path) {
                Ok(f) => {
                    tracing::error!("{}; reading it as it is, events are kept in memory until it can be written", open_err(e));
                    (Some(f), false)
                }
                Err(e2) if e2.kind() == std::io::ErrorKind::NotFound => {
                    tracing::error!("{}; starting with no history, events are kept in memory until it can be written", open_err(e));
                    (None, false)
                }
                Err(_) => return Err(open_err(e)),
            },
        };
        let mut records = Vec::new();
        let mut newer = Vec::new();
        let (report, good_end, size) = match &file {
            Some(f) => {
                let mut f = f;
                crate::crclog::scan(&mut f, |l: LogLine| {
                    match l {
                        LogLine::Record(r) => records.push(r),
                        LogLine::Newer { seq } => newer.push(seq),
                    }
                    true
                })
                .map_err(open_err)?
            }
            None => (OpenReport::default(), 0, 0),
        };
        if !newer.is_empty() {
            tracing::warn!(seqs = ?newer, path = %path.display(), "skipped events this version cannot read (written by a newer version?); they are kept and their numbers are not reused");
        }
        let newest_unread = newer.iter().copied().max().unwrap_or(0);
        let sync = Arc::new(AtomicBool::new(true));
        let mut sink = FileSink { path: path.clone(), file: if writable { file } else { None }, sync: sync.clone() };
        let mut dirty = size != good_end;
        if dirty && writable && sink.truncate(good_end).is_ok() {
            dirty = false;
        }
        let mut log = EventLog::with_sink(path, &records, Box::new(sink), good_end, dirty, sync);
        log.skip_to(newest_unread + 1);
        Ok((log, records, report))
    }

    fn with_sink(path: PathBuf, history: &[Record], sink: Box<dyn Sink>, good_end: u64, dirty: bool, sync: Arc<AtomicBool>) -> EventLog {
        let last = history.last().map(|r| r.seq).unwrap_or(0);
        let shared = Arc::new(Durability {
            state: Mutex::new(State { durable_seq: last, last_seq: last, ..State::default() }),
            work: Condvar::new(),
            done: Condvar::new(),
            on_durable: Mutex::new(None),
        });
        let w = Writer { shared: shared.clone(), sink, good_end, dirty };
        std::thread::Builder::new().name("event-log-writer".into()).spawn(move || w.run()).expect("spawn the event log writer thread");
        let recent = history.iter().rev().take(MEMORY_WINDOW).rev().cloned().collect();
        EventLog { path, next_seq: last + 1, recent, shared, sync }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sequence number the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Never reuse a sequence number below `seq` (another file, such as the notification
    /// outbox, has seen it although this log lost it).
    pub fn skip_to(&mut self, seq: u64) {
        if seq > self.next_seq {
            let mut st = lock(&self.shared.state);
            if st.pending.is_empty() {
                st.durable_seq = seq - 1;
            }
            st.last_seq = seq - 1;
            self.next_seq = seq;
        }
    }

    /// The hook that gets each record once it is durable (set before the first append).
    pub fn on_durable(&mut self, f: OnDurable) {
        *lock(&self.shared.on_durable) = Some(f);
    }

    /// Queue one event for the writer thread; never touches the disk. Returns the record with
    /// its sequence number; [`Durability::wait`] says when it is on disk.
    pub fn append(&mut self, event: Event, time_us: u64) -> Record {
        let record = Record { seq: self.next_seq, time_us, event };
        let line = crate::crclog::encode(&record);
        self.next_seq += 1;
        let landed = {
            let mut st = lock(&self.shared.state);
            st.last_seq = record.seq;
            st.pending.push_back(Pending { record: record.clone(), line, queued: Instant::now() });
            std::mem::take(&mut st.landed)
        };
        self.shared.work.notify_one();
        self.take_landed(landed);
        record
    }

    fn take_landed(&mut self, landed: Vec<Record>) {
        for r in landed {
            if self.recent.len() == MEMORY_WINDOW {
                self.recent.pop_front();
            }
            self.recent.push_back(r);
        }
    }

    /// Turn `fdatasync` after each write off (benchmarks and tests of other parts only).
    pub fn set_fsync(&self, on: bool) {
        self.sync.store(on, Ordering::Relaxed);
    }

    /// The durability handle: wait on it without holding a lock on the log.
    pub fn durability(&self) -> Arc<Durability> {
        self.shared.clone()
    }

    pub fn status(&self) -> LogStatus {
        self.shared.status()
    }

    /// Wait up to `within` for everything appended to be on disk.
    pub fn flush(&self, within: Duration) -> bool {
        self.shared.wait(self.next_seq - 1, within)
    }

    /// Records with `seq > since`, at most `limit` of them, oldest first (durable ones only).
    pub fn since(&mut self, since: u64, limit: usize) -> Result<Vec<Record>, LogError> {
        match self.since_in_memory(since, limit) {
            Some(records) => Ok(records),
            None => read_since(&self.path, since, limit),
        }
    }

    /// The same, when the in-memory window covers it; `None` means read the file
    /// ([`read_since`]), which callers holding a lock on the log should do after releasing it.
    pub fn since_in_memory(&mut self, since: u64, limit: usize) -> Option<Vec<Record>> {
        let landed = std::mem::take(&mut lock(&self.shared.state).landed);
        self.take_landed(landed);
        // Covered when the window reaches back to `since`, or holds every record there is.
        let all = self.recent.len() as u64 >= self.recent.back().map_or(0, |r| r.seq);
        let covered = self.recent.front().is_none_or(|r| r.seq <= since + 1) || all;
        covered.then(|| self.recent.iter().filter(|r| r.seq > since).take(limit).cloned().collect())
    }
}

impl Drop for EventLog {
    /// Let the writer finish what is queued (it exits once the queue is empty).
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.work.notify_one();
    }
}

struct Writer {
    shared: Arc<Durability>,
    sink: Box<dyn Sink>,
    /// File size after the last durable line.
    good_end: u64,
    /// The file may hold bytes after `good_end` (a failed write, or a torn tail that could not
    /// be cut at open): cut them before writing.
    dirty: bool,
}

impl Writer {
    fn run(mut self) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let (bytes, last_seq, count) = {
                let mut st = lock(&self.shared.state);
                while st.pending.is_empty() && !st.closed {
                    st = self.shared.work.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                if st.pending.is_empty() {
                    return;
                }
                let mut bytes = Vec::new();
                for p in &st.pending {
                    bytes.extend_from_slice(p.line.as_bytes());
                }
                (bytes, st.pending.back().map(|p| p.record.seq).unwrap_or(0), st.pending.len())
            };
            match self.write(&bytes) {
                Ok(()) => {
                    backoff = Duration::from_millis(50);
                    let done: Vec<Record> = {
                        let mut st = lock(&self.shared.state);
                        st.error = None;
                        st.pending.drain(..count).map(|p| p.record).collect()
                    };
                    if let Some(f) = lock(&self.shared.on_durable).as_mut() {
                        for r in &done {
                            f(r);
                        }
                    }
                    let mut st = lock(&self.shared.state);
                    st.durable_seq = last_seq;
                    st.landed.extend(done);
                    drop(st);
                    self.shared.done.notify_all();
                }
                Err(e) => {
                    {
                        let mut st = lock(&self.shared.state);
                        st.write_errors += 1;
                        if st.error.is_none() {
                            tracing::error!("cannot write the event log ({count} events waiting, retrying): {e}");
                        }
                        st.error = Some(e.to_string());
                    }
                    self.shared.done.notify_all();
                    // Keep trying, even after the log is dropped: nothing queued is given up
                    // while the process lives.
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Write `bytes` after the last good line and make them durable; on any failure the file
    /// is (or will be, before the next attempt) cut back to the last good line.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.dirty {
            self.sink.truncate(self.good_end)?;
            self.dirty = false;
        }
        let result = self.sink.append(bytes).and_then(|_| self.sink.sync());
        match result {
            Ok(()) => {
                self.good_end += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.dirty = true;
                if self.sink.truncate(self.good_end).is_ok() {
                    self.dirty = false;
                }
                Err(e)
            }
        }
    }
}

/// One line of the log as this build reads it.
enum LogLine {
    Record(Record),
    /// An intact record (sequence number and time in range) whose event this build does not
    /// know: written by a newer version. Skipped, kept, and its number is not given out again.
    Newer {
        seq: u64,
    },
}

impl<'de> Deserialize<'de> for LogLine {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        match Record::deserialize(&v) {
            Ok(r) => Ok(LogLine::Record(r)),
            Err(e) => {
                let seq = v.get("seq").and_then(serde_json::Value::as_u64).filter(|&s| s > 0 && s < u64::MAX);
                let time = v.get("time_us").and_then(serde_json::Value::as_u64).filter(|&t| t < super::YEAR_10000_US);
                match (seq, time, v.get("event").map(|e| e.is_object())) {
                    (Some(seq), Some(_), Some(true)) => Ok(LogLine::Newer { seq }),
                    _ => Err(serde::de::Error::custom(e)),
                }
            }
        }
    }
}

/// Records with `seq > since` from the log file at `path`, at most `limit`, oldest first.
/// Reads with the same rules as start-up (a damaged or unreadable line is stepped over), and
/// never changes the file.
pub fn read_since(path: &Path, since: u64, limit: usize) -> Result<Vec<Record>, LogError> {
    let err = |source| LogError::Read { path: path.to_owned(), source };
    let mut f = File::open(path).map_err(err)?;
    let mut out = Vec::new();
    crate::crclog::scan(&mut f, |l: LogLine| {
        if let LogLine::Record(r) = l
            && r.seq > since
        {
            out.push(r);
        }
        out.len() < limit
    })
    .map_err(err)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u32) -> Event {
        Event::DaemonStopped { reason: format!("test {n}") }
    }

    fn append(log: &mut EventLog, e: Event, t: u64) -> Record {
        let r = log.append(e, t);
        assert!(log.flush(Duration::from_secs(10)), "written");
        r
    }

    #[test]
    fn appends_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, recs, _) = EventLog::open(dir.path()).unwrap();
            assert!(recs.is_empty());
            for i in 0..5 {
                assert_eq!(append(&mut log, ev(i), 100 + i as u64).seq, i as u64 + 1);
            }
        }
        let (mut log, recs, report) = EventLog::open(dir.path()).unwrap();
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
        log.set_fsync(false); // 50,000 fsyncs would only make this slow
        for i in 0..(MEMORY_WINDOW as u32 + 10) {
            log.append(ev(i), i as u64);
        }
        assert!(log.flush(Duration::from_secs(30)));
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
            append(&mut log, ev(1), 1);
            append(&mut log, ev(2), 2);
        }
        let path = dir.path().join("events.log");
        let full = std::fs::read(&path).unwrap();
        // Simulate a crash in the middle of writing a third record, at every possible byte.
        let third = crate::crclog::encode(&Record { seq: 3, time_us: 3, event: ev(3) });
        for cut in 1..third.len() {
            let mut bytes = full.clone();
            bytes.extend_from_slice(&third.as_bytes()[..cut]);
            std::fs::write(&path, &bytes).unwrap();
            let (mut log, recs, report) = EventLog::open(dir.path()).unwrap();
            assert_eq!(recs.len(), 2, "cut at {cut}");
            assert_eq!(report.truncated_bytes, cut as u64);
            assert_eq!(append(&mut log, ev(9), 9).seq, 3);
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
                append(&mut log, ev(i), 1);
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

    /// A sink over a real file whose `sync` can be held (a stuck disk) and whose next appends
    /// can be made to fail after a few bytes (a short write on a full disk).
    #[derive(Clone, Default)]
    struct Faults {
        inner: Arc<(Mutex<FaultState>, Condvar)>,
    }
    #[derive(Default)]
    struct FaultState {
        stalled: bool,
        /// Fail this many upcoming appends, each after writing `short_after` bytes.
        fail_appends: u32,
        short_after: usize,
        fail_syncs: u32,
    }
    struct FaultySink {
        file: File,
        faults: Faults,
    }
    impl Sink for FaultySink {
        fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            let (m, _) = &*self.faults.inner;
            let mut st = lock(m);
            if st.fail_appends > 0 {
                st.fail_appends -= 1;
                let n = st.short_after.min(bytes.len());
                self.file.write_all(&bytes[..n])?;
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.file.write_all(bytes)
        }
        fn sync(&mut self) -> std::io::Result<()> {
            let (m, cv) = &*self.faults.inner;
            let mut st = lock(m);
            while st.stalled {
                st = cv.wait(st).unwrap();
            }
            if st.fail_syncs > 0 {
                st.fail_syncs -= 1;
                return Err(std::io::Error::from_raw_os_error(libc::EIO));
            }
            self.file.sync_data()
        }
        fn truncate(&mut self, len: u64) -> std::io::Result<()> {
            self.file.set_len(len)
        }
    }
    impl Faults {
        fn set(&self, f: impl FnOnce(&mut FaultState)) {
            let (m, cv) = &*self.inner;
            f(&mut lock(m));
            cv.notify_all();
        }
    }

    fn faulty_log(dir: &Path) -> (EventLog, Faults, Arc<Mutex<Vec<u64>>>) {
        let path = dir.join("events.log");
        let file = OpenOptions::new().append(true).create(true).open(&path).unwrap();
        let faults = Faults::default();
        let sink = FaultySink { file, faults: faults.clone() };
        let mut log = EventLog::with_sink(path, &[], Box::new(sink), 0, false, Arc::new(AtomicBool::new(true)));
        let fed = Arc::new(Mutex::new(Vec::new()));
        let f2 = fed.clone();
        log.on_durable(Box::new(move |r| lock(&f2).push(r.seq)));
        (log, faults, fed)
    }

    #[test]
    fn a_stuck_disk_delays_the_caller_by_the_bound_once_and_the_records_land_in_order_later() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, faults, fed) = faulty_log(dir.path());
        let bound = Duration::from_millis(250);
        let r1 = log.append(ev(1), 1);
        assert!(log.durability().wait(r1.seq, bound), "a healthy disk: durable at once");

        faults.set(|f| f.stalled = true);
        let t = Instant::now();
        let r2 = log.append(ev(2), 2);
        assert!(!log.durability().wait(r2.seq, bound), "the disk is stuck");
        let waited = t.elapsed();
        assert!(waited >= bound && waited < bound + Duration::from_millis(200), "waited {waited:?}");
        // Later records do not wait again while the disk is still stuck.
        let t = Instant::now();
        let r3 = log.append(ev(3), 3);
        let r4 = log.append(ev(4), 4);
        assert!(!log.durability().wait(r4.seq, bound));
        assert!(t.elapsed() < Duration::from_millis(50), "no second wait: {:?}", t.elapsed());
        let st = log.status();
        assert_eq!((st.last_seq, st.durable_seq, st.behind), (4, 1, 3));
        assert_eq!(*lock(&fed), vec![1], "nothing is handed on before it is durable");
        assert_eq!(log.since(0, 10).unwrap().len(), 1, "the API shows durable records only");

        faults.set(|f| f.stalled = false);
        assert!(log.durability().wait(r3.seq, Duration::from_secs(10)));
        assert!(log.flush(Duration::from_secs(10)));
        assert_eq!(log.status().behind, 0);
        assert_eq!(*lock(&fed), vec![1, 2, 3, 4]);
        drop(log);
        let (_, recs, report) = EventLog::open(dir.path()).unwrap();
        assert_eq!(recs.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert_eq!(recs[1].event, ev(2));
        assert_eq!(report, OpenReport { records: 4, ..OpenReport::default() });
    }

    #[test]
    fn a_short_write_is_cut_back_and_retried_without_gluing_or_reusing_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, faults, fed) = faulty_log(dir.path());
        append(&mut log, ev(1), 1);
        // The next two attempts write 7 bytes and fail (disk full), then one fsync fails.
        faults.set(|f| {
            f.fail_appends = 2;
            f.short_after = 7;
            f.fail_syncs = 1;
        });
        let r2 = log.append(ev(2), 2);
        let r3 = log.append(ev(3), 3);
        assert_eq!((r2.seq, r3.seq), (2, 3));
        assert!(log.flush(Duration::from_secs(10)), "written after the retries");
        let st = log.status();
        assert!(st.write_errors >= 3, "{st:?}");
        assert_eq!((st.behind, st.error), (0, None));
        assert_eq!(append(&mut log, ev(4), 4).seq, 4);
        assert_eq!(*lock(&fed), vec![1, 2, 3, 4]);
        drop(log);
        let text = std::fs::read_to_string(dir.path().join("events.log")).unwrap();
        assert_eq!(text.lines().count(), 4, "no torn line left behind:\n{text}");
        let (_, recs, report) = EventLog::open(dir.path()).unwrap();
        assert_eq!(recs.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert!(report.skipped_lines.is_empty() && report.truncated_bytes == 0, "{report:?}");
    }

    #[test]
    fn a_read_only_log_is_read_and_written_once_it_can_be() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _, _) = EventLog::open(dir.path()).unwrap();
            append(&mut log, ev(1), 1);
        }
        // A torn tail that cannot be cut while the file is read-only.
        let path = dir.path().join("events.log");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(b"{\"seq\":2,");
        std::fs::write(&path, &bytes).unwrap();
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        use std::os::unix::fs::PermissionsExt;
        perms.set_mode(0o444);
        std::fs::set_permissions(&path, perms.clone()).unwrap();
        // Root ignores file modes; only check the fallback where the mode is enforced.
        let enforced = OpenOptions::new().append(true).open(&path).is_err();
        let (mut log, recs, _) = EventLog::open(dir.path()).unwrap();
        assert_eq!(recs.len(), 1);
        let r = log.append(ev(2), 2);
        assert_eq!(r.seq, 2);
        if enforced {
            assert!(!log.durability().wait(2, Duration::from_millis(100)));
            assert!(log.status().error.is_some());
        }
        perms.set_mode(0o644);
        std::fs::set_permissions(&path, perms).unwrap();
        assert!(log.flush(Duration::from_secs(15)));
        drop(log);
        let (_, recs, report) = EventLog::open(dir.path()).unwrap();
        assert_eq!(recs.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(report.truncated_bytes, 0, "the torn tail was cut before the write");
    }
}
