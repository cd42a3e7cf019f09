//! The suspicion TTL through the real binary, its built-in DNS server and `dig`: a failover
//! record is answered with `suspect_ttl` from the active target's first failed check, before the
//! switch; one blip (a check or two lost, no failover) costs `rise` checks of short TTL and then
//! the normal TTL returns; a switch to a healthy backup brings the normal TTL with the new
//! address. Must not rely on sleeps: every wait polls `dig` or the API with a deadline.

use std::time::{Duration, Instant};

use crate::support::*;

const DIG: &str = "/usr/bin/dig";

/// Checks every 1 s, fast re-checks every 500 ms (a wide window between the first failed check
/// and the decision), `fall` failures to mark down, `rise = 2`; DNS TTL 5, suspect_ttl 1 s.
fn config(data: &std::path::Path, api: std::net::SocketAddr, port: u16, fall: u32, dns: &str) -> String {
    format!(
        r#"[daemon]
data_dir = "{data}"
api = "{api}"

[[service]]
name = "www"
failback = "manual"
all_down = "primary"

[service.check]
kind = "http"
port = {port}
path = "/health"
expect_status = [200]
interval = "1s"
fast_interval = "500ms"
timeout = "400ms"
fall = {fall}
rise = 2

[[service.target]]
name = "primary"
address = "127.0.0.2"

[[service.target]]
name = "backup"
address = "127.0.0.3"

[dns]
listen = ["{dns}"]
udp_workers = 1

[[dns.zone]]
name = "example.test"
nameservers = {{ "ns1.example.test" = "127.0.0.1" }}

[[dns.zone.record]]
name = "www"
service = "www"
ttl = 5
suspect_ttl = "1s"
"#,
        data = data.display()
    )
}

/// `(address, ttl)` of each A record `dig` gets for www.example.test.
async fn dig_www(server: &str, port: u16) -> Vec<(String, u32)> {
    let out = tokio::process::Command::new(DIG)
        .args([&format!("@{server}"), "-p", &port.to_string(), "+norec", "+time=1", "+tries=1", "+noall", "+answer", "www.example.test", "A"])
        .output()
        .await
        .expect("run dig (bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && f[3] == "A").then(|| (f[4].to_string(), f[1].parse().unwrap_or(u32::MAX)))
        })
        .collect()
}

async fn suspect_count(d: &Daemon) -> u64 {
    let metrics = http().get(format!("{}/metrics", d.api)).send().await.unwrap().text().await.unwrap();
    metrics
        .lines()
        .find(|l| l.starts_with("understudy_dns_suspect_total{") && l.contains("service=\"www\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A blip: the primary misses a check or two and comes back before `fall`. The answer's TTL
/// drops to 1 s at the first failed check (the API shows it), no failover happens, and once
/// the primary has passed `rise` checks the normal TTL returns; the flip is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blip_shortens_the_ttl_until_rise_passes_without_a_failover() {
    assert!(std::path::Path::new(DIG).exists(), "{DIG} is missing: apt-get install bind9-dnsutils");
    let (dir, port, mut primary, _backup) = two_nginx().await;
    let (dns_ip, api) = ("127.0.0.27", api_addr());
    let dns_port = free_port(dns_ip);
    // fall = 6: at 500 ms per fast re-check, the primary has ~2.5 s to come back.
    let d = Daemon::start(dir.path(), &config(&dir.path().join("data"), api, port, 6, &format!("{dns_ip}:{dns_port}")), api).await;
    d.wait_active("www", "primary", Duration::from_secs(5)).await;
    let healthy = vec![("127.0.0.2".to_string(), 5)];
    wait_for(Duration::from_secs(5), "dig to answer the primary with TTL 5", || async { (dig_www(dns_ip, dns_port).await == healthy).then_some(()) }).await;
    assert_eq!(suspect_count(&d).await, 0, "a healthy service is never suspect");

    primary.kill();
    let killed = Instant::now();
    wait_for(Duration::from_secs(3), "dig to answer the primary with TTL 1 (suspect)", || async {
        (dig_www(dns_ip, dns_port).await == [("127.0.0.2".to_string(), 1)]).then_some(())
    })
    .await;
    let status = d.service("www").await;
    assert_eq!((status["dns"][0]["ttl"].as_u64(), status["dns"][0]["suspect"].as_bool()), (Some(1), Some(true)), "{status}");
    primary.start().await;
    assert!(killed.elapsed() < Duration::from_millis(2500), "the primary came back too late for this test: {:?}", killed.elapsed());

    wait_for(Duration::from_secs(5), "the normal TTL after rise passes", || async { (dig_www(dns_ip, dns_port).await == healthy).then_some(()) }).await;
    assert_eq!(d.active("www").await.as_deref(), Some("primary"), "a blip moved no traffic");
    assert!(d.events().await.iter().all(|e| e["event"]["kind"] != "decision" || e["event"]["reason"] != "failover"), "no failover decision");
    assert_eq!(suspect_count(&d).await, 1, "one blip, one flip to suspect_ttl");
    // Still clear a few checks later: it does not flap back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(dig_www(dns_ip, dns_port).await, healthy);
    assert_eq!(suspect_count(&d).await, 1);
}

/// The primary dies: the answer still names the primary but with TTL 1 before the switch, and
/// the switch to the (healthy) backup brings the normal TTL back with the new address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dying_primary_is_answered_with_the_suspicion_ttl_before_the_switch() {
    assert!(std::path::Path::new(DIG).exists(), "{DIG} is missing: apt-get install bind9-dnsutils");
    let (dir, port, mut primary, _backup) = two_nginx().await;
    let (dns_ip, api) = ("127.0.0.28", api_addr());
    let dns_port = free_port(dns_ip);
    let d = Daemon::start(dir.path(), &config(&dir.path().join("data"), api, port, 3, &format!("{dns_ip}:{dns_port}")), api).await;
    d.wait_active("www", "primary", Duration::from_secs(5)).await;
    wait_for(Duration::from_secs(5), "dig to answer the primary with TTL 5", || async {
        (dig_www(dns_ip, dns_port).await == [("127.0.0.2".to_string(), 5)]).then_some(())
    })
    .await;

    primary.kill();
    // Every answer from the kill to the first backup answer (dig takes a few ms per query; the
    // window between the first failed check and the decision is about 1 s here).
    let mut seen: Vec<(String, u32)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        assert!(Instant::now() < deadline, "no backup answer within 8 s; answers: {seen:?}");
        let a = dig_www(dns_ip, dns_port).await;
        let done = a.iter().any(|(ip, _)| ip == "127.0.0.3");
        seen.extend(a);
        if done {
            break;
        }
    }
    let first_backup = seen.iter().position(|(ip, _)| ip == "127.0.0.3").unwrap();
    assert!(
        seen[..first_backup].iter().any(|a| *a == ("127.0.0.2".to_string(), 1)),
        "the primary was never answered with TTL 1 before the switch: {seen:?}"
    );
    assert!(seen[..first_backup].iter().all(|(ip, ttl)| ip == "127.0.0.2" && (*ttl == 5 || *ttl == 1)), "{seen:?}");
    assert_eq!(seen[first_backup].1, 5, "the healthy backup comes with the normal TTL: {seen:?}");
    assert_eq!(d.active("www").await.as_deref(), Some("backup"));
    let status = d.service("www").await;
    assert_eq!((status["dns"][0]["ttl"].as_u64(), status["dns"][0]["suspect"].as_bool()), (Some(5), Some(false)), "{status}");
}
