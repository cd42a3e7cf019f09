//! The daemon's drill bookkeeping: which drills are running, what undoes each one's fault, until
//! when its client's lease runs, and the finished drills' summaries.
//!
//! A drill's fault is installed by its client (the CLI, or the daemon's own scheduler), but the
//! daemon *owns* it: before installing a fault, the client registers what undoes it
//! ([`Undo`]) and then keeps renewing a lease. When the lease runs out (the CLI was killed, the
//! SSH session closed), the daemon undoes the fault itself. A registered undo is an event
//! (`drill_fault`), so a daemon restarted mid-drill still knows it; after a restart every lease
//! gets a fresh grace period for a live client to renew.
//!
//! Pure: no I/O, no clock (times are parameters), no tasks. The core carries out what
//! [`Ledger::expired`] returns.

use std::collections::BTreeMap;

use super::{Summary, Undo};
use crate::events::{Event, Record, format_time_us};

/// A drill a client has started and not finished.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Running {
    pub service: String,
    pub fault: String,
    pub started_us: u64,
    /// What undoes the fault, once registered.
    pub undo: Option<Undo>,
    /// When the client's lease runs out (wall microseconds); `None` until the first lease.
    pub lease_until_us: Option<u64>,
}

/// Why a lease request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("drill #{0} is not running (it finished, or its lease ran out and the daemon undid its fault)")]
    NotRunning(u64),
    #[error("drill #{id} already registered its fault ({registered:?}); a lease renewal carries no undo")]
    UndoChanged { id: u64, registered: Undo },
}

/// Running and finished drills.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Ledger {
    running: BTreeMap<u64, Running>,
    finished: Vec<Summary>,
}

/// A drill that never reported back and registered no lease stops blocking new drills of its
/// service after this long (drill clients from before leases existed).
const STALE_WITHOUT_LEASE_US: u64 = 3600 * 1_000_000;

impl Ledger {
    /// Fold one recorded event (start-up replays the whole log through this).
    pub fn apply(&mut self, r: &Record) {
        match &r.event {
            Event::DrillStarted { service, fault, .. } => {
                self.started(r.seq, service, fault, r.time_us);
            }
            Event::DrillFault { id, undo, .. } => {
                if let Some(d) = self.running.get_mut(id) {
                    d.undo = Some(undo.clone());
                }
            }
            Event::DrillFinished { id, service, ok, detection_ms, switch_ms, rto_ms, missed, error } => {
                let (fault, started) = self.running.remove(id).map(|d| (d.fault, d.started_us)).unwrap_or_default();
                self.finished.push(Summary {
                    id: *id,
                    service: service.clone(),
                    fault,
                    started: format_time_us(started),
                    ok: *ok,
                    detection_ms: *detection_ms,
                    switch_ms: *switch_ms,
                    rto_ms: *rto_ms,
                    missed: missed.clone(),
                    error: error.clone(),
                });
            }
            _ => {}
        }
    }

    /// After replaying the log at start-up: give every running drill's client `grace` from
    /// `now_us` to renew its lease (it may still be alive; the daemon was the one that stopped).
    pub fn restarted(&mut self, now_us: u64, grace_us: u64) {
        for d in self.running.values_mut() {
            d.lease_until_us = Some(now_us.saturating_add(grace_us));
        }
    }

    /// The running drill of `service` that blocks a new one, if any.
    pub fn blocking(&self, service: &str, now_us: u64) -> Option<u64> {
        self.running
            .iter()
            .find(|(_, d)| {
                d.service == service
                    && match d.lease_until_us {
                        Some(_) => true, // an expired lease is undone within a second, then removed
                        None => d.started_us > now_us.saturating_sub(STALE_WITHOUT_LEASE_US),
                    }
            })
            .map(|(id, _)| *id)
    }

    pub fn started(&mut self, id: u64, service: &str, fault: &str, time_us: u64) {
        self.running.insert(id, Running { service: service.into(), fault: fault.into(), started_us: time_us, undo: None, lease_until_us: None });
    }

    pub fn running(&self, id: u64) -> Option<&Running> {
        self.running.get(&id)
    }

    /// Extend drill `id`'s lease to `until_us`. Returns `true` when `undo` is new and must be
    /// recorded (a `drill_fault` event) before the client installs the fault.
    pub fn lease(&mut self, id: u64, undo: Option<&Undo>, until_us: u64) -> Result<bool, LeaseError> {
        let d = self.running.get_mut(&id).ok_or(LeaseError::NotRunning(id))?;
        let new_undo = match (undo, &d.undo) {
            (None, _) => false,
            (Some(u), Some(registered)) if u == registered => false,
            (Some(_), Some(registered)) => return Err(LeaseError::UndoChanged { id, registered: registered.clone() }),
            (Some(_), None) => true,
        };
        if new_undo {
            d.undo = undo.cloned();
        }
        d.lease_until_us = Some(until_us.max(d.lease_until_us.unwrap_or(0)));
        Ok(new_undo)
    }

    /// Remove and return the drills whose lease ran out at `now_us`: their faults must be undone.
    pub fn expired(&mut self, now_us: u64) -> Vec<(u64, Running)> {
        let ids: Vec<u64> = self.running.iter().filter(|(_, d)| d.lease_until_us.is_some_and(|u| u <= now_us)).map(|(id, _)| *id).collect();
        ids.into_iter().filter_map(|id| self.running.remove(&id).map(|d| (id, d))).collect()
    }

    /// A drill's client reported it finished.
    pub fn finished(&mut self, summary: Summary) {
        self.running.remove(&summary.id);
        self.finished.push(summary);
    }

    /// Finished drills, oldest first.
    pub fn summaries(&self) -> &[Summary] {
        &self.finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    fn rec(seq: u64, time_us: u64, event: Event) -> Record {
        Record { seq, time_us, event }
    }

    fn started(seq: u64, t: u64) -> Record {
        rec(seq, t, Event::DrillStarted { service: "www".into(), fault: "exec".into(), target: "primary".into(), by: "cli".into() })
    }

    #[test]
    fn a_lease_that_is_not_renewed_expires_once() {
        let mut l = Ledger::default();
        l.apply(&started(7, 100 * S));
        let undo = Undo::Command { cmd: "systemctl start nginx".into() };
        assert_eq!(l.lease(7, Some(&undo), 115 * S), Ok(true), "a new undo is recorded");
        assert_eq!(l.lease(7, Some(&undo), 120 * S), Ok(false), "the same undo again is a renewal");
        assert_eq!(l.lease(7, None, 118 * S), Ok(false));
        assert_eq!(l.running(7).unwrap().lease_until_us, Some(120 * S), "a lease never shrinks");
        assert!(l.expired(119 * S).is_empty());
        let gone = l.expired(120 * S);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0, 7);
        assert_eq!(gone[0].1.undo, Some(undo));
        assert!(l.expired(200 * S).is_empty(), "undone once");
        assert_eq!(l.lease(7, None, 300 * S), Err(LeaseError::NotRunning(7)), "the client learns its fault was undone");
    }

    #[test]
    fn a_renewal_cannot_swap_the_undo() {
        let mut l = Ledger::default();
        l.apply(&started(3, 0));
        l.lease(3, Some(&Undo::NftTable { table: "t".into() }), 10 * S).unwrap();
        assert!(matches!(l.lease(3, Some(&Undo::Command { cmd: "rm -rf /".into() }), 20 * S), Err(LeaseError::UndoChanged { .. })));
    }

    #[test]
    fn a_restart_replays_the_fault_and_gives_the_client_a_grace_period() {
        let undo = Undo::Unforce { target: "primary".into() };
        let history = vec![started(5, 10 * S), rec(6, 11 * S, Event::DrillFault { id: 5, service: "www".into(), undo: undo.clone() })];
        let mut l = Ledger::default();
        for r in &history {
            l.apply(r);
        }
        l.restarted(1000 * S, 15 * S);
        assert!(l.expired(1014 * S).is_empty());
        let gone = l.expired(1015 * S);
        assert_eq!(gone[0].1.undo, Some(undo));
    }

    #[test]
    fn finished_drills_stop_blocking_and_are_listed() {
        let mut l = Ledger::default();
        l.apply(&started(1, 10 * S));
        assert_eq!(l.blocking("www", 11 * S), Some(1));
        assert_eq!(l.blocking("db", 11 * S), None);
        l.apply(&rec(
            2,
            20 * S,
            Event::DrillFinished { id: 1, service: "www".into(), ok: true, detection_ms: None, switch_ms: None, rto_ms: None, missed: vec![], error: None },
        ));
        assert_eq!(l.blocking("www", 21 * S), None);
        assert_eq!(l.summaries().len(), 1);
        assert_eq!(l.summaries()[0].fault, "exec");
        // Without a lease (an old client) a drill stops blocking after an hour.
        l.apply(&started(3, 100 * S));
        assert_eq!(l.blocking("www", 101 * S), Some(3));
        assert_eq!(l.blocking("www", 100 * S + 3601 * S), None);
    }
}
