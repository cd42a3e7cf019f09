//! A drill report for people: a table for the terminal and Markdown for the data directory
//! (`data_dir/drills/drill-<id>.md`), next to the JSON the API serves.

use std::fmt::Write;

use super::{Report, Summary};
use crate::events::format_time_us;

fn ms(v: Option<f64>) -> String {
    match v {
        Some(ms) if ms >= 10_000.0 => format!("{:.2} s", ms / 1000.0),
        Some(ms) => format!("{ms:.1} ms"),
        None => "-".into(),
    }
}

fn verdict(got: Option<f64>, target: f64) -> &'static str {
    match got {
        Some(v) if v <= target => "met",
        Some(_) => "MISSED",
        None => "not measured",
    }
}

fn yes(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "-",
    }
}

/// Rows: (what, measured, target, verdict).
fn rows(r: &Report) -> Vec<(String, String, String, String)> {
    let t = &r.targets;
    let rto_label = if r.client_rto_ms.is_some() { "RTO (client: last answer from primary -> first from backup)" } else { "RTO (monitor: fault -> switch complete)" };
    vec![
        ("detection (fault -> marked down)".into(), ms(r.detection_ms), ms(Some(t.detection_ms)), verdict(r.detection_ms, t.detection_ms).into()),
        ("switch (marked down -> actuators done)".into(), ms(r.switch_ms), ms(Some(t.switch_ms)), verdict(r.switch_ms, t.switch_ms).into()),
        (rto_label.into(), ms(r.rto_ms()), ms(Some(t.rto_ms)), verdict(r.rto_ms(), t.rto_ms).into()),
        ("monitor RTO (fault -> switch complete)".into(), ms(r.monitor_rto_ms), String::new(), String::new()),
        ("client on the backup (fault -> first answer from it)".into(), ms(r.client_switch_ms), String::new(), String::new()),
        ("client requests failed during the switch".into(), r.client_failed_requests.map(|n| n.to_string()).unwrap_or("-".into()), String::new(), String::new()),
        ("client saw the backup serving".into(), yes(r.backup_verified).into(), String::new(), String::new()),
        ("recovery detection (restore -> marked up)".into(), ms(r.recovery_detection_ms), String::new(), String::new()),
        ("failback hold (marked up -> decision)".into(), ms(r.failback_hold_ms), String::new(), String::new()),
        ("traffic returned by (decision reason)".into(), r.failback_reason.clone().unwrap_or("-".into()), String::new(), String::new()),
        ("failback switch (decision -> actuators done)".into(), ms(r.failback_switch_ms), String::new(), String::new()),
        ("client back on primary (after decision)".into(), ms(r.client_return_ms), String::new(), String::new()),
        ("traffic returned to the primary".into(), yes(r.traffic_returned).into(), String::new(), String::new()),
    ]
}

fn outcome(r: &Report) -> String {
    match (&r.error, r.ok) {
        (Some(e), _) => format!("FAILED: {e}"),
        (None, true) => "PASSED".into(),
        (None, false) => format!("MISSED TARGETS: {}", r.missed.join("; ")),
    }
}

pub fn text(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Drill #{} on {}: fault {} on {} -> {}", r.id, r.service, r.fault, r.target, r.to.as_deref().unwrap_or("-"));
    let _ = writeln!(out, "{}", outcome(r));
    if let Some(u) = &r.observed_url {
        let _ = writeln!(out, "client: {u} ({} requests)", r.client_requests);
    }
    let _ = writeln!(out, "  {:<62} {:>12} {:>12}  ", "MEASURE", "MEASURED", "TARGET");
    for (what, got, target, v) in rows(r) {
        let _ = writeln!(out, "  {what:<62} {got:>12} {target:>12}  {v}");
    }
    out
}

pub fn markdown(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Drill #{}: {} ({})\n", r.id, r.service, outcome(r));
    let _ = writeln!(out, "- fault: `{}` on `{}`; traffic moved to `{}`", r.fault, r.target, r.to.as_deref().unwrap_or("-"));
    let _ = writeln!(out, "- started {}, finished {}", format_time_us(r.started_us), format_time_us(r.finished_us));
    if let Some(u) = &r.observed_url {
        let _ = writeln!(out, "- observing client: `GET {u}` ({} requests)", r.client_requests);
    }
    let _ = writeln!(out, "\n| measure | measured | target | verdict |\n| --- | ---: | ---: | --- |");
    for (what, got, target, v) in rows(r) {
        let _ = writeln!(out, "| {what} | {got} | {target} | {v} |");
    }
    let _ = writeln!(out, "\n## Timeline\n");
    for s in &r.steps {
        let _ = writeln!(out, "- `{}` {}", format_time_us(s.time_us), s.what);
    }
    out
}

pub fn list(items: &[Summary]) -> String {
    if items.is_empty() {
        return "no drills yet (run `understudy drill SERVICE`)\n".into();
    }
    let mut out = String::new();
    let _ = writeln!(out, "{:<6} {:<12} {:<11} {:<20} {:<8} {:>10} {:>10} {:>10}", "ID", "SERVICE", "FAULT", "STARTED", "RESULT", "DETECTION", "SWITCH", "RTO");
    for s in items {
        let result = if s.ok { "passed" } else if s.error.is_some() { "failed" } else { "missed" };
        let _ = writeln!(
            out,
            "{:<6} {:<12} {:<11} {:<20} {result:<8} {:>10} {:>10} {:>10}",
            s.id,
            s.service,
            s.fault,
            s.started.get(..19).unwrap_or(&s.started),
            ms(s.detection_ms),
            ms(s.switch_ms),
            ms(s.rto_ms)
        );
    }
    out
}
