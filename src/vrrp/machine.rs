//! The RFC 5798 state machine of one virtual router, pure: inputs in, [`Action`]s out.
//!
//! States are RFC 5798 6.4's Initialize, Backup and Master, plus [`State::Fault`]: a tracked
//! service on this node is down, so the node resigned (sent priority 0 if it was master) and
//! will not take the VIP until the service is back. Time is a parameter (`now` on every call,
//! [`Machine::next_deadline`] for the runtime's single timer): no clock, no sockets, no tasks.
//! The runtime (`mod.rs`) feeds it received advertisements that passed [`super::packet::parse`]
//! and match its VRID, and carries out the actions in order.
//!
//! Where it goes beyond the RFC, on purpose (each has a unit test):
//! - **Preemption is immediate** once allowed: a backup that hears a lower-priority master and
//!   may preempt (`preempt = true`, `preempt_delay` over since it started or left Fault) takes
//!   over at once instead of discarding adverts until Master_Down_Interval runs out; the old
//!   master sees the higher priority and steps down on the next packet, so the VIP moves with no
//!   gap. Until `preempt_delay` is over, lower-priority adverts are accepted as from any master.
//! - **Resign skew is short**: after a priority-0 advert a backup waits Skew_Time computed over
//!   at most [`RESIGN_SKEW_BASE`] instead of the master's whole interval (609 ms at priority
//!   100 and 1 s). Backups still wait in priority order; if two come up together the next advert
//!   settles it (the lower one steps down).
//! - **Two masters heal at once**: a master that hears a lower-priority master (a partition just
//!   healed) answers with an advertisement at once, so the other steps down within one packet.
//!   A master that steps down for a higher one sends one priority-0 advert as it goes; a master
//!   that hears priority 0 re-announces the VIP (gratuitous ARP), so clients whose ARP caches
//!   still point at the loser come back to the survivor (keepalived's issue #166). A backup
//!   acts on priority 0 only from the master it follows, so that packet never starts an
//!   election among the backups.

use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The longest Skew_Time base used after a priority-0 advert (see the module doc).
pub const RESIGN_SKEW_BASE: Duration = Duration::from_millis(40);

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Initialize,
    Backup,
    Master,
    /// A tracked service is down: never master until it is back.
    Fault,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Initialize => "initialize",
            State::Backup => "backup",
            State::Master => "master",
            State::Fault => "fault",
        }
    }
}

/// What the runtime must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send one advertisement with this priority (0: resign).
    Send { priority: u8 },
    /// Add the virtual addresses and announce them (gratuitous ARP / unsolicited NA burst).
    Take,
    /// Announce the addresses again (they are already configured).
    Announce,
    /// Remove the virtual addresses.
    Release,
    /// The state changed (for events, metrics and the log).
    Transition { from: State, to: State, why: String },
}

/// The settings the machine needs; validated by `config.rs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// 1-254, or 255 for the address owner.
    pub priority: u8,
    /// Advertisement_Interval (centisecond resolution).
    pub interval: Duration,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// This node's primary address on the interface, for ties between equal priorities.
    pub local: IpAddr,
}

#[derive(Debug, Clone)]
pub struct Machine {
    p: Params,
    state: State,
    /// Master_Adver_Interval: the interval the current master advertises.
    master_interval: Duration,
    adver_timer: Option<Instant>,
    master_down_timer: Option<Instant>,
    /// Since when this node may preempt (start-up or leaving Fault, plus `preempt_delay`).
    preempt_from: Instant,
    /// Tracked services that are down (Fault while non-zero).
    faults: u32,
    /// The master last heard (status).
    master: Option<IpAddr>,
    last_announce: Option<Instant>,
}

impl Machine {
    pub fn new(p: Params, now: Instant) -> Machine {
        let mi = p.interval;
        Machine {
            p,
            state: State::Initialize,
            master_interval: mi,
            adver_timer: None,
            master_down_timer: None,
            preempt_from: now,
            faults: 0,
            master: None,
            last_announce: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn params(&self) -> &Params {
        &self.p
    }

    /// The master this node last heard from (itself when master).
    pub fn master(&self) -> Option<IpAddr> {
        if self.state == State::Master { Some(self.p.local) } else { self.master }
    }

    /// Skew_Time = ((256 - Priority) * base) / 256.
    fn skew(&self, base: Duration) -> Duration {
        base * (256 - u32::from(self.p.priority)) / 256
    }

    /// Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time.
    pub fn master_down_interval(&self) -> Duration {
        self.master_interval * 3 + self.skew(self.master_interval)
    }

    /// When the runtime must call [`Machine::on_timer`] next.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.state {
            State::Master => self.adver_timer,
            State::Backup => self.master_down_timer,
            _ => None,
        }
    }

    fn go(&mut self, to: State, why: impl Into<String>, out: &mut Vec<Action>) {
        if self.state != to {
            out.push(Action::Transition { from: self.state, to, why: why.into() });
            self.state = to;
        }
    }

    fn become_master(&mut self, now: Instant, why: impl Into<String>, out: &mut Vec<Action>) {
        out.push(Action::Send { priority: self.p.priority });
        out.push(Action::Take);
        self.last_announce = Some(now);
        self.adver_timer = Some(now + self.p.interval);
        self.master_down_timer = None;
        self.go(State::Master, why, out);
    }

    fn become_backup(&mut self, now: Instant, why: impl Into<String>, out: &mut Vec<Action>) {
        self.adver_timer = None;
        self.master_down_timer = Some(now + self.master_down_interval());
        self.go(State::Backup, why, out);
    }

    /// Startup event (RFC 5798 6.4.1).
    pub fn startup(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state != State::Initialize {
            return out;
        }
        self.preempt_from = now + self.p.preempt_delay;
        self.master_interval = self.p.interval;
        if self.faults > 0 {
            self.go(State::Fault, "a tracked service is down", &mut out);
        } else if self.p.priority == 255 {
            self.become_master(now, "address owner (priority 255)", &mut out);
        } else {
            self.become_backup(now, "started", &mut out);
        }
        out
    }

    /// Shutdown event: a master resigns with priority 0 and gives the addresses up.
    pub fn shutdown(&mut self, now: Instant) -> Vec<Action> {
        let _ = now;
        let mut out = Vec::new();
        if self.state == State::Master {
            out.push(Action::Send { priority: 0 });
            out.push(Action::Release);
        }
        self.adver_timer = None;
        self.master_down_timer = None;
        self.go(State::Initialize, "shutting down", &mut out);
        out
    }

    /// A tracked service went down (`down = true`) or came back. The first one down makes a
    /// master resign at once; the last one back lets the node compete again.
    pub fn track(&mut self, now: Instant, down: bool) -> Vec<Action> {
        let mut out = Vec::new();
        let before = self.faults;
        self.faults = if down { self.faults + 1 } else { self.faults.saturating_sub(1) };
        match (before, self.faults) {
            (0, 1..) => {
                if self.state == State::Master {
                    out.push(Action::Send { priority: 0 });
                    out.push(Action::Release);
                }
                self.adver_timer = None;
                self.master_down_timer = None;
                if self.state != State::Initialize {
                    self.go(State::Fault, "a tracked service is down", &mut out);
                }
            }
            (1.., 0) if self.state == State::Fault => {
                self.preempt_from = now + self.p.preempt_delay;
                self.master_interval = self.p.interval;
                if self.p.priority == 255 {
                    self.become_master(now, "tracked services are back (address owner)", &mut out);
                } else {
                    self.become_backup(now, "tracked services are back", &mut out);
                }
            }
            _ => {}
        }
        out
    }

    /// The timer fired (or the runtime woke up for another reason: early calls do nothing).
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match self.state {
            State::Backup if self.master_down_timer.is_some_and(|t| t <= now) => {
                self.master = None;
                self.become_master(now, "no advertisement within Master_Down_Interval", &mut out);
            }
            State::Master if self.adver_timer.is_some_and(|t| t <= now) => {
                out.push(Action::Send { priority: self.p.priority });
                self.adver_timer = Some(now + self.p.interval);
            }
            _ => {}
        }
        out
    }

    /// An advertisement for this VRID from `from` (RFC 5798 6.4.2 / 6.4.3).
    pub fn on_advert(&mut self, now: Instant, from: IpAddr, priority: u8, interval: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        if from == self.p.local {
            return out;
        }
        match self.state {
            State::Backup => {
                if priority == 0 {
                    // Only the master we follow can resign; a priority 0 from another node is a
                    // master of a healed partition stepping down (see below).
                    if self.master.is_none_or(|m| m == from) {
                        self.master_down_timer = Some(now + self.skew(self.master_interval.min(RESIGN_SKEW_BASE)));
                        self.master = None;
                    }
                } else if !self.p.preempt || priority >= self.p.priority || now < self.preempt_from {
                    self.master_interval = interval;
                    self.master_down_timer = Some(now + self.master_down_interval());
                    self.master = Some(from);
                } else {
                    self.master = None;
                    self.become_master(now, format!("preempting {from} (priority {priority} < {})", self.p.priority), &mut out);
                }
            }
            State::Master => {
                if priority > self.p.priority || (priority == self.p.priority && from > self.p.local) {
                    self.master_interval = interval;
                    self.master = Some(from);
                    out.push(Action::Release);
                    // Tell the other master that clients may still be pointed here (see Master
                    // hearing priority 0 below).
                    out.push(Action::Send { priority: 0 });
                    self.become_backup(now, format!("{from} has priority {priority}"), &mut out);
                } else {
                    // Priority 0: another node resigned mastership, so it was master too (a
                    // healed partition, or a clean shutdown racing ours); or another master with
                    // a lower priority. Either way clients may be pointed at it: answer at once
                    // (a lower master steps down on it) and win the clients back.
                    out.push(Action::Send { priority: self.p.priority });
                    self.adver_timer = Some(now + self.p.interval);
                    if self.last_announce.is_none_or(|t| now.duration_since(t) >= self.p.interval) {
                        out.push(Action::Announce);
                        self.last_announce = Some(now);
                    }
                }
            }
            State::Initialize | State::Fault => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const S: Duration = Duration::from_secs(1);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn params(priority: u8, local: &str) -> Params {
        Params { priority, interval: S, preempt: true, preempt_delay: Duration::ZERO, local: ip(local) }
    }

    fn to(actions: &[Action]) -> Option<State> {
        actions.iter().find_map(|a| match a {
            Action::Transition { to, .. } => Some(*to),
            _ => None,
        })
    }

    #[test]
    fn a_backup_takes_over_after_master_down_interval_with_skew() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(100, "198.18.0.12"), t0);
        assert_eq!(to(&m.startup(t0)), Some(State::Backup));
        // 3 x 1 s + (256 - 100) / 256 s = 3.609375 s.
        assert_eq!(m.master_down_interval(), 3 * S + Duration::from_micros(609_375));
        // A master's adverts keep it backup.
        assert!(m.on_advert(t0 + S, ip("198.18.0.11"), 150, S).is_empty());
        assert_eq!(m.master(), Some(ip("198.18.0.11")));
        let deadline = m.next_deadline().unwrap();
        assert_eq!(deadline, t0 + S + m.master_down_interval());
        assert!(m.on_timer(deadline - MS).is_empty(), "not a moment early");
        let a = m.on_timer(deadline);
        assert_eq!(a[..2], [Action::Send { priority: 100 }, Action::Take]);
        assert_eq!(to(&a), Some(State::Master));
        assert_eq!(m.next_deadline(), Some(deadline + S));
        assert_eq!(m.on_timer(deadline + S), [Action::Send { priority: 100 }]);
    }

    #[test]
    fn the_master_interval_comes_from_the_master() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(100, "198.18.0.12"), t0);
        m.startup(t0);
        m.on_advert(t0, ip("198.18.0.11"), 150, 100 * MS);
        assert_eq!(m.next_deadline(), Some(t0 + 300 * MS + 100 * MS * 156 / 256));
    }

    #[test]
    fn the_address_owner_is_master_at_once() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(255, "198.18.0.11"), t0);
        let a = m.startup(t0);
        assert_eq!(a[..2], [Action::Send { priority: 255 }, Action::Take]);
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn a_master_steps_down_for_a_higher_priority_or_an_equal_one_with_a_higher_address() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(100, "198.18.0.12"), t0);
        m.startup(t0);
        m.on_timer(t0 + 4 * S);
        assert_eq!(m.state(), State::Master);
        assert_eq!(m.on_advert(t0 + 5 * S, ip("198.18.0.11"), 100, S), [Action::Send { priority: 100 }, Action::Announce], "lower address: we stay");
        let a = m.on_advert(t0 + 5 * S, ip("198.18.0.13"), 100, S);
        assert_eq!(a[0], Action::Release);
        assert_eq!(to(&a), Some(State::Backup));
    }

    #[test]
    fn without_preempt_a_higher_priority_backup_waits_for_the_master_to_fail() {
        let t0 = Instant::now();
        let mut m = Machine::new(Params { preempt: false, ..params(200, "198.18.0.11") }, t0);
        m.startup(t0);
        for i in 1..20 {
            assert!(m.on_advert(t0 + i * S, ip("198.18.0.12"), 100, S).is_empty());
        }
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn preemption_waits_for_preempt_delay_then_is_immediate() {
        let t0 = Instant::now();
        let mut m = Machine::new(Params { preempt_delay: 5 * S, ..params(200, "198.18.0.11") }, t0);
        m.startup(t0);
        for i in 1..5 {
            assert!(m.on_advert(t0 + i * S, ip("198.18.0.12"), 100, S).is_empty(), "still within preempt_delay at {i} s");
        }
        let a = m.on_advert(t0 + 5 * S, ip("198.18.0.12"), 100, S);
        assert_eq!(a[..2], [Action::Send { priority: 200 }, Action::Take]);
        assert_eq!(to(&a), Some(State::Master));
        // The preempted master steps down on our next advert.
        let t1 = t0 + 5 * S;
        let mut old = Machine::new(params(100, "198.18.0.12"), t0);
        old.startup(t0);
        old.on_timer(t0 + 4 * S);
        assert_eq!(old.state(), State::Master);
        let a = old.on_advert(t1, ip("198.18.0.11"), 200, S);
        assert_eq!((a[0].clone(), to(&a)), (Action::Release, Some(State::Backup)));
    }

    #[test]
    fn resigning_hands_over_within_the_short_skew() {
        let t0 = Instant::now();
        let mut master = Machine::new(params(150, "198.18.0.11"), t0);
        let mut backup = Machine::new(params(100, "198.18.0.12"), t0);
        master.startup(t0);
        backup.startup(t0);
        master.on_timer(t0 + 4 * S);
        backup.on_advert(t0 + 4 * S, ip("198.18.0.11"), 150, S);
        // The tracked service fails on the master: priority 0 and the addresses go at once.
        let t1 = t0 + 4500 * MS;
        let a = master.track(t1, true);
        assert_eq!(a[..2], [Action::Send { priority: 0 }, Action::Release]);
        assert_eq!(master.state(), State::Fault);
        assert_eq!(master.next_deadline(), None, "a node in fault never takes over");
        assert!(backup.on_advert(t1, ip("198.18.0.11"), 0, S).is_empty());
        let takeover = backup.next_deadline().unwrap();
        assert_eq!(takeover - t1, RESIGN_SKEW_BASE * 156 / 256, "24 ms, not 609 ms");
        assert_eq!(to(&backup.on_timer(takeover)), Some(State::Master));
        // The service is back: the old master competes again and preempts.
        let a = master.track(t1 + 10 * S, false);
        assert_eq!(to(&a), Some(State::Backup));
        let a = master.on_advert(t1 + 10 * S + 100 * MS, ip("198.18.0.12"), 100, S);
        assert_eq!(to(&a), Some(State::Master));
    }

    #[test]
    fn two_tracked_services_down_need_both_back() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(150, "198.18.0.11"), t0);
        m.startup(t0);
        m.track(t0, true);
        m.track(t0, true);
        assert!(m.track(t0, false).is_empty());
        assert_eq!(m.state(), State::Fault);
        assert_eq!(to(&m.track(t0, false)), Some(State::Backup));
    }

    #[test]
    fn a_service_down_before_start_up_starts_in_fault() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(255, "198.18.0.11"), t0);
        assert!(m.track(t0, true).is_empty());
        assert_eq!(to(&m.startup(t0)), Some(State::Fault));
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn shutdown_of_a_master_resigns_and_releases() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(255, "198.18.0.11"), t0);
        m.startup(t0);
        let a = m.shutdown(t0 + S);
        assert_eq!(a[..2], [Action::Send { priority: 0 }, Action::Release]);
        assert_eq!(m.state(), State::Initialize);
        let mut b = Machine::new(params(100, "198.18.0.12"), t0);
        b.startup(t0);
        assert!(!b.shutdown(t0).contains(&Action::Release), "a backup holds nothing");
    }

    /// Two nodes on a simulated wire with a controllable partition: after it heals there is
    /// exactly one master within one advertisement interval, and it re-announces the VIP.
    #[test]
    fn a_healed_partition_leaves_exactly_one_master_within_one_interval() {
        let t0 = Instant::now();
        let mut nodes = [Machine::new(params(150, "198.18.0.11"), t0), Machine::new(params(100, "198.18.0.12"), t0)];
        let ips = [ip("198.18.0.11"), ip("198.18.0.12")];
        let mut announced = [0u32; 2];
        for n in &mut nodes {
            n.startup(t0);
        }
        let heal = t0 + 20 * S;
        let mut now = t0;
        let mut one_master_at = None;
        // A 1 ms step simulation; adverts are delivered at once unless partitioned.
        while now < t0 + 30 * S {
            now += MS;
            let mut wire: Vec<(usize, u8)> = Vec::new();
            for (i, n) in nodes.iter_mut().enumerate() {
                for a in n.on_timer(now) {
                    match a {
                        Action::Send { priority } => wire.push((i, priority)),
                        Action::Take | Action::Announce => announced[i] += 1,
                        _ => {}
                    }
                }
            }
            // Replies to delivered adverts go out in the same millisecond.
            while let Some((from, prio)) = wire.pop() {
                if now < heal {
                    continue;
                }
                let to_i = 1 - from;
                for a in nodes[to_i].on_advert(now, ips[from], prio, S) {
                    match a {
                        Action::Send { priority } => wire.push((to_i, priority)),
                        Action::Take | Action::Announce => announced[to_i] += 1,
                        _ => {}
                    }
                }
            }
            if now == heal - MS {
                assert_eq!([nodes[0].state(), nodes[1].state()], [State::Master, State::Master], "both are master while partitioned");
                announced = [0, 0];
            }
            if now >= heal && one_master_at.is_none() && nodes.iter().filter(|n| n.state() == State::Master).count() == 1 {
                one_master_at = Some(now);
            }
        }
        let healed_in = one_master_at.expect("one master after the heal") - heal;
        assert!(healed_in <= S, "one master {healed_in:?} after the heal");
        assert_eq!([nodes[0].state(), nodes[1].state()], [State::Master, State::Backup], "the higher priority wins");
        assert!(announced[0] >= 1, "the survivor re-announced the VIP");
    }

    #[test]
    fn a_backup_acts_on_priority_zero_only_from_its_master() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(100, "198.18.0.13"), t0);
        m.startup(t0);
        m.on_advert(t0, ip("198.18.0.11"), 150, S);
        let before = m.next_deadline();
        m.on_advert(t0 + MS, ip("198.18.0.12"), 0, S);
        assert_eq!(m.next_deadline(), before, "a stepping-down master of a healed partition starts no election");
        m.on_advert(t0 + MS, ip("198.18.0.11"), 0, S);
        assert_eq!(m.next_deadline(), Some(t0 + MS + RESIGN_SKEW_BASE * 156 / 256));
    }

    #[test]
    fn our_own_adverts_looped_back_are_ignored() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(255, "198.18.0.11"), t0);
        m.startup(t0);
        assert!(m.on_advert(t0, ip("198.18.0.11"), 255, S).is_empty());
    }
}
