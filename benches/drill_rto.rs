//! Drill RTO in DNS mode through a caching resolver, measured end to end in network
//! namespaces (root only): understudy on a monitor host, nginx on a primary and a backup host,
//! unbound on the client host. Each run is `understudy drill www --fault exec` stopping nginx
//! on the primary for real; the observing client resolves through unbound.
//!
//! Run: `cargo bench --bench drill_rto -- [--runs 3] [--all]`. By default it compares the
//! default check profile (1 s interval, 500 ms timeout, fall 3) with and without the fast
//! cadence (`fast_interval` at its default, a quarter of the interval; `fast_interval =
//! interval`, i.e. none; and `fast_interval` = the timeout), in the same run, at TTL 1 s, where
//! detection is most of what the client sees.
//! `--all` adds TTL 5 s and the 200 ms profile. Prints the median (and min-max) detection, switch
//! and client-observed RTO over the runs that produced all three figures, and lists every run
//! that did not (a failed drill, a figure missing) instead of dropping it silently. Finally, the
//! extra checks per day for a healthy target that the fast cadence costs.
//!
//! `--suspect` (issue 18) runs the suspicion-TTL comparison instead: TTL 5 s, both check
//! profiles, with `suspect_ttl = false` (as before), with the default `suspect_ttl` (1 s) on a
//! plain outage, and with and without it on a *degrading* primary (every other SYN from the
//! monitor dropped on the primary, so every check passes only through its hedged attempt: a sign
//! of trouble, no failure) that then dies; then the query load on understudy's DNS over a quiet minute
//! (`--quiet SECS`, default 60) of a client resolving through unbound every 100 ms, with and
//! without the suspicion TTL, counted by an nftables counter on the monitor.
//! Every other row sets `suspect_ttl = false`, so it measures what it measured before.
//!
//! It must not panic on a failed run, and must stay bounded: every drill has a timeout.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::time::Duration;

use support::netns::{CLIENT, Host, MONITOR, bed_with_config, config};

/// Median of finite values; `None` for an empty list.
fn median(v: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn cell(v: &[f64], decimals: usize) -> String {
    let Some(m) = median(v) else { return "-".into() };
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{m:.decimals$} ({lo:.0}-{hi:.0})")
}

struct Profile {
    name: &'static str,
    interval: &'static str,
    timeout: &'static str,
    /// `fast_interval`, when set (otherwise the default).
    fast: Option<&'static str>,
    /// The suspicion TTL and the fault it is measured on.
    suspect: Suspect,
}

#[derive(Clone, Copy, PartialEq)]
enum Suspect {
    /// `suspect_ttl = false`: the TTL never changes.
    Off,
    /// The default `suspect_ttl` (1 s), the primary simply dies.
    On,
    /// The default `suspect_ttl`, the primary degrades (hedged checks) before it dies.
    Degrading,
    /// `suspect_ttl = false`, the same degrading primary (the control for `Degrading`).
    OffDegrading,
}

impl Suspect {
    fn label(self) -> &'static str {
        match self {
            Suspect::Off => "",
            Suspect::On => ", suspect 1s",
            Suspect::Degrading => ", suspect 1s, degrading",
            Suspect::OffDegrading => ", suspect off, degrading",
        }
    }
}

/// Drop every other SYN from the monitor on the primary: checks pass only through their hedge.
const DEGRADE: &str = "nft add table inet degrade && \
     nft 'add chain inet degrade in { type filter hook input priority 0 ; policy accept ; }' && \
     nft 'add rule inet degrade in ip saddr 198.18.0.2 tcp flags & (syn | ack) == syn numgen inc mod 2 == 0 counter drop'";

/// The daemon's config for a profile at a TTL.
fn text_for(dir: &std::path::Path, p: &Profile, ttl: u32) -> String {
    let mut text = config(dir, p.interval, p.timeout, "2s", ttl);
    if let Some(f) = p.fast {
        text = text.replace("fall = 3\n", &format!("fall = 3\nfast_interval = \"{f}\"\n"));
    }
    if matches!(p.suspect, Suspect::Off | Suspect::OffDegrading) {
        text = text.replace(&format!("ttl = {ttl}\n"), &format!("ttl = {ttl}\nsuspect_ttl = false\n"));
    }
    text
}

/// Queries understudy's DNS receives from the resolver while a client resolves through it every
/// 100 ms for `secs` seconds, nothing failing.
async fn quiet_load(p: &Profile, ttl: u32, secs: u64) -> Result<u64, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let b = bed_with_config(dir.path(), &text_for(dir.path(), p, ttl)).await;
    b.tb.sh(
        Host::Monitor,
        &format!(
            "nft add table inet qcount && nft 'add chain inet qcount in {{ type filter hook input priority 0 ; policy accept ; }}' && \
             nft 'add rule inet qcount in ip saddr {CLIENT} ip daddr {MONITOR} udp dport 53 counter'"
        ),
    );
    let n = secs * 10;
    b.tb.sh(Host::Client, &format!("for i in $(seq 1 {n}); do dig @{} -p 53 +time=1 +tries=1 +short www.example.test A >/dev/null; sleep 0.1; done", b.resolver.ip()));
    let out = b.tb.sh(Host::Monitor, "nft list table inet qcount");
    out.lines()
        .find_map(|l| l.split_once("counter packets ").and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<u64>().ok()))
        .ok_or_else(|| format!("no counter in: {out}"))
}

#[derive(Default)]
struct Row {
    det: Vec<f64>,
    sw: Vec<f64>,
    rto: Vec<f64>,
    /// Runs that gave no complete measurement, with why.
    failed: Vec<String>,
}

fn main() {
    let mut runs = 3usize;
    let mut all = false;
    let mut suspect = false;
    let mut quiet = 60u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => match args.next().and_then(|v| v.parse().ok()) {
                Some(n) => runs = n,
                None => {
                    eprintln!("--runs needs a number");
                    std::process::exit(2);
                }
            },
            "--all" => all = true,
            "--suspect" => suspect = true,
            "--quiet" => match args.next().and_then(|v| v.parse().ok()) {
                Some(n) if n > 0 && n <= 600 => quiet = n,
                _ => {
                    eprintln!("--quiet needs seconds (1-600)");
                    std::process::exit(2);
                }
            },
            _ => {} // cargo bench passes --bench
        }
    }
    let off = Suspect::Off;
    let mut profiles = vec![
        Profile { name: "1s/500ms fall 3, no fast", interval: "1s", timeout: "500ms", fast: Some("1s"), suspect: off },
        Profile { name: "1s/500ms fall 3, fast", interval: "1s", timeout: "500ms", fast: None, suspect: off },
        // What "a quarter of the interval, at least the timeout" would have given.
        Profile { name: "1s/500ms fall 3, fast 500ms", interval: "1s", timeout: "500ms", fast: Some("500ms"), suspect: off },
    ];
    let mut ttls = vec![1u32];
    if all {
        profiles.push(Profile { name: "200ms/150ms fall 3, fast", interval: "200ms", timeout: "150ms", fast: None, suspect: off });
        ttls.push(5);
    }
    if suspect {
        profiles.clear();
        for s in [Suspect::Off, Suspect::On, Suspect::OffDegrading, Suspect::Degrading] {
            profiles.push(Profile { name: "1s/500ms fall 3, fast", interval: "1s", timeout: "500ms", fast: None, suspect: s });
            profiles.push(Profile { name: "200ms/150ms fall 3, fast", interval: "200ms", timeout: "150ms", fast: None, suspect: s });
        }
        ttls = vec![5];
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let mut rows = Vec::new();
    for p in &profiles {
        for &ttl in &ttls {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let row = rt.block_on(async {
                let b = bed_with_config(dir.path(), &text_for(dir.path(), p, ttl)).await;
                if matches!(p.suspect, Suspect::Degrading | Suspect::OffDegrading) {
                    b.tb.sh(Host::Primary, DEGRADE);
                    // Let every cached copy with the normal TTL run out.
                    tokio::time::sleep(Duration::from_secs(ttl as u64 + 1)).await;
                }
                let stop = format!("kill $(cat {})", b.primary_pidfile.display());
                let resolver = b.resolver.to_string();
                let mut row = Row::default();
                for i in 1..=runs {
                    let out = b
                        .cli(&["drill", "www", "--fault", "exec", "--cmd", &stop, "--restore-cmd", &b.primary_start, "--resolver", &resolver, "--timeout", "120s", "--json"])
                        .await;
                    let figures = serde_json::from_slice::<serde_json::Value>(&out.stdout).map_err(|_| {
                        format!("run {i}: drill failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim())
                    });
                    match figures {
                        Ok(r) => {
                            let f = |k: &str| r[k].as_f64();
                            eprintln!(
                                "{}{}, TTL {ttl}, run {i}: detection {:?} ms, switch {:?} ms, client RTO {:?} ms, ok {}",
                                p.name,
                                p.suspect.label(),
                                f("detection_ms"),
                                f("switch_ms"),
                                f("client_rto_ms"),
                                r["ok"]
                            );
                            match (f("detection_ms"), f("switch_ms"), f("client_rto_ms")) {
                                (Some(d), Some(s), Some(c)) => {
                                    row.det.push(d);
                                    row.sw.push(s);
                                    row.rto.push(c);
                                }
                                (d, s, c) => {
                                    let missing: Vec<&str> = [("detection", d), ("switch", s), ("client RTO", c)]
                                        .iter()
                                        .filter(|(_, v)| v.is_none())
                                        .map(|(k, _)| *k)
                                        .collect();
                                    let why = r["error"].as_str().map(|e| format!(": {e}")).unwrap_or_default();
                                    row.failed.push(format!("run {i}: no {} figure{why}", missing.join(", ")));
                                }
                            }
                        }
                        Err(why) => {
                            eprintln!("{}{}, TTL {ttl}, {why}", p.name, p.suspect.label());
                            row.failed.push(why);
                        }
                    }
                    // Let the cache turn over before the next baseline.
                    tokio::time::sleep(Duration::from_secs(ttl as u64 + 1)).await;
                }
                row
            });
            rows.push((p, ttl, row));
        }
    }
    println!("\nDNS-mode drill through unbound, {runs} runs each (median, min-max), fault = nginx stopped on the primary");
    println!("{:<50} {:>4} {:>7} {:>20} {:>20} {:>20}", "profile", "TTL", "ok/all", "detection ms", "switch ms", "client RTO ms");
    for (p, ttl, row) in &rows {
        println!(
            "{:<50} {ttl:>4} {:>7} {:>20} {:>20} {:>20}",
            format!("{}{}", p.name, p.suspect.label()),
            format!("{}/{runs}", row.det.len()),
            cell(&row.det, 0),
            cell(&row.sw, 1),
            cell(&row.rto, 0),
        );
    }
    let failed: Vec<String> = rows
        .iter()
        .flat_map(|(p, ttl, row)| row.failed.iter().map(move |f| format!("{}{}, TTL {ttl}, {f}", p.name, p.suspect.label())))
        .collect();
    if failed.is_empty() {
        println!("failed runs: none");
    } else {
        println!("failed runs ({}):", failed.len());
        for f in &failed {
            println!("  {f}");
        }
    }
    // The fast cadence starts only after a failed check (health::HealthState::cadence), so a
    // target that never fails is checked exactly once per interval: zero extra checks, which
    // probe::scheduler::tests::a_healthy_target_gets_no_extra_checks_in_a_day counts over a
    // simulated day.
    println!("extra checks per day for a healthy target with the fast cadence: 0 (86,400 checks at 1 s, as without it)");
    if suspect {
        println!("\nQuery load on understudy's DNS over a quiet {quiet} s (client resolving through unbound every 100 ms, TTL 5):");
        for s in [Suspect::Off, Suspect::On] {
            let p = Profile { name: "1s/500ms fall 3, fast", interval: "1s", timeout: "500ms", fast: None, suspect: s };
            match rt.block_on(quiet_load(&p, 5, quiet)) {
                Ok(n) => println!("  suspect_ttl {}: {n} queries", if s == Suspect::Off { "off" } else { "1s" }),
                Err(e) => println!("  suspect_ttl {}: failed: {e}", if s == Suspect::Off { "off" } else { "1s" }),
            }
        }
    }
}
