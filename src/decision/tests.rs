//! Engine tests on a simulated clock: every input and every instant is given explicitly.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use super::{AllDown, Failback};
use crate::health::{Health, HealthState, Thresholds};

const HOLD: Duration = Duration::from_secs(10);
const GRACE: Duration = Duration::from_secs(2);

fn policy(failback: Failback, all_down: AllDown) -> Policy {
    Policy { failback, failback_hold: HOLD, all_down, startup_grace: GRACE }
}

fn names(n: usize) -> Vec<String> {
    ["primary", "backup", "backup2", "backup3"][..n].iter().map(|s| s.to_string()).collect()
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

struct Sim {
    t0: Instant,
    e: Engine,
}

impl Sim {
    fn new(n: usize, failback: Failback, all_down: AllDown) -> Sim {
        let t0 = Instant::now();
        Sim { t0, e: Engine::new(policy(failback, all_down), &names(n), None, t0) }
    }
    fn at(&self, s: f64) -> Instant {
        self.t0 + secs(s)
    }
    fn health(&mut self, s: f64, i: usize, h: Health) -> Option<Decision> {
        let now = self.at(s);
        self.e.set_health(i, h, now);
        self.e.evaluate(now)
    }
    fn tick(&mut self, s: f64) -> Option<Decision> {
        let now = self.at(s);
        self.e.evaluate(now)
    }
}

#[test]
fn waits_for_every_first_result_then_picks_the_primary() {
    let mut s = Sim::new(2, Failback::Auto, AllDown::Primary);
    // The backup answers first: no decision yet, or traffic would start on the backup.
    assert_eq!(s.health(0.1, 1, Health::Up), None);
    let d = s.health(0.3, 0, Health::Up).unwrap();
    assert_eq!((d.to, d.reason, d.epoch, d.all_down), (Some(0), Reason::Initial, 1, false));
}

#[test]
fn start_up_grace_expires_when_a_target_never_answers() {
    let mut s = Sim::new(2, Failback::Auto, AllDown::Primary);
    assert_eq!(s.health(0.1, 1, Health::Up), None);
    assert_eq!(s.e.next_deadline(), Some(s.at(2.0)));
    assert_eq!(s.tick(1.9), None);
    let d = s.tick(2.0).unwrap();
    assert_eq!((d.to, d.reason), (Some(1), Reason::Initial));
}

#[test]
fn failover_is_immediate_and_failback_waits_for_the_hold() {
    let mut s = Sim::new(2, Failback::Auto, AllDown::Primary);
    s.health(0.0, 0, Health::Up);
    s.health(0.0, 1, Health::Up).unwrap();
    let d = s.health(5.0, 0, Health::Down).unwrap();
    assert_eq!((d.from, d.to, d.reason, d.epoch), (Some(0), Some(1), Reason::Failover, 2));
    assert_eq!(s.health(8.0, 0, Health::Up), None);
    assert_eq!(s.e.next_deadline(), Some(s.at(18.0)));
    assert_eq!(s.tick(17.9), None);
    let d = s.tick(18.0).unwrap();
    assert_eq!((d.from, d.to, d.reason, d.epoch), (Some(1), Some(0), Reason::Failback, 3));
}

#[test]
fn a_primary_that_flaps_during_the_hold_restarts_it() {
    let mut s = Sim::new(2, Failback::Auto, AllDown::Primary);
    s.health(0.0, 0, Health::Up);
    s.health(0.0, 1, Health::Up);
    s.health(1.0, 0, Health::Down).unwrap();
    assert_eq!(s.health(2.0, 0, Health::Up), None);
    assert_eq!(s.health(9.0, 0, Health::Down), None);
    assert_eq!(s.health(10.0, 0, Health::Up), None);
    assert_eq!(s.tick(12.5), None, "the hold counts from the last recovery at 10s");
    assert_eq!(s.tick(20.0).unwrap().reason, Reason::Failback);
}

#[test]
fn manual_failback_stays_until_an_operator_moves_traffic() {
    let mut s = Sim::new(2, Failback::Manual, AllDown::Primary);
    s.health(0.0, 0, Health::Up);
    s.health(0.0, 1, Health::Up);
    s.health(1.0, 0, Health::Down).unwrap();
    s.health(2.0, 0, Health::Up);
    assert_eq!(s.tick(1000.0), None);
    assert_eq!(s.e.next_deadline(), None);
    s.e.set_pin(Some(0));
    let d = s.tick(1001.0).unwrap();
    assert_eq!((d.to, d.reason), (Some(0), Reason::Switchover));
}

#[test]
fn all_down_policies() {
    for (policy, expect) in [(AllDown::Primary, Some(0)), (AllDown::Keep, Some(1)), (AllDown::None, None)] {
        let mut s = Sim::new(2, Failback::Auto, policy);
        s.health(0.0, 0, Health::Up);
        s.health(0.0, 1, Health::Up);
        s.health(1.0, 0, Health::Down).unwrap();
        let d = s.health(2.0, 1, Health::Down).unwrap();
        assert_eq!((d.to, d.reason, d.all_down), (expect, Reason::AllDown, true), "{policy:?}");
        // The backup comes back first: it serves at once, no hold.
        let d = s.health(3.0, 1, Health::Up).unwrap();
        assert_eq!((d.to, d.reason, d.all_down), (Some(1), Reason::Recovered, false), "{policy:?}");
    }
}

#[test]
fn all_down_then_primary_recovers_clears_the_flag() {
    let mut s = Sim::new(2, Failback::Auto, AllDown::Primary);
    s.health(0.0, 0, Health::Down);
    let d = s.health(0.0, 1, Health::Down).unwrap();
    assert_eq!((d.to, d.reason, d.all_down), (Some(0), Reason::AllDown, true));
    let d = s.health(1.0, 0, Health::Up).unwrap();
    assert_eq!((d.to, d.reason, d.all_down), (Some(0), Reason::Recovered, false));
}

#[test]
fn drain_moves_traffic_and_enable_brings_it_back_after_the_hold() {
    let mut s = Sim::new(3, Failback::Auto, AllDown::Primary);
    for i in 0..3 {
        s.health(0.0, i, Health::Up);
    }
    s.e.set_enabled(0, false, s.at(1.0));
    let d = s.tick(1.0).unwrap();
    assert_eq!((d.to, d.reason), (Some(1), Reason::Drain));
    s.e.set_enabled(0, true, s.at(2.0));
    assert_eq!(s.tick(2.0), None);
    assert_eq!(s.tick(12.0).unwrap().to, Some(0));
}

#[test]
fn switchover_pins_until_cleared_and_falls_back_to_order_when_pinned_fails() {
    let mut s = Sim::new(3, Failback::Auto, AllDown::Primary);
    for i in 0..3 {
        s.health(0.0, i, Health::Up);
    }
    s.e.set_pin(Some(2));
    assert_eq!(s.tick(1.0).unwrap().to, Some(2));
    assert_eq!(s.tick(100.0), None, "auto failback does not override a pin");
    let d = s.health(101.0, 2, Health::Down).unwrap();
    assert_eq!((d.to, d.reason), (Some(0), Reason::Failover));
    let d = s.health(102.0, 2, Health::Up).unwrap();
    assert_eq!((d.to, d.reason), (Some(2), Reason::Switchover), "pinned target is back");
    s.e.set_pin(None);
    let d = s.tick(103.0).unwrap();
    assert_eq!((d.to, d.reason), (Some(0), Reason::Failback));
}

#[test]
fn restart_reconciles_with_a_fresh_epoch() {
    let t0 = Instant::now();
    let restored = Restored { epoch: 41, active: Some("backup".into()) };
    let mut e = Engine::new(policy(Failback::Auto, AllDown::Primary), &names(2), Some(restored), t0);
    e.set_health(0, Health::Up, t0);
    e.set_health(1, Health::Up, t0);
    let d = e.evaluate(t0).unwrap();
    assert_eq!((d.to, d.reason, d.epoch), (Some(1), Reason::Reconcile, 42));
    // The primary is healthy, but it must still earn the hold before traffic returns.
    assert_eq!(e.evaluate(t0 + secs(5.0)), None);
    assert_eq!(e.evaluate(t0 + HOLD).unwrap().reason, Reason::Failback);
}

#[test]
fn restart_with_the_recorded_target_down_fails_over() {
    let t0 = Instant::now();
    let restored = Restored { epoch: 7, active: Some("primary".into()) };
    let mut e = Engine::new(policy(Failback::Auto, AllDown::Primary), &names(2), Some(restored), t0);
    e.set_health(0, Health::Down, t0);
    e.set_health(1, Health::Up, t0);
    let d = e.evaluate(t0).unwrap();
    assert_eq!((d.from, d.to, d.reason, d.epoch), (Some(0), Some(1), Reason::Failover, 8));
}

// --- Properties -------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Input {
    Check { target: usize, ok: bool },
    Drain(usize),
    Enable(usize),
    Pin(Option<usize>),
    /// A config reload: these targets in this order (kept ones by name, new ones unknown), and
    /// this failback policy.
    Reload { names: Vec<String>, manual: bool },
    /// The actuators changed: re-issue the current decision.
    Reconcile,
}

/// Target names a reload may use: the four of `names(4)` and one the engine has never seen.
const POOL: [&str; 5] = ["primary", "backup", "backup2", "backup3", "added"];

fn input(n: usize) -> impl Strategy<Value = Input> {
    let pool: Vec<String> = POOL.iter().map(|s| s.to_string()).collect();
    prop_oneof![
        40 => (0..n, any::<bool>()).prop_map(|(target, ok)| Input::Check { target, ok }),
        5 => (0..n).prop_map(Input::Drain),
        5 => (0..n).prop_map(Input::Enable),
        5 => proptest::option::of(0..n).prop_map(Input::Pin),
        1 => (proptest::sample::subsequence(pool, 1..=4).prop_shuffle(), any::<bool>())
            .prop_map(|(names, manual)| Input::Reload { names, manual }),
        1 => Just(Input::Reconcile),
    ]
}

/// How often each interesting path was taken across all cases, so the property test shows it
/// reached failbacks, pins, reloads and reconciles rather than passing on cases that never do.
#[derive(Debug, Default)]
struct Reached {
    failback: usize,
    switchover: usize,
    on_pinned_worse_target: usize,
    reload_while_active: usize,
    reload_moved_active: usize,
    reconcile: usize,
}

/// Per target, tracked independently of the engine and keyed by name (reloads reorder).
#[derive(Clone)]
struct Model {
    name: String,
    hs: HealthState,
    enabled: bool,
    eligible_since: Option<Instant>,
}

impl Model {
    fn new(name: &str) -> Model {
        Model { name: name.to_string(), hs: HealthState::new(), enabled: true, eligible_since: None }
    }
    fn eligible(&self) -> bool {
        self.hs.health() == Health::Up && self.enabled
    }
}

/// One case: drive health + engine with random inputs at random steps (0 to 3 s) and check the
/// invariants after every step.
fn run_case(
    n: usize,
    steps: Vec<(Input, u64)>,
    manual: bool,
    all_down: AllDown,
    reached: &std::cell::RefCell<Reached>,
) -> Result<(), TestCaseError> {
    let th = Thresholds { fall: 3, rise: 2 };
    let mut failback = if manual { Failback::Manual } else { Failback::Auto };
    let t0 = Instant::now();
    let mut e = Engine::new(policy(failback, all_down), &names(n), None, t0);
    let mut model: Vec<Model> = names(n).iter().map(|s| Model::new(s)).collect();
    let mut pin: Option<String> = None;
    let mut now = t0;
    let mut last_epoch = 0;

    for (inp, dt_ms) in steps {
        now += Duration::from_millis(dt_ms);
        let n = model.len();
        let eligible_before: Vec<bool> = (0..n).map(|i| e.is_eligible(i)).collect();
        let active_before = e.active().map(|a| e.target_name(a).to_string());
        let mut reloaded = false;
        match inp {
            Input::Check { target, ok } if target < n => {
                if let Some(tr) = model[target].hs.observe(ok, 0, th) {
                    e.set_health(target, tr.to, now);
                }
            }
            Input::Drain(t) if t < n => {
                e.set_enabled(t, false, now);
                model[t].enabled = false;
            }
            Input::Enable(t) if t < n => {
                e.set_enabled(t, true, now);
                model[t].enabled = true;
            }
            Input::Pin(p) => {
                pin = p.filter(|&p| p < n).map(|p| model[p].name.clone());
                e.set_pin(pin.as_ref().and_then(|p| e.index_of(p)));
            }
            Input::Reload { names, manual } => {
                failback = if manual { Failback::Manual } else { Failback::Auto };
                e = e.reshape(policy(failback, all_down), &names);
                model = names.iter().map(|name| model.iter().find(|m| m.name == *name).cloned().unwrap_or_else(|| Model::new(name))).collect();
                pin = pin.filter(|p| names.contains(p));
                reloaded = true;
            }
            Input::Reconcile => {
                let decided = e.has_decided();
                let active = e.active();
                match e.reconcile() {
                    Some(d) => {
                        prop_assert!(decided, "reconcile before the first decision");
                        prop_assert_eq!((d.from, d.to, d.reason, d.epoch), (active, active, Reason::Reconcile, last_epoch + 1));
                        prop_assert_eq!(d.all_down, e.all_down());
                        prop_assert_eq!(e.active(), active, "reconcile moves nothing");
                        last_epoch = d.epoch;
                        reached.borrow_mut().reconcile += 1;
                    }
                    None => prop_assert!(!decided, "no reconcile after a decision"),
                }
            }
            _ => {}
        }
        let n = model.len();
        prop_assert_eq!(e.len(), n);
        let pin_idx = pin.as_ref().and_then(|p| model.iter().position(|m| m.name == *p));
        prop_assert_eq!(e.pinned(), pin_idx, "the pin follows its target's name");
        if reloaded {
            // Health, operator state and the active target follow their names.
            let active_now = e.active().map(|a| e.target_name(a).to_string());
            let kept = active_before.as_ref().filter(|a| model.iter().any(|m| m.name == **a)).cloned();
            prop_assert_eq!(active_now, kept, "the active target follows its name across a reload");
            if e.has_decided() && active_before.is_some() {
                reached.borrow_mut().reload_while_active += 1;
            }
        }
        for i in 0..n {
            prop_assert_eq!(e.target_name(i), model[i].name.as_str());
            let el = e.is_eligible(i);
            prop_assert_eq!(el, model[i].eligible());
            let was = !reloaded && eligible_before[i];
            if el && !was && model[i].eligible_since.is_none() {
                model[i].eligible_since = Some(now);
            }
            if !el {
                model[i].eligible_since = None;
            }
        }
        let before = e.active();
        let decision = e.evaluate(now);
        if let Some(d) = &decision {
            prop_assert!(d.epoch > last_epoch, "epochs strictly increase");
            last_epoch = d.epoch;
            prop_assert_eq!(d.from, before);
            let mut r = reached.borrow_mut();
            match d.reason {
                Reason::Failback => r.failback += 1,
                Reason::Switchover => r.switchover += 1,
                _ => {}
            }
            if reloaded && d.from.is_none() && active_before.is_some() {
                r.reload_moved_active += 1;
            }
        }
        prop_assert_eq!(e.epoch(), last_epoch);
        if !e.has_decided() {
            continue;
        }
        let active = e.active();
        let any_eligible = (0..n).any(|i| e.is_eligible(i));
        // Never an ineligible target while an eligible one exists.
        if any_eligible {
            let a = active.expect("someone eligible, so someone active");
            prop_assert!(e.is_eligible(a), "active {} not eligible while others are", a);
            prop_assert!(!e.all_down());
            if pin_idx == Some(a) && (0..a).any(|i| e.is_eligible(i)) {
                reached.borrow_mut().on_pinned_worse_target += 1;
            }
        } else {
            prop_assert!(e.all_down());
            match all_down {
                AllDown::Primary => prop_assert_eq!(active, Some(0)),
                AllDown::None => prop_assert_eq!(active, None),
                AllDown::Keep => {}
            }
        }
        if let Some(d) = &decision
            && let (Some(to), Some(from)) = (d.to, d.from)
            && to > from
            && e.is_eligible(from)
        {
            // Leaving a healthy target for a worse one happens only on an operator's pin.
            prop_assert_eq!(pin_idx, Some(to), "moved {} -> {} while {} was eligible", from, to, from);
        }
        if let Some(d) = decision
            && let (Some(to), Some(from)) = (d.to, d.from)
            && to < from
            && pin_idx != Some(to)
            && e.is_eligible(from)
        {
            // Moving to a better target while the current one is still fine is a failback:
            // only with auto, and only after the hold (which a reload does not restart).
            prop_assert_eq!(failback, Failback::Auto);
            prop_assert_eq!(d.reason, Reason::Failback);
            let since = model[to].eligible_since.expect("failback target is eligible");
            prop_assert!(now.duration_since(since) >= HOLD, "failback after {:?}", now.duration_since(since));
        }
    }
    Ok(())
}

/// The engine's invariants over random check results, drains, pins, reloads and reconciles,
/// with counts showing the interesting paths were reached.
#[test]
fn engine_invariants() {
    let strategy = (
        1usize..4,
        proptest::collection::vec((input(4), 0u64..3000), 1..300),
        any::<bool>(),
        prop_oneof![Just(AllDown::Primary), Just(AllDown::Keep), Just(AllDown::None)],
    );
    let reached = std::cell::RefCell::new(Reached::default());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() });
    let result = runner.run(&strategy, |(n, steps, manual, all_down)| run_case(n, steps, manual, all_down, &reached));
    if let Err(e) = result {
        panic!("{e}");
    }
    let r = reached.into_inner();
    eprintln!("decision property test reached: {r:?}");
    assert!(r.failback > 0, "no case reached a failback: {r:?}");
    assert!(r.switchover > 0, "no case reached a switchover (pin): {r:?}");
    assert!(r.on_pinned_worse_target > 0, "no case kept traffic on a pinned target while a better one was eligible: {r:?}");
    assert!(r.reload_while_active > 0, "no case reloaded after the first decision: {r:?}");
    assert!(r.reload_moved_active > 0, "no case reloaded away the active target: {r:?}");
    assert!(r.reconcile > 0, "no case reconciled: {r:?}");
}
