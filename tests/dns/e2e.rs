//! End to end: `understudy run` with the quick-start config plus `[dns]`, real nginx as the
//! primary (127.0.0.2) and the backup (127.0.0.3), and `dig` as the client.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::common::*;
use super::support::require;

const DIG: &str = "/usr/bin/dig";

/// `dig +noall +answer` lines for www.example.test A, whitespace-normalised.
pub(super) async fn dig_www(server: &str, port: u16) -> Vec<String> {
    let out = tokio::process::Command::new(DIG)
        .args([&format!("@{server}"), "-p", &port.to_string(), "+norec", "+time=1", "+tries=1", "+noall", "+answer", "www.example.test", "A"])
        .output()
        .await
        .expect("run dig");
    String::from_utf8_lossy(&out.stdout).lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).filter(|l| !l.is_empty()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_follows_a_failover_and_the_failback() {
    require(DIG, "bind9-dnsutils");
    let (dir, port, mut primary, _backup) = two_nginx().await;

    let dns_ip = "127.0.0.24";
    let dns_port = super::support::free_port(dns_ip);
    let interval_ms = 200;
    let api = api_addr();
    let cfg = two_target_config(&dir.path().join("data"), api, port, interval_ms, "3s", &dns_block(&format!("{dns_ip}:{dns_port}")));
    let d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("www", "primary", Duration::from_secs(5)).await;
    assert_eq!(dig_www(dns_ip, dns_port).await, vec!["www.example.test. 5 IN A 127.0.0.2"]);

    primary.kill();
    let killed = Instant::now();
    // Detection budget (fall x interval + timeout) + 2 s.
    let budget = Duration::from_millis(3 * interval_ms + interval_ms * 3 / 5 + 2000);
    let answer = wait_for(budget, "dig www.example.test to return the backup", || async {
        let a = dig_www(dns_ip, dns_port).await;
        a.iter().any(|l| l.ends_with("127.0.0.3")).then_some(a)
    })
    .await;
    assert_eq!(answer, vec!["www.example.test. 5 IN A 127.0.0.3"], "the backup with TTL 5");
    eprintln!("dig saw the backup {:?} after the primary was killed", killed.elapsed());

    // The API and the CLI show what is served and since when.
    let svc = d.service("www").await;
    let rec = &svc["dns"][0];
    assert_eq!(rec["name"], "www.example.test.", "{svc}");
    assert_eq!(rec["addresses"][0], "127.0.0.3", "{svc}");
    assert_eq!(rec["ttl"], 5);
    assert_eq!(rec["epoch"], svc["epoch"], "{svc}");
    assert!(rec["since"].as_str().is_some_and(|s| s.len() >= 19), "{svc}");
    let status = d.cli(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("dns www.example.test. A -> 127.0.0.3, TTL 5"), "{text}");
    // The actuator's outcome is recorded as an event, with the swap time.
    let events = d.events().await;
    let dns_events: Vec<String> = events.iter().map(|e| e.to_string()).filter(|e| e.contains("\"dns\"")).collect();
    assert!(dns_events.iter().any(|e| e.contains("serving 127.0.0.3")), "{dns_events:#?}");

    primary.start().await;
    let restarted = Instant::now();
    wait_for(Duration::from_secs(3 + 5), "dig www.example.test to return the primary again", || async {
        dig_www(dns_ip, dns_port).await.iter().any(|l| l.ends_with("127.0.0.2")).then_some(())
    })
    .await;
    assert!(restarted.elapsed() >= Duration::from_secs(3), "failback only after the 3 s hold, was {:?}", restarted.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_bind_error_is_fatal_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let ip = "127.0.0.25";
    let taken = std::net::UdpSocket::bind((ip, 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    // The API on the same IP as the taken DNS port, so no other test can hold its port.
    let api = std::net::SocketAddr::new(ip.parse().unwrap(), super::support::free_port(ip));
    let cfg = two_target_config(&dir.path().join("data"), api, 8080, 200, "3s", &dns_block(&format!("{ip}:{port}")));
    let path = dir.path().join("understudy.toml");
    std::fs::write(&path, cfg).unwrap();
    let mut child = Command::new(understudy_bin())
        .args(["run", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("understudy kept running although its DNS port was taken");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains(&format!("cannot listen for DNS on {ip}:{port} (udp)")), "{err}");
    drop(taken);
}
