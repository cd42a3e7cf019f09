//! The per-service state machine. See the module doc in `mod.rs`.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{Actuate, Effect, Refusal};
use crate::actuator::TargetRef;
use crate::config::{CheckConfig, ServiceConfig, TargetConfig};
use crate::coordinator::{Commit, Coordinator, OverrideChange, Proposal};
use crate::decision::{Decision, Engine, Policy, Reason, Restored};
use crate::events::state::Overrides;
use crate::events::{CHECK_SAMPLES, CheckSample, Event, OverrideAction};
use crate::health::{Cadence, Health, HealthState, Thresholds};
use crate::probe::CheckResult;
use crate::probe::checker::Throttle;

/// The time, as the caller read it: the monotonic clock for timers, wall microseconds for
/// what is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub mono: Instant,
    pub wall_us: u64,
}

/// One target as the machine knows it.
#[derive(Debug)]
pub(super) struct Target {
    pub(super) cfg: TargetConfig,
    pub(super) health: HealthState,
    /// Wall time the health last flipped.
    pub(super) health_since_us: Option<u64>,
    pub(super) last: Option<CheckResult>,
    /// The cadence last asked of its probe.
    pub(super) cadence: Cadence,
    /// Rate limit of this target's `checker_error` events.
    pub(super) checker_errors: Throttle,
    /// The last few results, carried by health flips into incident reports.
    pub(super) recent: VecDeque<CheckSample>,
    /// The replication-lag alert of a database replica (see `pg::lagwatch`).
    pub(super) lag_watch: crate::pg::lagwatch::LagWatch,
}

impl Target {
    /// A target starting from `health` (its last recorded verdict, or unknown): the first
    /// results after a (re)start are not taken at face value, a flip needs `fall`/`rise`.
    pub(super) fn new(cfg: TargetConfig, health: Health) -> Target {
        Target {
            cfg,
            health: HealthState::restored(health),
            health_since_us: None,
            last: None,
            cadence: Cadence::Steady,
            checker_errors: Throttle::default(),
            recent: VecDeque::new(),
            lag_watch: Default::default(),
        }
    }
}

/// One service: its config, engine, targets (in config order = engine slot order) and
/// operator overrides.
#[derive(Debug)]
pub struct Service {
    pub(super) cfg: ServiceConfig,
    pub(super) engine: Engine,
    pub(super) targets: Vec<Target>,
    pub(super) overrides: Overrides,
    /// Wall time the current active target became active.
    pub(super) active_since_us: Option<u64>,
    /// A proposal the cluster has not answered yet (it is not proposed twice).
    pub(super) pending: Option<Proposal>,
    /// The epoch of the last decision adopted from the cluster.
    pub(super) adopted: Option<u64>,
    /// Why the current decision was made (a new leader re-issues it with this reason).
    pub(super) reason: Option<Reason>,
}

/// How long the engine waits for every target's first result before deciding anyway: probes
/// start at a random offset within one interval and then need up to `timeout`.
pub fn startup_grace(check: &CheckConfig) -> Duration {
    check.interval + check.timeout + Duration::from_millis(100)
}

pub(super) fn policy(cfg: &ServiceConfig) -> Policy {
    Policy { failback: cfg.failback, failback_hold: cfg.failback_hold, all_down: cfg.all_down, startup_grace: startup_grace(&cfg.check) }
}

fn thresholds(check: &CheckConfig) -> Thresholds {
    Thresholds { fall: check.fall, rise: check.rise }
}

/// Put operator intent into an engine (drains for targets that exist, the pin if it exists).
pub(super) fn apply_overrides(engine: &mut Engine, o: &Overrides, now: Instant) {
    for i in 0..engine.len() {
        let drained = o.drained.contains(engine.target_name(i));
        engine.set_enabled(i, !drained, now);
    }
    let pin = o.pinned.as_deref().and_then(|p| engine.index_of(p));
    engine.set_pin(pin);
}

impl Service {
    /// A service from config and what the event log remembers of it: its last decision
    /// (`restored`), its overrides and each target's last verdict (`health`; empty for a new
    /// service). Targets with a verdict start from it, so a restarted daemon can decide at once.
    pub fn new(cfg: ServiceConfig, restored: Option<Restored>, overrides: Overrides, health: &BTreeMap<String, Health>, now: Instant) -> Service {
        let names: Vec<String> = cfg.targets.iter().map(|t| t.name.clone()).collect();
        let mut engine = Engine::new(policy(&cfg), &names, restored, now);
        apply_overrides(&mut engine, &overrides, now);
        let mut targets = Vec::new();
        for (i, t) in cfg.targets.iter().enumerate() {
            let known = health.get(&t.name).copied().unwrap_or(Health::Unknown);
            engine.set_health(i, known, now);
            targets.push(Target::new(t.clone(), known));
        }
        Service { cfg, engine, targets, overrides, active_since_us: None, pending: None, adopted: None, reason: None }
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.cfg
    }

    /// The earliest instant the engine wants to re-evaluate (failback hold, start-up grace).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.engine.next_deadline()
    }

    /// What each target's probe should be checking at now.
    pub fn cadence(&self, target: &str) -> Option<Cadence> {
        self.targets.iter().find(|t| t.cfg.name == target).map(|t| t.cadence)
    }

    /// The active target's address once decided (`None` before the first decision or when
    /// failing closed), with the epoch: what actuators that start mid-run must serve.
    pub fn current(&self) -> Option<(u64, Option<IpAddr>)> {
        self.engine.has_decided().then(|| (self.engine.epoch(), self.engine.active().map(|a| self.targets[a].cfg.address)))
    }

    /// The position of `target` among the service's targets (the engine's slots are in config
    /// order), for [`Service::on_check_at`]; it stays valid until the next [`Service::reload`].
    pub fn target_index(&self, target: &str) -> Option<usize> {
        self.engine.index_of(target)
    }

    fn target_ref(&self, i: Option<usize>) -> Option<TargetRef> {
        i.map(|i| TargetRef { name: self.targets[i].cfg.name.clone(), address: self.targets[i].cfg.address })
    }

    /// A check result for `target`. Returns nothing for a target the service no longer has
    /// (a probe stopped by a reload can still deliver one result).
    pub fn on_check(&mut self, target: &str, result: CheckResult, now: Now, coord: &mut dyn Coordinator) -> Vec<Effect> {
        let Some(ti) = self.target_index(target) else { return Vec::new() };
        self.on_check_at(ti, result, now, coord)
    }

    /// [`Service::on_check`] for the target at `ti` (from [`Service::target_index`]): the daemon
    /// keeps each probe's index so that a result costs no search by name. An index past the
    /// targets is ignored.
    pub fn on_check_at(&mut self, ti: usize, mut result: CheckResult, now: Now, coord: &mut dyn Coordinator) -> Vec<Effect> {
        if ti >= self.targets.len() {
            return Vec::new();
        }
        let mut fx = Vec::new();
        let t = &mut self.targets[ti];
        if result.checker_error {
            // The monitor's fault, not the target's: no health input (see probe::checker).
            if let Some(suppressed) = t.checker_errors.admit(now.wall_us) {
                fx.push(Effect::Record(Event::CheckerError { service: self.cfg.name.clone(), target: t.cfg.name.clone(), reason: result.reason.to_string(), suppressed, resolved: false }));
            }
            t.last = Some(result);
            return fx;
        }
        if let Some(suppressed) = t.checker_errors.recovered() {
            fx.push(Effect::Record(Event::CheckerError { service: self.cfg.name.clone(), target: t.cfg.name.clone(), reason: result.reason.to_string(), suppressed, resolved: true }));
        }
        if self.overrides.is_forced(&t.cfg.name, now.wall_us) {
            result.ok = false;
            result.reason = format!("forced down (drill); the real check said: {}", result.reason).into();
        } else if self.cfg.compare.iter().any(|c| c.gate)
            && let Some(why) = crate::probe::compare::gate(&self.cfg.name, &t.cfg.name)
        {
            // A gated drift check found it out of step with the active target (an observation
            // posted by `probe::compare`, like the force-down above): not eligible meanwhile.
            result.ok = false;
            result.reason = format!("{why}; the real check said: {}", result.reason).into();
        }
        let th = thresholds(&self.cfg.check);
        // A pass that took half the timeout or more (the point where a hedged attempt starts)
        // shows trouble too: it turns the target suspect without counting against its health.
        let troubled = result.ok && result.latency >= self.cfg.check.timeout / 2;
        let was_suspect = t.health.suspect();
        let flip = t.health.observe_graded(result.ok, troubled, result.started_us, th);
        // On a change, and at a target's first result (a restored verdict may start it suspect).
        if t.health.suspect() != was_suspect || t.last.is_none() {
            fx.push(Effect::Suspect { target: t.cfg.name.clone(), address: t.cfg.address, suspect: t.health.suspect(), reason: result.reason.to_string() });
        }
        let cadence = t.health.cadence(th);
        if cadence != t.cadence {
            t.cadence = cadence;
            fx.push(Effect::Cadence { target: t.cfg.name.clone(), cadence });
        }
        if t.recent.len() == CHECK_SAMPLES {
            t.recent.pop_front();
        }
        if let Some(pg) = self.cfg.check.postgres.as_deref()
            && let Some(alert) = t.lag_watch.observe(result.lag, pg.max_lag)
        {
            use crate::pg::lagwatch::LagAlert;
            let (lag, resolved) = match alert {
                LagAlert::Exceeded(l) => (l, false),
                LagAlert::Recovered(l) => (l, true),
            };
            let (target, max_lag) = (t.cfg.name.clone(), pg.max_lag.to_string());
            fx.push(Effect::Record(Event::ReplicationLag { service: self.cfg.name.clone(), target, bytes: lag.bytes, seconds: lag.seconds, max_lag, resolved }));
        }
        t.recent.push_back(CheckSample { at_us: result.started_us, ok: result.ok, latency_us: result.latency.as_micros() as u64, reason: result.reason.clone() });
        t.last = Some(result);
        let Some(flip) = flip else { return fx };
        let (service, reason) = (self.cfg.name.clone(), t.last.as_ref().map(|r| r.reason.to_string()).unwrap_or_default());
        t.health_since_us = Some(now.wall_us);
        let checks: Vec<CheckSample> = t.recent.iter().cloned().collect();
        let target = t.cfg.name.clone();
        fx.push(Effect::Record(match flip.to {
            Health::Up => Event::TargetUp { service, target: target.clone(), from: flip.from, streak: flip.streak, first_ok_us: flip.streak_started_us, reason, checks },
            _ => Event::TargetDown {
                service,
                target: target.clone(),
                from: flip.from,
                streak: flip.streak,
                first_failure_us: flip.streak_started_us,
                last_ok_us: flip.last_other_us,
                reason,
                checks,
            },
        }));
        fx.push(Effect::Health { target: target.clone(), health: flip.to });
        if let Some(verdict) = coord.observe(&self.cfg.name, &target, flip.to) {
            self.engine.set_health(ti, verdict, now.mono);
            self.evaluate(now, coord, &mut fx);
        }
        fx
    }

    /// The cluster's verdict on `target` arrived (a coordinator that waits for other nodes).
    /// `Unknown` (no live node has a verdict: the nodes are reconnecting to etcd) is no
    /// evidence: the last verdict stands, so a cluster that briefly loses its views never
    /// declares every target down.
    pub fn on_verdict(&mut self, target: &str, health: Health, now: Now, coord: &mut dyn Coordinator) -> Vec<Effect> {
        let mut fx = Vec::new();
        if health == Health::Unknown {
            return fx;
        }
        if let Some(ti) = self.target_index(target) {
            self.engine.set_health(ti, health, now.mono);
            self.evaluate(now, coord, &mut fx);
        }
        fx
    }

    /// Re-evaluate (a deadline passed, or at start-up after a restart).
    pub fn tick(&mut self, now: Now, coord: &mut dyn Coordinator) -> Vec<Effect> {
        let mut fx = Vec::new();
        self.evaluate(now, coord, &mut fx);
        fx
    }

    /// Re-issue the current decision with a fresh epoch (the actuators changed).
    pub fn reconcile(&mut self, now: Now, coord: &mut dyn Coordinator) -> Vec<Effect> {
        let mut fx = Vec::new();
        let before = self.engine.clone();
        if let Some(d) = self.engine.reconcile()
            && !self.commit(d, now, coord, &mut fx)
        {
            self.engine = before;
        }
        fx
    }

    /// This node became the cluster's leader: re-issue the current decision with a new epoch
    /// and the reason it was made, so that the actuators that act outside (which only the
    /// leader runs) apply it, finishing a switch an earlier leader may have left half done.
    pub fn take_over(&mut self, now: Now, coord: &mut dyn Coordinator) -> Vec<Effect> {
        let mut fx = Vec::new();
        let before = self.engine.clone();
        if let Some(mut d) = self.engine.reconcile() {
            d.reason = self.reason.unwrap_or(Reason::Reconcile);
            if !self.commit(d, now, coord, &mut fx) {
                self.engine = before;
            }
        }
        fx
    }

    fn evaluate(&mut self, now: Now, coord: &mut dyn Coordinator, fx: &mut Vec<Effect>) {
        // The engine moves when it decides; a decision that is not committed now leaves it
        // where the last committed decision put it (a cluster's answer comes as `adopt`).
        let before = self.engine.clone();
        if let Some(d) = self.engine.evaluate(now.mono)
            && !self.commit(d, now, coord, fx)
        {
            self.engine = before;
        }
    }

    /// Propose the engine's decision; once committed, record it, then hand it to actuators.
    /// Returns whether it was committed now.
    fn commit(&mut self, mut d: Decision, now: Now, coord: &mut dyn Coordinator, fx: &mut Vec<Effect>) -> bool {
        let proposal = Proposal { epoch: d.epoch, active: d.to.map(|i| self.targets[i].cfg.name.clone()), all_down: d.all_down, reason: d.reason };
        if self.pending.as_ref().is_some_and(|p| p.active == proposal.active && p.all_down == proposal.all_down) {
            return false; // the same change is waiting for the cluster's answer
        }
        match coord.propose(&self.cfg.name, &proposal) {
            Commit::Now { epoch } => {
                self.engine.adopt_epoch(epoch);
                d.epoch = epoch;
            }
            Commit::Refused { why } => {
                fx.push(Effect::Refused { epoch: d.epoch, why });
                return false;
            }
            // The cluster answers with `adopt` (or `refused`); nothing is actuated until then.
            Commit::Later => {
                self.pending = Some(proposal);
                return false;
            }
        }
        self.decided(d, now, fx);
        true
    }

    /// A decision the cluster committed (this node's proposal or the leader's): it becomes
    /// this machine's decision, recorded and handed to the actuators like its own. Decisions
    /// are adopted once each, in epoch order; a target this node's config lacks is refused.
    pub fn adopt(&mut self, epoch: u64, active: Option<&str>, all_down: bool, reason: Option<Reason>, by: &str, now: Now) -> Vec<Effect> {
        self.pending = None;
        if self.engine.has_decided() && self.adopted.is_some_and(|e| epoch <= e) {
            return Vec::new();
        }
        let to = match active {
            Some(name) => match self.target_index(name) {
                Some(i) => Some(i),
                None => {
                    let why = format!("{by} committed target \"{name}\", which this node's config of {} does not have (every node must run the same services)", self.cfg.name);
                    return vec![Effect::Refused { epoch, why }];
                }
            },
            None => None,
        };
        self.adopted = Some(epoch);
        if !self.engine.has_decided() && epoch == self.engine.epoch() && to == self.engine.active() {
            // After a restart: the cluster's decision is the one this node's log already holds.
            // Nothing new to record; the actuators apply it again.
            self.engine.adopt(epoch, to, all_down);
            let t = self.target_ref(to);
            return vec![Effect::Actuate(Actuate { epoch, active: t.clone(), previous: t, reason: Reason::Reconcile, all_down })];
        }
        let from = self.engine.adopt(epoch, to, all_down);
        let reason = reason.unwrap_or(if from == to { Reason::Reconcile } else { Reason::Failover });
        let mut fx = Vec::new();
        self.decided(Decision { epoch, from, to, reason, all_down }, now, &mut fx);
        fx
    }

    /// The cluster did not commit this node's proposal: it may propose again.
    pub fn refused(&mut self, epoch: u64, why: String) -> Vec<Effect> {
        self.pending = None;
        vec![Effect::Refused { epoch, why }]
    }

    /// Record a committed decision, then hand it to the actuators.
    fn decided(&mut self, d: Decision, now: Now, fx: &mut Vec<Effect>) {
        self.reason = Some(d.reason);
        let (from, to) = (self.target_ref(d.from), self.target_ref(d.to));
        fx.push(Effect::Record(Event::Decision {
            service: self.cfg.name.clone(),
            epoch: d.epoch,
            from: from.as_ref().map(|t| t.name.clone()),
            to: to.as_ref().map(|t| t.name.clone()),
            from_rank: d.from,
            to_rank: d.to,
            address: to.as_ref().map(|t| t.address),
            reason: d.reason,
            all_down: d.all_down,
        }));
        if d.to != d.from || self.active_since_us.is_none() {
            self.active_since_us = Some(now.wall_us);
        }
        fx.push(Effect::Actuate(Actuate { epoch: d.epoch, active: to, previous: from, reason: d.reason, all_down: d.all_down }));
    }

    /// An operator command (drain, enable, force-down, switchover, pin...).
    pub fn operate(
        &mut self,
        target: Option<&str>,
        action: OverrideAction,
        by: &str,
        expires_us: Option<u64>,
        now: Now,
        coord: &mut dyn Coordinator,
    ) -> Result<Vec<Effect>, Refusal> {
        let service = self.cfg.name.clone();
        let ti = match target {
            Some(t) => Some(self.target_index(t).ok_or_else(|| Refusal::NoTarget { service: service.clone(), target: t.into() })?),
            None => None,
        };
        if action == OverrideAction::Switchover {
            let ti = ti.ok_or_else(|| Refusal::Conflict("switchover needs a target".into()))?;
            if !self.engine.is_eligible(ti) {
                let why = match (self.engine.is_enabled(ti), self.engine.health(ti)) {
                    (false, _) => "it is drained (enable it first)".to_string(),
                    (true, h) => format!("its checks say it is {}", format!("{h:?}").to_lowercase()),
                };
                return Err(Refusal::Conflict(format!("cannot switch {service} over to {}: {why}", target.unwrap_or_default())));
            }
        }
        if matches!(action, OverrideAction::ForceDown | OverrideAction::Unforce | OverrideAction::Drain | OverrideAction::Enable) && ti.is_none() {
            return Err(Refusal::Conflict(format!("{action:?} needs a target").to_lowercase()));
        }
        let mut fx = vec![Effect::Record(Event::Override { service, target: target.map(str::to_string), action, by: by.into(), expires_us })];
        self.overrides.apply(target, action, expires_us);
        apply_overrides(&mut self.engine, &self.overrides, now.mono);
        self.evaluate(now, coord, &mut fx);
        Ok(fx)
    }

    /// The operator overrides in force.
    pub fn overrides(&self) -> &Overrides {
        &self.overrides
    }

    /// Another node of the cluster (or this one, echoed back) changed the overrides: take the
    /// new set, record the command, and re-evaluate. An echo of what this machine already has
    /// changes nothing.
    pub fn adopt_overrides(&mut self, change: &OverrideChange, now: Now, coord: &mut dyn Coordinator) -> Vec<Effect> {
        if change.overrides == self.overrides {
            return Vec::new();
        }
        let mut o = change.overrides.clone();
        o.drained.retain(|t| self.target_index(t).is_some());
        o.forced.retain(|t, _| self.target_index(t).is_some());
        if o.pinned.as_deref().is_some_and(|p| self.target_index(p).is_none()) {
            o.pinned = None;
        }
        let by = if change.by.contains(&change.node) { change.by.clone() } else { format!("{} (at {})", change.by, change.node) };
        let mut fx = vec![Effect::Record(Event::Override { service: self.cfg.name.clone(), target: change.target.clone(), action: change.action, by, expires_us: change.expires_us })];
        self.overrides = o;
        apply_overrides(&mut self.engine, &self.overrides, now.mono);
        self.evaluate(now, coord, &mut fx);
        fx
    }

    /// Lift force-downs whose time is up (a drill that died cannot leave one behind).
    pub fn expire_forces(&mut self, now: Now, coord: &mut dyn Coordinator) -> Vec<Effect> {
        let expired: Vec<String> = self.overrides.forced.iter().filter(|(_, until)| **until <= now.wall_us).map(|(t, _)| t.clone()).collect();
        let mut fx = Vec::new();
        for target in expired {
            if self.target_index(&target).is_none() {
                self.overrides.forced.remove(&target); // the target left the config
                continue;
            }
            match self.operate(Some(&target), OverrideAction::Unforce, "expiry", None, now, coord) {
                Ok(more) => fx.extend(more),
                Err(e) => fx.push(Effect::Refused { epoch: self.engine.epoch(), why: format!("cannot lift the expired force-down of {}/{target}: {e}", self.cfg.name) }),
            }
        }
        fx
    }

    /// Everything the machine knows, for status views.
    pub fn status(&self) -> Status {
        let e = &self.engine;
        let active = if e.has_decided() { e.active() } else { None };
        Status {
            name: self.cfg.name.clone(),
            active: active.map(|a| self.targets[a].cfg.name.clone()),
            active_address: active.map(|a| self.targets[a].cfg.address),
            active_since_us: active.and(self.active_since_us),
            epoch: e.epoch(),
            decided: e.has_decided(),
            all_down: e.all_down(),
            pinned: e.pinned().map(|p| self.targets[p].cfg.name.clone()),
            targets: self
                .targets
                .iter()
                .enumerate()
                .map(|(i, t)| TargetStatus {
                    cfg: t.cfg.clone(),
                    health: e.health(i),
                    health_since_us: t.health_since_us,
                    enabled: e.is_enabled(i),
                    forced_down_until_us: self.overrides.forced.get(&t.cfg.name).copied(),
                    eligible: e.is_eligible(i),
                    active: active == Some(i),
                    streak: t.health.streak().1,
                    cadence: t.cadence,
                    last: t.last.clone(),
                })
                .collect(),
        }
    }
}

/// A service as status views show it (see [`Service::status`]).
#[derive(Debug, Clone)]
pub struct Status {
    pub name: String,
    pub active: Option<String>,
    pub active_address: Option<IpAddr>,
    pub active_since_us: Option<u64>,
    pub epoch: u64,
    pub decided: bool,
    pub all_down: bool,
    pub pinned: Option<String>,
    pub targets: Vec<TargetStatus>,
}

#[derive(Debug, Clone)]
pub struct TargetStatus {
    pub cfg: TargetConfig,
    pub health: Health,
    pub health_since_us: Option<u64>,
    pub enabled: bool,
    /// Wall microseconds (`u64::MAX`: until lifted).
    pub forced_down_until_us: Option<u64>,
    pub eligible: bool,
    pub active: bool,
    pub streak: u32,
    pub cadence: Cadence,
    pub last: Option<CheckResult>,
}
