//! The probes' config section: `[[service.compare]]` (drift checks, run by `compare.rs`).
//!
//! Raw keys come from `config::raw::RawCompare`; this checks them and builds [`CompareConfig`].
//! It reads no files and starts nothing.

use std::time::Duration;

use crate::config::locate::Seg;
use crate::config::raw::{RawCommand, RawCompare};
use crate::config::validate::{Ctx, k, valid_name, with};

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
