//! `understudy pg rejoin SERVICE TARGET --pgdata DIR`: bring an old primary back as a standby
//! of the current primary.
//!
//! Run on the old primary's host, as the user owning its data directory. Steps: find the one
//! writable primary among the service's other targets (refuse when there is none or more than
//! one); stop the local server if it runs (`pg_ctl stop -m fast`); `pg_rewind` it against the
//! current primary (which also runs crash recovery first after a `kill -9`); write
//! `standby.signal`; keep its own configuration files (pg_rewind copies the source's); in
//! `postgresql.auto.conf`, drop the fence (`default_transaction_read_only`)
//! and set `primary_conninfo` to the current primary; start it and wait until it streams the
//! current primary's timeline.
//!
//! Before `pg_rewind` the current primary must have written a checkpoint since its promotion:
//! PostgreSQL 15's `pg_rewind` reads the source's timeline from its `pg_control`, which a
//! promotion updates only at the (spread, possibly minutes-long) checkpoint that follows it.
//! Until then `pg_rewind` reports "source and target cluster are on the same timeline" and
//! rewinds nothing, so the old primary keeps what it wrote after the fork (a commit it made
//! before the fence, the checkpoint of its crash recovery) and can never follow the new
//! timeline. `pg rejoin` runs `CHECKPOINT` on the current primary first (role `pg_checkpoint`
//! or superuser); without that privilege it proceeds only when `pg_control` is already current.
//! Likewise "streams" means the WAL receiver streams the primary's current timeline: a server
//! that did not rewind shows `streaming` for a moment on the old timeline, then stops.
//!
//! It changes only the data directory it is given and reads the others over SQL; it never
//! promotes or fences anything.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::actuator::Server;
use super::client::{self, Login};
use crate::config::{CheckKind, Config};

/// What `pg rejoin` needs besides the config.
#[derive(Debug, Clone)]
pub struct Options {
    pub pgdata: PathBuf,
    /// Where `pg_ctl` and `pg_rewind` are; default: `PATH`, then the newest
    /// `/usr/lib/postgresql/*/bin`.
    pub bindir: Option<PathBuf>,
    /// The login `pg_rewind` uses on the current primary; default: the check's user.
    pub rewind_user: Option<String>,
    /// Leave the server stopped after the rewind.
    pub no_start: bool,
    /// How long to wait for the server to stream from the primary.
    pub wait: Duration,
}

/// Rejoin `target` of `service`; returns what was done, one line per step.
pub async fn rejoin(config: &Config, service: &str, target: &str, opts: &Options) -> Result<Vec<String>, String> {
    let svc = config.services.iter().find(|s| s.name == service).ok_or_else(|| format!("no service \"{service}\" in {}", config.source.display()))?;
    let pg = svc.postgres.clone().ok_or_else(|| format!("service \"{service}\" is not kind = \"postgres\""))?;
    let check = svc.check.postgres.clone().ok_or_else(|| format!("service \"{service}\" has no postgres check"))?;
    let port = match &svc.check.kind {
        CheckKind::Tcp(t) => t.port,
        _ => return Err("the postgres check has no port".into()),
    };
    let me = svc.target(target).ok_or_else(|| format!("service \"{service}\" has no target \"{target}\""))?;
    let login = Login { user: check.user.clone(), password: check.password.clone(), dbname: check.dbname.clone() };
    let mut primaries = Vec::new();
    for t in svc.targets.iter().filter(|t| t.name != target) {
        let s = Server { name: t.name.clone(), address: t.address, ip: t.check_ip(), port: t.check_port.unwrap_or(port) };
        if let Ok(c) = client::connect(s.ip, s.port, &login, Duration::from_secs(3)).await
            && let Ok(st) = client::status(&c).await
            && !st.in_recovery
            && !st.read_only
        {
            primaries.push(s);
        }
    }
    let primary = match primaries.as_slice() {
        [p] => p.clone(),
        [] => return Err(format!("no writable primary among the other targets of \"{service}\": nothing to rejoin")),
        many => return Err(format!("more than one writable primary ({}): fix that first", many.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "))),
    };
    let mut done = vec![format!("current primary: {} ({}:{})", primary.name, primary.ip, primary.port)];
    let bin = |name: &str| -> Result<PathBuf, String> { find_bin(opts.bindir.as_deref(), name) };
    let pg_ctl = bin("pg_ctl")?;
    let pgdata = &opts.pgdata;
    if !pgdata.join("PG_VERSION").is_file() {
        return Err(format!("{} is not a PostgreSQL data directory (no PG_VERSION)", pgdata.display()));
    }
    let running = Command::new(&pg_ctl).arg("-D").arg(pgdata).arg("status").output().map_err(|e| format!("cannot run {}: {e}", pg_ctl.display()))?;
    if running.status.success() {
        run(Command::new(&pg_ctl).arg("-D").arg(pgdata).args(["-m", "fast", "-w", "stop"]))?;
        done.push(format!("stopped the server in {}", pgdata.display()));
    }
    let user = opts.rewind_user.clone().unwrap_or(check.user.clone());
    let rewind_login = Login { user: user.clone(), password: check.password.clone(), dbname: check.dbname.clone() };
    let timeline = match checkpoint_source(&primary, &rewind_login).await? {
        (tli, Some(before)) if before != tli => {
            done.push(format!("checkpoint on {}: its pg_control named timeline {before}, it runs on {tli} (pg_rewind would have rewound nothing)", primary.name));
            tli
        }
        (tli, Some(_)) => {
            done.push(format!("checkpoint on {} (timeline {tli})", primary.name));
            tli
        }
        (tli, None) => tli,
    };
    let source = format!("host={} port={} user={} dbname={}", primary.ip, primary.port, user, check.dbname);
    let mut rewind = Command::new(bin("pg_rewind")?);
    rewind.arg("--target-pgdata").arg(pgdata).arg("--source-server").arg(&source);
    if let Some(p) = &check.password {
        rewind.env("PGPASSWORD", p);
    }
    // pg_rewind copies the source's configuration files too; a server whose configuration lives
    // in its data directory keeps its own (its address, port, access rules).
    let kept: Vec<(PathBuf, Vec<u8>)> =
        KEEP.iter().filter_map(|f| std::fs::read(pgdata.join(f)).ok().map(|b| (pgdata.join(f), b))).collect();
    let out = run(&mut rewind)?;
    for (path, bytes) in &kept {
        std::fs::write(path, bytes).map_err(|e| format!("cannot restore {}: {e}", path.display()))?;
    }
    done.push(format!("pg_rewind: {}", out.lines().last().map(|l| l.trim_start_matches("pg_rewind: ")).unwrap_or("done")));
    std::fs::write(pgdata.join("standby.signal"), b"").map_err(|e| format!("cannot write standby.signal: {e}"))?;
    let conninfo = pg.conninfo_for(target, primary.ip, primary.port);
    rewrite_auto_conf(&pgdata.join("postgresql.auto.conf"), &conninfo)?;
    done.push(format!("standby of {} ({conninfo})", primary.name));
    if opts.no_start {
        return Ok(done);
    }
    let log = pgdata.join("understudy-rejoin.log");
    run(Command::new(&pg_ctl).arg("-D").arg(pgdata).arg("-l").arg(&log).args(["-w", "-t", "60", "start"]))?;
    let deadline = Instant::now() + opts.wait;
    let ip: IpAddr = me.check_ip();
    loop {
        let streaming = match client::connect(ip, me.check_port.unwrap_or(port), &login, Duration::from_secs(2)).await {
            Ok(c) => client::rows(&c, "SELECT pg_is_in_recovery()::text, status, received_tli::text FROM pg_stat_wal_receiver").await.ok(),
            Err(_) => None,
        };
        let row = streaming.as_ref().and_then(|r| r.first()).map(|r| r.iter().map(|v| v.clone().unwrap_or_default()).collect::<Vec<_>>());
        if let Some([rec, status, tli]) = row.as_deref()
            && rec == "true"
            && status == "streaming"
            && tli.parse::<u32>().ok() == Some(timeline)
        {
            done.push(format!("started; streaming from {} on timeline {timeline}", primary.name));
            return Ok(done);
        }
        if Instant::now() >= deadline {
            return Err(format!("started, but not streaming timeline {timeline} from {} after {}s (see {})", primary.name, opts.wait.as_secs(), log.display()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Make the current primary's `pg_control` name its current timeline before `pg_rewind` reads it
/// (see the module doc). Returns the primary's timeline and, when a checkpoint was run, the
/// timeline its `pg_control` named before (the current one when that could not be read).
async fn checkpoint_source(primary: &Server, login: &Login) -> Result<(u32, Option<u32>), String> {
    let conn = client::connect(primary.ip, primary.port, login, Duration::from_secs(5)).await.map_err(|e| format!("cannot reach {} as {}: {e}", primary.name, login.user))?;
    let live = timeline(&conn, "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)", true).await.map_err(|e| format!("{}: {e}", primary.name))?;
    let recorded = timeline(&conn, "SELECT timeline_id::text FROM pg_control_checkpoint()", false).await;
    match client::rows(&conn, "CHECKPOINT").await {
        Ok(_) => Ok((live, Some(*recorded.as_ref().unwrap_or(&live)))),
        Err(e) => match recorded {
            Ok(recorded) if recorded == live => Ok((live, None)),
            Ok(recorded) => Err(format!(
                "{} has not written a checkpoint since its promotion (its pg_control names timeline {recorded}, it runs on {live}): pg_rewind would find nothing to rewind. \
                 Run CHECKPOINT on it or grant pg_checkpoint to {}, then retry ({e})",
                primary.name, login.user
            )),
            Err(e2) => Err(format!("cannot run CHECKPOINT on {} ({e}) nor read its pg_control_checkpoint() ({e2}): grant pg_checkpoint to {}", primary.name, login.user)),
        },
    }
}

/// A timeline id from a one-value query: hexadecimal (a WAL file name's first 8 digits) or decimal.
async fn timeline(conn: &client::Conn, sql: &str, hex: bool) -> Result<u32, String> {
    let rows = client::rows(conn, sql).await?;
    let v = rows.first().and_then(|r| r.first().cloned().flatten()).ok_or_else(|| format!("no value from {sql}"))?;
    let parsed = if hex { u32::from_str_radix(&v, 16) } else { v.parse() };
    parsed.map_err(|_| format!("unexpected timeline \"{v}\" from {sql}"))
}

/// Configuration files of the rejoining server that pg_rewind must not replace with the source's.
const KEEP: &[&str] = &["postgresql.conf", "postgresql.auto.conf", "pg_hba.conf", "pg_ident.conf"];

/// Drop `default_transaction_read_only` and `primary_conninfo` lines and set the new conninfo.
fn rewrite_auto_conf(path: &Path, conninfo: &str) -> Result<(), String> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let mut out: String = old
        .lines()
        .filter(|l| {
            let key = l.split('=').next().unwrap_or("").trim();
            key != "default_transaction_read_only" && key != "primary_conninfo"
        })
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&format!("primary_conninfo = {}\n", client::literal(conninfo)));
    let tmp = path.with_extension("conf.understudy");
    std::fs::write(&tmp, out).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() { Ok(text.trim().to_string()) } else { Err(format!("{:?} failed ({}): {}", cmd.get_program(), out.status, text.trim())) }
}

/// `name` in `bindir`, on `PATH`, or in the newest `/usr/lib/postgresql/*/bin` (Debian's place).
pub fn find_bin(bindir: Option<&Path>, name: &str) -> Result<PathBuf, String> {
    if let Some(d) = bindir {
        let p = d.join(name);
        return if p.is_file() { Ok(p) } else { Err(format!("no {name} in {}", d.display())) };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(p) = std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()) {
        return Ok(p);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok().map(|v| (v, e.path().join("bin").join(name)))).collect())
        .unwrap_or_default();
    versions.sort();
    versions.into_iter().rev().map(|(_, p)| p).find(|p| p.is_file()).ok_or_else(|| format!("cannot find {name}: give --bindir (Debian: /usr/lib/postgresql/15/bin)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auto_conf_loses_the_fence_and_follows_the_new_primary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("postgresql.auto.conf");
        std::fs::write(&p, "# Do not edit\ndefault_transaction_read_only = 'on'\nprimary_conninfo = 'host=old'\nwork_mem = '8MB'\n").unwrap();
        rewrite_auto_conf(&p, "host=127.0.0.3 port=5432 user=r application_name=pg1").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "# Do not edit\nwork_mem = '8MB'\nprimary_conninfo = 'host=127.0.0.3 port=5432 user=r application_name=pg1'\n");
    }
}
