//! What a notification says: the [`Notice`], built once from an event and stored in the outbox,
//! so every retry and every channel sends exactly the same facts.
//!
//! A notice belongs to a *condition*: something that starts and ends (an incident, all targets
//! of a service down, an actuator failing, a refused config). A condition has one stable key
//! (`understudy-www-incident-3`), which is PagerDuty's `dedup_key` and Alertmanager's alert
//! identity, and goes through the phases open → update* → close. Each notice also has its own
//! idempotency key (see [`Notice::key`]) that stays the same across retries and restarts.
//!
//! Nothing here does I/O.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::events::report as wire;

/// How urgent a notice is. Ordered: `Info < Warning < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened, as a channel's `events` filter names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeEvent {
    /// A failover opened an incident.
    IncidentOpened,
    /// Something changed in an open incident: actuators applied or verified the switch, a
    /// target went up or down, an operator acted.
    IncidentUpdated,
    /// Traffic is back (or an operator closed it).
    IncidentClosed,
    /// An actuator failed (inside an incident it escalates it; outside it is its own
    /// condition, resolved by the actuator's next success).
    ActuatorFailed,
    /// No target of a service is eligible.
    AllDown,
    /// A reload was refused; resolved by the next accepted config.
    ConfigRejected,
    /// The daemon restarted while an incident was open.
    DaemonRestarted,
    /// Checks of a target cannot be made because of the monitor itself (out of file
    /// descriptors, no route from the monitor); resolved when they work again.
    CheckerError,
    /// The event log's disk did not keep up (resolved when it caught up).
    EventLogBehind,
    /// The client canary sees clients still sent to another target than the decision's, past
    /// the TTL and margin (resolved when they follow).
    ClientsStale,
    /// A cluster node lost etcd: it makes no decision and serves the last committed ones
    /// (resolved when it is back).
    ClusterCutOff,
    /// A virtual IP changed hands on this node (`[[vip]]`): it took the VIP over (opened,
    /// resolved when it gives the VIP up), or resigned because a tracked service is down
    /// (fault: opened, resolved when it leaves fault).
    VipState,
    /// A replica's replication lag is beyond its service's `max_lag` (resolved when it is back
    /// to half of it).
    ReplicationLag,
    /// A `compare` check finds a target's value different from the active target's (resolved
    /// when they match again).
    Drift,
    /// `understudy notify test`.
    Test,
}

impl NoticeEvent {
    pub const ALL: &'static [NoticeEvent] = &[
        NoticeEvent::IncidentOpened,
        NoticeEvent::IncidentUpdated,
        NoticeEvent::IncidentClosed,
        NoticeEvent::ActuatorFailed,
        NoticeEvent::AllDown,
        NoticeEvent::ConfigRejected,
        NoticeEvent::DaemonRestarted,
        NoticeEvent::CheckerError,
        NoticeEvent::EventLogBehind,
        NoticeEvent::ClientsStale,
        NoticeEvent::ClusterCutOff,
        NoticeEvent::VipState,
        NoticeEvent::ReplicationLag,
        NoticeEvent::Drift,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NoticeEvent::IncidentOpened => "incident_opened",
            NoticeEvent::IncidentUpdated => "incident_updated",
            NoticeEvent::IncidentClosed => "incident_closed",
            NoticeEvent::ActuatorFailed => "actuator_failed",
            NoticeEvent::AllDown => "all_down",
            NoticeEvent::ConfigRejected => "config_rejected",
            NoticeEvent::DaemonRestarted => "daemon_restarted",
            NoticeEvent::CheckerError => "checker_error",
            NoticeEvent::EventLogBehind => "event_log_behind",
            NoticeEvent::ClientsStale => "clients_stale",
            NoticeEvent::ClusterCutOff => "cluster_cut_off",
            NoticeEvent::VipState => "vip_state",
            NoticeEvent::ReplicationLag => "replication_lag",
            NoticeEvent::Drift => "drift",
            NoticeEvent::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<NoticeEvent> {
        NoticeEvent::ALL.iter().copied().find(|e| e.as_str() == s)
    }
}

/// Where a notice stands in its condition's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Open,
    Update,
    Close,
}

/// `firing` until the condition closes, then `resolved` (Alertmanager's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Firing,
    Resolved,
}

/// One notification, self-contained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    /// Idempotency key: the same for every retry and restart, different for every notice.
    pub key: String,
    /// The condition's stable key (PagerDuty `dedup_key`).
    pub condition: String,
    /// Alertmanager `alertname` of the condition.
    pub alertname: String,
    pub event: NoticeEvent,
    pub phase: Phase,
    pub status: Status,
    pub severity: Severity,
    /// The severity announced before this notice raised it (Alertmanager resolves the alert
    /// with the old `severity` label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalated_from: Option<Severity>,
    /// Sent at once, not held for the channel's group window (openings, closings, escalations).
    pub urgent: bool,
    pub service: Option<String>,
    /// The target that failed (incidents), or the actuator's service target.
    pub target: Option<String>,
    /// One line for people.
    pub summary: String,
    /// A few more lines of facts.
    pub details: Vec<String>,
    /// The incident as it stands after this event, when the notice is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<wire::Incident>,
    /// When the condition started and (once closed) ended, wall microseconds.
    pub started_us: u64,
    pub ended_us: Option<u64>,
    /// The event that caused this notice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<wire::EventRecord>,
    /// Wall time of the cause.
    pub time_us: u64,
}

impl Notice {
    /// Idempotency key for a notice caused by event `seq` (or, for events the log could not
    /// store, by the time).
    pub fn key_for(condition: &str, event: NoticeEvent, seq: u64, time_us: u64) -> String {
        if seq > 0 { format!("{condition}:{}:{seq}", event.as_str()) } else { format!("{condition}:{}:t{time_us}", event.as_str()) }
    }

    /// A notice for `understudy notify test`.
    pub fn test(now_us: u64) -> Notice {
        let condition = "understudy-test".to_string();
        Notice {
            key: format!("{condition}:test:t{now_us}"),
            condition,
            alertname: "UnderstudyTest".into(),
            event: NoticeEvent::Test,
            phase: Phase::Open,
            status: Status::Firing,
            severity: Severity::Info,
            escalated_from: None,
            urgent: true,
            service: None,
            target: None,
            summary: "understudy test notification: this channel works".into(),
            details: vec!["sent by `understudy notify test`; no action is needed".into()],
            incident: None,
            started_us: now_us,
            ended_us: None,
            cause: None,
            time_us: now_us,
        }
    }

    /// Subject-style title: `[WARNING] www: ...`.
    pub fn title(&self) -> String {
        let state = if self.status == Status::Resolved { "RESOLVED".to_string() } else { self.severity.as_str().to_uppercase() };
        format!("[{state}] {}", self.summary)
    }

    /// The plain-text body used by email and as the fallback text elsewhere.
    pub fn text_body(&self) -> String {
        let mut out = String::new();
        out.push_str(&self.title());
        out.push_str("\n\n");
        for d in &self.details {
            out.push_str(d);
            out.push('\n');
        }
        if let Some(i) = &self.incident {
            out.push_str(&format!("\nIncident #{} ({}), opened {}\n", i.id, if i.open { "open" } else { "closed" }, i.opened));
            out.push_str("Timeline:\n");
            for e in &i.timeline {
                out.push_str(&format!("  {}  {}\n", e.time, e.what));
            }
        }
        out.push_str(&format!("\nevent: {}   condition: {}   key: {}\n", self.event.as_str(), self.condition, self.key));
        out
    }
}

/// Milliseconds for people: `12.3 ms`, `2.1 s`.
pub fn human_ms(ms: Option<f64>) -> String {
    match ms {
        Some(ms) if ms >= 1000.0 => format!("{:.1} s", ms / 1000.0),
        Some(ms) => format!("{ms:.1} ms"),
        None => "-".into(),
    }
}
