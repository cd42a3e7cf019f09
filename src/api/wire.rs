//! The JSON shapes of the API, in one place. Engine types are not the wire format: these are
//! built from them, and the CLI reads them back.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::config::{AllDown, Failback};
use crate::events::{Event, Record, format_time_us};
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

/// One canary's view through one resolver (see `canary::view`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryView {
    pub canary: String,
    pub name: String,
    pub resolver: String,
    /// The address its last answer named (null: the name did not resolve), and the target
    /// that has it.
    pub address: Option<IpAddr>,
    pub target: Option<String>,
    /// Whether its last request succeeded (resolving only, without a `url`).
    pub ok: bool,
    pub detail: String,
    /// When that answer was obtained (RFC 3339; null before the first one).
    pub at: Option<String>,
    /// The answer agrees with the committed decision (null before a decision or an answer).
    pub agrees: Option<bool>,
    /// A `clients_stale` event is open for this resolver.
    pub stale: bool,
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub seq: u64,
    pub time: String,
    pub time_us: u64,
    pub summary: String,
    pub event: Event,
}

impl From<&Record> for EventRecord {
    fn from(r: &Record) -> Self {
        EventRecord { seq: r.seq, time: format_time_us(r.time_us), time_us: r.time_us, summary: r.event.summary(), event: r.event.clone() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Events {
    pub events: Vec<EventRecord>,
    /// Pass as `since` to get what comes next.
    pub next: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: u64,
    pub service: String,
    pub open: bool,
    pub opened: String,
    pub closed: Option<String>,
    pub closed_by: Option<String>,
    pub failed: Option<String>,
    pub to: Option<String>,
    pub epoch: u64,
    /// Marked down minus first failed check.
    pub detection_ms: Option<f64>,
    /// Verified (or applied) minus marked down.
    pub switch_ms: Option<f64>,
    /// Verified (or applied) minus first failed check.
    pub rto_ms: Option<f64>,
    pub actuator_failures: u32,
    pub recovered: Option<String>,
    pub failed_back: Option<String>,
    pub timeline: Vec<TimelineEntry>,
    /// Check results around the fault (see `events::incident::CheckWindow`).
    #[serde(default)]
    pub checks: Vec<CheckWindow>,
    /// The worst client RTO the client canaries saw (first failed request -> first good answer
    /// from the new target); null without a canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_rto_ms: Option<f64>,
    /// What each canary saw through each resolver.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client: Vec<ClientFigures>,
}

/// One canary's figures for an incident, through one resolver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientFigures {
    pub canary: String,
    pub resolver: String,
    pub last_old_ok: Option<String>,
    pub first_failed: Option<String>,
    pub first_new_ok: String,
    pub failed_requests: u32,
    pub client_rto_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckWindow {
    pub target: String,
    /// `down` or `up`: the flip these results caused.
    pub flip: String,
    pub at: String,
    pub results: Vec<CheckResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub at: String,
    pub ok: bool,
    pub latency_ms: f64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub time: String,
    pub time_us: u64,
    pub what: String,
}

impl From<&crate::events::incident::Incident> for Incident {
    fn from(i: &crate::events::incident::Incident) -> Self {
        let ms = |us: Option<u64>| us.map(|u| u as f64 / 1000.0);
        let mut timeline: Vec<TimelineEntry> =
            i.timeline.iter().map(|e| TimelineEntry { time: format_time_us(e.time_us), time_us: e.time_us, what: e.what.clone() }).collect();
        timeline.sort_by_key(|e| e.time_us);
        Incident {
            id: i.id,
            service: i.service.clone(),
            open: i.open,
            opened: format_time_us(i.opened_us),
            closed: i.closed_us.map(format_time_us),
            closed_by: i.closed_by.clone(),
            failed: i.failed.clone(),
            to: i.to.clone(),
            epoch: i.epoch,
            detection_ms: ms(i.detection_us()),
            switch_ms: ms(i.switch_us()),
            rto_ms: ms(i.rto_us()),
            actuator_failures: i.actuator_failures,
            recovered: i.recovered_us.map(format_time_us),
            failed_back: i.failed_back_us.map(format_time_us),
            timeline,
            checks: i
                .checks
                .iter()
                .map(|w| CheckWindow {
                    target: w.target.clone(),
                    flip: w.flip.clone(),
                    at: format_time_us(w.at_us),
                    results: w
                        .samples
                        .iter()
                        .map(|c| CheckResult { at: format_time_us(c.at_us), ok: c.ok, latency_ms: c.latency_us as f64 / 1000.0, reason: c.reason.clone() })
                        .collect(),
                })
                .collect(),
            client_rto_ms: ms(i.client_rto_us()),
            client: i
                .client
                .iter()
                .map(|c| ClientFigures {
                    canary: c.canary.clone(),
                    resolver: c.resolver.clone(),
                    last_old_ok: c.last_old_ok_us.map(format_time_us),
                    first_failed: c.first_failed_us.map(format_time_us),
                    first_new_ok: format_time_us(c.first_new_ok_us),
                    failed_requests: c.failed,
                    client_rto_ms: ms(c.rto_us),
                })
                .collect(),
        }
    }
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

/// `GET /api/v1/notify`: each notification channel's delivery state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyStatus {
    /// The last event sequence number turned into outbox entries.
    pub cursor: u64,
    pub channels: Vec<NotifyChannel>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyChannel {
    pub name: String,
    /// `alertmanager`, `pagerduty`, `slack`, `webhook`, `email`; null when the channel is no
    /// longer configured but still has entries in the outbox.
    pub kind: Option<String>,
    pub configured: bool,
    /// Entries waiting in the outbox.
    pub pending: u64,
    pub oldest_pending: Option<String>,
    /// Totals over the life of the data directory.
    pub delivered: u64,
    pub superseded: u64,
    pub rejected: u64,
    /// Failed attempts since the daemon started (each is retried).
    pub failed_attempts: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub last_delivered: Option<String>,
    /// The receiver's last answer to a delivery.
    pub last_answer: Option<String>,
    /// When the next retry is due, while backing off.
    pub next_attempt: Option<String>,
}

/// `POST /api/v1/notify/{channel}/test`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyTestResult {
    pub channel: String,
    pub ok: bool,
    /// The receiver's answer (`HTTP 200 OK: ...`, `250 ...`) or why there was none.
    pub answer: String,
}
