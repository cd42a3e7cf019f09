//! Second layer: rules across fields, turning [`RawConfig`] into [`Config`].
//!
//! Collects every error instead of stopping at the first, so `check-config` shows the whole
//! list in one run.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::locate::{Locator, Seg};
use super::raw::*;
use super::*;

/// Decision reasons a hook's `on` list may name (see `decision::Reason`).
pub const HOOK_EVENTS: &[&str] =
    &["initial", "failover", "failback", "switchover", "drain", "all_down", "recovered", "reconcile"];

/// The shortest interval we accept: below this a check is a load test, not a health check.
const MIN_INTERVAL: Duration = Duration::from_millis(50);
/// The most consecutive results `fall` and `rise` may ask for. With durations bounded at a
/// year, products such as `interval x fall` in milliseconds stay far inside `u64`.
const MAX_STREAK: u32 = 1000;

pub(crate) struct Ctx<'a> {
    loc: Locator<'a>,
    file: &'a Path,
    errors: Vec<ConfigError>,
    warnings: Vec<Warning>,
}

impl Ctx<'_> {
    pub(crate) fn err(&mut self, path: &[Seg], msg: impl Into<String>) {
        let e = self.loc.error(self.file, path, msg);
        self.errors.push(e);
    }
    pub(crate) fn warn(&mut self, path: &[Seg], msg: impl Into<String>) {
        self.warnings.push(Warning { key: super::locate::render(path), message: msg.into() });
    }
    /// Errors recorded so far (callers compare before and after a section).
    pub(crate) fn errors_len(&self) -> usize {
        self.errors.len()
    }
}

pub(crate) fn k(s: &str) -> Seg {
    Seg::Key(s.to_string())
}

pub(crate) fn with(path: &[Seg], more: &[Seg]) -> Vec<Seg> {
    let mut p = path.to_vec();
    p.extend_from_slice(more);
    p
}

/// Names end up in URLs, metric labels, DNS records and environment variables.
pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

pub fn validate(raw: RawConfig, text: &str, file: &Path) -> Result<(Config, Vec<Warning>), ConfigErrors> {
    let mut cx = Ctx { loc: Locator::new(text), file, errors: Vec::new(), warnings: Vec::new() };
    let base_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();

    let daemon = validate_daemon(&mut cx, raw.daemon, &base_dir);

    if raw.services.is_empty() {
        cx.warn(&[], "no [[service]] is configured: the daemon will run but watch nothing");
    }
    let mut names = HashSet::new();
    let mut services = Vec::new();
    for (i, rs) in raw.services.into_iter().enumerate() {
        let path = vec![k("service"), Seg::Index(i)];
        if !names.insert(rs.name.clone()) {
            cx.err(&with(&path, &[k("name")]), format!("duplicate service name \"{}\"; names must be unique", rs.name));
        }
        if let Some(s) = validate_service(&mut cx, rs, &path) {
            services.push(s);
        }
    }

    let (dns, dns_providers) = match raw.dns {
        None => (None, Vec::new()),
        Some(mut d) => {
            let wants_server = d.wants_server();
            let providers = crate::provider::config::validate_all(&mut cx, std::mem::take(&mut d.providers), &services, &base_dir);
            let server = if wants_server { crate::dns::config::validate(&mut cx, d, &services, &base_dir) } else { None };
            (server, providers)
        }
    };
    let drill = crate::drill::config::validate(&mut cx, raw.drill, &services);
    let heartbeat = raw.heartbeat.and_then(|h| crate::drill::config::validate_heartbeat(&mut cx, h));
    let notify = crate::notify::config::validate_all(&mut cx, raw.notify, &base_dir, &names);
    let cluster = raw.cluster.map_or(Some(crate::coordinator::config::ClusterConfig::Standalone), |c| crate::coordinator::config::validate(&mut cx, c, &base_dir));
    let lb = crate::lb::config::validate(&mut cx, raw.haproxy, raw.nginx, raw.proxy, &services);
    let vip = crate::vrrp::config::validate(&mut cx, raw.vip, &services);
    let canaries = crate::canary::config::validate_all(&mut cx, raw.canary, &services, dns.as_ref());

    if cx.errors.is_empty() {
        let daemon = daemon.expect("daemon validated without errors");
        Ok((Config { source: file.to_owned(), daemon, services, dns, dns_providers, drill, heartbeat, notify, cluster: cluster.unwrap_or_default(), lb, vip, canaries }, cx.warnings))
    } else {
        Err(ConfigErrors(cx.errors))
    }
}

fn validate_daemon(cx: &mut Ctx<'_>, d: RawDaemon, base_dir: &Path) -> Option<DaemonConfig> {
    let p = [k("daemon")];
    let api = match d.api.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            cx.err(&with(&p, &[k("api")]), format!("expected an IP address and port such as \"127.0.0.1:9190\", got \"{}\"", d.api));
            None
        }
    };
    let log_format = match d.log_format.as_str() {
        "human" => LogFormat::Human,
        "json" => LogFormat::Json,
        other => {
            cx.err(&with(&p, &[k("log_format")]), format!("expected \"human\" or \"json\", got \"{other}\""));
            LogFormat::Human
        }
    };
    let mut api_token = None;
    let mut api_token_file = None;
    if let Some(f) = &d.api_token_file {
        let path = resolve(base_dir, f);
        match super::read_secret_file(&path) {
            Ok(t) => api_token = Some(t),
            Err(e) => cx.err(&with(&p, &[k("api_token_file")]), format!("token file: {e}")),
        }
        api_token_file = Some(path);
    }
    if let Some(a) = api
        && d.api_token_file.is_none()
        && !a.ip().is_loopback()
    {
        cx.err(
            &with(&p, &[k("api")]),
            format!("the API may listen on {a} (not loopback) only with a token: set daemon.api_token_file, or listen on 127.0.0.1"),
        );
    }
    if d.data_dir.trim().is_empty() {
        cx.err(&with(&p, &[k("data_dir")]), "expected a directory path, got an empty string");
    }
    let mut api_hosts = Vec::new();
    for (i, h) in d.api_hosts.iter().enumerate() {
        let h = h.trim().to_ascii_lowercase();
        let valid = !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']'));
        if !valid {
            cx.err(&with(&p, &[k("api_hosts"), Seg::Index(i)]), format!("expected a host name such as \"understudy.example.net\", got \"{h}\""));
        }
        api_hosts.push(crate::config::host_part(&h).to_string());
    }
    let api_tls = match (&d.api_tls_cert, &d.api_tls_key) {
        (Some(c), Some(k_)) => {
            let tls = super::ApiTls { cert: resolve(base_dir, c), key: resolve(base_dir, k_) };
            if let Err(e) = crate::crypto::server_config(&tls.cert, &tls.key) {
                cx.err(&with(&p, &[k("api_tls_cert")]), e);
            }
            Some(tls)
        }
        (None, None) => None,
        (Some(_), None) => {
            cx.err(&with(&p, &[k("api_tls_key")]), "api_tls_cert needs api_tls_key (the certificate's private key, PEM)");
            None
        }
        (None, Some(_)) => {
            cx.err(&with(&p, &[k("api_tls_cert")]), "api_tls_key needs api_tls_cert (the certificate chain, PEM)");
            None
        }
    };
    let log_segment_size = match &d.log_segment_size {
        None => crate::events::DEFAULT_SEGMENT_SIZE,
        Some(v) => parse_size(v).unwrap_or_else(|| {
            cx.err(&with(&p, &[k("log_segment_size")]), format!("expected a size such as \"8MiB\", \"512KiB\" or a number of bytes (0: never rotate), got {v}"));
            crate::events::DEFAULT_SEGMENT_SIZE
        }),
    };
    let log_retention = match &d.log_retention {
        None => crate::events::DEFAULT_RETENTION,
        Some(r) => humantime::parse_duration(r).unwrap_or_else(|e| {
            cx.err(&with(&p, &[k("log_retention")]), format!("expected a duration such as \"90d\", got \"{r}\": {e}"));
            crate::events::DEFAULT_RETENTION
        }),
    };
    Some(DaemonConfig { data_dir: PathBuf::from(d.data_dir), api: api?, api_token, api_token_file, api_hosts, api_tls, log_format, log_segment_size, log_retention })
}

/// A byte count: an integer, or a string with a unit (B, KiB, MiB, GiB; K, M, G are the same).
pub(crate) fn parse_size(v: &toml::Value) -> Option<u64> {
    match v {
        toml::Value::Integer(n) => u64::try_from(*n).ok(),
        toml::Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (n, unit) = (s[..split].parse::<u64>().ok()?, s[split..].trim());
            let mul: u64 = match unit.to_ascii_lowercase().as_str() {
                "" | "b" => 1,
                "k" | "kib" | "kb" => 1 << 10,
                "m" | "mib" | "mb" => 1 << 20,
                "g" | "gib" | "gb" => 1 << 30,
                _ => return None,
            };
            n.checked_mul(mul)
        }
        _ => None,
    }
}

pub(crate) fn resolve(base: &Path, f: &str) -> PathBuf {
    let p = PathBuf::from(f);
    if p.is_absolute() { p } else { base.join(p) }
}

fn validate_service(cx: &mut Ctx<'_>, mut rs: RawService, path: &[Seg]) -> Option<ServiceConfig> {
    let errors_before = cx.errors.len();
    if !valid_name(&rs.name) {
        cx.err(&with(path, &[k("name")]), format!("expected 1-63 letters, digits, '-', '_' or '.', got \"{}\"", rs.name));
    }
    let base_dir = cx.file.parent().map(Path::to_path_buf).unwrap_or_default();
    let replica_max_lag = crate::probe::config::take_max_lag(cx, &mut rs, path);
    let postgres = crate::pg::config::validate_service(cx, &mut rs, path);
    let check = validate_check(cx, rs.check, &with(path, &[k("check")]), &base_dir);
    let check = check.map(|c| crate::pg::config::bind_check(c, &rs.name, postgres.as_ref()));
    let check = check.map(|c| crate::probe::config::bind_check(c, &rs.name, replica_max_lag));

    if rs.targets.is_empty() {
        cx.err(path, format!("service \"{}\" needs at least one [[service.target]]", rs.name));
    }
    let mut targets = Vec::new();
    let mut tnames = HashSet::new();
    for (i, rt) in rs.targets.into_iter().enumerate() {
        let tp = with(path, &[k("target"), Seg::Index(i)]);
        if !valid_name(&rt.name) {
            cx.err(&with(&tp, &[k("name")]), format!("expected 1-63 letters, digits, '-', '_' or '.', got \"{}\"", rt.name));
        }
        if !tnames.insert(rt.name.clone()) {
            cx.err(&with(&tp, &[k("name")]), format!("duplicate target name \"{}\" in service \"{}\"", rt.name, rs.name));
        }
        let address = parse_ip(cx, &with(&tp, &[k("address")]), &rt.address);
        let check_address = rt.check_address.as_deref().and_then(|a| parse_ip(cx, &with(&tp, &[k("check_address")]), a));
        if let (Some(c), Some(CheckKind::Exec(_))) = (rt.check_port, check.as_ref().map(|c| &c.kind)) {
            cx.err(&with(&tp, &[k("check_port")]), format!("check_port ({c}) does not apply to exec checks"));
        }
        if let Some(address) = address {
            targets.push(TargetConfig { name: rt.name, address, check_address, check_port: rt.check_port });
        }
    }
    if let Some(c) = &check {
        let needs_port = matches!(c.kind, CheckKind::Http(HttpCheck { port: 0, .. }) | CheckKind::Tcp(TcpCheck { port: 0, .. }));
        if needs_port {
            for (i, t) in targets.iter().enumerate() {
                if t.check_port.is_none() {
                    cx.err(
                        &with(path, &[k("check"), k("port")]),
                        format!("{} checks need a port: set check.port, or check_port on target[{i}] \"{}\"", c.kind.name(), t.name),
                    );
                    break;
                }
            }
        }
    }

    let mut hooks = Vec::new();
    let mut hnames = HashSet::new();
    for (i, rh) in rs.hooks.into_iter().enumerate() {
        let hp = with(path, &[k("hook"), Seg::Index(i)]);
        let name = rh.name.unwrap_or_else(|| format!("hook-{}", i + 1));
        if !hnames.insert(name.clone()) {
            cx.err(&with(&hp, &[k("name")]), format!("duplicate hook name \"{name}\""));
        }
        let command = command_argv(cx, &with(&hp, &[k("command")]), rh.command);
        for (j, on) in rh.on.iter().enumerate() {
            if !HOOK_EVENTS.contains(&on.as_str()) {
                cx.err(&with(&hp, &[k("on"), Seg::Index(j)]), format!("expected one of {}, got \"{on}\"", HOOK_EVENTS.join(", ")));
            }
        }
        if rh.timeout.is_zero() {
            cx.err(&with(&hp, &[k("timeout")]), "expected a timeout above zero");
        }
        hooks.push(HookConfig { name, command, timeout: rh.timeout, on: rh.on, retry: rh.retry });
    }

    if rs.verify_every < Duration::from_secs(1) {
        cx.err(&with(path, &[k("verify_every")]), "expected at least 1s");
    }

    let compare = crate::probe::config::validate(cx, std::mem::take(&mut rs.compare), path);

    let check = check?;
    if cx.errors.len() > errors_before {
        return None;
    }
    let svc = ServiceConfig {
        name: rs.name,
        failback: rs.failback.unwrap_or(if postgres.is_some() { Failback::Manual } else { default_failback() }),
        failback_hold: rs.failback_hold,
        all_down: rs.all_down,
        check,
        targets,
        hooks,
        verify_every: rs.verify_every,
        rto_budget: rs.rto_budget,
        postgres,
        compare,
    };
    if let Some(budget) = svc.rto_budget
        && svc.detection_budget() > budget
    {
        cx.warn(
            &with(path, &[k("rto_budget")]),
            format!(
                "detection alone can take {} (interval + (fall - 1) x max(fast_interval, timeout) + timeout), more than rto_budget {}",
                humantime::format_duration(svc.detection_budget()),
                humantime::format_duration(budget)
            ),
        );
    }
    Some(svc)
}

fn parse_ip(cx: &mut Ctx<'_>, path: &[Seg], s: &str) -> Option<IpAddr> {
    match s.parse::<IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) => {
            cx.err(path, format!("expected an IPv4 or IPv6 address such as \"198.18.0.2\", got \"{s}\""));
            None
        }
    }
}

fn command_argv(cx: &mut Ctx<'_>, path: &[Seg], c: RawCommand) -> Vec<String> {
    match c {
        RawCommand::Shell(s) if s.trim().is_empty() => {
            cx.err(path, "expected a command, got an empty string");
            Vec::new()
        }
        RawCommand::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s],
        RawCommand::Argv(v) if v.is_empty() || v[0].is_empty() => {
            cx.err(path, "expected a non-empty argv list such as [\"/usr/local/bin/check\", \"--quiet\"]");
            Vec::new()
        }
        RawCommand::Argv(v) => v,
    }
}

fn validate_check(cx: &mut Ctx<'_>, rc: RawCheck, path: &[Seg], base_dir: &Path) -> Option<CheckConfig> {
    let before = cx.errors.len();
    let kind_name = match rc.kind {
        RawCheckKind::Http => "http",
        RawCheckKind::Https => "https",
        RawCheckKind::Tcp => "tcp",
        RawCheckKind::Exec => "exec",
        RawCheckKind::Postgres => "postgres",
        RawCheckKind::Redis => "redis",
        RawCheckKind::Mysql => "mysql",
    };
    if rc.interval < MIN_INTERVAL {
        cx.err(&with(path, &[k("interval")]), format!("expected at least 50ms, got {}", humantime::format_duration(rc.interval)));
    }
    if rc.timeout.is_zero() {
        cx.err(&with(path, &[k("timeout")]), "expected a timeout above zero");
    } else if rc.timeout >= rc.interval {
        cx.err(
            &with(path, &[k("timeout")]),
            format!(
                "must be less than interval ({}), got {}",
                humantime::format_duration(rc.interval),
                humantime::format_duration(rc.timeout)
            ),
        );
    }
    let fast_interval = rc.fast_interval.unwrap_or_else(|| CheckConfig::default_fast_interval(rc.interval));
    if rc.fast_interval.is_some() && fast_interval < MIN_INTERVAL {
        cx.err(&with(path, &[k("fast_interval")]), format!("expected at least 50ms, got {}", humantime::format_duration(fast_interval)));
    } else if fast_interval > rc.interval {
        cx.err(
            &with(path, &[k("fast_interval")]),
            format!(
                "must be at most interval ({}), got {} (it is the cadence while a target looks sick)",
                humantime::format_duration(rc.interval),
                humantime::format_duration(fast_interval)
            ),
        );
    }
    let down_interval = rc.down_interval.unwrap_or(rc.interval);
    if down_interval < MIN_INTERVAL {
        cx.err(&with(path, &[k("down_interval")]), format!("expected at least 50ms, got {}", humantime::format_duration(down_interval)));
    }
    if !(1..=MAX_STREAK).contains(&rc.fall) {
        cx.err(
            &with(path, &[k("fall")]),
            format!("expected 1 to {MAX_STREAK} (consecutive failures before a target is marked down), got {}", rc.fall),
        );
    }
    if !(1..=MAX_STREAK).contains(&rc.rise) {
        cx.err(
            &with(path, &[k("rise")]),
            format!("expected 1 to {MAX_STREAK} (consecutive successes before a target is marked up), got {}", rc.rise),
        );
    }

    let is_http = matches!(rc.kind, RawCheckKind::Http | RawCheckKind::Https);
    let only = |cx: &mut Ctx<'_>, present: bool, key: &str, applies: &str| {
        if present {
            cx.err(&with(path, &[k(key)]), format!("`{key}` applies to {applies} checks, not to {kind_name} checks"));
        }
    };
    only(cx, !is_http && rc.path.is_some(), "path", "http and https");
    only(cx, !is_http && rc.method.is_some(), "method", "http and https");
    only(cx, !is_http && rc.host.is_some(), "host", "http and https");
    only(cx, !is_http && rc.headers.is_some(), "headers", "http and https");
    only(cx, !is_http && rc.expect_status.is_some(), "expect_status", "http and https");
    only(cx, !is_http && rc.body_contains.is_some(), "body_contains", "http and https");
    only(cx, rc.kind != RawCheckKind::Https && rc.tls_verify.is_some(), "tls_verify", "https");
    only(cx, !is_http && rc.keep_alive.is_some(), "keep_alive", "http and https");
    only(cx, rc.kind != RawCheckKind::Tcp && rc.close.is_some(), "close", "tcp");
    only(cx, rc.kind == RawCheckKind::Exec && rc.port.is_some(), "port", "http, https and tcp");
    only(cx, rc.kind != RawCheckKind::Exec && rc.command.is_some(), "command", "exec");
    let pg = rc.kind == RawCheckKind::Postgres;
    let db = matches!(rc.kind, RawCheckKind::Postgres | RawCheckKind::Redis | RawCheckKind::Mysql);
    only(cx, !db && rc.user.is_some(), "user", "postgres, redis and mysql");
    only(cx, !db && rc.password_file.is_some(), "password_file", "postgres, redis and mysql");
    only(cx, !pg && rc.dbname.is_some(), "dbname", "postgres");
    let mut postgres = None;
    let mut replica = None;

    let kind = match rc.kind {
        RawCheckKind::Http | RawCheckKind::Https => {
            let path_s = rc.path.unwrap_or_else(|| "/".into());
            if !path_s.starts_with('/') {
                cx.err(&with(path, &[k("path")]), format!("expected a path starting with '/', got \"{path_s}\""));
            }
            let method = rc.method.unwrap_or_else(|| "GET".into()).to_ascii_uppercase();
            if !["GET", "HEAD", "POST", "OPTIONS", "PUT"].contains(&method.as_str()) {
                cx.err(&with(path, &[k("method")]), format!("expected GET, HEAD, POST, PUT or OPTIONS, got \"{method}\""));
            }
            let mut expect = Vec::new();
            match rc.expect_status {
                None => expect.push(StatusRange { lo: 200, hi: 399 }),
                Some(list) if list.is_empty() => {
                    cx.err(&with(path, &[k("expect_status")]), "expected at least one status code or range");
                }
                Some(list) => {
                    for (i, s) in list.into_iter().enumerate() {
                        match parse_status(&s) {
                            Ok(r) => expect.push(r),
                            Err(m) => cx.err(&with(path, &[k("expect_status"), Seg::Index(i)]), m),
                        }
                    }
                }
            }
            if let Some(h) = &rc.host
                && (h.is_empty() || h.contains(['/', ' ', '\r', '\n']))
            {
                cx.err(&with(path, &[k("host")]), format!("expected a host name such as \"www.example.com\", got \"{h}\""));
            }
            CheckKind::Http(HttpCheck {
                tls: rc.kind == RawCheckKind::Https,
                port: rc.port.unwrap_or(0),
                path: path_s,
                method,
                host: rc.host,
                headers: rc.headers.unwrap_or_default().into_iter().collect(),
                expect_status: expect,
                body_contains: rc.body_contains,
                tls_verify: rc.tls_verify.unwrap_or(true),
                keep_alive: rc.keep_alive.unwrap_or(false),
            })
        }
        RawCheckKind::Tcp => CheckKind::Tcp(TcpCheck { port: rc.port.unwrap_or(0), close: rc.close.unwrap_or_default() }),
        RawCheckKind::Postgres => {
            postgres = crate::pg::config::validate_check(cx, path, rc.user, rc.password_file, rc.dbname, base_dir);
            CheckKind::Tcp(TcpCheck { port: rc.port.unwrap_or(crate::pg::config::DEFAULT_PORT), close: Default::default() })
        }
        RawCheckKind::Redis | RawCheckKind::Mysql => {
            let (engine, default_port) = match rc.kind {
                RawCheckKind::Redis => (crate::probe::config::Engine::Redis, crate::probe::config::REDIS_PORT),
                _ => (crate::probe::config::Engine::Mysql, crate::probe::config::MYSQL_PORT),
            };
            replica = crate::probe::config::validate_check(cx, path, engine, rc.user, rc.password_file, base_dir);
            CheckKind::Tcp(TcpCheck { port: rc.port.unwrap_or(default_port), close: Default::default() })
        }
        RawCheckKind::Exec => match rc.command {
            Some(c) => CheckKind::Exec(ExecCheck { command: command_argv(cx, &with(path, &[k("command")]), c) }),
            None => {
                cx.err(&with(path, &[k("kind")]), "exec checks need `command` (a shell string or an argv list)");
                CheckKind::Exec(ExecCheck { command: Vec::new() })
            }
        },
    };
    if cx.errors.len() > before {
        return None;
    }
    Some(CheckConfig { kind, interval: rc.interval, timeout: rc.timeout, fall: rc.fall, rise: rc.rise, fast_interval, down_interval, postgres, replica })
}

fn parse_status(s: &RawStatus) -> Result<StatusRange, String> {
    let valid = |n: i64| (100..=599).contains(&n);
    match s {
        RawStatus::Code(n) if valid(*n) => Ok(StatusRange { lo: *n as u16, hi: *n as u16 }),
        RawStatus::Code(n) => Err(format!("expected an HTTP status from 100 to 599, got {n}")),
        RawStatus::Text(t) => {
            let parse = |x: &str| x.trim().parse::<i64>().ok().filter(|n| valid(*n));
            let r = match t.split_once('-') {
                Some((a, b)) => parse(a).zip(parse(b)),
                None => parse(t).map(|a| (a, a)),
            };
            match r {
                Some((lo, hi)) if lo <= hi => Ok(StatusRange { lo: lo as u16, hi: hi as u16 }),
                _ => Err(format!("expected a status such as 200 or a range such as \"200-399\", got \"{t}\"")),
            }
        }
    }
}

#[cfg(test)]
mod actuator_keys {
    use super::*;

    const BASE: &str = "[[service]]\nname = \"www\"\n[service.check]\nkind = \"tcp\"\nport = 80\n[[service.target]]\nname = \"a\"\naddress = \"127.0.0.2\"\n";

    /// The service of `BASE` with one hook carrying `hook_keys`.
    fn load(hook_keys: &str) -> Result<ServiceConfig, Vec<String>> {
        let text = format!("{BASE}[[service.hook]]\ncommand = \"true\"\n{hook_keys}");
        crate::config::from_str(&text, Path::new("/etc/understudy/u.toml"))
            .map(|(c, _)| c.services[0].clone())
            .map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn retry_and_verify_every_default_and_parse() {
        let s = load("").unwrap();
        assert_eq!((s.verify_every, s.hooks[0].retry), (Duration::from_secs(30), false));
        let text = BASE.replacen("name = \"www\"\n", "name = \"www\"\nverify_every = \"5s\"\n", 1) + "[[service.hook]]\ncommand = \"true\"\nretry = true\n";
        let (c, _) = crate::config::from_str(&text, Path::new("u.toml")).unwrap();
        assert_eq!((c.services[0].verify_every, c.services[0].hooks[0].retry), (Duration::from_secs(5), true));
    }

    #[test]
    fn bad_values_are_located() {
        let text = "[[service]]\nname = \"www\"\nverify_every = \"100ms\"\n[service.check]\nkind = \"tcp\"\nport = 80\n[[service.target]]\nname = \"a\"\naddress = \"127.0.0.2\"\n";
        let errs: Vec<String> = crate::config::from_str(text, Path::new("u.toml")).unwrap_err().0.iter().map(|e| e.to_string()).collect();
        assert_eq!(errs, ["u.toml:3:1: service[0].verify_every: expected at least 1s"]);
        let errs = load("retry = \"yes\"\n").unwrap_err();
        assert!(errs[0].contains("retry") && errs[0].contains("bool"), "{errs:?}");
    }
}

#[cfg(test)]
mod check_cost_keys {
    use super::*;

    fn load(kind_and_keys: &str) -> Result<CheckKind, Vec<String>> {
        let text = format!("[[service]]\nname = \"www\"\n[service.check]\n{kind_and_keys}\nport = 80\n[[service.target]]\nname = \"a\"\naddress = \"127.0.0.2\"\n");
        crate::config::from_str(&text, Path::new("u.toml")).map(|(c, _)| c.services[0].check.kind.clone()).map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn tcp_checks_reset_by_default_and_close_chooses() {
        assert!(matches!(load("kind = \"tcp\""), Ok(CheckKind::Tcp(TcpCheck { close: TcpClose::Reset, .. }))));
        assert!(matches!(load("kind = \"tcp\"\nclose = \"fin\""), Ok(CheckKind::Tcp(TcpCheck { close: TcpClose::Fin, .. }))));
        assert!(matches!(load("kind = \"tcp\"\nclose = \"reset\""), Ok(CheckKind::Tcp(TcpCheck { close: TcpClose::Reset, .. }))));
        let errs = load("kind = \"tcp\"\nclose = \"linger\"").unwrap_err();
        assert!(errs[0].contains("close") && errs[0].contains("reset") && errs[0].contains("fin"), "{errs:?}");
        let errs = load("kind = \"http\"\nclose = \"fin\"").unwrap_err();
        assert_eq!(errs, ["u.toml:5:1: service[0].check.close: `close` applies to tcp checks, not to http checks"]);
    }

    #[test]
    fn keep_alive_is_off_by_default_and_only_for_http() {
        assert!(matches!(load("kind = \"https\""), Ok(CheckKind::Http(HttpCheck { keep_alive: false, .. }))));
        assert!(matches!(load("kind = \"http\"\nkeep_alive = true"), Ok(CheckKind::Http(HttpCheck { keep_alive: true, .. }))));
        let errs = load("kind = \"tcp\"\nkeep_alive = true").unwrap_err();
        assert!(errs[0].contains("`keep_alive` applies to http and https checks, not to tcp checks"), "{errs:?}");
    }
}

#[cfg(test)]
mod replica_checks {
    use super::*;
    use crate::probe::config::{Engine, MaxLag};

    fn load(service_keys: &str, check_keys: &str) -> Result<ServiceConfig, Vec<String>> {
        let text = format!("[[service]]\nname = \"cache\"\n{service_keys}[service.check]\n{check_keys}[[service.target]]\nname = \"a\"\naddress = \"127.0.0.2\"\n");
        crate::config::from_str(&text, Path::new("u.toml")).map(|(c, _)| c.services[0].clone()).map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn redis_and_mysql_checks_take_the_services_max_lag_and_default_ports() {
        let s = load("max_lag = \"16MB\"\n", "kind = \"redis\"\n").unwrap();
        let r = s.check.replica.as_ref().expect("a replica check");
        assert_eq!((r.engine, r.max_lag, r.service.as_str(), r.user.as_deref()), (Engine::Redis, MaxLag::Bytes(16 << 20), "cache", None));
        assert_eq!(s.check.kind, CheckKind::Tcp(TcpCheck { port: 6379, close: Default::default() }));
        let s = load("", "kind = \"mysql\"\nport = 3307\n").unwrap();
        let r = s.check.replica.as_ref().unwrap();
        assert_eq!((r.engine, r.max_lag, r.user.as_deref()), (Engine::Mysql, MaxLag::Time(Duration::from_secs(30)), Some("understudy")));
        assert_eq!(s.check.kind, CheckKind::Tcp(TcpCheck { port: 3307, close: Default::default() }));
        assert!(s.check.postgres.is_none());
    }

    #[test]
    fn wrong_keys_and_values_are_located() {
        assert_eq!(load("max_lag = \"soon\"\n", "kind = \"redis\"\n").unwrap_err(), ["u.toml:3:1: service[0].max_lag: expected a duration such as \"30s\" or a size such as \"16MB\", got \"soon\""]);
        assert_eq!(load("", "kind = \"redis\"\ndbname = \"x\"\n").unwrap_err(), ["u.toml:5:1: service[0].check.dbname: `dbname` applies to postgres checks, not to redis checks"]);
        let e = load("max_lag = \"30s\"\n", "kind = \"tcp\"\nport = 80\n").unwrap_err();
        assert!(e[0].contains("`max_lag` applies to kind = \"postgres\" services"), "{e:?}");
        let e = load("", "kind = \"mysql\"\npassword_file = \"/nonexistent/pw\"\n").unwrap_err();
        assert!(e[0].contains("service[0].check.password_file: password file:"), "{e:?}");
    }
}
