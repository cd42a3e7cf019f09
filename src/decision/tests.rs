//! Engine tests on a simulated clock: every input and every instant is given explicitly.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::config::{AllDown, Failback};
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
}

fn input(n: usize) -> impl Strategy<Value = Input> {
    prop_oneof![
        8 => (0..n, any::<bool>()).prop_map(|(target, ok)| Input::Check { target, ok }),
        1 => (0..n).prop_map(Input::Drain),
        1 => (0..n).prop_map(Input::Enable),
        1 => proptest::option::of(0..n).prop_map(Input::Pin),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Drive health + engine with random check results at 1 s steps and check the invariants
    /// after every step.
    #[test]
    fn engine_invariants(
        n in 1usize..4,
        steps in proptest::collection::vec((input(4), 0u64..3000), 1..300),
        manual in any::<bool>(),
        all_down in prop_oneof![Just(AllDown::Primary), Just(AllDown::Keep), Just(AllDown::None)],
    ) {
        let th = Thresholds { fall: 3, rise: 2 };
        let failback = if manual { Failback::Manual } else { Failback::Auto };
        let t0 = Instant::now();
        let mut e = Engine::new(policy(failback, all_down), &names(n), None, t0);
        let mut hs = vec![HealthState::new(); n];
        let mut pin: Option<usize> = None;
        let mut now = t0;
        let mut last_epoch = 0;
        // When each target last became eligible, tracked independently of the engine.
        let mut eligible_since: Vec<Option<Instant>> = vec![None; n];
        let mut enabled = vec![true; n];

        for (inp, dt_ms) in steps {
            now += Duration::from_millis(dt_ms);
            let before = e.active();
            let eligible_before: Vec<bool> = (0..n).map(|i| e.is_eligible(i)).collect();
            match inp {
                Input::Check { target, ok } if target < n => {
                    if let Some(tr) = hs[target].observe(ok, 0, th) {
                        e.set_health(target, tr.to, now);
                    }
                }
                Input::Drain(t) if t < n => { e.set_enabled(t, false, now); enabled[t] = false; }
                Input::Enable(t) if t < n => { e.set_enabled(t, true, now); enabled[t] = true; }
                Input::Pin(p) => { pin = p.filter(|&p| p < n); e.set_pin(pin); }
                _ => {}
            }
            for i in 0..n {
                let el = e.is_eligible(i);
                prop_assert_eq!(el, hs[i].health() == Health::Up && enabled[i]);
                if el && !eligible_before[i] { eligible_since[i] = Some(now); }
                if !el { eligible_since[i] = None; }
            }
            let decision = e.evaluate(now);
            if let Some(d) = &decision {
                prop_assert!(d.epoch > last_epoch, "epochs strictly increase");
                last_epoch = d.epoch;
                prop_assert_eq!(d.from, before);
            }
            prop_assert_eq!(e.epoch(), last_epoch);
            if !e.has_decided() { continue; }
            let active = e.active();
            let any_eligible = (0..n).any(|i| e.is_eligible(i));
            // Never an ineligible target while an eligible one exists.
            if any_eligible {
                let a = active.expect("someone eligible, so someone active");
                prop_assert!(e.is_eligible(a), "active {a} not eligible while others are");
                prop_assert!(!e.all_down());
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
                prop_assert_eq!(pin, Some(to), "moved {} -> {} while {} was eligible", from, to, from);
            }
            if let Some(d) = decision
                && let (Some(to), Some(from)) = (d.to, d.from)
                && to < from
                && pin != Some(to)
                && e.is_eligible(from) == true
            {
                // Moving to a better target while the current one is still fine is a failback:
                // only with auto, and only after the hold.
                prop_assert_eq!(failback, Failback::Auto);
                let since = eligible_since[to].expect("failback target is eligible");
                prop_assert!(now.duration_since(since) >= HOLD, "failback after {:?}", now.duration_since(since));
            }
        }
    }
}
