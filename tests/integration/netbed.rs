//! End to end in network namespaces (tests/support/netns.rs): a client behind a caching
//! resolver (unbound), understudy on a monitor host serving DNS, nginx on a primary and a
//! backup host. Addresses from 198.18.0.0/24 only; no route out. Needs root.

use std::time::{Duration, Instant};

use crate::support::netns::{API, Host, MONITOR, PRIMARY, bed};
use crate::support::wait_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_mode_drill_with_a_real_outage_through_a_caching_resolver() {
    let dir = tempfile::tempdir().unwrap();
    let ttl = 5;
    let b = bed(dir.path(), "1s", "500ms", "5s", ttl).await;
    // The resolver answers with the primary (and caches it for the TTL).
    let dig = b.tb.sh(Host::Client, &format!("dig @{} -p 53 +short www.example.test A", b.resolver.ip()));
    assert_eq!(dig.trim(), PRIMARY);

    let stop = format!("kill $(cat {})", b.primary_pidfile.display());
    let resolver = b.resolver.to_string();
    let out = b
        .cli(&["drill", "www", "--fault", "exec", "--cmd", &stop, "--restore-cmd", &b.primary_start, "--resolver", &resolver, "--timeout", "120s", "--json"])
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "drill failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(r["ok"], true, "{r:#}");
    let detection = r["detection_ms"].as_f64().unwrap();
    let rto = r["client_rto_ms"].as_f64().unwrap();
    eprintln!("detection {detection} ms, switch {} ms, client RTO {rto} ms", r["switch_ms"]);
    // The bound: detection + TTL + 2 s.
    assert!(rto < detection + (ttl as f64 * 1000.0) + 2000.0, "{r:#}");
    assert!(r["client_failed_requests"].as_u64().unwrap() > 0, "a real outage fails requests until the switch: {r:#}");
    assert_eq!(r["backup_verified"], true);
    assert_eq!(r["traffic_returned"], true);
    assert!(r["switch_ms"].as_f64().unwrap() < 1000.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_percent_loss_for_a_minute_never_fails_over_but_total_loss_does() {
    let dir = tempfile::tempdir().unwrap();
    let b = bed(dir.path(), "1s", "500ms", "5s", 5).await;
    b.tb.loss(Host::Primary, 5);
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        assert_eq!(b.active().await.as_deref(), Some("primary"), "a false failover at 5% loss: {:?}", b.decisions().await);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(b.decisions().await, ["initial"], "no decision but the first in 60 s of 5% loss");
    let metrics = b.tb.sh(Host::Client, &format!("curl -s {API}/metrics | grep '^understudy_checks_total' || true"));
    eprintln!("after 60 s at 5% loss on the primary (both targets' checks):\n{metrics}");
    // The loss really happened: a rule that matched nothing would pass the loop above too.
    // 60 checks a minute of a few packets each, and unbound and the client's traffic: at 5 %,
    // well over 3 dropped packets are expected; 0 means the rule never matched.
    let dropped = b.tb.dropped(Host::Primary);
    eprintln!("packets dropped on the primary's link in 60 s at 5% loss: {dropped}");
    assert!(dropped >= 3, "the 5% loss rule dropped {dropped} packets in 60 s: it does not match the primary's traffic");

    b.tb.loss(Host::Primary, 100);
    let lost = Instant::now();
    // Detection budget at defaults: 3 x 1 s + 500 ms, plus 1 s.
    wait_for(Duration::from_millis(4500), "failover under total loss", || async { (b.active().await.as_deref() == Some("backup")).then_some(()) }).await;
    eprintln!("failover {:?} after total loss began", lost.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_primary_moves_traffic_at_most_once_each_way_per_hold() {
    let dir = tempfile::tempdir().unwrap();
    // Fast checks, so each 2 s outage is detected; a 5 s hold, longer than any 2 s up-period.
    let b = bed(dir.path(), "200ms", "150ms", "5s", 1).await;
    for _ in 0..15 {
        b.tb.loss(Host::Primary, 100);
        tokio::time::sleep(Duration::from_secs(2)).await;
        b.tb.loss(Host::Primary, 0);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let during = b.decisions().await;
    assert_eq!(during, ["initial", "failover"], "60 s of flapping: one failover, no failback while the primary never holds 5 s");
    // Stable again: one failback after the hold.
    wait_for(Duration::from_secs(10), "failback after the flapping stops", || async { (b.active().await.as_deref() == Some("primary")).then_some(()) }).await;
    assert_eq!(b.decisions().await, ["initial", "failover", "failback"]);
}

/// `--fault block` drops the monitor's traffic to the primary's check port with nftables, on
/// the monitor host, and removes the rule afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_drill_on_the_monitor_host_leaves_no_rule_behind() {
    let dir = tempfile::tempdir().unwrap();
    let b = bed(dir.path(), "200ms", "150ms", "1s", 1).await;
    let out = b
        .tb
        .tokio_command(Host::Monitor, crate::support::understudy_bin())
        .args(["drill", "www", "--fault", "block", "--no-client", "--timeout", "60s", "--json"])
        .args(["--api", API, "--token-file", b.token.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(r["fault"], "block");
    assert_eq!(r["to"], "backup");
    assert!(r["steps"].to_string().contains("removed nftables table understudy_drill_"), "{r:#}");
    let tables = b.tb.sh(Host::Monitor, "nft list tables");
    assert!(!tables.contains("understudy_drill"), "rule left behind: {tables}");
    wait_for(Duration::from_secs(5), "primary active again", || async { (b.active().await.as_deref() == Some("primary")).then_some(()) }).await;
}

/// The resolver's cached answer for www.example.test A: `(address, remaining TTL)`.
fn resolver_answer(b: &crate::support::netns::Bed) -> Option<(String, u32)> {
    let out = b.tb.sh(Host::Client, &format!("dig @{} -p 53 +time=1 +tries=1 +noall +answer www.example.test A", b.resolver.ip()));
    out.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() == 5 && f[3] == "A").then(|| Some((f[4].to_string(), f[1].parse().ok()?))).flatten()
    })
}

/// Issue 18: a degrading primary (every other connection from the monitor loses its SYN, so
/// every check passes only thanks to its hedged attempt: a sign of trouble, never a failure)
/// is answered with the suspicion TTL, so the caching resolver soon holds it for at most 1 s
/// instead of the TTL of 5 s. When it then dies (a real outage through a drill), clients follow
/// the switch within detection + switch + suspect_ttl + one sampling step + a margin for the
/// resolver's whole-second clock, where TTL 5 alone allows up to detection + switch + 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_degrading_primary_is_served_with_the_suspicion_ttl_so_clients_follow_within_it() {
    let dir = tempfile::tempdir().unwrap();
    let ttl = 5;
    let b = bed(dir.path(), "1s", "500ms", "5s", ttl).await;
    let (ip, t) = resolver_answer(&b).expect("the resolver answers");
    assert_eq!(ip, PRIMARY);
    assert!(t > 1, "a healthy primary is served with its TTL through the resolver: {t}");

    b.tb.sh(
        Host::Primary,
        &format!(
            "nft add table inet degrade && \
             nft 'add chain inet degrade in {{ type filter hook input priority 0 ; policy accept ; }}' && \
             nft 'add rule inet degrade in ip saddr {MONITOR} tcp flags & (syn | ack) == syn numgen inc mod 2 == 0 counter drop'"
        ),
    );
    // The resolver's copy ages out (at most 5 s) and comes back with the suspicion TTL: from
    // then on every answer has at most 1 s left (a copy fetched with TTL 5 would show more than
    // 1 s for 4 s of its 5, so 3 s of answers at 1 s or less rule it out).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut short_since: Option<Instant> = None;
    loop {
        let a = resolver_answer(&b);
        match &a {
            Some((ip, t)) if ip == PRIMARY && *t <= 1 => {
                if short_since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_secs(3) {
                    break;
                }
            }
            _ => short_since = None,
        }
        assert!(Instant::now() < deadline, "the resolver still holds the primary for longer than 1 s: {a:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = b.json(&["status", "www", "--json"]).await;
    assert_eq!((status[0]["dns"][0]["ttl"].as_u64(), status[0]["dns"][0]["suspect"].as_bool()), (Some(1), Some(true)), "{status:#}");
    assert_eq!(b.active().await.as_deref(), Some("primary"), "trouble is no failure");

    let stop = format!("kill $(cat {})", b.primary_pidfile.display());
    let resolver = b.resolver.to_string();
    let out = b
        .cli(&["drill", "www", "--fault", "exec", "--cmd", &stop, "--restore-cmd", &b.primary_start, "--resolver", &resolver, "--timeout", "120s", "--json"])
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "drill failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(r["ok"], true, "{r:#}");
    let (detection, switch, rto) = (r["detection_ms"].as_f64().unwrap(), r["switch_ms"].as_f64().unwrap(), r["client_rto_ms"].as_f64().unwrap());
    eprintln!("suspicion TTL: detection {detection} ms, switch {switch} ms, client RTO {rto} ms");
    // suspect_ttl 1 s, the observer's 50 ms step, 1.5 s for unbound's whole-second expiry.
    assert!(rto <= detection + switch + 1000.0 + 50.0 + 1500.0, "client RTO {rto} ms: {r:#}");
    b.tb.sh(Host::Primary, "nft delete table inet degrade");
}
