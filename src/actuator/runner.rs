//! The actuator runner: one task per service that carries decisions out.
//!
//! The daemon's core publishes the latest [`Command`] (desired state plus the actuators to
//! use) on a `watch` channel and never waits for actuators, so a slow hook cannot stall health
//! checking or decisions. The runner applies the newest command, in actuator order, then
//! verifies; if newer commands arrived meanwhile, the intermediate ones are skipped (only the
//! latest desired state matters; actuators are idempotent). A command whose epoch is older than
//! one already applied is refused. Once started, an apply is finished even during shutdown, so
//! the world is left in a defined state.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};

use super::{Actuator, Desired, Outcome};
use crate::events::Step;

/// What the runner should make true.
#[derive(Clone)]
pub struct Command {
    pub desired: Desired,
    pub actuators: Arc<[Arc<dyn Actuator>]>,
}

/// What a runner sends back to the core; each becomes an event.
#[derive(Debug, Clone)]
pub enum Report {
    /// One actuator step finished.
    Step(StepReport),
    /// Every actuator has handled `epoch` (the switch is complete, or failed).
    Done { service: Arc<str>, epoch: u64, ok: bool, steps: u32, duration_us: u64 },
}

/// One finished actuator step.
#[derive(Debug, Clone)]
pub struct StepReport {
    pub service: Arc<str>,
    pub epoch: u64,
    pub actuator: String,
    pub step: Step,
    pub outcome: Outcome,
    pub duration_us: u64,
}

/// Run until the channel closes. Returns when the sender is dropped.
pub async fn run(mut rx: watch::Receiver<Option<Command>>, reports: mpsc::UnboundedSender<Report>) {
    let mut applied_epoch: Option<u64> = None;
    loop {
        let cmd = rx.borrow_and_update().clone();
        if let Some(cmd) = cmd
            && applied_epoch.is_none_or(|e| cmd.desired.epoch >= e)
            && applied_epoch != Some(cmd.desired.epoch)
        {
            apply(&cmd, &reports).await;
            applied_epoch = Some(cmd.desired.epoch);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn apply(cmd: &Command, reports: &mpsc::UnboundedSender<Report>) {
    let d = &cmd.desired;
    let begun = Instant::now();
    let mut all_ok = true;
    let mut steps = 0u32;
    let mut send = |actuator: &str, step: Step, outcome: Outcome, started: Instant| {
        all_ok &= outcome.ok;
        steps += 1;
        let _ = reports.send(Report::Step(StepReport {
            service: d.service.clone(),
            epoch: d.epoch,
            actuator: actuator.to_string(),
            step,
            outcome,
            duration_us: started.elapsed().as_micros() as u64,
        }));
    };
    for a in cmd.actuators.iter().filter(|a| a.wants(d)) {
        let started = Instant::now();
        let outcome = a.apply(d).await;
        let ok = outcome.ok;
        send(a.name(), Step::Applied, outcome, started);
        if ok && let Some(verify) = a.verify(d) {
            let started = Instant::now();
            let outcome = verify.await;
            send(a.name(), Step::Verified, outcome, started);
        }
    }
    let _ = reports.send(Report::Done {
        service: d.service.clone(),
        epoch: d.epoch,
        ok: all_ok,
        steps,
        duration_us: begun.elapsed().as_micros() as u64,
    });
}
