//! PostgreSQL probe (`kind = "postgres"`): connect, read the server's role and replication
//! position, and pass or fail with a reason that says both.
//!
//! - A **primary** (`pg_is_in_recovery()` false) passes, unless it is fenced
//!   (`default_transaction_read_only = on`, which the promotion actuator sets on an old primary
//!   it can reach): a fenced primary must never be chosen again before `understudy pg rejoin`.
//!   It posts its WAL position and its standbys' `sync_state` to [`crate::pg::board`].
//! - A **standby** passes while its replay lag is within `max_lag`. Lag is measured so that an
//!   idle primary does not look like a lagging standby: WAL positions first (the upstream's end
//!   of WAL, from the primary's last report or the WAL receiver, against `pg_last_wal_replay_lsn()`);
//!   only when replay is behind does the time since the last replayed commit count. A standby
//!   beyond `max_lag` *fails* with a reason naming the lag, so the decision engine never makes it
//!   active. A standby's verdict carries its lag as data ([`Verdict::lag`]) for the API, status,
//!   metrics and the lag alert (`pg::lagwatch`). With `synchronous = true` a standby
//!   passes only if the primary last listed it as `sync` or `quorum`.
//!
//! It never changes the server and never decides health: one connection, two queries, a verdict.
//! A connection refused or a login rejected fails the check; the scheduler owns the timeout.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{CheckFuture, Lag, Probe, Verdict};
use crate::pg::board::{self, PrimaryReport};
use crate::pg::client::{self, Login, Status, lsn};
use crate::pg::config::{MaxLag, PgCheck};

pub struct PostgresProbe {
    check: Arc<PgCheck>,
    target: String,
    addr: SocketAddr,
    login: Login,
    timeout: Duration,
    /// How old the primary's last report may be to count as its current WAL position.
    fresh: Duration,
    /// Since when this standby's replay has been behind, check after check.
    behind_since: std::sync::Mutex<Option<Instant>>,
}

impl PostgresProbe {
    pub fn new(check: Arc<PgCheck>, target: &str, ip: IpAddr, port: u16, interval: Duration, timeout: Duration) -> Self {
        let login = Login { user: check.user.clone(), password: check.password.clone(), dbname: check.dbname.clone() };
        PostgresProbe { check, target: target.to_string(), addr: SocketAddr::new(ip, port), login, timeout, fresh: (interval * 3).max(Duration::from_secs(3)), behind_since: Default::default() }
    }

    async fn run(&self) -> Verdict {
        let conn = match client::connect(self.addr.ip(), self.addr.port(), &self.login, self.timeout).await {
            Ok(c) => c,
            Err(e) => return Verdict::fail(e),
        };
        let st = match client::status(&conn).await {
            Ok(s) => s,
            Err(e) => return Verdict::fail(format!("status query failed: {e}")),
        };
        if !st.in_recovery {
            let followers = client::followers(&conn).await.unwrap_or_default();
            if !st.read_only {
                let report = PrimaryReport { target: self.target.clone(), at: Instant::now(), wal_lsn: st.wal_lsn.unwrap_or(0), followers };
                board::post(&self.check.service, report);
            }
        }
        let (primary, now) = (board::last(&self.check.service), Instant::now());
        let behind = st.in_recovery && standby_lag(&st, primary.as_ref(), &self.target, now, self.fresh, None).0 > 0;
        let since = {
            let mut b = self.behind_since.lock().unwrap_or_else(|e| e.into_inner());
            if !behind {
                *b = None;
            }
            behind.then(|| *b.get_or_insert(now))
        };
        judge(&st, primary.as_ref(), &self.target, &self.check, now, self.fresh, since)
    }
}

impl Probe for PostgresProbe {
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(self.run())
    }

    fn describe(&self) -> String {
        format!("postgres://{}@{}/{}", self.login.user, self.addr, self.login.dbname)
    }

    fn hedge(&self) -> bool {
        true
    }
}

/// How far a standby's replay is behind: bytes, and seconds (zero when caught up). The seconds
/// are the time since the last replayed commit, but never more than `behind_since` (since when
/// the probe has seen replay behind, check after check): after a long idle spell the first new
/// commit does not make a standby look an hour late, and a standby that has replayed nothing
/// since it started (no commit time yet) still gets a lag.
pub fn standby_lag(st: &Status, primary: Option<&PrimaryReport>, me: &str, now: Instant, fresh: Duration, behind_since: Option<Instant>) -> (u64, Option<f64>) {
    let replay = st.replay_lsn.unwrap_or(0);
    let mut upstream = st.receive_lsn.unwrap_or(0).max(replay);
    if st.receiver.is_some() {
        upstream = upstream.max(st.upstream_lsn.unwrap_or(0));
    }
    if let Some(p) = primary
        && p.target != me
        && now.saturating_duration_since(p.at) <= fresh
    {
        upstream = upstream.max(p.wal_lsn);
    }
    let bytes = upstream - replay;
    let behind_for = behind_since.map(|t| now.saturating_duration_since(t).as_secs_f64());
    let secs = match (bytes, st.since_replay_s.map(|s| s.max(0.0)), behind_for) {
        (0, _, _) => Some(0.0),
        (_, Some(s), Some(b)) => Some(s.min(b)),
        (_, s, b) => s.or(b),
    };
    (bytes, secs)
}

/// The verdict for one server's status (pure: time is a parameter). A standby's verdict carries
/// its lag as data ([`Verdict::lag`]), pass or fail; a primary's carries none.
pub fn judge(st: &Status, primary: Option<&PrimaryReport>, me: &str, check: &PgCheck, now: Instant, fresh: Duration, behind_since: Option<Instant>) -> Verdict {
    if !st.in_recovery {
        if st.read_only {
            return Verdict::fail("primary fenced read-only (default_transaction_read_only = on): bring it back with `understudy pg rejoin`");
        }
        let wal = st.wal_lsn.map(lsn).unwrap_or_else(|| "?".into());
        let followers = match primary.filter(|p| p.target == me) {
            Some(p) if !p.followers.is_empty() => {
                let list: Vec<String> = p.followers.iter().map(|f| format!("{} {}", f.application_name, f.sync_state)).collect();
                format!(", standbys: {}", list.join(", "))
            }
            _ => String::new(),
        };
        return Verdict::pass(format!("primary at {wal}{followers}"));
    }
    let (bytes, secs) = standby_lag(st, primary, me, now, fresh, behind_since);
    let measured = Lag { bytes, seconds: secs };
    let lag = match secs {
        Some(s) => format!("{bytes} bytes / {s:.1} s behind"),
        None => format!("{bytes} bytes behind"),
    };
    let receiver = match (&st.receiver, &st.upstream_host) {
        (Some(s), Some(h)) => format!("{s} from {h}"),
        (Some(s), None) => s.clone(),
        (None, _) => "not streaming".into(),
    };
    let paused = if st.replay_paused { ", replay paused" } else { "" };
    let over = match check.max_lag {
        MaxLag::Time(d) => secs.is_some_and(|s| s > d.as_secs_f64()),
        MaxLag::Bytes(b) => bytes > b,
    };
    if over {
        return Verdict::fail(format!("standby replay lag {lag} exceeds max_lag {} ({receiver}{paused})", check.max_lag)).with_lag(measured);
    }
    if check.synchronous {
        let state = primary.and_then(|p| p.followers.iter().find(|f| f.application_name == me).map(|f| (p, f)));
        match state {
            Some((_, f)) if f.synchronous() => {}
            Some((p, f)) => return Verdict::fail(format!("not a synchronous standby of {} (sync_state {}); synchronous = true", p.target, f.sync_state)).with_lag(measured),
            None => {
                let who = primary.map(|p| p.target.as_str()).unwrap_or("any primary seen so far");
                return Verdict::fail(format!("{who} does not list {me} in pg_stat_replication (application_name); synchronous = true")).with_lag(measured);
            }
        }
    }
    Verdict::pass(format!("standby, replay {lag} ({receiver}{paused})")).with_lag(measured)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::board::Follower;

    fn check(max_lag: MaxLag, synchronous: bool) -> PgCheck {
        PgCheck { service: "db".into(), user: "u".into(), password: None, dbname: "postgres".into(), max_lag, synchronous }
    }

    fn standby(receive: u64, replay: u64, since: f64) -> Status {
        Status {
            in_recovery: true,
            wal_lsn: None,
            receive_lsn: Some(receive),
            replay_lsn: Some(replay),
            since_replay_s: Some(since),
            receiver: Some("streaming".into()),
            upstream_lsn: Some(receive),
            upstream_host: Some("127.0.0.2".into()),
            replay_paused: false,
            read_only: false,
        }
    }

    fn report(at: Instant, wal: u64, followers: &[(&str, &str)]) -> PrimaryReport {
        let followers = followers.iter().map(|(n, s)| Follower { application_name: n.to_string(), sync_state: s.to_string(), flush_lsn: None }).collect();
        PrimaryReport { target: "pg1".into(), at, wal_lsn: wal, followers }
    }

    const FRESH: Duration = Duration::from_secs(3);

    #[test]
    fn an_idle_primary_does_not_make_a_caught_up_standby_look_late() {
        let now = Instant::now();
        // The last commit was an hour ago, but replay has everything the primary wrote.
        let st = standby(1000, 1000, 3600.0);
        let p = report(now, 1000, &[]);
        assert_eq!(standby_lag(&st, Some(&p), "pg2", now, FRESH, None), (0, Some(0.0)));
        assert!(judge(&st, Some(&p), "pg2", &check(MaxLag::Time(Duration::from_secs(30)), false), now, FRESH, None).ok);
        // The first write after the idle hour: replay is behind, but only since this check.
        let st = standby(1200, 1000, 3600.0);
        assert_eq!(standby_lag(&st, None, "pg2", now, FRESH, Some(now)), (200, Some(0.0)));
    }

    #[test]
    fn a_standby_whose_replay_stalls_fails_with_its_lag() {
        let now = Instant::now();
        let mut st = standby(5000, 1000, 42.5);
        st.replay_paused = true;
        let v = judge(&st, None, "pg2", &check(MaxLag::Time(Duration::from_secs(30)), false), now, FRESH, Some(now - Duration::from_secs(60)));
        assert!(!v.ok);
        assert_eq!(v.reason, "standby replay lag 4000 bytes / 42.5 s behind exceeds max_lag 30s (streaming from 127.0.0.2, replay paused)");
        // The numbers travel as data too (API, status, metrics, the lag alert).
        assert_eq!(v.lag, Some(Lag { bytes: 4000, seconds: Some(42.5) }));
        // The same standby under a byte limit.
        assert!(judge(&st, None, "pg2", &check(MaxLag::Bytes(8192), false), now, FRESH, None).ok);
        assert!(!judge(&st, None, "pg2", &check(MaxLag::Bytes(1024), false), now, FRESH, None).ok);
        // Paused before it replayed any commit since start: no commit time, the probe's own
        // observation counts.
        st.since_replay_s = None;
        assert_eq!(standby_lag(&st, None, "pg2", now, FRESH, Some(now - Duration::from_secs(5))), (4000, Some(5.0)));
        assert!(!judge(&st, None, "pg2", &check(MaxLag::Time(Duration::from_secs(2)), false), now, FRESH, Some(now - Duration::from_secs(5))).ok);
    }

    #[test]
    fn the_primarys_fresh_position_counts_and_a_stale_one_does_not() {
        let now = Instant::now();
        // The receiver is disconnected and replay has all it received, but the primary (seen
        // a second ago) is 1 MiB further.
        let mut st = standby(1000, 1000, 12.0);
        st.receiver = None;
        let p = report(now - Duration::from_secs(1), 1000 + (1 << 20), &[]);
        assert_eq!(standby_lag(&st, Some(&p), "pg2", now, FRESH, None), (1 << 20, Some(12.0)));
        assert!(!judge(&st, Some(&p), "pg2", &check(MaxLag::Bytes(1 << 16), false), now, FRESH, None).ok);
        // After the primary died its last report goes stale: the standby is a candidate.
        let later = now + Duration::from_secs(10);
        assert_eq!(standby_lag(&st, Some(&p), "pg2", later, FRESH, None), (0, Some(0.0)));
    }

    #[test]
    fn synchronous_mode_passes_only_standbys_the_primary_waits_for() {
        let now = Instant::now();
        let p = report(now, 1000, &[("pg2", "sync"), ("pg3", "potential")]);
        let c = check(MaxLag::Time(Duration::from_secs(30)), true);
        let v = judge(&standby(1000, 1000, 1.0), Some(&p), "pg2", &c, now, FRESH, None);
        assert_eq!((v.ok, v.lag), (true, Some(Lag { bytes: 0, seconds: Some(0.0) })));
        let v = judge(&standby(1000, 1000, 1.0), Some(&p), "pg3", &c, now, FRESH, None);
        assert_eq!((v.ok, v.reason.as_ref()), (false, "not a synchronous standby of pg1 (sync_state potential); synchronous = true"));
        assert!(!judge(&standby(1000, 1000, 1.0), None, "pg2", &c, now, FRESH, None).ok);
        // The last word of a dead primary still counts.
        assert!(judge(&standby(1000, 1000, 1.0), Some(&p), "pg2", &c, now + Duration::from_secs(60), FRESH, None).ok);
    }

    #[test]
    fn a_fenced_primary_fails() {
        let st = Status { in_recovery: false, wal_lsn: Some(5), read_only: true, ..standby(0, 0, 0.0) };
        let v = judge(&st, None, "pg1", &check(MaxLag::Time(Duration::from_secs(30)), false), Instant::now(), FRESH, None);
        assert!(!v.ok && v.reason.starts_with("primary fenced read-only"), "{}", v.reason);
        let open = Status { read_only: false, ..st };
        let v = judge(&open, None, "pg1", &check(MaxLag::Time(Duration::from_secs(30)), false), Instant::now(), FRESH, None);
        assert_eq!((v.reason.as_ref(), v.lag), ("primary at 0/5", None), "a primary has no lag");
    }
}
