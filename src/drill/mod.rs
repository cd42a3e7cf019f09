//! Drills: rehearse a failure on purpose and measure what users would see.
//!
//! A drill runs against a running daemon through its API (the CLI's `understudy drill`, or the
//! daemon's own scheduler talking to itself), so it exercises exactly the path a real failure
//! takes: a fault makes the primary's checks fail, the daemon detects it, decides, switches,
//! and an observing client ([`observer`]) resolves the public name like a user and notices
//! when answers come from the backup. Then the fault is undone and the switch back measured.
//!
//! - [`run`]: the protocol (baseline, fault, measure, verify, restore, report). It always
//!   undoes its fault before returning, on success, error, timeout or Ctrl-C.
//! - [`report`]: the report as a table, Markdown and JSON.
//! - [`config`]: `[drill]` (targets to meet, schedules) and `[heartbeat]`.
//! - [`schedule`]: scheduled drills and the heartbeat push, run by the daemon.
//!
//! - [`ledger`]: the daemon's bookkeeping of running drills and their leases.
//!
//! The daemon's part is small: it records `drill_started`/`drill_fault`/`drill_finished` events
//! and stores reports in `data_dir/drills/`. It never injects faults except the force-down
//! override, but it owns every fault: the client registers what undoes it and renews a lease;
//! when the lease runs out (the client was killed) the daemon undoes the fault itself.

pub mod config;
pub mod ledger;
pub mod observer;
pub mod report;
pub mod run;
pub mod schedule;

use serde::{Deserialize, Serialize};

/// How a drill breaks the primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// An override that makes the target's checks count as failing: no real outage.
    ForceDown,
    /// The user's own command (e.g. `systemctl stop nginx` on the primary); undone with the
    /// restore command.
    Exec { cmd: String, restore_cmd: Option<String> },
    /// Drop traffic to the target's check port with nftables, on the host this runs on.
    Block,
}

impl Fault {
    pub fn name(&self) -> &'static str {
        match self {
            Fault::ForceDown => "force-down",
            Fault::Exec { .. } => "exec",
            Fault::Block => "block",
        }
    }
}

pub use crate::events::Undo;

/// `POST /api/v1/drills/{id}/lease` body: keep the drill's fault alive for `for` (default
/// [`LeaseRequest::DEFAULT`]); the first call also registers what undoes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<Undo>,
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub lasts: Option<String>,
}

impl LeaseRequest {
    pub const DEFAULT: std::time::Duration = std::time::Duration::from_secs(15);
    /// Longest a single lease may run: a dead client's fault is undone at most this late.
    pub const MAX: std::time::Duration = std::time::Duration::from_secs(600);
}

/// The daemon's answer to a lease request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseResponse {
    pub id: u64,
    /// When the fault is undone unless the lease is renewed (RFC 3339).
    pub expires: String,
}

/// What a drill must achieve; a miss makes the drill (and `understudy drill`) fail.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Targets {
    pub detection_ms: f64,
    pub switch_ms: f64,
    pub rto_ms: f64,
}

impl Default for Targets {
    fn default() -> Self {
        Targets { detection_ms: 30_000.0, switch_ms: 60_000.0, rto_ms: 120_000.0 }
    }
}

/// `POST /api/v1/drills` body: a drill is starting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartRequest {
    pub service: String,
    pub fault: String,
    pub target: String,
    pub by: String,
}

/// The daemon's answer: the drill's id, the targets to meet and the event cursor to follow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartResponse {
    pub id: u64,
    pub targets: Targets,
    /// Events after this sequence number belong to the drill.
    pub since: u64,
}

/// One timestamped line of a drill's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub time_us: u64,
    pub what: String,
}

/// A finished drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub id: u64,
    pub service: String,
    pub fault: String,
    /// The target the fault was applied to (the primary).
    pub target: String,
    /// Where traffic went.
    pub to: Option<String>,
    pub started_us: u64,
    pub finished_us: u64,
    /// True when every phase completed and every target was met.
    pub ok: bool,
    pub error: Option<String>,
    pub targets: Targets,
    /// Fault -> target marked down.
    pub detection_ms: Option<f64>,
    /// Marked down -> every actuator applied and verified.
    pub switch_ms: Option<f64>,
    /// Fault -> switch complete, as the monitor saw it.
    pub monitor_rto_ms: Option<f64>,
    /// Last success on the primary -> first success on the backup, as the client saw it.
    pub client_rto_ms: Option<f64>,
    pub client_failed_requests: Option<usize>,
    /// Fault -> the client's first success on the backup (includes DNS caching).
    #[serde(default)]
    pub client_switch_ms: Option<f64>,
    /// The client's answers came from the backup after the switch.
    pub backup_verified: Option<bool>,
    /// Restore -> primary marked up.
    pub recovery_detection_ms: Option<f64>,
    /// Primary marked up -> failback decision (the hold); none when traffic returned for
    /// another reason (`failback_reason`).
    pub failback_hold_ms: Option<f64>,
    /// The reason of the decision that returned traffic to the primary: `failback` after the
    /// hold, `failover` when the backup failed first.
    #[serde(default)]
    pub failback_reason: Option<String>,
    /// Failback decision -> every actuator done.
    pub failback_switch_ms: Option<f64>,
    /// Failback decision -> the client's first success on the primary.
    pub client_return_ms: Option<f64>,
    /// The client's answers came from the primary again.
    pub traffic_returned: Option<bool>,
    pub observed_url: Option<String>,
    pub client_requests: usize,
    /// Targets missed, in words.
    pub missed: Vec<String>,
    pub steps: Vec<Step>,
}

impl Report {
    /// The RTO compared with the target: the client's when a client observed, else the monitor's.
    pub fn rto_ms(&self) -> Option<f64> {
        self.client_rto_ms.or(self.monitor_rto_ms)
    }

    /// Compare with the targets and fill `missed` and `ok`.
    pub fn judge(&mut self) {
        let mut missed = Vec::new();
        let mut check = |what: &str, got: Option<f64>, limit: f64| match got {
            Some(v) if v > limit => missed.push(format!("{what} {v:.0} ms > target {limit:.0} ms")),
            None => missed.push(format!("{what} was not measured")),
            _ => {}
        };
        check("detection", self.detection_ms, self.targets.detection_ms);
        check("switch", self.switch_ms, self.targets.switch_ms);
        check("RTO", self.rto_ms(), self.targets.rto_ms);
        if self.backup_verified == Some(false) {
            missed.push("the client did not see the backup serving".into());
        }
        if self.traffic_returned == Some(false) {
            missed.push("traffic did not return to the primary".into());
        }
        self.missed = missed;
        self.ok = self.error.is_none() && self.missed.is_empty();
    }
}

/// A line of `understudy drills`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub id: u64,
    pub service: String,
    pub fault: String,
    pub started: String,
    pub ok: bool,
    pub detection_ms: Option<f64>,
    pub switch_ms: Option<f64>,
    pub rto_ms: Option<f64>,
    pub missed: Vec<String>,
    pub error: Option<String>,
}

impl From<&Report> for Summary {
    fn from(r: &Report) -> Self {
        Summary {
            id: r.id,
            service: r.service.clone(),
            fault: r.fault.clone(),
            started: crate::events::format_time_us(r.started_us),
            ok: r.ok,
            detection_ms: r.detection_ms,
            switch_ms: r.switch_ms,
            rto_ms: r.rto_ms(),
            missed: r.missed.clone(),
            error: r.error.clone(),
        }
    }
}
