//! Probes: run one kind of check against one target and report a raw pass/fail.
//!
//! A probe never decides health: it reports what it saw ([`CheckResult`]) and `health/` owns the
//! fall/rise thresholds. The [`scheduler`] runs one task per target at a fixed rate with an
//! initial random offset (so checks spread over the interval), enforces the timeout, and never
//! lets a slow target delay another one.
//!
//! One implementation per file: `http.rs` (http and https), `tcp.rs`, `exec.rs`, `postgres.rs`, `redis.rs`,
//! `mysql.rs` (`replica.rs`: what the last two share; `config.rs`: their settings and the drift
//! checks'); `compare.rs` runs the drift checks (`[[service.compare]]`), which compare targets
//! with the active one rather than judge each alone.

pub mod checker;
pub mod compare;
pub mod config;
pub mod exec;
pub mod http;
pub mod lag;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod replica;
pub mod scheduler;
pub mod tcp;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{CheckConfig, CheckKind, TargetConfig};

/// What one check saw.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    pub ok: bool,
    /// Time from the start of the check to its verdict (the timeout, when it timed out).
    pub latency: Duration,
    /// Human-readable reason: `HTTP 200`, `connection refused`, `timed out after 500ms`,
    /// `exit status 1: <first line of output>`. Borrowed when the probe's words are fixed
    /// (`connected`), so the common result costs no allocation (issue 17).
    pub reason: Reason,
    /// Wall-clock start time, microseconds since the Unix epoch.
    pub started_us: u64,
    /// The check could not be made for a reason on the monitor's side (see
    /// [`Verdict::checker_error`]); `ok` is false but this is no evidence against the target.
    pub checker_error: bool,
    /// Replication lag the check measured (database checks on a replica; `None` for a primary
    /// and for checks that measure none).
    pub lag: Option<Lag>,
}

/// How far a replica is behind its primary, as a database check measured it. Carried as data
/// (not only in the reason text) so the API, `understudy status`, the metrics and the lag alert
/// read the same numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lag {
    /// WAL (or replication offset) the replica has not applied yet.
    pub bytes: u64,
    /// Seconds behind, when the server says (zero when caught up); `None` when it cannot tell.
    pub seconds: Option<f64>,
}

/// A check's reason: fixed words are borrowed, built ones owned.
pub type Reason = std::borrow::Cow<'static, str>;

/// A future returned by a probe.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Verdict> + Send + 'a>>;

/// A probe's own verdict; the scheduler adds timing and turns timeouts into failures.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub ok: bool,
    pub reason: Reason,
    /// The monitor could not make the check (out of file descriptors, buffers or memory, no
    /// local address or route to send from): a checker error, neither a pass nor a failure of
    /// the target. Health ignores it; it is counted and reported instead. See [`checker`].
    pub checker_error: bool,
    /// The replication lag the check measured, if it measures one.
    pub lag: Option<Lag>,
}

impl Verdict {
    pub fn pass(reason: impl Into<Reason>) -> Self {
        Verdict { ok: true, reason: reason.into(), checker_error: false, lag: None }
    }
    pub fn fail(reason: impl Into<Reason>) -> Self {
        Verdict { ok: false, reason: reason.into(), checker_error: false, lag: None }
    }
    /// The monitor's own fault, not the target's.
    pub fn checker_error(reason: impl Into<Reason>) -> Self {
        Verdict { ok: false, reason: reason.into(), checker_error: true, lag: None }
    }
    /// The same verdict carrying the lag the check measured.
    pub fn with_lag(self, lag: Lag) -> Self {
        Verdict { lag: Some(lag), ..self }
    }
}

/// One kind of check, bound to one target.
pub trait Probe: Send + Sync + 'static {
    /// Run the check once. The scheduler wraps this in the check's timeout and drops the
    /// future when it expires, so implementations must release resources on drop (child
    /// processes are started with `kill_on_drop`).
    fn check(&self) -> CheckFuture<'_>;

    /// What the probe checks, for logs and the API: `http://127.0.0.2:8080/health`.
    fn describe(&self) -> String;

    /// Whether the scheduler may start a second attempt when the first is slow (see
    /// `scheduler::hedged`). Network probes say yes: a lost SYN is retransmitted by the kernel
    /// only after a second, longer than most timeouts. Commands say no: running someone's
    /// script twice at once is not ours to decide.
    fn hedge(&self) -> bool {
        false
    }
}

/// Errors building a probe (bad TLS setup and the like); config validation catches the rest.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot build HTTP client for {what}: {source}")]
    HttpClient { what: String, source: reqwest::Error },
    #[error("cannot set up TLS for {what}: {reason}")]
    Tls { what: String, reason: String },
}

/// Build the probe for `check` against `target`.
pub fn build(check: &CheckConfig, target: &TargetConfig) -> Result<Arc<dyn Probe>, ProbeError> {
    let ip = target.check_ip();
    Ok(match &check.kind {
        CheckKind::Http(h) => {
            let port = target.check_port.unwrap_or(h.port);
            Arc::new(http::HttpProbe::new(h, SocketAddr::new(ip, port))?)
        }
        CheckKind::Tcp(t) if check.postgres.is_some() => {
            let pg = check.postgres.clone().expect("checked just above");
            Arc::new(postgres::PostgresProbe::new(pg, &target.name, ip, target.check_port.unwrap_or(t.port), check.interval, check.timeout))
        }
        CheckKind::Tcp(t) if check.replica.is_some() => {
            let r = check.replica.clone().expect("checked just above");
            let port = target.check_port.unwrap_or(t.port);
            match r.engine {
                replica::Engine::Redis => Arc::new(redis::RedisProbe::new(r, ip, port, check.timeout)),
                replica::Engine::Mysql => Arc::new(mysql::MysqlProbe::new(r, ip, port, check.timeout)),
            }
        }
        CheckKind::Tcp(t) => {
            let port = target.check_port.unwrap_or(t.port);
            Arc::new(tcp::TcpProbe::with_close(SocketAddr::new(ip, port), t.close))
        }
        CheckKind::Exec(e) => Arc::new(exec::ExecProbe::new(e, target)),
    })
}

/// Kept for callers that still name it here; the clock lives in `crate::clock`.
pub use crate::clock::now_us;
