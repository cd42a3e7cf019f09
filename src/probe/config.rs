//! The probes' config sections, validated with file, line and key in errors:
//! - the `redis` and `mysql` checks (`kind = "redis"` / `kind = "mysql"` with `user` and
//!   `password_file`, and the service's `max_lag`), validated into [`ReplicaCheck`]. Called from
//!   `config/validate.rs` (a redis or mysql check becomes a `Tcp` check on the server's port plus
//!   a [`ReplicaCheck`], the way a postgres check does). It reads the password file and nothing
//!   else: no connection is made here.
//! - `[[service.compare]]` (drift checks, run by `compare.rs`): raw keys come from
//!   `config::raw::RawCompare`; this checks them and builds [`CompareConfig`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::CheckConfig;
use crate::config::locate::Seg;
use crate::config::raw::{RawCheckKind, RawCommand, RawCompare, RawService};
use crate::config::validate::{Ctx, k, valid_name, with};
pub use crate::pg::config::{DEFAULT_MAX_LAG, MaxLag};

/// Redis's own default port.
pub const REDIS_PORT: u16 = 6379;
/// MySQL's and MariaDB's default port.
pub const MYSQL_PORT: u16 = 3306;

/// Which server a replication check talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Redis,
    Mysql,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Redis => "redis",
            Engine::Mysql => "mysql",
        }
    }
}

/// A `redis` or `mysql` check's login and lag limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaCheck {
    pub engine: Engine,
    /// The service the check belongs to (for logs).
    pub service: String,
    /// Redis: an ACL user (`AUTH user password`), or none (`AUTH password`). MySQL: the user.
    pub user: Option<String>,
    pub password: Option<String>,
    /// A replica further behind fails the check (the service's `max_lag`, default 30 s).
    pub max_lag: MaxLag,
}

/// The login keys of a `redis` or `mysql` check; `max_lag` comes from the service (see
/// [`bind_check`]).
pub(crate) fn validate_check(
    cx: &mut Ctx<'_>,
    path: &[Seg],
    engine: Engine,
    user: Option<String>,
    password_file: Option<String>,
    base_dir: &Path,
) -> Option<Arc<ReplicaCheck>> {
    if let Some(u) = &user
        && (u.is_empty() || u.len() > 80 || u.chars().any(|c| c.is_control() || c == ' '))
    {
        cx.err(&with(path, &[k("user")]), format!("expected a user name of 1 to 80 characters without spaces, got \"{u}\""));
    }
    let password = match password_file {
        None => None,
        Some(f) => match crate::config::read_secret_file(&crate::config::validate::resolve(base_dir, &f)) {
            Ok(p) => Some(p),
            Err(e) => {
                cx.err(&with(path, &[k("password_file")]), format!("password file: {e}"));
                None
            }
        },
    };
    let user = match engine {
        Engine::Mysql => Some(user.unwrap_or_else(|| "understudy".into())),
        Engine::Redis => user,
    };
    Some(Arc::new(ReplicaCheck {
        engine,
        service: String::new(),
        user,
        password,
        max_lag: DEFAULT_MAX_LAG,
    }))
}

/// A plain service with a `redis` or `mysql` check takes `max_lag` for it (the key postgres
/// services use). Takes the key out of `rs` so the postgres rules do not see it.
pub(crate) fn take_max_lag(cx: &mut Ctx<'_>, rs: &mut RawService, path: &[Seg]) -> Option<MaxLag> {
    if rs.kind.is_some() || !matches!(rs.check.kind, RawCheckKind::Redis | RawCheckKind::Mysql) {
        return None;
    }
    let s = rs.max_lag.take()?;
    let parsed = crate::pg::config::parse_max_lag(&s);
    if parsed.is_none() {
        cx.err(&with(path, &[k("max_lag")]), format!("expected a duration such as \"30s\" or a size such as \"16MB\", got \"{s}\""));
    }
    parsed
}

/// Give a `redis` or `mysql` check its service's name and `max_lag`.
pub(crate) fn bind_check(mut c: CheckConfig, service: &str, max_lag: Option<MaxLag>) -> CheckConfig {
    if let Some(r) = c.replica.as_mut() {
        let r = Arc::make_mut(r);
        r.service = service.to_string();
        if let Some(m) = max_lag {
            r.max_lag = m;
        }
    }
    c
}

/// Where a compare check reads its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// GET this URL template (`{address}`, `{target}`); the value is the body, trimmed.
    Http(String),
    /// Run this argv template (`{address}`, `{target}`); the value is stdout, trimmed.
    Command(Vec<String>),
}

/// One `[[service.compare]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompareConfig {
    pub name: String,
    pub source: Source,
    pub interval: Duration,
    pub timeout: Duration,
    /// A drifted target is not eligible for failover.
    pub gate: bool,
}

/// Validate a service's `[[service.compare]]` list.
pub(crate) fn validate(cx: &mut Ctx<'_>, raw: Vec<RawCompare>, path: &[Seg]) -> Vec<CompareConfig> {
    let mut out = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, rc) in raw.into_iter().enumerate() {
        let p = with(path, &[k("compare"), Seg::Index(i)]);
        let before = cx.errors_len();
        if !valid_name(&rc.name) {
            cx.err(&with(&p, &[k("name")]), format!("expected 1-63 letters, digits, '-', '_' or '.', got \"{}\"", rc.name));
        } else if !names.insert(rc.name.clone()) {
            cx.err(&with(&p, &[k("name")]), format!("duplicate compare check name \"{}\"", rc.name));
        }
        if rc.kind != "compare" {
            cx.err(&with(&p, &[k("kind")]), format!("expected \"compare\", got \"{}\"", rc.kind));
        }
        let source = match (rc.url, rc.command) {
            (Some(u), None) => {
                let probe = u.replace("{address}", "127.0.0.1").replace("{target}", "t");
                match reqwest::Url::parse(&probe) {
                    Ok(url) if matches!(url.scheme(), "http" | "https") => Some(Source::Http(u)),
                    _ => {
                        cx.err(&with(&p, &[k("url")]), format!("expected an http(s) URL template such as \"http://{{address}}:8080/version\", got \"{u}\""));
                        None
                    }
                }
            }
            (None, Some(RawCommand::Argv(v))) if !v.is_empty() && !v[0].is_empty() => Some(Source::Command(v)),
            (None, Some(RawCommand::Shell(s))) if !s.trim().is_empty() => Some(Source::Command(vec!["/bin/sh".into(), "-c".into(), s])),
            (None, Some(_)) => {
                cx.err(&with(&p, &[k("command")]), "expected a command such as [\"/usr/local/bin/schema-version\", \"{target}\"]");
                None
            }
            (Some(_), Some(_)) => {
                cx.err(&p, "give either `url` or `command`, not both");
                None
            }
            (None, None) => {
                cx.err(&p, "a compare check needs `url` (an HTTP endpoint) or `command` (argv) that prints the value to compare");
                None
            }
        };
        let interval = rc.interval.unwrap_or(Duration::from_secs(10));
        let timeout = rc.timeout.unwrap_or(Duration::from_secs(2));
        if interval < Duration::from_millis(100) {
            cx.err(&with(&p, &[k("interval")]), "expected at least 100ms");
        }
        if timeout.is_zero() || timeout >= interval {
            cx.err(&with(&p, &[k("timeout")]), format!("expected more than 0 and less than interval ({})", humantime::format_duration(interval)));
        }
        if let (Some(source), true) = (source, cx.errors_len() == before) {
            out.push(CompareConfig { name: rc.name, source, interval, timeout, gate: rc.gate.unwrap_or(false) });
        }
    }
    out
}
