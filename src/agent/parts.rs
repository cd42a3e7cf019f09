//! Running one part of the agent's answer: a postgres, redis, disk, exec or http check, each
//! bounded by its own timeout, each reporting ok, latency and a message.
//!
//! The network kinds reuse the monitor's own clients (`pg::client`, `probe::redis`,
//! `probe::http`, `probe::exec`); the disk kind calls `statvfs(3)`. A part never writes to what
//! it checks (the postgres part reads `pg_is_in_recovery()` and `transaction_read_only` instead
//! of writing a row) and never decides the overall answer; `agent/mod.rs` composes them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::{Expect, MinFree, Part, PartKind};
use crate::probe::{Probe, Verdict};

/// What one part saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub ok: bool,
    pub latency: Duration,
    pub message: String,
}

/// A part ready to run (clients built once, at start-up).
pub enum Runner {
    Postgres { addr: std::net::SocketAddr, login: crate::pg::client::Login, expect: Expect },
    Redis { addr: std::net::SocketAddr, user: Option<String>, password: Option<String> },
    Disk { path: PathBuf, min_free: MinFree },
    Probe(Arc<dyn Probe>),
}

/// Build the runner for `part`.
pub fn build(part: &Part) -> Result<Runner, String> {
    Ok(match &part.kind {
        PartKind::Postgres { addr, user, password, dbname, expect } => {
            Runner::Postgres { addr: *addr, login: crate::pg::client::Login { user: user.clone(), password: password.clone(), dbname: dbname.clone() }, expect: *expect }
        }
        PartKind::Redis { addr, user, password } => Runner::Redis { addr: *addr, user: user.clone(), password: password.clone() },
        PartKind::Disk { path, min_free } => Runner::Disk { path: path.clone(), min_free: *min_free },
        PartKind::Exec { argv } => {
            let target = crate::config::TargetConfig { name: part.name.clone(), address: [127, 0, 0, 1].into(), check_address: None, check_port: None };
            Runner::Probe(Arc::new(crate::probe::exec::ExecProbe::new(&crate::config::ExecCheck { command: argv.clone() }, &target)))
        }
        PartKind::Http { check, addr } => Runner::Probe(Arc::new(crate::probe::http::HttpProbe::new(check, *addr).map_err(|e| e.to_string())?)),
    })
}

/// Run `runner` once within `timeout`.
pub async fn run(runner: &Runner, timeout: Duration) -> Outcome {
    let start = Instant::now();
    let verdict = match tokio::time::timeout(timeout, check(runner, timeout)).await {
        Ok(v) => v,
        Err(_) => Verdict::fail(format!("timed out after {}", humantime::format_duration(timeout))),
    };
    Outcome { ok: verdict.ok, latency: start.elapsed(), message: verdict.reason.into_owned() }
}

async fn check(runner: &Runner, timeout: Duration) -> Verdict {
    match runner {
        Runner::Postgres { addr, login, expect } => postgres(*addr, login, *expect, timeout).await,
        Runner::Redis { addr, user, password } => match crate::probe::redis::connect(*addr, user.as_deref(), password.as_deref(), timeout).await {
            Ok(mut c) => match c.ping().await {
                Ok(()) => Verdict::pass("PONG"),
                Err(e) => Verdict::fail(e),
            },
            Err(e) => Verdict::fail(e),
        },
        Runner::Disk { path, min_free } => {
            let p = path.clone();
            match tokio::task::spawn_blocking(move || free_space(&p)).await {
                Ok(Ok((avail, total))) => disk_verdict(avail, total, *min_free),
                Ok(Err(e)) => Verdict::fail(format!("{}: {e}", path.display())),
                Err(e) => Verdict::fail(format!("statvfs task failed: {e}")),
            }
        }
        Runner::Probe(p) => p.check().await,
    }
}

async fn postgres(addr: std::net::SocketAddr, login: &crate::pg::client::Login, expect: Expect, timeout: Duration) -> Verdict {
    let conn = match crate::pg::client::connect(addr.ip(), addr.port(), login, timeout).await {
        Ok(c) => c,
        Err(e) => return Verdict::fail(e),
    };
    let rows = match crate::pg::client::rows(&conn, "SELECT pg_is_in_recovery()::text, current_setting('transaction_read_only')").await {
        Ok(r) => r,
        Err(e) => return Verdict::fail(format!("status query failed: {e}")),
    };
    let row = rows.first();
    let in_recovery = row.and_then(|r| r.first().cloned().flatten()).as_deref() == Some("true");
    let read_only = row.and_then(|r| r.get(1).cloned().flatten()).as_deref() == Some("on");
    postgres_verdict(in_recovery, read_only, expect)
}

/// The verdict for a server's role against what the part expects (pure).
pub fn postgres_verdict(in_recovery: bool, read_only: bool, expect: Expect) -> Verdict {
    match (expect, in_recovery, read_only) {
        (Expect::Standby | Expect::Any, true, _) => Verdict::pass("standby (in recovery)"),
        (Expect::Primary | Expect::Any, false, false) => Verdict::pass("primary, writable"),
        (Expect::Primary, true, _) => Verdict::fail("in recovery (a standby); expected a writable primary"),
        (Expect::Primary | Expect::Any, false, true) => Verdict::fail("primary but read-only (transaction_read_only = on): writes would fail"),
        (Expect::Standby, false, _) => Verdict::fail("not in recovery (a primary); expected a standby"),
    }
}

/// Bytes available to unprivileged users, and the filesystem's size.
fn free_space(path: &Path) -> Result<(u64, u64), String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| "path holds a NUL byte".to_string())?;
    // SAFETY: `st` is plain old data that statvfs fills; `c` is a valid NUL-terminated string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    let frsize = st.f_frsize as u64;
    Ok(((st.f_bavail as u64).saturating_mul(frsize), (st.f_blocks as u64).saturating_mul(frsize)))
}

/// `1.5 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} bytes") } else { format!("{v:.1} {}", UNITS[unit]) }
}

/// The verdict for `avail` bytes free of `total` (pure).
pub fn disk_verdict(avail: u64, total: u64, min_free: MinFree) -> Verdict {
    let pct = if total == 0 { 0.0 } else { avail as f64 * 100.0 / total as f64 };
    let (ok, limit) = match min_free {
        MinFree::Bytes(b) => (avail >= b, human(b)),
        MinFree::Percent(p) => (pct >= p, format!("{p}%")),
    };
    let text = format!("{} free of {} ({pct:.1}%), min_free {limit}", human(avail), human(total));
    if ok { Verdict::pass(text) } else { Verdict::fail(text) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_limits_in_bytes_and_percent() {
        let v = disk_verdict(1 << 20, 4 << 20, MinFree::Bytes(512 << 10));
        assert_eq!((v.ok, v.reason.as_ref()), (true, "1.0 MiB free of 4.0 MiB (25.0%), min_free 512.0 KiB"));
        assert!(!disk_verdict(1 << 20, 4 << 20, MinFree::Bytes(2 << 20)).ok);
        assert!(!disk_verdict(1 << 20, 4 << 20, MinFree::Percent(30.0)).ok);
        assert!(disk_verdict(1 << 20, 4 << 20, MinFree::Percent(25.0)).ok);
        assert!(!disk_verdict(0, 0, MinFree::Percent(1.0)).ok, "an empty filesystem has no room");
    }

    #[test]
    fn postgres_roles_against_expectations() {
        assert!(postgres_verdict(false, false, Expect::Primary).ok);
        assert!(!postgres_verdict(false, true, Expect::Primary).ok);
        assert!(!postgres_verdict(true, false, Expect::Primary).ok);
        assert!(postgres_verdict(true, true, Expect::Standby).ok);
        assert!(!postgres_verdict(false, false, Expect::Standby).ok);
        assert!(postgres_verdict(true, false, Expect::Any).ok);
        assert_eq!(postgres_verdict(false, true, Expect::Any).reason, "primary but read-only (transaction_read_only = on): writes would fail");
    }

    #[tokio::test]
    async fn statvfs_reads_a_real_filesystem_and_a_missing_path_fails() {
        let dir = tempfile::tempdir().unwrap();
        let r = Runner::Disk { path: dir.path().to_path_buf(), min_free: MinFree::Bytes(0) };
        let o = run(&r, Duration::from_secs(5)).await;
        assert!(o.ok, "{o:?}");
        let r = Runner::Disk { path: dir.path().join("missing"), min_free: MinFree::Bytes(0) };
        let o = run(&r, Duration::from_secs(5)).await;
        assert!(!o.ok && o.message.contains("No such file"), "{o:?}");
    }
}
