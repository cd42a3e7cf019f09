//! The JSON shapes of the API, in one place. Engine types are not the wire format: these are
//! built from them, and the CLI reads them back.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::config::{AllDown, Failback};


/// Incidents and event records have one JSON shape, shared with notifications.
pub use crate::events::report::{CheckResult, CheckWindow, EventRecord, Incident, TimelineEntry};
/// Delivery state of notification channels.
pub use crate::notify::status::{NotifyChannel, NotifyStatus};
/// What a client canary sees now.
pub use crate::canary::CanaryView;
use crate::health::Health;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    /// The target that has the traffic (null when failing closed or before the first decision).
    pub active: Option<String>,
    pub active_address: Option<IpAddr>,
    pub active_since: Option<String>,
    pub epoch: u64,
    /// False until the first decision after start (targets still being checked).
    pub decided: bool,
    pub all_down: bool,
    /// Target pinned by a switchover, if any.
    pub pinned: Option<String>,
    pub failback: Failback,
    pub failback_hold_ms: u64,
    pub all_down_policy: AllDown,
    pub check: CheckSummary,
    pub targets: Vec<Target>,
    pub open_incident: Option<u64>,
    /// Failover records the built-in DNS server answers for this service (empty without `[dns]`).
    #[serde(default)]
    pub dns: Vec<DnsRecord>,
    /// What the client canaries watching this service see now, one entry per canary and
    /// resolver (empty without `[[canary]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canary: Vec<CanaryView>,
}


/// One failover record as served now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsRecord {
    /// Absolute name, e.g. `www.example.test.`.
    pub name: String,
    pub zone: String,
    /// Addresses answered now (empty: NODATA, failing closed).
    pub addresses: Vec<IpAddr>,
    pub types: Vec<String>,
    /// The TTL answered now (`suspect_ttl` while the served target is suspect).
    pub ttl: u32,
    /// The served target shows signs of trouble: answered with `suspect_ttl` (see `dns/`).
    #[serde(default)]
    pub suspect: bool,
    /// Decision epoch last applied (null before the first decision: serving the primary).
    pub epoch: Option<u64>,
    /// When these addresses started being served (RFC 3339).
    pub since: String,
    pub serial: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckSummary {
    pub kind: String,
    /// Port and path of http/https checks, port of tcp checks.
    pub port: Option<u16>,
    pub path: Option<String>,
    pub host: Option<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub fall: u32,
    pub rise: u32,
    /// Cadence while a target's health is changing (`fast_interval`); absent from older daemons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast_interval_ms: Option<u64>,
    /// Cadence of a down target that keeps failing (`down_interval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_interval_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    pub address: IpAddr,
    /// What the probe checks, e.g. `http://127.0.0.2:8080/health`.
    pub check: String,
    /// Where checks go, and the port (none for exec checks).
    pub check_address: IpAddr,
    pub check_port: Option<u16>,
    pub healthy: bool,
    pub health: Health,
    pub health_since: Option<String>,
    /// False when drained by an operator.
    pub enabled: bool,
    /// When set, the target's checks count as failing until then (drills).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forced_down_until: Option<String>,
    pub eligible: bool,
    pub active: bool,
    /// Consecutive results with the latest verdict.
    pub streak: u32,
    pub last_check: Option<LastCheck>,
    /// The interval this target is checked at now: `interval`, `fast_interval` while its health
    /// is changing, `down_interval` while it is down; absent from older daemons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_interval_ms: Option<u64>,
    /// Which of the three that is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cadence: Option<crate::health::Cadence>,
    /// Drift checks (`[[service.compare]]`) this target is out of step in now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<Drift>,
}

/// A target whose value differs from the active target's in one compare check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    pub check: String,
    /// The active target compared with, its value and this target's (shortened).
    pub primary: String,
    pub expected: String,
    pub found: String,
    /// Not eligible for failover while it drifts.
    pub gate: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastCheck {
    /// The check could not be made for a reason on the monitor's side (out of file
    /// descriptors, no route from the monitor): it did not count against the target.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub checker_error: bool,
    pub ok: bool,
    pub reason: String,
    pub latency_ms: f64,
    pub at: String,
    /// Replication lag the check measured (database checks on a replica); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<ReplicationLag>,
}

/// A replica's lag behind its primary, as its check measured it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReplicationLag {
    pub bytes: u64,
    /// Seconds behind (zero when caught up); absent when the server cannot tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}


#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Events {
    pub events: Vec<EventRecord>,
    /// Pass as `since` to get what comes next.
    pub next: u64,
}


/// Body of `POST /api/v1/services/{name}/switchover`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwitchoverRequest {
    pub target: String,
}

/// Body of `POST /api/v1/services/{name}/targets/{target}/force-down` (optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ForceDownRequest {
    /// How long before it lapses by itself, e.g. `"10m"` (default 15m, at most 24h).
    #[serde(rename = "for", default, skip_serializing_if = "Option::is_none")]
    pub lasts: Option<String>,
    /// Who asks (e.g. `drill 4`), recorded in the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

impl ForceDownRequest {
    pub const DEFAULT_LASTS: std::time::Duration = std::time::Duration::from_secs(15 * 60);
}

/// Every error body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// `GET /api/v1/event-log`: whether the disk keeps up with the events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLogStatus {
    /// Highest sequence number given out.
    pub last_seq: u64,
    /// Highest sequence number on disk.
    pub durable_seq: u64,
    /// Events waiting for the disk (the daemon goes on failing over meanwhile).
    pub behind: u64,
    /// How long the oldest of them has waited.
    pub oldest_pending_ms: u64,
    /// The last write error, while writes fail.
    pub error: Option<String>,
    /// Failed write attempts since start (each is retried).
    pub write_errors: u64,
}

/// `POST /api/v1/notify/{channel}/test`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyTestResult {
    pub channel: String,
    pub ok: bool,
    /// The receiver's answer (`HTTP 200 OK: ...`, `250 ...`) or why there was none.
    pub answer: String,
}
