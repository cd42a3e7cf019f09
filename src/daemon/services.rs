//! A service's runtime around its pure machine: one probe task per target, the actuators the
//! registry built for it and the channel to its actuator runner. Building these from config
//! (start-up and reload) lives here; deciding lives in `crate::service`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::actuator::Actuator;
use crate::actuator::registry::Registry;
use crate::actuator::runner::{self, Command};
use crate::config::{CheckConfig, ServiceConfig, TargetConfig};
use crate::health::Cadence;
use crate::probe::lag::LagHistogram;
use crate::probe::scheduler::{self, Cadences, Report, Scheduled};
use crate::probe::{self, ProbeError};
use crate::service::Service;

/// Everything needed to start probe tasks.
pub struct ProbeCtx {
    pub tracker: TaskTracker,
    pub cancel: CancellationToken,
    pub results: mpsc::UnboundedSender<Report>,
    pub lag: Arc<LagHistogram>,
    pub next_id: u64,
}

/// A running probe task.
pub struct Probe {
    pub id: u64,
    pub cancel: CancellationToken,
    /// What it checks, for status ("tcp 127.0.0.2:80").
    pub describe: String,
    /// Tells the probe task how often to check.
    pub cadence: watch::Sender<Cadence>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl ProbeCtx {
    /// Start checking `target` at `cadence`.
    pub fn spawn(&mut self, check: &CheckConfig, target: &TargetConfig, cadence: Cadence) -> Result<Probe, ProbeError> {
        let probe = probe::build(check, target)?;
        let describe = probe.describe();
        self.next_id += 1;
        let id = self.next_id;
        let cancel = self.cancel.child_token();
        let job = Scheduled { id, probe, interval: check.interval, timeout: check.timeout };
        let (tx, current) = watch::channel(cadence);
        let cadences = Cadences { fast_interval: check.fast_interval, down_interval: check.down_interval, current };
        scheduler::spawn_adaptive(&self.tracker, job, cadences, self.results.clone(), cancel.clone(), self.lag.clone());
        Ok(Probe { id, cancel, describe, cadence: tx })
    }
}

/// A service's actuators. In a cluster (`leading` is this node's "I lead" flag) those that act
/// outside this node run only while it leads (`actuator::leader`).
pub fn actuators(registry: &Registry, cfg: &ServiceConfig, leading: Option<&Arc<AtomicBool>>) -> Vec<Arc<dyn Actuator>> {
    let all = registry.actuators(cfg);
    match leading {
        Some(l) => crate::actuator::leader::fence(all, l),
        None => all,
    }
}

/// One service at run time.
pub struct ServiceRt {
    pub name: Arc<str>,
    pub machine: Service,
    /// Running probes by target name.
    pub probes: HashMap<String, Probe>,
    pub actuators: Arc<[Arc<dyn Actuator>]>,
    pub runner: watch::Sender<Option<Command>>,
}

impl ServiceRt {
    /// Start the probes of a machine's targets (all of them, or those `only` names) and its
    /// actuator runner. A probe that cannot start is logged and left out: its target stays
    /// at its last verdict.
    pub fn start(
        machine: Service,
        probes: &mut ProbeCtx,
        tracker: &TaskTracker,
        reports: &mpsc::UnboundedSender<runner::Report>,
        registry: &Registry,
        leading: Option<&Arc<AtomicBool>>,
    ) -> Result<ServiceRt, ProbeError> {
        let (runner_tx, runner_rx) = watch::channel(None);
        let mut svc = ServiceRt {
            name: Arc::from(machine.name()),
            actuators: actuators(registry, machine.config(), leading).into(),
            probes: HashMap::new(),
            machine,
            runner: runner_tx,
        };
        let names: Vec<String> = svc.machine.config().targets.iter().map(|t| t.name.clone()).collect();
        svc.start_probes(&names, probes)?;
        tracker.spawn(runner::run(runner_rx, reports.clone()));
        Ok(svc)
    }

    /// Start probes for `names` (replacing any running ones).
    pub fn start_probes(&mut self, names: &[String], ctx: &mut ProbeCtx) -> Result<(), ProbeError> {
        for name in names {
            let cfg = self.machine.config();
            let Some(t) = cfg.target(name) else { continue };
            let cadence = self.machine.cadence(name).unwrap_or(Cadence::Steady);
            let probe = ctx.spawn(&cfg.check, t, cadence)?;
            self.probes.insert(name.clone(), probe);
        }
        Ok(())
    }
}
