//! The service machine on a simulated clock: every check result, command and instant is given
//! explicitly, and the effects are what a user would see (events, actuations).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::*;
use crate::config::ServiceConfig;
use crate::coordinator::{Commit, Coordinator, Proposal, Standalone};
use crate::decision::{Reason, Restored};
use crate::events::incident::IncidentBook;
use crate::events::{Event, OverrideAction, Record};
use crate::health::{Cadence, Health};
use crate::probe::CheckResult;

fn service_cfg(extra_check: &str, targets: &[(&str, &str)]) -> ServiceConfig {
    let mut text = format!("[[service]]\nname = \"www\"\n[service.check]\nkind = \"tcp\"\nport = 80\ninterval = \"1s\"\ntimeout = \"500ms\"\nfall = 2\nrise = 2\n{extra_check}\n");
    for (name, addr) in targets {
        text.push_str(&format!("[[service.target]]\nname = \"{name}\"\naddress = \"{addr}\"\n"));
    }
    crate::config::from_str(&text, Path::new("test.toml")).expect("valid config").0.services.remove(0)
}

fn two() -> ServiceConfig {
    service_cfg("", &[("primary", "127.0.0.2"), ("backup", "127.0.0.3")])
}

/// A service, a coordinator and a clock that only moves when told.
struct Sim {
    t0: Instant,
    now_s: f64,
    svc: Service,
    coord: Standalone,
    /// Every record, as the log would number them (for the incident fold).
    log: Vec<Record>,
    incidents: IncidentBook,
}

impl Sim {
    fn new(cfg: ServiceConfig) -> Sim {
        Self::restored(cfg, None, Default::default(), &BTreeMap::new())
    }

    fn restored(cfg: ServiceConfig, restored: Option<Restored>, overrides: crate::events::state::Overrides, health: &BTreeMap<String, Health>) -> Sim {
        let t0 = Instant::now();
        let epochs = restored.iter().map(|r| (cfg.name.clone(), r.epoch)).collect::<Vec<_>>();
        let svc = Service::new(cfg, restored, overrides, health, t0);
        Sim { t0, now_s: 0.0, svc, coord: Standalone::new(epochs), log: Vec::new(), incidents: IncidentBook::default() }
    }

    fn now(&self) -> Now {
        Now { mono: self.t0 + Duration::from_secs_f64(self.now_s), wall_us: 1_000_000_000 + (self.now_s * 1e6) as u64 }
    }

    /// Keep the effects' records (folding incidents like the runtime does) and return them all.
    fn keep(&mut self, fx: Vec<Effect>) -> Vec<Effect> {
        for e in &fx {
            if let Effect::Record(ev) = e {
                self.append(ev.clone());
            }
        }
        fx
    }

    fn append(&mut self, event: Event) {
        let r = Record { seq: self.log.len() as u64 + 1, time_us: self.now().wall_us, event };
        let follow = self.incidents.react(&r);
        self.incidents.apply(&r);
        self.log.push(r);
        for e in follow {
            self.append(e);
        }
    }

    fn check(&mut self, at: f64, target: &str, ok: bool) -> Vec<Effect> {
        self.now_s = at;
        let now = self.now();
        let result = CheckResult { ok, latency: Duration::from_millis(3), reason: if ok { "connected".into() } else { "connection refused".into() }, started_us: now.wall_us, checker_error: false, lag: None };
        let fx = self.svc.on_check(target, result, now, &mut self.coord);
        self.keep(fx)
    }

    fn tick(&mut self, at: f64) -> Vec<Effect> {
        self.now_s = at;
        let now = self.now();
        let fx = self.svc.tick(now, &mut self.coord);
        self.keep(fx)
    }

    fn operate(&mut self, at: f64, target: Option<&str>, action: OverrideAction, expires_us: Option<u64>) -> Result<Vec<Effect>, Refusal> {
        self.now_s = at;
        let now = self.now();
        let fx = self.svc.operate(target, action, "test", expires_us, now, &mut self.coord)?;
        Ok(self.keep(fx))
    }

    /// Both targets healthy and the primary chosen.
    fn started(cfg: ServiceConfig) -> Sim {
        let mut s = Sim::new(cfg);
        for at in [0.1, 1.1] {
            s.check(at, "primary", true);
            s.check(at + 0.05, "backup", true);
        }
        assert_eq!(s.svc.status().active.as_deref(), Some("primary"));
        s
    }
}

/// The decisions among `fx`: (epoch, active target, reason).
fn actuations(fx: &[Effect]) -> Vec<(u64, Option<String>, Reason)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Actuate(a) => Some((a.epoch, a.active.as_ref().map(|t| t.name.clone()), a.reason)),
            _ => None,
        })
        .collect()
}

fn kinds(fx: &[Effect]) -> Vec<&'static str> {
    fx.iter()
        .map(|e| match e {
            Effect::Record(ev) => ev.kind(),
            Effect::Actuate(_) => "actuate",
            Effect::Cadence { .. } => "cadence",
            Effect::Suspect { .. } => "suspect",
            Effect::Health { .. } => "health",
            Effect::Refused { .. } => "refused",
        })
        .collect()
}

#[test]
fn a_failover_is_recorded_before_it_is_actuated_and_opens_an_incident() {
    let mut s = Sim::started(two());
    s.check(2.1, "primary", false);
    let fx = s.check(3.1, "primary", false);
    let k = kinds(&fx);
    let (down, decision, actuate) = (k.iter().position(|x| *x == "target_down"), k.iter().position(|x| *x == "decision"), k.iter().position(|x| *x == "actuate"));
    assert!(down < decision && decision < actuate, "{k:?}");
    assert_eq!(actuations(&fx), [(2, Some("backup".to_string()), Reason::Failover)]);
    let open = s.incidents.open_for("www").expect("an incident is open");
    assert_eq!(open.failed.as_deref(), Some("primary"));
    // The primary comes back: failback after the hold, and the incident closes by itself.
    s.check(4.1, "primary", true);
    s.check(5.1, "primary", true);
    let hold = s.svc.next_deadline().expect("a failback hold is running");
    let fx = s.tick((hold - s.t0).as_secs_f64());
    assert_eq!(actuations(&fx), [(3, Some("primary".to_string()), Reason::Failback)]);
    assert!(s.incidents.open_for("www").is_none(), "the incident closed when traffic went back");
}

#[test]
fn cadence_and_suspicion_follow_health_and_are_only_asked_for_on_a_change() {
    let mut s = Sim::started(two());
    let fx = s.check(2.1, "primary", false);
    assert!(fx.contains(&Effect::Cadence { target: "primary".into(), cadence: Cadence::Fast }), "{fx:?}");
    assert!(fx.iter().any(|e| matches!(e, Effect::Suspect { target, suspect: true, .. } if target == "primary")), "{fx:?}");
    // A second failure: no new cadence or suspicion effect, only the flip.
    let fx = s.check(2.6, "primary", false);
    assert!(!kinds(&fx).contains(&"suspect"), "{fx:?}");
    assert!(fx.contains(&Effect::Health { target: "primary".into(), health: Health::Down }));
}

#[test]
fn all_down_keeps_the_primary_by_default_and_says_so() {
    let mut s = Sim::started(two());
    s.check(2.1, "backup", false);
    s.check(2.2, "backup", false);
    s.check(2.3, "primary", false);
    let fx = s.check(2.4, "primary", false);
    let st = s.svc.status();
    assert!(st.all_down);
    assert_eq!(st.active.as_deref(), Some("primary"));
    assert_eq!(actuations(&fx), [(2, Some("primary".to_string()), Reason::AllDown)]);
}

#[test]
fn a_restarted_service_reconciles_at_once_from_its_restored_state() {
    let health = BTreeMap::from([("primary".to_string(), Health::Down), ("backup".to_string(), Health::Up)]);
    let mut s = Sim::restored(two(), Some(Restored { epoch: 7, active: Some("backup".into()) }), Default::default(), &health);
    // No check result yet: every target has a restored verdict, so it decides at once, keeping
    // traffic where it was, with a fresh epoch so actuators re-apply it.
    let fx = s.tick(0.0);
    assert_eq!(actuations(&fx), [(8, Some("backup".to_string()), Reason::Reconcile)]);
    // One passing check of the restored-down primary does not flip it (rise = 2).
    let fx = s.check(0.5, "primary", true);
    assert!(actuations(&fx).is_empty());
    assert_eq!(s.svc.status().targets[0].health, Health::Down);
}

#[test]
fn a_reconcile_gets_a_fresh_epoch_that_the_coordinator_never_gave_out() {
    let mut s = Sim::started(two());
    // The coordinator has given out epochs up to 41 (another life of this service).
    s.coord = Standalone::new([("www".to_string(), 41)]);
    let now = s.now();
    let fx = s.svc.reconcile(now, &mut s.coord);
    assert_eq!(actuations(&fx), [(42, Some("primary".to_string()), Reason::Reconcile)]);
    assert_eq!(s.svc.status().epoch, 42);
}

#[test]
fn a_refused_proposal_is_not_actuated() {
    struct No;
    impl Coordinator for No {
        fn kind(&self) -> &'static str {
            "no"
        }
        fn observe(&mut self, _: &str, _: &str, h: Health) -> Option<Health> {
            Some(h)
        }
        fn propose(&mut self, _: &str, _: &Proposal) -> Commit {
            Commit::Refused { why: "another node leads".into() }
        }
    }
    let mut s = Sim::started(two());
    s.check(2.1, "primary", false);
    s.now_s = 3.1;
    let now = s.now();
    let result = CheckResult { ok: false, latency: Duration::from_millis(1), reason: "refused".into(), started_us: now.wall_us, checker_error: false, lag: None };
    let fx = s.svc.on_check("primary", result, now, &mut No);
    assert!(actuations(&fx).is_empty());
    assert!(fx.iter().any(|e| matches!(e, Effect::Refused { why, .. } if why == "another node leads")), "{fx:?}");
    assert!(!kinds(&fx).contains(&"decision"), "a refused decision is not recorded: {fx:?}");
}

/// A cluster coordinator as the machine sees it: verdicts come later (`on_verdict`), and
/// proposals are answered later (`adopt` / `refused`), or refused at once while following.
struct Later {
    leading: bool,
    proposed: Vec<Proposal>,
}

impl Coordinator for Later {
    fn kind(&self) -> &'static str {
        "later"
    }
    fn observe(&mut self, _: &str, _: &str, _: Health) -> Option<Health> {
        None
    }
    fn propose(&mut self, _: &str, p: &Proposal) -> Commit {
        if !self.leading {
            return Commit::Refused { why: "mon-a leads".into() };
        }
        self.proposed.push(p.clone());
        Commit::Later
    }
}

#[test]
fn a_leader_proposes_once_keeps_serving_until_the_commit_and_then_actuates_it() {
    let mut s = Sim::started(two());
    let mut c = Later { leading: true, proposed: Vec::new() };
    s.now_s = 3.0;
    // The cluster briefly has no view of either target (its nodes reconnect): no evidence.
    for t in ["primary", "backup"] {
        assert!(s.svc.on_verdict(t, Health::Unknown, s.now(), &mut c).is_empty());
    }
    assert!(c.proposed.is_empty(), "no all-down proposal from missing views: {:?}", c.proposed);
    let fx = s.svc.on_verdict("primary", Health::Down, s.now(), &mut c);
    assert!(actuations(&fx).is_empty() && !kinds(&fx).contains(&"decision"), "nothing moves before the cluster commits: {fx:?}");
    assert_eq!(c.proposed.len(), 1);
    assert_eq!(c.proposed[0].active.as_deref(), Some("backup"));
    assert_eq!(c.proposed[0].reason, Reason::Failover);
    assert_eq!(s.svc.status().active.as_deref(), Some("primary"), "status shows the committed decision, not the proposal");
    // Re-evaluating while the answer is pending does not propose the same change again.
    let fx = s.svc.tick(s.now(), &mut c);
    assert!(fx.is_empty() && c.proposed.len() == 1, "{fx:?} {:?}", c.proposed);
    // The cluster commits it with its own epoch: recorded, then actuated.
    let fx = s.svc.adopt(7, Some("backup"), false, Some(Reason::Failover), "mon-a", s.now());
    assert_eq!(kinds(&fx), ["decision", "actuate"]);
    assert_eq!(actuations(&fx), [(7, Some("backup".to_string()), Reason::Failover)]);
    assert_eq!((s.svc.status().active.as_deref(), s.svc.status().epoch), (Some("backup"), 7));
    // The watch delivers the same commit again: adopted once.
    assert!(s.svc.adopt(7, Some("backup"), false, Some(Reason::Failover), "mon-a", s.now()).is_empty());
}

#[test]
fn a_refused_commit_lets_the_leader_propose_again_and_a_follower_adopts_what_the_leader_committed() {
    let mut s = Sim::started(two());
    let mut c = Later { leading: true, proposed: Vec::new() };
    s.now_s = 3.0;
    s.svc.on_verdict("primary", Health::Down, s.now(), &mut c);
    let fx = s.svc.refused(2, "leadership lost".into());
    assert_eq!(kinds(&fx), ["refused"]);
    s.svc.tick(s.now(), &mut c);
    assert_eq!(c.proposed.len(), 2, "proposed again after the refusal");

    // A follower: its proposals are refused at once and change nothing; the leader's commit
    // (even of a target this node still sees up) is what it serves.
    let mut f = Sim::started(two());
    let mut fc = Later { leading: false, proposed: Vec::new() };
    let fx = f.svc.on_verdict("primary", Health::Down, f.now(), &mut fc);
    assert!(actuations(&fx).is_empty(), "{fx:?}");
    assert_eq!(f.svc.status().active.as_deref(), Some("primary"));
    let fx = f.svc.adopt(9, Some("backup"), false, Some(Reason::Failover), "mon-a", f.now());
    assert_eq!(actuations(&fx), [(9, Some("backup".to_string()), Reason::Failover)]);
    let d = fx.iter().find_map(|e| match e {
        Effect::Record(Event::Decision { from, to, reason, .. }) => Some((from.clone(), to.clone(), *reason)),
        _ => None,
    });
    assert_eq!(d, Some((Some("primary".into()), Some("backup".into()), Reason::Failover)));
    // A restarted node hears the decision its log already holds: served again, not recorded twice.
    let restored = Some(Restored { epoch: 4, active: Some("backup".into()) });
    let mut r = Sim::restored(two(), restored, Default::default(), &BTreeMap::new());
    let fx = r.svc.adopt(4, Some("backup"), false, Some(Reason::Failover), "mon-a", r.now());
    assert_eq!(kinds(&fx), ["actuate"], "{fx:?}");
    assert_eq!(r.svc.status().active.as_deref(), Some("backup"));
    // A commit of a target this node's config lacks is refused, not served.
    let fx = f.svc.adopt(10, Some("elsewhere"), false, None, "mon-a", f.now());
    assert_eq!(kinds(&fx), ["refused"]);
    assert_eq!(f.svc.status().active.as_deref(), Some("backup"));
}

#[test]
fn a_new_leader_reissues_the_current_decision_with_its_reason_and_shared_overrides_are_taken_once() {
    let mut s = Sim::started(two());
    s.svc.adopt(5, Some("backup"), false, Some(Reason::Failover), "mon-a", s.now());
    let mut c = Later { leading: true, proposed: Vec::new() };
    s.svc.take_over(s.now(), &mut c);
    assert_eq!(c.proposed.len(), 1);
    assert_eq!((c.proposed[0].epoch, c.proposed[0].active.as_deref(), c.proposed[0].reason), (6, Some("backup"), Reason::Failover));

    // Another node drained the backup: this node takes the set and records the command.
    let mut o = s.svc.overrides().clone();
    o.drained.insert("backup".into());
    let change = crate::coordinator::OverrideChange { overrides: o, target: Some("backup".into()), action: OverrideAction::Drain, by: "api".into(), expires_us: None, node: "mon-b".into() };
    let fx = s.svc.adopt_overrides(&change, s.now(), &mut c);
    assert_eq!(kinds(&fx)[0], "override");
    assert!(!s.svc.status().targets[1].enabled, "the drain is in force here");
    assert!(s.svc.adopt_overrides(&change, s.now(), &mut c).is_empty(), "an echo changes nothing");
}

#[test]
fn reload_keeps_health_of_unchanged_checks_and_matches_targets_by_name() {
    let mut s = Sim::started(two());
    s.check(2.1, "backup", false);
    s.check(2.6, "backup", false);
    assert_eq!(s.svc.status().targets[1].health, Health::Down);
    // Reorder the targets and add one: the backup is found by name and stays down.
    let cfg = service_cfg("", &[("backup", "127.0.0.3"), ("primary", "127.0.0.2"), ("third", "127.0.0.4")]);
    let plan = s.svc.reload(cfg, s.now().mono);
    assert_eq!(plan.start, ["third"]);
    assert!(plan.stop.is_empty());
    assert!(!plan.reconcile);
    let st = s.svc.status();
    let health: Vec<(&str, Health)> = st.targets.iter().map(|t| (t.cfg.name.as_str(), t.health)).collect();
    assert_eq!(health, [("backup", Health::Down), ("primary", Health::Up), ("third", Health::Unknown)]);
    assert_eq!(st.active.as_deref(), Some("primary"));
    // Results now land on the right target by name.
    s.check(3.1, "backup", true);
    s.check(3.6, "backup", true);
    assert_eq!(s.svc.status().targets[0].health, Health::Up);
}

#[test]
fn a_changed_check_keeps_its_verdict_until_new_results_say_otherwise() {
    let mut s = Sim::started(two());
    let mut changed = two();
    changed.check.timeout = Duration::from_millis(800);
    let plan = s.svc.reload(changed, s.now().mono);
    assert_eq!(plan.start, ["primary", "backup"]);
    assert_eq!(plan.stop, ["primary", "backup"]);
    // One failure of the new check does not take the primary down (fall = 2)...
    let fx = s.check(2.1, "primary", false);
    assert!(actuations(&fx).is_empty());
    assert_eq!(s.svc.status().targets[0].health, Health::Up);
    // ...two do.
    let fx = s.check(2.6, "primary", false);
    assert_eq!(actuations(&fx), [(2, Some("backup".to_string()), Reason::Failover)]);
}

#[test]
fn overrides_survive_a_reshape_and_a_moved_active_address_reconciles() {
    let mut s = Sim::started(two());
    s.operate(2.0, Some("backup"), OverrideAction::Drain, None).unwrap();
    assert!(!s.svc.status().targets[1].enabled);
    let cfg = service_cfg("", &[("primary", "127.0.0.9"), ("backup", "127.0.0.3")]);
    let plan = s.svc.reload(cfg, s.now().mono);
    assert!(plan.reconcile, "the active target's address changed");
    let st = s.svc.status();
    assert!(!st.targets[1].enabled, "the drain survived the reshape");
    let fx = s.svc.reconcile(s.now(), &mut s.coord);
    let fx = s.keep(fx);
    let addr = fx.iter().find_map(|e| match e {
        Effect::Actuate(a) => a.active.as_ref().map(|t| t.address),
        _ => None,
    });
    assert_eq!(addr, Some("127.0.0.9".parse().unwrap()));
}

#[test]
fn operator_commands_are_refused_with_a_reason() {
    let mut s = Sim::started(two());
    assert_eq!(s.operate(1.5, Some("nope"), OverrideAction::Drain, None).unwrap_err(), Refusal::NoTarget { service: "www".into(), target: "nope".into() });
    s.check(2.1, "backup", false);
    s.check(2.6, "backup", false);
    let e = s.operate(3.0, Some("backup"), OverrideAction::Switchover, None).unwrap_err();
    assert_eq!(e.to_string(), "cannot switch www over to backup: its checks say it is down");
    assert_eq!(s.operate(3.0, None, OverrideAction::Drain, None).unwrap_err().to_string(), "drain needs a target");
    // Nothing was recorded for refused commands.
    assert!(!s.log.iter().any(|r| r.event.kind() == "override"));
}

#[test]
fn a_drill_force_down_fails_over_and_expires_by_itself() {
    let mut s = Sim::started(two());
    let until = s.now().wall_us + 5_000_000;
    s.operate(1.5, Some("primary"), OverrideAction::ForceDown, Some(until)).unwrap();
    // The real check passes, but counts as failed while forced.
    s.check(2.1, "primary", true);
    let fx = s.check(2.6, "primary", true);
    assert_eq!(actuations(&fx), [(2, Some("backup".to_string()), Reason::Failover)]);
    let reason = s.svc.status().targets[0].last.as_ref().unwrap().reason.clone();
    assert!(reason.starts_with("forced down (drill)"), "{reason}");
    // Before expiry nothing is lifted; after it, the force is lifted and recorded.
    s.now_s = 6.0;
    assert!(s.svc.expire_forces(s.now(), &mut s.coord).is_empty());
    s.now_s = 6.6;
    let fx = s.svc.expire_forces(s.now(), &mut s.coord);
    assert!(fx.iter().any(|e| matches!(e, Effect::Record(Event::Override { action: OverrideAction::Unforce, by, .. }) if by == "expiry")), "{fx:?}");
    s.check(7.1, "primary", true);
    s.check(7.6, "primary", true);
    assert_eq!(s.svc.status().targets[0].health, Health::Up);
}

#[test]
fn checker_errors_are_no_evidence_and_are_reported_once_then_resolved() {
    let mut s = Sim::started(two());
    let mut fx = Vec::new();
    for i in 0..5 {
        s.now_s = 2.0 + i as f64 * 0.5;
        let now = s.now();
        let r = CheckResult { ok: false, latency: Duration::ZERO, reason: "out of file descriptors".into(), started_us: now.wall_us, checker_error: true, lag: None };
        fx.extend(s.svc.on_check("primary", r, now, &mut s.coord));
    }
    assert_eq!(kinds(&fx), ["checker_error"]);
    assert_eq!(s.svc.status().targets[0].health, Health::Up);
    let fx = s.check(5.0, "primary", true);
    assert!(matches!(&fx[0], Effect::Record(Event::CheckerError { resolved: true, suppressed: 4, .. })), "{fx:?}");
}
