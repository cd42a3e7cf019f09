//! The load-balancer sections: `[[haproxy]]`, `[[nginx]]` and `[[proxy]]`, as written (raw serde
//! structs) and as used (validated).
//!
//! ```toml
//! [[haproxy]]                          # steer a running HAProxy through its runtime API
//! service = "www"
//! socket = "/run/haproxy/admin.sock"   # a unix socket path, or "127.0.0.1:9999" (TCP)
//! backend = "www"
//! servers = { primary = "web1", backup = "web2" }   # target name -> HAProxy server name
//! inactive = "drain"                   # or "maint": the state of every server but the active one
//!
//! [[nginx]]                            # steer a running nginx: write an upstream file, test, reload
//! service = "www"
//! upstream = "www"
//! file = "/etc/nginx/conf.d/understudy-www.conf"
//! port = 8080                          # the targets' port (default: the check's)
//! backups = true                       # list the other targets with `backup` (false: the active one alone)
//! test = ["nginx", "-t"]
//! reload = ["nginx", "-s", "reload"]
//! verify_url = "http://127.0.0.1/"     # optional: requested through nginx to verify
//!
//! [[proxy]]                            # forward TCP ourselves
//! service = "www"
//! listen = ["127.0.0.1:8000"]
//! port = 8080                          # the targets' port (default: the check's)
//! on_switch = "drain"                  # or "close"
//! drain_timeout = "30s"
//! connect_timeout = "1s"
//! max_connections = 10000
//! proxy_protocol = false               # send a PROXY protocol v2 header to the target
//! ```
//!
//! Every error names the file, line and key (through [`Ctx`]). This module only reads and
//! checks configuration; it opens no sockets and runs no commands.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::locate::Seg;
use crate::config::validate::{Ctx, k, with};
use crate::config::{CheckKind, ServiceConfig, parse_duration};

// ---------------------------------------------------------------------------------------------
// Raw layer

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHaproxy {
    pub service: String,
    pub socket: String,
    pub backend: String,
    pub servers: BTreeMap<String, String>,
    pub inactive: Option<String>,
    /// How long one runtime API command may take.
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNginx {
    pub service: String,
    pub upstream: String,
    pub file: String,
    pub port: Option<u16>,
    pub backups: Option<bool>,
    pub test: Option<Vec<String>>,
    pub reload: Option<Vec<String>>,
    pub verify_url: Option<String>,
    /// How long `test` and `reload` may each take.
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    pub service: String,
    pub listen: Vec<String>,
    pub port: Option<u16>,
    pub on_switch: Option<String>,
    pub drain_timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub max_connections: Option<u32>,
    pub proxy_protocol: Option<bool>,
}

// ---------------------------------------------------------------------------------------------
// Validated layer

/// All three sections; empty lists when not configured.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LbConfig {
    pub haproxy: Vec<HaproxyConfig>,
    pub nginx: Vec<NginxConfig>,
    pub proxy: Vec<ProxyConfig>,
}

/// Where HAProxy's runtime API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// The state HAProxy servers other than the active one are put in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inactive {
    /// No new connections; existing ones finish; HAProxy keeps checking the server.
    Drain,
    /// No traffic and no HAProxy checks.
    Maint,
}

impl Inactive {
    pub fn as_str(self) -> &'static str {
        match self {
            Inactive::Drain => "drain",
            Inactive::Maint => "maint",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HaproxyConfig {
    pub service: String,
    pub socket: Endpoint,
    pub backend: String,
    /// Target name -> HAProxy server name, in the service's priority order.
    pub servers: Vec<(String, String)>,
    pub inactive: Inactive,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NginxConfig {
    pub service: String,
    pub upstream: String,
    pub file: PathBuf,
    pub port: u16,
    pub backups: bool,
    pub test: Vec<String>,
    pub reload: Vec<String>,
    pub verify_url: Option<String>,
    pub timeout: Duration,
}

/// What happens to a proxy's open connections to a target that is no longer active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSwitch {
    /// They finish on their own, or are cut `drain_timeout` after the switch.
    Drain,
    /// They are cut at once.
    Close,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    pub service: String,
    pub listen: Vec<SocketAddr>,
    pub port: u16,
    pub on_switch: OnSwitch,
    pub drain_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_connections: u32,
    pub proxy_protocol: bool,
}

pub const DEFAULT_HAPROXY_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_NGINX_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;
const MAX_MAX_CONNECTIONS: u32 = 1_000_000;

/// Validate the three sections against the validated services.
pub(crate) fn validate(cx: &mut Ctx<'_>, haproxy: Vec<RawHaproxy>, nginx: Vec<RawNginx>, proxy: Vec<RawProxy>, services: &[ServiceConfig]) -> LbConfig {
    let mut out = LbConfig::default();
    for (i, r) in haproxy.into_iter().enumerate() {
        if let Some(h) = validate_haproxy(cx, r, &[k("haproxy"), Seg::Index(i)], services) {
            out.haproxy.push(h);
        }
    }
    let mut files = HashSet::new();
    for (i, r) in nginx.into_iter().enumerate() {
        let p = [k("nginx"), Seg::Index(i)];
        if let Some(n) = validate_nginx(cx, r, &p, services) {
            if !files.insert(n.file.clone()) {
                cx.err(&with(&p, &[k("file")]), format!("{} is written by another [[nginx]] section; each needs its own file", n.file.display()));
            }
            out.nginx.push(n);
        }
    }
    let mut addrs = HashSet::new();
    let mut proxied = HashSet::new();
    for (i, r) in proxy.into_iter().enumerate() {
        let p = [k("proxy"), Seg::Index(i)];
        if let Some(x) = validate_proxy(cx, r, &p, services) {
            if !proxied.insert(x.service.clone()) {
                cx.err(&with(&p, &[k("service")]), format!("service \"{}\" already has a [[proxy]] section; list every address in one `listen`", x.service));
            }
            for (j, a) in x.listen.iter().enumerate() {
                if a.port() != 0 && !addrs.insert(*a) {
                    cx.err(&with(&p, &[k("listen"), Seg::Index(j)]), format!("{a} is already a proxy listen address"));
                }
            }
            out.proxy.push(x);
        }
    }
    out
}

fn service<'a>(cx: &mut Ctx<'_>, name: &str, p: &[Seg], services: &'a [ServiceConfig]) -> Option<&'a ServiceConfig> {
    let s = services.iter().find(|s| s.name == name);
    if s.is_none() {
        let known: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        cx.err(&with(p, &[k("service")]), format!("no [[service]] is named \"{name}\" (services: {})", known.join(", ")));
    }
    s
}

fn duration(cx: &mut Ctx<'_>, raw: &Option<String>, p: &[Seg], key: &str, default: Duration) -> Duration {
    match raw.as_deref().map(parse_duration) {
        None => default,
        Some(Ok(d)) if !d.is_zero() => d,
        Some(Ok(_)) => {
            cx.err(&with(p, &[k(key)]), "expected a duration above zero, such as \"1s\"");
            default
        }
        Some(Err(e)) => {
            cx.err(&with(p, &[k(key)]), e);
            default
        }
    }
}

/// The targets' port: `port`, else the check's port (http, https, tcp checks).
fn port(cx: &mut Ctx<'_>, raw: Option<u16>, p: &[Seg], svc: &ServiceConfig) -> u16 {
    match (raw, &svc.check.kind) {
        (Some(0), _) => {
            cx.err(&with(p, &[k("port")]), "expected a port from 1 to 65535");
            0
        }
        (Some(port), _) => port,
        (None, CheckKind::Http(h)) => h.port,
        (None, CheckKind::Tcp(t)) => t.port,
        (None, CheckKind::Exec(_)) => {
            cx.err(&with(p, &[k("port")]), format!("service \"{}\" has an exec check, so the targets' port cannot be taken from it: set `port`", svc.name));
            0
        }
    }
}

fn argv(cx: &mut Ctx<'_>, raw: Option<Vec<String>>, p: &[Seg], key: &str, default: &[&str]) -> Vec<String> {
    match raw {
        None => default.iter().map(|s| s.to_string()).collect(),
        Some(v) if v.first().is_some_and(|c| !c.trim().is_empty()) => v,
        Some(_) => {
            cx.err(&with(p, &[k(key)]), format!("expected a command as a list, such as {default:?}"));
            Vec::new()
        }
    }
}

fn validate_haproxy(cx: &mut Ctx<'_>, r: RawHaproxy, p: &[Seg], services: &[ServiceConfig]) -> Option<HaproxyConfig> {
    let before = cx.errors_len();
    let svc = service(cx, &r.service, p, services);
    let socket = match r.socket.parse::<SocketAddr>() {
        Ok(a) => Endpoint::Tcp(a),
        Err(_) if r.socket.starts_with('/') => Endpoint::Unix(PathBuf::from(&r.socket)),
        Err(_) => {
            cx.err(&with(p, &[k("socket")]), format!("expected an absolute unix socket path or an address and port such as \"127.0.0.1:9999\", got \"{}\"", r.socket));
            Endpoint::Unix(PathBuf::new())
        }
    };
    // HAProxy names: letters, digits, '-', '_', '.', ':' (anything else would break the command line).
    let hname = |s: &str| !s.is_empty() && s.len() <= 100 && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if !hname(&r.backend) {
        cx.err(&with(p, &[k("backend")]), format!("expected an HAProxy backend name (letters, digits, '-', '_', '.', ':'), got \"{}\"", r.backend));
    }
    if r.servers.is_empty() {
        cx.err(&with(p, &[k("servers")]), "expected at least one target, such as { primary = \"web1\" }");
    }
    let mut servers = Vec::new();
    let mut seen = HashSet::new();
    for (target, server) in &r.servers {
        let sp = with(p, &[k("servers"), k(target)]);
        if !hname(server) {
            cx.err(&sp, format!("expected an HAProxy server name (letters, digits, '-', '_', '.', ':'), got \"{server}\""));
        } else if !seen.insert(server.clone()) {
            cx.err(&sp, format!("HAProxy server \"{server}\" is named for two targets"));
        }
        if let Some(s) = svc
            && s.target(target).is_none()
        {
            let known: Vec<&str> = s.targets.iter().map(|t| t.name.as_str()).collect();
            cx.err(&sp, format!("service \"{}\" has no target \"{target}\" (targets: {})", s.name, known.join(", ")));
        }
    }
    if let Some(s) = svc {
        for t in &s.targets {
            if let Some(server) = r.servers.get(&t.name) {
                servers.push((t.name.clone(), server.clone()));
            }
        }
    }
    let inactive = match r.inactive.as_deref() {
        None | Some("drain") => Inactive::Drain,
        Some("maint") => Inactive::Maint,
        Some(other) => {
            cx.err(&with(p, &[k("inactive")]), format!("expected \"drain\" or \"maint\", got \"{other}\""));
            Inactive::Drain
        }
    };
    let timeout = duration(cx, &r.timeout, p, "timeout", DEFAULT_HAPROXY_TIMEOUT);
    (cx.errors_len() == before).then_some(HaproxyConfig { service: r.service, socket, backend: r.backend, servers, inactive, timeout })
}

fn validate_nginx(cx: &mut Ctx<'_>, r: RawNginx, p: &[Seg], services: &[ServiceConfig]) -> Option<NginxConfig> {
    let before = cx.errors_len();
    let svc = service(cx, &r.service, p, services);
    let port = svc.map(|s| port(cx, r.port, p, s)).unwrap_or(0);
    if r.upstream.is_empty() || !r.upstream.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        cx.err(&with(p, &[k("upstream")]), format!("expected an nginx upstream name (letters, digits, '-', '_', '.'), got \"{}\"", r.upstream));
    }
    let file = PathBuf::from(&r.file);
    if !file.is_absolute() || file.file_name().is_none() {
        cx.err(&with(p, &[k("file")]), format!("expected an absolute file path, such as \"/etc/nginx/conf.d/understudy-www.conf\", got \"{}\"", r.file));
    }
    let test = argv(cx, r.test, p, "test", &["nginx", "-t"]);
    let reload = argv(cx, r.reload, p, "reload", &["nginx", "-s", "reload"]);
    if let Some(u) = &r.verify_url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        cx.err(&with(p, &[k("verify_url")]), format!("expected an http:// or https:// URL, got \"{u}\""));
    }
    let timeout = duration(cx, &r.timeout, p, "timeout", DEFAULT_NGINX_TIMEOUT);
    (cx.errors_len() == before).then(|| NginxConfig {
        service: r.service,
        upstream: r.upstream,
        file,
        port,
        backups: r.backups.unwrap_or(true),
        test,
        reload,
        verify_url: r.verify_url,
        timeout,
    })
}

fn validate_proxy(cx: &mut Ctx<'_>, r: RawProxy, p: &[Seg], services: &[ServiceConfig]) -> Option<ProxyConfig> {
    let before = cx.errors_len();
    let svc = service(cx, &r.service, p, services);
    let port = svc.map(|s| port(cx, r.port, p, s)).unwrap_or(0);
    if r.listen.is_empty() {
        cx.err(&with(p, &[k("listen")]), "expected at least one address such as \"127.0.0.1:8000\"");
    }
    let mut listen = Vec::new();
    for (i, l) in r.listen.iter().enumerate() {
        match l.parse::<SocketAddr>() {
            Ok(a) if listen.contains(&a) => cx.err(&with(p, &[k("listen"), Seg::Index(i)]), format!("{a} is listed twice")),
            Ok(a) => listen.push(a),
            Err(_) => cx.err(&with(p, &[k("listen"), Seg::Index(i)]), format!("expected an address and port such as \"0.0.0.0:8000\" or \"[::1]:8000\", got \"{l}\"")),
        }
    }
    let on_switch = match r.on_switch.as_deref() {
        None | Some("drain") => OnSwitch::Drain,
        Some("close") => OnSwitch::Close,
        Some(other) => {
            cx.err(&with(p, &[k("on_switch")]), format!("expected \"drain\" (open connections finish) or \"close\" (they are cut), got \"{other}\""));
            OnSwitch::Drain
        }
    };
    let drain_timeout = duration(cx, &r.drain_timeout, p, "drain_timeout", DEFAULT_DRAIN_TIMEOUT);
    let connect_timeout = duration(cx, &r.connect_timeout, p, "connect_timeout", DEFAULT_CONNECT_TIMEOUT);
    let max_connections = match r.max_connections {
        None => DEFAULT_MAX_CONNECTIONS,
        Some(n) if (1..=MAX_MAX_CONNECTIONS).contains(&n) => n,
        Some(n) => {
            cx.err(&with(p, &[k("max_connections")]), format!("expected 1 to {MAX_MAX_CONNECTIONS}, got {n}"));
            DEFAULT_MAX_CONNECTIONS
        }
    };
    (cx.errors_len() == before).then(|| ProxyConfig {
        service: r.service,
        listen,
        port,
        on_switch,
        drain_timeout,
        connect_timeout,
        max_connections,
        proxy_protocol: r.proxy_protocol.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::from_str;

    const SERVICE: &str = "[[service]]\nname = \"www\"\n[service.check]\nkind = \"http\"\nport = 8080\n\
        [[service.target]]\nname = \"primary\"\naddress = \"127.0.0.2\"\n[[service.target]]\nname = \"backup\"\naddress = \"127.0.0.3\"\n";

    fn errors(extra: &str) -> Vec<String> {
        from_str(&format!("{SERVICE}{extra}"), Path::new("u.toml")).expect_err("must be refused").0.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn the_three_sections_parse_with_defaults() {
        let text = format!(
            "{SERVICE}[[haproxy]]\nservice = \"www\"\nsocket = \"/run/haproxy/admin.sock\"\nbackend = \"be\"\nservers = {{ backup = \"web2\", primary = \"web1\" }}\n\
             [[nginx]]\nservice = \"www\"\nupstream = \"www\"\nfile = \"/etc/nginx/conf.d/u.conf\"\n\
             [[proxy]]\nservice = \"www\"\nlisten = [\"127.0.0.1:8000\"]\n"
        );
        let (c, _) = from_str(&text, Path::new("u.toml")).unwrap();
        let h = &c.lb.haproxy[0];
        assert_eq!(h.socket, Endpoint::Unix("/run/haproxy/admin.sock".into()));
        assert_eq!(h.servers, [("primary".to_string(), "web1".to_string()), ("backup".to_string(), "web2".to_string())], "priority order");
        assert_eq!((h.inactive, h.timeout), (Inactive::Drain, DEFAULT_HAPROXY_TIMEOUT));
        let n = &c.lb.nginx[0];
        assert_eq!((n.port, n.backups, n.test.clone(), n.reload.clone()), (8080, true, vec!["nginx".into(), "-t".into()], vec!["nginx".into(), "-s".into(), "reload".into()]));
        let x = &c.lb.proxy[0];
        assert_eq!((x.port, x.on_switch, x.drain_timeout, x.connect_timeout, x.max_connections, x.proxy_protocol), (8080, OnSwitch::Drain, DEFAULT_DRAIN_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, 10_000, false));
    }

    #[test]
    fn mistakes_are_located_and_say_what_was_expected() {
        let e = errors("[[haproxy]]\nservice = \"web\"\nsocket = \"admin.sock\"\nbackend = \"be x\"\nservers = { primary = \"web1\", third = \"web1\" }\ninactive = \"off\"\n");
        assert!(e.iter().any(|e| e.starts_with("u.toml:13:1: haproxy[0].service: no [[service]] is named \"web\"")), "{e:?}");
        assert!(e.iter().any(|e| e.contains("haproxy[0].socket: expected an absolute unix socket path")), "{e:?}");
        assert!(e.iter().any(|e| e.contains("haproxy[0].backend: expected an HAProxy backend name")), "{e:?}");
        assert!(e.iter().any(|e| e.contains("haproxy[0].servers.third: HAProxy server \"web1\" is named for two targets")), "{e:?}");
        assert!(e.iter().any(|e| e.contains("haproxy[0].inactive: expected \"drain\" or \"maint\"")), "{e:?}");

        let e = errors("[[haproxy]]\nservice = \"www\"\nsocket = \"127.0.0.1:9999\"\nbackend = \"be\"\nservers = { third = \"web3\" }\n");
        assert!(e.iter().any(|e| e.contains("haproxy[0].servers.third: service \"www\" has no target \"third\" (targets: primary, backup)")), "{e:?}");

        let e = errors("[[nginx]]\nservice = \"www\"\nupstream = \"a b\"\nfile = \"rel.conf\"\nreload = []\nverify_url = \"ftp://x\"\ntimeout = \"0s\"\n");
        for key in ["nginx[0].upstream", "nginx[0].file", "nginx[0].reload", "nginx[0].verify_url", "nginx[0].timeout"] {
            assert!(e.iter().any(|e| e.contains(key)), "{key}: {e:?}");
        }

        let e = errors("[[proxy]]\nservice = \"www\"\nlisten = [\"127.0.0.1\"]\non_switch = \"wait\"\nconnect_timeout = \"soon\"\nmax_connections = 0\nport = 0\n");
        assert!(e.iter().any(|e| e.starts_with("u.toml:14:") && e.contains("proxy[0].listen[0]: expected an address and port")), "{e:?}");
        for key in ["proxy[0].on_switch", "proxy[0].connect_timeout", "proxy[0].max_connections: expected 1 to 1000000, got 0", "proxy[0].port"] {
            assert!(e.iter().any(|e| e.contains(key)), "{key}: {e:?}");
        }
        let e = errors("[[proxy]]\nservice = \"www\"\nlisten = [\"127.0.0.1:80\"]\nsplice = true\n");
        assert!(e.iter().any(|e| e.contains("unknown field `splice`")), "{e:?}");
    }

    #[test]
    fn an_exec_check_needs_an_explicit_port_and_a_service_gets_one_proxy() {
        let text = SERVICE.replace("kind = \"http\"\nport = 8080", "kind = \"exec\"\ncommand = \"true\"");
        let e = from_str(&format!("{text}[[proxy]]\nservice = \"www\"\nlisten = [\"127.0.0.1:8000\"]\n"), Path::new("u.toml")).unwrap_err().to_string();
        assert!(e.contains("proxy[0].port: service \"www\" has an exec check"), "{e}");
        let e = errors("[[proxy]]\nservice = \"www\"\nlisten = [\"127.0.0.1:8000\"]\n[[proxy]]\nservice = \"www\"\nlisten = [\"127.0.0.1:8000\"]\n");
        assert!(e.iter().any(|e| e.contains("proxy[1].service: service \"www\" already has a [[proxy]] section")), "{e:?}");
        assert!(e.iter().any(|e| e.contains("proxy[1].listen[0]: 127.0.0.1:8000 is already a proxy listen address")), "{e:?}");
    }
}
