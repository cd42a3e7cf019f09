//! Which events become notifications, and what they say. Pure: a fold over event records.
//!
//! The [`Planner`] sees every record in log order (live, and again at start-up when the
//! history is replayed) and returns the [`Notice`]s that follow from it. It keeps its own
//! [`IncidentBook`] so notices carry the incident's facts (timeline, detection, switch, RTO)
//! as they stand after the event. Because it is a pure fold, replaying the log rebuilds its
//! state exactly; the dispatcher only keeps the notices of records it has not planned before.
//!
//! # Rules
//! | event | notice | severity |
//! | --- | --- | --- |
//! | incident opened | `incident_opened` (open) | warning; critical when nothing is eligible; info during a drill |
//! | decision, switch done, target up/down, override, while open | `incident_updated` | the incident's |
//! | actuator failed while an incident is open | `actuator_failed` (update, escalates) | critical |
//! | all targets down while an incident is open | `all_down` (update, escalates) | critical |
//! | daemon started while an incident is open | `daemon_restarted` (update) | the incident's |
//! | incident closed | `incident_closed` (close) | the incident's |
//! | actuator failed, no incident | `actuator_failed` condition, closed by its next success | critical |
//! | all targets down, no incident | `all_down` condition, closed by a decision with a target | critical |
//! | config reload refused | `config_rejected` condition, closed by an accepted config | warning |
//! | clients still on the old target (client canary) | `clients_stale` condition per service, canary and resolver, closed when they follow; also an `incident_updated` while an incident is open | critical during an incident, else warning |
//! | client-observed figures of an open incident (client canary) | `incident_updated` | the incident's |
//! | a VIP taken over by this node (`[[vip]]`: backup or fault -> master) | `vip_state` condition per VIP and node, closed when this node gives the VIP up | warning; info for the address owner taking its own address at start |
//! | this node's VIP instance in fault (a tracked service is down: it resigned) | `vip_state` condition per VIP and node, closed when it leaves fault | warning |
//! | a replica's lag beyond `max_lag` | `replication_lag` condition per target, closed when back to half of it | warning |
//! | a `compare` check finds a target out of step | `drift` condition per target and check, closed when it matches again | warning |
//!
//! An incident that opens while a drill runs on its service is a drill: `info`, and its summaries
//! say so, so a channel with `min_severity = "warning"` does not page anyone for a rehearsal
//! (a failing actuator still escalates it to `critical`: that failure is real).
//!
//! A VIP instance that starts as backup, or stops as backup, is no switch and sends nothing. VIP
//! notices name the VIP, the node (host name and its address on the VRRP link: two nodes may
//! share a host name) and the old and new state; each node sends its own, so when a master dies
//! the node taking over tells (the dead one cannot). A flapping VIP is not damped here: every
//! open and close is sent (as for every other condition, repeats of an open one are not).
//!
//! An incident's severity only rises. Notices that open, close or escalate are `urgent`; plain
//! updates may be grouped by a channel's `group_window` (see `outbox`).

use std::collections::BTreeMap;

use crate::events::report as wire;
use crate::events::incident::{Incident, IncidentBook};
use crate::events::{Event, Record};

use super::notice::{Notice, NoticeEvent, Phase, Severity, Status, human_ms};

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Planner {
    /// Not in a log snapshot: it is the snapshot's own `IncidentBook` (the same fold), put
    /// back with [`Planner::restore_book`].
    #[serde(skip)]
    book: IncidentBook,
    /// Severity announced for each open incident, and the one it opened with.
    severity: BTreeMap<u64, Severity>,
    opened_severity: BTreeMap<u64, Severity>,
    /// Whether each service's last decision had no eligible target.
    last_all_down: BTreeMap<String, bool>,
    /// Open conditions and the last notice about each (Alertmanager re-sends these).
    open: BTreeMap<String, Notice>,
    /// Services with a drill running (drill id), and incidents a drill opened.
    drills: BTreeMap<String, u64>,
    drill_incidents: std::collections::BTreeSet<u64>,
}

fn incident_condition(service: &str, id: u64) -> String {
    format!("understudy-{service}-incident-{id}")
}

/// What one notice is about, before the common fields are filled in.
struct Draft {
    condition: String,
    alertname: &'static str,
    event: NoticeEvent,
    phase: Phase,
    severity: Severity,
    escalated_from: Option<Severity>,
    urgent: bool,
    service: Option<String>,
    target: Option<String>,
    summary: String,
    details: Vec<String>,
    incident: Option<wire::Incident>,
}

fn incident_details(i: &Incident) -> Vec<String> {
    let w = wire::Incident::from(i);
    let mut d = vec![format!(
        "failed target: {}; traffic on: {}",
        i.failed.as_deref().unwrap_or("-"),
        i.to.as_deref().unwrap_or("(none: failing closed)")
    )];
    d.push(format!(
        "detection {} (first failed check -> marked down), switch {} (marked down -> switched), RTO {}",
        human_ms(w.detection_ms),
        human_ms(w.switch_ms),
        human_ms(w.rto_ms)
    ));
    if i.actuator_failures > 0 {
        d.push(format!("actuator failures: {}", i.actuator_failures));
    }
    if let Some(r) = &w.recovered {
        d.push(format!("{} recovered at {r}", i.failed.as_deref().unwrap_or("the failed target")));
    }
    for c in &w.client {
        d.push(format!(
            "clients (canary {} via {}): client RTO {} (first failed request -> first good answer from the new target), {} failed request(s)",
            c.canary,
            c.resolver,
            human_ms(c.client_rto_ms),
            c.failed_requests
        ));
    }
    d
}

impl Planner {
    /// Put back the incident book a snapshot leaves out (the same fold over the same records).
    pub fn restore_book(&mut self, book: IncidentBook) {
        self.book = book;
    }

    /// The incidents as this planner has folded them.
    pub fn incidents(&self) -> &IncidentBook {
        &self.book
    }

    /// Open conditions with the latest notice about each.
    pub fn open_conditions(&self) -> impl Iterator<Item = &Notice> {
        self.open.values()
    }

    /// Fold `r` in and return the notices it causes.
    pub fn observe(&mut self, r: &Record) -> Vec<Notice> {
        let follow = self.book.react(r);
        self.book.apply(r);
        let opens = follow.iter().any(|e| matches!(e, Event::IncidentOpened { .. }));
        let closes = follow.iter().any(|e| matches!(e, Event::IncidentClosed { .. }));
        let mut drafts = Vec::new();
        match &r.event {
            Event::Decision { service, all_down, .. } => {
                self.last_all_down.insert(service.clone(), *all_down);
                let open = self.book.open_for(service).cloned();
                match open {
                    Some(inc) if !closes => {
                        if *all_down {
                            drafts.push(self.escalate(&inc, NoticeEvent::AllDown, format!("{service}: no target is eligible (all down), incident #{} open", inc.id)));
                        } else {
                            drafts.push(self.update(&inc, NoticeEvent::IncidentUpdated, format!("{service}: incident #{}: {}", inc.id, r.event.summary())));
                        }
                    }
                    _ if opens || closes => {}
                    _ => {
                        let cond = format!("understudy-{service}-all-down");
                        let is_open = self.open.contains_key(&cond);
                        if *all_down && !is_open {
                            drafts.push(Draft {
                                condition: cond,
                                alertname: "UnderstudyAllDown",
                                event: NoticeEvent::AllDown,
                                phase: Phase::Open,
                                severity: Severity::Critical,
                                escalated_from: None,
                                urgent: true,
                                service: Some(service.clone()),
                                target: None,
                                summary: format!("{service}: no target is eligible (all down)"),
                                details: vec![r.event.summary()],
                                incident: None,
                            });
                        } else if !*all_down && is_open {
                            drafts.push(self.close_condition(&cond, format!("{service}: a target is eligible again: {}", r.event.summary())));
                        }
                    }
                }
            }
            Event::IncidentOpened { id, service, failed, to } => {
                if let Some(inc) = self.book.get(*id).cloned() {
                    let critical = to.is_none() || self.last_all_down.get(service).copied().unwrap_or(false);
                    let drill = self.drills.contains_key(service);
                    let severity = match (drill, critical) {
                        (true, _) => Severity::Info,
                        (false, true) => Severity::Critical,
                        (false, false) => Severity::Warning,
                    };
                    if drill {
                        self.drill_incidents.insert(*id);
                    }
                    self.severity.insert(*id, severity);
                    self.opened_severity.insert(*id, severity);
                    let f = failed.as_deref().unwrap_or("(none)");
                    let mut summary = match to {
                        Some(t) => format!("{service}: {f} failed, traffic moved to {t} (incident #{id})"),
                        None => format!("{service}: {f} failed and no target is eligible (incident #{id})"),
                    };
                    if drill {
                        summary = format!("drill: {summary}");
                    }
                    drafts.push(Draft {
                        condition: incident_condition(service, *id),
                        alertname: "UnderstudyFailover",
                        event: NoticeEvent::IncidentOpened,
                        phase: Phase::Open,
                        severity,
                        escalated_from: None,
                        urgent: true,
                        service: Some(service.clone()),
                        target: failed.clone(),
                        summary,
                        details: incident_details(&inc),
                        incident: Some(wire::Incident::from(&inc)),
                    });
                }
            }
            Event::IncidentClosed { id, service, by } => {
                if let Some(inc) = self.book.get(*id).cloned() {
                    let severity = self.severity.remove(id).unwrap_or(Severity::Warning);
                    // Alertmanager resolves the alert it opened with the first severity too.
                    let escalated_from = self.opened_severity.remove(id).filter(|s| *s != severity);
                    let lasted = inc.closed_us.map(|c| human_ms(Some(c.saturating_sub(inc.opened_us) as f64 / 1000.0))).unwrap_or_default();
                    let mut summary = match (by.as_str(), &inc.failed) {
                        ("auto", Some(f)) => format!("{service}: traffic is back on {f}, incident #{id} closed after {lasted}"),
                        _ => format!("{service}: incident #{id} closed by {by} after {lasted}"),
                    };
                    if self.drill_incidents.remove(id) {
                        summary = format!("drill: {summary}");
                    }
                    drafts.push(Draft {
                        condition: incident_condition(service, *id),
                        alertname: "UnderstudyFailover",
                        event: NoticeEvent::IncidentClosed,
                        phase: Phase::Close,
                        severity,
                        escalated_from,
                        urgent: true,
                        service: Some(service.clone()),
                        target: inc.failed.clone(),
                        summary,
                        details: incident_details(&inc),
                        incident: Some(wire::Incident::from(&inc)),
                    });
                }
            }
            Event::TargetDown { service, .. } | Event::TargetUp { service, .. } | Event::Override { service, .. } => {
                if let Some(inc) = self.book.open_for(service).cloned() {
                    drafts.push(self.update(&inc, NoticeEvent::IncidentUpdated, format!("{service}: incident #{}: {}", inc.id, r.event.summary())));
                }
            }
            Event::DrillStarted { service, .. } => {
                self.drills.insert(service.clone(), r.seq);
            }
            Event::DrillFinished { service, .. } => {
                self.drills.remove(service);
            }
            Event::Switched { service, epoch, .. } => {
                // The switch is complete (or failed: the failing actuator already escalated).
                if let Some(inc) = self.book.open_for(service).cloned()
                    && *epoch == inc.epoch
                {
                    drafts.push(self.update(&inc, NoticeEvent::IncidentUpdated, format!("{service}: incident #{}: {}", inc.id, r.event.summary())));
                }
            }
            Event::Actuated { service, actuator, ok, .. } => {
                // A successful step is in the timeline; the `switched` event announces the switch.
                let open = self.book.open_for(service).cloned();
                let cond = format!("understudy-{service}-actuator-{actuator}");
                if let Some(inc) = open
                    && !*ok
                {
                    drafts.push(self.escalate(&inc, NoticeEvent::ActuatorFailed, format!("{service}: incident #{}: {}", inc.id, r.event.summary())));
                }
                let is_open = self.open.contains_key(&cond);
                if !*ok && !is_open && self.book.open_for(service).is_none() {
                    drafts.push(Draft {
                        condition: cond,
                        alertname: "UnderstudyActuatorFailed",
                        event: NoticeEvent::ActuatorFailed,
                        phase: Phase::Open,
                        severity: Severity::Critical,
                        escalated_from: None,
                        urgent: true,
                        service: Some(service.clone()),
                        target: None,
                        summary: r.event.summary(),
                        details: vec![format!("actuator {actuator} failed; traffic may not be where understudy decided it should be")],
                        incident: None,
                    });
                } else if *ok && is_open {
                    drafts.push(self.close_condition(&cond, format!("{service}: actuator {actuator} works again: {}", r.event.summary())));
                }
            }
            Event::CheckerError { service, target, resolved, .. } => {
                let cond = format!("understudy-{service}-{target}-checker-error");
                let is_open = self.open.contains_key(&cond);
                if *resolved {
                    if is_open {
                        drafts.push(self.close_condition(&cond, r.event.summary()));
                    }
                } else {
                    drafts.push(Draft {
                        condition: cond,
                        alertname: "UnderstudyCheckerError",
                        event: NoticeEvent::CheckerError,
                        phase: if is_open { Phase::Update } else { Phase::Open },
                        severity: Severity::Warning,
                        escalated_from: None,
                        urgent: !is_open,
                        service: Some(service.clone()),
                        target: Some(target.clone()),
                        summary: r.event.summary(),
                        details: vec!["the monitor cannot check this target; its health is frozen at its last verdict until checks work again".into()],
                        incident: None,
                    });
                }
            }
            Event::ReplicationLag { service, target, resolved, .. } => {
                let cond = format!("understudy-{service}-{target}-replication-lag");
                drafts.extend(self.condition(&cond, *resolved, || Draft {
                    condition: cond.clone(),
                    alertname: "UnderstudyReplicationLag",
                    event: NoticeEvent::ReplicationLag,
                    phase: Phase::Open,
                    severity: Severity::Warning,
                    escalated_from: None,
                    urgent: true,
                    service: Some(service.clone()),
                    target: Some(target.clone()),
                    summary: r.event.summary(),
                    details: vec!["a standby this far behind is not eligible for promotion; a failover now would lose what it has not received".into()],
                    incident: None,
                }, r));
            }
            Event::Drift { service, target, check, resolved, gate, .. } => {
                let cond = format!("understudy-{service}-{target}-drift-{check}");
                let gate = if *gate { "it is not eligible for failover until it matches" } else { "it stays eligible (gate = false)" };
                drafts.extend(self.condition(&cond, *resolved, || Draft {
                    condition: cond.clone(),
                    alertname: "UnderstudyDrift",
                    event: NoticeEvent::Drift,
                    phase: Phase::Open,
                    severity: Severity::Warning,
                    escalated_from: None,
                    urgent: true,
                    service: Some(service.clone()),
                    target: Some(target.clone()),
                    summary: r.event.summary(),
                    details: vec![format!("the backup is out of step with the active target ({check}); {gate}")],
                    incident: None,
                }, r));
            }
            Event::ClientsStale { service, canary, resolver, resolved, seen_target, .. } => {
                let cond = format!("understudy-{service}-clients-stale-{canary}-{resolver}");
                let is_open = self.open.contains_key(&cond);
                if *resolved {
                    if is_open {
                        drafts.push(self.close_condition(&cond, r.event.summary()));
                    }
                } else if !is_open {
                    // During an incident the old target is the one that failed: clients get errors.
                    let severity = if self.book.open_for(service).is_some() { Severity::Critical } else { Severity::Warning };
                    drafts.push(Draft {
                        condition: cond,
                        alertname: "UnderstudyClientsStale",
                        event: NoticeEvent::ClientsStale,
                        phase: Phase::Open,
                        severity,
                        escalated_from: None,
                        urgent: true,
                        service: Some(service.clone()),
                        target: seen_target.clone(),
                        summary: r.event.summary(),
                        details: vec![
                            "the client canary's resolver still sends clients to another target than understudy decided, past the record's TTL and margin: \
                             a resolver ignoring TTLs, or a DNS provider not applying the change"
                                .into(),
                        ],
                        incident: None,
                    });
                }
                if let Some(inc) = self.book.open_for(service).cloned() {
                    drafts.push(self.update(&inc, NoticeEvent::IncidentUpdated, format!("{service}: incident #{}: {}", inc.id, r.event.summary())));
                }
            }
            Event::ClientRto { service, incident, .. } => {
                if let Some(inc) = self.book.get(*incident).filter(|i| i.open && i.service == *service).cloned() {
                    drafts.push(self.update(&inc, NoticeEvent::IncidentUpdated, format!("{service}: incident #{}: {}", inc.id, r.event.summary())));
                }
            }
            Event::VipState { vip, interface, vrid, from, to, why, master, node, local } => {
                let id = local.map(|l| l.to_string()).unwrap_or_else(|| node.clone());
                let who = match local {
                    Some(l) if !node.is_empty() => format!("node {node} ({l})"),
                    Some(l) => format!("node {l}"),
                    None => format!("node {node}"),
                };
                let held = format!("understudy-vip-{vip}-{id}");
                let fault = format!("understudy-vip-{vip}-{id}-fault");
                let details = vec![
                    format!("vip {vip}, vrid {vrid} on {interface}, {who}: {from} -> {to}"),
                    format!("why: {why}"),
                    format!("master now: {}", master.map(|m| m.to_string()).unwrap_or_else(|| "(none heard)".into())),
                ];
                if to != "master" && self.open.contains_key(&held) {
                    let mut d = self.close_condition(&held, format!("vip {vip}: {who} gave the VIP up ({from} -> {to}): {why}"));
                    d.details = details.clone();
                    drafts.push(d);
                }
                if to != "fault" && self.open.contains_key(&fault) {
                    let mut d = self.close_condition(&fault, format!("vip {vip}: {who} left fault ({from} -> {to}): {why}"));
                    d.details = details.clone();
                    drafts.push(d);
                }
                if to == "fault" && !self.open.contains_key(&fault) {
                    drafts.push(Draft {
                        condition: fault,
                        alertname: "UnderstudyVipFault",
                        event: NoticeEvent::VipState,
                        phase: Phase::Open,
                        severity: Severity::Warning,
                        escalated_from: None,
                        urgent: true,
                        service: None,
                        target: None,
                        summary: format!("vip {vip}: {who} resigned, a tracked service is down ({from} -> {to}): {why}"),
                        details,
                        incident: None,
                    });
                } else if to == "master" && !self.open.contains_key(&held) {
                    // The address owner taking its own address at start-up is no failure.
                    let severity = if from == "initialize" { Severity::Info } else { Severity::Warning };
                    drafts.push(Draft {
                        condition: held,
                        alertname: "UnderstudyVipTakeover",
                        event: NoticeEvent::VipState,
                        phase: Phase::Open,
                        severity,
                        escalated_from: None,
                        urgent: true,
                        service: None,
                        target: None,
                        summary: format!("vip {vip}: {who} took the VIP over ({from} -> {to}): {why}"),
                        details,
                        incident: None,
                    });
                }
            }
            Event::ConfigRejected { errors } => {
                let cond = "understudy-config-rejected".to_string();
                let phase = if self.open.contains_key(&cond) { Phase::Update } else { Phase::Open };
                drafts.push(Draft {
                    condition: cond,
                    alertname: "UnderstudyConfigRejected",
                    event: NoticeEvent::ConfigRejected,
                    phase,
                    severity: Severity::Warning,
                    escalated_from: None,
                    urgent: true,
                    service: None,
                    target: None,
                    summary: "config reload refused; the previous config keeps running".into(),
                    details: errors.lines().map(str::to_string).collect(),
                    incident: None,
                });
            }
            Event::LogBehind { behind, error } => {
                let cond = "understudy-event-log-behind".to_string();
                if !self.open.contains_key(&cond) {
                    drafts.push(Draft {
                        condition: cond,
                        alertname: "UnderstudyEventLogBehind",
                        event: NoticeEvent::EventLogBehind,
                        phase: Phase::Open,
                        severity: Severity::Warning,
                        escalated_from: None,
                        urgent: true,
                        service: None,
                        target: None,
                        summary: format!("event log behind by {behind}"),
                        details: vec![r.event.summary()].into_iter().chain(error.clone()).collect(),
                        incident: None,
                    });
                }
            }
            Event::ClusterRole { node, connected: false, why, .. } => {
                let cond = format!("understudy-cluster-cut-off-{node}");
                if !self.open.contains_key(&cond) {
                    drafts.push(Draft {
                        condition: cond,
                        alertname: "UnderstudyClusterCutOff",
                        event: NoticeEvent::ClusterCutOff,
                        phase: Phase::Open,
                        severity: Severity::Warning,
                        escalated_from: None,
                        urgent: true,
                        service: None,
                        target: None,
                        summary: format!("cluster node {node} is cut off from etcd: it makes no decision and serves the last committed ones"),
                        details: why.iter().cloned().collect(),
                        incident: None,
                    });
                }
            }
            Event::ClusterRole { node, connected: true, .. } => {
                let cond = format!("understudy-cluster-cut-off-{node}");
                if self.open.contains_key(&cond) {
                    drafts.push(self.close_condition(&cond, r.event.summary()));
                }
            }
            Event::LogCaughtUp { .. } => {
                let cond = "understudy-event-log-behind";
                if self.open.contains_key(cond) {
                    drafts.push(self.close_condition(cond, r.event.summary()));
                }
            }
            Event::ConfigReloaded { .. } | Event::DaemonStarted { .. } => {
                let cond = "understudy-config-rejected";
                if self.open.contains_key(cond) {
                    drafts.push(self.close_condition(cond, "a config was accepted; the refused reload no longer matters".into()));
                }
                if let Event::DaemonStarted { pid, .. } = &r.event {
                    let open: Vec<Incident> = self.book.all().filter(|i| i.open).cloned().collect();
                    for inc in open {
                        let s = format!("{}: understudy restarted (pid {pid}) while incident #{} is open; it is still being tracked", inc.service, inc.id);
                        drafts.push(self.update(&inc, NoticeEvent::DaemonRestarted, s));
                    }
                }
            }
            _ => {}
        }
        drafts.into_iter().map(|d| self.finish(d, r)).collect()
    }

    fn update(&self, inc: &Incident, event: NoticeEvent, summary: String) -> Draft {
        let severity = self.severity.get(&inc.id).copied().unwrap_or(Severity::Warning);
        let summary = if self.drill_incidents.contains(&inc.id) { format!("drill: {summary}") } else { summary };
        Draft {
            condition: incident_condition(&inc.service, inc.id),
            alertname: "UnderstudyFailover",
            event,
            phase: Phase::Update,
            severity,
            escalated_from: None,
            urgent: false,
            service: Some(inc.service.clone()),
            target: inc.failed.clone(),
            summary,
            details: incident_details(inc),
            incident: Some(wire::Incident::from(inc)),
        }
    }

    fn escalate(&mut self, inc: &Incident, event: NoticeEvent, summary: String) -> Draft {
        let before = self.severity.get(&inc.id).copied().unwrap_or(Severity::Warning);
        self.severity.insert(inc.id, Severity::Critical);
        let mut d = self.update(inc, event, summary);
        d.severity = Severity::Critical;
        d.escalated_from = (before != Severity::Critical).then_some(before);
        d.urgent = true;
        d
    }

    /// A condition of its own (not an incident's): `open` when not yet open, closed by a
    /// `resolved` event when open; a repeated opening event while open is folded into it.
    fn condition(&self, cond: &str, resolved: bool, open: impl FnOnce() -> Draft, r: &Record) -> Option<Draft> {
        let is_open = self.open.contains_key(cond);
        match (resolved, is_open) {
            (true, true) => Some(self.close_condition(cond, r.event.summary())),
            (false, false) => Some(open()),
            _ => None,
        }
    }

    fn close_condition(&self, cond: &str, summary: String) -> Draft {
        let last = &self.open[cond];
        Draft {
            condition: cond.to_string(),
            alertname: match last.alertname.as_str() {
                "UnderstudyAllDown" => "UnderstudyAllDown",
                "UnderstudyActuatorFailed" => "UnderstudyActuatorFailed",
                "UnderstudyCheckerError" => "UnderstudyCheckerError",
                "UnderstudyEventLogBehind" => "UnderstudyEventLogBehind",
                "UnderstudyClientsStale" => "UnderstudyClientsStale",
                "UnderstudyClusterCutOff" => "UnderstudyClusterCutOff",
                "UnderstudyVipTakeover" => "UnderstudyVipTakeover",
                "UnderstudyVipFault" => "UnderstudyVipFault",
                "UnderstudyReplicationLag" => "UnderstudyReplicationLag",
                "UnderstudyDrift" => "UnderstudyDrift",
                _ => "UnderstudyConfigRejected",
            },
            event: last.event,
            phase: Phase::Close,
            severity: last.severity,
            escalated_from: None,
            urgent: true,
            service: last.service.clone(),
            target: last.target.clone(),
            summary,
            details: last.details.clone(),
            incident: None,
        }
    }

    fn finish(&mut self, d: Draft, r: &Record) -> Notice {
        let started_us = match d.phase {
            Phase::Open => r.time_us,
            _ => self.open.get(&d.condition).map(|n| n.started_us).unwrap_or(r.time_us),
        };
        let closed = d.phase == Phase::Close;
        let n = Notice {
            key: Notice::key_for(&d.condition, d.event, r.seq, r.time_us),
            condition: d.condition,
            alertname: d.alertname.to_string(),
            event: d.event,
            phase: d.phase,
            status: if closed { Status::Resolved } else { Status::Firing },
            severity: d.severity,
            escalated_from: d.escalated_from,
            urgent: d.urgent,
            service: d.service,
            target: d.target,
            summary: d.summary,
            details: d.details,
            incident: d.incident,
            started_us,
            ended_us: closed.then_some(r.time_us),
            cause: Some(wire::EventRecord::from(r)),
            time_us: r.time_us,
        };
        if closed {
            self.open.remove(&n.condition);
        } else {
            self.open.insert(n.condition.clone(), n.clone());
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Reason;
    use crate::events::Step;
    use crate::health::Health;

    struct Feed {
        planner: Planner,
        book: IncidentBook,
        records: Vec<Record>,
    }

    impl Feed {
        fn new() -> Feed {
            Feed { planner: Planner::default(), book: IncidentBook::default(), records: Vec::new() }
        }
        /// As the daemon does: append, react, append what follows; the planner sees each.
        fn push(&mut self, t: u64, e: Event) -> Vec<Notice> {
            let r = Record { seq: self.records.len() as u64 + 1, time_us: t, event: e };
            let follow = self.book.react(&r);
            self.book.apply(&r);
            let mut out = self.planner.observe(&r);
            self.records.push(r);
            for e in follow {
                out.extend(self.push(t, e));
            }
            out
        }
    }

    fn decision(epoch: u64, from: (&str, usize), to: Option<(&str, usize)>, reason: Reason, all_down: bool) -> Event {
        Event::Decision {
            service: "www".into(),
            epoch,
            from: Some(from.0.into()),
            to: to.map(|t| t.0.into()),
            from_rank: Some(from.1),
            to_rank: to.map(|t| t.1),
            address: None,
            reason,
            all_down,
        }
    }

    fn down(target: &str) -> Event {
        Event::TargetDown {
            service: "www".into(),
            target: target.into(),
            from: Health::Up,
            streak: 3,
            first_failure_us: 1,
            last_ok_us: None,
            reason: "refused".into(),
            checks: Vec::new(),
        }
    }

    fn actuated(epoch: u64, ok: bool) -> Event {
        Event::Actuated { service: "www".into(), epoch, actuator: "hooks".into(), step: Step::Applied, ok, detail: String::new(), duration_us: 1 }
    }

    #[test]
    fn failover_update_escalation_and_failback() {
        let mut f = Feed::new();
        assert!(f.push(1, decision(1, ("primary", 0), Some(("primary", 0)), Reason::Initial, false)).is_empty());
        assert!(f.push(2, down("primary")).is_empty(), "a flip alone is not an incident");
        let n = f.push(3, decision(2, ("primary", 0), Some(("backup", 1)), Reason::Failover, false));
        assert_eq!(n.len(), 1);
        assert_eq!((n[0].event, n[0].phase, n[0].severity), (NoticeEvent::IncidentOpened, Phase::Open, Severity::Warning));
        assert_eq!(n[0].condition, "understudy-www-incident-1");
        assert_eq!(n[0].target.as_deref(), Some("primary"));
        assert!(n[0].summary.contains("traffic moved to backup"), "{}", n[0].summary);

        assert!(f.push(4, actuated(2, true)).is_empty(), "a successful step is only in the timeline");
        let n = f.push(4, Event::Switched { service: "www".into(), epoch: 2, ok: true, steps: 1, duration_us: 5 });
        assert_eq!((n[0].event, n[0].urgent), (NoticeEvent::IncidentUpdated, false));
        let n = f.push(5, actuated(2, false));
        assert_eq!((n[0].event, n[0].severity, n[0].escalated_from, n[0].urgent), (NoticeEvent::ActuatorFailed, Severity::Critical, Some(Severity::Warning), true));
        assert_eq!(n.len(), 1, "inside an incident a failed actuator is an update, not a second condition");

        let n = f.push(6, decision(3, ("backup", 1), Some(("primary", 0)), Reason::Failback, false));
        assert_eq!(n.len(), 1, "{n:?}");
        assert_eq!((n[0].event, n[0].status, n[0].severity), (NoticeEvent::IncidentClosed, Status::Resolved, Severity::Critical));
        assert_eq!(n[0].started_us, 3);
        assert_eq!(f.planner.open_conditions().count(), 0);
        // Keys are unique per notice and derived from the record.
        assert_eq!(n[0].key, "understudy-www-incident-1:incident_closed:9");
    }

    #[test]
    fn an_incident_during_a_drill_is_info_and_says_drill() {
        let mut f = Feed::new();
        f.push(1, decision(1, ("primary", 0), Some(("primary", 0)), Reason::Initial, false));
        f.push(2, Event::DrillStarted { service: "www".into(), fault: "force_down".into(), target: "primary".into(), by: "cli".into() });
        let n = f.push(3, decision(2, ("primary", 0), Some(("backup", 1)), Reason::Failover, false));
        assert_eq!(n[0].severity, Severity::Info);
        assert!(n[0].summary.starts_with("drill: www: primary failed"), "{}", n[0].summary);
        let n = f.push(4, actuated(2, false));
        assert_eq!(n[0].severity, Severity::Critical, "a failing actuator during a drill is real");
        f.push(5, Event::DrillFinished {
            id: 2,
            service: "www".into(),
            ok: true,
            detection_ms: None,
            switch_ms: None,
            rto_ms: None,
            missed: vec![],
            error: None,
        });
        let n = f.push(6, decision(3, ("backup", 1), Some(("primary", 0)), Reason::Failback, false));
        assert!(n[0].summary.starts_with("drill: www: traffic is back on primary"), "{}", n[0].summary);
        // The next real failure is not a drill.
        let n = f.push(7, decision(4, ("primary", 0), Some(("backup", 1)), Reason::Failover, false));
        assert_eq!((n[0].severity, n[0].summary.starts_with("drill")), (Severity::Warning, false));
    }

    #[test]
    fn replay_gives_the_same_notices() {
        let mut f = Feed::new();
        let mut live = Vec::new();
        live.extend(f.push(1, decision(1, ("primary", 0), Some(("primary", 0)), Reason::Initial, false)));
        live.extend(f.push(2, down("primary")));
        live.extend(f.push(3, decision(2, ("primary", 0), Some(("backup", 1)), Reason::Failover, false)));
        live.extend(f.push(4, Event::DaemonStarted { version: "x".into(), pid: 9, config: "c".into() }));
        assert_eq!(live.last().unwrap().event, NoticeEvent::DaemonRestarted);
        let records = f.records.clone();
        let mut p = Planner::default();
        let replayed: Vec<Notice> = records.iter().flat_map(|r| p.observe(r)).collect();
        assert_eq!(replayed, live);
    }

    #[test]
    fn checker_errors_open_one_condition_per_target_and_resolve_it() {
        let mut f = Feed::new();
        let err = |resolved| Event::CheckerError {
            service: "www".into(),
            target: "primary".into(),
            reason: "checker error: the monitor is out of file descriptors (EMFILE)".into(),
            suppressed: 0,
            resolved,
        };
        let n = f.push(1, err(false));
        assert_eq!(n.len(), 1);
        assert_eq!((n[0].event, n[0].phase, n[0].severity), (NoticeEvent::CheckerError, Phase::Open, Severity::Warning));
        assert_eq!(n[0].target.as_deref(), Some("primary"));
        let n = f.push(2, err(false));
        assert_eq!((n[0].phase, n[0].condition.as_str()), (Phase::Update, "understudy-www-primary-checker-error"));
        let n = f.push(3, err(true));
        assert_eq!((n[0].event, n[0].phase), (NoticeEvent::CheckerError, Phase::Close));
        assert!(f.push(4, err(true)).is_empty(), "nothing open, nothing to resolve");
    }

    #[test]
    fn replication_lag_and_drift_are_conditions_of_their_own_outside_incidents() {
        let mut f = Feed::new();
        let lag = |resolved, seconds| Event::ReplicationLag { service: "db".into(), target: "pg2".into(), bytes: 4000, seconds: Some(seconds), max_lag: "30s".into(), resolved };
        let n = f.push(1, lag(false, 31.0));
        assert_eq!(n.len(), 1);
        assert_eq!((n[0].event, n[0].phase, n[0].severity, n[0].incident.is_none()), (NoticeEvent::ReplicationLag, Phase::Open, Severity::Warning, true));
        assert_eq!((n[0].condition.as_str(), n[0].target.as_deref()), ("understudy-db-pg2-replication-lag", Some("pg2")));
        assert!(n[0].summary.contains("exceeds max_lag 30s"), "{}", n[0].summary);
        assert!(f.push(2, lag(false, 40.0)).is_empty(), "a repeat (after a restart) folds into the open condition");
        let n = f.push(3, lag(true, 0.0));
        assert_eq!((n[0].event, n[0].phase), (NoticeEvent::ReplicationLag, Phase::Close));
        assert!(f.push(4, lag(true, 0.0)).is_empty(), "nothing open, nothing to resolve");

        let drift = |resolved| Event::Drift {
            service: "www".into(),
            target: "backup".into(),
            check: "version".into(),
            primary: "primary".into(),
            expected: "1.4.2".into(),
            found: "1.4.1".into(),
            gate: true,
            resolved,
        };
        let n = f.push(5, drift(false));
        assert_eq!((n[0].event, n[0].phase, n[0].condition.as_str()), (NoticeEvent::Drift, Phase::Open, "understudy-www-backup-drift-version"));
        assert!(n[0].details[0].contains("not eligible"), "{:?}", n[0].details);
        let n = f.push(6, drift(true));
        assert_eq!((n[0].event, n[0].phase), (NoticeEvent::Drift, Phase::Close));
    }

    fn stale(resolved: bool) -> Event {
        Event::ClientsStale {
            service: "www".into(),
            canary: "www.example.test".into(),
            resolver: "198.18.0.10:5353".into(),
            seen: "198.18.0.11".parse().unwrap(),
            seen_target: Some("primary".into()),
            expected: "198.18.0.12".parse().unwrap(),
            expected_target: Some("backup".into()),
            since_us: 1,
            resolved,
        }
    }

    #[test]
    fn clients_stale_is_a_condition_of_its_own_and_an_incident_update() {
        let mut f = Feed::new();
        // Outside an incident (a switchover): a warning, opened once, closed when clients follow.
        let n = f.push(1, stale(false));
        assert_eq!(n.len(), 1);
        assert_eq!((n[0].event, n[0].phase, n[0].severity, n[0].alertname.as_str()), (NoticeEvent::ClientsStale, Phase::Open, Severity::Warning, "UnderstudyClientsStale"));
        assert!(n[0].summary.contains("clients still on the old target"), "{}", n[0].summary);
        let n = f.push(2, stale(true));
        assert_eq!((n[0].event, n[0].phase, n[0].condition.as_str()), (NoticeEvent::ClientsStale, Phase::Close, "understudy-www-clients-stale-www.example.test-198.18.0.10:5353"));
        // During an incident: critical, and the incident gets an update too.
        f.push(3, decision(1, ("primary", 0), Some(("primary", 0)), Reason::Initial, false));
        f.push(4, down("primary"));
        f.push(5, decision(2, ("primary", 0), Some(("backup", 1)), Reason::Failover, false));
        let n = f.push(6, stale(false));
        assert_eq!(n.iter().map(|n| (n.event, n.phase, n.severity)).collect::<Vec<_>>(), vec![
            (NoticeEvent::ClientsStale, Phase::Open, Severity::Critical),
            (NoticeEvent::IncidentUpdated, Phase::Update, Severity::Warning)
        ]);
        // The client canary's figures reach the incident's notices.
        let id = f.book.open_for("www").unwrap().id;
        let rto = Event::ClientRto {
            service: "www".into(),
            incident: id,
            canary: "www.example.test".into(),
            resolver: "system".into(),
            from: Some("primary".into()),
            to: Some("backup".into()),
            last_old_ok_us: Some(1),
            first_failed_us: Some(2),
            first_new_ok_us: 2_500_002,
            failed: 3,
            rto_us: Some(2_500_000),
        };
        let n = f.push(7, rto);
        assert_eq!((n.len(), n[0].event), (1, NoticeEvent::IncidentUpdated));
        assert_eq!(n[0].incident.as_ref().unwrap().client_rto_ms, Some(2500.0));
        assert!(n[0].details.iter().any(|d| d.contains("client RTO 2.5 s (first failed request") && d.contains("3 failed request(s)")), "{:?}", n[0].details);
    }

    fn vip(from: &str, to: &str, master: Option<&str>) -> Event {
        Event::VipState {
            vip: "web".into(),
            interface: "eth0".into(),
            vrid: 51,
            from: from.into(),
            to: to.into(),
            why: "why".into(),
            master: master.map(|m| m.parse().unwrap()),
            node: "b-host".into(),
            local: Some("198.18.0.12".parse().unwrap()),
        }
    }

    #[test]
    fn a_vip_taken_over_opens_a_condition_that_giving_it_up_resolves_and_fault_is_another() {
        let mut f = Feed::new();
        assert!(f.push(1, vip("initialize", "backup", None)).is_empty(), "starting as backup is no switch");
        let n = f.push(2, vip("backup", "master", Some("198.18.0.12")));
        assert_eq!(n.len(), 1);
        assert_eq!((n[0].event, n[0].phase, n[0].severity, n[0].urgent), (NoticeEvent::VipState, Phase::Open, Severity::Warning, true));
        assert_eq!((n[0].condition.as_str(), n[0].alertname.as_str()), ("understudy-vip-web-198.18.0.12", "UnderstudyVipTakeover"));
        assert_eq!(n[0].summary, "vip web: node b-host (198.18.0.12) took the VIP over (backup -> master): why");
        assert_eq!(n[0].key, "understudy-vip-web-198.18.0.12:vip_state:2");
        // Preempted by the returning master: resolved.
        let n = f.push(3, vip("master", "backup", Some("198.18.0.11")));
        assert_eq!((n.len(), n[0].phase, n[0].status), (1, Phase::Close, Status::Resolved));
        assert!(n[0].summary.contains("gave the VIP up (master -> backup)"), "{}", n[0].summary);
        assert!(n[0].details.iter().any(|d| d == "master now: 198.18.0.11"), "{:?}", n[0].details);
        // Master, then a tracked service fails: the takeover closes and a fault opens.
        f.push(4, vip("backup", "master", Some("198.18.0.12")));
        let n = f.push(5, vip("master", "fault", None));
        assert_eq!(n.iter().map(|n| (n.alertname.as_str(), n.phase)).collect::<Vec<_>>(), vec![("UnderstudyVipTakeover", Phase::Close), ("UnderstudyVipFault", Phase::Open)]);
        assert!(n[1].summary.contains("resigned, a tracked service is down (master -> fault)"), "{}", n[1].summary);
        let n = f.push(6, vip("fault", "backup", Some("198.18.0.11")));
        assert_eq!(n.iter().map(|n| (n.alertname.as_str(), n.phase)).collect::<Vec<_>>(), vec![("UnderstudyVipFault", Phase::Close)]);
        assert!(f.push(7, vip("backup", "initialize", None)).is_empty(), "a backup stopping is no switch");
        // The address owner taking its own address at start-up is only information.
        let n = f.push(8, vip("initialize", "master", Some("198.18.0.12")));
        assert_eq!((n[0].phase, n[0].severity), (Phase::Open, Severity::Info));
        // A node killed while master restarts as backup: the replayed condition is resolved.
        let n = f.push(9, vip("initialize", "backup", Some("198.18.0.11")));
        assert_eq!((n.len(), n[0].phase), (1, Phase::Close));
        assert_eq!(f.planner.open_conditions().count(), 0);
    }

    #[test]
    fn a_log_behind_opens_one_condition_and_catching_up_resolves_it() {
        let mut f = Feed::new();
        let n = f.push(1, Event::LogBehind { behind: 3, error: None });
        assert_eq!((n[0].event, n[0].phase, n[0].summary.as_str()), (NoticeEvent::EventLogBehind, Phase::Open, "event log behind by 3"));
        assert!(f.push(2, Event::LogBehind { behind: 9, error: None }).is_empty(), "one condition while it lasts");
        let n = f.push(3, Event::LogCaughtUp { behind_ms: 1500 });
        assert_eq!((n[0].event, n[0].phase, n[0].alertname.as_str()), (NoticeEvent::EventLogBehind, Phase::Close, "UnderstudyEventLogBehind"));
    }

    #[test]
    fn all_down_without_traffic_and_config_rejections_are_conditions() {
        let mut f = Feed::new();
        let n = f.push(
            1,
            Event::Decision {
                service: "www".into(),
                epoch: 1,
                from: None,
                to: None,
                from_rank: None,
                to_rank: None,
                address: None,
                reason: Reason::AllDown,
                all_down: true,
            },
        );
        assert_eq!((n[0].event, n[0].phase, n[0].severity), (NoticeEvent::AllDown, Phase::Open, Severity::Critical));
        let n = f.push(2, Event::Decision {
            service: "www".into(),
            epoch: 2,
            from: None,
            to: Some("backup".into()),
            from_rank: None,
            to_rank: Some(1),
            address: None,
            reason: Reason::Recovered,
            all_down: false,
        });
        assert_eq!((n[0].event, n[0].phase), (NoticeEvent::AllDown, Phase::Close));

        let n = f.push(3, Event::ConfigRejected { errors: "a\nb".into() });
        assert_eq!((n[0].event, n[0].phase, &n[0].details), (NoticeEvent::ConfigRejected, Phase::Open, &vec!["a".to_string(), "b".to_string()]));
        let n = f.push(4, Event::ConfigRejected { errors: "c".into() });
        assert_eq!(n[0].phase, Phase::Update);
        let n = f.push(5, Event::ConfigReloaded { services: vec![] });
        assert_eq!((n[0].phase, n[0].status), (Phase::Close, Status::Resolved));

        let n = f.push(6, actuated(2, false));
        assert_eq!((n[0].event, n[0].phase), (NoticeEvent::ActuatorFailed, Phase::Open));
        assert!(f.push(7, actuated(2, false)).is_empty(), "a failing actuator does not repeat itself");
        let n = f.push(8, actuated(3, true));
        assert_eq!((n[0].event, n[0].phase), (NoticeEvent::ActuatorFailed, Phase::Close));
    }
}
