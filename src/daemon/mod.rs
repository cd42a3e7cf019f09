//! The runtime: carries out what the service machines decide. It never decides.
//!
//! [`prepare`] opens the data directory (and locks it), replays the event log (overrides,
//! epochs, health, incidents), starts the actuator kinds from the registry (the DNS server
//! binds here, serving the restored decisions), builds one machine per service
//! (`crate::service`) with one probe task per target and one actuator runner per service, and
//! returns a [`Prepared`] daemon; [`Prepared::run`] starts the [`core`] loop, which owns all
//! mutable state and carries out the machines' effects. Everything else talks to the core
//! through channels: probes send results, runners send actuator reports, the API (started by
//! the caller, `crate::cli::run`) sends [`Control`] messages and waits for the reply.
//!
//! Shutdown ([`Handle::shutdown`]): probes stop, an actuator apply in progress is finished,
//! actuator kinds shut down, a `daemon_stopped` event is written.

mod core;
mod drills;
mod reload;
mod services;
pub mod systemd;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::events::log::EventLog;
use crate::events::state::Persisted;
use crate::events::{OverrideAction, Record};
use crate::metrics::Metrics;

pub use self::core::Control;
pub use crate::service::Refusal;

/// What the API shows of one service: its machine's status, and what the runtime adds.
#[derive(Debug, Clone)]
pub struct ServiceView {
    pub status: crate::service::Status,
    pub config: crate::config::ServiceConfig,
    /// What each target's probe checks ("tcp 127.0.0.2:80"), by target name.
    pub checks: std::collections::HashMap<String, String>,
    pub open_incident: Option<u64>,
    /// The built-in DNS server's failover records of this service.
    pub dns: Vec<crate::dns::RecordStatus>,
    /// What the client canaries watching it see now.
    pub canary: Vec<crate::canary::CanaryView>,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Log(#[from] crate::events::log::LogError),
    #[error("data directory {path} is in use by another understudy (lock held on {path}/lock)")]
    Locked { path: PathBuf },
    #[error("cannot lock data directory {path}: {source}")]
    Lock { path: PathBuf, source: std::io::Error },
    #[error("cannot start probes: {0}")]
    Probe(#[from] crate::probe::ProbeError),
    #[error(transparent)]
    Outbox(#[from] crate::notify::outbox::OutboxError),
    #[error(transparent)]
    Actuator(#[from] crate::actuator::registry::RegistryError),
    #[error("cluster: {0}")]
    Cluster(String),
}

/// Shared with the API: how to reach the core and what it can read without asking.
#[derive(Clone)]
pub struct Shared {
    pub control: mpsc::Sender<Control>,
    pub log: Arc<std::sync::Mutex<EventLog>>,
    pub metrics: Arc<Metrics>,
    pub events: broadcast::Sender<Record>,
    /// Wall microseconds of the core loop's last turn (for `/healthz`).
    pub heartbeat_us: Arc<AtomicU64>,
    /// Wall microseconds of the last check result the core received.
    pub last_check_us: Arc<AtomicU64>,
    /// Checks are stalled when none arrived for this long (0: no checks configured).
    pub stall_after_us: Arc<AtomicU64>,
    /// Notifications: every recorded event is fed here (never blocks).
    pub notify: crate::notify::NotifyHandle,
    /// Where drill reports are stored (`<data_dir>/drills`).
    pub data_dir: PathBuf,
    /// What the client canaries see now (`[[canary]]`).
    pub canary: crate::canary::Views,
    /// This node's place in the cluster (`None` for a single node).
    pub cluster: Option<Arc<ClusterState>>,
}

/// What the runtime shares of this node's place in a cluster (`[cluster] kind = "etcd"`).
#[derive(Debug, Default)]
pub struct ClusterState {
    /// This node leads: actuators that act outside run and notifications go out.
    pub leading: Arc<AtomicBool>,
    /// The role the coordinator last reported.
    pub role: std::sync::Mutex<crate::coordinator::Role>,
}


impl Shared {
    /// Is the daemon itself working? `Err` says why not. Used by `/healthz` and the heartbeat.
    pub fn self_health(&self) -> Result<String, String> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = crate::clock::now_us();
        let core_age = now.saturating_sub(self.heartbeat_us.load(Relaxed)) / 1000;
        if core_age >= 5_000 {
            return Err(format!("stalled: the core loop last ran {core_age} ms ago"));
        }
        let stall = self.stall_after_us.load(Relaxed);
        let check_age = now.saturating_sub(self.last_check_us.load(Relaxed));
        if stall > 0 && check_age > stall {
            return Err(format!("stalled: no check result for {} ms", check_age / 1000));
        }
        // A node cut off from etcd serves the last committed decisions but decides nothing.
        if let Some(c) = &self.cluster {
            let role = c.role.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if !role.connected {
                return Err(format!("{}; serving the last committed decisions, deciding nothing", role.why.unwrap_or_else(|| "cut off from etcd".into())));
            }
        }
        // A disk that does not keep up degrades the daemon but does not stop it failing over.
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner()).status();
        if log.behind > 0 && log.oldest_pending_ms >= core::LOG_WAIT.as_millis() as u64 {
            let why = log.error.map(|e| format!(": {e}")).unwrap_or_default();
            return Ok(format!(
                "degraded: event log behind by {} (oldest waiting {} ms){why}; core loop ran {core_age} ms ago",
                log.behind, log.oldest_pending_ms
            ));
        }
        Ok(format!("ok: core loop ran {core_age} ms ago, last check result {} ms ago", check_age / 1000))
    }

    /// The cluster as this node sees it (`None` for a single node).
    pub async fn cluster(&self) -> Result<Option<crate::coordinator::ClusterStatus>, Refusal> {
        self.ask(Control::Cluster).await
    }

    pub async fn drill_start(&self, req: crate::drill::StartRequest) -> Result<crate::drill::StartResponse, Refusal> {
        self.ask(|reply| Control::DrillStart { req, reply }).await?
    }

    pub async fn drill_finish(&self, report: crate::drill::Report) -> Result<(), Refusal> {
        self.ask(|reply| Control::DrillFinish { report: Box::new(report), reply }).await?
    }

    /// Register a drill's undo and/or extend its lease by `lasts`.
    pub async fn drill_lease(&self, id: u64, undo: Option<crate::drill::Undo>, lasts: std::time::Duration) -> Result<crate::drill::LeaseResponse, Refusal> {
        self.ask(|reply| Control::DrillLease { id, undo, lasts, reply }).await?
    }

    /// The state of this node's virtual IPs (VRRP instances).
    pub async fn vips(&self) -> Result<Vec<crate::vrrp::VipStatus>, Refusal> {
        self.ask(Control::Vips).await
    }

    pub async fn drills(&self) -> Result<Vec<crate::drill::Summary>, Refusal> {
        self.ask(Control::Drills).await
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Control) -> Result<T, Refusal> {
        let (tx, rx) = oneshot::channel();
        self.control.send(make(tx)).await.map_err(|_| Refusal::ShuttingDown)?;
        rx.await.map_err(|_| Refusal::ShuttingDown)
    }

    pub async fn services(&self) -> Result<Vec<ServiceView>, Refusal> {
        let mut list = self.ask(Control::Services).await?;
        for s in &mut list {
            s.canary = self.canary.for_service(&s.status.name);
        }
        Ok(list)
    }

    pub async fn incidents(&self) -> Result<Vec<crate::events::incident::Incident>, Refusal> {
        self.ask(Control::Incidents).await
    }

    pub async fn operate(&self, service: &str, target: Option<&str>, action: OverrideAction, by: &str) -> Result<(), Refusal> {
        let (service, target, by) = (service.to_string(), target.map(str::to_string), by.to_string());
        self.ask(|reply| Control::Override { service, target, action, by, expires_us: None, reply }).await?
    }

    /// Make `target`'s checks count as failing for at most `lasts` (drills).
    pub async fn force_down(&self, service: &str, target: &str, lasts: std::time::Duration, by: &str) -> Result<(), Refusal> {
        let (service, target, by) = (service.to_string(), Some(target.to_string()), by.to_string());
        let expires_us = Some(crate::clock::now_us() + lasts.as_micros() as u64);
        let action = OverrideAction::ForceDown;
        self.ask(|reply| Control::Override { service, target, action, by, expires_us, reply }).await?
    }

    pub async fn close_incident(&self, id: u64, by: &str) -> Result<(), Refusal> {
        let by = by.to_string();
        self.ask(|reply| Control::CloseIncident { id, by, reply }).await?
    }

    /// Record that a reload was refused (the file did not validate).
    pub async fn reject_config(&self, errors: String) {
        let _ = self.control.send(Control::ConfigRejected(errors)).await;
    }

    /// Validate and apply a new config; on error the old one keeps running.
    pub async fn reload(&self, config: Config) -> Result<(), Refusal> {
        self.ask(|reply| Control::Reload { config: Box::new(config), reply }).await?
    }
}

/// A running daemon.
pub struct Handle {
    pub shared: Shared,
    cancel: CancellationToken,
    tracker: TaskTracker,
    core: tokio::task::JoinHandle<()>,
}

impl Handle {
    /// Where to spawn tasks that must stop with the daemon.
    pub fn tasks(&self) -> (&TaskTracker, &CancellationToken) {
        (&self.tracker, &self.cancel)
    }

    /// Live events (only those appended after subscribing).
    pub fn subscribe(&self) -> broadcast::Receiver<Record> {
        self.shared.events.subscribe()
    }

    /// Stop and wait until everything has finished.
    pub async fn shutdown(self) {
        if let Some(n) = systemd::Notify::from_env() {
            let _ = n.send("STOPPING=1");
        }
        self.cancel.cancel();
        let _ = self.core.await;
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// The last recorded decision of each configured service, as actuator kinds with state of their
/// own (the DNS server) start serving it. A decision whose target has left the config is
/// ignored (the service starts on its primary).
fn restored_current(config: &Config, persisted: &Persisted) -> std::collections::HashMap<String, crate::actuator::Current> {
    let mut current = std::collections::HashMap::new();
    for (name, r) in &persisted.decisions {
        let Some(svc) = config.services.iter().find(|s| &s.name == name) else { continue };
        let active = match &r.active {
            Some(t) => match svc.target(t) {
                Some(t) => Some(t.address),
                None => continue,
            },
            None => None,
        };
        current.insert(name.clone(), crate::actuator::Current { epoch: r.epoch, active });
    }
    current
}

/// Load the state, start actuator kinds and probes; see [`Prepared`].
pub async fn prepare(config: Config) -> Result<Prepared, DaemonError> {
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let data_dir = config.daemon.data_dir.clone();
    let lock = lock_data_dir(&data_dir)?;

    let opts = crate::events::log::LogOptions { segment_size: config.daemon.log_segment_size, retention: config.daemon.log_retention };
    let (mut log, history, report) = EventLog::open_with(&data_dir, opts)?;
    if report.truncated_bytes > 0 {
        tracing::warn!(bytes = report.truncated_bytes, "cut a torn final write off the event log (the daemon died mid-write)");
    }
    if !report.skipped_lines.is_empty() {
        tracing::error!(lines = ?report.skipped_lines, path = %log.path().display(), "skipped damaged lines in the event log");
    }
    // Start-up folds begin at the newest snapshot and take the records after it.
    let mut persisted = history.state.persisted.clone();
    for r in &history.records {
        persisted.apply(r);
    }
    if !report.unreadable_lines.is_empty() {
        tracing::warn!(lines = ?report.unreadable_lines, path = %log.path().display(), "skipped event log lines this version cannot read (written by a newer version?); they are kept");
    }

    // Actuator kinds start before anything decides: the DNS server answers from the start,
    // each failover record with the decision restored from the event log (its primary when the
    // service has none), so a restart never serves a target the daemon had failed away from;
    // a bind error is fatal here, before anything runs.
    let current = restored_current(&config, &persisted);
    // Events from outside the core (actuator kinds such as VRRP speakers, the client canary)
    // reach the log through one channel the core drains.
    let (record_tx, record_rx) = mpsc::unbounded_channel();
    let start_ctx = crate::actuator::registry::StartCtx { config: &config, current: &current, data_dir: &data_dir, cancel: cancel.clone(), events: Some(record_tx.clone()) };
    let registry = crate::actuator::registry::Registry::start(&start_ctx)?;

    let lag = Arc::new(crate::probe::lag::LagHistogram::default());
    let metrics = Arc::new(Metrics::new(lag.clone()));
    let (control_tx, control_rx) = mpsc::channel(256);
    let (events, _) = broadcast::channel(4096);
    let first_segment = log.path().to_owned();
    let older = Box::new(move || crate::events::log::read_since(&first_segment, 0, usize::MAX).unwrap_or_default());
    let cluster = matches!(config.cluster, crate::coordinator::config::ClusterConfig::Etcd(_)).then(|| Arc::new(ClusterState::default()));
    let base = crate::notify::Base { planner: history.state.planner.clone(), from_seq: history.from_seq, older, cluster: cluster.is_some() };
    let notify = crate::notify::start_from(&config.notify, &data_dir, base, &history.records, metrics.clone(), &tracker, cancel.clone())?;
    // A sequence number the outbox has seen is never given out again, even if the log lost it.
    log.skip_to(notify.status().cursor + 1);
    // Notifications are planned from events once they are on disk (the log's writer thread
    // hands them over in order); the core never waits on that.
    let feed = notify.clone();
    log.on_durable(Box::new(move |r| feed.feed(r)));
    let shared = Shared {
        control: control_tx,
        log: Arc::new(std::sync::Mutex::new(log)),
        metrics,
        events,
        heartbeat_us: Arc::new(AtomicU64::new(crate::clock::now_us())),
        last_check_us: Arc::new(AtomicU64::new(crate::clock::now_us())),
        stall_after_us: Arc::new(AtomicU64::new(0)),
        notify,
        data_dir: data_dir.clone(),
        canary: crate::canary::Views::default(),
        cluster,
    };

    let core = core::Core::new(config, shared.clone(), cancel.clone(), tracker.clone(), lag, &history, persisted, registry, record_rx)?;
    drop(history);
    Ok(Prepared { core, control_rx, shared, cancel, tracker, lock, record_tx })
}

/// A daemon whose state is loaded, whose actuator kinds (the DNS server) are bound and whose
/// probes run, but whose core loop has not started deciding yet: the caller binds what it adds
/// (the API) and then calls [`Prepared::run`], or [`Prepared::abandon`] if that failed.
pub struct Prepared {
    core: core::Core,
    control_rx: mpsc::Receiver<Control>,
    shared: Shared,
    cancel: CancellationToken,
    tracker: TaskTracker,
    lock: std::fs::File,
    record_tx: mpsc::UnboundedSender<crate::events::Event>,
}

impl Prepared {
    /// Where parts outside the core (the client canary) send events to record.
    pub fn recorder(&self) -> mpsc::UnboundedSender<crate::events::Event> {
        self.record_tx.clone()
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Where to spawn tasks that must stop with the daemon.
    pub fn tasks(&self) -> (&TaskTracker, &CancellationToken) {
        (&self.tracker, &self.cancel)
    }

    /// Record the start and run the core loop.
    pub fn run(self) -> Handle {
        let Prepared { mut core, control_rx, shared, cancel, tracker, lock, record_tx: _ } = self;
        core.started();
        let core = tokio::spawn(async move {
            core.run(control_rx).await;
            drop(lock);
        });
        if let Some(n) = systemd::Notify::from_env() {
            // Every listener (API, DNS) is bound and the core runs: tell systemd we are up.
            if let Err(e) = n.send("READY=1") {
                tracing::warn!("cannot notify systemd (NOTIFY_SOCKET): {e}");
            }
            if let Some(every) = systemd::watchdog_interval() {
                tracker.spawn(watchdog(n, every, shared.heartbeat_us.clone(), cancel.clone()));
            }
        }
        Handle { shared, cancel, tracker, core }
    }

    /// Stop everything started so far (the start-up failed after this point).
    pub async fn abandon(self) {
        self.cancel.cancel();
        drop(self.core);
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Ping systemd's watchdog while the core loop turns (it beats at least once a second). A core
/// that stops turning stops the pings, and systemd restarts the daemon after `WatchdogSec=`.
async fn watchdog(n: systemd::Notify, every: std::time::Duration, heartbeat_us: Arc<AtomicU64>, cancel: CancellationToken) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let age_ms = crate::clock::now_us().saturating_sub(heartbeat_us.load(Relaxed)) / 1000;
        if age_ms < 5_000 {
            if let Err(e) = n.send("WATCHDOG=1") {
                tracing::debug!("watchdog ping failed: {e}");
            }
        } else {
            tracing::error!("the core loop last ran {age_ms} ms ago; not pinging the systemd watchdog");
        }
    }
}

/// An exclusive `flock` on `<data_dir>/lock`, held for the life of the daemon.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, DaemonError> {
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(dir).map_err(|source| DaemonError::Lock { path: dir.to_owned(), source })?;
    // On a read-only disk an existing lock file still takes the lock (flock needs no write).
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .or_else(|e| std::fs::File::open(dir.join("lock")).map_err(|_| e))
        .map_err(|source| DaemonError::Lock { path: dir.to_owned(), source })?;
    // SAFETY: flock on a file descriptor we own; no memory is shared.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(DaemonError::Locked { path: dir.to_owned() });
    }
    Ok(f)
}
