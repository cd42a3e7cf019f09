//! The PostgreSQL keys of a service (`kind = "postgres"`, `max_lag`, `synchronous`, `fence`,
//! `replication_conninfo`) and of a `kind = "postgres"` check (`user`, `password_file`,
//! `dbname`), validated into [`PgService`] and [`PgCheck`].
//!
//! Called from `config/validate.rs`; errors name the file, line and key like every other
//! config error. It reads the password file and nothing else: no connection is made here.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::locate::Seg;
use crate::config::raw::{RawCheckKind, RawCommand, RawService};
use crate::config::validate::{Ctx, k, with};
use crate::config::CheckConfig;

/// PostgreSQL's own default port, for checks that give none.
pub const DEFAULT_PORT: u16 = 5432;
/// The seeds' "alert when replication lag exceeds 30 s".
pub const DEFAULT_MAX_LAG: MaxLag = MaxLag::Time(Duration::from_secs(30));
/// Appended host and port make it a full `primary_conninfo` (see [`PgService::conninfo_for`]).
pub const DEFAULT_REPLICATION_CONNINFO: &str = "user=replicator application_name={target}";

/// How far behind a standby may be and still be promoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxLag {
    /// Replay behind the primary's last known WAL position, and not caught up for this long.
    Time(Duration),
    /// Replay behind the primary's (or its own receiver's) WAL position by more bytes.
    Bytes(u64),
}

impl std::fmt::Display for MaxLag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxLag::Time(d) => write!(f, "{}", humantime::format_duration(*d)),
            MaxLag::Bytes(b) => write!(f, "{b} bytes"),
        }
    }
}

/// A service's promotion settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgService {
    pub max_lag: MaxLag,
    pub synchronous: bool,
    /// argv run before a promotion for the old primary; `{target}` and `{address}` are
    /// replaced. Empty: no fence command (the SQL fence still applies when reachable).
    pub fence: Vec<String>,
    /// `primary_conninfo` of a repointed or rejoined standby, without host and port;
    /// `{target}` becomes the standby's own target name (its `application_name`).
    pub replication_conninfo: String,
}

impl PgService {
    /// The `primary_conninfo` that makes `standby` follow the server at `host`:`port`.
    pub fn conninfo_for(&self, standby: &str, host: std::net::IpAddr, port: u16) -> String {
        format!("host={host} port={port} {}", self.replication_conninfo.replace("{target}", standby))
    }
}

/// How the check logs in, and the service settings it gates on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgCheck {
    /// The service this check belongs to (the probes of one service share what they learn
    /// about the primary, see `pg::board`).
    pub service: String,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    pub max_lag: MaxLag,
    pub synchronous: bool,
}

/// The check's own keys. `path` is the check's key path.
pub(crate) fn validate_check(
    cx: &mut Ctx<'_>,
    path: &[Seg],
    user: Option<String>,
    password_file: Option<String>,
    dbname: Option<String>,
    base_dir: &Path,
) -> Option<Arc<PgCheck>> {
    let user = user.unwrap_or_else(|| "understudy".into());
    let dbname = dbname.unwrap_or_else(|| "postgres".into());
    for (key, v) in [("user", &user), ("dbname", &dbname)] {
        if v.is_empty() || v.len() > 63 || v.chars().any(|c| c.is_control()) {
            cx.err(&with(path, &[k(key)]), format!("expected a PostgreSQL name of 1 to 63 characters, got \"{v}\""));
        }
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
    Some(Arc::new(PgCheck { service: String::new(), user, password, dbname, max_lag: DEFAULT_MAX_LAG, synchronous: false }))
}

/// Give a postgres check its service's name and gate settings.
pub(crate) fn bind_check(mut c: CheckConfig, service: &str, svc: Option<&PgService>) -> CheckConfig {
    if let Some(p) = c.postgres.as_mut() {
        let p = Arc::make_mut(p);
        p.service = service.to_string();
        if let Some(s) = svc {
            p.max_lag = s.max_lag;
            p.synchronous = s.synchronous;
        }
    }
    c
}

/// The service-level keys. Returns the settings for `kind = "postgres"`, `None` otherwise.
pub(crate) fn validate_service(cx: &mut Ctx<'_>, rs: &mut RawService, path: &[Seg]) -> Option<PgService> {
    let is_pg = match rs.kind.as_deref() {
        None => false,
        Some("postgres") => true,
        Some(other) => {
            cx.err(&with(path, &[k("kind")]), format!("expected \"postgres\" (or no kind for a plain service), got \"{other}\""));
            return None;
        }
    };
    if !is_pg {
        let given = [
            ("max_lag", rs.max_lag.is_some()),
            ("synchronous", rs.synchronous.is_some()),
            ("fence", rs.fence.is_some()),
            ("replication_conninfo", rs.replication_conninfo.is_some()),
        ];
        for (key, present) in given {
            if present {
                cx.err(&with(path, &[k(key)]), format!("`{key}` applies to kind = \"postgres\" services"));
            }
        }
        return None;
    }
    let before = cx.errors_len();
    if rs.check.kind != RawCheckKind::Postgres {
        cx.err(&with(path, &[k("check"), k("kind")]), "a kind = \"postgres\" service needs a kind = \"postgres\" check (it reads the role and the replication lag)");
    }
    let max_lag = match rs.max_lag.take() {
        None => DEFAULT_MAX_LAG,
        Some(s) => parse_max_lag(&s).unwrap_or_else(|| {
            cx.err(&with(path, &[k("max_lag")]), format!("expected a duration such as \"30s\" or a size such as \"16MB\", got \"{s}\""));
            DEFAULT_MAX_LAG
        }),
    };
    let fence = match rs.fence.take() {
        None => Vec::new(),
        Some(RawCommand::Argv(v)) if !v.is_empty() && !v[0].is_empty() => v,
        Some(RawCommand::Shell(s)) if !s.trim().is_empty() => vec!["/bin/sh".into(), "-c".into(), s],
        Some(_) => {
            cx.err(&with(path, &[k("fence")]), "expected a command such as [\"/usr/local/sbin/fence-db\", \"{target}\"]");
            Vec::new()
        }
    };
    let replication_conninfo = rs.replication_conninfo.take().unwrap_or_else(|| DEFAULT_REPLICATION_CONNINFO.into());
    if replication_conninfo.contains(['\n', '\r', '\'']) || replication_conninfo.split_whitespace().any(|w| w.starts_with("host=") || w.starts_with("port=")) {
        cx.err(
            &with(path, &[k("replication_conninfo")]),
            "expected libpq keywords without host, port, quotes or newlines (host and port are the new primary's), such as \"user=replicator application_name={target}\"",
        );
    }
    if cx.errors_len() > before {
        return None;
    }
    Some(PgService { max_lag, synchronous: rs.synchronous.unwrap_or(false), fence, replication_conninfo })
}

/// `"30s"` (a duration) or `"16MB"` (a size).
pub fn parse_max_lag(s: &str) -> Option<MaxLag> {
    let t = s.trim();
    if t.chars().next_back().is_some_and(|c| c.eq_ignore_ascii_case(&'b')) {
        return crate::config::validate::parse_size(&toml::Value::String(t.into())).filter(|b| *b > 0).map(MaxLag::Bytes);
    }
    crate::config::parse_duration(t).ok().filter(|d| !d.is_zero()).map(MaxLag::Time)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG: &str = r#"
[[service]]
name = "db"
kind = "postgres"
max_lag = "16MB"
synchronous = true
fence = ["/usr/local/sbin/fence-db", "{target}"]
[service.check]
kind = "postgres"
port = 5433
user = "mon"
dbname = "app"
[[service.target]]
name = "pg1"
address = "127.0.0.2"
[[service.target]]
name = "pg2"
address = "127.0.0.3"
"#;

    fn errors(text: &str) -> Vec<String> {
        crate::config::from_str(text, Path::new("u.toml")).unwrap_err().0.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_postgres_service_parses_with_manual_failback_by_default() {
        let (c, _) = crate::config::from_str(PG, Path::new("u.toml")).unwrap();
        let s = &c.services[0];
        assert_eq!(s.failback, crate::config::Failback::Manual);
        let pg = s.postgres.as_ref().unwrap();
        assert_eq!((pg.max_lag, pg.synchronous), (MaxLag::Bytes(16 << 20), true));
        assert_eq!(pg.fence, ["/usr/local/sbin/fence-db", "{target}"]);
        let chk = s.check.postgres.as_ref().unwrap();
        assert_eq!((chk.service.as_str(), chk.user.as_str(), chk.dbname.as_str(), chk.synchronous), ("db", "mon", "app", true));
        assert_eq!(s.check.kind, crate::config::CheckKind::Tcp(crate::config::TcpCheck { port: 5433, close: Default::default() }));
        assert_eq!(pg.conninfo_for("pg2", "127.0.0.2".parse().unwrap(), 5433), "host=127.0.0.2 port=5433 user=replicator application_name=pg2");
        let auto = PG.replace("kind = \"postgres\"\nmax_lag", "kind = \"postgres\"\nfailback = \"auto\"\nmax_lag");
        assert_eq!(crate::config::from_str(&auto, Path::new("u.toml")).unwrap().0.services[0].failback, crate::config::Failback::Auto);
    }

    #[test]
    fn the_full_example_has_a_postgres_service() {
        let (c, _) = crate::config::from_str(include_str!("../../examples/full.toml"), Path::new("full.toml")).unwrap();
        let s = c.services.iter().find(|s| s.name == "pgdb").expect("pgdb in examples/full.toml");
        let pg = s.postgres.as_ref().unwrap();
        assert_eq!((s.failback, pg.max_lag, pg.synchronous), (crate::config::Failback::Manual, MaxLag::Time(Duration::from_secs(30)), false));
        assert_eq!(s.check.postgres.as_ref().unwrap().service, "pgdb");
    }

    #[test]
    fn max_lag_takes_durations_and_sizes() {
        assert_eq!(parse_max_lag("30s"), Some(MaxLag::Time(Duration::from_secs(30))));
        assert_eq!(parse_max_lag("16MB"), Some(MaxLag::Bytes(16 << 20)));
        assert_eq!(parse_max_lag("512kB"), Some(MaxLag::Bytes(512 << 10)));
        assert_eq!(parse_max_lag("0s"), None);
        assert_eq!(parse_max_lag("soon"), None);
    }

    #[test]
    fn bad_postgres_keys_are_located() {
        assert_eq!(errors(&PG.replace("\"16MB\"", "\"lots\"")), ["u.toml:5:1: service[0].max_lag: expected a duration such as \"30s\" or a size such as \"16MB\", got \"lots\""]);
        let tcp = PG.replace("kind = \"postgres\"\nport", "kind = \"tcp\"\nport").replace("user = \"mon\"\ndbname = \"app\"\n", "");
        assert_eq!(errors(&tcp), ["u.toml:9:1: service[0].check.kind: a kind = \"postgres\" service needs a kind = \"postgres\" check (it reads the role and the replication lag)"]);
        let plain = PG.replace("kind = \"postgres\"\nmax_lag", "max_lag");
        assert_eq!(errors(&plain)[0], "u.toml:4:1: service[0].max_lag: `max_lag` applies to kind = \"postgres\" services");
        let user_on_tcp = "[[service]]\nname = \"w\"\n[service.check]\nkind = \"tcp\"\nport = 1\nuser = \"x\"\n[[service.target]]\nname = \"a\"\naddress = \"127.0.0.2\"\n";
        assert_eq!(errors(user_on_tcp), ["u.toml:6:1: service[0].check.user: `user` applies to postgres, redis and mysql checks, not to tcp checks"]);
        let pw = PG.replace("dbname = \"app\"", "dbname = \"app\"\npassword_file = \"/nonexistent/pg.pass\"");
        assert!(errors(&pw)[0].starts_with("u.toml:13:1: service[0].check.password_file: password file:"), "{:?}", errors(&pw));
        let host = PG.replace("synchronous = true", "synchronous = true\nreplication_conninfo = \"host=x user=r\"");
        assert!(errors(&host)[0].contains("service[0].replication_conninfo: expected libpq keywords"), "{:?}", errors(&host));
        assert!(errors(&PG.replace("kind = \"postgres\"\nmax_lag", "kind = \"mysql\"\nmax_lag"))[0].contains("service[0].kind: expected \"postgres\""));
    }
}
