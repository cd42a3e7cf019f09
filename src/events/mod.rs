//! Events: one enum for every transition, and where they go.
//!
//! Every health flip, decision, actuator result, operator override, incident change and daemon
//! life-cycle step is an [`Event`]. The daemon appends it to the durable [`log::EventLog`]
//! (fsync'd) *before* anything else sees it, then fans it out (broadcast to live subscribers,
//! incidents, metrics). Incidents and the daemon's persisted state (overrides, last epoch) are
//! folds over the log, so a restart rebuilds them exactly.
//!
//! This module does no networking; only `log.rs` touches the disk.

pub mod incident;
pub mod log;
pub mod report;
pub mod snapshot;
pub mod state;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::decision::Reason;
use crate::health::Health;

/// Every transition understudy records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    DaemonStarted {
        version: String,
        pid: u32,
        config: String,
    },
    DaemonStopped {
        reason: String,
    },
    ConfigReloaded {
        services: Vec<String>,
    },
    /// A reload was refused; the old config keeps running.
    ConfigRejected {
        errors: String,
    },
    /// A target's checks flipped it up.
    TargetUp {
        service: String,
        target: String,
        from: Health,
        /// Consecutive passing checks that made the flip.
        streak: u32,
        /// Start of the first passing check of the streak (wall microseconds).
        first_ok_us: u64,
        reason: String,
        /// The last check results, oldest first, ending with the streak that made the flip.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        checks: Vec<CheckSample>,
    },
    /// A target's checks flipped it down.
    TargetDown {
        service: String,
        target: String,
        from: Health,
        streak: u32,
        /// Start of the first failed check of the streak.
        first_failure_us: u64,
        /// Start of the last passing check before that, if any.
        last_ok_us: Option<u64>,
        reason: String,
        /// The last check results, oldest first, ending with the streak that made the flip
        /// (so the passing checks before the fault are there too, when they fit).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        checks: Vec<CheckSample>,
    },
    /// The active target of a service changed (or the first decision was made).
    Decision {
        service: String,
        epoch: u64,
        from: Option<String>,
        to: Option<String>,
        /// Priority rank (0 = primary) of `from` and `to`.
        from_rank: Option<usize>,
        to_rank: Option<usize>,
        address: Option<IpAddr>,
        reason: Reason,
        all_down: bool,
    },
    /// One actuator step for one decision.
    Actuated {
        service: String,
        epoch: u64,
        actuator: String,
        step: Step,
        ok: bool,
        detail: String,
        duration_us: u64,
    },
    /// Every actuator has handled a decision: the switch is complete (`ok`) or failed.
    Switched {
        service: String,
        epoch: u64,
        ok: bool,
        /// Actuator steps taken (applied and verified count separately).
        steps: u32,
        duration_us: u64,
    },
    /// A periodic verification found an actuator no longer serving the current decision
    /// (`drift`), and it was applied again (`ok`: whether that repaired it; if not, it is
    /// retried with backoff like any failed step).
    DriftRepaired {
        service: String,
        epoch: u64,
        actuator: String,
        drift: String,
        ok: bool,
        detail: String,
    },
    /// Operator intent changed.
    Override {
        service: String,
        target: Option<String>,
        action: OverrideAction,
        by: String,
        /// For `force_down`: when it lapses by itself (wall microseconds), so a drill that dies
        /// can never leave a target forced down for good.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_us: Option<u64>,
    },
    /// A drill began (its id is this event's sequence number).
    DrillStarted {
        service: String,
        fault: String,
        target: String,
        by: String,
    },
    /// A drill's client registered what undoes its fault, before installing it; the daemon
    /// undoes it itself if the client stops renewing its lease.
    DrillFault {
        id: u64,
        service: String,
        undo: Undo,
    },
    /// Checks of a target could not be made because of the monitor itself (out of file
    /// descriptors, no route from the monitor...): neither a pass nor a failure. Recorded at
    /// most once a minute per target; `suppressed` counts the ones since the last record.
    /// `resolved` is set on the one recorded when the target's checks work again.
    CheckerError {
        service: String,
        target: String,
        reason: String,
        suppressed: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resolved: bool,
    },
    /// A replica's replication lag (as its check measured it) went beyond the service's
    /// `max_lag` or, with `resolved`, came back to half of it or less (see `pg::lagwatch`).
    /// Recorded whether or not an incident is open: the "lag > 30 s" alert.
    ReplicationLag {
        service: String,
        target: String,
        bytes: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seconds: Option<f64>,
        max_lag: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resolved: bool,
    },
    /// A `compare` (drift) check found a target's value different from the active target's
    /// or, with `resolved`, the same again (see `probe::compare`).
    Drift {
        service: String,
        target: String,
        /// The compare check's name.
        check: String,
        /// The active target it was compared with, and the two values (shortened).
        primary: String,
        expected: String,
        found: String,
        /// `gate = true`: the target is not eligible while it drifts.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        gate: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resolved: bool,
    },
    /// A drill ended; the full report is in `data_dir/drills/drill-<id>.json`.
    DrillFinished {
        id: u64,
        service: String,
        ok: bool,
        detection_ms: Option<f64>,
        switch_ms: Option<f64>,
        rto_ms: Option<f64>,
        missed: Vec<String>,
        error: Option<String>,
    },
    IncidentOpened {
        id: u64,
        service: String,
        failed: Option<String>,
        to: Option<String>,
    },
    IncidentClosed {
        id: u64,
        service: String,
        by: String,
    },
    /// The disk did not take the event log's writes within the bound: the daemon went on
    /// without waiting (events are kept in memory and written, in order, when it does).
    LogBehind {
        /// Events waiting for the disk when this was noticed.
        behind: u64,
        /// The write error, when the disk answered with one rather than hanging.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A virtual IP's VRRP instance changed state on this node (`vrrp/`): `master` holds the
    /// VIP; `fault` resigned because a tracked service is down.
    VipState {
        vip: String,
        interface: String,
        vrid: u8,
        from: String,
        to: String,
        why: String,
        /// The master this node hears after the change (itself when master).
        master: Option<IpAddr>,
        /// This node: its host name and its own address on the VRRP link (two nodes may share
        /// a host name; the address tells them apart).
        #[serde(default)]
        node: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        local: Option<IpAddr>,
    },
    /// This node's place in the cluster changed (`[cluster] kind = "etcd"`): it started or
    /// stopped leading, or lost or regained etcd. Only the node concerned records it.
    ClusterRole {
        node: String,
        /// The leader this node sees (`None`: none, or cut off).
        leader: Option<String>,
        leading: bool,
        /// This node reaches etcd and its lease is alive.
        connected: bool,
        /// Why this node does not decide (`None` while it leads).
        why: Option<String>,
    },
    /// Every event waiting for the disk is written.
    LogCaughtUp {
        /// How long the log was behind.
        behind_ms: u64,
    },
    /// The client canary (`[[canary]]`, see `canary/`) sees clients sent to another address than
    /// the committed decision's for longer than the record's TTL plus a margin (a resolver
    /// ignoring TTLs, a provider not applying the change...). `resolved` is set on the one
    /// recorded when this resolver's answer agrees with the decision again.
    ClientsStale {
        service: String,
        canary: String,
        /// `system` or the resolver's address.
        resolver: String,
        /// What the resolver answers (and the target that has that address, if any).
        seen: std::net::IpAddr,
        seen_target: Option<String>,
        /// What the committed decision says.
        expected: std::net::IpAddr,
        expected_target: Option<String>,
        /// First answer that disagreed (wall microseconds).
        since_us: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resolved: bool,
    },
    /// What the client canary saw of an incident, per resolver: its last good answer from the
    /// old target, its first failed request, its first good answer from the target the decision
    /// named. The incident fold puts it in the incident's timeline and figures.
    ClientRto {
        service: String,
        incident: u64,
        canary: String,
        resolver: String,
        from: Option<String>,
        to: Option<String>,
        last_old_ok_us: Option<u64>,
        first_failed_us: Option<u64>,
        first_new_ok_us: u64,
        /// Failed requests from the first failed one to the first good one on the new target.
        failed: u32,
        /// `first_new_ok_us - first_failed_us`; `None` when the client saw no failure (a
        /// force-down drill, or a canary without a URL, which only resolves).
        rto_us: Option<u64>,
    },
}

/// One check result, as kept with a health flip for the incident report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSample {
    /// Start of the check, wall microseconds.
    pub at_us: u64,
    pub ok: bool,
    pub latency_us: u64,
    pub reason: crate::probe::Reason,
}

/// The event log's defaults for `[daemon]` `log_segment_size` and `log_retention` (the config
/// reads them from here, the log uses them when given no options).
pub const DEFAULT_SEGMENT_SIZE: u64 = 8 << 20;
pub const DEFAULT_RETENTION: std::time::Duration = std::time::Duration::from_secs(90 * 86_400);

/// How many recent check results a health flip carries.
pub const CHECK_SAMPLES: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Applied,
    Verified,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverrideAction {
    /// Take a target out of rotation (not eligible until enabled).
    Drain,
    /// Undo a drain.
    Enable,
    /// Pin a target as active while it is eligible.
    Switchover,
    /// Remove the pin.
    Clear,
    /// Make a target's check results count as failures (drills), until `unforce` or expiry.
    ForceDown,
    /// Undo `force_down`.
    Unforce,
}

impl Event {
    /// Short name of the kind, as in the JSON `kind` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::DaemonStarted { .. } => "daemon_started",
            Event::DaemonStopped { .. } => "daemon_stopped",
            Event::ConfigReloaded { .. } => "config_reloaded",
            Event::ConfigRejected { .. } => "config_rejected",
            Event::TargetUp { .. } => "target_up",
            Event::TargetDown { .. } => "target_down",
            Event::Decision { .. } => "decision",
            Event::Actuated { .. } => "actuated",
            Event::Switched { .. } => "switched",
            Event::DriftRepaired { .. } => "drift_repaired",
            Event::Override { .. } => "override",
            Event::DrillStarted { .. } => "drill_started",
            Event::DrillFault { .. } => "drill_fault",
            Event::DrillFinished { .. } => "drill_finished",
            Event::CheckerError { .. } => "checker_error",
            Event::ReplicationLag { .. } => "replication_lag",
            Event::Drift { .. } => "drift",
            Event::IncidentOpened { .. } => "incident_opened",
            Event::IncidentClosed { .. } => "incident_closed",
            Event::LogBehind { .. } => "log_behind",
            Event::LogCaughtUp { .. } => "log_caught_up",
            Event::VipState { .. } => "vip_state",
            Event::ClusterRole { .. } => "cluster_role",
            Event::ClientsStale { .. } => "clients_stale",
            Event::ClientRto { .. } => "client_rto",
        }
    }

    /// The service the event is about, if any.
    pub fn service(&self) -> Option<&str> {
        match self {
            Event::TargetUp { service, .. }
            | Event::TargetDown { service, .. }
            | Event::Decision { service, .. }
            | Event::Actuated { service, .. }
            | Event::Switched { service, .. }
            | Event::DriftRepaired { service, .. }
            | Event::Override { service, .. }
            | Event::DrillStarted { service, .. }
            | Event::DrillFault { service, .. }
            | Event::DrillFinished { service, .. }
            | Event::CheckerError { service, .. }
            | Event::ReplicationLag { service, .. }
            | Event::Drift { service, .. }
            | Event::IncidentOpened { service, .. }
            | Event::IncidentClosed { service, .. }
            | Event::ClientsStale { service, .. }
            | Event::ClientRto { service, .. } => Some(service),
            _ => None,
        }
    }

    /// One line for people (CLI, demo, logs).
    pub fn summary(&self) -> String {
        match self {
            Event::DaemonStarted { version, pid, .. } => format!("understudy {version} started (pid {pid})"),
            Event::DaemonStopped { reason } => format!("daemon stopped: {reason}"),
            Event::ConfigReloaded { services } => format!("config reloaded ({} services)", services.len()),
            Event::ConfigRejected { errors } => format!("config reload refused, old config kept: {errors}"),
            Event::TargetUp { service, target, streak, reason, .. } => {
                format!("{service}/{target} is UP after {streak} passing check(s): {reason}")
            }
            Event::TargetDown { service, target, streak, reason, .. } => {
                format!("{service}/{target} is DOWN after {streak} failed check(s): {reason}")
            }
            Event::Decision { service, epoch, from, to, reason, all_down, address, .. } => {
                let name = |t: &Option<String>| t.clone().unwrap_or_else(|| "(none)".into());
                let addr = address.map(|a| format!(" ({a})")).unwrap_or_default();
                let down = if *all_down { " [all targets down]" } else { "" };
                format!("{service}: {reason}: {} -> {}{addr}, epoch {epoch}{down}", name(from), name(to))
            }
            Event::Actuated { service, epoch, actuator, step, ok, detail, duration_us } => {
                let verdict = if *ok { "ok" } else { "FAILED" };
                let step = match step {
                    Step::Applied => "applied",
                    Step::Verified => "verified",
                };
                format!("{service}: {actuator} {step} epoch {epoch} {verdict} in {:.1} ms: {detail}", *duration_us as f64 / 1000.0)
            }
            Event::Switched { service, epoch, ok, steps, duration_us } => {
                let verdict = if *ok { "complete" } else { "FAILED" };
                format!("{service}: switch to epoch {epoch} {verdict} ({steps} actuator steps, {:.1} ms)", *duration_us as f64 / 1000.0)
            }
            Event::DriftRepaired { service, epoch, actuator, drift, ok, detail } => {
                let verdict = if *ok { "repaired" } else { "repair FAILED" };
                format!("{service}: {actuator} drifted from epoch {epoch} ({drift}); {verdict}: {detail}")
            }
            Event::Override { service, target, action, by, .. } => {
                let t = target.as_deref().map(|t| format!(" {t}")).unwrap_or_default();
                let action = match action {
                    OverrideAction::Drain => "drain",
                    OverrideAction::Enable => "enable",
                    OverrideAction::Switchover => "switchover to",
                    OverrideAction::Clear => "clear pin",
                    OverrideAction::ForceDown => "force down",
                    OverrideAction::Unforce => "unforce",
                };
                format!("{service}: operator {action}{t} (by {by})")
            }
            Event::DrillStarted { service, fault, target, by } => format!("{service}: drill started: {fault} on {target} (by {by})"),
            Event::DrillFault { id, service, undo } => {
                let how = match undo {
                    Undo::Unforce { target } => format!("lift the force-down of {target}"),
                    Undo::Command { cmd } => format!("run `{cmd}`"),
                    Undo::NftTable { table } => format!("delete nftables table {table}"),
                };
                format!("{service}: drill #{id} fault registered; the daemon will {how} if the drill's client goes away")
            }
            Event::DrillFinished { id, service, ok, rto_ms, missed, error, .. } => {
                let rto = rto_ms.map(|r| format!(", RTO {r:.0} ms")).unwrap_or_default();
                match (error, ok) {
                    (Some(e), _) => format!("{service}: drill #{id} FAILED: {e}"),
                    (None, true) => format!("{service}: drill #{id} passed{rto}"),
                    (None, false) => format!("{service}: drill #{id} missed targets{rto}: {}", missed.join("; ")),
                }
            }
            Event::CheckerError { service, target, reason, suppressed, resolved } => {
                let more = if *suppressed > 0 { format!(" ({suppressed} more since the last report)") } else { String::new() };
                if *resolved {
                    format!("{service}/{target}: checks work again after checker errors{more}: {reason}")
                } else {
                    format!("{service}/{target}: cannot check, the monitor is at fault, health unchanged: {reason}{more}")
                }
            }
            Event::ReplicationLag { service, target, bytes, seconds, max_lag, resolved } => {
                let lag = match seconds {
                    Some(s) => format!("{s:.1} s / {bytes} bytes"),
                    None => format!("{bytes} bytes"),
                };
                if *resolved {
                    format!("{service}/{target}: replication lag back to {lag} (max_lag {max_lag})")
                } else {
                    format!("{service}/{target}: replication lag {lag} exceeds max_lag {max_lag}")
                }
            }
            Event::Drift { service, target, check, primary, expected, found, gate, resolved } => {
                if *resolved {
                    format!("{service}/{target}: {check} matches {primary} again ({found})")
                } else {
                    let gate = if *gate { "; not eligible while it differs" } else { "" };
                    format!("{service}/{target}: {check} drifted: {found:?} where {primary} has {expected:?}{gate}")
                }
            }
            Event::IncidentOpened { id, service, failed, to } => format!(
                "incident #{id} opened: {service} lost {}, traffic on {}",
                failed.as_deref().unwrap_or("(none)"),
                to.as_deref().unwrap_or("(none)")
            ),
            Event::IncidentClosed { id, service, by } => format!("incident #{id} closed ({service}, by {by})"),
            Event::LogBehind { behind, error } => {
                let why = error.as_deref().map(|e| format!(": {e}")).unwrap_or_else(|| ": the disk is not answering".into());
                format!("event log behind by {behind}{why}; failover goes on, events are written when the disk takes them")
            }
            Event::LogCaughtUp { behind_ms } => format!("event log caught up after {:.1} s", *behind_ms as f64 / 1000.0),
            Event::VipState { vip, interface, vrid, from, to, why, node, local, .. } => {
                let on = match (node.is_empty(), local) {
                    (false, Some(l)) => format!(" on node {node} ({l})"),
                    (false, None) => format!(" on node {node}"),
                    (true, Some(l)) => format!(" on node {l}"),
                    (true, None) => String::new(),
                };
                format!("vip {vip} (vrid {vrid} on {interface}){on}: {from} -> {to}: {why}")
            }
            Event::ClusterRole { node, leading: true, .. } => format!("cluster: {node} leads; it decides and runs the actuators that act outside"),
            Event::ClusterRole { node, why, connected, .. } => {
                let why = why.as_deref().unwrap_or("it does not lead");
                if *connected { format!("cluster: {node} follows ({why})") } else { format!("cluster: {node} makes no decision: {why}; it keeps serving the last committed decisions") }
            }
            Event::ClientsStale { service, canary, resolver, seen, seen_target, expected, expected_target, resolved, .. } => {
                let name = |a: &std::net::IpAddr, t: &Option<String>| t.as_ref().map(|t| format!("{t} ({a})")).unwrap_or_else(|| a.to_string());
                if *resolved {
                    format!("{service}: canary {canary} via {resolver}: clients follow the decision again ({})", name(expected, expected_target))
                } else {
                    format!(
                        "{service}: canary {canary} via {resolver}: clients still on the old target: answered {}, decided {}",
                        name(seen, seen_target),
                        name(expected, expected_target)
                    )
                }
            }
            Event::ClientRto { service, incident, canary, resolver, to, failed, rto_us, .. } => {
                let to = to.as_deref().unwrap_or("the new target");
                match rto_us {
                    Some(r) => format!(
                        "{service}: incident #{incident}: clients (canary {canary} via {resolver}) reached {to}: client RTO {:.0} ms, {failed} failed request(s)",
                        *r as f64 / 1000.0
                    ),
                    None => format!("{service}: incident #{incident}: clients (canary {canary} via {resolver}) reached {to} without a failed request"),
                }
            }
        }
    }
}

/// An event as stored: with its sequence number and wall time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// 1, 2, 3... without gaps, for the whole life of the data directory. Never `u64::MAX`
    /// (a line claiming it is rejected when read, like a damaged one).
    #[serde(deserialize_with = "below_max")]
    pub seq: u64,
    /// Wall time, microseconds since the Unix epoch; before year 10000 (a line with a later
    /// time is rejected when read).
    #[serde(deserialize_with = "before_year_10000")]
    pub time_us: u64,
    pub event: Event,
}

/// 10000-01-01T00:00:00Z in microseconds since the Unix epoch.
pub const YEAR_10000_US: u64 = 253_402_300_800_000_000;

/// A number that can still be counted up from (sequence numbers, outbox ids).
pub fn below_max<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if v == u64::MAX {
        return Err(serde::de::Error::custom("out of range"));
    }
    Ok(v)
}

fn before_year_10000<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if v >= YEAR_10000_US {
        return Err(serde::de::Error::custom("time after year 9999"));
    }
    Ok(v)
}

/// RFC 3339 with microseconds, for people and the API. Times from year 10000 on (which no
/// record can hold) are shown as the largest one that can be written, never a panic.
pub fn format_time_us(us: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us.min(YEAR_10000_US - 1));
    humantime::format_rfc3339_micros(t).to_string()
}

/// How the daemon undoes a drill's fault when the drill's client stops renewing its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Undo {
    /// Lift the force-down of `target`.
    Unforce { target: String },
    /// Run the drill's restore command (`/bin/sh -c`), on the daemon's host.
    Command { cmd: String },
    /// Delete the nftables table the drill installed on the daemon's host.
    NftTable { table: String },
}

impl Undo {
    /// The shell command that undoes this fault, for the kinds that run one.
    pub fn command(&self) -> Option<String> {
        match self {
            Undo::Unforce { .. } => None,
            Undo::Command { cmd } => Some(cmd.clone()),
            Undo::NftTable { table } => Some(format!("nft delete table inet {table}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, time_us: u64) -> String {
        crate::crclog::encode(&Record { seq, time_us, event: Event::DaemonStopped { reason: "x".into() } })
    }

    #[test]
    fn times_from_year_10000_and_the_largest_seq_are_rejected_and_never_panic_formatting() {
        assert_eq!(format_time_us(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format_time_us(u64::MAX), "9999-12-31T23:59:59.999999Z");
        assert!(crate::crclog::decode::<Record>(&line(1, YEAR_10000_US - 1)).is_some());
        assert!(crate::crclog::decode::<Record>(&line(1, YEAR_10000_US)).is_none());
        assert!(crate::crclog::decode::<Record>(&line(u64::MAX, 1)).is_none());
        assert!(crate::crclog::decode::<Record>(&line(u64::MAX - 1, 1)).is_some());
    }
}
