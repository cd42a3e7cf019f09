//! The `postgres` actuator kind: make the decided target the one writable primary of its
//! service.
//!
//! `apply` for "db -> pg2, epoch 7", in this order:
//! 1. **Fence** every other target that may still take writes. The `fence` command (STONITH,
//!    a cloud API call, `pg_ctl stop -m immediate` over ssh...) runs for the previous primary
//!    before a promotion, and for any other target seen as a writable primary. When such a
//!    server answers SQL it is also fenced in-band: `ALTER SYSTEM SET
//!    default_transaction_read_only = on`, reload, and its client sessions terminated. A failed
//!    fence command stops the promotion (retried with backoff): no fence, no second primary.
//! 2. **Fast-forward**: if another reachable standby has received more WAL than the chosen one,
//!    the chosen one is pointed at it (cascading replication) until it has received as much, so
//!    a promotion never loses what any standby had (pg_auto_failover does the same). The engine
//!    picks among eligible standbys by priority; this step gives the pick the most WAL.
//! 3. **Promote**: with `synchronous = true` only a standby the primary last listed as `sync` or
//!    `quorum` (see `pg::board`); `pg_promote()`, then wait until a write
//!    (`pg_current_xact_id()`) succeeds.
//! 4. **Repoint** the other reachable standbys (`primary_conninfo` via `ALTER SYSTEM` + reload);
//!    unreachable ones are named in the outcome as still to repoint (the next verify does it).
//!
//! `verify` (every `verify_every`) checks that the active target is a writable primary, no other
//! target is an unfenced primary, and every reachable standby follows the active one; a failed
//! verify makes the runner apply again, which fences an old primary that came back.
//!
//! It decides nothing (the engine chose the target) and writes no events (it returns outcomes).
//! The other actuators of the service (DNS, hooks) run independently: the name may move to the
//! standby a moment before it accepts writes; clients then get read-only errors, never a second
//! primary.

use std::any::Any;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::{self, Conn, Login, Status, literal, lsn};
use super::config::PgService;
use crate::actuator::registry::{Kind, StartCtx, StartError};
use crate::actuator::{ActFuture, Actuator, Desired, Outcome};
use crate::config::{CheckKind, Config, ServiceConfig};

/// How long one connection attempt to a server may take during a failover.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the fence command may run.
const FENCE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fast-forward, a promotion and the first write may take.
const CATCH_UP: Duration = Duration::from_secs(30);
const PROMOTE_WAIT_S: u32 = 30;

/// Started when any service has `kind = "postgres"`; holds nothing between runs.
pub struct PgKind;

impl PgKind {
    pub fn configured(config: &Config) -> bool {
        config.services.iter().any(|s| s.postgres.is_some())
    }

    pub fn start(_: &StartCtx) -> Result<Box<dyn Kind>, StartError> {
        Ok(Box::new(PgKind))
    }
}

impl Kind for PgKind {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn actuators(&self, service: &ServiceConfig) -> Vec<Arc<dyn Actuator>> {
        match Promote::new(service) {
            Some(p) => vec![Arc::new(p) as Arc<dyn Actuator>],
            None => Vec::new(),
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// One server of the service, as the actuator reaches it.
#[derive(Debug, Clone)]
pub struct Server {
    pub name: String,
    pub address: IpAddr,
    pub ip: IpAddr,
    pub port: u16,
}

/// The promotion actuator of one service.
pub struct Promote {
    service: String,
    servers: Vec<Server>,
    login: Login,
    pg: PgService,
}

impl Promote {
    pub fn new(service: &ServiceConfig) -> Option<Promote> {
        let pg = service.postgres.clone()?;
        let check = service.check.postgres.as_ref()?;
        let port = match &service.check.kind {
            CheckKind::Tcp(t) => t.port,
            _ => return None,
        };
        let servers = service
            .targets
            .iter()
            .map(|t| Server { name: t.name.clone(), address: t.address, ip: t.check_ip(), port: t.check_port.unwrap_or(port) })
            .collect();
        let login = Login { user: check.user.clone(), password: check.password.clone(), dbname: check.dbname.clone() };
        Some(Promote { service: service.name.clone(), servers, login, pg })
    }

    async fn connect(&self, s: &Server) -> Result<Conn, String> {
        client::connect(s.ip, s.port, &self.login, CONNECT_TIMEOUT).await
    }

    /// Everyone but `active`, each with a connection and its status when it answers.
    async fn others(&self, active: &str) -> Vec<(&Server, Result<(Conn, Status), String>)> {
        let mut v = Vec::new();
        for s in self.servers.iter().filter(|s| s.name != active) {
            let r = match self.connect(s).await {
                Ok(c) => match client::status(&c).await {
                    Ok(st) => Ok((c, st)),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            v.push((s, r));
        }
        v
    }

    async fn run_fence(&self, s: &Server) -> Result<String, String> {
        if self.pg.fence.is_empty() {
            return Ok(String::new());
        }
        let argv: Vec<String> = self.pg.fence.iter().map(|a| a.replace("{target}", &s.name).replace("{address}", &s.address.to_string())).collect();
        let env = [("UNDERSTUDY_SERVICE".to_string(), self.service.clone()), ("UNDERSTUDY_FENCE_TARGET".to_string(), s.name.clone())];
        let out = crate::process::run_clean(&argv, &env, FENCE_TIMEOUT, 4096).await;
        if out.ok { Ok(format!("fence command for {}: {}", s.name, out.summary())) } else { Err(format!("fence command for {} failed: {}", s.name, out.summary())) }
    }

    async fn apply_inner(&self, d: &Desired) -> Outcome {
        let Some(active) = d.active.as_ref() else {
            return Outcome::ok("no active target: nothing to promote");
        };
        if d.all_down {
            return Outcome::ok(format!("all targets down: not promoting {} (the all_down policy chose it)", active.name));
        }
        let Some(me) = self.servers.iter().find(|s| s.name == active.name) else {
            return Outcome::fatal(format!("{} is not a target of {}", active.name, self.service));
        };
        let conn = match self.connect(me).await {
            Ok(c) => c,
            Err(e) => return Outcome::failed(format!("cannot reach {}: {e}", me.name)),
        };
        let st = match client::status(&conn).await {
            Ok(s) => s,
            Err(e) => return Outcome::failed(format!("{}: {e}", me.name)),
        };
        let mut notes = Vec::new();
        let must_promote = st.in_recovery;
        if !must_promote && st.read_only {
            return Outcome::fatal(format!(
                "{} is a fenced old primary: bring it back with `understudy pg rejoin {} {}` and move traffic to the current primary",
                me.name, self.service, me.name
            ));
        }

        // 1. Fence.
        let others = self.others(&me.name).await;
        for (s, r) in &others {
            let writable = matches!(r, Ok((_, st)) if !st.in_recovery && !st.read_only);
            let previous = d.previous.as_ref().is_some_and(|p| p.name == s.name) && must_promote;
            if writable || previous {
                match self.run_fence(s).await {
                    Ok(n) if !n.is_empty() => notes.push(n),
                    Ok(_) => {}
                    Err(e) => return Outcome::failed(format!("{e}; not promoting {} while {} may take writes", me.name, s.name)),
                }
            }
            if let (true, Ok((c, _))) = (writable, r) {
                match fence_sql(c).await {
                    Ok(n) => notes.push(format!("fenced {} read-only ({n} sessions ended)", s.name)),
                    Err(e) => return Outcome::failed(format!("cannot fence {} (a writable primary): {e}; not promoting {}", s.name, me.name)),
                }
            } else if previous && r.is_err() {
                notes.push(format!("{} unreachable", s.name));
            }
        }

        // 2. and 3. Fast-forward and promote.
        if must_promote {
            if self.pg.synchronous {
                let sync = super::board::last(&self.service).is_some_and(|p| p.followers.iter().any(|f| f.application_name == me.name && f.synchronous()));
                if !sync {
                    return Outcome::fatal(format!("synchronous = true and {} was not a synchronous standby when the primary was last seen: not promoting", me.name));
                }
            }
            let mine = st.receive_lsn.unwrap_or(0).max(st.replay_lsn.unwrap_or(0));
            let best = others
                .iter()
                .filter_map(|(s, r)| r.as_ref().ok().filter(|(_, st)| st.in_recovery).map(|(_, st)| (*s, st.receive_lsn.unwrap_or(0))))
                .max_by_key(|(_, l)| *l);
            if let Some((src, their)) = best
                && their > mine
            {
                if let Err(e) = self.fast_forward(&conn, me, src, their).await {
                    return Outcome::failed(e);
                }
                notes.push(format!("fast-forwarded {} from {} ({} -> {})", me.name, src.name, lsn(mine), lsn(their)));
            }
            let t0 = Instant::now();
            if let Err(e) = self.promote(&conn).await {
                return Outcome::failed(format!("promoting {}: {e}", me.name));
            }
            notes.push(format!("promoted {} in {} ms, accepting writes", me.name, t0.elapsed().as_millis()));
        }

        // 4. Repoint.
        let mut pending = Vec::new();
        for (s, r) in &others {
            match r {
                Ok((c, st)) if st.in_recovery => match self.repoint(c, s, me).await {
                    Ok(true) => notes.push(format!("repointed {} to {}", s.name, me.name)),
                    Ok(false) => {}
                    Err(e) => pending.push(format!("{} ({e})", s.name)),
                },
                Ok(_) => {} // an old primary: fenced above; it needs `pg rejoin`
                Err(e) => pending.push(format!("{} ({e})", s.name)),
            }
        }
        if !pending.is_empty() {
            notes.push(format!("still to repoint: {}", pending.join(", ")));
        }
        if notes.is_empty() {
            notes.push(format!("{} is the primary", me.name));
        }
        Outcome::ok(notes.join("; "))
    }

    /// Point `me` at the standby `src` until it has received `target` (cascading replication).
    async fn fast_forward(&self, conn: &Conn, me: &Server, src: &Server, target: u64) -> Result<(), String> {
        set_conninfo(conn, &self.pg.conninfo_for(&me.name, src.ip, src.port)).await.map_err(|e| format!("pointing {} at {}: {e}", me.name, src.name))?;
        let deadline = Instant::now() + CATCH_UP;
        loop {
            let st = client::status(conn).await?;
            if st.receive_lsn.unwrap_or(0) >= target {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("{} did not receive {} from {} within {}s", me.name, lsn(target), src.name, CATCH_UP.as_secs()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Lift a fence left from an earlier life, promote, and wait for the first write.
    async fn promote(&self, conn: &Conn) -> Result<(), String> {
        client::rows(conn, "ALTER SYSTEM RESET default_transaction_read_only").await?;
        client::rows(conn, "SELECT pg_reload_conf()").await?;
        let r = client::rows(conn, &format!("SELECT pg_promote(true, {PROMOTE_WAIT_S})")).await?;
        if r.first().and_then(|row| row.first().cloned().flatten()).as_deref() != Some("t") {
            return Err(format!("pg_promote() did not finish within {PROMOTE_WAIT_S}s"));
        }
        let deadline = Instant::now() + CATCH_UP;
        loop {
            match client::rows(conn, "SELECT pg_current_xact_id()").await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(format!("promoted but not accepting writes: {e}")),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Make the standby behind `conn` follow `primary`; false when it already does.
    async fn repoint(&self, conn: &Conn, standby: &Server, primary: &Server) -> Result<bool, String> {
        let want = self.pg.conninfo_for(&standby.name, primary.ip, primary.port);
        let have = client::rows(conn, "SHOW primary_conninfo").await?;
        if have.first().and_then(|r| r.first().cloned().flatten()).as_deref() == Some(want.as_str()) {
            return Ok(false);
        }
        set_conninfo(conn, &want).await?;
        Ok(true)
    }

    async fn verify_inner(&self, d: &Desired) -> Outcome {
        let Some(active) = d.active.as_ref().filter(|_| !d.all_down) else {
            return Outcome::ok("nothing to verify");
        };
        let Some(me) = self.servers.iter().find(|s| s.name == active.name) else {
            return Outcome::fatal(format!("{} is not a target of {}", active.name, self.service));
        };
        let st = match self.connect(me).await {
            Ok(c) => client::status(&c).await,
            Err(e) => Err(e),
        };
        match st {
            Ok(st) if !st.in_recovery && !st.read_only => {}
            Ok(st) if st.in_recovery => return Outcome::failed(format!("{} is still a standby", me.name)),
            Ok(_) => return Outcome::failed(format!("{} is read-only", me.name)),
            Err(e) => return Outcome::failed(format!("cannot reach {}: {e}", me.name)),
        }
        let mut drift = Vec::new();
        for (s, r) in self.others(&me.name).await {
            let Ok((c, st)) = r else { continue };
            if !st.in_recovery && !st.read_only {
                drift.push(format!("{} is a writable primary too", s.name));
            } else if st.in_recovery {
                let want = self.pg.conninfo_for(&s.name, me.ip, me.port);
                let have = client::rows(&c, "SHOW primary_conninfo").await.ok().and_then(|r| r.first().cloned()).and_then(|r| r.first().cloned().flatten());
                if have.as_deref() != Some(want.as_str()) {
                    drift.push(format!("{} does not follow {}", s.name, me.name));
                }
            }
        }
        if drift.is_empty() { Outcome::ok(format!("{} is the only writable primary", me.name)) } else { Outcome::failed(drift.join("; ")) }
    }
}

async fn set_conninfo(conn: &Conn, conninfo: &str) -> Result<(), String> {
    client::rows(conn, &format!("ALTER SYSTEM SET primary_conninfo = {}", literal(conninfo))).await?;
    client::rows(conn, "SELECT pg_reload_conf()").await?;
    Ok(())
}

/// Make a primary refuse writes: read-only by default for every new transaction, and the
/// sessions that are open now ended. Returns how many sessions were ended.
async fn fence_sql(conn: &Conn) -> Result<usize, String> {
    client::rows(conn, "ALTER SYSTEM SET default_transaction_read_only = on").await?;
    client::rows(conn, "SELECT pg_reload_conf()").await?;
    let ended = client::rows(
        conn,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND datname IS NOT NULL",
    )
    .await
    .map(|r| r.len())
    .unwrap_or(0);
    Ok(ended)
}

impl Actuator for Promote {
    fn name(&self) -> &str {
        "postgres"
    }

    fn apply<'a>(&'a self, desired: &'a Desired) -> ActFuture<'a> {
        Box::pin(self.apply_inner(desired))
    }

    fn verify<'a>(&'a self, desired: &'a Desired) -> Option<ActFuture<'a>> {
        Some(Box::pin(self.verify_inner(desired)))
    }
}
