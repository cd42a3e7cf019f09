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
//! the files with the same recovery rules as start-up ([`read_since`]).
//!
//! # Segments and snapshots
//! The log is a series of files in the data directory: `events.log` (the first segment, and
//! the whole log of versions before segments), then `events-<seq>.log`, where `<seq>` (20
//! digits) is the first sequence number the segment may hold. When the active segment grows
//! past [`LogOptions::segment_size`], the writer thread starts a new one whose first line is a
//! [`Snapshot`]: the state of every start-up fold (see `snapshot.rs`) as of that point. The
//! writer keeps those folds itself, applying each record once it is durable, so the core task
//! never serializes or writes anything for it.
//!
//! Rotation is crash-safe: the new segment is written as `events-<seq>.log.tmp`, fsynced,
//! renamed into place, and the directory fsynced, before anything is written to it; only then
//! does the writer switch. A crash before the rename leaves a `.tmp` that the next start deletes
//! (the old segment is still the active one and holds every record); after it, the old segment
//! holds exactly the records below `<seq>` and the new one those from `<seq>` on. Two segments
//! never claim the same sequence number, and nothing acknowledged is lost.
//!
//! Start-up ([`EventLog::open_with`]) reads only the newest segment whose snapshot is intact and
//! the records after it ([`History`]). Older segments stay for `events?since=` until their last
//! write is older than [`LogOptions::retention`]; then the writer deletes them (the active
//! segment is never deleted).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::snapshot::{Folds, Snapshot};
use super::{Event, Record};

/// Records kept in memory for `since` queries without touching the disk.
const MEMORY_WINDOW: usize = 50_000;

/// Longest pause between two attempts of a failing write.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// When segments rotate and how long old ones are kept (`[daemon] log_segment_size`,
/// `log_retention`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// Start a new segment once the active one is at least this big (bytes; 0: never).
    pub segment_size: u64,
    /// Delete a finished segment once its last write is older than this.
    pub retention: Duration,
}

pub use super::{DEFAULT_RETENTION, DEFAULT_SEGMENT_SIZE};

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions { segment_size: DEFAULT_SEGMENT_SIZE, retention: DEFAULT_RETENTION }
    }
}

/// What start-up folds from: the state as of the newest snapshot, and every record after it.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// The folds over every record below `from_seq` (empty when there is no snapshot).
    pub state: Folds,
    /// The first sequence number `records` may hold (1 without a snapshot).
    pub from_seq: u64,
    /// The records after the snapshot, in order.
    pub records: Vec<Record>,
}

impl History {
    /// The highest sequence number the log holds (or held before the snapshot).
    pub fn last_seq(&self) -> u64 {
        self.records.last().map(|r| r.seq).unwrap_or(self.from_seq.saturating_sub(1))
    }
}

/// The name of the segment whose records start at `seq` (`events.log` is the first one).
fn segment_name(seq: u64) -> String {
    format!("events-{seq:020}.log")
}

/// The segments in `dir`, oldest first: the first sequence number each may hold, and its path.
fn segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == "events.log" {
            out.push((0, entry.path()));
        } else if let Some(n) = name.strip_prefix("events-").and_then(|n| n.strip_suffix(".log"))
            && n.len() == 20
            && let Ok(seq) = n.parse::<u64>()
        {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The snapshot on the first line of the segment at `path`, if it has an intact one, and the
/// length of that line.
fn read_snapshot(path: &Path) -> Option<(Snapshot, u64)> {
    use std::io::BufRead;
    let mut line = Vec::new();
    std::io::BufReader::new(File::open(path).ok()?).read_until(b'\n', &mut line).ok()?;
    match LogLine::decode(&line) {
        crate::crclog::Decoded::Good(LogLine::Snapshot(s)) => Some((*s, line.len() as u64)),
        _ => None,
    }
}

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
    /// Start a new segment for the records from `next_seq` on, whose first line is `head`, and
    /// append to it from now on. Returns its size, or `None` when this sink has no segments.
    fn rotate(&mut self, _next_seq: u64, _head: &[u8]) -> std::io::Result<Option<u64>> {
        Ok(None)
    }
    /// Delete finished segments whose last write is older than `retention`.
    fn prune(&mut self, _retention: Duration) {}
}

/// The real file, opened for appending on first use when it could not be at start-up.
struct FileSink {
    dir: PathBuf,
    /// The active segment.
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
    fn rotate(&mut self, next_seq: u64, head: &[u8]) -> std::io::Result<Option<u64>> {
        let path = self.dir.join(segment_name(next_seq));
        let tmp = path.with_extension("log.tmp");
        let sync_dir = |dir: &Path| File::open(dir).and_then(|d| d.sync_all());
        let written = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(head)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
        if let Err(e) = sync_dir(&self.dir) {
            // The rename may not be durable: undo it so the old segment stays the only one
            // holding the records from `next_seq` on. If even that fails, the new segment is
            // in the directory and is the one to write to.
            if std::fs::remove_file(&path).is_ok() && sync_dir(&self.dir).is_ok() {
                return Err(e);
            }
            tracing::error!("cannot fsync the data directory after starting a new event log segment: {e}");
        }
        self.file = Some(OpenOptions::new().append(true).open(&path)?);
        self.path = path;
        Ok(Some(head.len() as u64))
    }
    fn prune(&mut self, retention: Duration) {
        let Ok(all) = segments(&self.dir) else { return };
        let cutoff = std::time::SystemTime::now().checked_sub(retention);
        for (_, path) in all {
            if path == self.path {
                continue;
            }
            let old = std::fs::metadata(&path).and_then(|m| m.modified()).is_ok_and(|t| cutoff.is_some_and(|c| t < c));
            if old {
                match std::fs::remove_file(&path) {
                    Ok(()) => tracing::info!(path = %path.display(), "deleted an event log segment older than log_retention"),
                    Err(e) => tracing::warn!(path = %path.display(), "cannot delete an old event log segment: {e}"),
                }
            }
        }
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
        let mut handed_on = None;
        loop {
            if st.durable_seq >= seq {
                return true;
            }
            let now = Instant::now();
            let deadline = match st.pending.front() {
                Some(p) => p.queued + bound,
                // The writer has taken the records and is handing them on: it publishes them
                // next (waiting up to the bound, from now).
                None if seq <= st.last_seq => *handed_on.get_or_insert(now + bound),
                None => return false,
            };
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
    /// [`EventLog::open_with`] with the default segment size and retention.
    pub fn open(dir: &Path) -> Result<(EventLog, History, OpenReport), LogError> {
        EventLog::open_with(dir, LogOptions::default())
    }

    /// Open (or create) the log in `dir`, verify it and return the newest snapshot and every
    /// record after it, in order. When the active segment cannot be opened for writing
    /// (read-only or full disk) it is read as it is and the writer keeps trying; only an
    /// unreadable existing log is an error.
    pub fn open_with(dir: &Path, opts: LogOptions) -> Result<(EventLog, History, OpenReport), LogError> {
        let first = dir.join("events.log");
        let _ = std::fs::create_dir_all(dir);
        let mut all = segments(dir).map_err(|source| LogError::Open { path: dir.to_owned(), source })?;
        // A segment whose rotation did not finish: the previous one is still the active one.
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name();
                if name.to_str().is_some_and(|n| n.starts_with("events-") && n.ends_with(".log.tmp")) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        if all.is_empty() {
            all.push((0, first.clone()));
        }
        // Start from the newest intact snapshot (normally the active segment's first line);
        // without one, from the first segment there is.
        let mut history = History { from_seq: 1, ..History::default() };
        let (mut start, mut head) = (0, 0);
        for (i, (seq, path)) in all.iter().enumerate().rev() {
            if *seq == 0 {
                continue;
            }
            if let Some((snap, len)) = read_snapshot(path) {
                history = History { state: snap.state, from_seq: snap.next_seq, records: Vec::new() };
                start = i;
                // The segment's size counts the records after its snapshot.
                head = if i == all.len() - 1 { len } else { 0 };
                break;
            }
            tracing::error!(path = %path.display(), "event log segment has no intact snapshot; reading the segment before it");
        }
        let mut report = OpenReport::default();
        let mut newer = Vec::new();
        let from_seq = history.from_seq;
        for (seq, path) in &all[start..all.len() - 1] {
            let err = |source| LogError::Open { path: path.clone(), source };
            let mut f = File::open(path).map_err(err)?;
            let (r, _, _) = crate::crclog::scan_with(&mut f, LogLine::decode, |l: LogLine| {
                match l {
                    LogLine::Record(r) if r.seq >= from_seq => history.records.push(r),
                    LogLine::Newer { seq } => newer.push(seq),
                    _ => {}
                }
                true
            })
            .map_err(err)?;
            if r.truncated_bytes > 0 || !r.skipped_lines.is_empty() {
                tracing::error!(path = %path.display(), first_seq = seq, torn_bytes = r.truncated_bytes, lines = ?r.skipped_lines, "damaged lines in a finished event log segment were stepped over");
            }
            report.records += r.records;
            report.skipped_lines.extend(r.skipped_lines);
            report.unreadable_lines.extend(r.unreadable_lines);
        }
        let path = all.last().expect("at least one segment").1.clone();
        let open_err = |source| LogError::Open { path: path.clone(), source };
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
        let (active, good_end, size) = match &file {
            Some(f) => {
                let mut f = f;
                crate::crclog::scan_with(&mut f, LogLine::decode, |l: LogLine| {
                    match l {
                        LogLine::Record(r) if r.seq >= from_seq => history.records.push(r),
                        LogLine::Newer { seq } => newer.push(seq),
                        _ => {}
                    }
                    true
                })
                .map_err(open_err)?
            }
            None => (OpenReport::default(), 0, 0),
        };
        report.records += active.records;
        report.truncated_bytes = active.truncated_bytes;
        report.skipped_lines.extend(active.skipped_lines);
        report.unreadable_lines.extend(active.unreadable_lines);
        if !newer.is_empty() {
            tracing::warn!(seqs = ?newer, path = %path.display(), "skipped events this version cannot read (written by a newer version?); they are kept and their numbers are not reused");
        }
        let newest_unread = newer.iter().copied().max().unwrap_or(0);
        let sync = Arc::new(AtomicBool::new(true));
        let mut sink = FileSink { dir: dir.to_owned(), path, file: if writable { file } else { None }, sync: sync.clone() };
        let mut dirty = size != good_end;
        if dirty && writable && sink.truncate(good_end).is_ok() {
            dirty = false;
        }
        // The writer folds the tail itself, on its own thread: start-up does not wait for it.
        let folds = (history.state.clone(), history.records.clone());
        let mut log = EventLog::with_sink(first, &history.records, history.last_seq(), Box::new(sink), good_end, dirty, sync, folds, opts, head);
        log.skip_to(newest_unread + 1);
        Ok((log, history, report))
    }

    #[allow(clippy::too_many_arguments)] // the writer's whole starting state
    fn with_sink(
        path: PathBuf,
        history: &[Record],
        last: u64,
        sink: Box<dyn Sink>,
        good_end: u64,
        dirty: bool,
        sync: Arc<AtomicBool>,
        folds: (Folds, Vec<Record>),
        opts: LogOptions,
        head: u64,
    ) -> EventLog {
        let shared = Arc::new(Durability {
            state: Mutex::new(State { durable_seq: last, last_seq: last, ..State::default() }),
            work: Condvar::new(),
            done: Condvar::new(),
            on_durable: Mutex::new(None),
        });
        let w = Writer { shared: shared.clone(), sink, good_end, dirty, folds: folds.0, unfolded: folds.1, opts, rotate_at: head + opts.segment_size };
        std::thread::Builder::new().name("event-log-writer".into()).spawn(move || w.run()).expect("spawn the event log writer thread");
        let recent = history.iter().rev().take(MEMORY_WINDOW).rev().cloned().collect();
        EventLog { path, next_seq: last + 1, recent, shared, sync }
    }

    /// The first segment (`events.log`); the others are next to it ([`read_since`]).
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
    /// Every start-up fold over the durable records (the next snapshot)...
    folds: Folds,
    /// ... once these (the records after the snapshot read at start-up) are folded in.
    unfolded: Vec<Record>,
    opts: LogOptions,
    /// Rotate once `good_end` reaches this (moved on after a failed rotation).
    rotate_at: u64,
}

impl Writer {
    fn run(mut self) {
        for r in std::mem::take(&mut self.unfolded) {
            self.folds.apply(&r);
        }
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
                // The segment is full: the next record starts a new one (an idle log does not
                // rotate, and a record is durable only once its segment is in place).
                let first = st.pending.front().map(|p| p.record.seq).unwrap_or(0);
                if self.opts.segment_size > 0 && self.good_end >= self.rotate_at && !self.dirty {
                    drop(st);
                    self.rotate(first);
                    st = lock(&self.shared.state);
                }
                // Everything waiting, in one write; but a segment ends with the first record
                // that reaches its size, so a burst does not make it any bigger.
                let (mut bytes, mut count, mut last) = (Vec::new(), 0, 0);
                for p in &st.pending {
                    bytes.extend_from_slice(p.line.as_bytes());
                    (count, last) = (count + 1, p.record.seq);
                    if self.opts.segment_size > 0 && self.good_end + bytes.len() as u64 >= self.rotate_at {
                        break;
                    }
                }
                (bytes, last, count)
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
                    for r in &done {
                        self.folds.apply(r);
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

    /// Start a new segment with a snapshot of the folds, for the records from `next_seq` on. A
    /// failure leaves the active segment as it is (it grows on; rotation is tried again after
    /// another eighth of a segment) and is logged.
    fn rotate(&mut self, next_seq: u64) {
        let snapshot = Snapshot { next_seq, time_us: crate::clock::now_us(), state: self.folds.clone() };
        let head = crate::crclog::encode(&super::snapshot::SnapshotLine { snapshot });
        match self.sink.rotate(next_seq, head.as_bytes()) {
            Ok(Some(size)) => {
                self.good_end = size;
                self.dirty = false;
                // The size counts the records after the snapshot.
                self.rotate_at = size + self.opts.segment_size;
                tracing::info!(next_seq, snapshot_bytes = size, "started a new event log segment");
                self.sink.prune(self.opts.retention);
            }
            Ok(None) => self.rotate_at = u64::MAX,
            Err(e) => {
                tracing::error!(next_seq, "cannot start a new event log segment (the current one grows on): {e}");
                self.rotate_at = self.good_end + (self.opts.segment_size / 8).max(1);
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
    /// The head of a segment.
    Snapshot(Box<Snapshot>),
}

impl LogLine {
    /// One line of the log: a record is parsed straight away (start-up reads many); anything
    /// else goes through the general path below.
    fn decode(line: &[u8]) -> crate::crclog::Decoded<LogLine> {
        use crate::crclog::Decoded;
        let Some(json) = crate::crclog::checked_json(line) else {
            return Decoded::Damaged;
        };
        if let Ok(r) = serde_json::from_slice::<Record>(json) {
            return Decoded::Good(LogLine::Record(r));
        }
        match serde_json::from_slice(json) {
            Ok(l) => Decoded::Good(l),
            Err(_) => Decoded::Unreadable,
        }
    }
}

impl<'de> Deserialize<'de> for LogLine {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        if let Some(s) = v.get("snapshot") {
            return Snapshot::deserialize(s).map(|s| LogLine::Snapshot(Box::new(s))).map_err(serde::de::Error::custom);
        }
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

/// Records with `seq > since` from the log whose first segment is `path` (`events.log`), at
/// most `limit`, oldest first, walking the segments next to it (those older than the log's
/// retention are gone). Reads with the same rules as start-up (a damaged or unreadable line is
/// stepped over), and never changes a file.
pub fn read_since(path: &Path, since: u64, limit: usize) -> Result<Vec<Record>, LogError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let all = segments(dir).map_err(|source| LogError::Read { path: dir.to_owned(), source })?;
    let mut out = Vec::new();
    for (i, (_, seg)) in all.iter().enumerate() {
        // Skip segments that end before `since`: the next one starts at or below `since + 1`.
        if all.get(i + 1).is_some_and(|(next, _)| *next <= since + 1) {
            continue;
        }
        let err = |source| LogError::Read { path: seg.clone(), source };
        let mut f = match File::open(seg) {
            Ok(f) => f,
            // Deleted by retention since it was listed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(err(e)),
        };
        crate::crclog::scan_with(&mut f, LogLine::decode, |l: LogLine| {
            if let LogLine::Record(r) = l
                && r.seq > since
                && out.last().is_none_or(|l: &Record| l.seq < r.seq)
            {
                out.push(r);
            }
            out.len() < limit
        })
        .map_err(err)?;
        if out.len() >= limit {
            break;
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
            assert!(recs.records.is_empty());
            for i in 0..5 {
                assert_eq!(append(&mut log, ev(i), 100 + i as u64).seq, i as u64 + 1);
            }
        }
        let (mut log, recs, report) = EventLog::open(dir.path()).unwrap();
        assert_eq!(recs.records.len(), 5);
        assert_eq!(recs.records[4].event, ev(4));
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
            assert_eq!(recs.records.len(), 2, "cut at {cut}");
            assert_eq!(report.truncated_bytes, cut as u64);
            assert_eq!(append(&mut log, ev(9), 9).seq, 3);
            drop(log);
            let (_, recs, _) = EventLog::open(dir.path()).unwrap();
            assert_eq!(recs.records.len(), 3);
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
        assert_eq!(recs.records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 3]);
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
        let mut log = EventLog::with_sink(path, &[], 0, Box::new(sink), 0, false, Arc::new(AtomicBool::new(true)), Default::default(), LogOptions::default(), 0);
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
        assert_eq!(recs.records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert_eq!(recs.records[1].event, ev(2));
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
        assert_eq!(recs.records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
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
        assert_eq!(recs.records.len(), 1);
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
        assert_eq!(recs.records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(report.truncated_bytes, 0, "the torn tail was cut before the write");
    }

    fn tiny(segment_size: u64) -> LogOptions {
        LogOptions { segment_size, retention: DEFAULT_RETENTION }
    }

    /// Write `records`' events through the log (same numbers, same times) and wait for them.
    fn write_all(log: &mut EventLog, records: &[Record]) {
        for r in records {
            assert_eq!(log.append(r.event.clone(), r.time_us).seq, r.seq);
        }
        assert!(log.flush(Duration::from_secs(30)));
    }

    fn segment_files(dir: &Path) -> Vec<String> {
        segments(dir).unwrap().into_iter().map(|(_, p)| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn segments_rotate_with_a_snapshot_and_start_up_folds_snapshot_plus_tail_to_the_full_state() {
        let ops: Vec<(u8, u8, u8)> = (0..300u32).map(|i| ((i * 5 % 9) as u8, (i * 11 % 256) as u8, (i * 29 % 256) as u8)).collect();
        let records = crate::events::snapshot::tests::history(&ops);
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, h, _) = EventLog::open_with(dir.path(), tiny(4096)).unwrap();
            log.set_fsync(false);
            assert!(h.records.is_empty());
            write_all(&mut log, &records);
        }
        let files = segment_files(dir.path());
        assert!(files.len() > 3, "rotated: {files:?}");
        assert_eq!(files[0], "events.log", "the first segment keeps the old name");
        let (mut log, h, report) = EventLog::open_with(dir.path(), tiny(4096)).unwrap();
        assert!(report.skipped_lines.is_empty() && report.unreadable_lines.is_empty() && report.truncated_bytes == 0, "{report:?}");
        assert!(h.from_seq > 1 && h.records.len() < records.len(), "only the tail is read: from {} ({} records)", h.from_seq, h.records.len());
        assert!(h.records.first().is_none_or(|r| r.seq == h.from_seq), "the tail starts right after the snapshot");
        assert_eq!(h.last_seq(), records.len() as u64);
        let mut state = h.state.clone();
        for r in &h.records {
            state.apply(r);
        }
        assert_eq!(state, crate::events::snapshot::tests::fold(&records), "snapshot + tail = every record");
        assert_eq!(log.next_seq(), records.len() as u64 + 1);
        // Every segment is read for `since`, each record once, in order.
        assert_eq!(read_since(log.path(), 0, usize::MAX).unwrap(), records);
        assert_eq!(read_since(log.path(), 250, 5).unwrap(), records[250..255].to_vec());
        assert_eq!(log.since_in_memory(h.from_seq - 1, usize::MAX), Some(records[h.from_seq as usize - 1..].to_vec()), "the memory window holds the tail");
        assert_eq!(log.since(0, usize::MAX).unwrap(), records, "older records come from the older segments");
        assert_eq!(append(&mut log, ev(1), 1).seq, records.len() as u64 + 1);
    }

    #[test]
    fn a_single_events_log_from_an_older_version_is_the_first_segment() {
        let records = crate::events::snapshot::tests::history(&[(2, 0, 1), (0, 0, 0), (2, 0, 1), (1, 0, 0), (2, 2, 0)]);
        let dir = tempfile::tempdir().unwrap();
        let old: String = records.iter().map(crate::crclog::encode).collect();
        std::fs::write(dir.path().join("events.log"), old).unwrap();
        let (mut log, h, _) = EventLog::open_with(dir.path(), tiny(1)).unwrap();
        assert_eq!((h.from_seq, &h.records), (1, &records));
        let next = append(&mut log, ev(1), 1);
        drop(log);
        assert_eq!(segment_files(dir.path()), vec!["events.log".to_string(), segment_name(next.seq)]);
        let (_, h, _) = EventLog::open_with(dir.path(), tiny(1)).unwrap();
        assert_eq!((h.from_seq, h.records.len()), (next.seq, 1));
        assert_eq!(h.state, crate::events::snapshot::tests::fold(&records));
    }

    #[test]
    fn a_rotation_cut_short_by_a_crash_leaves_the_old_segment_active() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _, _) = EventLog::open(dir.path()).unwrap();
            append(&mut log, ev(1), 1);
            append(&mut log, ev(2), 2);
        }
        // The process died after writing part of the new segment, before the rename.
        let tmp = dir.path().join(format!("{}.tmp", segment_name(3)));
        std::fs::write(&tmp, b"{\"snapshot\":{\"next_se").unwrap();
        let (mut log, h, _) = EventLog::open(dir.path()).unwrap();
        assert_eq!(h.records.len(), 2);
        assert!(!tmp.exists(), "the unfinished segment is removed");
        assert_eq!(append(&mut log, ev(3), 3).seq, 3);
        drop(log);
        assert_eq!(segment_files(dir.path()), vec!["events.log"]);
        // A renamed segment whose head is damaged anyway (disk corruption) is not trusted: the
        // state comes from the segment before it, and its records are still read.
        {
            let (mut log, _, _) = EventLog::open_with(dir.path(), tiny(1)).unwrap();
            append(&mut log, ev(4), 4);
            append(&mut log, ev(5), 5);
        }
        assert_eq!(segment_files(dir.path()), vec!["events.log".to_string(), segment_name(4), segment_name(5)]);
        let newest = dir.path().join(segment_name(5));
        let text = std::fs::read_to_string(&newest).unwrap();
        std::fs::write(&newest, text.replacen("next_seq", "next_sex", 1)).unwrap();
        let (_, h, _) = EventLog::open_with(dir.path(), tiny(1)).unwrap();
        assert_eq!(h.from_seq, 4, "the snapshot before it");
        assert_eq!(h.records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![4, 5]);
    }

    #[test]
    fn segments_older_than_the_retention_are_deleted_and_start_up_does_not_need_them() {
        let records = crate::events::snapshot::tests::history(&(0..60u8).map(|i| (i % 9, i, i / 3)).collect::<Vec<_>>());
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions { segment_size: 2048, retention: Duration::ZERO };
        {
            let (mut log, _, _) = EventLog::open_with(dir.path(), opts).unwrap();
            log.set_fsync(false);
            write_all(&mut log, &records);
        }
        let files = segment_files(dir.path());
        assert!(files.len() <= 2 && !files.contains(&"events.log".to_string()), "old segments deleted: {files:?}");
        let (log, h, _) = EventLog::open_with(dir.path(), opts).unwrap();
        let mut state = h.state.clone();
        for r in &h.records {
            state.apply(r);
        }
        assert_eq!(state, crate::events::snapshot::tests::fold(&records));
        let kept = read_since(log.path(), 0, usize::MAX).unwrap();
        assert!(!kept.is_empty() && kept.len() < records.len());
        assert_eq!(kept[..], records[records.len() - kept.len()..], "what is kept is the newest records, in order");
    }
}
