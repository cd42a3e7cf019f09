//! The state every start-up fold rebuilds from the event log, kept up to date record by record
//! so that it can be written at the head of a new log segment (a *snapshot*).
//!
//! [`Folds`] holds the four folds the daemon replays at start-up: the persisted overrides,
//! decisions and health ([`Persisted`]), the incidents ([`IncidentBook`]), the drills
//! ([`Ledger`]) and the notification planner ([`Planner`]). Each is a pure fold over records,
//! so "snapshot, then the records after it" gives exactly the state of "every record from the
//! start"; the unit tests below check that on random event sequences.
//!
//! The event log's writer thread owns one `Folds` and applies each record once it is durable;
//! it never runs on the core task and does no I/O here. Nothing in this module touches a file.

use serde::{Deserialize, Serialize};

use super::Record;
use super::incident::IncidentBook;
use super::state::Persisted;
use crate::drill::ledger::Ledger;
use crate::notify::plan::Planner;

/// Everything a start-up fold needs, as of some point in the log. The planner's incident book
/// is the same fold as `incidents`: it is written once and shared again when read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "OnDisk")]
pub struct Folds {
    pub persisted: Persisted,
    pub incidents: IncidentBook,
    pub drills: Ledger,
    pub planner: Planner,
}

#[derive(Deserialize)]
struct OnDisk {
    persisted: Persisted,
    incidents: IncidentBook,
    drills: Ledger,
    planner: Planner,
}

impl From<OnDisk> for Folds {
    fn from(d: OnDisk) -> Folds {
        let mut planner = d.planner;
        planner.restore_book(d.incidents.clone());
        Folds { persisted: d.persisted, incidents: d.incidents, drills: d.drills, planner }
    }
}

impl Folds {
    pub fn apply(&mut self, r: &Record) {
        self.persisted.apply(r);
        self.incidents.apply(r);
        self.drills.apply(r);
        // The notices are the dispatcher's business; only the planner's state matters here.
        let _ = self.planner.observe(r);
    }
}

/// The first line of every segment after the first: the folds as of just before `next_seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Sequence number of the first record after the snapshot (every record of this segment
    /// has at least this number, every record of earlier segments a lower one).
    pub next_seq: u64,
    /// When it was written (wall microseconds).
    pub time_us: u64,
    pub state: Folds,
}

/// How a snapshot line is tagged in the log (records have `seq`, `time_us` and `event`).
#[derive(Serialize)]
pub(crate) struct SnapshotLine {
    pub snapshot: Snapshot,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::decision::Reason;
    use crate::events::{Event, OverrideAction, Step};
    use crate::health::Health;

    /// One event of a made-up but plausible history, from three random numbers: health flips,
    /// decisions (failover, failback, all down), actuator steps, overrides, drills, reloads.
    pub(crate) fn event(op: u8, a: u8, b: u8, last_drill: &mut Option<u64>, seq: u64) -> Event {
        let service = ["www", "api"][(a % 2) as usize].to_string();
        let target = ["primary", "backup"][(b % 2) as usize].to_string();
        let rank = (b % 2) as usize;
        match op % 9 {
            0 => Event::TargetDown {
                service,
                target,
                from: Health::Up,
                streak: 3,
                first_failure_us: seq * 1000,
                last_ok_us: Some(seq * 1000 - 500),
                reason: "connection refused".into(),
                checks: Vec::new(),
            },
            1 => Event::TargetUp { service, target, from: Health::Down, streak: 2, first_ok_us: seq * 1000, reason: "200 OK".into(), checks: Vec::new() },
            2 => {
                let (reason, all_down) = [(Reason::Failover, false), (Reason::Failback, false), (Reason::AllDown, true), (Reason::Recovered, false)][(a / 2 % 4) as usize];
                let to = (!all_down).then(|| target.clone());
                let from = Some(["primary", "backup"][1 - rank].to_string());
                Event::Decision { service, epoch: seq, from, to, from_rank: Some(1 - rank), to_rank: (!all_down).then_some(rank), address: None, reason, all_down }
            }
            3 => Event::Actuated { service, epoch: seq - 1, actuator: "dns".into(), step: [Step::Applied, Step::Verified][(a / 2 % 2) as usize], ok: !b.is_multiple_of(3), detail: String::new(), duration_us: 10 },
            4 => {
                let action = [OverrideAction::Drain, OverrideAction::Enable, OverrideAction::Switchover, OverrideAction::Clear, OverrideAction::ForceDown, OverrideAction::Unforce][(a / 2 % 6) as usize];
                Event::Override { service, target: Some(target), action, by: "test".into(), expires_us: (action == OverrideAction::ForceDown).then_some(seq * 7) }
            }
            5 => {
                *last_drill = Some(seq);
                Event::DrillStarted { service, fault: "force-down".into(), target, by: "cli".into() }
            }
            6 => match last_drill.take() {
                Some(id) => Event::DrillFinished {
                    id,
                    service,
                    ok: b.is_multiple_of(2),
                    detection_ms: Some(f64::from(a) * 1.37),
                    switch_ms: Some(f64::from(b) / 3.0),
                    rto_ms: None,
                    missed: Vec::new(),
                    error: None,
                },
                None => Event::ConfigReloaded { services: vec![service] },
            },
            7 => match *last_drill {
                Some(id) => Event::DrillFault { id, service, undo: crate::drill::Undo::Unforce { target } },
                None => Event::ConfigRejected { errors: "bad".into() },
            },
            _ => Event::DaemonStarted { version: "test".into(), pid: u32::from(a), config: String::new() },
        }
    }

    /// Records as the core writes them: each event, then the incident events that follow.
    pub(crate) fn history(ops: &[(u8, u8, u8)]) -> Vec<Record> {
        let mut book = IncidentBook::default();
        let mut out = Vec::new();
        let mut drill = None;
        let mut queue = Vec::new();
        for &(op, a, b) in ops {
            queue.push(event(op, a, b, &mut drill, out.len() as u64 + 1));
            while let Some(e) = queue.pop() {
                let r = Record { seq: out.len() as u64 + 1, time_us: 1_000_000 + out.len() as u64 * 1000, event: e };
                queue.extend(book.react(&r));
                book.apply(&r);
                out.push(r);
            }
        }
        out
    }

    pub(crate) fn fold(records: &[Record]) -> Folds {
        let mut f = Folds::default();
        for r in records {
            f.apply(r);
        }
        f
    }

    #[test]
    fn a_snapshot_reads_back_as_the_same_state() {
        let ops: Vec<(u8, u8, u8)> = (0..400u32).map(|i| ((i * 7 % 9) as u8, (i * 13 % 256) as u8, (i * 31 % 256) as u8)).collect();
        let records = history(&ops);
        let state = fold(&records);
        assert!(state.incidents.all().count() > 0 && !state.persisted.decisions.is_empty(), "the history exercises the folds");
        let snap = Snapshot { next_seq: records.len() as u64 + 1, time_us: 5, state };
        let line = crate::crclog::encode(&SnapshotLine { snapshot: snap.clone() });
        let back: serde_json::Value = crate::crclog::decode(&line).expect("an intact line");
        let back = Snapshot::deserialize(&back["snapshot"]).unwrap();
        assert_eq!(back, snap);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Folding a snapshot taken anywhere, then the records after it, gives exactly the
        /// state of folding every record.
        #[test]
        fn snapshot_plus_tail_equals_the_full_fold(ops in proptest::collection::vec((0u8..9, proptest::prelude::any::<u8>(), proptest::prelude::any::<u8>()), 0..120), cut in 0usize..200) {
            let records = history(&ops);
            let cut = cut.min(records.len());
            let head = Snapshot { next_seq: cut as u64 + 1, time_us: 0, state: fold(&records[..cut]) };
            let text = serde_json::to_string(&head).unwrap();
            let mut state = serde_json::from_str::<Snapshot>(&text).unwrap().state;
            for r in &records[cut..] {
                state.apply(r);
            }
            proptest::prop_assert_eq!(state, fold(&records));
        }
    }
}
