//! Per-service runtime state owned by the core: the engine, each target's health and probe,
//! operator overrides, and the channel to the service's actuator runner. Building and
//! rebuilding these from config (start-up and reload) lives here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::actuator::runner::{self, Command};
use crate::actuator::Actuator;
use crate::actuator::registry::Registry;
use crate::config::{CheckConfig, ServiceConfig, TargetConfig};
use crate::decision::{Engine, Policy, Restored};
use crate::events::state::Overrides;
use crate::health::{Cadence, Health, HealthState, Thresholds};
use crate::probe::lag::LagHistogram;
use crate::probe::checker::Throttle;
use crate::probe::scheduler::{self, Cadences, Report, Scheduled};
use crate::probe::{self, CheckResult, ProbeError};

/// Everything needed to start probe tasks.
pub struct ProbeCtx {
    pub tracker: TaskTracker,
    pub cancel: CancellationToken,
    pub results: mpsc::UnboundedSender<Report>,
    pub lag: Arc<LagHistogram>,
    pub next_id: u64,
}

impl ProbeCtx {
    /// Start checking `target`; returns the probe id, the token that stops it, its description
    /// and the sender that sets its cadence.
    pub fn spawn(&mut self, check: &CheckConfig, target: &TargetConfig) -> Result<(u64, CancellationToken, String, watch::Sender<Cadence>), ProbeError> {
        let probe = probe::build(check, target)?;
        let describe = probe.describe();
        self.next_id += 1;
        let id = self.next_id;
        let cancel = self.cancel.child_token();
        let job = Scheduled { id, probe, interval: check.interval, timeout: check.timeout };
        let (cadence, current) = watch::channel(Cadence::Steady);
        let cadences = Cadences { fast_interval: check.fast_interval, down_interval: check.down_interval, current };
        scheduler::spawn_adaptive(&self.tracker, job, cadences, self.results.clone(), cancel.clone(), self.lag.clone());
        Ok((id, cancel, describe, cadence))
    }
}

pub struct TargetRt {
    pub cfg: TargetConfig,
    pub health: HealthState,
    /// Wall time the health last flipped.
    pub health_since_us: Option<u64>,
    pub probe_id: u64,
    pub probe_cancel: CancellationToken,
    pub probe_describe: String,
    pub last: Option<CheckResult>,
    /// Tells the probe task how often to check (the core sets it from `health` after every
    /// result); its current value is what `status` shows.
    pub cadence: watch::Sender<Cadence>,
    /// Rate limit of this target's `checker_error` events.
    pub checker_errors: Throttle,
}

impl TargetRt {
    /// What identifies "the same check" across a reload: if this is unchanged, health carries over.
    pub fn check_identity(check: &CheckConfig, t: &TargetConfig) -> (CheckConfig, std::net::IpAddr, Option<u16>) {
        (check.clone(), t.check_ip(), t.check_port)
    }
}

pub struct ServiceRt {
    pub name: Arc<str>,
    pub cfg: ServiceConfig,
    pub engine: Engine,
    pub targets: Vec<TargetRt>,
    pub overrides: Overrides,
    pub actuators: Arc<[Arc<dyn Actuator>]>,
    pub runner: watch::Sender<Option<Command>>,
    /// Wall time the current active target became active.
    pub active_since_us: Option<u64>,
}

impl Drop for ServiceRt {
    fn drop(&mut self) {
        for t in &self.targets {
            t.probe_cancel.cancel();
        }
    }
}

/// How long the engine waits for every target's first result before deciding anyway: probes
/// start at a random offset within one interval and then need up to `timeout`.
pub fn startup_grace(check: &CheckConfig) -> Duration {
    check.interval + check.timeout + Duration::from_millis(100)
}

pub fn policy(cfg: &ServiceConfig) -> Policy {
    Policy { failback: cfg.failback, failback_hold: cfg.failback_hold, all_down: cfg.all_down, startup_grace: startup_grace(&cfg.check) }
}

pub fn thresholds(check: &CheckConfig) -> Thresholds {
    Thresholds { fall: check.fall, rise: check.rise }
}

/// Build a service from scratch (start-up, or a service added by reload). `health` is each
/// target's last recorded verdict (empty for a new service): those targets start from it and need
/// `fall`/`rise` results to flip, so the engine can decide at once from the restored state.
#[allow(clippy::too_many_arguments)] // each is a distinct piece of the daemon's runtime
pub fn build(
    cfg: ServiceConfig,
    restored: Option<Restored>,
    overrides: Overrides,
    health: &std::collections::BTreeMap<String, Health>,
    probes: &mut ProbeCtx,
    tracker: &TaskTracker,
    reports: &mpsc::UnboundedSender<runner::Report>,
    registry: &Registry,
    now: Instant,
) -> Result<ServiceRt, ProbeError> {
    let names: Vec<String> = cfg.targets.iter().map(|t| t.name.clone()).collect();
    let mut engine = Engine::new(policy(&cfg), &names, restored, now);
    apply_overrides(&mut engine, &overrides, now);
    let mut targets = Vec::new();
    for (i, t) in cfg.targets.iter().enumerate() {
        let known = health.get(&t.name).copied().unwrap_or(Health::Unknown);
        engine.set_health(i, known, now);
        let (probe_id, probe_cancel, probe_describe, cadence) = probes.spawn(&cfg.check, t)?;
        targets.push(TargetRt {
            cfg: t.clone(),
            health: HealthState::restored(known),
            health_since_us: None,
            probe_id,
            probe_cancel,
            probe_describe,
            last: None,
            cadence,
            checker_errors: Throttle::default(),
        });
    }
    let (runner_tx, runner_rx) = watch::channel(None);
    let reports = reports.clone();
    tracker.spawn(runner::run(runner_rx, reports));
    Ok(ServiceRt {
        name: Arc::from(cfg.name.as_str()),
        actuators: registry.actuators(&cfg).into(),
        cfg,
        engine,
        targets,
        overrides,
        runner: runner_tx,
        active_since_us: None,
    })
}

/// Put operator intent into an engine (drains for targets that exist, the pin if it exists).
pub fn apply_overrides(engine: &mut Engine, o: &Overrides, now: Instant) {
    for i in 0..engine.len() {
        let drained = o.drained.contains(engine.target_name(i));
        engine.set_enabled(i, !drained, now);
    }
    let pin = o.pinned.as_deref().and_then(|p| engine.index_of(p));
    engine.set_pin(pin);
}
