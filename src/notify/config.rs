//! `[[notify]]`: notification channels, both layers (the raw struct as written and its
//! validation), kept apart from the rest of the config so the channel kinds can grow here.
//!
//! One raw struct serves every kind, like `[service.check]`, so a key given to the wrong kind
//! gets a precise message (`routing_key` applies to pagerduty channels). Secrets (PagerDuty
//! routing keys, webhook URLs and HMAC secrets, SMTP passwords) are given inline, as
//! `<key>_file` (a file holding the value, relative to the config file) or `<key>_env` (an
//! environment variable), and are read here, so a missing secret is a located config error.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::config::duration::serde_duration;
use crate::config::locate::Seg;
use crate::config::validate::{Ctx, k, resolve, valid_name, with};
use super::notice::{NoticeEvent, Severity};
use super::template::Template;

/// The largest `ca_file` read: a system-wide bundle of every public CA is about 200 KiB.
const MAX_CA_FILE: u64 = 4 * 1024 * 1024;

/// PagerDuty's public Events API v2 endpoint.
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub name: String,
    pub kind: RawNotifyKind,
    pub url: Option<String>,
    pub url_file: Option<String>,
    pub url_env: Option<String>,
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default)]
    pub services: Vec<String>,
    pub min_severity: Option<String>,
    #[serde(default = "default_timeout", with = "serde_duration")]
    pub timeout: Duration,
    #[serde(default = "default_group_window", with = "serde_duration")]
    pub group_window: Duration,
    #[serde(default = "default_rate_limit")]
    pub rate_limit: String,
    #[serde(default = "default_backoff_max", with = "serde_duration")]
    pub backoff_max: Duration,
    // alertmanager
    #[serde(default, with = "serde_duration::option")]
    pub resend: Option<Duration>,
    pub labels: Option<BTreeMap<String, String>>,
    // pagerduty
    pub routing_key: Option<String>,
    pub routing_key_file: Option<String>,
    pub routing_key_env: Option<String>,
    // webhook
    pub secret: Option<String>,
    pub secret_file: Option<String>,
    pub secret_env: Option<String>,
    pub body_template: Option<String>,
    pub content_type: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    // email
    pub host: Option<String>,
    pub port: Option<u16>,
    pub tls: Option<String>,
    pub from: Option<String>,
    pub to: Option<Vec<String>>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<String>,
    pub password_env: Option<String>,
    pub ca_file: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawNotifyKind {
    Alertmanager,
    Pagerduty,
    Slack,
    Webhook,
    Email,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
/// Updates to one incident within this window go out as one message.
fn default_group_window() -> Duration {
    Duration::from_secs(10)
}
fn default_rate_limit() -> String {
    "30/1m".into()
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(300)
}
/// Alertmanager forgets an alert that is not re-sent (its `resolve_timeout` is 5m by default).
fn default_resend() -> Duration {
    Duration::from_secs(60)
}

pub use crate::config::secret::Secret;

#[derive(Debug, Clone, PartialEq)]
pub struct NotifyConfig {
    pub name: String,
    pub kind: NotifyKind,
    /// Empty means every event.
    pub events: Vec<NoticeEvent>,
    /// Empty means every service (and notices about no service, such as a refused config).
    pub services: Vec<String>,
    pub min_severity: Severity,
    /// For one delivery attempt.
    pub timeout: Duration,
    pub group_window: Duration,
    pub rate_limit: RateLimit,
    /// The longest wait between retries.
    pub backoff_max: Duration,
}

/// At most `count` messages per `per`; the excess waits in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NotifyKind {
    Alertmanager { url: String, resend: Duration, labels: BTreeMap<String, String> },
    Pagerduty { url: String, routing_key: Secret },
    Slack { url: Secret },
    Webhook { url: Secret, secret: Option<Secret>, template: Option<Template>, content_type: String, headers: Vec<(String, String)> },
    Email(EmailConfig),
}

impl NotifyKind {
    pub fn name(&self) -> &'static str {
        match self {
            NotifyKind::Alertmanager { .. } => "alertmanager",
            NotifyKind::Pagerduty { .. } => "pagerduty",
            NotifyKind::Slack { .. } => "slack",
            NotifyKind::Webhook { .. } => "webhook",
            NotifyKind::Email(_) => "email",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain SMTP (a relay on localhost).
    None,
    /// Plain connection upgraded with STARTTLS; refused if the server does not offer it.
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EmailConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub from: String,
    pub to: Vec<String>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// Extra trusted CA certificates (PEM) for the server's certificate, besides the system's.
    pub ca_pem: Option<Vec<u8>>,
}

impl NotifyConfig {
    /// Whether this channel wants `n` (its filters).
    pub fn accepts(&self, event: NoticeEvent, service: Option<&str>, severity: Severity) -> bool {
        (self.events.is_empty() || self.events.contains(&event))
            && (self.services.is_empty() || service.is_some_and(|s| self.services.iter().any(|x| x == s)))
            && severity >= self.min_severity
    }
}

pub(crate) use crate::config::secret::{SecretSource, read_secret};

/// `show` says whether the value may appear in the message: a secret URL (Slack, webhook) is
/// described without it, since config errors reach logs, terminals and CI output.
fn check_http_url(cx: &mut Ctx<'_>, path: &[Seg], key: &str, url: &str, show: bool) -> bool {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => true,
        parsed => {
            let msg = if show {
                format!("expected an http:// or https:// URL, got \"{url}\"")
            } else {
                let what = match parsed {
                    Ok(u) if !matches!(u.scheme(), "http" | "https") => format!("its scheme is \"{}\"", u.scheme()),
                    Ok(_) => "it has no host".to_string(),
                    Err(e) => e.to_string(),
                };
                format!("expected an http:// or https:// URL; {what} (the value is secret and not shown)")
            };
            cx.err(&with(path, &[k(key)]), msg);
            false
        }
    }
}

fn parse_rate_limit(s: &str) -> Result<RateLimit, String> {
    let bad = || format!("expected a count per duration such as \"30/1m\" or \"5/10s\", got \"{s}\"");
    let (n, per) = s.split_once('/').ok_or_else(bad)?;
    let count: u32 = n.trim().parse().map_err(|_| bad())?;
    let per = crate::config::parse_duration(per).map_err(|_| bad())?;
    if count == 0 || per.is_zero() {
        return Err(format!("expected at least one message per period above zero, got \"{s}\""));
    }
    Ok(RateLimit { count, per })
}

/// Validate every `[[notify]]`. `services` are the configured service names (a filter naming
/// another one is most likely a typo).
pub(crate) fn validate_all(cx: &mut Ctx<'_>, raw: Vec<RawNotify>, base: &Path, services: &HashSet<String>) -> Vec<NotifyConfig> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for (i, rn) in raw.into_iter().enumerate() {
        let path = vec![k("notify"), Seg::Index(i)];
        if !names.insert(rn.name.clone()) {
            cx.err(&with(&path, &[k("name")]), format!("duplicate notify name \"{}\"; names must be unique", rn.name));
        }
        if let Some(n) = validate_one(cx, rn, &path, base, services) {
            out.push(n);
        }
    }
    out
}

fn validate_one(cx: &mut Ctx<'_>, rn: RawNotify, path: &[Seg], base: &Path, services: &HashSet<String>) -> Option<NotifyConfig> {
    let before = cx.errors_len();
    if !valid_name(&rn.name) {
        cx.err(&with(path, &[k("name")]), format!("expected 1-63 letters, digits, '-', '_' or '.', got \"{}\"", rn.name));
    }
    let kind_name = match rn.kind {
        RawNotifyKind::Alertmanager => "alertmanager",
        RawNotifyKind::Pagerduty => "pagerduty",
        RawNotifyKind::Slack => "slack",
        RawNotifyKind::Webhook => "webhook",
        RawNotifyKind::Email => "email",
    };
    let mut events = Vec::new();
    for (j, e) in rn.events.iter().enumerate() {
        match NoticeEvent::parse(e) {
            Some(ev) => events.push(ev),
            None => {
                let all: Vec<&str> = NoticeEvent::ALL.iter().map(|e| e.as_str()).collect();
                cx.err(&with(path, &[k("events"), Seg::Index(j)]), format!("expected one of {}, got \"{e}\"", all.join(", ")));
            }
        }
    }
    for (j, s) in rn.services.iter().enumerate() {
        if !services.contains(s) {
            cx.err(&with(path, &[k("services"), Seg::Index(j)]), format!("no [[service]] is named \"{s}\""));
        }
    }
    let min_severity = match rn.min_severity.as_deref() {
        None => Severity::Info,
        Some(s) => Severity::parse(s).unwrap_or_else(|| {
            cx.err(&with(path, &[k("min_severity")]), format!("expected \"info\", \"warning\" or \"critical\", got \"{s}\""));
            Severity::Info
        }),
    };
    if rn.timeout.is_zero() {
        cx.err(&with(path, &[k("timeout")]), "expected a timeout above zero");
    }
    if rn.backoff_max < Duration::from_millis(100) {
        cx.err(&with(path, &[k("backoff_max")]), "expected at least 100ms");
    }
    let rate_limit = parse_rate_limit(&rn.rate_limit).unwrap_or_else(|m| {
        cx.err(&with(path, &[k("rate_limit")]), m);
        RateLimit { count: 1, per: Duration::from_secs(1) }
    });

    let only = |cx: &mut Ctx<'_>, present: bool, key: &str, applies: &str| {
        if present {
            cx.err(&with(path, &[k(key)]), format!("`{key}` applies to {applies} channels, not to {kind_name} channels"));
        }
    };
    let am = rn.kind == RawNotifyKind::Alertmanager;
    let pd = rn.kind == RawNotifyKind::Pagerduty;
    let wh = rn.kind == RawNotifyKind::Webhook;
    let em = rn.kind == RawNotifyKind::Email;
    only(cx, !am && rn.resend.is_some(), "resend", "alertmanager");
    only(cx, !am && rn.labels.is_some(), "labels", "alertmanager");
    only(cx, !pd && rn.routing_key.is_some(), "routing_key", "pagerduty");
    only(cx, !pd && rn.routing_key_file.is_some(), "routing_key_file", "pagerduty");
    only(cx, !pd && rn.routing_key_env.is_some(), "routing_key_env", "pagerduty");
    only(cx, !wh && rn.secret.is_some(), "secret", "webhook");
    only(cx, !wh && rn.secret_file.is_some(), "secret_file", "webhook");
    only(cx, !wh && rn.secret_env.is_some(), "secret_env", "webhook");
    only(cx, !wh && rn.body_template.is_some(), "body_template", "webhook");
    only(cx, !wh && rn.content_type.is_some(), "content_type", "webhook");
    only(cx, !wh && rn.headers.is_some(), "headers", "webhook");
    for (key, present) in [
        ("host", rn.host.is_some()),
        ("port", rn.port.is_some()),
        ("tls", rn.tls.is_some()),
        ("from", rn.from.is_some()),
        ("to", rn.to.is_some()),
        ("user", rn.user.is_some()),
        ("password", rn.password.is_some()),
        ("password_file", rn.password_file.is_some()),
        ("password_env", rn.password_env.is_some()),
        ("ca_file", rn.ca_file.is_some()),
    ] {
        only(cx, !em && present, key, "email");
    }
    let has_url = rn.url.is_some() || rn.url_file.is_some() || rn.url_env.is_some();
    if em && has_url {
        let key = if rn.url.is_some() { "url" } else if rn.url_file.is_some() { "url_file" } else { "url_env" };
        cx.err(&with(path, &[k(key)]), "email channels have no URL: set host, port and tls");
    }
    let url = if em { None } else { read_secret(cx, path, base, SecretSource { key: "url", inline: rn.url, file: rn.url_file, env: rn.url_env }) };
    let url = match url {
        // Slack and webhook URLs carry their credential in the URL itself: never echo them.
        Some(u) => check_http_url(cx, path, "url", u.expose(), am || pd).then_some(u),
        None => None,
    };
    let need_url = |cx: &mut Ctx<'_>, url: &Option<Secret>| {
        if url.is_none() && !has_url {
            cx.err(path, format!("{kind_name} channels need `url` (or `url_file` / `url_env`)"));
        }
    };

    let kind = match rn.kind {
        RawNotifyKind::Alertmanager => {
            need_url(cx, &url);
            let resend = rn.resend.unwrap_or_else(default_resend);
            if resend < Duration::from_secs(1) {
                cx.err(&with(path, &[k("resend")]), "expected at least 1s");
            }
            let labels = rn.labels.unwrap_or_default();
            for key in labels.keys() {
                let ok = !key.is_empty()
                    && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !key.starts_with(|c: char| c.is_ascii_digit());
                if !ok {
                    cx.err(&with(path, &[k("labels"), k(key)]), format!("expected a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*), got \"{key}\""));
                }
                if ["alertname", "service", "target", "severity", "incident"].contains(&key.as_str()) {
                    cx.err(&with(path, &[k("labels"), k(key)]), format!("label \"{key}\" is set by understudy"));
                }
            }
            NotifyKind::Alertmanager { url: url.map(|u| u.0).unwrap_or_default(), resend, labels }
        }
        RawNotifyKind::Pagerduty => {
            let routing_key = read_secret(
                cx,
                path,
                base,
                SecretSource { key: "routing_key", inline: rn.routing_key, file: rn.routing_key_file, env: rn.routing_key_env },
            );
            if routing_key.is_none() && cx.errors_len() == before {
                cx.err(path, "pagerduty channels need `routing_key` (or `routing_key_file` / `routing_key_env`)");
            }
            let url = url.map(|u| u.0).unwrap_or_else(|| PAGERDUTY_URL.to_string());
            NotifyKind::Pagerduty { url, routing_key: routing_key.unwrap_or(Secret(String::new())) }
        }
        RawNotifyKind::Slack => {
            need_url(cx, &url);
            NotifyKind::Slack { url: url.unwrap_or(Secret(String::new())) }
        }
        RawNotifyKind::Webhook => {
            need_url(cx, &url);
            let secret =
                read_secret(cx, path, base, SecretSource { key: "secret", inline: rn.secret, file: rn.secret_file, env: rn.secret_env });
            let content_type = rn.content_type.unwrap_or_else(|| "application/json".into());
            let template = match rn.body_template {
                None => None,
                Some(t) => match Template::parse(&t, content_type.contains("json")) {
                    Ok(t) => Some(t),
                    Err(m) => {
                        cx.err(&with(path, &[k("body_template")]), m);
                        None
                    }
                },
            };
            let mut headers = Vec::new();
            for (h, v) in rn.headers.unwrap_or_default() {
                let name_ok = reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_ok();
                let value_ok = reqwest::header::HeaderValue::from_str(&v).is_ok();
                if !name_ok || !value_ok {
                    cx.err(&with(path, &[k("headers"), k(&h)]), "expected a valid HTTP header name and value");
                }
                headers.push((h, v));
            }
            NotifyKind::Webhook { url: url.unwrap_or(Secret(String::new())), secret, template, content_type, headers }
        }
        RawNotifyKind::Email => {
            let tls = match rn.tls.as_deref().unwrap_or("starttls") {
                "none" => SmtpTls::None,
                "starttls" => SmtpTls::Starttls,
                "tls" => SmtpTls::Tls,
                other => {
                    cx.err(&with(path, &[k("tls")]), format!("expected \"none\", \"starttls\" or \"tls\", got \"{other}\""));
                    SmtpTls::Starttls
                }
            };
            let port = rn.port.unwrap_or(match tls {
                SmtpTls::None => 25,
                SmtpTls::Starttls => 587,
                SmtpTls::Tls => 465,
            });
            let host = rn.host.unwrap_or_default();
            if host.trim().is_empty() {
                cx.err(path, "email channels need `host` (the SMTP server)");
            }
            let mailbox_ok = |a: &str| a.parse::<lettre::message::Mailbox>().is_ok();
            let from = rn.from.unwrap_or_default();
            if from.is_empty() {
                cx.err(path, "email channels need `from`");
            } else if !mailbox_ok(&from) {
                cx.err(&with(path, &[k("from")]), format!("expected an address such as \"understudy@example.com\", got \"{from}\""));
            }
            let to = rn.to.unwrap_or_default();
            if to.is_empty() {
                cx.err(path, "email channels need `to` (a list of addresses)");
            }
            for (j, a) in to.iter().enumerate() {
                if !mailbox_ok(a) {
                    cx.err(&with(path, &[k("to"), Seg::Index(j)]), format!("expected an address such as \"oncall@example.com\", got \"{a}\""));
                }
            }
            let password = read_secret(
                cx,
                path,
                base,
                SecretSource { key: "password", inline: rn.password, file: rn.password_file, env: rn.password_env },
            );
            if password.is_some() != rn.user.is_some() {
                cx.err(path, "SMTP authentication needs both `user` and a password (`password`, `password_file` or `password_env`)");
            }
            if password.is_some() && tls == SmtpTls::None {
                cx.err(&with(path, &[k("tls")]), "refusing to send an SMTP password without TLS: use tls = \"starttls\" or \"tls\"");
            }
            let mut ca_pem = None;
            if let Some(f) = &rn.ca_file {
                let p = resolve(base, f);
                let at = with(path, &[k("ca_file")]);
                match crate::config::read_capped(&p, MAX_CA_FILE) {
                    Ok(pem) if lettre::transport::smtp::client::Certificate::from_pem(&pem).is_ok() => ca_pem = Some(pem),
                    Ok(_) => cx.err(&at, format!("{} holds no PEM certificate", p.display())),
                    Err(e) => cx.err(&at, e),
                }
                if tls == SmtpTls::None {
                    cx.err(&at, "`ca_file` needs tls = \"starttls\" or \"tls\"");
                }
            }
            NotifyKind::Email(EmailConfig { host, port, tls, from, to, user: rn.user, password, ca_pem })
        }
    };
    if cx.errors_len() > before {
        return None;
    }
    Some(NotifyConfig {
        name: rn.name,
        kind,
        events,
        services: rn.services,
        min_severity,
        timeout: rn.timeout,
        group_window: rn.group_window,
        rate_limit,
        backoff_max: rn.backoff_max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[[service]]\nname = \"www\"\n[service.check]\nkind = \"tcp\"\nport = 80\n[[service.target]]\nname = \"a\"\naddress = \"127.0.0.2\"\n\n";

    fn load(extra: &str) -> Result<Vec<NotifyConfig>, Vec<String>> {
        let text = format!("{BASE}{extra}");
        crate::config::from_str(&text, Path::new("/etc/understudy/u.toml"))
            .map(|(c, _)| c.notify)
            .map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn the_documented_minimal_channel_works_as_written() {
        let n = load("[[notify]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"http://127.0.0.1:9093\"\n").unwrap();
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].name, "am");
        assert_eq!(n[0].min_severity, Severity::Info);
        assert_eq!(n[0].group_window, Duration::from_secs(10));
        assert_eq!(n[0].rate_limit, RateLimit { count: 30, per: Duration::from_secs(60) });
        match &n[0].kind {
            NotifyKind::Alertmanager { url, resend, .. } => {
                assert_eq!(url, "http://127.0.0.1:9093");
                assert_eq!(*resend, Duration::from_secs(60));
            }
            other => panic!("{other:?}"),
        }
        assert!(n[0].accepts(NoticeEvent::IncidentOpened, Some("www"), Severity::Warning));
    }

    #[test]
    fn every_kind_with_its_keys() {
        // SAFETY: this test is the only one reading this variable.
        unsafe { std::env::set_var("UNDERSTUDY_TEST_PD_KEY", "R0UTING") };
        let n = load(
            r#"[[notify]]
name = "pd"
kind = "pagerduty"
routing_key_env = "UNDERSTUDY_TEST_PD_KEY"
events = ["incident_opened", "incident_closed"]
services = ["www"]
min_severity = "warning"

[[notify]]
name = "chat"
kind = "slack"
url = "https://hooks.slack.example/T/B/x"

[[notify]]
name = "jira"
kind = "webhook"
url = "https://jira.example/rest/api/2/issue"
secret = "s3cret"
body_template = '{"fields": {"summary": {{summary}}, "description": {{text}}}}'
headers = { Authorization = "Basic dXNlcjpwYXNz" }

[[notify]]
name = "mail"
kind = "email"
host = "smtp.example"
tls = "tls"
from = "understudy@example.com"
to = ["oncall@example.com", "Ops <ops@example.com>"]
user = "understudy"
password = "pw"
"#,
        )
        .unwrap();
        match &n[0].kind {
            NotifyKind::Pagerduty { url, routing_key } => {
                assert_eq!(url, PAGERDUTY_URL);
                assert_eq!(routing_key.expose(), "R0UTING");
                assert_eq!(format!("{routing_key:?}"), "Secret(***)");
            }
            other => panic!("{other:?}"),
        }
        assert!(n[0].accepts(NoticeEvent::IncidentOpened, Some("www"), Severity::Critical));
        assert!(!n[0].accepts(NoticeEvent::IncidentUpdated, Some("www"), Severity::Critical));
        assert!(!n[0].accepts(NoticeEvent::IncidentOpened, Some("www"), Severity::Info));
        assert!(!n[0].accepts(NoticeEvent::ConfigRejected, None, Severity::Warning), "a services filter excludes service-less notices");
        assert!(matches!(&n[3].kind, NotifyKind::Email(e) if e.port == 465 && e.to.len() == 2 && e.tls == SmtpTls::Tls));
    }

    #[test]
    fn mistakes_are_located_and_explained() {
        let cases: &[(&str, &str)] = &[
            ("[[notify]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"http://x\"\nresnd = \"1m\"\n", "notify[0].resnd: unknown field `resnd`"),
            ("[[notify]]\nname = \"am\"\nkind = \"alertmanager\"\n", "notify[0]: alertmanager channels need `url`"),
            ("[[notify]]\nname = \"s\"\nkind = \"slack\"\nurl = \"ftp://x\"\n", ":13:1: notify[0].url: expected an http:// or https:// URL"),
            ("[[notify]]\nname = \"s\"\nkind = \"slack\"\nurl = \"http://x\"\nrouting_key = \"k\"\n", "notify[0].routing_key: `routing_key` applies to pagerduty channels, not to slack channels"),
            ("[[notify]]\nname = \"p\"\nkind = \"pagerduty\"\nrouting_key_env = \"UNDERSTUDY_SURELY_UNSET\"\n", "notify[0].routing_key_env: environment variable UNDERSTUDY_SURELY_UNSET is not set"),
            ("[[notify]]\nname = \"p\"\nkind = \"pagerduty\"\nrouting_key_file = \"nope\"\n", "cannot read /etc/understudy/nope"),
            ("[[notify]]\nname = \"p\"\nkind = \"pagerduty\"\nrouting_key = \"a\"\nrouting_key_env = \"B\"\n", "give only one of `routing_key`, `routing_key_file` and `routing_key_env`"),
            ("[[notify]]\nname = \"w\"\nkind = \"webhook\"\nurl = \"http://x\"\nbody_template = '{\"a\": \"{{summary}}\"}'\n", "notify[0].body_template: the template does not render valid JSON"),
            ("[[notify]]\nname = \"w\"\nkind = \"webhook\"\nurl = \"http://x\"\nevents = [\"failover\"]\n", "notify[0].events[0]: expected one of incident_opened, incident_updated"),
            ("[[notify]]\nname = \"w\"\nkind = \"webhook\"\nurl = \"http://x\"\nservices = [\"wwww\"]\n", "notify[0].services[0]: no [[service]] is named \"wwww\""),
            ("[[notify]]\nname = \"w\"\nkind = \"webhook\"\nurl = \"http://x\"\nrate_limit = \"lots\"\n", "notify[0].rate_limit: expected a count per duration"),
            ("[[notify]]\nname = \"m\"\nkind = \"email\"\nhost = \"h\"\nfrom = \"a@b.c\"\nto = [\"x@y.z\"]\ntls = \"none\"\nuser = \"u\"\npassword = \"p\"\n", "refusing to send an SMTP password without TLS"),
            ("[[notify]]\nname = \"m\"\nkind = \"email\"\nurl = \"http://x\"\n", "email channels have no URL"),
            ("[[notify]]\nname = \"a\"\nkind = \"slack\"\nurl = \"http://x\"\n[[notify]]\nname = \"a\"\nkind = \"slack\"\nurl = \"http://x\"\n", "notify[1].name: duplicate notify name \"a\""),
        ];
        for (extra, want) in cases {
            let errors = load(extra).expect_err(extra);
            assert!(errors.iter().any(|e| e.contains(want)), "want {want:?} in {errors:#?}");
        }
    }

    #[test]
    fn a_malformed_secret_url_is_reported_without_its_value() {
        for kind in ["slack", "webhook"] {
            let text = format!("[[notify]]\nname = \"s\"\nkind = \"{kind}\"\nurl = \"hooks.slack.example/T0/B0/XyZsecret42\"\n");
            let errors = load(&text).expect_err(&text);
            let all = errors.join("\n");
            assert!(all.contains("notify[0].url: expected an http:// or https:// URL"), "{all}");
            assert!(!all.contains("XyZsecret42") && !all.contains("hooks.slack.example"), "the secret leaked: {all}");
        }
        // An Alertmanager URL is not a secret: showing it helps.
        let errors = load("[[notify]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"am.example:9093\"\n").unwrap_err();
        assert!(errors.join("\n").contains("am.example:9093"), "{errors:?}");
    }

    #[test]
    fn rate_limits_parse() {
        assert_eq!(parse_rate_limit("30/1m").unwrap(), RateLimit { count: 30, per: Duration::from_secs(60) });
        assert!(parse_rate_limit("30").is_err());
        assert!(parse_rate_limit("0/1m").is_err());
        assert!(parse_rate_limit("x/1m").is_err());
    }
}
