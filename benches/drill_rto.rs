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
//! It must not panic on a failed run, and must stay bounded: every drill has a timeout.

#[path = "../tests/support/mod.rs"]
#[allow(dead_code, unused_imports)]
mod support;

use std::time::Duration;

use support::netns::{bed_with_config, config};

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
            _ => {} // cargo bench passes --bench
        }
    }
    let mut profiles = vec![
        Profile { name: "1s/500ms fall 3, no fast", interval: "1s", timeout: "500ms", fast: Some("1s") },
        Profile { name: "1s/500ms fall 3, fast", interval: "1s", timeout: "500ms", fast: None },
        // What "a quarter of the interval, at least the timeout" would have given.
        Profile { name: "1s/500ms fall 3, fast 500ms", interval: "1s", timeout: "500ms", fast: Some("500ms") },
    ];
    let mut ttls = vec![1u32];
    if all {
        profiles.push(Profile { name: "200ms/150ms fall 3, fast", interval: "200ms", timeout: "150ms", fast: None });
        ttls.push(5);
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
                let mut text = config(dir.path(), p.interval, p.timeout, "2s", ttl);
                if let Some(f) = p.fast {
                    text = text.replace("fall = 3\n", &format!("fall = 3\nfast_interval = \"{f}\"\n"));
                }
                let b = bed_with_config(dir.path(), &text).await;
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
                                "{}, TTL {ttl}, run {i}: detection {:?} ms, switch {:?} ms, client RTO {:?} ms, ok {}",
                                p.name,
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
                            eprintln!("{}, TTL {ttl}, {why}", p.name);
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
    println!("{:<28} {:>4} {:>7} {:>20} {:>20} {:>20}", "profile", "TTL", "ok/all", "detection ms", "switch ms", "client RTO ms");
    for (p, ttl, row) in &rows {
        println!(
            "{:<28} {ttl:>4} {:>7} {:>20} {:>20} {:>20}",
            p.name,
            format!("{}/{runs}", row.det.len()),
            cell(&row.det, 0),
            cell(&row.sw, 1),
            cell(&row.rto, 0),
        );
    }
    let failed: Vec<String> = rows
        .iter()
        .flat_map(|(p, ttl, row)| row.failed.iter().map(move |f| format!("{}, TTL {ttl}, {f}", p.name)))
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
}
