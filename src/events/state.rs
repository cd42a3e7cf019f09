//! What a restarted daemon needs from its past, folded from the event log: operator
//! overrides (drained targets, the switchover pin), each service's last decision (epoch and
//! active target) and each target's last known health. Keeping these as events, not as a second file, means one durable mechanism
//! and no way for the two to disagree after a crash.

use std::collections::{BTreeMap, BTreeSet};

use super::{Event, OverrideAction, Record};
use crate::decision::Restored;
use crate::health::Health;

/// Operator intent for one service.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Overrides {
    pub drained: BTreeSet<String>,
    pub pinned: Option<String>,
    /// Targets forced down (drills), with when that lapses (wall microseconds).
    pub forced: BTreeMap<String, u64>,
}

impl Overrides {
    /// Whether `target`'s check results count as failures at `now_us`.
    pub fn is_forced(&self, target: &str, now_us: u64) -> bool {
        self.forced.get(target).is_some_and(|&until| until > now_us)
    }

    pub fn apply(&mut self, target: Option<&str>, action: OverrideAction, expires_us: Option<u64>) {
        match (action, target) {
            (OverrideAction::ForceDown, Some(t)) => {
                self.forced.insert(t.to_string(), expires_us.unwrap_or(u64::MAX));
            }
            (OverrideAction::Unforce, Some(t)) => {
                self.forced.remove(t);
            }
            (OverrideAction::Drain, Some(t)) => {
                self.drained.insert(t.to_string());
            }
            (OverrideAction::Enable, Some(t)) => {
                self.drained.remove(t);
            }
            (OverrideAction::Switchover, Some(t)) => self.pinned = Some(t.to_string()),
            (OverrideAction::Clear, _) => self.pinned = None,
            _ => {}
        }
    }
}

/// Persisted state of every service, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Persisted {
    pub overrides: BTreeMap<String, Overrides>,
    pub decisions: BTreeMap<String, Restored>,
    /// Last recorded health flip per service, then per target. A restarted daemon starts from
    /// it, so one lost check after a restart cannot move traffic (a flip still needs
    /// `fall`/`rise` results).
    pub health: BTreeMap<String, BTreeMap<String, Health>>,
}

impl Persisted {
    pub fn apply(&mut self, record: &Record) {
        match &record.event {
            Event::Override { service, target, action, expires_us, .. } => {
                self.overrides.entry(service.clone()).or_default().apply(target.as_deref(), *action, *expires_us);
            }
            Event::Decision { service, epoch, to, .. } => {
                self.decisions.insert(service.clone(), Restored { epoch: *epoch, active: to.clone() });
            }
            Event::TargetUp { service, target, .. } => {
                self.health.entry(service.clone()).or_default().insert(target.clone(), Health::Up);
            }
            Event::TargetDown { service, target, .. } => {
                self.health.entry(service.clone()).or_default().insert(target.clone(), Health::Down);
            }
            _ => {}
        }
    }

    pub fn fold<'a>(records: impl IntoIterator<Item = &'a Record>) -> Self {
        let mut p = Persisted::default();
        for r in records {
            p.apply(r);
        }
        p
    }
}
