//! The core loop: the one task that owns health, engines, overrides and incidents.
//!
//! It reacts to four things: a check result (probe tasks), an actuator report (runners), a
//! control message (API, signals) and a deadline (an engine's failback hold or start-up grace
//! expiring). For each, it updates the pure state machines, writes the resulting events to the
//! durable log (fsync'd) and only then announces them and hands decisions to the runners.
//! It never waits on a probe or an actuator.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::services::{self, ProbeCtx, ServiceRt, TargetRt};
use super::{DaemonError, Refusal, Shared};
use crate::actuator::runner::{self, Command};
use crate::actuator::registry::Registry;
use crate::actuator::{Current, Desired, TargetRef};
use crate::api::wire;
use crate::config::{CheckKind, Config};
use crate::decision::{Decision, Reason};
use crate::dns::actuator::DnsKind;
use crate::drill::ledger::Ledger;
use crate::events::incident::IncidentBook;
use crate::events::state::Persisted;
use crate::events::{CHECK_SAMPLES, CheckSample, Event, OverrideAction, Record, Step, format_time_us};
use crate::health::{Health, HealthState};
use crate::metrics::{ActuatorLabels, ReasonLabels, ResultLabels, ServiceLabels, TargetLabels};
use crate::probe::lag::LagHistogram;
use crate::probe::{now_us, scheduler};

/// Requests to the core. Each carries a reply channel.
pub enum Control {
    Services(oneshot::Sender<Vec<wire::Service>>),
    Incidents(oneshot::Sender<Vec<wire::Incident>>),
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
    /// An event observed outside the core (the client canary's): record it like any other.
    Record(Event),
}

pub struct Core {
    config: Config,
    shared: Shared,
    cancel: CancellationToken,
    tracker: TaskTracker,
    services: Vec<ServiceRt>,
    /// probe id -> (service index, target index)
    probes: HashMap<u64, (usize, usize)>,
    probe_ctx: ProbeCtx,
    probe_rx: mpsc::UnboundedReceiver<scheduler::Report>,
    reports_tx: mpsc::UnboundedSender<runner::Report>,
    reports_rx: mpsc::UnboundedReceiver<runner::Report>,
    incidents: IncidentBook,
    /// The last few check results per probe id, carried by health flips into incident reports.
    recent_checks: HashMap<u64, std::collections::VecDeque<CheckSample>>,
    /// Every actuator kind the config asks for (the DNS server, hooks...).
    registry: Registry,
    /// Running drills, their faults and leases, and finished drills.
    drills: Ledger,
    /// Whether the event log is behind the disk, and what the metrics last saw of it.
    log_watch: LogWatch,
}

/// How long [`Core::record`] waits for the disk before it goes on without it.
pub const LOG_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

#[derive(Default)]
struct LogWatch {
    /// Since when the log is behind (a `log_behind` event was recorded).
    behind_since: Option<Instant>,
    /// Write errors already counted in the metrics.
    errors_counted: u64,
}

/// How long a restarted daemon waits for a running drill's client to renew its lease.
const DRILL_RESTART_GRACE_US: u64 = 15_000_000;

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
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
    ) -> Result<Core, DaemonError> {
        let mut incidents = history.state.incidents.clone();
        for r in &history.records {
            incidents.apply(r);
        }
        let (probe_tx, probe_rx) = mpsc::unbounded_channel();
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        let probe_ctx = ProbeCtx { tracker: tracker.clone(), cancel: cancel.clone(), results: probe_tx, lag, next_id: 0 };
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
            recent_checks: HashMap::new(),
            registry,
            drills: history.state.drills.clone(),
            log_watch: LogWatch::default(),
        };
        for r in &history.records {
            core.drills.apply(r);
        }
        core.drills.restarted(now_us(), DRILL_RESTART_GRACE_US);
        core.set_stall_threshold();
        let t = now();
        for cfg in config.services {
            let restored = persisted.decisions.get(&cfg.name).cloned();
            let overrides = persisted.overrides.get(&cfg.name).cloned().unwrap_or_default();
            let health = persisted.health.get(&cfg.name).cloned().unwrap_or_default();
            let svc = services::build(cfg, restored, overrides, &health, &mut core.probe_ctx, &core.tracker, &core.reports_tx, &core.registry, t)?;
            core.services.push(svc);
        }
        core.index_probes();
        for svc in &core.services {
            core.publish_static_metrics(svc);
        }
        Ok(core)
    }

    /// Checks count as stalled when none arrived for 3 intervals + timeout of the slowest
    /// check (at least 5 s).
    fn set_stall_threshold(&self) {
        let worst = self.services.iter().map(|s| s.cfg.check.interval * 3 + s.cfg.check.timeout).max();
        let us = worst.map(|w| w.max(std::time::Duration::from_secs(5)).as_micros() as u64).unwrap_or(0);
        self.shared.stall_after_us.store(us, Ordering::Relaxed);
    }

    fn drill_start(&mut self, req: crate::drill::StartRequest) -> Result<crate::drill::StartResponse, Refusal> {
        if !self.services.iter().any(|s| s.cfg.name == req.service) {
            return Err(Refusal::NoService(req.service));
        }
        if let Some(id) = self.drills.blocking(&req.service, now_us()) {
            return Err(Refusal::Conflict(format!("drill #{id} of {} is still running", req.service)));
        }
        let (service, fault) = (req.service.clone(), req.fault.clone());
        let r = self.record(Event::DrillStarted { service: req.service, fault: req.fault, target: req.target, by: req.by });
        self.drills.started(r.seq, &service, &fault, r.time_us);
        Ok(crate::drill::StartResponse { id: r.seq, targets: self.config.drill.targets, since: r.seq })
    }

    fn drill_finish(&mut self, report: crate::drill::Report) -> Result<(), Refusal> {
        if self.drills.running(report.id).is_none() {
            return Err(Refusal::Conflict(format!("drill #{} is not running", report.id)));
        }
        let dir = self.config.daemon.data_dir.join("drills");
        let stem = dir.join(format!("drill-{}", report.id));
        let json = serde_json::to_string_pretty(&report).expect("reports serialize");
        let written = std::fs::create_dir_all(&dir)
            .and_then(|_| write_durably(&stem.with_extension("json"), json.as_bytes()))
            .and_then(|_| write_durably(&stem.with_extension("md"), crate::drill::report::markdown(&report).as_bytes()));
        if let Err(e) = written {
            tracing::error!("cannot store the report of drill #{} in {}: {e}", report.id, dir.display());
        }
        let summary = crate::drill::Summary::from(&report);
        self.record(Event::DrillFinished {
            id: report.id,
            service: report.service.clone(),
            ok: report.ok,
            detection_ms: report.detection_ms,
            switch_ms: report.switch_ms,
            rto_ms: report.rto_ms(),
            missed: report.missed.clone(),
            error: report.error.clone(),
        });
        self.drills.finished(summary);
        Ok(())
    }

    /// Register a drill's undo (recorded before the client installs its fault) and extend its
    /// lease.
    fn drill_lease(&mut self, id: u64, undo: Option<crate::drill::Undo>, lasts: std::time::Duration) -> Result<crate::drill::LeaseResponse, Refusal> {
        let until = now_us().saturating_add(lasts.as_micros() as u64);
        let new_undo = self.drills.lease(id, undo.as_ref(), until).map_err(|e| Refusal::Conflict(e.to_string()))?;
        if new_undo && let (Some(undo), Some(d)) = (undo, self.drills.running(id)) {
            let service = d.service.clone();
            self.record(Event::DrillFault { id, service, undo });
        }
        let expires = self.drills.running(id).and_then(|d| d.lease_until_us).unwrap_or(until);
        Ok(crate::drill::LeaseResponse { id, expires: format_time_us(expires) })
    }

    /// Undo the faults of drills whose client stopped renewing its lease (killed, disconnected).
    /// A force-down is lifted here; a command runs in its own task and reports back with
    /// [`Control::DrillUndone`], so the core never waits on it.
    fn expire_drill_leases(&mut self) {
        for (id, d) in self.drills.expired(now_us()) {
            tracing::warn!("drill #{id} of {}: its client stopped renewing its lease; undoing its fault", d.service);
            match d.undo.clone() {
                None => self.drill_undone(id, d, Ok("no fault was registered".into())),
                Some(crate::drill::Undo::Unforce { target }) => {
                    let result = self
                        .operate(&d.service, Some(&target), OverrideAction::Unforce, &format!("drill #{id} lease expiry"), None)
                        .map(|_| format!("lifted the force-down of {target}"))
                        .map_err(|e| e.to_string());
                    self.drill_undone(id, d, result);
                }
                Some(undo) => {
                    let cmd = undo.command().unwrap_or_default();
                    let control = self.shared.control.clone();
                    self.tracker.spawn(async move {
                        let argv = vec!["/bin/sh".to_string(), "-c".to_string(), cmd.clone()];
                        let out = crate::process::run(&argv, &[], std::time::Duration::from_secs(120), 4096).await;
                        let result = if out.ok { Ok(format!("ran `{cmd}`")) } else { Err(format!("`{cmd}` failed: {}", out.summary())) };
                        let _ = control.send(Control::DrillUndone { id, drill: d, result }).await;
                    });
                }
            }
        }
    }

    /// Record the end of a drill whose fault the daemon undid (its client went away).
    fn drill_undone(&mut self, id: u64, d: crate::drill::ledger::Running, result: Result<String, String>) {
        let error = match result {
            Ok(what) => format!("the drill's client stopped renewing its lease (killed or disconnected); the daemon undid the fault: {what}"),
            Err(e) => format!("the drill's client stopped renewing its lease and UNDOING THE FAULT FAILED, undo it by hand: {e}"),
        };
        let service = d.service;
        let summary = crate::drill::Summary {
            id,
            service: service.clone(),
            fault: d.fault,
            started: format_time_us(d.started_us),
            ok: false,
            detection_ms: None,
            switch_ms: None,
            rto_ms: None,
            missed: Vec::new(),
            error: Some(error.clone()),
        };
        self.record(Event::DrillFinished { id, service, ok: false, detection_ms: None, switch_ms: None, rto_ms: None, missed: Vec::new(), error: Some(error) });
        self.drills.finished(summary);
    }

    /// Record the start (after construction, so a failed start leaves no event).
    pub fn started(&mut self) {
        let config = self.config.source.display().to_string();
        self.record(Event::DaemonStarted { version: env!("CARGO_PKG_VERSION").into(), pid: std::process::id(), config });
    }

    fn index_probes(&mut self) {
        self.probes.clear();
        for (si, s) in self.services.iter().enumerate() {
            for (ti, t) in s.targets.iter().enumerate() {
                self.probes.insert(t.probe_id, (si, ti));
            }
        }
        self.recent_checks.retain(|id, _| self.probes.contains_key(id));
    }

    /// What each decided service serves now, for actuator kinds that start serving a service
    /// mid-run (a DNS record added by reload).
    fn current(&self) -> HashMap<String, Current> {
        self.services
            .iter()
            .filter(|s| s.engine.has_decided())
            .map(|s| (s.cfg.name.clone(), Current { epoch: s.engine.epoch(), active: s.engine.active().map(|a| s.targets[a].cfg.address) }))
            .collect()
    }

    pub async fn run(mut self, mut control: mpsc::Receiver<Control>) {
        let mut heartbeat = tokio::time::interval(std::time::Duration::from_secs(1));
        // Services whose every target has a restored verdict decide (reconcile) at once.
        self.evaluate_all();
        loop {
            self.shared.heartbeat_us.store(now_us(), Ordering::Relaxed);
            let deadline = self.services.iter().filter_map(|s| s.engine.next_deadline()).min();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                Some(r) = self.reports_rx.recv() => self.on_actuated(r),
                Some(c) = control.recv() => self.on_control(c),
                Some(r) = self.probe_rx.recv() => self.on_check(r),
                _ = sleep => self.evaluate_all(),
                _ = heartbeat.tick() => {
                    self.expire_forces();
                    self.expire_drill_leases();
                    self.watch_log();
                }
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
        loop {
            match tokio::time::timeout_at(deadline, self.reports_rx.recv()).await {
                Ok(Some(r)) => self.on_actuated(r),
                Ok(None) | Err(_) => break,
            }
        }
        self.registry.shutdown().await;
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

    /// Append to the durable log, then fold into incidents, then announce. The log's writer
    /// thread does the I/O; this waits for it at most [`LOG_WAIT`] (counted from the oldest
    /// event still waiting), then goes on without it: failing over matters more than the log.
    /// The writer hands the record to the notification dispatcher once it is on disk.
    fn record(&mut self, event: Event) -> Record {
        let time_us = now_us();
        let (record, durability) = {
            let mut log = self.shared.log.lock().unwrap_or_else(|e| e.into_inner());
            (log.append(event, time_us), log.durability())
        };
        if !durability.wait(record.seq, LOG_WAIT) {
            self.log_fell_behind();
        }
        tracing::info!(seq = record.seq, kind = record.event.kind(), "{}", record.event.summary());
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

    fn on_check(&mut self, report: scheduler::Report) {
        let Some(&(si, ti)) = self.probes.get(&report.id) else {
            return; // a probe stopped by a reload
        };
        let result = report.result;
        self.shared.last_check_us.store(now_us(), Ordering::Relaxed);
        let svc = &mut self.services[si];
        let m = &self.shared.metrics;
        let labels = ServiceLabels { service: svc.cfg.name.clone() };
        m.check_duration.get_or_create(&labels).observe(result.latency.as_secs_f64());
        let outcome = match (result.ok, result.checker_error) {
            (true, _) => "pass",
            (false, true) => "checker_error",
            (false, false) => "fail",
        };
        m.checks.get_or_create(&ResultLabels { service: svc.cfg.name.clone(), result: outcome.into() }).inc();
        let th = services::thresholds(&svc.cfg.check);
        if result.checker_error {
            // The monitor's fault, not the target's: no health input (see probe::checker).
            let target = &mut svc.targets[ti];
            m.checker_errors.get_or_create(&TargetLabels { service: svc.cfg.name.clone(), target: target.cfg.name.clone() }).inc();
            let reported = target.checker_errors.admit(now_us());
            let event = reported.map(|suppressed| Event::CheckerError {
                service: svc.cfg.name.clone(),
                target: target.cfg.name.clone(),
                reason: result.reason.clone(),
                suppressed,
                resolved: false,
            });
            target.last = Some(result);
            if let Some(e) = event {
                self.record(e);
            }
            return;
        }
        if let Some(suppressed) = svc.targets[ti].checker_errors.recovered() {
            let (service, target) = (svc.cfg.name.clone(), svc.targets[ti].cfg.name.clone());
            let reason = result.reason.clone();
            self.record(Event::CheckerError { service, target, reason, suppressed, resolved: true });
        }
        let (svc, m) = (&mut self.services[si], &self.shared.metrics);
        let mut result = result;
        if svc.overrides.is_forced(&svc.targets[ti].cfg.name, now_us()) {
            result.ok = false;
            result.reason = format!("forced down (drill); the real check said: {}", result.reason);
        }
        let target = &mut svc.targets[ti];
        // A pass that took half the timeout or more (the point where a hedged attempt starts)
        // shows trouble too: it turns the target suspect without counting against its health.
        let troubled = result.ok && result.latency >= svc.cfg.check.timeout / 2;
        let was_suspect = target.health.suspect();
        let flip = target.health.observe_graded(result.ok, troubled, result.started_us, th);
        // Tell the actuators (the DNS suspicion TTL) on a flip, and at a target's first result
        // (a restored verdict may start it suspect).
        if (target.health.suspect() != was_suspect || target.last.is_none())
            && self.registry.suspect(&svc.cfg.name, target.cfg.address, target.health.suspect())
        {
            m.dns_suspect.get_or_create(&ServiceLabels { service: svc.cfg.name.clone() }).inc();
            tracing::info!(service = %svc.cfg.name, target = %target.cfg.name, reason = %result.reason, "dns: target suspect; answering with suspect_ttl until it passes rise checks");
        }
        let cadence = target.health.cadence(th);
        target.cadence.send_if_modified(|c| std::mem::replace(c, cadence) != cadence);
        let reason = result.reason.clone();
        let recent = self.recent_checks.entry(report.id).or_default();
        if recent.len() == CHECK_SAMPLES {
            recent.pop_front();
        }
        let latency_us = result.latency.as_micros() as u64;
        recent.push_back(CheckSample { at_us: result.started_us, ok: result.ok, latency_us, reason: reason.clone() });
        target.last = Some(result);
        let Some(flip) = flip else { return };
        let checks: Vec<CheckSample> = recent.iter().cloned().collect();
        target.health_since_us = Some(now_us());
        let (service, tname) = (svc.cfg.name.clone(), target.cfg.name.clone());
        m.set_target_up(&service, &tname, flip.to == Health::Up);
        let event = match flip.to {
            Health::Up => Event::TargetUp {
                service,
                target: tname,
                from: flip.from,
                streak: flip.streak,
                first_ok_us: flip.streak_started_us,
                reason,
                checks,
            },
            _ => Event::TargetDown {
                service,
                target: tname,
                from: flip.from,
                streak: flip.streak,
                first_failure_us: flip.streak_started_us,
                last_ok_us: flip.last_other_us,
                reason,
                checks,
            },
        };
        self.record(event);
        self.registry.health(&self.services[si].cfg.name, &self.services[si].targets[ti].cfg.name, flip.to);
        let t = now();
        self.services[si].engine.set_health(ti, flip.to, t);
        self.evaluate(si, t);
    }

    /// The disk did not take an event within the bound: say so once (status, metric, event).
    fn log_fell_behind(&mut self) {
        if self.log_watch.behind_since.is_some() {
            return;
        }
        self.log_watch.behind_since = Some(now());
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

    /// Lift force-downs whose time is up (a drill that died cannot leave one behind).
    fn expire_forces(&mut self) {
        let now = now_us();
        let expired: Vec<(String, String)> = self
            .services
            .iter()
            .flat_map(|s| s.overrides.forced.iter().filter(|(_, until)| **until <= now).map(|(t, _)| (s.cfg.name.clone(), t.clone())))
            .collect();
        for (service, target) in expired {
            if let Some(svc) = self.services.iter_mut().find(|s| s.cfg.name == service)
                && svc.engine.index_of(&target).is_none()
            {
                svc.overrides.forced.remove(&target); // the target left the config
                continue;
            }
            if let Err(e) = self.operate(&service, Some(&target), OverrideAction::Unforce, "expiry", None) {
                tracing::warn!("cannot lift the expired force-down of {service}/{target}: {e}");
            }
        }
    }

    fn evaluate_all(&mut self) {
        let t = now();
        for si in 0..self.services.len() {
            self.evaluate(si, t);
        }
    }

    fn evaluate(&mut self, si: usize, t: Instant) {
        if let Some(d) = self.services[si].engine.evaluate(t) {
            self.decided(si, d);
        }
    }

    /// Record a decision and hand it to the service's runner.
    fn decided(&mut self, si: usize, d: Decision) {
        let svc = &self.services[si];
        let target_ref = |i: Option<usize>| i.map(|i| TargetRef { name: svc.targets[i].cfg.name.clone(), address: svc.targets[i].cfg.address });
        let (from, to) = (target_ref(d.from), target_ref(d.to));
        let desired =
            Desired { service: svc.name.clone(), epoch: d.epoch, active: to.clone(), previous: from.clone(), reason: d.reason, all_down: d.all_down, decided_at: now() };
        let event = Event::Decision {
            service: svc.cfg.name.clone(),
            epoch: d.epoch,
            from: from.as_ref().map(|t| t.name.clone()),
            to: to.as_ref().map(|t| t.name.clone()),
            from_rank: d.from,
            to_rank: d.to,
            address: to.as_ref().map(|t| t.address),
            reason: d.reason,
            all_down: d.all_down,
        };
        let m = &self.shared.metrics;
        let service = svc.cfg.name.clone();
        m.decisions.get_or_create(&ReasonLabels { service: service.clone(), reason: d.reason.to_string() }).inc();
        if d.reason == Reason::Failover {
            m.failovers.get_or_create(&ServiceLabels { service: service.clone() }).inc();
        }
        m.epoch.get_or_create(&ServiceLabels { service: service.clone() }).set(d.epoch as i64);
        m.all_down.get_or_create(&ServiceLabels { service: service.clone() }).set(d.all_down as i64);
        for (i, t) in svc.targets.iter().enumerate() {
            m.active_target.get_or_create(&TargetLabels { service: service.clone(), target: t.cfg.name.clone() }).set((d.to == Some(i)) as i64);
        }
        // Durable first, then act: the decision counts as made once it is on disk.
        self.record(event);
        let desired = Desired { decided_at: now(), ..desired };
        let svc = &mut self.services[si];
        if d.to != d.from || svc.active_since_us.is_none() {
            svc.active_since_us = Some(now_us());
        }
        let cmd = Command { desired, actuators: svc.actuators.clone(), verify_every: svc.cfg.verify_every };
        svc.runner.send_replace(Some(cmd));
    }

    fn on_actuated(&mut self, r: runner::Report) {
        let r = match r {
            runner::Report::Step(s) => s,
            runner::Report::Done { service, epoch, ok, steps, duration_us } => {
                self.record(Event::Switched { service: service.to_string(), epoch, ok, steps, duration_us });
                return;
            }
            runner::Report::Drift(d) => {
                let result = if d.repair.ok { "drift_repaired" } else { "drift_unrepaired" };
                let labels = ActuatorLabels { service: d.service.to_string(), actuator: d.actuator.clone(), result: result.into() };
                self.shared.metrics.actuations.get_or_create(&labels).inc();
                self.record(Event::DriftRepaired {
                    service: d.service.to_string(),
                    epoch: d.epoch,
                    actuator: d.actuator,
                    drift: d.drift,
                    ok: d.repair.ok,
                    detail: d.repair.detail,
                });
                return;
            }
        };
        let result = if r.outcome.ok { "ok" } else { "failed" };
        let step = match r.step {
            Step::Applied => "applied",
            Step::Verified => "verified",
        };
        self.shared
            .metrics
            .actuations
            .get_or_create(&ActuatorLabels { service: r.service.to_string(), actuator: r.actuator.clone(), result: format!("{step}_{result}") })
            .inc();
        self.record(Event::Actuated {
            service: r.service.to_string(),
            epoch: r.epoch,
            actuator: r.actuator,
            step: r.step,
            ok: r.outcome.ok,
            detail: r.outcome.detail,
            duration_us: r.duration_us,
        });
    }

    fn on_control(&mut self, c: Control) {
        match c {
            Control::Services(reply) => {
                let _ = reply.send(self.services.iter().map(|s| self.view(s)).collect());
            }
            Control::Incidents(reply) => {
                let _ = reply.send(self.incidents.all().rev().map(wire::Incident::from).collect());
            }
            Control::Override { service, target, action, by, expires_us, reply } => {
                let _ = reply.send(self.operate(&service, target.as_deref(), action, &by, expires_us));
            }
            Control::CloseIncident { id, by, reply } => {
                let r = match self.incidents.get(id) {
                    None => Err(Refusal::NoIncident(id)),
                    Some(i) if !i.open => Err(Refusal::Conflict(format!("incident #{id} is already closed"))),
                    Some(i) => {
                        let service = i.service.clone();
                        self.record(Event::IncidentClosed { id, service, by });
                        Ok(())
                    }
                };
                let _ = reply.send(r);
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
            Control::Record(event) => {
                self.record(event);
            }
        }
    }

    fn operate(&mut self, service: &str, target: Option<&str>, action: OverrideAction, by: &str, expires_us: Option<u64>) -> Result<(), Refusal> {
        let si = self.services.iter().position(|s| s.cfg.name == service).ok_or_else(|| Refusal::NoService(service.into()))?;
        let svc = &self.services[si];
        let ti = match target {
            Some(t) => Some(svc.engine.index_of(t).ok_or_else(|| Refusal::NoTarget { service: service.into(), target: t.into() })?),
            None => None,
        };
        if action == OverrideAction::Switchover {
            let ti = ti.ok_or_else(|| Refusal::Conflict("switchover needs a target".into()))?;
            if !svc.engine.is_eligible(ti) {
                let why = match (svc.engine.is_enabled(ti), svc.engine.health(ti)) {
                    (false, _) => "it is drained (enable it first)".to_string(),
                    (true, h) => format!("its checks say it is {}", format!("{h:?}").to_lowercase()),
                };
                return Err(Refusal::Conflict(format!("cannot switch {service} over to {}: {why}", target.unwrap_or_default())));
            }
        }
        if matches!(action, OverrideAction::ForceDown | OverrideAction::Unforce | OverrideAction::Drain | OverrideAction::Enable) && ti.is_none() {
            return Err(Refusal::Conflict(format!("{action:?} needs a target").to_lowercase()));
        }
        self.record(Event::Override { service: service.into(), target: target.map(str::to_string), action, by: by.into(), expires_us });
        let t = now();
        let svc = &mut self.services[si];
        svc.overrides.apply(target, action, expires_us);
        services::apply_overrides(&mut svc.engine, &svc.overrides, t);
        if let Some(ti) = ti {
            let enabled = svc.engine.is_enabled(ti);
            self.shared
                .metrics
                .target_enabled
                .get_or_create(&TargetLabels { service: service.into(), target: svc.targets[ti].cfg.name.clone() })
                .set(enabled as i64);
        }
        self.evaluate(si, t);
        Ok(())
    }

    /// Swap in a validated config. Unchanged checks keep their health and their probe task;
    /// services whose targets are unchanged keep their engine (and epoch, and hold timers).
    fn reload(&mut self, config: Config) -> Result<(), Refusal> {
        if config.daemon != self.config.daemon {
            tracing::warn!("[daemon] settings changed; they take effect at the next restart");
        }
        if config.drill.schedules != self.config.drill.schedules || config.heartbeat != self.config.heartbeat {
            tracing::warn!("[[drill.schedule]] or [heartbeat] changed; they take effect at the next restart");
        }
        for later in self.registry.reload(&config, &self.current()) {
            tracing::warn!("{later}");
        }
        let t = now();
        let mut old: HashMap<String, ServiceRt> = std::mem::take(&mut self.services).into_iter().map(|s| (s.cfg.name.clone(), s)).collect();
        let mut new_services = Vec::new();
        let mut reconcile = Vec::new();
        for cfg in config.services.iter().cloned() {
            let svc = match old.remove(&cfg.name) {
                Some(prev) => {
                    let (svc, needs_reconcile) = self.carry_over(prev, cfg, t);
                    if needs_reconcile {
                        reconcile.push(new_services.len());
                    }
                    svc
                }
                None => match services::build(cfg, None, Default::default(), &Default::default(), &mut self.probe_ctx, &self.tracker, &self.reports_tx, &self.registry, t) {
                    Ok(s) => s,
                    Err(e) => {
                        // Put back what we took, so the old config keeps running.
                        tracing::error!("reload failed: {e}");
                        new_services.extend(old.into_values());
                        self.services = new_services;
                        self.index_probes();
                        return Err(Refusal::Conflict(format!("reload failed: {e}")));
                    }
                },
            };
            new_services.push(svc);
        }
        drop(old); // removed services: their probes stop, their runners end
        self.services = new_services;
        self.index_probes();
        self.shared.notify.reload(config.notify.clone());
        self.config = config;
        let names = self.services.iter().map(|s| s.cfg.name.clone()).collect();
        self.record(Event::ConfigReloaded { services: names });
        self.set_stall_threshold();
        for i in 0..self.services.len() {
            self.publish_static_metrics(&self.services[i]);
        }
        for si in reconcile {
            if let Some(d) = self.services[si].engine.reconcile() {
                self.decided(si, d);
            }
        }
        self.evaluate_all();
        Ok(())
    }

    /// Move a running service to its new config. Returns whether actuators must re-apply.
    fn carry_over(&mut self, mut prev: ServiceRt, cfg: crate::config::ServiceConfig, t: Instant) -> (ServiceRt, bool) {
        let same_targets = prev.cfg.targets.iter().map(|x| (&x.name, x.address)).eq(cfg.targets.iter().map(|x| (&x.name, x.address)));
        let same_policy = services::policy(&prev.cfg) == services::policy(&cfg);
        let actuators = self.registry.actuators(&cfg);
        let same_actuators = prev.cfg.hooks == cfg.hooks && prev.actuators.iter().map(|a| a.name()).eq(actuators.iter().map(|a| a.name()));
        // Targets: keep probe + health where the check is unchanged.
        let mut old_targets: HashMap<String, TargetRt> = std::mem::take(&mut prev.targets).into_iter().map(|x| (x.cfg.name.clone(), x)).collect();
        let mut targets = Vec::new();
        for tc in &cfg.targets {
            let keep = old_targets.remove(&tc.name).filter(|o| {
                TargetRt::check_identity(&prev.cfg.check, &o.cfg) == TargetRt::check_identity(&cfg.check, tc)
            });
            let tr = match keep {
                Some(mut o) => {
                    o.cfg = tc.clone();
                    o
                }
                None => {
                    let carried = old_targets.remove(&tc.name);
                    if let Some(c) = &carried {
                        c.probe_cancel.cancel();
                    }
                    match self.probe_ctx.spawn(&cfg.check, tc) {
                        Ok((probe_id, probe_cancel, probe_describe, cadence)) => TargetRt {
                            cfg: tc.clone(),
                            // The new check starts from the old verdict and needs `fall`/`rise`
                            // results to change it, so a reload never causes a failover by itself.
                            health: HealthState::restored(carried.as_ref().map_or(Health::Unknown, |c| c.health.health())),
                            health_since_us: carried.as_ref().and_then(|c| c.health_since_us),
                            probe_id,
                            probe_cancel,
                            probe_describe,
                            last: None,
                            cadence,
                            checker_errors: Default::default(),
                        },
                        Err(e) => {
                            tracing::error!("cannot start the probe for {}/{}: {e}", cfg.name, tc.name);
                            continue;
                        }
                    }
                }
            };
            targets.push(tr);
        }
        for o in old_targets.values() {
            o.probe_cancel.cancel();
        }
        prev.targets = targets;
        if !same_targets || !same_policy {
            let names: Vec<String> = cfg.targets.iter().map(|x| x.name.clone()).collect();
            prev.engine = prev.engine.reshape(services::policy(&cfg), &names);
            services::apply_overrides(&mut prev.engine, &prev.overrides, t);
        }
        prev.actuators = actuators.into();
        // Actuators must hear about new addresses or new actuators; a new target list is
        // otherwise decided by the normal rules at the next evaluation.
        let same_addresses = prev.engine.active().is_none_or(|a| {
            prev.cfg.target(&cfg.targets[a].name).is_some_and(|old| old.address == cfg.targets[a].address)
        });
        let reconcile = !same_actuators || !same_addresses;
        prev.cfg = cfg;
        (prev, reconcile)
    }

    fn publish_static_metrics(&self, svc: &ServiceRt) {
        for (i, t) in svc.targets.iter().enumerate() {
            let l = TargetLabels { service: svc.cfg.name.clone(), target: t.cfg.name.clone() };
            self.shared.metrics.target_up.get_or_create(&l).set((svc.engine.health(i) == Health::Up) as i64);
            self.shared.metrics.target_enabled.get_or_create(&l).set(svc.engine.is_enabled(i) as i64);
            self.shared.metrics.active_target.get_or_create(&l).set((svc.engine.active() == Some(i)) as i64);
        }
        let l = ServiceLabels { service: svc.cfg.name.clone() };
        let _ = self.shared.metrics.failovers.get_or_create(&l);
        let _ = self.shared.metrics.check_duration.get_or_create(&l);
        self.shared.metrics.epoch.get_or_create(&l).set(svc.engine.epoch() as i64);
    }

    fn view(&self, s: &ServiceRt) -> wire::Service {
        let e = &s.engine;
        let active = if e.has_decided() { e.active() } else { None };
        wire::Service {
            name: s.cfg.name.clone(),
            active: active.map(|a| s.targets[a].cfg.name.clone()),
            active_address: active.map(|a| s.targets[a].cfg.address),
            active_since: active.and(s.active_since_us).map(format_time_us),
            epoch: e.epoch(),
            decided: e.has_decided(),
            all_down: e.all_down(),
            pinned: e.pinned().map(|p| s.targets[p].cfg.name.clone()),
            failback: s.cfg.failback,
            failback_hold_ms: s.cfg.failback_hold.as_millis() as u64,
            all_down_policy: s.cfg.all_down,
            check: wire::CheckSummary {
                kind: s.cfg.check.kind.name().into(),
                port: match &s.cfg.check.kind {
                    CheckKind::Http(h) => Some(h.port),
                    CheckKind::Tcp(c) => Some(c.port),
                    CheckKind::Exec(_) => None,
                },
                path: match &s.cfg.check.kind {
                    CheckKind::Http(h) => Some(h.path.clone()),
                    _ => None,
                },
                host: match &s.cfg.check.kind {
                    CheckKind::Http(h) => h.host.clone(),
                    _ => None,
                },
                interval_ms: s.cfg.check.interval.as_millis() as u64,
                timeout_ms: s.cfg.check.timeout.as_millis() as u64,
                fall: s.cfg.check.fall,
                rise: s.cfg.check.rise,
                fast_interval_ms: Some(s.cfg.check.fast_interval.as_millis() as u64),
                down_interval_ms: Some(s.cfg.check.down_interval.as_millis() as u64),
            },
            targets: s
                .targets
                .iter()
                .enumerate()
                .map(|(i, t)| wire::Target {
                    name: t.cfg.name.clone(),
                    address: t.cfg.address,
                    check: t.probe_describe.clone(),
                    check_address: t.cfg.check_ip(),
                    check_port: match &s.cfg.check.kind {
                        CheckKind::Http(h) => Some(t.cfg.check_port.unwrap_or(h.port)),
                        CheckKind::Tcp(c) => Some(t.cfg.check_port.unwrap_or(c.port)),
                        CheckKind::Exec(_) => None,
                    },
                    healthy: e.health(i) == Health::Up,
                    health: e.health(i),
                    health_since: t.health_since_us.map(format_time_us),
                    enabled: e.is_enabled(i),
                    forced_down_until: s.overrides.forced.get(&t.cfg.name).map(|&u| if u == u64::MAX { "never".into() } else { format_time_us(u) }),
                    eligible: e.is_eligible(i),
                    active: active == Some(i),
                    streak: t.health.streak().1,
                    check_interval_ms: Some(s.cfg.check.interval_for(*t.cadence.borrow()).as_millis() as u64),
                    cadence: Some(*t.cadence.borrow()),
                    last_check: t.last.as_ref().map(|r| wire::LastCheck {
                        checker_error: r.checker_error,
                        ok: r.ok,
                        reason: r.reason.clone(),
                        latency_ms: r.latency.as_secs_f64() * 1000.0,
                        at: format_time_us(r.started_us),
                    }),
                })
                .collect(),
            open_incident: self.incidents.open_for(&s.cfg.name).map(|i| i.id),
            dns: self
                .registry
                .get::<DnsKind>()
                .map(|k| k.dns.status())
                .unwrap_or_default()
                .into_iter()
                .filter(|r| r.service == s.cfg.name)
                .map(|r| wire::DnsRecord {
                    name: r.name,
                    zone: r.zone,
                    addresses: r.addresses,
                    types: r.types,
                    ttl: r.ttl,
                    suspect: r.suspect,
                    epoch: r.epoch,
                    since: format_time_us(r.since_us),
                    serial: r.serial,
                })
                .collect(),
            // Filled in by `Shared::services` from the canaries' own views.
            canary: Vec::new(),
        }
    }
}

/// Write a file so that it is either absent or complete after a crash: temp file, fsync, rename.
fn write_durably(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
