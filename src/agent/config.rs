//! The agent's own config file (`understudy agent -c agent.toml`), read in the same two layers
//! as the daemon's: serde structs that deny unknown keys, then validation that reports every
//! problem with file, line, key and what was expected (spans from `config::locate`).
//!
//! It reads the config file and the password files it names, and nothing else: no connection is
//! made and no path is checked for existence here (a disk path that does not exist yet fails
//! its part at request time, with a message).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::duration::serde_duration;
use crate::config::locate::{Locator, Seg};
use crate::config::raw::RawCommand;
use crate::config::{ConfigError, ConfigErrors, StatusRange};

/// Default listen address: all interfaces, since the load balancer or monitor asking is on
/// another host; the answer holds health only.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9191";
/// Default time a composed answer is reused for, so a storm of monitors costs one round of checks.
pub const DEFAULT_CACHE: Duration = Duration::from_secs(1);
/// Default timeout of one part.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    listen: Option<String>,
    #[serde(default, with = "serde_duration::option")]
    cache: Option<Duration>,
    #[serde(default, with = "serde_duration::option")]
    timeout: Option<Duration>,
    #[serde(default, rename = "check")]
    checks: Vec<RawPart>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawKind {
    Postgres,
    Redis,
    Disk,
    Exec,
    Http,
}

/// One struct for every kind, so a key given to the wrong kind gets a precise message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPart {
    name: String,
    kind: RawKind,
    #[serde(default, with = "serde_duration::option")]
    timeout: Option<Duration>,
    // postgres, redis
    address: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    password_file: Option<String>,
    // postgres
    dbname: Option<String>,
    expect: Option<String>,
    // disk
    path: Option<String>,
    min_free: Option<toml::Value>,
    // exec
    command: Option<RawCommand>,
    // http
    url: Option<String>,
    expect_status: Option<Vec<u16>>,
    body_contains: Option<String>,
}

/// A validated agent config.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    pub source: PathBuf,
    pub listen: SocketAddr,
    /// How long one composed answer is reused (zero: every request runs the checks, one round
    /// at a time).
    pub cache: Duration,
    pub parts: Vec<Part>,
}

/// One local check.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub name: String,
    pub timeout: Duration,
    pub kind: PartKind,
}

/// What a postgres part expects the server to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Not in recovery and not read-only: writes succeed.
    Primary,
    /// In recovery (a standby).
    Standby,
    /// Either a writable primary or a standby.
    Any,
}

/// The free space a disk part requires.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinFree {
    Bytes(u64),
    /// Percent of the filesystem's size, available to unprivileged users.
    Percent(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum PartKind {
    Postgres { addr: SocketAddr, user: String, password: Option<String>, dbname: String, expect: Expect },
    Redis { addr: SocketAddr, user: Option<String>, password: Option<String> },
    Disk { path: PathBuf, min_free: MinFree },
    Exec { argv: Vec<String> },
    Http { check: crate::config::HttpCheck, addr: SocketAddr },
}

impl PartKind {
    pub fn name(&self) -> &'static str {
        match self {
            PartKind::Postgres { .. } => "postgres",
            PartKind::Redis { .. } => "redis",
            PartKind::Disk { .. } => "disk",
            PartKind::Exec { .. } => "exec",
            PartKind::Http { check, .. } if check.tls => "https",
            PartKind::Http { .. } => "http",
        }
    }
}

/// Read and validate `path`.
pub fn load(path: &Path) -> Result<AgentConfig, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError { file: path.to_owned(), line: None, column: None, key: String::new(), message: format!("cannot read config file: {e}") }])
    })?;
    from_str(&text, path)
}

struct Cx<'a> {
    loc: Locator<'a>,
    file: &'a Path,
    errors: Vec<ConfigError>,
}

impl Cx<'_> {
    fn err(&mut self, path: &[Seg], msg: impl Into<String>) {
        let e = self.loc.error(self.file, path, msg);
        self.errors.push(e);
    }
}

fn k(s: &str) -> Seg {
    Seg::Key(s.to_string())
}

fn at(path: &[Seg], key: &str) -> Vec<Seg> {
    let mut p = path.to_vec();
    p.push(k(key));
    p
}

/// Validate `text` (the contents of `file`).
pub fn from_str(text: &str, file: &Path) -> Result<AgentConfig, ConfigErrors> {
    let raw: RawAgent = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => return Err(ConfigErrors(vec![crate::config::locate::from_toml_error(text, file, &e)])),
    };
    let mut cx = Cx { loc: Locator::new(text), file, errors: Vec::new() };
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let listen_s = raw.listen.unwrap_or_else(|| DEFAULT_LISTEN.into());
    let listen = listen_s.parse::<SocketAddr>().unwrap_or_else(|_| {
        cx.err(&[k("listen")], format!("expected an IP address and port such as \"0.0.0.0:9191\", got \"{listen_s}\""));
        SocketAddr::from(([0, 0, 0, 0], 0))
    });
    let cache = raw.cache.unwrap_or(DEFAULT_CACHE);
    if cache > Duration::from_secs(60) {
        cx.err(&[k("cache")], format!("expected at most 60s (an answer older than that is no health check), got {}", humantime::format_duration(cache)));
    }
    let default_timeout = raw.timeout.unwrap_or(DEFAULT_TIMEOUT);
    if default_timeout.is_zero() || default_timeout > Duration::from_secs(60) {
        cx.err(&[k("timeout")], "expected a timeout above zero and at most 60s");
    }
    if raw.checks.is_empty() {
        cx.err(&[], "expected at least one [[check]] (postgres, redis, disk, exec or http)");
    }
    let mut names = HashSet::new();
    let mut parts = Vec::new();
    for (i, rp) in raw.checks.into_iter().enumerate() {
        let path = vec![k("check"), Seg::Index(i)];
        if !crate::config::validate::valid_name(&rp.name) {
            cx.err(&at(&path, "name"), format!("expected 1-63 letters, digits, '-', '_' or '.', got \"{}\"", rp.name));
        }
        if !names.insert(rp.name.clone()) {
            cx.err(&at(&path, "name"), format!("duplicate check name \"{}\"; names must be unique", rp.name));
        }
        if let Some(p) = part(&mut cx, rp, &path, &base, default_timeout) {
            parts.push(p);
        }
    }
    if cx.errors.is_empty() { Ok(AgentConfig { source: file.to_owned(), listen, cache, parts }) } else { Err(ConfigErrors(cx.errors)) }
}

fn part(cx: &mut Cx<'_>, rp: RawPart, path: &[Seg], base: &Path, default_timeout: Duration) -> Option<Part> {
    let before = cx.errors.len();
    let kind_name = match rp.kind {
        RawKind::Postgres => "postgres",
        RawKind::Redis => "redis",
        RawKind::Disk => "disk",
        RawKind::Exec => "exec",
        RawKind::Http => "http",
    };
    let only = |cx: &mut Cx<'_>, present: bool, key: &str, applies: &str| {
        if present {
            cx.err(&at(path, key), format!("`{key}` applies to {applies} checks, not to {kind_name} checks"));
        }
    };
    let server = matches!(rp.kind, RawKind::Postgres | RawKind::Redis);
    let pg = rp.kind == RawKind::Postgres;
    only(cx, !server && rp.address.is_some(), "address", "postgres and redis");
    only(cx, !server && rp.port.is_some(), "port", "postgres and redis");
    only(cx, !server && rp.user.is_some(), "user", "postgres and redis");
    only(cx, !server && rp.password_file.is_some(), "password_file", "postgres and redis");
    only(cx, !pg && rp.dbname.is_some(), "dbname", "postgres");
    only(cx, !pg && rp.expect.is_some(), "expect", "postgres");
    only(cx, rp.kind != RawKind::Disk && rp.path.is_some(), "path", "disk");
    only(cx, rp.kind != RawKind::Disk && rp.min_free.is_some(), "min_free", "disk");
    only(cx, rp.kind != RawKind::Exec && rp.command.is_some(), "command", "exec");
    only(cx, rp.kind != RawKind::Http && rp.url.is_some(), "url", "http");
    only(cx, rp.kind != RawKind::Http && rp.expect_status.is_some(), "expect_status", "http");
    only(cx, rp.kind != RawKind::Http && rp.body_contains.is_some(), "body_contains", "http");

    let timeout = rp.timeout.unwrap_or(default_timeout);
    if timeout.is_zero() || timeout > Duration::from_secs(60) {
        cx.err(&at(path, "timeout"), "expected a timeout above zero and at most 60s");
    }
    let ip = match rp.address.as_deref() {
        None => IpAddr::from([127, 0, 0, 1]),
        Some(a) => a.parse().unwrap_or_else(|_| {
            cx.err(&at(path, "address"), format!("expected an IP address such as \"127.0.0.1\", got \"{a}\""));
            IpAddr::from([127, 0, 0, 1])
        }),
    };
    let password = match &rp.password_file {
        None => None,
        Some(f) => match crate::config::read_secret_file(&crate::config::validate::resolve(base, f)) {
            Ok(p) => Some(p),
            Err(e) => {
                cx.err(&at(path, "password_file"), format!("password file: {e}"));
                None
            }
        },
    };
    let kind = match rp.kind {
        RawKind::Postgres => {
            let expect = match rp.expect.as_deref() {
                None | Some("any") => Expect::Any,
                Some("primary") => Expect::Primary,
                Some("standby") => Expect::Standby,
                Some(other) => {
                    cx.err(&at(path, "expect"), format!("expected \"primary\" (writable), \"standby\" (in recovery) or \"any\", got \"{other}\""));
                    Expect::Any
                }
            };
            let user = rp.user.unwrap_or_else(|| "understudy".into());
            let dbname = rp.dbname.unwrap_or_else(|| "postgres".into());
            for (key, v) in [("user", &user), ("dbname", &dbname)] {
                if v.is_empty() || v.len() > 63 || v.chars().any(|c| c.is_control()) {
                    cx.err(&at(path, key), format!("expected a PostgreSQL name of 1 to 63 characters, got \"{v}\""));
                }
            }
            PartKind::Postgres { addr: SocketAddr::new(ip, rp.port.unwrap_or(crate::pg::config::DEFAULT_PORT)), user, password, dbname, expect }
        }
        RawKind::Redis => PartKind::Redis { addr: SocketAddr::new(ip, rp.port.unwrap_or(crate::probe::config::REDIS_PORT)), user: rp.user, password },
        RawKind::Disk => {
            let p = rp.path.unwrap_or_default();
            if !p.starts_with('/') {
                cx.err(&at(path, "path"), format!("disk checks need an absolute `path` such as \"/var/lib/app\", got \"{p}\""));
            }
            let min_free = match &rp.min_free {
                None => {
                    cx.err(&at(path, "min_free"), "disk checks need `min_free`: a size such as \"1GiB\" or a percentage such as \"10%\"");
                    MinFree::Bytes(0)
                }
                Some(v) => parse_min_free(v).unwrap_or_else(|| {
                    cx.err(&at(path, "min_free"), format!("expected a size such as \"1GiB\" or a percentage from 0 to 100 such as \"10%\", got {v}"));
                    MinFree::Bytes(0)
                }),
            };
            PartKind::Disk { path: PathBuf::from(p), min_free }
        }
        RawKind::Exec => match rp.command {
            Some(RawCommand::Shell(s)) if !s.trim().is_empty() => PartKind::Exec { argv: vec!["/bin/sh".into(), "-c".into(), s] },
            Some(RawCommand::Argv(v)) if !v.is_empty() && !v[0].is_empty() => PartKind::Exec { argv: v },
            _ => {
                cx.err(&at(path, "command"), "exec checks need `command`: a shell string or an argv list such as [\"/usr/local/bin/check\", \"-q\"]");
                PartKind::Exec { argv: Vec::new() }
            }
        },
        RawKind::Http => {
            let url = rp.url.unwrap_or_default();
            let (check, addr) = http_part(&url, rp.expect_status, rp.body_contains).unwrap_or_else(|m| {
                cx.err(&at(path, "url"), m);
                (http_part("http://127.0.0.1/", None, None).expect("a fixed valid url").0, SocketAddr::from(([127, 0, 0, 1], 80)))
            });
            if check.expect_status.iter().any(|r| !(100..=599).contains(&r.lo)) {
                cx.err(&at(path, "expect_status"), "expected HTTP status codes from 100 to 599");
            }
            PartKind::Http { check, addr }
        }
    };
    if cx.errors.len() > before {
        return None;
    }
    Some(Part { name: rp.name, timeout, kind })
}

/// `"1GiB"`, `1073741824` or `"10%"`.
pub fn parse_min_free(v: &toml::Value) -> Option<MinFree> {
    if let toml::Value::String(s) = v
        && let Some(p) = s.trim().strip_suffix('%')
    {
        return p.trim().parse::<f64>().ok().filter(|p| (0.0..=100.0).contains(p)).map(MinFree::Percent);
    }
    crate::config::validate::parse_size(v).map(MinFree::Bytes)
}

/// An `http://IP:PORT/path` or `https://...` URL of the application itself. The host must be an
/// IP address or `localhost` (the agent checks its own server; no name is resolved).
fn http_part(url: &str, expect: Option<Vec<u16>>, body_contains: Option<String>) -> Result<(crate::config::HttpCheck, SocketAddr), String> {
    let bad = || format!("expected a URL such as \"http://127.0.0.1:8080/health\" (an IP address or localhost), got \"{url}\"");
    let u = reqwest::Url::parse(url).map_err(|_| bad())?;
    let tls = match u.scheme() {
        "http" => false,
        "https" => true,
        _ => return Err(bad()),
    };
    let ip: IpAddr = match u.host_str() {
        Some("localhost") => IpAddr::from([127, 0, 0, 1]),
        Some(h) => h.trim_start_matches('[').trim_end_matches(']').parse().map_err(|_| bad())?,
        None => return Err(bad()),
    };
    let port = u.port_or_known_default().ok_or_else(bad)?;
    let mut path = u.path().to_string();
    if let Some(q) = u.query() {
        path = format!("{path}?{q}");
    }
    let expect_status = match expect {
        None => vec![StatusRange { lo: 200, hi: 399 }],
        Some(list) if list.is_empty() => return Err("expect_status needs at least one code".into()),
        Some(list) => list.into_iter().map(|c| StatusRange { lo: c, hi: c }).collect(),
    };
    let check = crate::config::HttpCheck {
        tls,
        port,
        path,
        method: "GET".into(),
        host: None,
        headers: Vec::new(),
        expect_status,
        body_contains,
        tls_verify: true,
        keep_alive: false,
    };
    Ok((check, SocketAddr::new(ip, port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:9191"
cache = "500ms"

[[check]]
name = "db"
kind = "postgres"
port = 5433
expect = "primary"

[[check]]
name = "cache"
kind = "redis"

[[check]]
name = "disk"
kind = "disk"
path = "/var/lib"
min_free = "10%"

[[check]]
name = "queue"
kind = "exec"
command = "true"
timeout = "1s"

[[check]]
name = "app"
kind = "http"
url = "http://localhost:8080/health?deep=1"
expect_status = [200]
"#;

    fn errors(text: &str) -> Vec<String> {
        from_str(text, Path::new("agent.toml")).unwrap_err().0.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_good_file_validates() {
        let c = from_str(GOOD, Path::new("/etc/understudy/agent.toml")).unwrap();
        assert_eq!((c.listen.to_string(), c.cache, c.parts.len()), ("127.0.0.1:9191".into(), Duration::from_millis(500), 5));
        assert!(matches!(&c.parts[0].kind, PartKind::Postgres { addr, expect: Expect::Primary, .. } if addr.port() == 5433));
        assert!(matches!(&c.parts[1].kind, PartKind::Redis { addr, .. } if addr.port() == 6379));
        assert_eq!(c.parts[2].kind, PartKind::Disk { path: "/var/lib".into(), min_free: MinFree::Percent(10.0) });
        assert_eq!((c.parts[3].timeout, c.parts[0].timeout), (Duration::from_secs(1), DEFAULT_TIMEOUT));
        match &c.parts[4].kind {
            PartKind::Http { check, addr } => assert_eq!((check.path.as_str(), addr.to_string()), ("/health?deep=1", "127.0.0.1:8080".to_string())),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_line_key_and_expectation() {
        let e = errors(&GOOD.replace("min_free = \"10%\"", "min_free = \"lots\""));
        assert_eq!(e, ["agent.toml:19:1: check[2].min_free: expected a size such as \"1GiB\" or a percentage from 0 to 100 such as \"10%\", got \"lots\""]);
        let e = errors(&GOOD.replace("expect = \"primary\"", "expect = \"writable\""));
        assert!(e[0].starts_with("agent.toml:9:1: check[0].expect: expected \"primary\""), "{e:?}");
        let e = errors(&GOOD.replace("command = \"true\"", "command = \"true\"\npath = \"/x\""));
        assert!(e[0].contains("check[3].path: `path` applies to disk checks, not to exec checks"), "{e:?}");
        let e = errors(&GOOD.replace("url = \"http://localhost:8080/health?deep=1\"", "url = \"http://app.example:8080/\""));
        assert!(e[0].contains("check[4].url: expected a URL"), "{e:?}");
        let e = errors(&GOOD.replace("name = \"cache\"", "name = \"db\""));
        assert!(e[0].contains("duplicate check name \"db\""), "{e:?}");
        let e = errors("listen = \"nowhere\"\n[[check]]\nname = \"x\"\nkind = \"disk\"\npath = \"/\"\nmin_free = 1\nfrobnicate = 1\n");
        assert!(e[0].starts_with("agent.toml:7:1") && e[0].contains("frobnicate"), "unknown keys are rejected: {e:?}");
        assert_eq!(errors("")[0], "agent.toml: expected at least one [[check]] (postgres, redis, disk, exec or http)");
    }

    #[test]
    fn min_free_takes_sizes_and_percentages() {
        assert_eq!(parse_min_free(&toml::Value::String("1GiB".into())), Some(MinFree::Bytes(1 << 30)));
        assert_eq!(parse_min_free(&toml::Value::Integer(4096)), Some(MinFree::Bytes(4096)));
        assert_eq!(parse_min_free(&toml::Value::String(" 5 %".into())), Some(MinFree::Percent(5.0)));
        assert_eq!(parse_min_free(&toml::Value::String("150%".into())), None);
        assert_eq!(parse_min_free(&toml::Value::Integer(-1)), None);
    }
}
