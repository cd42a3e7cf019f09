//! Reload as a pure diff: a running service moves to its new config.
//!
//! Targets are matched by name, never by position. A target whose check is unchanged (same
//! check settings, address and port) keeps its health, its last result and its probe. A target
//! whose check changed starts a new probe from its old verdict, so a reload never causes a
//! failover by itself: the new check needs `fall`/`rise` results to change it. The engine keeps
//! its epoch, active target and timers unless the target list or the policy changed; then it is
//! reshaped by name, and overrides are put back. The returned [`ReloadPlan`] tells the runtime
//! which probes to start and stop.

use std::time::Instant;

use super::machine::{Target, apply_overrides, policy};
use super::Service;
use crate::config::{CheckConfig, ServiceConfig, TargetConfig};
use crate::health::Health;

/// What the runtime must do after [`Service::reload`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Targets that need a new probe (new targets, and targets whose check changed).
    pub start: Vec<String>,
    /// Targets whose probe must stop (removed targets, and targets whose check changed).
    pub stop: Vec<String>,
    /// The active target's address changed: actuators must hear the decision again.
    pub reconcile: bool,
}

/// What identifies "the same check" across a reload: if this is unchanged, health carries over.
fn check_identity(check: &CheckConfig, t: &TargetConfig) -> (CheckConfig, std::net::IpAddr, Option<u16>) {
    (check.clone(), t.check_ip(), t.check_port)
}

impl Service {
    /// Move to `cfg` (a service of the same name). See the module doc.
    pub fn reload(&mut self, cfg: ServiceConfig, now: Instant) -> ReloadPlan {
        let mut plan = ReloadPlan::default();
        let same_targets = self.cfg.targets.iter().map(|x| (&x.name, x.address)).eq(cfg.targets.iter().map(|x| (&x.name, x.address)));
        let same_policy = policy(&self.cfg) == policy(&cfg);
        let mut old: Vec<Target> = std::mem::take(&mut self.targets);
        let mut targets = Vec::new();
        for tc in &cfg.targets {
            let prev = old.iter().position(|o| o.cfg.name == tc.name).map(|i| old.swap_remove(i));
            let t = match prev {
                Some(mut o) if check_identity(&self.cfg.check, &o.cfg) == check_identity(&cfg.check, tc) => {
                    o.cfg = tc.clone();
                    o
                }
                Some(o) => {
                    plan.stop.push(o.cfg.name.clone());
                    plan.start.push(tc.name.clone());
                    let mut t = Target::new(tc.clone(), o.health.health());
                    t.health_since_us = o.health_since_us;
                    t
                }
                None => {
                    plan.start.push(tc.name.clone());
                    Target::new(tc.clone(), Health::Unknown)
                }
            };
            targets.push(t);
        }
        plan.stop.extend(old.into_iter().map(|o| o.cfg.name));
        self.targets = targets;
        if !same_targets || !same_policy {
            let names: Vec<String> = cfg.targets.iter().map(|x| x.name.clone()).collect();
            self.engine = self.engine.reshape(policy(&cfg), &names);
            apply_overrides(&mut self.engine, &self.overrides, now);
        }
        // Actuators must hear about a new address of the active target; a new target list is
        // otherwise decided by the normal rules at the next evaluation.
        plan.reconcile = self.engine.active().is_some_and(|a| self.cfg.target(&cfg.targets[a].name).is_none_or(|old| old.address != cfg.targets[a].address));
        self.cfg = cfg;
        plan
    }
}
