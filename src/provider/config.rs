//! The `[[dns.provider]]` tables: raw serde structs (as written) and their validation.
//!
//! ```toml
//! [[dns.provider]]
//! name = "corp-bind"
//! kind = "rfc2136"                   # rfc2136 | powerdns | route53 | cloudflare
//! server = "127.0.0.1:53"            # the primary to send UPDATEs to
//! zone = "example.test"
//! tsig_key_name = "understudy"
//! tsig_algorithm = "hmac-sha256"     # hmac-sha256 | hmac-sha384 | hmac-sha512
//! tsig_secret_file = "/etc/understudy/tsig.key"   # base64 or a BIND key file (or _env / inline)
//!
//! [[dns.provider.record]]
//! name = "www"                       # relative to zone
//! service = "www"
//! ttl = 30
//! ```
//!
//! Providers live under `[dns]` but do not need the built-in server: a `[dns]` table with
//! providers and no `[[dns.zone]]` starts no server (`dns::config` decides that). One struct
//! holds every kind's keys, so a key given to the wrong kind gets a precise message ("`url`
//! applies to powerdns providers"). Secrets are read here (inline, `_file` or `_env`), so a
//! missing key file is a located config error, not a failure at the first failover.
//!
//! This module reads configuration only: it sends nothing and opens no sockets.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::tsig;
use crate::config::locate::Seg;
use crate::config::secret::{Secret, SecretSource, read_secret};
use crate::config::validate::{Ctx, k, valid_name, with};
use crate::config::{ServiceConfig, parse_duration};
use crate::dns::config::{RawSuspectTtl, RawTtl};
use crate::dns::name::Name;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub name: String,
    pub kind: String,
    pub zone: Option<String>,
    /// Authoritative servers to check after a change (`"ADDR:PORT"`), instead of the zone's SOA
    /// MNAME and NS set (RFC 2136) or the API's read-back (the HTTP providers).
    pub verify_servers: Option<Vec<String>>,
    /// How long one request may take (a DNS exchange, an HTTP call).
    pub timeout: Option<String>,
    // rfc2136
    pub server: Option<String>,
    pub tsig_key_name: Option<String>,
    pub tsig_algorithm: Option<String>,
    pub tsig_secret: Option<String>,
    pub tsig_secret_file: Option<String>,
    pub tsig_secret_env: Option<String>,
    // powerdns
    pub url: Option<String>,
    pub api_key: Option<String>,
    pub api_key_file: Option<String>,
    pub api_key_env: Option<String>,
    pub server_id: Option<String>,
    // route53
    pub hosted_zone_id: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub secret_access_key_file: Option<String>,
    pub secret_access_key_env: Option<String>,
    pub region: Option<String>,
    /// How long to wait for Route 53 to report a change INSYNC.
    pub propagation_timeout: Option<String>,
    // route53, cloudflare
    pub endpoint: Option<String>,
    // cloudflare
    pub zone_id: Option<String>,
    pub api_token: Option<String>,
    pub api_token_file: Option<String>,
    pub api_token_env: Option<String>,
    #[serde(default, rename = "record")]
    pub records: Vec<RawProviderRecord>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProviderRecord {
    pub name: String,
    pub service: String,
    pub ttl: Option<RawTtl>,
    /// The TTL written while the served target is suspect (`false` or `"0s"`: off). Costs one
    /// extra change at the provider per suspicion; on by default for rfc2136 and powerdns.
    pub suspect_ttl: Option<RawSuspectTtl>,
}

/// A validated provider.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderConfig {
    pub name: String,
    pub zone: Name,
    pub records: Vec<ProviderRecord>,
    /// Servers to query when verifying; empty: the kind's own way (see [`RawProvider`]).
    pub verify_servers: Vec<SocketAddr>,
    pub timeout: Duration,
    pub kind: ProviderKind,
}

/// One failover record at a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRecord {
    /// Absolute.
    pub name: Name,
    pub service: String,
    pub ttl: u32,
    /// The TTL written while the served target is suspect; `None` when off.
    pub suspect_ttl: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProviderKind {
    Rfc2136 { server: SocketAddr, key: Option<tsig::Key> },
    PowerDns { url: String, api_key: Secret, server_id: String },
    Route53 { hosted_zone_id: String, credentials: AwsCredentials, region: String, endpoint: String, propagation_timeout: Duration },
    Cloudflare { zone_id: String, api_token: Secret, endpoint: String },
}

impl ProviderKind {
    pub fn name(&self) -> &'static str {
        match self {
            ProviderKind::Rfc2136 { .. } => "rfc2136",
            ProviderKind::PowerDns { .. } => "powerdns",
            ProviderKind::Route53 { .. } => "route53",
            ProviderKind::Cloudflare { .. } => "cloudflare",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

pub const KINDS: &[&str] = &["rfc2136", "powerdns", "route53", "cloudflare"];
/// Default TTL of provider records (Cloudflare's smallest for most plans is 60 s).
pub const DEFAULT_TTL: u32 = 30;
pub const DEFAULT_CLOUDFLARE_TTL: u32 = 60;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_PROPAGATION_TIMEOUT: Duration = Duration::from_secs(180);
pub const DEFAULT_ROUTE53_ENDPOINT: &str = "https://route53.amazonaws.com";
pub const DEFAULT_CLOUDFLARE_ENDPOINT: &str = "https://api.cloudflare.com/client/v4";

fn duration(cx: &mut Ctx<'_>, p: &[Seg], key: &str, v: &Option<String>, default: Duration) -> Duration {
    match v.as_deref().map(parse_duration) {
        None => default,
        Some(Ok(d)) if !d.is_zero() => d,
        Some(Ok(_)) => {
            cx.err(&with(p, &[k(key)]), "expected a duration above zero");
            default
        }
        Some(Err(e)) => {
            cx.err(&with(p, &[k(key)]), e);
            default
        }
    }
}

fn ttl(cx: &mut Ctx<'_>, p: &[Seg], t: &Option<RawTtl>, default: u32) -> u32 {
    let secs = match t {
        None => return default,
        Some(RawTtl::Secs(n)) => *n,
        Some(RawTtl::Text(s)) => match parse_duration(s) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => {
                cx.err(p, e);
                return default;
            }
        },
    };
    if !(0..=i32::MAX as i64).contains(&secs) {
        cx.err(p, format!("expected a TTL from 0 to {} seconds, got {secs}", i32::MAX));
        return default;
    }
    secs as u32
}

/// Validate every `[[dns.provider]]`; `services` are the services that validated.
pub(crate) fn validate_all(cx: &mut Ctx<'_>, raw: Vec<RawProvider>, services: &[ServiceConfig], base: &Path) -> Vec<ProviderConfig> {
    let by_name: HashMap<&str, &ServiceConfig> = services.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut out: Vec<ProviderConfig> = Vec::new();
    let mut names = HashSet::new();
    for (i, rp) in raw.into_iter().enumerate() {
        let p = vec![k("dns"), k("provider"), Seg::Index(i)];
        if !valid_name(&rp.name) {
            cx.err(&with(&p, &[k("name")]), format!("expected 1-63 letters, digits, '-', '_' or '.', got \"{}\"", rp.name));
        } else if !names.insert(rp.name.clone()) {
            cx.err(&with(&p, &[k("name")]), format!("duplicate provider name \"{}\"", rp.name));
        }
        if let Some(c) = validate_one(cx, rp, &p, &by_name, base) {
            for r in &c.records {
                if let Some(other) = out.iter().find(|o| o.records.iter().any(|x| x.name == r.name)) {
                    cx.warn(&p, format!("{} is also written by provider \"{}\"; both follow the same decisions", r.name, other.name));
                }
            }
            out.push(c);
        }
    }
    out
}

fn validate_one(cx: &mut Ctx<'_>, rp: RawProvider, p: &[Seg], services: &HashMap<&str, &ServiceConfig>, base: &Path) -> Option<ProviderConfig> {
    let before = cx.errors_len();
    let kind = rp.kind.trim().to_ascii_lowercase();
    if !KINDS.contains(&kind.as_str()) {
        cx.err(&with(p, &[k("kind")]), format!("expected one of {}, got \"{}\"", KINDS.join(", "), rp.kind));
        return None;
    }
    let only = |cx: &mut Ctx<'_>, present: bool, key: &str, kinds: &str| {
        if present {
            cx.err(&with(p, &[k(key)]), format!("`{key}` applies to {kinds} providers, not to {kind} providers"));
        }
    };
    let is = |k: &str| kind == k;
    only(cx, !is("rfc2136") && rp.server.is_some(), "server", "rfc2136");
    for (key, present) in [
        ("tsig_key_name", rp.tsig_key_name.is_some()),
        ("tsig_algorithm", rp.tsig_algorithm.is_some()),
        ("tsig_secret", rp.tsig_secret.is_some()),
        ("tsig_secret_file", rp.tsig_secret_file.is_some()),
        ("tsig_secret_env", rp.tsig_secret_env.is_some()),
    ] {
        only(cx, !is("rfc2136") && present, key, "rfc2136");
    }
    for (key, present) in [
        ("url", rp.url.is_some()),
        ("api_key", rp.api_key.is_some()),
        ("api_key_file", rp.api_key_file.is_some()),
        ("api_key_env", rp.api_key_env.is_some()),
        ("server_id", rp.server_id.is_some()),
    ] {
        only(cx, !is("powerdns") && present, key, "powerdns");
    }
    for (key, present) in [
        ("hosted_zone_id", rp.hosted_zone_id.is_some()),
        ("access_key_id", rp.access_key_id.is_some()),
        ("secret_access_key", rp.secret_access_key.is_some()),
        ("secret_access_key_file", rp.secret_access_key_file.is_some()),
        ("secret_access_key_env", rp.secret_access_key_env.is_some()),
        ("region", rp.region.is_some()),
        ("propagation_timeout", rp.propagation_timeout.is_some()),
    ] {
        only(cx, !is("route53") && present, key, "route53");
    }
    only(cx, !is("route53") && !is("cloudflare") && rp.endpoint.is_some(), "endpoint", "route53 and cloudflare");
    for (key, present) in [
        ("zone_id", rp.zone_id.is_some()),
        ("api_token", rp.api_token.is_some()),
        ("api_token_file", rp.api_token_file.is_some()),
        ("api_token_env", rp.api_token_env.is_some()),
    ] {
        only(cx, !is("cloudflare") && present, key, "cloudflare");
    }

    let zone = match rp.zone.as_deref().map(|z| Name::parse_absolute(z.trim())) {
        None => {
            cx.err(p, format!("provider \"{}\" needs `zone` (the zone its records are in, e.g. \"example.com\")", rp.name));
            None
        }
        Some(Ok(z)) if !z.is_root() => Some(z),
        Some(Ok(_)) => {
            cx.err(&with(p, &[k("zone")]), "expected a zone name such as \"example.com\", not the root");
            None
        }
        Some(Err(e)) => {
            cx.err(&with(p, &[k("zone")]), e);
            None
        }
    };
    let timeout = duration(cx, p, "timeout", &rp.timeout, DEFAULT_TIMEOUT);
    let mut verify_servers = Vec::new();
    for (i, s) in rp.verify_servers.iter().flatten().enumerate() {
        match parse_server(s) {
            Some(a) => verify_servers.push(a),
            None => cx.err(&with(p, &[k("verify_servers"), Seg::Index(i)]), format!("expected an address such as \"192.0.2.53:53\" or \"[2001:db8::53]:53\", got \"{s}\"")),
        }
    }
    if rp.verify_servers.as_ref().is_some_and(Vec::is_empty) {
        cx.err(&with(p, &[k("verify_servers")]), "expected at least one address (or leave verify_servers out)");
    }

    let cf = is("cloudflare");
    let kind = match kind.as_str() {
        "rfc2136" => {
            let server = match rp.server.as_deref() {
                None => {
                    cx.err(p, "rfc2136 providers need `server`, the primary to send UPDATEs to (\"192.0.2.53:53\")");
                    None
                }
                Some(s) => parse_server(s).or_else(|| {
                    cx.err(&with(p, &[k("server")]), format!("expected an address such as \"192.0.2.53:53\" (a bare IP means port 53), got \"{s}\""));
                    None
                }),
            };
            let secret = read_secret(
                cx,
                p,
                base,
                SecretSource { key: "tsig_secret", inline: rp.tsig_secret, file: rp.tsig_secret_file, env: rp.tsig_secret_env },
            );
            let key = match (&rp.tsig_key_name, secret) {
                (None, None) => {
                    if rp.tsig_algorithm.is_some() {
                        cx.err(&with(p, &[k("tsig_algorithm")]), "tsig_algorithm needs tsig_key_name and a secret");
                    }
                    None
                }
                (Some(_), None) => {
                    cx.err(p, "tsig_key_name needs the key's secret: tsig_secret, tsig_secret_file or tsig_secret_env");
                    None
                }
                (None, Some(_)) => {
                    cx.err(p, "a TSIG secret needs tsig_key_name (the key's name as the server knows it)");
                    None
                }
                (Some(name), Some(secret)) => {
                    let kname = Name::parse_absolute(name.trim()).map_err(|e| cx.err(&with(p, &[k("tsig_key_name")]), e)).ok();
                    let alg = match rp.tsig_algorithm.as_deref() {
                        None => Some(tsig::Algorithm::HmacSha256),
                        Some(a) => tsig::Algorithm::parse(a).or_else(|| {
                            cx.err(&with(p, &[k("tsig_algorithm")]), format!("expected hmac-sha256, hmac-sha384 or hmac-sha512, got \"{a}\""));
                            None
                        }),
                    };
                    let bytes = tsig::parse_secret(secret.expose()).map_err(|e| cx.err(&with(p, &[k("tsig_secret")]), e)).ok();
                    match (kname, alg, bytes) {
                        (Some(name), Some(algorithm), Some(secret)) => Some(tsig::Key { name, algorithm, secret }),
                        _ => None,
                    }
                }
            };
            server.map(|server| ProviderKind::Rfc2136 { server, key })
        }
        "powerdns" => {
            let url = match rp.url.as_deref() {
                None => {
                    cx.err(p, "powerdns providers need `url`, the API's base such as \"http://127.0.0.1:8081\"");
                    None
                }
                Some(u) => check_url(cx, &with(p, &[k("url")]), u),
            };
            let api_key = read_secret(cx, p, base, SecretSource { key: "api_key", inline: rp.api_key, file: rp.api_key_file, env: rp.api_key_env });
            if api_key.is_none() && !has_secret_error(cx, before) {
                cx.err(p, "powerdns providers need the API key: api_key, api_key_file or api_key_env");
            }
            let server_id = rp.server_id.unwrap_or_else(|| "localhost".into());
            match (url, api_key) {
                (Some(url), Some(api_key)) => Some(ProviderKind::PowerDns { url, api_key, server_id }),
                _ => None,
            }
        }
        "route53" => {
            if rp.hosted_zone_id.as_deref().is_none_or(|z| z.trim().is_empty()) {
                cx.err(p, "route53 providers need `hosted_zone_id` (\"Z0123456789ABCDEFGHIJ\")");
            }
            let endpoint = check_url(cx, &with(p, &[k("endpoint")]), rp.endpoint.as_deref().unwrap_or(DEFAULT_ROUTE53_ENDPOINT));
            let credentials = aws_credentials(cx, p, base, &rp.access_key_id, rp.secret_access_key, rp.secret_access_key_file, rp.secret_access_key_env);
            let propagation_timeout = duration(cx, p, "propagation_timeout", &rp.propagation_timeout, DEFAULT_PROPAGATION_TIMEOUT);
            let hosted_zone_id = rp.hosted_zone_id.unwrap_or_default().trim().trim_start_matches("/hostedzone/").to_string();
            match (endpoint, credentials) {
                (Some(endpoint), Some(credentials)) => Some(ProviderKind::Route53 {
                    hosted_zone_id,
                    credentials,
                    region: rp.region.unwrap_or_else(|| "us-east-1".into()),
                    endpoint,
                    propagation_timeout,
                }),
                _ => None,
            }
        }
        _ => {
            if rp.zone_id.as_deref().is_none_or(|z| z.trim().is_empty()) {
                cx.err(p, "cloudflare providers need `zone_id` (the zone's identifier on its overview page)");
            }
            let endpoint = check_url(cx, &with(p, &[k("endpoint")]), rp.endpoint.as_deref().unwrap_or(DEFAULT_CLOUDFLARE_ENDPOINT));
            let api_token = read_secret(cx, p, base, SecretSource { key: "api_token", inline: rp.api_token, file: rp.api_token_file, env: rp.api_token_env });
            if api_token.is_none() && !has_secret_error(cx, before) {
                cx.err(p, "cloudflare providers need an API token with DNS edit rights: api_token, api_token_file or api_token_env");
            }
            match (endpoint, api_token) {
                (Some(endpoint), Some(api_token)) => Some(ProviderKind::Cloudflare { zone_id: rp.zone_id.unwrap_or_default().trim().to_string(), api_token, endpoint }),
                _ => None,
            }
        }
    };

    // Records.
    if rp.records.is_empty() {
        cx.err(p, format!("provider \"{}\" needs at least one [[dns.provider.record]] (name and service)", rp.name));
    }
    let suspect_default = kind.as_ref().is_some_and(|k| matches!(k, ProviderKind::Rfc2136 { .. } | ProviderKind::PowerDns { .. }));
    let mut records: Vec<ProviderRecord> = Vec::new();
    for (i, rr) in rp.records.into_iter().enumerate() {
        let rp_ = with(p, &[k("record"), Seg::Index(i)]);
        let Some(zone) = &zone else { continue };
        let name = match Name::parse_in(&rr.name, zone) {
            Ok(n) if n.is_within(zone) => n,
            Ok(n) => {
                cx.err(&with(&rp_, &[k("name")]), format!("{n} is outside zone {zone}"));
                continue;
            }
            Err(e) => {
                cx.err(&with(&rp_, &[k("name")]), e);
                continue;
            }
        };
        if records.iter().any(|r| r.name == name) {
            cx.err(&with(&rp_, &[k("name")]), format!("{name} is listed twice in this provider"));
            continue;
        }
        let default_ttl = if cf { DEFAULT_CLOUDFLARE_TTL } else { DEFAULT_TTL };
        let t = ttl(cx, &with(&rp_, &[k("ttl")]), &rr.ttl, default_ttl);
        if cf && t != 1 && t < 60 {
            cx.warn(&with(&rp_, &[k("ttl")]), format!("Cloudflare refuses TTLs below 60 s on most plans (1 means \"automatic\"), got {t}"));
        }
        let Some(svc) = services.get(rr.service.as_str()) else {
            let known: Vec<&str> = services.keys().copied().collect();
            cx.err(&with(&rp_, &[k("service")]), format!("no service named \"{}\" (configured: {})", rr.service, known.join(", ")));
            continue;
        };
        if let Some(budget) = svc.rto_budget {
            let worst = svc.detection_budget().saturating_add(Duration::from_secs(t as u64));
            if worst > budget {
                cx.warn(
                    &with(&rp_, &[k("ttl")]),
                    format!(
                        "TTL {t}s plus detection time {} makes {} before every resolver follows a failover, more than service \"{}\"'s rto_budget {}",
                        humantime::format_duration(svc.detection_budget()),
                        humantime::format_duration(worst),
                        rr.service,
                        humantime::format_duration(budget)
                    ),
                );
            }
        }
        let sp = with(&rp_, &[k("suspect_ttl")]);
        let suspect_ttl = match &rr.suspect_ttl {
            None => suspect_default.then_some(crate::dns::config::DEFAULT_SUSPECT_TTL),
            Some(RawSuspectTtl::Switch(true)) => Some(crate::dns::config::DEFAULT_SUSPECT_TTL),
            Some(RawSuspectTtl::Switch(false)) => None,
            Some(RawSuspectTtl::Ttl(x)) => match ttl(cx, &sp, &Some(x.clone()), 0) {
                0 => None,
                s => Some(s),
            },
        };
        let suspect_ttl = match suspect_ttl {
            Some(s) if s >= t => {
                if rr.suspect_ttl.is_some() {
                    cx.warn(&sp, format!("suspect_ttl {s}s is not shorter than ttl {t}s, so it changes nothing"));
                }
                None
            }
            other => other,
        };
        records.push(ProviderRecord { name, service: rr.service, ttl: t, suspect_ttl });
    }
    if cx.errors_len() > before {
        return None;
    }
    Some(ProviderConfig { name: rp.name, zone: zone?, records, verify_servers, timeout, kind: kind? })
}

/// Whether an error was recorded since `before` (a secret that could not be read already said so).
fn has_secret_error(cx: &Ctx<'_>, before: usize) -> bool {
    cx.errors_len() > before
}

/// `"192.0.2.53:53"`, `"[2001:db8::53]:53"`, or a bare IP (port 53).
pub fn parse_server(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    s.parse::<SocketAddr>().ok().or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
}

fn check_url(cx: &mut Ctx<'_>, p: &[Seg], u: &str) -> Option<String> {
    match reqwest::Url::parse(u.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Some(u.trim().trim_end_matches('/').to_string()),
        _ => {
            cx.err(p, format!("expected an http:// or https:// URL, got \"{u}\""));
            None
        }
    }
}

/// Route 53 credentials: `access_key_id` with `secret_access_key` (inline, `_file`, `_env`);
/// else the standard `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (`AWS_SESSION_TOKEN`)
/// environment; else the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE` or
/// `~/.aws/credentials`, profile `AWS_PROFILE` or `default`).
#[allow(clippy::too_many_arguments)]
fn aws_credentials(
    cx: &mut Ctx<'_>,
    p: &[Seg],
    base: &Path,
    id: &Option<String>,
    inline: Option<String>,
    file: Option<String>,
    env: Option<String>,
) -> Option<AwsCredentials> {
    let explicit_secret = inline.is_some() || file.is_some() || env.is_some();
    if let Some(id) = id {
        let secret = read_secret(cx, p, base, SecretSource { key: "secret_access_key", inline, file, env });
        if secret.is_none() && !explicit_secret {
            cx.err(p, "access_key_id needs secret_access_key (or secret_access_key_file / secret_access_key_env)");
        }
        return secret.map(|s| AwsCredentials { access_key_id: id.trim().to_string(), secret_access_key: s, session_token: None });
    }
    if explicit_secret {
        cx.err(&with(p, &[k("access_key_id")]), "a secret access key needs access_key_id");
        return None;
    }
    let var = |n: &str| std::env::var(n).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    if let (Some(id), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        return Some(AwsCredentials { access_key_id: id, secret_access_key: Secret(secret), session_token: var("AWS_SESSION_TOKEN").map(Secret) });
    }
    let file = var("AWS_SHARED_CREDENTIALS_FILE").map(std::path::PathBuf::from).or_else(|| var("HOME").map(|h| Path::new(&h).join(".aws/credentials")));
    let profile = var("AWS_PROFILE").unwrap_or_else(|| "default".into());
    if let Some(f) = file
        && let Ok(text) = std::fs::read_to_string(&f)
    {
        let section = ini_section(&text, &profile);
        if let (Some(id), Some(secret)) = (section.get("aws_access_key_id"), section.get("aws_secret_access_key")) {
            return Some(AwsCredentials {
                access_key_id: id.clone(),
                secret_access_key: Secret(secret.clone()),
                session_token: section.get("aws_session_token").cloned().map(Secret),
            });
        }
        cx.err(p, format!("no access key for profile \"{profile}\" in {} (aws_access_key_id and aws_secret_access_key)", f.display()));
        return None;
    }
    cx.err(p, "route53 providers need credentials: access_key_id with secret_access_key(_file/_env), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or ~/.aws/credentials");
    None
}

/// The keys of `[profile]` in an AWS credentials file.
fn ini_section(text: &str, profile: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if let Some(h) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let h = h.trim();
            inside = h == profile || h.strip_prefix("profile ").is_some_and(|p| p.trim() == profile);
        } else if inside && let Some((key, v)) = line.split_once('=') {
            out.insert(key.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    out
}

/// One line per provider record for `check-config`: its worst-case client RTO with and without
/// the suspicion TTL, computed as for the built-in server's records.
pub fn client_rto_lines(providers: &[ProviderConfig], services: &[ServiceConfig]) -> Vec<String> {
    use crate::dns::config::{ClientRto, RecordConfig, RecordKind};
    let fmt = |d: Duration| humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string();
    let mut out = Vec::new();
    for pr in providers {
        for r in &pr.records {
            let Some(svc) = services.iter().find(|s| s.name == r.service) else { continue };
            let rec = RecordConfig { name: r.name.clone(), ttl: r.ttl, kind: RecordKind::Failover { service: r.service.clone(), suspect_ttl: r.suspect_ttl } };
            let rto = ClientRto::of(&rec, svc);
            let with = match (rto.with_suspect, r.suspect_ttl) {
                (Some(w), Some(s)) => format!("{} with suspect_ttl {s}s", fmt(w)),
                _ => "suspect_ttl off".to_string(),
            };
            out.push(format!(
                "{} at provider {} ({}, service {}): worst-case client RTO {} with TTL {}s alone, {with} (detection budget {}; add the provider's switch time)",
                r.name,
                pr.name,
                pr.kind.name(),
                r.service,
                fmt(rto.without),
                r.ttl,
                fmt(svc.detection_budget())
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: &str = "[[service]]\nname = \"www\"\n[service.check]\nkind = \"tcp\"\nport = 80\n[[service.target]]\nname = \"a\"\naddress = \"127.0.0.2\"\n[[service.target]]\nname = \"b\"\naddress = \"::1\"\n";

    fn load(text: &str) -> Result<(crate::config::Config, Vec<crate::config::Warning>), Vec<String>> {
        crate::config::from_str(&format!("{SERVICE}{text}"), Path::new("u.toml")).map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
    }

    const BIND: &str = "[[dns.provider]]\nname = \"corp-bind\"\nkind = \"rfc2136\"\nserver = \"127.0.0.1:5300\"\nzone = \"example.test\"\ntsig_key_name = \"understudy\"\ntsig_algorithm = \"hmac-sha512\"\ntsig_secret = \"c2VjcmV0\"\n[[dns.provider.record]]\nname = \"www\"\nservice = \"www\"\nttl = 30\n";

    #[test]
    fn an_rfc2136_provider_needs_no_built_in_server() {
        let (c, w) = load(BIND).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert!(c.dns.is_none(), "providers alone start no DNS server");
        let p = &c.dns_providers[0];
        assert_eq!(p.zone.to_string(), "example.test.");
        assert_eq!(p.records, [ProviderRecord { name: Name::parse_absolute("www.example.test").unwrap(), service: "www".into(), ttl: 30, suspect_ttl: Some(1) }]);
        match &p.kind {
            ProviderKind::Rfc2136 { server, key: Some(key) } => {
                assert_eq!(server.port(), 5300);
                assert_eq!((key.algorithm, key.secret.as_slice()), (tsig::Algorithm::HmacSha512, &b"secret"[..]));
            }
            other => panic!("{other:?}"),
        }
        let lines = client_rto_lines(&c.dns_providers, &c.services);
        assert!(lines[0].starts_with("www.example.test. at provider corp-bind (rfc2136, service www): worst-case client RTO"), "{lines:?}");
    }

    #[test]
    fn mistakes_are_located_and_explained() {
        let e = load(&BIND.replace("service = \"www\"", "service = \"nope\"")).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("u.toml:22:1: dns.provider[0].record[0].service: no service named \"nope\""), "{e:?}");
        let e = load(&BIND.replace("hmac-sha512", "hmac-md5")).unwrap_err();
        assert!(e[0].contains("dns.provider[0].tsig_algorithm: expected hmac-sha256, hmac-sha384 or hmac-sha512"), "{e:?}");
        let e = load(&BIND.replace("kind = \"rfc2136\"", "kind = \"powerdns\"")).unwrap_err();
        assert!(e.iter().any(|m| m.contains("dns.provider[0].server: `server` applies to rfc2136 providers, not to powerdns providers")), "{e:?}");
        let e = load(&BIND.replace("tsig_secret = \"c2VjcmV0\"", "tsig_secret_file = \"missing.key\"")).unwrap_err();
        assert!(e[0].contains("dns.provider[0].tsig_secret_file"), "{e:?}");
        let e = load(&BIND.replace("ttl = 30", "ttll = 30")).unwrap_err();
        assert!(e[0].contains("ttll"), "{e:?}");
        let e = load(&BIND.replace("zone = \"example.test\"", "zone = \"example..test\"")).unwrap_err();
        assert!(e[0].contains("dns.provider[0].zone"), "{e:?}");
        let e = load(&format!("{BIND}[[dns.provider.record]]\nname = \"www.example.test.\"\nservice = \"www\"\n")).unwrap_err();
        assert!(e[0].contains("listed twice"), "{e:?}");
        let e = load("[dns]\nlisten = [\"127.0.0.1:5353\"]\n").unwrap_err();
        assert!(e[0].contains("at least one [[dns.zone]]"), "{e:?}");
    }

    #[test]
    fn http_providers_and_their_defaults() {
        let pdns = "[[dns.provider]]\nname = \"pdns\"\nkind = \"powerdns\"\nurl = \"http://127.0.0.1:8081/\"\napi_key = \"k\"\nzone = \"example.test\"\n[[dns.provider.record]]\nname = \"www\"\nservice = \"www\"\n";
        let cf = "[[dns.provider]]\nname = \"cf\"\nkind = \"cloudflare\"\nzone_id = \"z1\"\napi_token = \"t\"\nzone = \"example.test\"\n[[dns.provider.record]]\nname = \"www\"\nservice = \"www\"\n";
        let r53 = "[[dns.provider]]\nname = \"r53\"\nkind = \"route53\"\nhosted_zone_id = \"/hostedzone/Z1\"\naccess_key_id = \"AKID\"\nsecret_access_key = \"s\"\nzone = \"example.test\"\n[[dns.provider.record]]\nname = \"api\"\nservice = \"www\"\nsuspect_ttl = 5\n";
        let (c, _) = load(&format!("{pdns}{cf}{r53}")).unwrap();
        let p = &c.dns_providers;
        assert!(matches!(&p[0].kind, ProviderKind::PowerDns { url, server_id, .. } if url == "http://127.0.0.1:8081" && server_id == "localhost"));
        assert_eq!((p[0].records[0].ttl, p[0].records[0].suspect_ttl), (30, Some(1)));
        assert!(matches!(&p[1].kind, ProviderKind::Cloudflare { endpoint, .. } if endpoint == DEFAULT_CLOUDFLARE_ENDPOINT));
        assert_eq!((p[1].records[0].ttl, p[1].records[0].suspect_ttl), (60, None), "suspicion is opt-in at Cloudflare");
        assert!(matches!(&p[2].kind, ProviderKind::Route53 { hosted_zone_id, region, .. } if hosted_zone_id == "Z1" && region == "us-east-1"));
        assert_eq!(p[2].records[0].suspect_ttl, Some(5));
        let e = load(&pdns.replace("api_key = \"k\"\n", "")).unwrap_err();
        assert!(e[0].contains("need the API key"), "{e:?}");
        let e = load(&cf.replace("kind = \"cloudflare\"", "kind = \"gandi\"")).unwrap_err();
        assert!(e[0].contains("dns.provider[0].kind: expected one of rfc2136, powerdns, route53, cloudflare"), "{e:?}");
    }

    #[test]
    fn aws_credentials_files() {
        let s = ini_section("[default]\naws_access_key_id = A\n[profile ops]\naws_access_key_id = B\naws_secret_access_key = S\n", "ops");
        assert_eq!((s.get("aws_access_key_id").map(String::as_str), s.get("aws_secret_access_key").map(String::as_str)), (Some("B"), Some("S")));
    }
}
