//! `[[canary]]`: the always-on client canary, as written and as validated.
//!
//! ```toml
//! [[canary]]
//! service = "www"                        # the service whose decision it checks
//! name = "www.example.test"              # the name clients resolve (or the host of `url`)
//! url = "http://www.example.test/health" # optional: requested at the address obtained
//! resolvers = ["system", "10.0.0.53:53"] # default ["system"] (getaddrinfo, like a browser)
//! interval = "1s"                        # default 1s
//! timeout = "900ms"                      # default 90 % of the interval
//! margin = "2s"                          # clients may lag the decision by TTL + margin
//! ttl = 5                                # default: the TTL of the [dns] record serving it
//! ```
//!
//! Errors name the file, line and key like every other section. This module only parses and
//! checks; it does no I/O.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ServiceConfig;
use crate::config::duration::serde_duration;
use crate::config::locate::Seg;
use crate::config::validate::{Ctx, k, with};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCanary {
    pub service: String,
    pub name: Option<String>,
    pub url: Option<String>,
    #[serde(default = "default_resolvers")]
    pub resolvers: Vec<String>,
    #[serde(default = "default_interval", with = "serde_duration")]
    pub interval: Duration,
    #[serde(default, with = "serde_duration::option")]
    pub timeout: Option<Duration>,
    #[serde(default = "default_margin", with = "serde_duration")]
    pub margin: Duration,
    pub ttl: Option<u32>,
}

fn default_resolvers() -> Vec<String> {
    vec!["system".into()]
}
fn default_interval() -> Duration {
    Duration::from_secs(1)
}
/// Room for resolvers that count TTLs in whole seconds and for one sampling step.
fn default_margin() -> Duration {
    Duration::from_secs(2)
}

/// The shortest interval accepted: the canary is one client, not a load generator.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// At most this many resolvers per canary (each is asked every interval).
const MAX_RESOLVERS: usize = 16;

/// How the canary turns its name into an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanaryResolver {
    /// getaddrinfo: `/etc/resolv.conf`, `/etc/hosts`, like any program on this host.
    System,
    /// A recursive resolver asked directly (recursion desired).
    Server(SocketAddr),
}

impl CanaryResolver {
    /// How events, metrics and the API name it: `system` or the address.
    pub fn label(&self) -> String {
        match self {
            CanaryResolver::System => "system".into(),
            CanaryResolver::Server(a) => a.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CanaryConfig {
    pub service: String,
    /// The name resolved (lowercase, without a trailing dot).
    pub name: String,
    pub url: Option<reqwest::Url>,
    pub resolvers: Vec<CanaryResolver>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Clients may answer another address than the decision's for `ttl + margin` before it is a
    /// `clients_stale` event.
    pub margin: Duration,
    pub ttl: u32,
}

impl CanaryConfig {
    /// How long the canary may disagree with a decision before it is an event.
    pub fn stale_after(&self) -> Duration {
        Duration::from_secs(self.ttl as u64).saturating_add(self.margin)
    }
}

/// The TTL of the failover record named `name` serving `service`, else of any failover record
/// serving it (the largest), from `[dns]`.
fn dns_ttl(dns: Option<&crate::dns::DnsConfig>, service: &str, name: &str) -> Option<u32> {
    let dns = dns?;
    let records = dns.zones.iter().flat_map(|z| z.records.iter()).filter(|r| matches!(&r.kind, crate::dns::config::RecordKind::Failover { service: s, .. } if s == service));
    let records: Vec<_> = records.collect();
    let exact = records.iter().find(|r| r.name.to_string().trim_end_matches('.').eq_ignore_ascii_case(name)).map(|r| r.ttl);
    exact.or_else(|| records.iter().map(|r| r.ttl).max())
}

pub(crate) fn validate_all(cx: &mut Ctx<'_>, raw: Vec<RawCanary>, services: &[ServiceConfig], dns: Option<&crate::dns::DnsConfig>) -> Vec<CanaryConfig> {
    let mut out: Vec<CanaryConfig> = Vec::new();
    for (i, c) in raw.into_iter().enumerate() {
        let p = vec![k("canary"), Seg::Index(i)];
        if let Some(v) = validate(cx, c, &p, services, dns) {
            if out.iter().any(|o| o.service == v.service && o.name == v.name) {
                cx.err(&with(&p, &[k("name")]), format!("a canary for \"{}\" on service \"{}\" is already configured", v.name, v.service));
                continue;
            }
            out.push(v);
        }
    }
    out
}

fn validate(cx: &mut Ctx<'_>, c: RawCanary, p: &[Seg], services: &[ServiceConfig], dns: Option<&crate::dns::DnsConfig>) -> Option<CanaryConfig> {
    let before = cx.errors_len();
    let known = services.iter().any(|s| s.name == c.service);
    if !known {
        cx.err(&with(p, &[k("service")]), format!("no service named \"{}\"", c.service));
    }
    let url = c.url.as_deref().and_then(|u| match reqwest::Url::parse(u) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => Some(url),
        _ => {
            cx.err(&with(p, &[k("url")]), format!("expected an http(s) URL such as \"http://www.example.test/health\", got \"{u}\""));
            None
        }
    });
    let url_host = url.as_ref().and_then(|u| u.host_str()).map(|h| h.trim_end_matches('.').to_ascii_lowercase());
    let name = match (c.name.as_deref(), url_host.as_deref()) {
        (Some(n), h) => {
            let n = n.trim_end_matches('.').to_ascii_lowercase();
            if let Err(e) = crate::dns::name::Name::parse_absolute(&n) {
                cx.err(&with(p, &[k("name")]), format!("expected a DNS name such as \"www.example.test\": {e}"));
            } else if n.is_empty() {
                cx.err(&with(p, &[k("name")]), "expected a DNS name such as \"www.example.test\", got an empty name");
            }
            if let Some(h) = h
                && h != n
            {
                cx.err(&with(p, &[k("url")]), format!("the URL is requested at the address \"{n}\" resolves to, so its host must be \"{n}\", got \"{h}\""));
            }
            n
        }
        (None, Some(h)) => h.to_string(),
        (None, None) => {
            if c.url.is_none() {
                cx.err(p, "expected `name` (the name clients resolve) or `url`");
            }
            String::new()
        }
    };
    if c.resolvers.is_empty() {
        cx.err(&with(p, &[k("resolvers")]), "expected at least one resolver (\"system\" or an address such as \"127.0.0.1:53\")");
    }
    if c.resolvers.len() > MAX_RESOLVERS {
        cx.err(&with(p, &[k("resolvers")]), format!("expected at most {MAX_RESOLVERS} resolvers, got {}", c.resolvers.len()));
    }
    let mut resolvers = Vec::new();
    for (j, r) in c.resolvers.iter().enumerate() {
        let r = r.trim();
        let parsed = if r.eq_ignore_ascii_case("system") {
            Some(CanaryResolver::System)
        } else {
            r.parse::<SocketAddr>().ok().or_else(|| r.parse::<std::net::IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))).map(CanaryResolver::Server)
        };
        match parsed {
            Some(x) if resolvers.contains(&x) => cx.err(&with(p, &[k("resolvers"), Seg::Index(j)]), format!("resolver \"{r}\" is listed twice")),
            Some(x) => resolvers.push(x),
            None => cx.err(
                &with(p, &[k("resolvers"), Seg::Index(j)]),
                format!("expected \"system\" or a resolver address such as \"127.0.0.1:53\", got \"{r}\""),
            ),
        }
    }
    if c.interval < MIN_INTERVAL {
        cx.err(&with(p, &[k("interval")]), format!("expected at least {} ms", MIN_INTERVAL.as_millis()));
    }
    let timeout = c.timeout.unwrap_or(c.interval * 9 / 10);
    if timeout.is_zero() || timeout > c.interval {
        cx.err(&with(p, &[k("timeout")]), "expected more than 0 and at most the interval (one request per resolver at a time)");
    }
    let ttl = match c.ttl.or_else(|| dns_ttl(dns, &c.service, &name)) {
        Some(t) => t,
        None => {
            if known {
                cx.err(p, format!("set `ttl` (the TTL clients cache \"{name}\" with): no [dns] failover record serves service \"{}\"", c.service));
            }
            0
        }
    };
    (cx.errors_len() == before).then_some(CanaryConfig { service: c.service, name, url, resolvers, interval: c.interval, timeout, margin: c.margin, ttl })
}

#[cfg(test)]
mod tests {
    use crate::config::from_str;

    const BASE: &str = r#"
[[service]]
name = "www"
[service.check]
kind = "tcp"
port = 80
[[service.target]]
name = "primary"
address = "127.0.0.2"
[[service.target]]
name = "backup"
address = "127.0.0.3"

[dns]
listen = ["127.0.0.1:5300"]
[[dns.zone]]
name = "example.test"
nameservers = { "ns1.example.test" = "127.0.0.1" }
[[dns.zone.record]]
name = "www"
service = "www"
ttl = 7
"#;

    fn parse(extra: &str) -> Result<crate::config::Config, String> {
        from_str(&format!("{BASE}{extra}"), std::path::Path::new("u.toml")).map(|(c, _)| c).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_take_the_dns_records_ttl_and_the_system_resolver() {
        let c = parse("[[canary]]\nservice = \"www\"\nurl = \"http://WWW.example.test/\"\n").unwrap();
        let k = &c.canaries[0];
        assert_eq!((k.name.as_str(), k.ttl, k.interval, k.timeout), ("www.example.test", 7, super::default_interval(), std::time::Duration::from_millis(900)));
        assert_eq!(k.resolvers, vec![super::CanaryResolver::System]);
        assert_eq!(k.stale_after(), std::time::Duration::from_secs(9));
        let c = parse("[[canary]]\nservice = \"www\"\nname = \"www.example.test\"\nresolvers = [\"127.0.0.9\", \"system\"]\nttl = 3\n").unwrap();
        assert_eq!(c.canaries[0].resolvers[0].label(), "127.0.0.9:53");
        assert_eq!(c.canaries[0].ttl, 3);
    }

    #[test]
    fn errors_name_the_line_and_key() {
        let e = parse("[[canary]]\nservice = \"web\"\nname = \"www.example.test\"\nresolvers = [\"nope\"]\ninterval = \"10ms\"\n").unwrap_err();
        assert!(e.contains("u.toml:24:1: canary[0].service") && e.contains("canary[0].service: no service named \"web\""), "{e}");
        assert!(e.contains("canary[0].resolvers[0]: expected \"system\" or a resolver address"), "{e}");
        assert!(e.contains("canary[0].interval: expected at least 100 ms"), "{e}");
        let e = parse("[[canary]]\nservice = \"www\"\nname = \"www.example.test\"\nurl = \"http://other.example.test/\"\n").unwrap_err();
        assert!(e.contains("canary[0].url: the URL is requested at the address"), "{e}");
        let e = parse("[[canary]]\nservice = \"www\"\nname = \"www.example.test\"\ntimeout = \"2s\"\n").unwrap_err();
        assert!(e.contains("canary[0].timeout"), "{e}");
        let e = parse("[[canary]]\nservice = \"www\"\nnmae = \"x\"\n").unwrap_err();
        assert!(e.contains("nmae"), "unknown keys are refused: {e}");
        let e = parse("[[canary]]\nservice = \"www\"\n").unwrap_err();
        assert!(e.contains("expected `name`"), "{e}");
    }
}
