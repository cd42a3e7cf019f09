//! The notification runtime: one dispatcher task and one delivery task per channel.
//!
//! ```text
//! Core::record ──(unbounded channel, after the event is durable)──▶ dispatcher
//!   dispatcher: Planner::observe → route to channels by filter → Outbox::plan (fsync) → wake
//!   channel task: Outbox::next → rate limit → Notifier::deliver → Outbox::done | backoff
//! ```
//!
//! At start-up the dispatcher folds the whole event history through the planner (rebuilding
//! open incidents and conditions) and plans the notices of every event after the outbox's
//! cursor: an event recorded just before a crash is notified after the restart. A new outbox
//! starts at the end of the existing history, so turning notifications on does not page anyone
//! about last year's incidents.
//!
//! Retries: after a failed attempt a channel waits `500ms x 2^(n-1)`, capped at its
//! `backoff_max`, with jitter (a random point in the second half of that wait), then tries the
//! same entry again. Entries are never dropped for being old; a receiver's definitive refusal
//! (HTTP 4xx other than 408/429, SMTP 5xx) marks the entry `rejected`, which is counted, logged
//! and shown by `understudy notify status`.
//!
//! Nothing here blocks the core: the only thing the core does is an unbounded `send`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::outbox::{Outbox, OutboxError, Outcome, Pick};
use super::plan::Planner;
use crate::events::Event;
use super::{DeliveryError, Notice, Notifier, Receipt};
use crate::notify::config::{NotifyConfig, RateLimit};
use crate::events::{Record, format_time_us};
use crate::metrics::{ChannelLabels, ChannelResultLabels, Metrics};
use crate::clock::now_us;

enum Msg {
    Record(Record),
    Reload(Vec<NotifyConfig>),
}

/// Handle held by the daemon (in `Shared`): feed events, reload channels, read status, test.
#[derive(Clone)]
pub struct NotifyHandle {
    tx: mpsc::UnboundedSender<Msg>,
    inner: Arc<Inner>,
}

struct Inner {
    outbox: Mutex<Outbox>,
    channels: Mutex<BTreeMap<String, Arc<Channel>>>,
    /// Open conditions, newest notice each (for re-sending to Alertmanager).
    firing: Mutex<Vec<Notice>>,
    metrics: Arc<Metrics>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

struct Channel {
    cfg: NotifyConfig,
    notifier: Arc<dyn Notifier>,
    wake: Notify,
    stop: CancellationToken,
    stats: Mutex<Stats>,
}

#[derive(Debug, Default, Clone)]
struct Stats {
    failed_attempts: u64,
    last_error: Option<(u64, String)>,
    next_attempt_us: Option<u64>,
    last_answer: Option<String>,
}

/// Why `understudy notify test` could not send.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("no notification channel named \"{0}\"")]
    NoChannel(String),
    #[error("{0}")]
    Failed(DeliveryError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Open the outbox, replay `history`, and start the dispatcher and the channel tasks.
pub fn start(
    configs: &[NotifyConfig],
    data_dir: &Path,
    history: &[Record],
    metrics: Arc<Metrics>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<NotifyHandle, OutboxError> {
    let base = Base { planner: Planner::default(), from_seq: 1, older: Box::new(Vec::new), cluster: false };
    start_from(configs, data_dir, base, history, metrics, tracker, cancel)
}

/// Where the planner's start-up fold begins: its state as of a log snapshot.
pub struct Base {
    /// The planner folded over every record below `from_seq`.
    pub planner: Planner,
    pub from_seq: u64,
    /// Every record the log still has from its start (read only when the outbox's cursor is
    /// older than the snapshot: the notices of records between them were never planned).
    pub older: Box<dyn FnOnce() -> Vec<Record>>,
    /// This node is one of a cluster: only the leader's notices are sent ([`NotifyGate`]).
    pub cluster: bool,
}

/// [`start`] from a snapshot of the planner and the records after it (`history`).
pub fn start_from(
    configs: &[NotifyConfig],
    data_dir: &Path,
    base: Base,
    history: &[Record],
    metrics: Arc<Metrics>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<NotifyHandle, OutboxError> {
    let (mut outbox, report) = Outbox::open(data_dir)?;
    if report.truncated_bytes > 0 {
        tracing::warn!(bytes = report.truncated_bytes, "cut a torn final write off the notification outbox");
    }
    if !report.skipped_lines.is_empty() {
        tracing::error!(lines = ?report.skipped_lines, path = %outbox.path().display(), "skipped damaged lines in the notification outbox");
    }
    let last = history.last().map(|r| r.seq).unwrap_or(base.from_seq.saturating_sub(1));
    let cursor = match outbox.cursor() {
        Some(c) => c,
        None => {
            // A new outbox begins at the end of the history it finds.
            if let Err(e) = outbox.plan(last, Vec::new(), now_us()).1 {
                tracing::error!("{e}");
            }
            last
        }
    };
    // The daemon died after a snapshot but before planning every record before it: fold
    // from the start of what the log still has, so those notices are planned too.
    let mut older = Vec::new();
    let mut planner = base.planner;
    if cursor + 1 < base.from_seq {
        let all = (base.older)();
        if all.first().is_some_and(|r| r.seq <= cursor + 1) {
            planner = Planner::default();
            older = all.into_iter().filter(|r| r.seq < base.from_seq).collect();
        } else {
            tracing::error!(from = cursor + 1, to = base.from_seq - 1, "the event log no longer holds these events (log_retention); their notifications are not planned");
        }
    }
    let mut items = Vec::new();
    let mut gate = NotifyGate::new(base.cluster);
    for r in older.iter().chain(history) {
        let notices = planner.observe(r);
        if gate.admit(&r.event) && r.seq > cursor {
            items.extend(route(&notices, configs));
        }
    }
    drop(older);
    let replanned = items.len();
    let (_, written) = outbox.plan(last.max(cursor), items, now_us());
    if let Err(e) = written {
        // A full or read-only disk must not stop the daemon: the entries are queued in memory.
        tracing::error!("{e}; notifications will be sent but may be lost if the daemon dies before they are");
    }
    if last > cursor {
        tracing::info!(from = cursor + 1, to = last, notices = replanned, "planned notifications for events recorded before the last stop");
    }

    let (tx, rx) = mpsc::unbounded_channel();
    let inner = Arc::new(Inner {
        outbox: Mutex::new(outbox),
        channels: Mutex::new(BTreeMap::new()),
        firing: Mutex::new(planner.open_conditions().cloned().collect()),
        metrics,
        tracker: tracker.clone(),
        cancel,
    });
    inner.apply_configs(configs);
    let d = inner.clone();
    tracker.spawn(dispatcher(d, planner, gate, rx, configs.to_vec()));
    Ok(NotifyHandle { tx, inner })
}

/// Which recorded events are notified. A cluster notifies once, from its leader: a follower
/// records the decisions it adopts (and incidents follow from them) but sends nothing for
/// them. What concerns this node alone is always sent by the node itself: its `cluster_role`
/// (a node cut off from etcd says so), its event log's disk, a refused reload, its checker
/// errors (the monitor's own fault) and its virtual IPs. Each run of the daemon starts as a follower until its first `cluster_role` says it
/// leads, so replaying the log at start-up gives the same answers. Every record still goes
/// through the planner, so its incidents and conditions stay whole on every node.
#[derive(Debug, Clone, Copy)]
pub struct NotifyGate {
    cluster: bool,
    leading: bool,
}

impl NotifyGate {
    pub fn new(cluster: bool) -> NotifyGate {
        NotifyGate { cluster, leading: false }
    }

    pub fn admit(&mut self, event: &Event) -> bool {
        if !self.cluster {
            return true;
        }
        match event {
            Event::ClusterRole { leading, .. } => {
                self.leading = *leading;
                true
            }
            Event::DaemonStarted { .. } => {
                self.leading = false;
                false
            }
            Event::LogBehind { .. } | Event::LogCaughtUp { .. } | Event::ConfigRejected { .. } | Event::ConfigReloaded { .. } | Event::CheckerError { .. } | Event::VipState { .. } => true,
            _ => self.leading,
        }
    }
}

/// `(channel, notice)` for every channel whose filters accept the notice.
fn route(notices: &[Notice], configs: &[NotifyConfig]) -> Vec<(String, Notice)> {
    let mut out = Vec::new();
    for n in notices {
        for c in configs {
            if c.accepts(n.event, n.service.as_deref(), n.severity) {
                out.push((c.name.clone(), n.clone()));
            }
        }
    }
    out
}

impl NotifyHandle {
    /// Hand a recorded event to the dispatcher. Never blocks.
    pub fn feed(&self, record: &Record) {
        let _ = self.tx.send(Msg::Record(record.clone()));
    }

    /// Swap in the channels of a new config (after the events before it are planned).
    pub fn reload(&self, configs: Vec<NotifyConfig>) {
        let _ = self.tx.send(Msg::Reload(configs));
    }

    /// Per-channel delivery state, for the API and `understudy notify status`.
    pub fn status(&self) -> super::status::NotifyStatus {
        let channels = lock(&self.inner.channels).clone();
        let outbox = lock(&self.inner.outbox);
        let mut names: Vec<String> = channels.keys().cloned().chain(outbox.channels()).collect();
        names.sort();
        names.dedup();
        let list = names
            .into_iter()
            .map(|name| {
                let ch = channels.get(&name);
                let stats = ch.map(|c| lock(&c.stats).clone()).unwrap_or_default();
                let totals = outbox.totals(&name);
                let pending: Vec<_> = outbox.pending(&name).collect();
                super::status::NotifyChannel {
                    kind: ch.map(|c| c.cfg.kind.name().to_string()),
                    configured: ch.is_some(),
                    pending: pending.len() as u64,
                    oldest_pending: pending.iter().map(|e| e.created_us).min().map(format_time_us),
                    delivered: totals.delivered,
                    superseded: totals.superseded,
                    rejected: totals.rejected,
                    failed_attempts: stats.failed_attempts,
                    last_error: stats.last_error.as_ref().map(|e| e.1.clone()).or(totals.last_rejected.as_ref().map(|r| r.1.clone())),
                    last_error_at: stats.last_error.as_ref().map(|e| format_time_us(e.0)).or(totals.last_rejected.as_ref().map(|r| format_time_us(r.0))),
                    last_delivered: totals.last_delivered_us.map(format_time_us),
                    last_answer: stats.last_answer.clone(),
                    next_attempt: stats.next_attempt_us.map(format_time_us),
                    name,
                }
            })
            .collect();
        super::status::NotifyStatus { cursor: outbox.cursor().unwrap_or(0), channels: list }
    }

    /// Send a test notice through `channel` now (not through the outbox) and return the
    /// receiver's answer.
    pub async fn test(&self, channel: &str) -> Result<Receipt, TestError> {
        let ch = lock(&self.inner.channels).get(channel).cloned().ok_or_else(|| TestError::NoChannel(channel.to_string()))?;
        let n = Notice::test(now_us());
        let limit = ch.cfg.timeout + Duration::from_secs(1);
        let result = match tokio::time::timeout(limit, ch.notifier.deliver(&n)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(TestError::Failed(e)),
            Err(_) => Err(TestError::Timeout(limit)),
        };
        let label = if result.is_ok() { "test_ok" } else { "test_failed" };
        self.inner.metrics.notifications.get_or_create(&ChannelResultLabels { channel: channel.into(), result: label.into() }).inc();
        result
    }
}

impl Inner {
    /// Start, keep or replace channel tasks to match `configs`.
    fn apply_configs(self: &Arc<Self>, configs: &[NotifyConfig]) {
        let mut channels = lock(&self.channels);
        let mut next = BTreeMap::new();
        for cfg in configs {
            if let Some(old) = channels.remove(&cfg.name)
                && old.cfg == *cfg
            {
                next.insert(cfg.name.clone(), old);
                continue;
            }
            let notifier = match super::build(cfg) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(channel = %cfg.name, "cannot start notification channel: {e}");
                    continue;
                }
            };
            let ch = Arc::new(Channel {
                cfg: cfg.clone(),
                notifier,
                wake: Notify::new(),
                stop: self.cancel.child_token(),
                stats: Mutex::new(Stats::default()),
            });
            let _ = self.metrics.notifications_pending.get_or_create(&ChannelLabels { channel: cfg.name.clone() });
            self.tracker.spawn(deliver_loop(self.clone(), ch.clone()));
            next.insert(cfg.name.clone(), ch);
        }
        for old in channels.values() {
            old.stop.cancel();
        }
        *channels = next;
    }

    fn plan(&self, cursor: u64, items: Vec<(String, Notice)>) {
        let (woken, result) = lock(&self.outbox).plan(cursor, items, now_us());
        if let Err(e) = result {
            // The entries are still queued in memory; they are lost only if we also crash.
            tracing::error!("{e}; notifications will be sent but may be lost if the daemon dies before they are");
        }
        let channels = lock(&self.channels);
        for name in woken {
            if let Some(ch) = channels.get(&name) {
                ch.wake.notify_one();
            }
        }
    }
}

async fn dispatcher(inner: Arc<Inner>, mut planner: Planner, mut gate: NotifyGate, mut rx: mpsc::UnboundedReceiver<Msg>, mut configs: Vec<NotifyConfig>) {
    loop {
        let first = tokio::select! {
            m = rx.recv() => m,
            _ = inner.cancel.cancelled() => None,
        };
        let mut batch: Vec<Msg> = first.into_iter().collect();
        let stopping = batch.is_empty();
        while let Ok(m) = rx.try_recv() {
            batch.push(m);
        }
        let mut items = Vec::new();
        let mut cursor: Option<u64> = None;
        let mut changed = false;
        for m in batch {
            match m {
                Msg::Record(r) => {
                    let mut notices = planner.observe(&r);
                    if !gate.admit(&r.event) {
                        notices.clear(); // a follower's: the leader sends them
                    }
                    changed |= !notices.is_empty();
                    items.extend(route(&notices, &configs));
                    if r.seq > 0 {
                        cursor = Some(r.seq);
                    }
                }
                Msg::Reload(new) => {
                    // Events before the reload are routed with the channels they happened under.
                    let c = cursor.unwrap_or_else(|| lock(&inner.outbox).cursor().unwrap_or(0));
                    inner.plan(c, std::mem::take(&mut items));
                    inner.apply_configs(&new);
                    configs = new;
                }
            }
        }
        if let Some(c) = cursor.or_else(|| (!items.is_empty()).then(|| lock(&inner.outbox).cursor().unwrap_or(0))) {
            inner.plan(c, items);
        }
        if changed {
            *lock(&inner.firing) = planner.open_conditions().cloned().collect();
        }
        if stopping {
            return;
        }
    }
}

/// A token bucket: `count` messages per `per`, bursts up to `count`.
struct Bucket {
    tokens: f64,
    max: f64,
    per_sec: f64,
    at: Instant,
}

impl Bucket {
    fn new(r: RateLimit) -> Bucket {
        Bucket { tokens: r.count as f64, max: r.count as f64, per_sec: r.count as f64 / r.per.as_secs_f64(), at: Instant::now() }
    }
    /// Take a token, or say when one will be there.
    fn take(&mut self, now: Instant) -> Result<(), Instant> {
        self.tokens = (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * self.per_sec).min(self.max);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(now + Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec))
        }
    }
}

/// The wait after `failures` consecutive failed attempts: exponential from 500 ms, capped at
/// the channel's `backoff_max`, jittered (see `crate::retry`).
fn backoff(failures: u32, max: Duration) -> Duration {
    crate::retry::Backoff::new(Duration::from_millis(500), max).delay_random(failures)
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn deliver_loop(inner: Arc<Inner>, ch: Arc<Channel>) {
    let name = ch.cfg.name.clone();
    let window_us = ch.cfg.group_window.as_micros() as u64;
    let limit = ch.cfg.timeout + Duration::from_secs(1);
    let mut bucket = Bucket::new(ch.cfg.rate_limit);
    let mut failures = 0u32;
    let mut retry_at: Option<Instant> = None;
    let resend_every = ch.notifier.resend_every();
    let mut next_resend = resend_every.map(|_| Instant::now());
    let count = |result: &str, n: u64| {
        inner.metrics.notifications.get_or_create(&ChannelResultLabels { channel: name.clone(), result: result.into() }).inc_by(n);
    };
    // Record a failed attempt and schedule the retry.
    let fail = |failures: &mut u32, retry_at: &mut Option<Instant>, what: &str, e: &str| {
        *failures += 1;
        let wait = backoff(*failures, ch.cfg.backoff_max);
        *retry_at = Some(Instant::now() + wait);
        let mut s = lock(&ch.stats);
        s.failed_attempts += 1;
        s.last_error = Some((now_us(), e.to_string()));
        s.next_attempt_us = Some(now_us() + wait.as_micros() as u64);
        tracing::warn!(channel = %name, attempt = *failures, retry_in_ms = wait.as_millis() as u64, "{what} failed: {e}");
    };
    loop {
        if ch.stop.is_cancelled() {
            return;
        }
        let now = Instant::now();
        let backing_off = retry_at.is_some_and(|r| r > now);
        if let (Some(every), Some(t)) = (resend_every, next_resend)
            && t <= now
            && !backing_off
        {
            let firing: Vec<Notice> =
                lock(&inner.firing).iter().filter(|n| ch.cfg.accepts(n.event, n.service.as_deref(), n.severity)).cloned().collect();
            next_resend = Some(now + every);
            if !firing.is_empty() {
                let r = tokio::select! {
                    r = tokio::time::timeout(limit, ch.notifier.resend(&firing)) => r,
                    _ = ch.stop.cancelled() => return,
                };
                match r {
                    Ok(Ok(_)) => count("resent", firing.len() as u64),
                    Ok(Err(e)) => {
                        count("resend_failed", 1);
                        fail(&mut failures, &mut retry_at, "re-sending open alerts", &e.to_string());
                    }
                    Err(_) => {
                        count("resend_failed", 1);
                        fail(&mut failures, &mut retry_at, "re-sending open alerts", &format!("no answer within {limit:?}"));
                    }
                }
            }
            continue;
        }

        let pick = lock(&inner.outbox).next(&name, now_us(), window_us);
        // A re-send that is due waits for the backoff like everything else.
        let mut wake_at = match (next_resend, retry_at) {
            (Some(t), Some(r)) if backing_off => Some(t.max(r)),
            (t, _) => t,
        };
        match pick {
            Pick::Supersede(ids) => {
                let n = ids.len() as u64;
                if let Err(e) = lock(&inner.outbox).done(ids, Outcome::Superseded, "", now_us()) {
                    tracing::error!("{e}");
                }
                count("superseded", n);
                continue;
            }
            Pick::Send { entry, superseded } => {
                if let Some(r) = retry_at.filter(|r| *r > now) {
                    wake_at = earliest(wake_at, Some(r));
                } else if let Err(t) = bucket.take(now) {
                    wake_at = earliest(wake_at, Some(t));
                } else {
                    let r = tokio::select! {
                        r = tokio::time::timeout(limit, ch.notifier.deliver(&entry.notice)) => r,
                        _ = ch.stop.cancelled() => return,
                    };
                    let r = r.unwrap_or_else(|_| Err(DeliveryError::Retry(format!("no answer within {limit:?}"))));
                    match r {
                        Ok(receipt) => {
                            failures = 0;
                            retry_at = None;
                            let n_sup = superseded.len() as u64;
                            {
                                let mut ob = lock(&inner.outbox);
                                let t = now_us();
                                let r1 = ob.done(vec![entry.id], Outcome::Delivered, "", t);
                                let r2 = ob.done(superseded, Outcome::Superseded, "", t);
                                if let Err(e) = r1.and(r2) {
                                    tracing::error!("{e}");
                                }
                            }
                            count("delivered", 1);
                            if n_sup > 0 {
                                count("superseded", n_sup);
                            }
                            let mut s = lock(&ch.stats);
                            s.next_attempt_us = None;
                            s.last_answer = Some(receipt.answer.clone());
                            tracing::info!(channel = %name, key = %entry.notice.key, answer = %receipt.answer, "notification delivered: {}", entry.notice.summary);
                        }
                        Err(DeliveryError::Rejected(m)) => {
                            failures = 0;
                            retry_at = None;
                            let mut ids = vec![entry.id];
                            ids.extend(superseded);
                            if let Err(e) = lock(&inner.outbox).done(ids, Outcome::Rejected, &m, now_us()) {
                                tracing::error!("{e}");
                            }
                            count("rejected", 1);
                            let mut s = lock(&ch.stats);
                            s.last_error = Some((now_us(), format!("rejected: {m}")));
                            s.next_attempt_us = None;
                            tracing::error!(channel = %name, key = %entry.notice.key, "notification rejected by the receiver, not retried: {m}");
                        }
                        Err(DeliveryError::Retry(m)) => {
                            count("failed", 1);
                            fail(&mut failures, &mut retry_at, "notification delivery", &m);
                        }
                    }
                    continue;
                }
            }
            Pick::Wait(until_us) => {
                let now_wall = now_us();
                wake_at = earliest(wake_at, Some(now + Duration::from_micros(until_us.saturating_sub(now_wall))));
            }
            Pick::Idle => {}
        }
        let pending = lock(&inner.outbox).pending(&name).count() as i64;
        inner.metrics.notifications_pending.get_or_create(&ChannelLabels { channel: name.clone() }).set(pending);
        let sleep = async {
            match wake_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ch.wake.notified() => {}
            _ = ch.stop.cancelled() => return,
            _ = sleep => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Reason;
    use crate::events::Event;
    use crate::health::Health;

    #[test]
    fn a_cluster_notifies_only_while_this_node_leads_and_always_its_own_cut_off() {
        let role = |leading: bool, connected: bool| Event::ClusterRole { node: "mon-b".into(), leader: None, leading, connected, why: None };
        let other = Event::IncidentClosed { id: 1, service: "www".into(), by: "api".into() };
        let mut standalone = NotifyGate::new(false);
        assert!(standalone.admit(&other));
        let mut g = NotifyGate::new(true);
        assert!(!g.admit(&other), "a node starts as a follower");
        assert!(g.admit(&Event::LogBehind { behind: 3, error: None }), "this node's own disk is its own to report");
        assert!(g.admit(&role(true, true)));
        assert!(g.admit(&other), "the leader notifies");
        assert!(g.admit(&role(false, false)), "a cut-off node says so itself");
        assert!(!g.admit(&other));
        assert!(g.admit(&role(true, true)) && g.admit(&other));
        assert!(!g.admit(&Event::DaemonStarted { version: "x".into(), pid: 1, config: "c".into() }), "a restart starts as a follower again");
        assert!(!g.admit(&other));
    }

    fn history() -> Vec<Record> {
        let decision = |epoch, to: &str, to_rank, reason| Event::Decision {
            service: "www".into(),
            epoch,
            from: Some("primary".into()),
            to: Some(to.to_string()),
            from_rank: Some(0),
            to_rank: Some(to_rank),
            address: None,
            reason,
            all_down: false,
        };
        let events = vec![
            decision(1, "primary", 0, Reason::Initial),
            Event::TargetDown {
                service: "www".into(),
                target: "primary".into(),
                from: Health::Up,
                streak: 3,
                first_failure_us: 1,
                last_ok_us: None,
                reason: "refused".into(),
                checks: Vec::new(),
            },
            decision(2, "backup", 1, Reason::Failover),
            Event::IncidentOpened { id: 1, service: "www".into(), failed: Some("primary".into()), to: Some("backup".into()) },
        ];
        events.into_iter().enumerate().map(|(i, event)| Record { seq: i as u64 + 1, time_us: 1_000 + i as u64, event }).collect()
    }

    fn channel() -> Vec<NotifyConfig> {
        let text = "[[service]]\nname = \"www\"\n[service.check]\nkind = \"tcp\"\nport = 80\n[[service.target]]\nname = \"primary\"\n\
                    address = \"127.0.0.2\"\n[[notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\n";
        crate::config::from_str(text, Path::new("t.toml")).unwrap().0.notify
    }

    async fn run_once(dir: &Path, history: &[Record]) -> crate::notify::status::NotifyStatus {
        let metrics = Arc::new(Metrics::new(Arc::new(crate::probe::lag::LagHistogram::default())));
        let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
        let h = start(&channel(), dir, history, metrics, &tracker, cancel.clone()).unwrap();
        let status = h.status();
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
        status
    }

    #[tokio::test]
    async fn events_after_the_cursor_are_planned_at_start_up_once() {
        let dir = tempfile::tempdir().unwrap();
        // The daemon died after planning event 2: events 3 and 4 (the failover) are not lost.
        Outbox::open(dir.path()).unwrap().0.plan(2, Vec::new(), 0).1.unwrap();
        let s = run_once(dir.path(), &history()).await;
        assert_eq!(s.cursor, 4);
        assert_eq!(s.channels.len(), 1);
        assert_eq!(s.channels[0].pending, 1, "the incident_opened notice: {s:?}");
        // Starting again plans nothing new.
        let s = run_once(dir.path(), &history()).await;
        assert_eq!((s.cursor, s.channels[0].pending), (4, 1));
    }

    /// Start from a log snapshot taken after event `snap` (the planner folded that far), with
    /// the events after it as the tail.
    async fn run_from_snapshot(dir: &Path, history: &[Record], snap: usize) -> crate::notify::status::NotifyStatus {
        let metrics = Arc::new(Metrics::new(Arc::new(crate::probe::lag::LagHistogram::default())));
        let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
        let mut planner = Planner::default();
        for r in &history[..snap] {
            planner.observe(r);
        }
        let all = history.to_vec();
        let base = Base { planner, from_seq: snap as u64 + 1, older: Box::new(move || all), cluster: false };
        let h = start_from(&channel(), dir, base, &history[snap..], metrics, &tracker, cancel.clone()).unwrap();
        let status = h.status();
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
        status
    }

    #[tokio::test]
    async fn a_cursor_older_than_the_log_snapshot_still_plans_the_events_between_them() {
        let dir = tempfile::tempdir().unwrap();
        // The daemon died after the log started a segment at event 5 (snapshot of events 1-4)
        // but before the dispatcher planned events 3 and 4.
        Outbox::open(dir.path()).unwrap().0.plan(2, Vec::new(), 0).1.unwrap();
        let s = run_from_snapshot(dir.path(), &history(), 4).await;
        assert_eq!((s.cursor, s.channels[0].pending), (4, 1), "the incident_opened notice of event 4: {s:?}");
        // With the cursor at the snapshot, the snapshot's planner is enough: nothing twice.
        let s = run_from_snapshot(dir.path(), &history(), 4).await;
        assert_eq!((s.cursor, s.channels[0].pending), (4, 1));
    }

    #[tokio::test]
    async fn a_new_outbox_starts_at_the_end_of_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let s = run_once(dir.path(), &history()).await;
        assert_eq!((s.cursor, s.channels[0].pending), (4, 0), "turning notifications on does not page about the past");
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let max = Duration::from_secs(10);
        for _ in 0..50 {
            let d1 = backoff(1, max);
            assert!(d1 >= Duration::from_millis(250) && d1 <= Duration::from_millis(500), "{d1:?}");
            let d4 = backoff(4, max);
            assert!(d4 >= Duration::from_secs(2) && d4 <= Duration::from_secs(4), "{d4:?}");
            let d30 = backoff(30, max);
            assert!(d30 >= Duration::from_secs(5) && d30 <= max, "{d30:?}");
        }
    }

    #[test]
    fn the_bucket_allows_a_burst_then_one_per_period() {
        // Time is a parameter: no clock is read after construction.
        let mut b = Bucket::new(RateLimit { count: 2, per: Duration::from_secs(10) });
        let t0 = b.at;
        assert!(b.take(t0).is_ok());
        assert!(b.take(t0).is_ok());
        let next = b.take(t0).unwrap_err();
        assert_eq!(next.duration_since(t0).as_secs(), 5);
        let t1 = t0 + Duration::from_secs(5);
        assert!(b.take(t1).is_ok());
        assert!(b.take(t1).is_err());
    }
}
