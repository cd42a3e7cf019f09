//! The settings of the `redis` and `mysql` checks (`kind = "redis"` / `kind = "mysql"` with
//! `user` and `password_file`, and the service's `max_lag`), validated into [`ReplicaCheck`].
//!
//! Called from `config/validate.rs` (a redis or mysql check becomes a `Tcp` check on the
//! server's port plus a [`ReplicaCheck`], the way a postgres check does); errors name the file,
//! line and key. It reads the password file and nothing else: no connection is made here.

use std::path::Path;
use std::sync::Arc;

use crate::config::locate::Seg;
use crate::config::raw::{RawCheckKind, RawService};
use crate::config::validate::{Ctx, k, with};
use crate::config::CheckConfig;
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

