//! The canary's view: a pure fold from what the canary saw and what the daemon decided.
//!
//! Inputs are the canary's [`Observation`]s (one per resolver per interval) and the daemon's
//! event records (decisions and incidents of the watched service). Outputs are events:
//! - `clients_stale`: a resolver has answered another address than the committed decision's for
//!   longer than `stale_after` (the record's TTL plus a margin), counted from its first
//!   disagreeing answer obtained after the decision; resolved by its first agreeing answer.
//!   A resolver that cannot answer at all neither agrees nor disagrees.
//! - `client_rto`: for an incident opened while the canary runs, per resolver, the last good
//!   answer from the old target, the first failed request since (failures before the incident
//!   count: clients failed from the fault on, not from the decision), and the first good answer
//!   from the target the decision names; client RTO = that first good answer - the first failed
//!   request. A good answer from the old target in between (a force-down drill, a false
//!   failover) resets the count: those clients were served.
//!
//! Time is a parameter (the observations' and records' wall microseconds): no clock, no I/O.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::events::{Event, Record};

/// One request (or lookup, for a canary without a URL) as the canary saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// When the lookup started, wall microseconds.
    pub at_us: u64,
    /// `system` or the resolver's address (the resolver's label).
    pub resolver: String,
    /// The address the name resolved to; `None` when it did not resolve.
    pub addr: Option<IpAddr>,
    /// The request succeeded (the lookup, without a URL).
    pub ok: bool,
    pub detail: String,
}

/// The committed decision as the canary knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decided {
    addr: Option<IpAddr>,
    since_us: u64,
}

/// An incident being measured through one resolver.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Measure {
    incident: u64,
    from: Option<String>,
    last_old_ok_us: Option<u64>,
    first_failed_us: Option<u64>,
    failed: u32,
}

/// One resolver's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Lane {
    last: Option<Observation>,
    /// The last good answer (time, address) and the failures since it.
    last_ok: Option<(u64, Option<IpAddr>)>,
    fail_since_us: Option<u64>,
    failures: u32,
    /// First answer (after the current decision) naming another address.
    disagree_since_us: Option<u64>,
    /// A `clients_stale` event is open for this resolver.
    stale: bool,
    measure: Option<Measure>,
}

/// What one resolver shows now (for the API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneStatus {
    pub resolver: String,
    pub last: Option<Observation>,
    pub target: Option<String>,
    pub agrees: Option<bool>,
    pub stale: bool,
}

/// The fold for one canary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    canary: String,
    service: String,
    stale_after_us: u64,
    targets: Vec<(String, IpAddr)>,
    decided: Option<Decided>,
    lanes: BTreeMap<String, Lane>,
}

impl View {
    /// `targets`: the service's targets (name, address); `resolvers`: the resolvers' labels.
    pub fn new(canary: &str, service: &str, stale_after_us: u64, targets: Vec<(String, IpAddr)>, resolvers: &[String]) -> View {
        let lanes = resolvers.iter().map(|r| (r.clone(), Lane::default())).collect();
        View { canary: canary.into(), service: service.into(), stale_after_us, targets, decided: None, lanes }
    }

    /// The target that has `addr`, if any.
    pub fn target_of(&self, addr: IpAddr) -> Option<String> {
        self.targets.iter().find(|(_, a)| *a == addr).map(|(n, _)| n.clone())
    }

    /// Fold in a record of the daemon's log (only this service's decisions and incidents count).
    pub fn on_record(&mut self, r: &Record) -> Vec<Event> {
        if r.event.service() != Some(self.service.as_str()) {
            return Vec::new();
        }
        match &r.event {
            Event::Decision { address, .. } => {
                self.decided = Some(Decided { addr: *address, since_us: r.time_us });
                for lane in self.lanes.values_mut() {
                    lane.disagree_since_us = None;
                }
            }
            Event::IncidentOpened { id, failed, .. } => {
                let from_addr = failed.as_ref().and_then(|f| self.targets.iter().find(|(n, _)| n == f)).map(|(_, a)| *a);
                for lane in self.lanes.values_mut() {
                    let last_old_ok_us = lane.last_ok.filter(|(_, a)| from_addr.is_some() && *a == from_addr).map(|(t, _)| t);
                    lane.measure = Some(Measure {
                        incident: *id,
                        from: failed.clone(),
                        last_old_ok_us,
                        first_failed_us: lane.fail_since_us,
                        failed: lane.failures,
                    });
                }
            }
            _ => {}
        }
        Vec::new()
    }

    /// Fold in one observation.
    pub fn observe(&mut self, o: Observation) -> Vec<Event> {
        let mut out = Vec::new();
        let decided = self.decided.clone();
        let seen_target = o.addr.and_then(|a| self.target_of(a));
        let expected_target = decided.as_ref().and_then(|d| d.addr).and_then(|a| self.target_of(a));
        let Some(lane) = self.lanes.get_mut(&o.resolver) else { return out };

        // Does the answer agree with the committed decision? Only answers looked up after the
        // decision count (a lookup in flight when it was made was answered before it).
        if let (Some(d), Some(seen)) = (&decided, o.addr)
            && let Some(expected) = d.addr
            && o.at_us >= d.since_us
        {
            if seen == expected {
                lane.disagree_since_us = None;
                if lane.stale {
                    lane.stale = false;
                    out.push(Event::ClientsStale {
                        service: self.service.clone(),
                        canary: self.canary.clone(),
                        resolver: o.resolver.clone(),
                        seen,
                        seen_target: seen_target.clone(),
                        expected,
                        expected_target: expected_target.clone(),
                        since_us: o.at_us,
                        resolved: true,
                    });
                }
            } else {
                let since = *lane.disagree_since_us.get_or_insert(o.at_us);
                if !lane.stale && o.at_us.saturating_sub(since) >= self.stale_after_us {
                    lane.stale = true;
                    out.push(Event::ClientsStale {
                        service: self.service.clone(),
                        canary: self.canary.clone(),
                        resolver: o.resolver.clone(),
                        seen,
                        seen_target: seen_target.clone(),
                        expected,
                        expected_target: expected_target.clone(),
                        since_us: since,
                        resolved: false,
                    });
                }
            }
        }

        // The incident being measured, if any.
        let decided_addr = decided.as_ref().and_then(|d| d.addr);
        if let Some(m) = &mut lane.measure {
            if o.ok && decided_addr.is_some() && o.addr == decided_addr {
                out.push(Event::ClientRto {
                    service: self.service.clone(),
                    incident: m.incident,
                    canary: self.canary.clone(),
                    resolver: o.resolver.clone(),
                    from: m.from.clone(),
                    to: expected_target.clone(),
                    last_old_ok_us: m.last_old_ok_us,
                    first_failed_us: m.first_failed_us,
                    first_new_ok_us: o.at_us,
                    failed: m.failed,
                    rto_us: m.first_failed_us.map(|f| o.at_us.saturating_sub(f)),
                });
                lane.measure = None;
            } else if o.ok {
                m.last_old_ok_us = Some(o.at_us);
                m.first_failed_us = None;
                m.failed = 0;
            } else {
                m.first_failed_us.get_or_insert(o.at_us);
                m.failed = m.failed.saturating_add(1);
            }
        }

        if o.ok {
            lane.last_ok = Some((o.at_us, o.addr));
            lane.fail_since_us = None;
            lane.failures = 0;
        } else {
            lane.fail_since_us.get_or_insert(o.at_us);
            lane.failures = lane.failures.saturating_add(1);
        }
        lane.last = Some(o);
        out
    }

    /// What each resolver shows now.
    pub fn status(&self) -> Vec<LaneStatus> {
        let expected = self.decided.as_ref().and_then(|d| d.addr);
        self.lanes
            .iter()
            .map(|(r, lane)| {
                let addr = lane.last.as_ref().and_then(|o| o.addr);
                LaneStatus {
                    resolver: r.clone(),
                    last: lane.last.clone(),
                    target: addr.and_then(|a| self.target_of(a)),
                    agrees: match (addr, expected) {
                        (Some(a), Some(e)) => Some(a == e),
                        _ => None,
                    },
                    stale: lane.stale,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Reason;

    const S: u64 = 1_000_000;
    const PRIMARY: &str = "198.18.0.11";
    const BACKUP: &str = "198.18.0.12";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn view() -> View {
        let targets = vec![("primary".to_string(), ip(PRIMARY)), ("backup".to_string(), ip(BACKUP))];
        View::new("www.example.test", "www", 7 * S, targets, &["r1".to_string(), "r2".to_string()])
    }

    fn decision(time_us: u64, to: &str, addr: &str, reason: Reason) -> Record {
        let event = Event::Decision {
            service: "www".into(),
            epoch: 1,
            from: None,
            to: Some(to.into()),
            from_rank: None,
            to_rank: None,
            address: Some(ip(addr)),
            reason,
            all_down: false,
        };
        Record { seq: 1, time_us, event }
    }

    fn opened(time_us: u64, id: u64) -> Record {
        Record { seq: 2, time_us, event: Event::IncidentOpened { id, service: "www".into(), failed: Some("primary".into()), to: Some("backup".into()) } }
    }

    fn obs(at_us: u64, resolver: &str, addr: Option<&str>, ok: bool) -> Observation {
        Observation { at_us, resolver: resolver.into(), addr: addr.map(ip), ok, detail: String::new() }
    }

    /// Feed one sample per second through `r1` from `from_s` to `to_s` (exclusive).
    fn samples(v: &mut View, from_s: u64, to_s: u64, addr: &str, ok: bool) -> Vec<Event> {
        (from_s..to_s).flat_map(|t| v.observe(obs(t * S, "r1", Some(addr), ok))).collect()
    }

    #[test]
    fn a_real_outage_gives_the_client_rto_from_the_first_failed_request_to_the_first_good_answer_from_the_backup() {
        let mut v = view();
        v.on_record(&decision(0, "primary", PRIMARY, Reason::Initial));
        assert!(samples(&mut v, 1, 10, PRIMARY, true).is_empty());
        // The primary dies at 9.5 s: requests fail from 10 s; the daemon decides at 12.5 s.
        assert!(samples(&mut v, 10, 13, PRIMARY, false).is_empty());
        v.on_record(&decision(12 * S + S / 2, "backup", BACKUP, Reason::Failover));
        v.on_record(&opened(12 * S + S / 2, 4));
        // The resolver's cache still names the primary until 15 s.
        assert!(samples(&mut v, 13, 15, PRIMARY, false).is_empty());
        let ev = samples(&mut v, 15, 17, BACKUP, true);
        assert_eq!(
            ev,
            vec![Event::ClientRto {
                service: "www".into(),
                incident: 4,
                canary: "www.example.test".into(),
                resolver: "r1".into(),
                from: Some("primary".into()),
                to: Some("backup".into()),
                last_old_ok_us: Some(9 * S),
                first_failed_us: Some(10 * S),
                first_new_ok_us: 15 * S,
                failed: 5,
                rto_us: Some(5 * S),
            }],
            "one event, at the first good answer from the backup"
        );
        let st = v.status();
        assert_eq!((st[0].target.as_deref(), st[0].agrees, st[0].stale), (Some("backup"), Some(true), false));
        // r2 never answered: nothing to say about it yet.
        assert_eq!((st[1].last.as_ref(), st[1].agrees), (None, None));
    }

    #[test]
    fn clients_stale_after_ttl_plus_margin_and_resolved_when_they_follow() {
        let mut v = view();
        v.on_record(&decision(0, "primary", PRIMARY, Reason::Initial));
        samples(&mut v, 1, 5, PRIMARY, true);
        v.on_record(&decision(5 * S + 300_000, "backup", BACKUP, Reason::Switchover));
        // A lookup started before the decision and answered after it does not count.
        assert!(v.observe(obs(5 * S, "r1", Some(PRIMARY), true)).is_empty());
        // A resolver that honours TTLs follows within TTL + margin: no event. r2 follows at 11 s.
        for t in 6..=11 {
            assert!(v.observe(obs(t * S, "r2", Some(if t < 11 { PRIMARY } else { BACKUP }), true)).is_empty());
        }
        // r1 keeps answering the primary: disagreeing since 6 s, stale from 13 s (7 s later).
        assert!(samples(&mut v, 6, 13, PRIMARY, true).is_empty(), "not before TTL + margin");
        let ev = samples(&mut v, 13, 20, PRIMARY, true);
        assert_eq!(ev.len(), 1, "raised once: {ev:?}");
        match &ev[0] {
            Event::ClientsStale { resolver, seen_target, expected_target, since_us, resolved, .. } => {
                assert_eq!((resolver.as_str(), seen_target.as_deref(), expected_target.as_deref()), ("r1", Some("primary"), Some("backup")));
                assert_eq!((*since_us, *resolved), (6 * S, false));
            }
            e => panic!("{e:?}"),
        }
        assert!(v.status()[0].stale);
        // A lookup failure neither resolves nor renews it.
        assert!(v.observe(obs(20 * S, "r1", None, false)).is_empty());
        let ev = samples(&mut v, 21, 23, BACKUP, true);
        assert!(matches!(&ev[..], [Event::ClientsStale { resolved: true, resolver, .. }] if resolver == "r1"), "{ev:?}");
        assert!(!v.status()[0].stale);
    }

    #[test]
    fn a_drill_whose_old_target_still_answers_has_no_failed_request_and_no_client_rto() {
        let mut v = view();
        v.on_record(&decision(0, "primary", PRIMARY, Reason::Initial));
        samples(&mut v, 1, 5, PRIMARY, true);
        v.on_record(&decision(5 * S, "backup", BACKUP, Reason::Failover));
        v.on_record(&opened(5 * S, 1));
        samples(&mut v, 5, 8, PRIMARY, true);
        let ev = samples(&mut v, 8, 9, BACKUP, true);
        assert!(
            matches!(&ev[..], [Event::ClientRto { last_old_ok_us: Some(l), first_failed_us: None, failed: 0, rto_us: None, first_new_ok_us, .. }] if *l == 7 * S && *first_new_ok_us == 8 * S),
            "{ev:?}"
        );
    }

    #[test]
    fn other_services_and_unknown_resolvers_are_ignored() {
        let mut v = view();
        let mut r = decision(0, "backup", BACKUP, Reason::Initial);
        if let Event::Decision { service, .. } = &mut r.event {
            *service = "api".into();
        }
        v.on_record(&r);
        assert!(v.observe(obs(S, "r1", Some(PRIMARY), true)).is_empty());
        assert_eq!(v.status()[0].agrees, None, "no decision of www yet");
        assert!(v.observe(obs(S, "nope", Some(PRIMARY), true)).is_empty());
    }
}
