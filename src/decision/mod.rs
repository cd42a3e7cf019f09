//! Decision: which target of a service gets the traffic. A pure engine.
//!
//! The engine takes inputs (a target's health flipped, an operator drained or pinned a target,
//! time passed) and returns at most one [`Decision`] per evaluation. It does no I/O, never reads
//! the clock (every call takes `now`) and spawns nothing; `daemon/` carries its decisions out.
//!
//! # Rules (in this order)
//! 1. A target is **eligible** when it is healthy (`Up`) and enabled (not drained). Observed
//!    health and operator intent are kept apart. (A drill's "force down" is not intent: it makes
//!    the target's check results count as failures before they reach `health/`, so detection is
//!    measured exactly as for a real failure.)
//! 2. **Pinned** (after a switchover): the pinned target is active while it is eligible. The pin
//!    stays until cleared; while the pinned target is ineligible, the normal rules apply.
//! 3. The current active target stays active while it is eligible, except that with
//!    `failback = "auto"` traffic returns to the best better target that has been eligible
//!    continuously for `failback_hold`. With `manual`, it stays until an operator moves it.
//! 4. When the active target is not eligible (or nothing is active yet), the **first eligible
//!    target in priority order** becomes active at once: failover never waits for a hold.
//! 5. When nothing is eligible the `all_down` policy applies: `primary` serves the first target
//!    anyway, `keep` stays where it was, `none` fails closed (no active target).
//! 6. At start-up nothing is decided until every target has a first result or `startup_grace`
//!    has passed (targets still unknown then count as not eligible).
//!
//! Every decision carries an **epoch** that only grows; a restarted daemon continues from the
//! last recorded epoch, and its first decision (reason `reconcile` when nothing changed) gets a
//! fresh epoch so that actuators re-apply it.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::health::Health;

/// What happens when a better target becomes eligible again (`failback` in a service's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failback {
    /// Return to a better target once it has been eligible for `failback_hold`.
    Auto,
    /// Stay on the current target until an operator moves traffic.
    Manual,
}

/// What is active when no target is eligible (`all_down` in a service's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllDown {
    /// Serve the primary anyway (Route 53 and gdnsd behave this way): a degraded primary is more
    /// likely to answer than nothing.
    Primary,
    /// Stay on whatever was active.
    Keep,
    /// Fail closed: no active target.
    None,
}

/// Why a decision was made. Hooks can filter on these (`on = ["failover"]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The first decision of a service that has no history.
    Initial,
    /// The active target failed its checks; traffic moved to the next eligible target.
    Failover,
    /// Traffic returned to a better target after it was eligible for the hold time.
    Failback,
    /// An operator pinned a target (or the pinned target became eligible again).
    Switchover,
    /// An operator drained the active target; traffic moved on.
    Drain,
    /// No target is eligible; the `all_down` policy chose the active target.
    AllDown,
    /// A target became eligible again after every target was down.
    Recovered,
    /// First decision after a restart, re-applying the recorded state.
    Reconcile,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Initial => "initial",
            Reason::Failover => "failover",
            Reason::Failback => "failback",
            Reason::Switchover => "switchover",
            Reason::Drain => "drain",
            Reason::AllDown => "all_down",
            Reason::Recovered => "recovered",
            Reason::Reconcile => "reconcile",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The per-service policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub failback: Failback,
    pub failback_hold: Duration,
    pub all_down: AllDown,
    pub startup_grace: Duration,
}

/// What a previous run of the daemon recorded (from the event log).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Restored {
    pub epoch: u64,
    pub active: Option<String>,
}

/// A change of the active target (or of the all-down flag), with a new epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub epoch: u64,
    /// Index into the service's targets.
    pub from: Option<usize>,
    pub to: Option<usize>,
    pub reason: Reason,
    pub all_down: bool,
}

#[derive(Debug, Clone)]
struct Slot {
    name: String,
    health: Health,
    enabled: bool,
    eligible_since: Option<Instant>,
}

impl Slot {
    fn eligible(&self) -> bool {
        self.health == Health::Up && self.enabled
    }
}

/// The decision engine of one service.
#[derive(Debug, Clone)]
pub struct Engine {
    policy: Policy,
    slots: Vec<Slot>,
    pinned: Option<usize>,
    active: Option<usize>,
    all_down: bool,
    epoch: u64,
    started: Instant,
    decided: bool,
    restored: bool,
}

impl Engine {
    /// A new engine for targets `names` (priority order), starting at `now`.
    pub fn new(policy: Policy, names: &[String], restored: Option<Restored>, now: Instant) -> Self {
        let slots = names
            .iter()
            .map(|n| Slot { name: n.clone(), health: Health::Unknown, enabled: true, eligible_since: None })
            .collect::<Vec<_>>();
        let (epoch, active, restored) = match restored {
            Some(r) => (r.epoch, r.active.and_then(|a| names.iter().position(|n| *n == a)), true),
            None => (0, None, false),
        };
        Engine { policy, slots, pinned: None, active, all_down: false, epoch, started: now, decided: false, restored }
    }

    /// The same engine for a new target list and policy (config reload): targets keep their
    /// health, operator state and hold timers by name, the active target and pin follow their
    /// names, and the epoch carries on. New targets start unknown (not eligible).
    pub fn reshape(&self, policy: Policy, names: &[String]) -> Engine {
        let slots = names
            .iter()
            .map(|n| match self.slots.iter().find(|s| s.name == *n) {
                Some(s) => s.clone(),
                None => Slot { name: n.clone(), health: Health::Unknown, enabled: true, eligible_since: None },
            })
            .collect::<Vec<_>>();
        let by_name = |i: Option<usize>| i.and_then(|i| names.iter().position(|n| *n == self.slots[i].name));
        Engine {
            policy,
            slots,
            pinned: by_name(self.pinned),
            active: by_name(self.active),
            all_down: self.all_down,
            epoch: self.epoch,
            started: self.started,
            decided: self.decided,
            restored: self.restored,
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    pub fn active(&self) -> Option<usize> {
        self.active
    }
    pub fn all_down(&self) -> bool {
        self.all_down
    }
    pub fn pinned(&self) -> Option<usize> {
        self.pinned
    }
    /// Whether the engine has made its first decision since start.
    pub fn has_decided(&self) -> bool {
        self.decided
    }
    pub fn target_name(&self, i: usize) -> &str {
        &self.slots[i].name
    }
    pub fn len(&self) -> usize {
        self.slots.len()
    }
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.name == name)
    }
    pub fn is_eligible(&self, i: usize) -> bool {
        self.slots[i].eligible()
    }
    pub fn is_enabled(&self, i: usize) -> bool {
        self.slots[i].enabled
    }
    pub fn health(&self, i: usize) -> Health {
        self.slots[i].health
    }

    fn update<F: FnOnce(&mut Slot)>(&mut self, i: usize, now: Instant, f: F) {
        let slot = &mut self.slots[i];
        let was = slot.eligible();
        f(slot);
        match (was, slot.eligible()) {
            (false, true) => slot.eligible_since = Some(now),
            (true, false) => slot.eligible_since = None,
            _ => {}
        }
    }

    pub fn set_health(&mut self, i: usize, health: Health, now: Instant) {
        self.update(i, now, |s| s.health = health);
    }

    /// Operator intent: `false` drains the target.
    pub fn set_enabled(&mut self, i: usize, enabled: bool, now: Instant) {
        self.update(i, now, |s| s.enabled = enabled);
    }

    /// Pin a target (switchover) or clear the pin.
    pub fn set_pin(&mut self, pin: Option<usize>) {
        self.pinned = pin;
    }

    fn first_eligible(&self) -> Option<usize> {
        self.slots.iter().position(Slot::eligible)
    }

    /// The best target better than `a` whose hold has expired at `now`.
    fn failback_candidate(&self, a: usize, now: Instant) -> Option<usize> {
        (0..a).find(|&i| {
            self.slots[i].eligible() && self.slots[i].eligible_since.is_some_and(|s| now.saturating_duration_since(s) >= self.policy.failback_hold)
        })
    }

    /// Decide. Returns a decision when the active target (or the all-down flag) changes, and
    /// for the first decision after start.
    pub fn evaluate(&mut self, now: Instant) -> Option<Decision> {
        if !self.decided {
            let waiting = self.slots.iter().any(|s| s.health == Health::Unknown);
            if waiting && now.saturating_duration_since(self.started) < self.policy.startup_grace {
                return None;
            }
        }
        let (to, reason, all_down) = self.choose(now);
        let first = !self.decided;
        if !first && to == self.active && all_down == self.all_down {
            return None;
        }
        let reason = if first {
            if self.restored && to == self.active && !all_down { Reason::Reconcile } else if self.restored { reason } else { Reason::Initial }
        } else {
            reason
        };
        let reason = if first && !self.restored && all_down { Reason::AllDown } else { reason };
        self.epoch += 1;
        let from = self.active;
        self.active = to;
        self.all_down = all_down;
        self.decided = true;
        Some(Decision { epoch: self.epoch, from, to, reason, all_down })
    }

    fn choose(&self, now: Instant) -> (Option<usize>, Reason, bool) {
        if let Some(p) = self.pinned
            && self.slots[p].eligible()
        {
            return (Some(p), Reason::Switchover, false);
        }
        if let Some(a) = self.active
            && self.slots[a].eligible()
            && !self.all_down
        {
            if self.policy.failback == Failback::Auto
                && let Some(b) = self.failback_candidate(a, now)
            {
                return (Some(b), Reason::Failback, false);
            }
            let reason = if self.pinned == Some(a) { Reason::Switchover } else { Reason::Failover };
            return (Some(a), reason, false);
        }
        if let Some(first) = self.first_eligible() {
            let reason = match self.active {
                _ if self.all_down => Reason::Recovered,
                Some(a) if !self.slots[a].enabled => Reason::Drain,
                Some(_) => Reason::Failover,
                None => Reason::Recovered,
            };
            return (Some(first), reason, false);
        }
        let to = match self.policy.all_down {
            AllDown::Primary => Some(0),
            AllDown::Keep => self.active.or(Some(0)),
            AllDown::None => None,
        };
        (to, Reason::AllDown, true)
    }

    /// Re-issue the current decision with a fresh epoch (after the actuators changed), so that
    /// every actuator applies it again. `None` before the first decision.
    pub fn reconcile(&mut self) -> Option<Decision> {
        if !self.decided {
            return None;
        }
        self.epoch += 1;
        Some(Decision { epoch: self.epoch, from: self.active, to: self.active, reason: Reason::Reconcile, all_down: self.all_down })
    }

    /// A decision committed in the cluster (by this node or another) becomes the engine's own:
    /// `active` (a slot) serves from now on, with `epoch`. Returns the slot it replaces.
    pub fn adopt(&mut self, epoch: u64, active: Option<usize>, all_down: bool) -> Option<usize> {
        let from = self.active;
        self.active = active;
        self.all_down = all_down;
        self.epoch = self.epoch.max(epoch);
        self.decided = true;
        from
    }

    /// The coordinator committed the last decision with `epoch` (at least the proposed one):
    /// later decisions count on from it, so epochs stay fencing tokens.
    pub fn adopt_epoch(&mut self, epoch: u64) {
        self.epoch = self.epoch.max(epoch);
    }

    /// When the engine wants to be evaluated again even if no input changes: the end of the
    /// start-up grace, or the moment a failback hold expires.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.decided {
            return Some(self.started + self.policy.startup_grace);
        }
        if self.policy.failback != Failback::Auto || self.all_down {
            return None;
        }
        let a = self.active?;
        if self.pinned == Some(a) && self.slots[a].eligible() {
            return None;
        }
        if !self.slots[a].eligible() {
            return None;
        }
        (0..a).filter_map(|i| self.slots[i].eligible_since.filter(|_| self.slots[i].eligible()).map(|s| s + self.policy.failback_hold)).min()
    }
}

#[cfg(test)]
mod tests;
