//! The durable outbox: `outbox.log` in the data directory.
//!
//! Same format and crash rules as the event log (`events/log.rs`): one JSON line per record
//! with a CRC-32, a torn final line is cut at open, a damaged middle line is skipped and
//! reported. Two kinds of line:
//!
//! - `plan`: the entries (one per channel per notice) planned from the events up to `cursor`,
//!   written with one `write` and made durable (fdatasync) **before** any of them is sent.
//!   Because the entries and the cursor share one line, a crash leaves either both or neither:
//!   at start-up the dispatcher re-plans exactly the events after the last durable cursor.
//! - `done`: entries that were delivered, superseded by a newer notice about the same
//!   condition, or rejected for good by the receiver. Not fsync'd: losing one only means the
//!   entry is sent again after a crash (at least once), with the same idempotency key.
//!
//! Every notice key planned for a channel is remembered, so re-planning an event can never
//! queue a second copy with another key.
//!
//! Once the file is over 4 MiB it is rewritten at open, and over 8 MiB while running (to a
//! temporary file, fsync'd, renamed): the cursor, the pending entries and each channel's
//! totals; finished entries are dropped.
//!
//! [`Outbox::next`] chooses what a channel sends next: per condition in order; plain updates
//! wait for the channel's group window and then go out as one message (the newest, which
//! carries the whole incident); updates followed by the condition's close are superseded.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::notice::{Notice, Phase};

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("cannot open notification outbox {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("cannot write notification outbox {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// One notice for one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Local to this outbox, grows by one. Never `u64::MAX` (such a line is rejected when read).
    #[serde(deserialize_with = "crate::events::below_max")]
    pub id: u64,
    pub channel: String,
    /// When it was planned (wall microseconds); the group window counts from here.
    pub created_us: u64,
    pub notice: Notice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Delivered,
    /// A newer notice about the same condition went out instead.
    Superseded,
    /// The receiver refused it for good (an HTTP 4xx other than 408/429, an SMTP 5xx).
    Rejected,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Line {
    Plan {
        cursor: u64,
        entries: Vec<Entry>,
        /// Written by compaction, so ids are never reused.
        #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "next_id_below_max")]
        next_id: Option<u64>,
    },
    Done { ids: Vec<u64>, outcome: Outcome, at_us: u64, #[serde(default)] detail: String },
    /// Written by compaction: a channel's totals so far.
    Totals { channel: String, totals: Totals },
}

fn next_id_below_max<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    crate::events::below_max(d).map(Some)
}

/// The file is rewritten at open once it is larger than this.
const COMPACT_OVER_BYTES: u64 = 4 << 20;

/// Totals per channel over the life of the data directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub delivered: u64,
    pub superseded: u64,
    pub rejected: u64,
    pub last_delivered_us: Option<u64>,
    pub last_rejected: Option<(u64, String)>,
}

pub use crate::crclog::OpenReport;

/// What a channel should do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Pick {
    /// Send `entry`; on success the `superseded` ones are done too.
    Send { entry: Box<Entry>, superseded: Vec<u64> },
    /// Mark these done without sending (a close follows them).
    Supersede(Vec<u64>),
    /// Nothing is ready before this wall time.
    Wait(u64),
    Idle,
}

pub struct Outbox {
    path: PathBuf,
    /// Open for appending; `None` while the file cannot be (a read-only or full disk): each
    /// write tries again.
    file: Option<File>,
    cursor: Option<u64>,
    next_id: u64,
    pending: BTreeMap<u64, Entry>,
    keys: HashSet<(String, String)>,
    totals: BTreeMap<String, Totals>,
    /// File size after the last line written whole, and the size above which the file is
    /// compacted.
    size: u64,
    compact_over: u64,
    /// A failed write may have left part of a line after `size`: cut before writing again.
    dirty: bool,
    /// Entries whose plan line could not be written: planned again with the next line.
    unwritten: Vec<u64>,
}

fn encode(line: &Line) -> String {
    crate::crclog::encode(line)
}

impl Outbox {
    /// Open (or create) `dir/outbox.log` and rebuild the pending entries.
    pub fn open(dir: &Path) -> Result<(Outbox, OpenReport), OutboxError> {
        Outbox::open_compacting(dir, COMPACT_OVER_BYTES)
    }

    /// [`Outbox::open`], rewriting the file when it is over `compact_over` bytes: the new file
    /// holds the cursor, the pending entries and the totals, nothing else. Keys of finished
    /// entries are not kept: only events after the cursor are ever planned again.
    fn open_compacting(dir: &Path, compact_over: u64) -> Result<(Outbox, OpenReport), OutboxError> {
        let (mut ob, report, size) = Outbox::read(dir)?;
        ob.compact_over = compact_over;
        if size > compact_over
            && let Err(e) = ob.compact()
        {
            tracing::error!("{e}; the outbox stays as it is");
        }
        Ok((ob, report))
    }

    fn compact(&mut self) -> Result<(), OutboxError> {
        let tmp = self.path.with_extension("log.tmp");
        let err = |source| OutboxError::Write { path: tmp.clone(), source };
        let mut text = String::new();
        for (channel, totals) in &self.totals {
            text.push_str(&encode(&Line::Totals { channel: channel.clone(), totals: totals.clone() }));
        }
        let entries: Vec<Entry> = self.pending.values().cloned().collect();
        text.push_str(&encode(&Line::Plan { cursor: self.cursor.unwrap_or(0), entries, next_id: Some(self.next_id) }));
        {
            let mut f = File::create(&tmp).map_err(err)?;
            f.write_all(text.as_bytes()).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
        }
        self.file = Some(OpenOptions::new().append(true).open(&self.path).map_err(|source| OutboxError::Open { path: self.path.clone(), source })?);
        self.keys = self.pending.values().map(|e| (e.channel.clone(), e.notice.key.clone())).collect();
        self.size = text.len() as u64;
        self.dirty = false;
        self.unwritten.clear();
        tracing::info!(path = %self.path.display(), pending = self.pending.len(), "compacted the notification outbox");
        Ok(())
    }

    fn read(dir: &Path) -> Result<(Outbox, OpenReport, u64), OutboxError> {
        let path = dir.join("outbox.log");
        let open_err = |source| OutboxError::Open { path: path.clone(), source };
        let _ = std::fs::create_dir_all(dir);
        // A disk that is read-only or full must not stop the daemon: read what is there, and
        // let each write try to open the file again.
        let (read, writable) = match OpenOptions::new().read(true).append(true).create(true).open(&path) {
            Ok(f) => (Some(f.try_clone().map_err(open_err)?), Some(f)),
            Err(e) => match File::open(&path) {
                Ok(f) => {
                    tracing::error!("{}; reading it as it is", open_err(e));
                    (Some(f), None)
                }
                Err(e2) if e2.kind() == std::io::ErrorKind::NotFound => {
                    tracing::error!("{}; starting with an empty outbox", open_err(e));
                    (None, None)
                }
                Err(_) => return Err(open_err(e)),
            },
        };
        let mut ob = Outbox {
            path: path.clone(),
            file: writable,
            cursor: None,
            next_id: 1,
            pending: BTreeMap::new(),
            keys: HashSet::new(),
            totals: BTreeMap::new(),
            size: 0,
            compact_over: COMPACT_OVER_BYTES,
            dirty: false,
            unwritten: Vec::new(),
        };
        let mut lines = Vec::new();
        let (report, good_end, size) = match &read {
            Some(f) => crate::crclog::scan(&mut &*f, |l: Line| {
                lines.push(l);
                true
            })
            .map_err(open_err)?,
            None => (OpenReport::default(), 0, 0),
        };
        for l in lines {
            ob.apply(l);
        }
        // A torn last line is cut now, or before the first write if the file is read-only.
        ob.size = good_end;
        ob.dirty = size != good_end;
        if ob.dirty
            && let Some(f) = &ob.file
            && f.set_len(good_end).and_then(|_| f.sync_data()).is_ok()
        {
            ob.dirty = false;
        }
        Ok((ob, report, size))
    }

    fn apply(&mut self, line: Line) {
        match line {
            Line::Plan { cursor, entries, next_id } => {
                self.cursor = Some(self.cursor.map_or(cursor, |c| c.max(cursor)));
                self.next_id = self.next_id.max(next_id.unwrap_or(0));
                for e in entries {
                    self.next_id = self.next_id.max(e.id + 1);
                    self.keys.insert((e.channel.clone(), e.notice.key.clone()));
                    self.pending.insert(e.id, e);
                }
            }
            Line::Totals { channel, totals } => {
                self.totals.insert(channel, totals);
            }
            Line::Done { ids, outcome, at_us, detail } => {
                for id in ids {
                    if let Some(e) = self.pending.remove(&id) {
                        let t = self.totals.entry(e.channel).or_default();
                        match outcome {
                            Outcome::Delivered => {
                                t.delivered += 1;
                                t.last_delivered_us = Some(at_us);
                            }
                            Outcome::Superseded => t.superseded += 1,
                            Outcome::Rejected => {
                                t.rejected += 1;
                                t.last_rejected = Some((at_us, detail.clone()));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Append one line. A failed or short write (or fsync) is cut back to the last whole line,
    /// now or before the next write, so the next line is never glued onto a torn one.
    fn write(&mut self, line: &Line, sync: bool) -> Result<(), OutboxError> {
        let text = encode(line);
        let path = self.path.clone();
        let err = |source| OutboxError::Write { path: path.clone(), source };
        if self.file.is_none() {
            self.file = Some(OpenOptions::new().append(true).create(true).open(&self.path).map_err(err)?);
        }
        let file = self.file.as_mut().expect("opened above");
        if self.dirty {
            file.set_len(self.size).map_err(err)?;
            self.dirty = false;
        }
        let written = file.write_all(text.as_bytes()).and_then(|_| if sync { file.sync_data() } else { Ok(()) });
        if let Err(e) = written {
            self.dirty = file.set_len(self.size).is_err();
            return Err(err(e));
        }
        self.size += text.len() as u64;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last event sequence number whose notices are in the outbox; `None` for a new outbox.
    pub fn cursor(&self) -> Option<u64> {
        self.cursor
    }

    /// Durably add the notices planned from the events up to `cursor`: `(channel, notice)`
    /// pairs already planned (same channel and key) are dropped. Returns the channels that got
    /// new entries. Even when the write fails the entries stay queued in memory, so they are
    /// still delivered while the daemon runs.
    pub fn plan(&mut self, cursor: u64, items: Vec<(String, Notice)>, now_us: u64) -> (Vec<String>, Result<(), OutboxError>) {
        let mut entries = Vec::new();
        for (channel, notice) in items {
            if !self.keys.insert((channel.clone(), notice.key.clone())) {
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            entries.push(Entry { id, channel, created_us: now_us, notice });
        }
        if entries.is_empty() && self.unwritten.is_empty() && self.cursor.is_some_and(|c| c >= cursor) {
            return (Vec::new(), Ok(()));
        }
        // Entries whose line failed before (and are still pending) go into this line again.
        let mut line_entries: Vec<Entry> = self.unwritten.iter().filter_map(|id| self.pending.get(id)).cloned().collect();
        line_entries.extend(entries.iter().cloned());
        let cursor = self.cursor.map_or(cursor, |c| c.max(cursor));
        // A cursor-only line need not be synced: losing it only re-plans events that planned
        // nothing.
        let sync = !line_entries.is_empty();
        let line = Line::Plan { cursor, entries: line_entries, next_id: None };
        let result = self.write(&line, sync);
        match &result {
            Ok(()) => self.unwritten.clear(),
            Err(_) => self.unwritten.extend(entries.iter().map(|e| e.id)),
        }
        self.cursor = Some(cursor);
        let mut channels: Vec<String> = entries.iter().map(|e| e.channel.clone()).collect();
        channels.sort();
        channels.dedup();
        for e in entries {
            self.pending.insert(e.id, e);
        }
        (channels, result)
    }

    /// Mark entries done.
    pub fn done(&mut self, ids: Vec<u64>, outcome: Outcome, detail: &str, now_us: u64) -> Result<(), OutboxError> {
        if ids.is_empty() {
            return Ok(());
        }
        let line = Line::Done { ids, outcome, at_us: now_us, detail: detail.to_string() };
        let result = self.write(&line, false);
        self.apply(line);
        // A daemon that runs for months compacts as it goes (twice the start-up threshold, so a
        // file that is mostly pending entries is not rewritten over and over).
        if result.is_ok() && self.size > 2 * self.compact_over {
            return self.compact();
        }
        result
    }

    pub fn pending(&self, channel: &str) -> impl Iterator<Item = &Entry> {
        self.pending.values().filter(move |e| e.channel == channel)
    }

    pub fn totals(&self, channel: &str) -> Totals {
        self.totals.get(channel).cloned().unwrap_or_default()
    }

    /// Channels with pending entries (including ones no longer configured).
    pub fn channels(&self) -> Vec<String> {
        let mut v: Vec<String> = self.pending.values().map(|e| e.channel.clone()).chain(self.totals.keys().cloned()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// What `channel` should do next at wall time `now_us`.
    pub fn next(&self, channel: &str, now_us: u64, group_window_us: u64) -> Pick {
        // Pending entries per condition, oldest first (BTreeMap iteration is by id).
        let mut by_condition: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
        for e in self.pending(channel) {
            by_condition.entry(e.notice.condition.as_str()).or_default().push(e);
        }
        let mut best: Option<(u64, Pick)> = None;
        let mut wait: Option<u64> = None;
        for list in by_condition.values() {
            let head = list[0];
            let run = list.iter().take_while(|e| e.notice.phase == Phase::Update).count();
            let pick = if run == 0 {
                Pick::Send { entry: Box::new(head.clone()), superseded: Vec::new() }
            } else if run < list.len() {
                // The condition closed (or reopened) after these updates: the later notice
                // carries everything they would say.
                Pick::Supersede(list[..run].iter().map(|e| e.id).collect())
            } else {
                let ready_at = head.created_us.saturating_add(group_window_us);
                if list.iter().any(|e| e.notice.urgent) || ready_at <= now_us {
                    let newest = list[run - 1];
                    Pick::Send { entry: Box::new(newest.clone()), superseded: list[..run - 1].iter().map(|e| e.id).collect() }
                } else {
                    wait = Some(wait.map_or(ready_at, |w| w.min(ready_at)));
                    continue;
                }
            };
            if best.as_ref().is_none_or(|(id, _)| head.id < *id) {
                best = Some((head.id, pick));
            }
        }
        match (best, wait) {
            (Some((_, p)), _) => p,
            (None, Some(w)) => Pick::Wait(w),
            (None, None) => Pick::Idle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::notice::{NoticeEvent, Phase};

    fn notice(condition: &str, phase: Phase, seq: u64, urgent: bool) -> Notice {
        let mut n = Notice::test(seq);
        n.condition = condition.into();
        n.phase = phase;
        n.urgent = urgent;
        n.event = NoticeEvent::IncidentUpdated;
        n.key = Notice::key_for(condition, n.event, seq, 0);
        n
    }

    #[test]
    fn plans_survive_reopen_and_done_entries_stay_done() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut ob, _) = Outbox::open(dir.path()).unwrap();
            assert_eq!(ob.cursor(), None);
            let items = vec![("a".to_string(), notice("c1", Phase::Open, 1, true)), ("b".to_string(), notice("c1", Phase::Open, 1, true))];
            let (chs, r) = ob.plan(5, items, 10);
            r.unwrap();
            assert_eq!(chs, vec!["a".to_string(), "b".to_string()]);
            ob.done(vec![1], Outcome::Delivered, "", 11).unwrap();
        }
        let (mut ob, report) = Outbox::open(dir.path()).unwrap();
        assert_eq!((report.truncated_bytes, report.skipped_lines.len()), (0, 0), "{report:?}");
        assert_eq!(ob.cursor(), Some(5));
        assert_eq!(ob.pending("a").count(), 0);
        assert_eq!(ob.pending("b").count(), 1);
        assert_eq!(ob.totals("a").delivered, 1);
        // Re-planning the same notice (a replay) queues nothing new.
        let (chs, _) = ob.plan(5, vec![("a".to_string(), notice("c1", Phase::Open, 1, true))], 12);
        assert!(chs.is_empty());
        assert_eq!(ob.pending("a").count(), 0);
        // Ids keep growing across reopen.
        let (_, r) = ob.plan(6, vec![("a".to_string(), notice("c1", Phase::Update, 6, false))], 13);
        r.unwrap();
        assert_eq!(ob.pending("a").next().unwrap().id, 3);
    }

    #[test]
    fn compaction_keeps_the_cursor_pending_entries_and_totals() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut ob, _) = Outbox::open(dir.path()).unwrap();
            for i in 1..=50u64 {
                ob.plan(i, vec![("a".to_string(), notice(&format!("c{i}"), Phase::Open, i, true))], i).1.unwrap();
                if i != 7 {
                    ob.done(vec![i], Outcome::Delivered, "", i).unwrap();
                }
            }
        }
        let path = dir.path().join("outbox.log");
        let before = std::fs::metadata(&path).unwrap().len();
        let (ob, _) = Outbox::open_compacting(dir.path(), 1).unwrap();
        let after = std::fs::metadata(&path).unwrap().len();
        assert!(after * 10 < before, "{before} -> {after} bytes");
        let check = |ob: &Outbox| {
            assert_eq!(ob.cursor(), Some(50));
            assert_eq!(ob.pending("a").map(|e| e.id).collect::<Vec<_>>(), vec![7]);
            assert_eq!(ob.totals("a").delivered, 49);
        };
        check(&ob);
        drop(ob);
        let (mut ob, _) = Outbox::open(dir.path()).unwrap();
        check(&ob);
        // And it keeps working after compaction.
        ob.plan(51, vec![("a".to_string(), notice("c51", Phase::Open, 51, true))], 51).1.unwrap();
        drop(ob);
        let (ob, _) = Outbox::open(dir.path()).unwrap();
        assert_eq!(ob.pending("a").map(|e| e.id).collect::<Vec<_>>(), vec![7, 51]);
    }

    #[test]
    fn a_long_running_outbox_compacts_as_it_goes() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ob, _) = Outbox::open_compacting(dir.path(), 4096).unwrap();
        let path = dir.path().join("outbox.log");
        let mut largest = 0;
        for i in 1..=200u64 {
            ob.plan(i, vec![("a".to_string(), notice(&format!("c{i}"), Phase::Open, i, true))], i).1.unwrap();
            ob.done(vec![i], Outcome::Delivered, "", i).unwrap();
            largest = largest.max(std::fs::metadata(&path).unwrap().len());
        }
        assert!(largest <= 2 * 4096 + 2048, "the file stays bounded: {largest} bytes");
        drop(ob);
        let (ob, _) = Outbox::open(dir.path()).unwrap();
        assert_eq!((ob.cursor(), ob.totals("a").delivered, ob.pending("a").count()), (Some(200), 200, 0));
    }

    #[test]
    fn a_torn_plan_line_is_cut_whole() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut ob, _) = Outbox::open(dir.path()).unwrap();
            ob.plan(1, vec![("a".to_string(), notice("c1", Phase::Open, 1, true))], 1).1.unwrap();
        }
        let path = dir.path().join("outbox.log");
        let full = std::fs::read(&path).unwrap();
        let second = encode(&Line::Plan {
            next_id: None,
            cursor: 2,
            entries: vec![Entry { id: 2, channel: "a".into(), created_us: 2, notice: notice("c1", Phase::Close, 2, true) }],
        });
        for cut in [1, second.len() / 2, second.len() - 1] {
            let mut bytes = full.clone();
            bytes.extend_from_slice(&second.as_bytes()[..cut]);
            std::fs::write(&path, &bytes).unwrap();
            let (ob, report) = Outbox::open(dir.path()).unwrap();
            assert_eq!(report.truncated_bytes, cut as u64);
            assert_eq!(ob.cursor(), Some(1), "the cursor and the entries of a torn line are lost together");
            assert_eq!(ob.pending("a").count(), 1);
        }
    }

    #[test]
    fn a_failed_plan_line_is_cut_back_and_planned_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.log");
        let (mut ob, _) = Outbox::open(dir.path()).unwrap();
        ob.plan(1, vec![("a".to_string(), notice("c1", Phase::Open, 1, true))], 1).1.unwrap();
        // The disk fails the next write after part of the line reached the file.
        let writable = ob.file.replace(File::open(&path).unwrap());
        let (chs, r) = ob.plan(2, vec![("a".to_string(), notice("c2", Phase::Open, 2, true))], 2);
        assert!(r.is_err());
        assert_eq!(chs, vec!["a".to_string()], "still delivered while the daemon runs");
        OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"op\":\"plan\",\"cur").unwrap();
        ob.file = writable;
        // The next line carries the entry again, and starts on a line of its own.
        ob.plan(3, vec![("a".to_string(), notice("c3", Phase::Open, 3, true))], 3).1.unwrap();
        drop(ob);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("\"cur{"), "no line glued onto a torn one:\n{text}");
        let (ob, report) = Outbox::open(dir.path()).unwrap();
        assert_eq!((report.truncated_bytes, report.skipped_lines.len()), (0, 0), "{report:?}");
        assert_eq!(ob.pending("a").map(|e| e.id).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(ob.cursor(), Some(3));
    }

    #[test]
    fn an_id_of_u64_max_is_rejected_like_damage() {
        let dir = tempfile::tempdir().unwrap();
        let e = Entry { id: u64::MAX, channel: "a".into(), created_us: 1, notice: notice("c1", Phase::Open, 1, true) };
        let forged = encode(&Line::Plan { cursor: 1, entries: vec![e], next_id: None });
        std::fs::write(dir.path().join("outbox.log"), forged).unwrap();
        let (mut ob, report) = Outbox::open(dir.path()).unwrap();
        assert_eq!(report.unreadable_lines, vec![1]);
        let (_, r) = ob.plan(2, vec![("a".to_string(), notice("c2", Phase::Open, 2, true))], 2);
        r.unwrap();
        assert_eq!(ob.pending("a").map(|e| e.id).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn updates_are_grouped_per_window_and_superseded_by_a_close() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ob, _) = Outbox::open(dir.path()).unwrap();
        let ch = || "a".to_string();
        ob.plan(1, vec![(ch(), notice("inc1", Phase::Open, 1, true))], 1_000).1.unwrap();
        assert!(matches!(ob.next("a", 1_000, 10_000), Pick::Send { ref entry, .. } if entry.id == 1));
        ob.done(vec![1], Outcome::Delivered, "", 1_000).unwrap();
        // Three plain updates in quick succession: nothing before the window ends...
        for (i, t) in [(2u64, 2_000u64), (3, 3_000), (4, 4_000)] {
            ob.plan(i, vec![(ch(), notice("inc1", Phase::Update, i, false))], t).1.unwrap();
        }
        assert_eq!(ob.next("a", 5_000, 10_000), Pick::Wait(12_000));
        // ...then one message: the newest, the others superseded with it.
        assert_eq!(ob.next("a", 12_000, 10_000), Pick::Send { entry: Box::new(ob.pending[&4].clone()), superseded: vec![2, 3] });
        // Another condition is not held up by the first one's window.
        ob.plan(5, vec![(ch(), notice("inc2", Phase::Open, 5, true))], 5_000).1.unwrap();
        assert!(matches!(ob.next("a", 5_000, 10_000), Pick::Send { ref entry, .. } if entry.id == 5));
        ob.done(vec![5], Outcome::Delivered, "", 5_000).unwrap();
        // A close after pending updates supersedes them at once.
        ob.plan(6, vec![(ch(), notice("inc1", Phase::Close, 6, true))], 6_000).1.unwrap();
        assert_eq!(ob.next("a", 6_000, 10_000), Pick::Supersede(vec![2, 3, 4]));
        ob.done(vec![2, 3, 4], Outcome::Superseded, "", 6_000).unwrap();
        assert!(matches!(ob.next("a", 6_000, 10_000), Pick::Send { ref entry, .. } if entry.id == 6));
        // An urgent update (an escalation) does not wait.
        ob.done(vec![6], Outcome::Delivered, "", 6_000).unwrap();
        ob.plan(7, vec![(ch(), notice("inc3", Phase::Update, 7, true))], 7_000).1.unwrap();
        assert!(matches!(ob.next("a", 7_000, 10_000), Pick::Send { ref entry, .. } if entry.id == 7));
        assert_eq!(ob.totals("a").superseded, 3);
    }
}
