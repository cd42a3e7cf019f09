//! `[drill]` and `[heartbeat]`: what drills must achieve, when they run by themselves, and the
//! dead man's switch that tells someone else the daemon is alive.
//!
//! ```toml
//! [drill.targets]          # defaults shown
//! detection = "30s"
//! switch = "60s"
//! rto = "120s"
//!
//! [[drill.schedule]]       # scheduled drills use the safe force-down fault only
//! service = "www"
//! every = "90d"
//! timeout = "10m"
//! url = "http://www.example.test:8080/health"   # optional observing client
//! resolver = "127.0.0.1:53"                     # optional: a DNS server for the client
//!
//! [heartbeat]
//! url = "https://hc.example.net/ping/3f9c"      # pinged while the daemon is healthy
//! every = "30s"
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::Targets;
use crate::config::duration::serde_duration;
use crate::config::locate::Seg;
use crate::config::validate::{Ctx, k, with};
use crate::config::ServiceConfig;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDrill {
    #[serde(default)]
    pub targets: RawTargets,
    #[serde(default)]
    pub schedule: Vec<RawSchedule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTargets {
    #[serde(default = "default_detection", with = "serde_duration")]
    pub detection: Duration,
    #[serde(default = "default_switch", with = "serde_duration")]
    pub switch: Duration,
    #[serde(default = "default_rto", with = "serde_duration")]
    pub rto: Duration,
}

impl Default for RawTargets {
    fn default() -> Self {
        RawTargets { detection: default_detection(), switch: default_switch(), rto: default_rto() }
    }
}

fn default_detection() -> Duration {
    Duration::from_secs(30)
}
fn default_switch() -> Duration {
    Duration::from_secs(60)
}
fn default_rto() -> Duration {
    Duration::from_secs(120)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    pub service: String,
    #[serde(with = "serde_duration")]
    pub every: Duration,
    #[serde(default = "default_timeout", with = "serde_duration")]
    pub timeout: Duration,
    #[serde(default = "default_fault")]
    pub fault: String,
    pub url: Option<String>,
    pub resolver: Option<String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_fault() -> String {
    "force-down".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeartbeat {
    pub url: String,
    #[serde(default = "default_every", with = "serde_duration")]
    pub every: Duration,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default = "default_hb_timeout", with = "serde_duration")]
    pub timeout: Duration,
}

fn default_every() -> Duration {
    Duration::from_secs(30)
}
fn default_method() -> String {
    "GET".into()
}
fn default_hb_timeout() -> Duration {
    Duration::from_secs(5)
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct DrillConfig {
    pub targets: Targets,
    pub schedules: Vec<Schedule>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub service: String,
    pub every: Duration,
    pub timeout: Duration,
    pub url: Option<reqwest::Url>,
    pub resolver: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatConfig {
    pub url: reqwest::Url,
    pub every: Duration,
    pub method: reqwest::Method,
    pub timeout: Duration,
}

pub(crate) fn validate(cx: &mut Ctx<'_>, raw: RawDrill, services: &[ServiceConfig]) -> DrillConfig {
    let p = [k("drill")];
    let t = raw.targets;
    let targets = Targets { detection_ms: t.detection.as_secs_f64() * 1000.0, switch_ms: t.switch.as_secs_f64() * 1000.0, rto_ms: t.rto.as_secs_f64() * 1000.0 };
    let mut schedules = Vec::new();
    for (i, s) in raw.schedule.into_iter().enumerate() {
        let sp = with(&p, &[k("schedule"), Seg::Index(i)]);
        if !services.iter().any(|x| x.name == s.service) {
            cx.err(&with(&sp, &[k("service")]), format!("no service named \"{}\"", s.service));
        }
        if s.fault != "force-down" {
            cx.err(&with(&sp, &[k("fault")]), format!("scheduled drills use \"force-down\" (no real outage), got \"{}\"", s.fault));
        }
        if s.every < Duration::from_secs(10) {
            cx.err(&with(&sp, &[k("every")]), "expected at least 10s between scheduled drills");
        }
        let url = s.url.as_deref().and_then(|u| match reqwest::Url::parse(u) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => Some(url),
            _ => {
                cx.err(&with(&sp, &[k("url")]), format!("expected an http(s) URL such as \"http://www.example.test/health\", got \"{u}\""));
                None
            }
        });
        let resolver = s.resolver.as_deref().and_then(|r| match r.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                cx.err(&with(&sp, &[k("resolver")]), format!("expected an address and port such as \"127.0.0.1:53\", got \"{r}\""));
                None
            }
        });
        schedules.push(Schedule { service: s.service, every: s.every, timeout: s.timeout, url, resolver });
    }
    DrillConfig { targets, schedules }
}

pub(crate) fn validate_heartbeat(cx: &mut Ctx<'_>, raw: RawHeartbeat) -> Option<HeartbeatConfig> {
    let p = [k("heartbeat")];
    let url = match reqwest::Url::parse(&raw.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
        _ => {
            cx.err(&with(&p, &[k("url")]), format!("expected an http(s) URL, got \"{}\"", raw.url));
            None
        }
    };
    let method = match raw.method.to_ascii_uppercase().as_str() {
        "GET" => Some(reqwest::Method::GET),
        "POST" => Some(reqwest::Method::POST),
        "HEAD" => Some(reqwest::Method::HEAD),
        other => {
            cx.err(&with(&p, &[k("method")]), format!("expected GET, POST or HEAD, got \"{other}\""));
            None
        }
    };
    if raw.every < Duration::from_secs(1) {
        cx.err(&with(&p, &[k("every")]), "expected at least 1s");
    }
    if raw.timeout >= raw.every {
        cx.err(&with(&p, &[k("timeout")]), "must be less than every");
    }
    Some(HeartbeatConfig { url: url?, every: raw.every, method: method?, timeout: raw.timeout })
}
