//! Text rendering for the CLI: tables and timelines for people. `--json` bypasses this.
//! Colour comes from [`Paint`], decided once per command: only on a terminal, never with
//! `NO_COLOR`. Cells are padded before they are painted, so columns line up either way.

use std::fmt::Write;

use crate::api::wire;

/// Whether to colour text, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paint(pub bool);

impl Paint {
    /// For standard output: a terminal, and `NO_COLOR` unset or empty (<https://no-color.org>).
    pub fn stdout() -> Paint {
        use std::io::IsTerminal;
        Paint::wanted(std::io::stdout().is_terminal(), std::env::var_os("NO_COLOR").as_deref())
    }

    pub fn wanted(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> Paint {
        Paint(terminal && no_color.is_none_or(|v| v.is_empty()))
    }

    fn code(self, code: &str, text: &str) -> String {
        if self.0 { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
    }

    pub fn red(self, text: &str) -> String {
        self.code("31", text)
    }

    pub fn green(self, text: &str) -> String {
        self.code("32", text)
    }

    pub fn yellow(self, text: &str) -> String {
        self.code("33", text)
    }

    pub fn bold(self, text: &str) -> String {
        self.code("1", text)
    }
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(ms) if ms >= 10_000.0 => format!("{:.1} s", ms / 1000.0),
        Some(ms) => format!("{ms:.1} ms"),
        None => "-".into(),
    }
}

/// Short local-looking time: keep `HH:MM:SS.mmm` of an RFC 3339 string.
/// A replica's lag for the status table: `1.5 s / 3.2 MiB`, `4000 B` when the seconds are unknown.
fn lag_text(l: &wire::ReplicationLag) -> String {
    let b = l.bytes as f64;
    let bytes = if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{} B", l.bytes)
    };
    match l.seconds {
        Some(s) => format!("{s:.1} s / {bytes}"),
        None => bytes,
    }
}

fn clock(t: &str) -> &str {
    t.get(11..23).unwrap_or(t)
}

pub fn services(list: &[wire::Service], paint: Paint) -> String {
    let mut out = String::new();
    for s in list {
        let active = match (&s.active, s.decided) {
            (_, false) => "(deciding: waiting for first check results)".to_string(),
            (Some(a), true) => format!("{a} ({})", s.active_address.map(|a| a.to_string()).unwrap_or_default()),
            (None, true) => "(none: failing closed)".to_string(),
        };
        let mut flags = Vec::new();
        if s.all_down {
            flags.push(paint.red("ALL DOWN"));
        }
        if let Some(p) = &s.pinned {
            flags.push(paint.yellow(&format!("pinned to {p}")));
        }
        if let Some(i) = s.open_incident {
            flags.push(paint.red(&format!("incident #{i} open")));
        }
        let flags = if flags.is_empty() { String::new() } else { format!("  [{}]", flags.join(", ")) };
        let active = if s.active.is_some() && s.decided { paint.bold(&active) } else { paint.yellow(&active) };
        let _ = writeln!(out, "{}: active {active}, epoch {}{flags}", paint.bold(&s.name), s.epoch);
        let _ = writeln!(
            out,
            "  {} check every {} ms{}, timeout {} ms, fall {}, rise {}; failback {:?} after {} ms",
            s.check.kind,
            s.check.interval_ms,
            match (s.check.fast_interval_ms, s.check.down_interval_ms) {
                (Some(f), Some(d)) => format!(" ({f} ms while health changes, {d} ms while down)"),
                _ => String::new(),
            },
            s.check.timeout_ms,
            s.check.fall,
            s.check.rise,
            s.failback,
            s.failback_hold_ms
        );
        // A LAG column only for services whose checks measure replication lag (databases).
        let lags = s.targets.iter().any(|t| t.last_check.as_ref().is_some_and(|l| l.lag.is_some()));
        let lag_col = |t: &wire::Target| match (lags, t.last_check.as_ref().and_then(|l| l.lag)) {
            (false, _) => String::new(),
            (true, Some(l)) => format!(" {:>18}", lag_text(&l)),
            (true, None) => format!(" {:>18}", "-"),
        };
        let lag_head = if lags { format!(" {:>18}", "LAG") } else { String::new() };
        let _ = writeln!(out, "  {:<2} {:<16} {:<40} {:<8} {:<8} {:>9}{lag_head}  LAST CHECK", "", "TARGET", "ADDRESS / CHECK", "HEALTH", "ROTATION", "LATENCY");
        for t in &s.targets {
            let mark = if t.active { "*" } else { "" };
            let health = format!("{:?}", t.health).to_lowercase();
            let rotation = if t.enabled { "in" } else { "drained" };
            let (lat, mut last) = match &t.last_check {
                Some(l) => {
                    let verdict = if l.ok { "pass" } else if l.checker_error { "CHECKER ERROR (not counted)" } else { "FAIL" };
                    (format!("{:.1} ms", l.latency_ms), format!("{verdict} {}", l.reason))
                }
                None => ("-".into(), "(no result yet)".into()),
            };
            if let (Some(every), Some(cadence)) = (t.check_interval_ms, t.cadence)
                && cadence != crate::health::Cadence::Steady
            {
                let why = if cadence == crate::health::Cadence::Fast { "health changing" } else { "down" };
                last = format!("{last}  [checking every {every} ms: {why}]");
            }
            for d in &t.drift {
                let gate = if d.gate { ", not eligible" } else { "" };
                last = format!("{last}  [drifted: {} {:?} where {} has {:?}{gate}]", d.check, d.found, d.primary, d.expected);
            }
            let addr = format!("{} {}", t.address, t.check);
            let health = format!("{health:<8}");
            let health = if t.healthy { paint.green(&health) } else { paint.red(&health) };
            let rotation = format!("{rotation:<8}");
            let rotation = if t.enabled { rotation } else { paint.yellow(&rotation) };
            let failed = t.last_check.as_ref().is_some_and(|l| !l.ok && !l.checker_error);
            let last = if failed { paint.red(&last) } else { last };
            let mark = paint.green(&format!("{mark:<2}"));
            let lag = lag_col(t);
            let _ = writeln!(out, "  {mark} {:<16} {addr:<40} {health} {rotation} {lat:>9}{lag}  {last}", t.name);
        }
        for r in &s.dns {
            let served = if r.addresses.is_empty() {
                "NODATA (no active target)".to_string()
            } else {
                r.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
            };
            let epoch = r.epoch.map(|e| format!("epoch {e}")).unwrap_or_else(|| "before the first decision".into());
            let _ = writeln!(
                out,
                "  dns {} {} -> {served}, TTL {}{}, {epoch}, serial {}, since {}",
                r.name,
                r.types.join("/"),
                r.ttl,
                if r.suspect { " (suspect_ttl: the target shows trouble)" } else { "" },
                r.serial,
                clock(&r.since)
            );
        }
        for c in &s.canary {
            let seen = match (&c.address, &c.target) {
                (Some(a), Some(t)) => format!("{t} ({a})"),
                (Some(a), None) => format!("{a} (no target)"),
                (None, _) => "(no answer)".to_string(),
            };
            let verdict = match (c.agrees, c.stale) {
                (_, true) => "  [CLIENTS STALE: still on the old target past TTL + margin]",
                (Some(false), false) => "  [not following the decision yet]",
                _ => "",
            };
            let at = c.at.as_deref().map(clock).unwrap_or("-");
            let ok = if c.ok { "ok" } else { "FAIL" };
            let _ = writeln!(out, "  canary {} via {} -> {seen}, {ok} {} at {at}{verdict}", c.name, c.resolver, c.detail);
        }
        out.push('\n');
    }
    out
}

pub fn event(e: &wire::EventRecord) -> String {
    format!("#{:<6} {} {}", e.seq, e.time, e.summary)
}

pub fn incidents(list: &[wire::Incident], paint: Paint) -> String {
    if list.is_empty() {
        return "no incidents\n".into();
    }
    let mut out = String::new();
    let _ = writeln!(out, "{:<5} {:<12} {:<7} {:<24} {:<24} {:>10} {:>10} {:>10}", "ID", "SERVICE", "STATE", "OPENED", "FAILED -> TO", "DETECTION", "SWITCH", "RTO");
    for i in list {
        let state = if i.open { paint.red("open   ") } else { "closed ".to_string() };
        let moved = format!("{} -> {}", i.failed.as_deref().unwrap_or("-"), i.to.as_deref().unwrap_or("(none)"));
        let _ = writeln!(
            out,
            "{:<5} {:<12} {state} {:<24} {moved:<24} {:>10} {:>10} {:>10}",
            i.id,
            i.service,
            i.opened.get(..19).unwrap_or(&i.opened),
            ms(i.detection_ms),
            ms(i.switch_ms),
            ms(i.rto_ms)
        );
    }
    out
}

pub fn incident(i: &wire::Incident, paint: Paint) -> String {
    let mut out = String::new();
    let state = if i.open { paint.red("OPEN") } else { format!("closed by {}", i.closed_by.as_deref().unwrap_or("?")) };
    let _ = writeln!(out, "Incident #{} — {} — {state}", i.id, i.service);
    let _ = writeln!(out, "  failed target : {}", i.failed.as_deref().unwrap_or("-"));
    let _ = writeln!(out, "  traffic moved : {}", i.to.as_deref().unwrap_or("(none: failing closed)"));
    let _ = writeln!(out, "  detection     : {}   (first failed check -> marked down)", ms(i.detection_ms));
    let _ = writeln!(out, "  switch        : {}   (marked down -> actuators applied/verified)", ms(i.switch_ms));
    let _ = writeln!(out, "  RTO           : {}   (first failed check -> traffic moved)", ms(i.rto_ms));
    for c in &i.client {
        let _ = writeln!(
            out,
            "  client RTO    : {}   (canary {} via {}: first failed request -> first good answer from the new target, {} failed)",
            ms(c.client_rto_ms),
            c.canary,
            c.resolver,
            c.failed_requests
        );
    }
    if i.actuator_failures > 0 {
        let _ = writeln!(out, "  actuator failures: {}", i.actuator_failures);
    }
    let _ = writeln!(out, "  timeline:");
    for e in &i.timeline {
        let _ = writeln!(out, "    {}  {}", clock(&e.time), e.what);
    }
    for w in &i.checks {
        let _ = writeln!(out, "  checks of {} that marked it {} ({}):", w.target, w.flip, clock(&w.at));
        for c in &w.results {
            let verdict = if c.ok { paint.green("pass") } else { paint.red("FAIL") };
            let _ = writeln!(out, "    {}  {verdict}  {:>9}  {}", clock(&c.at), format!("{:.1} ms", c.latency_ms), c.reason);
        }
    }
    out
}

/// A table cell: no pipes or newlines.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The post-incident report in Markdown, with an empty root-cause section for people.
pub fn incident_markdown(i: &wire::Incident) -> String {
    let mut out = String::new();
    let failed = i.failed.as_deref().unwrap_or("-");
    let to = i.to.as_deref().unwrap_or("(none: failing closed)");
    let _ = writeln!(out, "# Incident #{}: {} — {failed} failed, traffic moved to {to}\n", i.id, i.service);
    let state = if i.open { "open".to_string() } else { format!("closed by {}", i.closed_by.as_deref().unwrap_or("?")) };
    let _ = writeln!(out, "| | |\n| --- | --- |");
    let _ = writeln!(out, "| Service | {} |", cell(&i.service));
    let _ = writeln!(out, "| State | {state} |");
    let _ = writeln!(out, "| Opened | {} |", i.opened);
    let _ = writeln!(out, "| Closed | {} |", i.closed.as_deref().unwrap_or("-"));
    let _ = writeln!(out, "| Failed target | {} |", cell(failed));
    let _ = writeln!(out, "| Traffic moved to | {} |", cell(to));
    let _ = writeln!(out, "| Decision epoch | {} |", i.epoch);
    let _ = writeln!(out, "| Primary recovered | {} |", i.recovered.as_deref().unwrap_or("-"));
    let _ = writeln!(out, "| Failed back | {} |", i.failed_back.as_deref().unwrap_or("-"));
    let _ = writeln!(out, "| Actuator failures | {} |\n", i.actuator_failures);

    let _ = writeln!(out, "## Measured times\n");
    let _ = writeln!(out, "| measure | value | from → to |\n| --- | ---: | --- |");
    let _ = writeln!(out, "| Detection | {} | first failed check → marked down |", ms(i.detection_ms));
    let _ = writeln!(out, "| Switch | {} | marked down → actuators verified (or applied) |", ms(i.switch_ms));
    let _ = writeln!(out, "| RTO | {} | first failed check → traffic moved |", ms(i.rto_ms));
    for c in &i.client {
        let _ = writeln!(
            out,
            "| Client RTO ({} via {}) | {} | first failed request → first good answer from the new target ({} failed requests; last good answer from the old target {}) |",
            cell(&c.canary),
            cell(&c.resolver),
            ms(c.client_rto_ms),
            c.failed_requests,
            c.last_old_ok.as_deref().unwrap_or("-")
        );
    }
    let _ = writeln!(
        out,
        "\nThe fault began between the last passing check and the first failed one, so detection and RTO \
         undercount by at most one check interval.\n"
    );

    let _ = writeln!(out, "## Timeline\n");
    let _ = writeln!(out, "| time (UTC) | what |\n| --- | --- |");
    for e in &i.timeline {
        let _ = writeln!(out, "| {} | {} |", e.time, cell(&e.what));
    }
    out.push('\n');

    let _ = writeln!(out, "## Check results around the fault\n");
    if i.checks.is_empty() {
        let _ = writeln!(out, "_No check results were recorded with this incident._\n");
    }
    for w in &i.checks {
        let _ = writeln!(out, "### {}: the checks that marked it {} ({})\n", cell(&w.target), w.flip, w.at);
        let _ = writeln!(out, "| started (UTC) | result | latency | reason |\n| --- | --- | ---: | --- |");
        for c in &w.results {
            let verdict = if c.ok { "pass" } else { "**FAIL**" };
            let _ = writeln!(out, "| {} | {verdict} | {:.1} ms | {} |", c.at, c.latency_ms, cell(&c.reason));
        }
        out.push('\n');
    }

    let _ = writeln!(out, "## Root cause\n");
    let _ = writeln!(out, "_To be written by the people who investigated: what failed, why, and why it was not caught earlier._\n");
    let _ = writeln!(out, "## Impact\n");
    let _ = writeln!(out, "_Who noticed what, for how long._\n");
    let _ = writeln!(out, "## Follow-up actions\n");
    let _ = writeln!(out, "- [ ] ");
    out
}

pub fn notify_status(s: &wire::NotifyStatus) -> String {
    if s.channels.is_empty() {
        return "no notification channels configured ([[notify]] in the config file)\n".into();
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<13} {:>7} {:>9} {:>10} {:>8} {:>6}  LAST ERROR",
        "CHANNEL", "KIND", "PENDING", "DELIVERED", "SUPERSEDED", "REJECTED", "FAILED"
    );
    for c in &s.channels {
        let kind = c.kind.clone().unwrap_or_else(|| "(removed)".into());
        let err = match (&c.last_error, &c.last_error_at) {
            (Some(e), Some(at)) => format!("{} {e}", clock(at)),
            (Some(e), None) => e.clone(),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "{:<16} {kind:<13} {:>7} {:>9} {:>10} {:>8} {:>6}  {err}",
            c.name, c.pending, c.delivered, c.superseded, c.rejected, c.failed_attempts
        );
        if let Some(next) = &c.next_attempt
            && c.pending > 0
        {
            let _ = writeln!(out, "{:<16} next attempt at {}", "", clock(next));
        }
    }
    let _ = writeln!(out, "(planned up to event #{})", s.cursor);
    out
}

/// This node's place in its cluster, above `understudy status` (nothing for a single node):
/// who leads, whether this node may decide, and each node's view of targets it sees down.
pub fn cluster(c: &serde_json::Value) -> String {
    if c["kind"] != "etcd" {
        return String::new();
    }
    let node = c["node"].as_str().unwrap_or("?");
    let mut out = match (c["leading"].as_bool(), c["connected"].as_bool(), c["why"].as_str()) {
        (Some(true), _, _) => format!("cluster: {node} leads\n"),
        (_, Some(false), why) => format!("cluster: {node} is CUT OFF ({}); it serves the last committed decisions\n", why.unwrap_or("cut off from etcd")),
        (_, _, why) => format!("cluster: {node} follows ({})\n", why.unwrap_or("another node leads")),
    };
    if let Some(views) = c["views"].as_object() {
        for (n, v) in views {
            let down: Vec<&str> = v.as_object().into_iter().flatten().filter(|(_, h)| *h == "down").map(|(t, _)| t.as_str()).collect();
            let seen = if down.is_empty() { "every target up".to_string() } else { format!("down: {}", down.join(", ")) };
            out.push_str(&format!("  view of {n}: {seen}\n"));
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod paint_tests {
    use super::Paint;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color() {
        assert_eq!(Paint::wanted(true, None), Paint(true));
        assert_eq!(Paint::wanted(false, None), Paint(false), "a pipe or a file gets plain text");
        assert_eq!(Paint::wanted(true, Some(OsStr::new("1"))), Paint(false), "NO_COLOR=1");
        assert_eq!(Paint::wanted(true, Some(OsStr::new(""))), Paint(true), "an empty NO_COLOR does not count (no-color.org)");
        assert_eq!(Paint(false).red("down"), "down");
        assert_eq!(Paint(true).red("down"), "\x1b[31mdown\x1b[0m");
    }
}

#[cfg(test)]
mod lag_tests {
    use super::*;

    #[test]
    fn replication_lag_reads_as_seconds_and_a_size() {
        assert_eq!(lag_text(&wire::ReplicationLag { bytes: 4000, seconds: Some(42.5) }), "42.5 s / 3.9 KiB");
        assert_eq!(lag_text(&wire::ReplicationLag { bytes: 0, seconds: Some(0.0) }), "0.0 s / 0 B");
        assert_eq!(lag_text(&wire::ReplicationLag { bytes: 3 << 20, seconds: None }), "3.0 MiB");
    }
}
