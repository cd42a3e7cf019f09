//! Incidents: a failover and everything until traffic is back, with measured times.
//!
//! The [`IncidentBook`] is a pure fold over event records. Live, [`IncidentBook::react`] looks at
//! a new record and says which incident events follow from it (opened, closed); the daemon
//! appends those to the log too, and every record, old or new, goes through
//! [`IncidentBook::apply`]. Replaying the log therefore rebuilds every incident exactly.
//!
//! # Rules
//! - An incident **opens** when a decision moves traffic because the active target failed
//!   (`failover`) or because nothing is eligible (`all_down`) while traffic was flowing. A
//!   further failure while it is open joins the same incident.
//! - It **closes** when a decision puts traffic on a target ranked at least as well as the one
//!   that failed (traffic is back), or when an operator closes it.
//!
//! # Measured times (all from the monitor's own records)
//! - detection = marked down - start of the first failed check. The fault began between the
//!   last good check and the first failed one, so this undercounts by at most one interval.
//! - switch = every actuator done with the failover decision (applied, and verified where the
//!   actuator can verify) - marked down.
//! - RTO = the same end point - start of the first failed check.
//!
//! # Client-observed figures (from the client canary, `canary/`)
//! - per canary and resolver: last good answer from the old target, first failed request, first
//!   good answer from the new target, failed requests, and client RTO = first good answer from
//!   the new target - first failed request (`client_rto` events; the worst one is the
//!   incident's `client_rto_us`). A `clients_stale` event while the incident is open is put in
//!   its timeline.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{CheckSample, Event, Record, Step};
use crate::decision::Reason;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub time_us: u64,
    pub what: String,
}

/// The check results that made a target flip, kept for the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckWindow {
    pub target: String,
    /// `down` or `up`.
    pub flip: String,
    /// When the flip was recorded.
    pub at_us: u64,
    pub samples: Vec<CheckSample>,
}

/// What one canary saw through one resolver (a `client_rto` event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientFigures {
    pub canary: String,
    pub resolver: String,
    pub last_old_ok_us: Option<u64>,
    pub first_failed_us: Option<u64>,
    pub first_new_ok_us: u64,
    pub failed: u32,
    pub rto_us: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: u64,
    pub service: String,
    pub open: bool,
    pub opened_us: u64,
    pub closed_us: Option<u64>,
    pub closed_by: Option<String>,
    /// The target whose failure opened the incident, and its rank.
    pub failed: Option<String>,
    #[serde(default)]
    failed_rank: Option<usize>,
    /// Where traffic went.
    pub to: Option<String>,
    pub epoch: u64,
    pub first_failure_us: Option<u64>,
    pub last_ok_us: Option<u64>,
    pub marked_down_us: Option<u64>,
    pub decided_us: u64,
    pub applied_us: Option<u64>,
    pub verified_us: Option<u64>,
    /// Every actuator finished with the failover decision.
    pub switched_us: Option<u64>,
    pub actuator_failures: u32,
    pub recovered_us: Option<u64>,
    pub failed_back_us: Option<u64>,
    pub timeline: Vec<TimelineEntry>,
    /// Check results around the fault: those that marked the failed target down (with the
    /// passing ones before, when they fit), and every flip while the incident is open.
    pub checks: Vec<CheckWindow>,
    /// What the client canaries saw, one entry per canary and resolver (`client_rto` events).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client: Vec<ClientFigures>,
}

impl Incident {
    fn switch_done_us(&self) -> Option<u64> {
        self.switched_us.or(self.verified_us).or(self.applied_us)
    }
    /// Marked down minus the first failed check.
    pub fn detection_us(&self) -> Option<u64> {
        Some(self.marked_down_us?.saturating_sub(self.first_failure_us?))
    }
    /// Switched (verified, or applied) minus marked down.
    pub fn switch_us(&self) -> Option<u64> {
        Some(self.switch_done_us()?.saturating_sub(self.marked_down_us?))
    }
    /// Switched minus the first failed check.
    pub fn rto_us(&self) -> Option<u64> {
        Some(self.switch_done_us()?.saturating_sub(self.first_failure_us?))
    }
    /// The worst client RTO any canary saw through any resolver.
    pub fn client_rto_us(&self) -> Option<u64> {
        self.client.iter().filter_map(|c| c.rto_us).max()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ServiceTrack {
    /// The last `TargetDown` per target: (time marked down, first failure, last ok).
    last_down: BTreeMap<String, (u64, u64, Option<u64>)>,
    /// The check results of that `TargetDown`.
    last_down_checks: BTreeMap<String, Vec<CheckSample>>,
    /// The decision that will open an incident, seen before its `IncidentOpened`.
    pending: Option<(u64, Event)>,
    open: Option<u64>,
}

/// All incidents, rebuilt from the log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IncidentBook {
    incidents: BTreeMap<u64, Incident>,
    services: BTreeMap<String, ServiceTrack>,
    /// The id the next incident opened by [`IncidentBook::react`] takes, when free and above
    /// every id given so far (in a cluster: the etcd revision of the committed decision, the
    /// same on every node); otherwise the next number.
    #[serde(skip)]
    id_hint: Option<u64>,
}

impl IncidentBook {
    pub fn all(&self) -> impl DoubleEndedIterator<Item = &Incident> {
        self.incidents.values()
    }
    pub fn get(&self, id: u64) -> Option<&Incident> {
        self.incidents.get(&id)
    }
    pub fn open_for(&self, service: &str) -> Option<&Incident> {
        self.services.get(service).and_then(|s| s.open).and_then(|id| self.incidents.get(&id))
    }

    /// The incident events that follow from `record` (not yet applied).
    pub fn react(&self, record: &Record) -> Vec<Event> {
        let Event::Decision { service, to, to_rank, reason, all_down, from, .. } = &record.event else {
            return Vec::new();
        };
        let track = self.services.get(service);
        let open = track.and_then(|t| t.open).and_then(|id| self.incidents.get(&id));
        match open {
            None => {
                let failed_traffic = matches!(reason, Reason::Failover) || (*all_down && *reason == Reason::AllDown && from.is_some());
                if failed_traffic {
                    let next = self.incidents.keys().next_back().map(|k| k + 1).unwrap_or(1);
                    let id = self.id_hint.filter(|h| *h >= next).unwrap_or(next);
                    vec![Event::IncidentOpened { id, service: service.clone(), failed: from.clone(), to: to.clone() }]
                } else {
                    Vec::new()
                }
            }
            Some(inc) => {
                let back = !*all_down && matches!((to_rank, inc.failed_rank), (Some(t), Some(f)) if *t <= f);
                if back { vec![Event::IncidentClosed { id: inc.id, service: service.clone(), by: "auto".into() }] } else { Vec::new() }
            }
        }
    }

    /// See `id_hint`: set before recording a cluster's committed decision, cleared after.
    pub fn set_id_hint(&mut self, id: Option<u64>) {
        self.id_hint = id;
    }

    /// Fold one record in.
    pub fn apply(&mut self, record: &Record) {
        let t = record.time_us;
        let Some(service) = record.event.service() else { return };
        let track = self.services.entry(service.to_string()).or_default();
        let open = track.open.and_then(|id| self.incidents.get_mut(&id));
        match &record.event {
            Event::TargetDown { target, first_failure_us, last_ok_us, reason, checks, .. } => {
                track.last_down.insert(target.clone(), (t, *first_failure_us, *last_ok_us));
                track.last_down_checks.insert(target.clone(), checks.clone());
                if let Some(inc) = open {
                    if !checks.is_empty() {
                        inc.checks.push(CheckWindow { target: target.clone(), flip: "down".into(), at_us: t, samples: checks.clone() });
                    }
                    inc.timeline.push(TimelineEntry { time_us: *first_failure_us, what: format!("first failed check of {target}") });
                    inc.timeline.push(TimelineEntry { time_us: t, what: format!("{target} marked down: {reason}") });
                }
            }
            Event::TargetUp { target, reason, checks, .. } => {
                if let Some(inc) = open {
                    if !checks.is_empty() {
                        inc.checks.push(CheckWindow { target: target.clone(), flip: "up".into(), at_us: t, samples: checks.clone() });
                    }
                    if inc.failed.as_deref() == Some(target.as_str()) && inc.recovered_us.is_none() {
                        inc.recovered_us = Some(t);
                    }
                    inc.timeline.push(TimelineEntry { time_us: t, what: format!("{target} marked up: {reason}") });
                }
            }
            Event::Decision { .. } => {
                if let Some(inc) = open {
                    inc.timeline.push(TimelineEntry { time_us: t, what: record.event.summary() });
                    if let Event::Decision { to_rank, all_down, .. } = &record.event
                        && !all_down
                        && matches!((to_rank, inc.failed_rank), (Some(a), Some(b)) if a <= &b)
                    {
                        inc.failed_back_us = Some(t);
                    }
                } else {
                    track.pending = Some((t, record.event.clone()));
                }
            }
            Event::Actuated { epoch, ok, step, .. } => {
                if let Some(inc) = open
                    && *epoch == inc.epoch
                {
                    inc.timeline.push(TimelineEntry { time_us: t, what: record.event.summary() });
                    match (ok, step) {
                        (true, Step::Applied) => inc.applied_us = Some(t),
                        (true, Step::Verified) => inc.verified_us = Some(t),
                        (false, _) => inc.actuator_failures += 1,
                    }
                }
            }
            Event::Switched { epoch, .. } => {
                if let Some(inc) = open
                    && *epoch == inc.epoch
                {
                    inc.timeline.push(TimelineEntry { time_us: t, what: record.event.summary() });
                    inc.switched_us = Some(t);
                }
            }
            Event::Override { .. } => {
                if let Some(inc) = open {
                    inc.timeline.push(TimelineEntry { time_us: t, what: record.event.summary() });
                }
            }
            Event::IncidentOpened { id, failed, to, .. } => {
                let (decided_us, epoch, failed_rank) = match &track.pending {
                    Some((dt, Event::Decision { epoch, from_rank, .. })) => (*dt, *epoch, *from_rank),
                    _ => (t, 0, None),
                };
                let down = failed.as_ref().and_then(|f| track.last_down.get(f)).copied();
                let mut inc = Incident {
                    id: *id,
                    service: service.to_string(),
                    open: true,
                    opened_us: t,
                    closed_us: None,
                    closed_by: None,
                    failed: failed.clone(),
                    failed_rank,
                    to: to.clone(),
                    epoch,
                    first_failure_us: down.map(|d| d.1),
                    last_ok_us: down.and_then(|d| d.2),
                    marked_down_us: down.map(|d| d.0),
                    decided_us,
                    applied_us: None,
                    verified_us: None,
                    switched_us: None,
                    actuator_failures: 0,
                    recovered_us: None,
                    failed_back_us: None,
                    timeline: Vec::new(),
                    checks: Vec::new(),
                    client: Vec::new(),
                };
                if let Some(f) = failed
                    && let (Some((marked, ..)), Some(samples)) = (down, track.last_down_checks.get(f))
                    && !samples.is_empty()
                {
                    inc.checks.push(CheckWindow { target: f.clone(), flip: "down".into(), at_us: marked, samples: samples.clone() });
                }
                if let Some((marked, first, last_ok)) = down {
                    let f = failed.as_deref().unwrap_or("?");
                    if let Some(ok) = last_ok {
                        inc.timeline.push(TimelineEntry { time_us: ok, what: format!("last passing check of {f}") });
                    }
                    inc.timeline.push(TimelineEntry { time_us: first, what: format!("first failed check of {f}") });
                    inc.timeline.push(TimelineEntry { time_us: marked, what: format!("{f} marked down") });
                }
                if let Some((dt, ev)) = &track.pending {
                    inc.timeline.push(TimelineEntry { time_us: *dt, what: ev.summary() });
                }
                track.pending = None;
                track.open = Some(*id);
                self.incidents.insert(*id, inc);
            }
            Event::ClientRto { incident, canary, resolver, last_old_ok_us, first_failed_us, first_new_ok_us, failed, rto_us, from, to, .. } => {
                // The figures belong to the incident they measure, even if it closed meanwhile.
                if let Some(inc) = self.incidents.get_mut(incident) {
                    let who = format!("clients (canary {canary} via {resolver})");
                    if let Some(ok) = last_old_ok_us {
                        let from = from.as_deref().unwrap_or("the old target");
                        inc.timeline.push(TimelineEntry { time_us: *ok, what: format!("{who}: last good answer from {from}") });
                    }
                    if let Some(f) = first_failed_us {
                        inc.timeline.push(TimelineEntry { time_us: *f, what: format!("{who}: first failed request") });
                    }
                    inc.timeline.push(TimelineEntry { time_us: *first_new_ok_us, what: format!("{who}: first good answer from {}", to.as_deref().unwrap_or("the new target")) });
                    inc.timeline.push(TimelineEntry { time_us: t, what: record.event.summary() });
                    inc.client.retain(|c| !(c.canary == *canary && c.resolver == *resolver));
                    inc.client.push(ClientFigures {
                        canary: canary.clone(),
                        resolver: resolver.clone(),
                        last_old_ok_us: *last_old_ok_us,
                        first_failed_us: *first_failed_us,
                        first_new_ok_us: *first_new_ok_us,
                        failed: *failed,
                        rto_us: *rto_us,
                    });
                }
            }
            Event::ClientsStale { .. } => {
                if let Some(inc) = open {
                    inc.timeline.push(TimelineEntry { time_us: t, what: record.event.summary() });
                }
            }
            Event::IncidentClosed { id, by, .. } => {
                if let Some(inc) = self.incidents.get_mut(id) {
                    inc.open = false;
                    inc.closed_us = Some(t);
                    inc.closed_by = Some(by.clone());
                    inc.timeline.push(TimelineEntry { time_us: t, what: format!("incident closed by {by}") });
                }
                if track.open == Some(*id) {
                    track.open = None;
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Health;

    fn rec(seq: u64, time_us: u64, event: Event) -> Record {
        Record { seq, time_us, event }
    }

    fn decision(epoch: u64, from: (&str, usize), to: (&str, usize), reason: Reason) -> Event {
        Event::Decision {
            service: "www".into(),
            epoch,
            from: Some(from.0.into()),
            to: Some(to.0.into()),
            from_rank: Some(from.1),
            to_rank: Some(to.1),
            address: None,
            reason,
            all_down: false,
        }
    }

    #[test]
    fn a_clusters_commit_revision_numbers_the_incident_it_opens_when_it_is_free() {
        let mut book = IncidentBook::default();
        let mut log = Vec::new();
        book.set_id_hint(Some(812));
        feed(&mut book, &mut log, 10, decision(2, ("primary", 0), ("backup", 1), Reason::Failover));
        book.set_id_hint(None);
        assert_eq!(book.open_for("www").map(|i| i.id), Some(812), "the id every node gives it");
        feed(&mut book, &mut log, 20, decision(3, ("backup", 1), ("primary", 0), Reason::Failback));
        // A hint below the ids given so far is not used: ids stay unique and increasing.
        book.set_id_hint(Some(7));
        feed(&mut book, &mut log, 30, decision(4, ("primary", 0), ("backup", 1), Reason::Failover));
        assert_eq!(book.open_for("www").map(|i| i.id), Some(813));
    }

    /// Feed events as the daemon does: react, append what follows, apply everything.
    fn feed(book: &mut IncidentBook, log: &mut Vec<Record>, time_us: u64, event: Event) {
        let r = rec(log.len() as u64 + 1, time_us, event);
        let follow = book.react(&r);
        book.apply(&r);
        log.push(r);
        for e in follow {
            let r = rec(log.len() as u64 + 1, time_us, e);
            book.apply(&r);
            log.push(r);
        }
    }

    #[test]
    fn failover_opens_and_failback_closes_with_measured_times() {
        let mut book = IncidentBook::default();
        let mut log = Vec::new();
        feed(&mut book, &mut log, 1_000, decision(1, ("primary", 0), ("primary", 0), Reason::Initial));
        assert!(book.all().next().is_none());
        feed(
            &mut book,
            &mut log,
            3_100_000,
            Event::TargetDown {
                service: "www".into(),
                target: "primary".into(),
                from: Health::Up,
                streak: 3,
                first_failure_us: 1_000_000,
                last_ok_us: Some(0),
                reason: "connection refused".into(),
                checks: Vec::new(),
            },
        );
        feed(&mut book, &mut log, 3_100_100, decision(2, ("primary", 0), ("backup", 1), Reason::Failover));
        let applied = Event::Actuated {
            service: "www".into(),
            epoch: 2,
            actuator: "hooks".into(),
            step: Step::Applied,
            ok: true,
            detail: String::new(),
            duration_us: 5,
        };
        feed(&mut book, &mut log, 3_100_400, applied);
        let inc = book.open_for("www").unwrap().clone();
        assert_eq!(inc.failed.as_deref(), Some("primary"));
        assert_eq!(inc.detection_us(), Some(2_100_000));
        assert_eq!(inc.switch_us(), Some(400));
        assert_eq!(inc.rto_us(), Some(2_100_400));

        feed(&mut book, &mut log, 20_000_000, decision(3, ("backup", 1), ("primary", 0), Reason::Failback));
        assert!(book.open_for("www").is_none());
        let closed = book.get(inc.id).unwrap();
        assert_eq!(closed.closed_by.as_deref(), Some("auto"));
        assert_eq!(closed.failed_back_us, Some(20_000_000));

        // Replaying the log rebuilds the same incident.
        let mut replay = IncidentBook::default();
        for r in &log {
            replay.apply(r);
        }
        assert_eq!(replay.get(inc.id), book.get(inc.id));
    }

    #[test]
    fn client_figures_join_the_incident_they_measure_and_survive_a_replay() {
        let mut book = IncidentBook::default();
        let mut log = Vec::new();
        feed(&mut book, &mut log, 1_000, decision(1, ("primary", 0), ("primary", 0), Reason::Initial));
        feed(&mut book, &mut log, 3_000_000, decision(2, ("primary", 0), ("backup", 1), Reason::Failover));
        let id = book.open_for("www").unwrap().id;
        let client = |resolver: &str, rto_us: Option<u64>| Event::ClientRto {
            service: "www".into(),
            incident: id,
            canary: "www.example.test".into(),
            resolver: resolver.into(),
            from: Some("primary".into()),
            to: Some("backup".into()),
            last_old_ok_us: Some(900_000),
            first_failed_us: Some(1_000_000),
            first_new_ok_us: 1_000_000 + rto_us.unwrap_or(0),
            failed: 4,
            rto_us,
        };
        feed(&mut book, &mut log, 4_600_000, client("r1", Some(3_500_000)));
        feed(&mut book, &mut log, 4_700_000, client("r2", Some(3_600_000)));
        feed(&mut book, &mut log, 20_000_000, decision(3, ("backup", 1), ("primary", 0), Reason::Failback));
        // A late resolver still lands in the (closed) incident it measured.
        feed(&mut book, &mut log, 20_100_000, client("r3", None));
        let inc = book.get(id).unwrap();
        assert_eq!(inc.client.len(), 3);
        assert_eq!(inc.client_rto_us(), Some(3_600_000), "the worst resolver");
        assert!(inc.timeline.iter().any(|e| e.time_us == 1_000_000 && e.what.contains("first failed request")), "{:?}", inc.timeline);
        assert!(inc.timeline.iter().any(|e| e.time_us == 4_500_000 && e.what.contains("first good answer from backup")), "{:?}", inc.timeline);
        let w = crate::api::wire::Incident::from(inc);
        assert_eq!((w.client_rto_ms, w.client.len()), (Some(3600.0), 3));
        let mut replay = IncidentBook::default();
        for r in &log {
            replay.apply(r);
        }
        assert_eq!(replay.get(id), book.get(id));
    }

    #[test]
    fn switchover_is_not_an_incident() {
        let mut book = IncidentBook::default();
        let mut log = Vec::new();
        feed(&mut book, &mut log, 1, decision(1, ("primary", 0), ("backup", 1), Reason::Switchover));
        feed(&mut book, &mut log, 2, decision(2, ("primary", 0), ("backup", 1), Reason::Drain));
        assert!(book.all().next().is_none());
    }
}
