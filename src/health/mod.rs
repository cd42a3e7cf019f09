//! Health: fall/rise hysteresis over raw check results, one state machine per target.
//!
//! Pure: no I/O, no clock (timestamps come in with the results), no tasks. Emits a
//! [`Transition`] only when a target's state flips, so one lost packet never moves traffic.
//!
//! # Initial state
//! A target with no history starts [`Health::Unknown`]. Its **first** result is taken at face
//! value (up on a pass, down on a fail): with no history there is no flap to damp, and waiting
//! `rise` checks would leave a fresh daemon without an answer. A target with a known verdict (a
//! restarted daemon's last recorded health, or a check changed by a reload) starts from that
//! verdict with [`HealthState::restored`], so its first result is *not* taken at face value: one
//! lost packet after a restart cannot move traffic. From then on a flip needs `fall` consecutive
//! failures (up -> down) or `rise` consecutive successes (down -> up). The decision engine does
//! not act on a service until each target has its first result or the start-up grace expires,
//! so the backup never wins just because its first check returned before the primary's.
//!
//! # Cadence
//! [`HealthState::cadence`] says how often the target should be checked now, from the same
//! state: [`Cadence::Steady`] while nothing is changing, [`Cadence::Fast`] while a flip is in
//! the balance (an up target has failed a check and has not passed `rise` checks since; a down
//! target has started passing again), [`Cadence::Down`] for a down target that keeps failing.
//! The scheduler turns these into `interval`, `fast_interval` and `down_interval`. A target that
//! never fails a check is always [`Cadence::Steady`]: the fast cadence costs a healthy target
//! nothing.
//!
//! # Suspicion
//! [`HealthState::suspect`] says whether the target shows signs of trouble, for the suspicion
//! TTL of the DNS answers that name it (`suspect_ttl`, see `dns/`). A target turns suspect on its
//! first failed check or its first *troubled* pass (one the caller flags as slow, e.g. an answer
//! that needed the hedge), and stays suspect until it has passed `rise` untroubled checks in a
//! row: the same notion of "health changing" as [`Cadence::Fast`], so one lost packet costs at
//! most `rise` checks of short TTL, never a TTL that flaps with every result. A down target is
//! suspect until it is back up. A target that never shows trouble is never suspect.

use serde::{Deserialize, Serialize};

/// Observed health of one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Unknown,
    Up,
    Down,
}

/// Thresholds for one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub fall: u32,
    pub rise: u32,
}

/// How often a target should be checked, given its health and its latest results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cadence {
    /// Nothing is changing: every `interval`.
    Steady,
    /// A flip is in the balance: every `fast_interval`.
    Fast,
    /// Down and still failing: every `down_interval`.
    Down,
}

/// A flip of a target's health, with what led to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: Health,
    pub to: Health,
    /// Consecutive results that caused the flip (1 for the first result).
    pub streak: u32,
    /// Start of the first result of the streak (for `Down`: the first failed check), in wall
    /// microseconds as reported by the probe.
    pub streak_started_us: u64,
    /// Start of the last result before the streak that had the other verdict, if any (for
    /// `Down`: the last good check; the fault began between it and `streak_started_us`).
    pub last_other_us: Option<u64>,
}

/// The hysteresis state of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthState {
    health: Health,
    streak_ok: bool,
    streak: u32,
    streak_started_us: u64,
    last_ok_us: Option<u64>,
    last_fail_us: Option<u64>,
    /// Shows signs of trouble (see the module doc).
    suspect: bool,
    /// Untroubled passes in a row.
    clean: u32,
}

impl Default for HealthState {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthState {
    pub fn new() -> Self {
        HealthState { health: Health::Unknown, streak_ok: false, streak: 0, streak_started_us: 0, last_ok_us: None, last_fail_us: None, suspect: false, clean: 0 }
    }

    /// A target whose verdict is already known (restored from the event log, or carried over
    /// from the check a reload replaced): it needs `fall`/`rise` results to flip, like any other.
    /// `Health::Unknown` gives the same state as [`HealthState::new`].
    pub fn restored(health: Health) -> Self {
        HealthState { health, suspect: health == Health::Down, ..HealthState::new() }
    }

    /// Whether the target shows signs of trouble now (see the module doc).
    pub fn suspect(&self) -> bool {
        self.suspect
    }

    pub fn health(&self) -> Health {
        self.health
    }

    /// Consecutive results with the same verdict as the latest one.
    pub fn streak(&self) -> (bool, u32) {
        (self.streak_ok, self.streak)
    }

    /// How often this target should be checked now (see the module doc). `Unknown` is
    /// [`Cadence::Steady`]: its first result decides at face value anyway.
    pub fn cadence(&self, th: Thresholds) -> Cadence {
        match (self.health, self.streak_ok) {
            (Health::Unknown, _) => Cadence::Steady,
            // Failing but not yet down: settle it quickly.
            (Health::Up, false) if self.streak > 0 => Cadence::Fast,
            // Passing again after a failure, but fewer than `rise` in a row: one more failure
            // would start a new failing streak, so stay fast until the passes are convincing.
            (Health::Up, true) if self.last_fail_us.is_some() && self.streak < th.rise => Cadence::Fast,
            (Health::Up, _) => Cadence::Steady,
            (Health::Down, true) if self.streak > 0 => Cadence::Fast,
            (Health::Down, _) => Cadence::Down,
        }
    }

    /// Feed one check result (`ok`, started at `at_us`). Returns the flip, if this result
    /// caused one.
    pub fn observe(&mut self, ok: bool, at_us: u64, th: Thresholds) -> Option<Transition> {
        self.observe_graded(ok, false, at_us, th)
    }

    /// As [`HealthState::observe`], with `troubled`: a pass that still shows trouble (slow, or
    /// rescued by a hedged attempt). It counts as a pass for health and as trouble for
    /// [`HealthState::suspect`].
    pub fn observe_graded(&mut self, ok: bool, troubled: bool, at_us: u64, th: Thresholds) -> Option<Transition> {
        if !ok || troubled {
            self.suspect = true;
            self.clean = 0;
        } else {
            self.clean = self.clean.saturating_add(1);
            if self.clean >= th.rise.max(1) {
                self.suspect = false;
            }
        }
        let last_other = if ok { self.last_fail_us } else { self.last_ok_us };
        if self.streak == 0 || self.streak_ok != ok {
            self.streak_ok = ok;
            self.streak = 0;
            self.streak_started_us = at_us;
        }
        self.streak = self.streak.saturating_add(1);
        if ok {
            self.last_ok_us = Some(at_us);
        } else {
            self.last_fail_us = Some(at_us);
        }
        let to = match (self.health, ok) {
            (Health::Unknown, true) => Health::Up,
            (Health::Unknown, false) => Health::Down,
            (Health::Down, true) if self.streak >= th.rise => Health::Up,
            (Health::Up, false) if self.streak >= th.fall => Health::Down,
            _ => return None,
        };
        let from = std::mem::replace(&mut self.health, to);
        Some(Transition {
            from,
            to,
            streak: self.streak,
            streak_started_us: self.streak_started_us,
            last_other_us: last_other.filter(|&t| t < self.streak_started_us),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TH: Thresholds = Thresholds { fall: 3, rise: 2 };

    #[test]
    fn first_result_is_taken_at_face_value() {
        let mut up = HealthState::new();
        let t = up.observe(true, 10, TH).unwrap();
        assert_eq!((t.from, t.to, t.streak), (Health::Unknown, Health::Up, 1));
        let mut down = HealthState::new();
        assert_eq!(down.observe(false, 10, TH).unwrap().to, Health::Down);
    }

    #[test]
    fn a_restored_verdict_needs_fall_or_rise_to_flip() {
        let mut up = HealthState::restored(Health::Up);
        assert_eq!(up.observe(false, 10, TH), None, "one lost check after a restart moves nothing");
        assert_eq!(up.observe(false, 20, TH), None);
        let t = up.observe(false, 30, TH).unwrap();
        assert_eq!((t.from, t.to, t.streak, t.streak_started_us), (Health::Up, Health::Down, 3, 10));
        let mut down = HealthState::restored(Health::Down);
        assert_eq!(down.observe(true, 10, TH), None, "a dead primary is not trusted on one pass");
        assert_eq!(down.observe(true, 20, TH).unwrap().to, Health::Up);
        assert_eq!(HealthState::restored(Health::Unknown), HealthState::new());
    }

    #[test]
    fn fall_failures_mark_down_and_report_the_first_failure() {
        let mut h = HealthState::new();
        h.observe(true, 0, TH);
        h.observe(true, 1_000_000, TH);
        assert_eq!(h.observe(false, 2_000_000, TH), None);
        assert_eq!(h.observe(false, 3_000_000, TH), None);
        let t = h.observe(false, 4_000_000, TH).unwrap();
        assert_eq!((t.from, t.to, t.streak), (Health::Up, Health::Down, 3));
        assert_eq!(t.streak_started_us, 2_000_000);
        assert_eq!(t.last_other_us, Some(1_000_000));
    }

    #[test]
    fn one_lost_check_changes_nothing() {
        let mut h = HealthState::new();
        h.observe(true, 0, TH);
        for i in 1..100u64 {
            let ok = i % 3 != 0; // every third check fails: never `fall` in a row
            assert_eq!(h.observe(ok, i, TH), None, "flipped at {i}");
        }
        assert_eq!(h.health(), Health::Up);
    }

    #[test]
    fn rise_successes_mark_up() {
        let mut h = HealthState::new();
        h.observe(false, 0, TH);
        assert_eq!(h.observe(true, 1, TH), None);
        assert_eq!(h.observe(true, 2, TH).unwrap().to, Health::Up);
    }

    #[test]
    fn the_cadence_is_fast_only_while_a_flip_is_in_the_balance() {
        let th = Thresholds { fall: 3, rise: 2 };
        let mut h = HealthState::new();
        assert_eq!(h.cadence(th), Cadence::Steady, "unknown");
        h.observe(true, 0, th);
        assert_eq!(h.cadence(th), Cadence::Steady, "up, never failed");
        h.observe(false, 1, th);
        assert_eq!(h.cadence(th), Cadence::Fast, "up, one failure");
        h.observe(true, 2, th);
        assert_eq!(h.cadence(th), Cadence::Fast, "up, one pass after a failure (rise is 2)");
        h.observe(true, 3, th);
        assert_eq!(h.cadence(th), Cadence::Steady, "up, rise passes after the failure");
        for t in 4..7 {
            h.observe(false, t, th);
        }
        assert_eq!(h.health(), Health::Down);
        assert_eq!(h.cadence(th), Cadence::Down, "just marked down");
        h.observe(false, 7, th);
        assert_eq!(h.cadence(th), Cadence::Down, "down, still failing");
        h.observe(true, 8, th);
        assert_eq!(h.cadence(th), Cadence::Fast, "down, recovering");
        h.observe(false, 9, th);
        assert_eq!(h.cadence(th), Cadence::Down, "recovery broken off");
        h.observe(true, 10, th);
        h.observe(true, 11, th);
        assert_eq!(h.health(), Health::Up);
        assert_eq!(h.cadence(th), Cadence::Steady, "just marked up with rise passes");

        let mut first_down = HealthState::new();
        first_down.observe(false, 0, th);
        assert_eq!(first_down.cadence(th), Cadence::Down, "first result down at face value");
    }

    #[test]
    fn suspicion_starts_at_the_first_sign_of_trouble_and_ends_after_rise_clean_passes() {
        let th = Thresholds { fall: 3, rise: 2 };
        let mut h = HealthState::new();
        h.observe(true, 0, th);
        assert!(!h.suspect(), "a healthy target is not suspect");
        h.observe_graded(false, false, 1, th);
        assert!(h.suspect(), "the first failed check, long before `fall`");
        assert_eq!(h.health(), Health::Up);
        h.observe(true, 2, th);
        assert!(h.suspect(), "one pass is not `rise` passes: no flapping back");
        h.observe(true, 3, th);
        assert!(!h.suspect(), "rise clean passes clear it");
        h.observe_graded(true, true, 4, th);
        assert!(h.suspect(), "a troubled pass (slow, hedged) is a sign of trouble too");
        assert_eq!(h.health(), Health::Up, "but health only sees a pass");
        h.observe_graded(true, true, 5, th);
        h.observe(true, 6, th);
        assert!(h.suspect(), "the count of clean passes restarts after each troubled one");
        h.observe(true, 7, th);
        assert!(!h.suspect());
        for t in 8..11 {
            h.observe(false, t, th);
        }
        assert_eq!((h.health(), h.suspect()), (Health::Down, true));
        h.observe(true, 11, th);
        assert!(h.suspect(), "recovering");
        h.observe(true, 12, th);
        assert_eq!((h.health(), h.suspect()), (Health::Up, false), "clear when back up");
        assert!(HealthState::restored(Health::Down).suspect());
        assert!(!HealthState::restored(Health::Up).suspect());
    }

    proptest! {
        /// Suspicion flips at most once per sign of trouble: between two troubled results it can
        /// clear at most once, and only after `rise` clean passes.
        #[test]
        fn suspicion_never_flaps_faster_than_rise(results in proptest::collection::vec(0u8..3, 1..300), rise in 1u32..6) {
            let th = Thresholds { fall: 3, rise };
            let mut h = HealthState::new();
            let mut clean = 0u32;
            for (i, r) in results.iter().copied().enumerate() {
                // 0: pass, 1: troubled pass, 2: failure
                let before = h.suspect();
                h.observe_graded(r != 2, r == 1, i as u64, th);
                clean = if r == 0 { clean + 1 } else { 0 };
                if r != 0 {
                    prop_assert!(h.suspect());
                } else if before && !h.suspect() {
                    prop_assert_eq!(clean, rise, "cleared at exactly `rise` clean passes");
                }
                prop_assert!(before || r != 0 || !h.suspect(), "a clean pass never makes a target suspect");
            }
        }

        /// A target that never fails is always on the steady cadence.
        #[test]
        fn a_target_that_never_fails_is_never_fast(n in 1usize..300, rise in 1u32..6, fall in 1u32..6) {
            let th = Thresholds { fall, rise };
            let mut h = HealthState::new();
            for i in 0..n {
                h.observe(true, i as u64, th);
                prop_assert_eq!(h.cadence(th), Cadence::Steady);
            }
        }


        /// A flip happens exactly when the streak reaches the threshold, and never otherwise.
        #[test]
        fn flips_only_at_thresholds(results in proptest::collection::vec(any::<bool>(), 1..200), fall in 1u32..6, rise in 1u32..6) {
            let th = Thresholds { fall, rise };
            let mut h = HealthState::new();
            let mut run: Vec<bool> = Vec::new();
            for (i, ok) in results.iter().copied().enumerate() {
                let before = h.health();
                run.push(ok);
                let flip = h.observe(ok, i as u64, th);
                let streak = run.iter().rev().take_while(|&&r| r == ok).count() as u32;
                let expected = match (before, ok) {
                    (Health::Unknown, _) => true,
                    (Health::Up, false) => streak == fall,
                    (Health::Down, true) => streak == rise,
                    _ => false,
                };
                prop_assert_eq!(flip.is_some(), expected, "result {} ({}), streak {}", i, ok, streak);
                if let Some(t) = flip {
                    prop_assert_eq!(t.to, if ok { Health::Up } else { Health::Down });
                    prop_assert_eq!(t.from, before);
                }
            }
        }
    }
}
