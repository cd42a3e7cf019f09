//! Drill RTO in DNS mode through a caching resolver, measured end to end in network
//! namespaces (root only): understudy on a monitor host, nginx on a primary and a backup host,
//! unbound on the client host. Each run is `understudy drill www --fault exec` stopping nginx
//! on the primary for real; the observing client resolves through unbound.
//!
//! Run: `cargo bench --bench drill_rto -- [--runs 5]`. Prints, per check profile and TTL, the
//! median (and min/max) detection, switch and client-observed RTO over the runs.

#[path = "../tests/support/mod.rs"]
#[allow(dead_code, unused_imports)]
mod support;

use std::time::Duration;

use support::netns::bed;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn range(v: &[f64]) -> String {
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.0}-{hi:.0}")
}

fn main() {
    let mut runs = 5usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--runs" {
            runs = args.next().and_then(|v| v.parse().ok()).expect("--runs N");
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let profiles = [("default 1s/500ms fall 3", "1s", "500ms"), ("fast 200ms/150ms fall 3", "200ms", "150ms")];
    let mut rows = Vec::new();
    for (name, interval, timeout) in profiles {
        for ttl in [5u32, 1] {
            let dir = tempfile::tempdir().unwrap();
            let result = rt.block_on(async {
                let b = bed(dir.path(), interval, timeout, "2s", ttl).await;
                let stop = format!("kill $(cat {})", b.primary_pidfile.display());
                let resolver = b.resolver.to_string();
                let (mut det, mut sw, mut rto) = (Vec::new(), Vec::new(), Vec::new());
                for i in 0..runs {
                    let out = b
                        .cli(&["drill", "www", "--fault", "exec", "--cmd", &stop, "--restore-cmd", &b.primary_start, "--resolver", &resolver, "--timeout", "120s", "--json"])
                        .await;
                    let r: serde_json::Value = match serde_json::from_slice(&out.stdout) {
                        Ok(r) => r,
                        Err(_) => {
                            eprintln!("run {i}: drill failed: {}", String::from_utf8_lossy(&out.stderr));
                            continue;
                        }
                    };
                    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
                    eprintln!("{name}, TTL {ttl}, run {}: detection {:.0} ms, switch {:.1} ms, client RTO {:.0} ms, ok {}", i + 1, f("detection_ms"), f("switch_ms"), f("client_rto_ms"), r["ok"]);
                    det.push(f("detection_ms"));
                    sw.push(f("switch_ms"));
                    rto.push(f("client_rto_ms"));
                    // Let the cache turn over before the next baseline.
                    tokio::time::sleep(Duration::from_secs(ttl as u64 + 1)).await;
                }
                (det, sw, rto)
            });
            rows.push((name, ttl, result));
        }
    }
    println!("\nDNS-mode drill through unbound, {runs} runs each (median, min-max), fault = nginx stopped on the primary");
    println!("{:<26} {:>4} {:>22} {:>22} {:>22}", "profile", "TTL", "detection ms", "switch ms", "client RTO ms");
    for (name, ttl, (det, sw, rto)) in rows {
        println!(
            "{name:<26} {ttl:>4} {:>22} {:>22} {:>22}",
            format!("{:.0} ({})", median(det.clone()), range(&det)),
            format!("{:.1} ({})", median(sw.clone()), range(&sw)),
            format!("{:.0} ({})", median(rto.clone()), range(&rto)),
        );
    }
}
