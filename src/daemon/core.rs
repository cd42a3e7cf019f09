//! The core loop: the one task that feeds every service's machine and carries out its effects.
//!
//! It reacts to four things: a check result (probe tasks), an actuator report (runners), a
//! control message (API, signals) and a deadline (an engine's failback hold or start-up grace
//! expiring). Deciding is the machines' job (`crate::service`); the core hands them their
//! inputs with the time, and carries out the [`Effect`]s they return, in order: events go to
//! the durable log (fsync'd) before the decisions they record go to the runners. It never
//! waits on a probe or an actuator, and it decides nothing itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::services::{ProbeCtx, ServiceRt};
use super::{DaemonError, Refusal, ServiceView, Shared};
use crate::actuator::registry::Registry;
use crate::actuator::runner::{self, Command};
use crate::actuator::{Current, Desired};
use crate::config::Config;
use crate::coordinator::config::ClusterConfig;
use crate::coordinator::{ClusterStatus, Coordinator, Etcd, Input, Role, Standalone};
use crate::dns::actuator::DnsKind;
use crate::drill::ledger::Ledger;
use crate::events::incident::{Incident, IncidentBook};
use crate::events::state::Persisted;
use crate::events::{Event, OverrideAction, Record};
use crate::metrics::{ResultLabels, ServiceLabels, TargetLabels};
use crate::probe::lag::LagHistogram;
use crate::probe::{now_us, scheduler};
use crate::service::{Effect, Now, Service};

/// Requests to the core. Each carries a reply channel.
pub enum Control {
    Services(oneshot::Sender<Vec<ServiceView>>),
    Incidents(oneshot::Sender<Vec<Incident>>),
    Override {
        service: String,
        target: Option<String>,
        action: OverrideAction,
        by: String,
        expires_us: Option<u64>,
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
    CloseIncident { id: u64, by: String, reply: oneshot::Sender<Result<(), Refusal>> },
    Reload { config: Box<Config>, reply: oneshot::Sender<Result<(), Refusal>> },
    ConfigRejected(String),
    DrillStart { req: crate::drill::StartRequest, reply: oneshot::Sender<Result<crate::drill::StartResponse, Refusal>> },
    DrillFinish { report: Box<crate::drill::Report>, reply: oneshot::Sender<Result<(), Refusal>> },
    /// Register a drill's undo and/or extend its lease.
    DrillLease { id: u64, undo: Option<crate::drill::Undo>, lasts: std::time::Duration, reply: oneshot::Sender<Result<crate::drill::LeaseResponse, Refusal>> },
    /// The daemon finished undoing the fault of a drill whose lease ran out.
    DrillUndone { id: u64, drill: crate::drill::ledger::Running, result: Result<String, String> },
    Drills(oneshot::Sender<Vec<crate::drill::Summary>>),
    /// The VRRP instances of this node (`[[vip]]`).
    Vips(oneshot::Sender<Vec<crate::vrrp::VipStatus>>),
    /// The cluster as this node sees it (`None` for a single node).
    Cluster(oneshot::Sender<Option<ClusterStatus>>),
}

pub struct Core {
    pub(super) config: Config,
    pub(super) shared: Shared,
    cancel: CancellationToken,
    pub(super) tracker: TaskTracker,
    pub(super) services: Vec<ServiceRt>,
    /// probe id -> its service, target and metric handles
    probes: HashMap<u64, ProbeSlot>,
    pub(super) probe_ctx: ProbeCtx,
    probe_rx: mpsc::UnboundedReceiver<scheduler::Report>,
    pub(super) reports_tx: mpsc::UnboundedSender<runner::Report>,
    reports_rx: mpsc::UnboundedReceiver<runner::Report>,
    incidents: IncidentBook,
    /// Every actuator kind the config asks for (the DNS server, hooks...).
    pub(super) registry: Registry,
    /// Events from outside the core (VRRP speakers, the client canary), recorded as they come.
    recorded: mpsc::UnboundedReceiver<Event>,
    /// Where decisions are committed and get their epoch.
    pub(super) coordinator: Box<dyn Coordinator>,
    /// What a cluster coordinator tells the core later (verdicts, commits, role); never
    /// sends for a single node.
    cluster_rx: mpsc::UnboundedReceiver<Input>,
    /// Kept so that `cluster_rx` stays open for a single node.
    _cluster_tx: mpsc::UnboundedSender<Input>,
    /// Running drills, their faults and leases, and finished drills.
    pub(super) drills: Ledger,
    /// Whether the event log is behind the disk, and what the metrics last saw of it.
    log_watch: LogWatch,
}

/// Check results the core handles in one turn before it looks at its other inputs again.
const RESULT_BATCH: usize = 256;

/// The earlier of two deadlines, `None` being "never".
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// A timer instant for `deadline`; for none, one far enough away never to fire (the branch
/// that waits on it is disabled then anyway).
fn far_or(deadline: Option<Instant>) -> tokio::time::Instant {
    match deadline {
        Some(d) => tokio::time::Instant::from_std(d),
        None => tokio::time::Instant::now() + std::time::Duration::from_secs(86_400 * 365),
    }
}

/// How long [`Core::record`] waits for the disk before it goes on without it.
pub const LOG_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// What the core keeps per running probe so that a result costs no lookup by name: the service
/// and target it checks, and its metric series, each taken from its family at first use (a
/// series appears in `/metrics` once it has a sample, as before).
struct ProbeSlot {
    si: usize,
    /// The target's index in its service's machine (`Service::target_index`): the probes are
    /// indexed again after every reload, the only thing that moves targets.
    ti: usize,
    target: String,
    duration: Option<prometheus_client::metrics::histogram::Histogram>,
    /// `understudy_checks_total` by outcome: pass, fail, checker_error.
    outcomes: [Option<prometheus_client::metrics::counter::Counter>; 3],
    /// Whether the last result carried a replication lag (its series is then shown); true at
    /// start so that a series left from before a reload is removed by the first result.
    lag_shown: bool,
}

#[derive(Default)]
struct LogWatch {
    /// Since when the log is behind (a `log_behind` event was recorded).
    behind_since: Option<Instant>,
    /// Write errors already counted in the metrics.
    errors_counted: u64,
}

/// How long a restarted daemon waits for a running drill's client to renew its lease.
const DRILL_RESTART_GRACE_US: u64 = 15_000_000;

/// The only place the core reads the clocks; machines get the time as a parameter.
pub(super) fn now() -> Now {
    Now { mono: tokio::time::Instant::now().into_std(), wall_us: now_us() }
}

impl Core {
    #[allow(clippy::too_many_arguments)] // each is a distinct piece of the daemon's runtime
    pub fn new(
        config: Config,
        shared: Shared,
        cancel: CancellationToken,
        tracker: TaskTracker,
        lag: Arc<LagHistogram>,
        history: &crate::events::log::History,
        persisted: Persisted,
        registry: Registry,
        recorded: mpsc::UnboundedReceiver<Event>,
    ) -> Result<Core, DaemonError> {
        let mut incidents = history.state.incidents.clone();
        let mut drills = history.state.drills.clone();
        for r in &history.records {
            incidents.apply(r);
            drills.apply(r);
        }
        drills.restarted(now_us(), DRILL_RESTART_GRACE_US);
        let (probe_tx, probe_rx) = mpsc::unbounded_channel();
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        let probe_ctx = ProbeCtx { tracker: tracker.clone(), cancel: cancel.clone(), results: probe_tx, lag, next_id: 0 };
        let (cluster_tx, cluster_rx) = mpsc::unbounded_channel();
        let coordinator: Box<dyn Coordinator> = match &config.cluster {
            ClusterConfig::Standalone => Box::new(Standalone::new(persisted.decisions.iter().map(|(s, r)| (s.clone(), r.epoch)))),
            ClusterConfig::Etcd(cfg) => Box::new(Etcd::start(cfg.clone(), cluster_tx.clone()).map_err(DaemonError::Cluster)?),
        };
        let mut core = Core {
            config: config.clone(),
            shared,
            cancel,
            tracker,
            services: Vec::new(),
            probes: HashMap::new(),
            probe_ctx,
            probe_rx,
            reports_tx,
            reports_rx,
            incidents,
            registry,
            recorded,
            coordinator,
            cluster_rx,
            _cluster_tx: cluster_tx,
            drills,
            log_watch: LogWatch::default(),
        };
        core.set_stall_threshold();
        let t = now().mono;
        for cfg in config.services {
            let restored = persisted.decisions.get(&cfg.name).cloned();
            let overrides = persisted.overrides.get(&cfg.name).cloned().unwrap_or_default();
            let health = persisted.health.get(&cfg.name).cloned().unwrap_or_default();
            let machine = Service::new(cfg, restored, overrides, &health, t);
            let svc = ServiceRt::start(machine, &mut core.probe_ctx, &core.tracker, &core.reports_tx, &core.registry, core.shared.cluster.as_ref().map(|c| &c.leading))?;
            core.shared.metrics.publish_service(&svc.machine.status());
            core.services.push(svc);
        }
        core.index_probes();
        Ok(core)
    }

    /// This node's "I lead" flag in a cluster (`None` for a single node, which always acts).
    pub(super) fn leading(&self) -> Option<&Arc<std::sync::atomic::AtomicBool>> {
        self.shared.cluster.as_ref().map(|c| &c.leading)
    }

    /// Checks count as stalled when none arrived for 3 intervals + timeout of the slowest
    /// check (at least 5 s).
    pub(super) fn set_stall_threshold(&self) {
        let worst = self.config.services.iter().map(|s| s.check.interval * 3 + s.check.timeout).max();
        let us = worst.map(|w| w.max(std::time::Duration::from_secs(5)).as_micros() as u64).unwrap_or(0);
        self.shared.stall_after_us.store(us, Ordering::Relaxed);
    }

    /// Record the start (after construction, so a failed start leaves no event).
    pub fn started(&mut self) {
        let config = self.config.source.display().to_string();
        self.record(Event::DaemonStarted { version: env!("CARGO_PKG_VERSION").into(), pid: std::process::id(), config });
    }

    /// The earliest deadline of any service's engine.
    fn next_deadline(&self) -> Option<Instant> {
        self.services.iter().filter_map(|s| s.machine.next_deadline()).min()
    }

    pub(super) fn index_probes(&mut self) {
        self.probes.clear();
        for (si, s) in self.services.iter().enumerate() {
            for (name, p) in &s.probes {
                let Some(ti) = s.machine.target_index(name) else { continue };
                self.probes.insert(p.id, ProbeSlot { si, ti, target: name.clone(), duration: None, outcomes: [None, None, None], lag_shown: true });
            }
        }
    }

    /// What each decided service serves now, for actuator kinds that start serving a service
    /// mid-run (a DNS record added by reload).
    pub(super) fn current(&self) -> HashMap<String, Current> {
        let current = |s: &ServiceRt| s.machine.current().map(|(epoch, active)| (s.name.to_string(), Current { epoch, active }));
        self.services.iter().filter_map(current).collect()
    }

    pub async fn run(mut self, mut control: mpsc::Receiver<Control>) {
        let mut heartbeat = tokio::time::interval(std::time::Duration::from_secs(1));
        // Services whose every target has a restored verdict decide (reconcile) at once.
        self.tick_all();
        // Made once: a fresh future per turn would register a waiter on the token each time.
        let cancel = self.cancel.clone();
        let cancelled = cancel.cancelled();
        tokio::pin!(cancelled);
        // The earliest engine deadline (a failback hold, the start-up grace). After a check
        // result only its own service's deadline can have changed, so it is folded in rather
        // than recomputed over every service (at 10,000 results a second across 1,000 services
        // that recomputation was a fifth of the daemon's CPU). It can therefore be early (a
        // deadline that moved later), never late: an early wake-up ticks services with nothing
        // due, which changes nothing, and recomputes it.
        let mut deadline = self.next_deadline();
        let sleep = tokio::time::sleep_until(far_or(deadline));
        tokio::pin!(sleep);
        let mut armed = deadline;
        loop {
            self.shared.heartbeat_us.store(now_us(), Ordering::Relaxed);
            if armed != deadline {
                sleep.as_mut().reset(far_or(deadline));
                armed = deadline;
            }
            let mut recompute = true;
            tokio::select! {
                biased;
                _ = &mut cancelled => break,
                Some(r) = self.reports_rx.recv() => self.on_actuated(r),
                Some(i) = self.cluster_rx.recv() => self.on_cluster(i),
                Some(c) = control.recv() => self.on_control(c),
                Some(e) = self.recorded.recv() => {
                    self.record(e);
                }
                Some(r) = self.probe_rx.recv() => {
                    recompute = false;
                    // This result and those already waiting, up to a bound so the other
                    // inputs are not starved.
                    let mut next = Some(r);
                    let mut handled = 0;
                    while let Some(r) = next {
                        let t = Instant::now();
                        if let Some(si) = self.on_check(r) {
                            deadline = earliest(deadline, self.services[si].machine.next_deadline());
                        }
                        self.shared.metrics.core_result(t.elapsed(), self.probe_rx.len());
                        handled += 1;
                        next = if handled < RESULT_BATCH { self.probe_rx.try_recv().ok() } else { None };
                    }
                }
                _ = &mut sleep, if deadline.is_some() => {
                    self.tick_all();
                    // Re-arm even when the deadline comes out the same.
                    armed = None;
                }
                _ = heartbeat.tick() => {
                    // A leader whose commit the cluster refused proposes again.
                    if self.leading().is_some_and(|l| l.load(Ordering::Acquire)) {
                        self.tick_all();
                    }
                    self.expire_forces();
                    self.expire_drill_leases();
                    self.watch_log();
                }
            }
            if recompute {
                deadline = self.next_deadline();
            }
        }
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        // Stop the runners' inputs; a runner finishes the apply it is in, then ends.
        let services = std::mem::take(&mut self.services);
        drop(services);
        // Collect reports of applies that finish during shutdown, so they are recorded.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let (tx, _) = mpsc::unbounded_channel();
        let _ = std::mem::replace(&mut self.reports_tx, tx);
        while let Ok(Some(r)) = tokio::time::timeout_at(deadline, self.reports_rx.recv()).await {
            self.on_actuated(r);
        }
        self.registry.shutdown().await;
        // Hand leadership over now rather than when the lease lapses.
        self.coordinator.release();
        self.record(Event::DaemonStopped { reason: "shutdown requested".into() });
        let (durability, last) = {
            let log = self.shared.log.lock().unwrap_or_else(|e| e.into_inner());
            (log.durability(), log.next_seq() - 1)
        };
        if !durability.wait(last, std::time::Duration::from_secs(5)) {
            let st = durability.status();
            tracing::error!(behind = st.behind, "stopping with events the disk has not taken: they are lost");
        }
    }

    /// Append to the durable log, then fold into incidents and metrics, then announce. The
    /// log's writer thread does the I/O; this waits for it at most [`LOG_WAIT`] (counted from
    /// the oldest event still waiting), then goes on without it: failing over matters more than
    /// the log. The writer hands the record to the notification dispatcher once it is on disk.
    pub(super) fn record(&mut self, event: Event) -> Record {
        let time_us = now_us();
        let (record, durability) = {
            let mut log = self.shared.log.lock().unwrap_or_else(|e| e.into_inner());
            (log.append(event, time_us), log.durability())
        };
        // What the runners, an operator or a restart act on (a decision, an override, a drill,
        // an incident...) is on disk before the core goes on. Observations (a health flip, a
        // checker error, an actuator's report) are not waited for one by one: they are re-derived
        // from checks after a crash, and the log is written in order, so the next event that is
        // waited for (the decision a flip leads to) covers them. Waiting for each would cost one
        // fsync per event on the core: 10,000 targets coming up at start took minutes. A disk
        // that stops taking them is still noticed once a second (`watch_log`).
        let observation = matches!(
            record.event,
            Event::TargetUp { .. } | Event::TargetDown { .. } | Event::CheckerError { .. } | Event::Actuated { .. } | Event::Switched { .. } | Event::DriftRepaired { .. }
        );
        // The wait blocks this thread for up to LOG_WAIT (an fsync): on a multi-threaded runtime
        // the worker's other tasks (probes, the API) move to another thread meanwhile rather
        // than stall behind it. A current-thread runtime (some tests) cannot do that and waits.
        if !observation {
            let multi = tokio::runtime::Handle::try_current().is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
            let durable = if multi { tokio::task::block_in_place(|| durability.wait(record.seq, LOG_WAIT)) } else { durability.wait(record.seq, LOG_WAIT) };
            if !durable {
                self.log_fell_behind();
            }
        }
        tracing::info!(seq = record.seq, kind = record.event.kind(), "{}", record.event.summary());
        self.shared.metrics.observe(&record.event);
        let follow = self.incidents.react(&record);
        self.incidents.apply(&record);
        let _ = self.shared.events.send(record.clone());
        for e in follow {
            self.record(e);
        }
        if let Some(s) = record.event.service() {
            let open = self.incidents.open_for(s).is_some();
            self.shared.metrics.open_incidents.get_or_create(&ServiceLabels { service: s.into() }).set(open as i64);
        }
        record
    }

    /// Carry out a machine's effects, in order.
    pub(super) fn effects(&mut self, si: usize, fx: Vec<Effect>) {
        let mut changed = false;
        for e in fx {
            match e {
                Effect::Record(event) => {
                    changed |= matches!(event, Event::TargetUp { .. } | Event::TargetDown { .. } | Event::Decision { .. } | Event::Override { .. });
                    self.record(event);
                }
                Effect::Actuate(a) => {
                    let svc = &self.services[si];
                    // `decided_at` is now: the decision was recorded just before.
                    let desired = Desired { service: svc.name.clone(), epoch: a.epoch, active: a.active, previous: a.previous, reason: a.reason, all_down: a.all_down, decided_at: now().mono };
                    let cmd = Command { desired, actuators: svc.actuators.clone(), verify_every: svc.machine.config().verify_every };
                    svc.runner.send_replace(Some(cmd));
                }
                Effect::Cadence { target, cadence } => {
                    if let Some(p) = self.services[si].probes.get(&target) {
                        p.cadence.send_if_modified(|c| std::mem::replace(c, cadence) != cadence);
                    }
                }
                Effect::Suspect { target, address, suspect, reason } => {
                    let service = self.services[si].name.clone();
                    if self.registry.suspect(&service, address, suspect) && suspect {
                        self.shared.metrics.dns_suspect.get_or_create(&ServiceLabels { service: service.to_string() }).inc();
                        tracing::info!(%service, %target, %reason, "dns: target suspect; answering with suspect_ttl until it passes rise checks");
                    }
                }
                Effect::Health { target, health } => self.registry.health(&self.services[si].name, &target, health),
                Effect::Refused { epoch, why } if self.shared.cluster.is_some() => tracing::info!(service = %self.services[si].name, epoch, "decision not committed: {why}"),
                Effect::Refused { epoch, why } => tracing::warn!(service = %self.services[si].name, epoch, "decision not committed: {why}"),
            }
        }
        if changed {
            self.shared.metrics.publish_service(&self.services[si].machine.status());
        }
    }

    /// One probe result; returns the index of its service when the result changed something
    /// (it had effects: a flip, the only thing that moves the engine and so its deadline, always
    /// records an event), `None` when it only fed health.
    fn on_check(&mut self, report: scheduler::Report) -> Option<usize> {
        let Some(slot) = self.probes.get_mut(&report.id) else {
            return None; // a probe stopped by a reload
        };
        let si = slot.si;
        let result = report.result;
        self.shared.last_check_us.store(now_us(), Ordering::Relaxed);
        let m = &self.shared.metrics;
        let service = &self.services[si].name;
        slot.duration.get_or_insert_with(|| m.check_duration.get_or_create(&ServiceLabels { service: service.to_string() }).clone()).observe(result.latency.as_secs_f64());
        let (i, outcome) = match (result.ok, result.checker_error) {
            (true, _) => (0, "pass"),
            (false, false) => (1, "fail"),
            (false, true) => (2, "checker_error"),
        };
        slot.outcomes[i].get_or_insert_with(|| m.checks.get_or_create(&ResultLabels { service: service.to_string(), result: outcome.into() }).clone()).inc();
        // Checks that measure no lag (most) touch no lag series; one that stopped measuring it
        // (a promoted replica) has its series removed once.
        if result.lag.is_some() || slot.lag_shown {
            m.replication_lag(service, &slot.target, result.lag);
            slot.lag_shown = result.lag.is_some();
        }
        if result.checker_error {
            m.checker_errors.get_or_create(&TargetLabels { service: service.to_string(), target: slot.target.clone() }).inc();
        }
        let fx = self.services[si].machine.on_check_at(slot.ti, result, now(), self.coordinator.as_mut());
        let changed = !fx.is_empty();
        self.effects(si, fx);
        changed.then_some(si)
    }

    /// The disk did not take an event within the bound: say so once (status, metric, event).
    fn log_fell_behind(&mut self) {
        if self.log_watch.behind_since.is_some() {
            return;
        }
        self.log_watch.behind_since = Some(Instant::now());
        let st = self.shared.log.lock().unwrap_or_else(|e| e.into_inner()).status();
        self.shared.metrics.event_log_behind.set(st.behind as i64);
        tracing::error!(behind = st.behind, "the event log's disk did not answer within {LOG_WAIT:?}; going on without waiting");
        self.record(Event::LogBehind { behind: st.behind, error: st.error });
    }

    /// Once a second: publish how far the log is behind, count write errors, and record when
    /// it has caught up.
    fn watch_log(&mut self) {
        let st = self.shared.log.lock().unwrap_or_else(|e| e.into_inner()).status();
        let m = &self.shared.metrics;
        m.event_log_behind.set(st.behind as i64);
        m.event_log_errors.inc_by(st.write_errors.saturating_sub(self.log_watch.errors_counted));
        self.log_watch.errors_counted = st.write_errors;
        if st.behind > 0 && st.oldest_pending_ms >= LOG_WAIT.as_millis() as u64 {
            self.log_fell_behind();
        } else if st.behind == 0
            && let Some(since) = self.log_watch.behind_since.take()
        {
            self.record(Event::LogCaughtUp { behind_ms: since.elapsed().as_millis() as u64 });
        }
    }

    /// Lift force-downs whose time is up (a drill that died cannot leave one behind). In a
    /// cluster the leader lifts them and every node learns it through etcd.
    fn expire_forces(&mut self) {
        if self.leading().is_some_and(|l| !l.load(Ordering::Acquire)) {
            return;
        }
        for si in 0..self.services.len() {
            let before = self.services[si].machine.overrides().forced.clone();
            let fx = self.services[si].machine.expire_forces(now(), self.coordinator.as_mut());
            self.effects(si, fx);
            let after = &self.services[si].machine.overrides().forced;
            if let Some(lifted) = before.keys().find(|t| !after.contains_key(*t)).cloned() {
                self.share_overrides(si, Some(&lifted), OverrideAction::Unforce, "expiry", None);
            }
        }
    }

    /// In a cluster, every node takes the overrides `si`'s machine has now (the leader decides
    /// with them); `target`/`action`/`by` name the command that changed them.
    fn share_overrides(&mut self, si: usize, target: Option<&str>, action: OverrideAction, by: &str, expires_us: Option<u64>) {
        if self.shared.cluster.is_none() {
            return;
        }
        let node = self.coordinator.status().map(|s| s.node).unwrap_or_default();
        let change = crate::coordinator::OverrideChange {
            overrides: self.services[si].machine.overrides().clone(),
            target: target.map(str::to_string),
            action,
            by: by.to_string(),
            expires_us,
            node,
        };
        let service = self.services[si].name.to_string();
        if let Err(why) = self.coordinator.share(&service, change) {
            tracing::error!(%service, "the override was taken here but not shared with the cluster: {why}");
        }
    }

    pub(super) fn tick_all(&mut self) {
        for si in 0..self.services.len() {
            let fx = self.services[si].machine.tick(now(), self.coordinator.as_mut());
            self.effects(si, fx);
        }
    }

    /// What a cluster coordinator reports: the cluster's verdicts, committed decisions (this
    /// node's or the leader's), refused proposals, and this node's role.
    fn on_cluster(&mut self, input: Input) {
        let service_index = |core: &Core, name: &str| core.services.iter().position(|s| &*s.name == name);
        match input {
            Input::Verdict { service, target, health } => {
                if let Some(si) = service_index(self, &service) {
                    let fx = self.services[si].machine.on_verdict(&target, health, now(), self.coordinator.as_mut());
                    self.effects(si, fx);
                }
            }
            Input::Committed { service, epoch, active, all_down, reason, by, revision } => match service_index(self, &service) {
                Some(si) => {
                    let fx = self.services[si].machine.adopt(epoch, active.as_deref(), all_down, reason, &by, now());
                    // An incident this decision opens has the same id on every node.
                    self.incidents.set_id_hint(Some(revision).filter(|r| *r > 0));
                    self.effects(si, fx);
                    self.incidents.set_id_hint(None);
                }
                None => tracing::warn!(%service, epoch, %by, "the cluster committed a decision for a service this node does not have (every node must run the same services)"),
            },
            Input::Refused { service, epoch, why } => {
                if let Some(si) = service_index(self, &service) {
                    let fx = self.services[si].machine.refused(epoch, why);
                    self.effects(si, fx);
                }
            }
            Input::Role(role) => self.on_role(role),
            Input::Overrides { service, change } => {
                if let Some(si) = service_index(self, &service) {
                    let fx = self.services[si].machine.adopt_overrides(&change, now(), self.coordinator.as_mut());
                    self.effects(si, fx);
                }
            }
        }
    }

    /// This node's role changed: record it, let outside actuators act only while leading, and
    /// when this node starts leading, re-issue every decision so that they apply it.
    fn on_role(&mut self, role: Role) {
        let Some(cluster) = self.shared.cluster.clone() else { return };
        let was = cluster.leading.swap(role.leading, Ordering::AcqRel);
        *cluster.role.lock().unwrap_or_else(|e| e.into_inner()) = role.clone();
        self.shared.metrics.cluster_role(role.leading, role.connected);
        let node = self.coordinator.status().map(|s| s.node).unwrap_or_default();
        self.record(Event::ClusterRole { node, leader: role.leader.clone(), leading: role.leading, connected: role.connected, why: role.why.clone() });
        if role.leading && !was {
            for si in 0..self.services.len() {
                let fx = self.services[si].machine.take_over(now(), self.coordinator.as_mut());
                self.effects(si, fx);
            }
            self.tick_all();
        }
    }

    /// Every actuator report becomes an event.
    fn on_actuated(&mut self, r: runner::Report) {
        let event = match r {
            runner::Report::Done { service, epoch, ok, steps, duration_us } => Event::Switched { service: service.to_string(), epoch, ok, steps, duration_us },
            runner::Report::Drift(d) => {
                Event::DriftRepaired { service: d.service.to_string(), epoch: d.epoch, actuator: d.actuator, drift: d.drift, ok: d.repair.ok, detail: d.repair.detail }
            }
            runner::Report::Step(r) => Event::Actuated {
                service: r.service.to_string(),
                epoch: r.epoch,
                actuator: r.actuator,
                step: r.step,
                ok: r.outcome.ok,
                detail: r.outcome.detail,
                duration_us: r.duration_us,
            },
        };
        self.record(event);
    }

    fn on_control(&mut self, c: Control) {
        match c {
            Control::Services(reply) => {
                let _ = reply.send(self.views());
            }
            Control::Incidents(reply) => {
                let _ = reply.send(self.incidents.all().rev().cloned().collect());
            }
            Control::Override { service, target, action, by, expires_us, reply } => {
                let _ = reply.send(self.operate(&service, target.as_deref(), action, &by, expires_us));
            }
            Control::CloseIncident { id, by, reply } => {
                let _ = reply.send(self.close_incident(id, by));
            }
            Control::Reload { config, reply } => {
                let _ = reply.send(self.reload(*config));
            }
            Control::ConfigRejected(errors) => {
                self.record(Event::ConfigRejected { errors });
            }
            Control::DrillStart { req, reply } => {
                let _ = reply.send(self.drill_start(req));
            }
            Control::DrillFinish { report, reply } => {
                let _ = reply.send(self.drill_finish(*report));
            }
            Control::DrillLease { id, undo, lasts, reply } => {
                let _ = reply.send(self.drill_lease(id, undo, lasts));
            }
            Control::DrillUndone { id, drill, result } => self.drill_undone(id, drill, result),
            Control::Drills(reply) => {
                let _ = reply.send(self.drills.summaries().to_vec());
            }
            Control::Cluster(reply) => {
                let _ = reply.send(self.coordinator.status());
            }
            Control::Vips(reply) => {
                let _ = reply.send(self.registry.get::<crate::vrrp::VipKind>().map(|k| k.status()).unwrap_or_default());
            }
        }
    }

    fn close_incident(&mut self, id: u64, by: String) -> Result<(), Refusal> {
        match self.incidents.get(id) {
            None => Err(Refusal::NoIncident(id)),
            Some(i) if !i.open => Err(Refusal::Conflict(format!("incident #{id} is already closed"))),
            Some(i) => {
                let service = i.service.clone();
                self.record(Event::IncidentClosed { id, service, by });
                Ok(())
            }
        }
    }

    pub(super) fn operate(&mut self, service: &str, target: Option<&str>, action: OverrideAction, by: &str, expires_us: Option<u64>) -> Result<(), Refusal> {
        let si = self.services.iter().position(|s| &*s.name == service).ok_or_else(|| Refusal::NoService(service.into()))?;
        self.coordinator.may_operate().map_err(Refusal::Conflict)?;
        let fx = self.services[si].machine.operate(target, action, by, expires_us, now(), self.coordinator.as_mut())?;
        self.effects(si, fx);
        self.share_overrides(si, target, action, by, expires_us);
        Ok(())
    }

    /// What the API shows of every service: each machine's status, and what the runtime adds
    /// (what each probe checks, the open incident, what the DNS server serves).
    fn views(&self) -> Vec<ServiceView> {
        let dns = self.registry.get::<DnsKind>().map(|k| k.dns.status()).unwrap_or_default();
        self.services
            .iter()
            .map(|s| ServiceView {
                status: s.machine.status(),
                config: s.machine.config().clone(),
                checks: s.probes.iter().map(|(t, p)| (t.clone(), p.describe.clone())).collect(),
                open_incident: self.incidents.open_for(&s.name).map(|i| i.id),
                dns: dns.iter().filter(|r| *r.service == *s.name).cloned().collect(),
                canary: Vec::new(),
            })
            .collect()
    }
}
