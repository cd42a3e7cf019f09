//! The client canary (`[[canary]]`, issue 18) through real unbound resolvers, with real incidents
//! (nginx killed, no drill):
//! - on loopback: an honest unbound and a stale-serving one (`cache-min-ttl: 3600`): the incident
//!   records the client RTO seen through the honest one in its timeline; the stale one raises
//!   "clients still on the old target" (an event, a webhook notification, `understudy status`)
//!   and resolves it when the decision comes back to the address it serves;
//! - in namespaces: TTL 5 with the suspicion TTL on a degrading primary, then killed: the
//!   client RTO the canary records is within detection + switch + `suspect_ttl` + one sampling
//!   step (plus the resolver's whole-second clock), and clients reach the backup within
//!   `suspect_ttl` of the switch.
//!
//! Every wait polls with a deadline; every process is stopped by PID.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::notify::Receiver;
use crate::support::netns::{BACKUP, Host, MONITOR, PRIMARY, bed_with_config, config};
use crate::support::*;

const DIG: &str = "/usr/bin/dig";
const UNBOUND: &str = "/usr/sbin/unbound";

/// unbound on loopback with a stub zone `example.test` pointing at understudy's DNS server;
/// killed by PID when dropped.
struct Unbound {
    addr: std::net::SocketAddr,
    child: Child,
}

impl Unbound {
    fn start(dir: &Path, name: &str, ip: &str, dns: std::net::SocketAddr, cache_min_ttl: u32) -> Unbound {
        assert!(Path::new(UNBOUND).exists(), "unbound is not installed: run scripts/install-test-deps.sh (apt-get install unbound)");
        let port = free_port(ip);
        let d: PathBuf = dir.join(format!("unbound-{name}"));
        std::fs::create_dir_all(&d).unwrap();
        let conf = format!(
            "server:\n  interface: {ip}\n  port: {port}\n  do-daemonize: no\n  chroot: \"\"\n  username: \"\"\n  directory: \"{dd}\"\n  pidfile: \"\"\n\
               use-syslog: no\n  logfile: \"\"\n  verbosity: 1\n  num-threads: 1\n  so-reuseport: no\n  outgoing-interface: {ip}\n\
               access-control: 127.0.0.0/8 allow\n  do-not-query-localhost: no\n  module-config: \"iterator\"\n\
               local-zone: \"test.\" nodefault\n  domain-insecure: \"example.test\"\n  qname-minimisation: no\n\
               cache-min-ttl: {cache_min_ttl}\n  serve-expired: no\n  prefetch: no\n  harden-referral-path: no\n\
             stub-zone:\n  name: \"example.test\"\n  stub-addr: {dnsip}@{dnsport}\n",
            dd = d.display(),
            dnsip = dns.ip(),
            dnsport = dns.port()
        );
        std::fs::write(d.join("unbound.conf"), conf).unwrap();
        let log = std::fs::File::create(d.join("unbound.log")).unwrap();
        let child = Command::new(UNBOUND)
            .args(["-d", "-c"])
            .arg(d.join("unbound.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start unbound");
        Unbound { addr: std::net::SocketAddr::new(ip.parse().unwrap(), port), child }
    }

    /// The address it answers for www.example.test now.
    async fn answer(&self) -> Option<String> {
        let out = tokio::process::Command::new(DIG)
            .args([&format!("@{}", self.addr.ip()), "-p", &self.addr.port().to_string(), "+time=1", "+tries=1", "+short", "www.example.test", "A"])
            .output()
            .await
            .ok()?;
        String::from_utf8_lossy(&out.stdout).lines().next().map(|l| l.trim().to_string()).filter(|l| !l.is_empty())
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the PID of a child this test started.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// The canary lane of `resolver` in `GET /api/v1/services/www`.
fn lane<'a>(svc: &'a Value, resolver: &str) -> Option<&'a Value> {
    svc["canary"].as_array()?.iter().find(|l| l["resolver"] == resolver)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_resolver_raises_clients_stale_and_a_real_incident_records_the_client_rto() {
    assert!(Path::new(DIG).exists(), "{DIG} is missing: apt-get install bind9-dnsutils");
    let (dir, port, mut primary, _backup) = two_nginx().await;
    let mut rx = Receiver::new();
    rx.start().await;
    let (dns_ip, api) = ("127.0.0.29", api_addr());
    let dns = std::net::SocketAddr::new(dns_ip.parse().unwrap(), free_port(dns_ip));
    let honest = Unbound::start(dir.path(), "honest", "127.0.0.30", dns, 0);
    let stale = Unbound::start(dir.path(), "stale", "127.0.0.31", dns, 3600);
    let (h, s) = (honest.addr.to_string(), stale.addr.to_string());
    let extra = format!(
        r#"
[dns]
listen = ["{dns}"]
udp_workers = 1

[[dns.zone]]
name = "example.test"
nameservers = {{ "ns1.example.test" = "{dns_ip}" }}

[[dns.zone.record]]
name = "www"
service = "www"
ttl = 2

[[canary]]
service = "www"
url = "http://www.example.test:{port}/health"
resolvers = ["{h}", "{s}"]
interval = "500ms"
margin = "3s"

[[notify]]
name = "hook"
kind = "webhook"
url = "{hook}"
group_window = "100ms"
"#,
        hook = rx.url("/hook")
    );
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "1s", &extra);
    let d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("www", "primary", Duration::from_secs(5)).await;
    // Both resolvers answer the primary, and the canary sees clients there.
    // unbound's first lookups (and a loaded machine) may take longer than the canary's timeout.
    wait_for(Duration::from_secs(20), "the canary to see both resolvers on the primary", || async {
        let svc = d.service("www").await;
        let on_primary = |r: &str| lane(&svc, r).is_some_and(|l| l["target"] == "primary" && l["ok"] == true && l["agrees"] == true);
        (on_primary(&h) && on_primary(&s)).then_some(())
    })
    .await;
    assert_eq!(stale.answer().await.as_deref(), Some("127.0.0.2"));

    primary.kill();
    d.wait_active("www", "backup", Duration::from_secs(5)).await;

    // The honest resolver follows within its TTL of 2 s: the incident gets its client figures.
    let inc = wait_for(Duration::from_secs(15), "the incident's client figures through the honest resolver", || async {
        let list = d.get("/api/v1/incidents").await;
        list.as_array()?.iter().find(|i| i["client"].as_array().is_some_and(|c| c.iter().any(|c| c["resolver"] == h.as_str()))).cloned()
    })
    .await;
    let c = inc["client"].as_array().unwrap().iter().find(|c| c["resolver"] == h.as_str()).unwrap();
    let (client_rto, failed) = (c["client_rto_ms"].as_f64().unwrap(), c["failed_requests"].as_u64().unwrap());
    eprintln!("real incident, honest resolver (TTL 2): client RTO {client_rto} ms, {failed} failed requests; detection {} ms, switch {} ms", inc["detection_ms"], inc["switch_ms"]);
    assert!(failed > 0, "nginx was killed: the client's requests failed until it reached the backup: {inc:#}");
    // Detection at 200 ms checks is well under a second; TTL 2, a 500 ms step, a second of slack.
    let detection = inc["detection_ms"].as_f64().unwrap();
    assert!(client_rto > 0.0 && client_rto <= detection + 2000.0 + 500.0 + 1000.0 + 1000.0, "client RTO {client_rto} ms: {inc:#}");
    let timeline: Vec<&str> = inc["timeline"].as_array().unwrap().iter().map(|e| e["what"].as_str().unwrap()).collect();
    let who = format!("clients (canary www.example.test via {h})");
    for what in [format!("{who}: first failed request"), format!("{who}: first good answer from backup")] {
        assert!(timeline.iter().any(|t| *t == what), "{what:?} not in the timeline: {timeline:#?}");
    }
    assert!(inc["client_rto_ms"].as_f64().is_some(), "{inc:#}");

    // The stale resolver keeps sending clients to the dead primary: past TTL + margin (5 s) it is
    // an event and a notification of its own.
    let hook = rx
        .wait("/hook", "the clients_stale webhook", |v| v["event"] == "clients_stale" && v["status"] == "firing")
        .await
        .json();
    assert!(hook["summary"].as_str().unwrap().contains(&format!("via {s}: clients still on the old target")), "{hook:#}");
    assert_eq!((hook["severity"].as_str(), hook["target"].as_str()), (Some("critical"), Some("primary")), "during an incident, clients on the dead target: {hook:#}");
    let events = d.events().await;
    let stale_events: Vec<&Value> = events.iter().filter(|e| e["event"]["kind"] == "clients_stale").collect();
    let decisions: Vec<&Value> = events.iter().filter(|e| e["event"]["kind"] == "decision").collect();
    assert_eq!(stale_events.len(), 1, "raised once, and only for the stale resolver: {stale_events:#?}\ndecisions: {decisions:#?}\n{}", d.logs());
    assert_eq!(stale_events[0]["event"]["resolver"], s.as_str());
    assert_eq!(stale_events[0]["event"]["expected_target"], "backup");
    let svc = d.service("www").await;
    assert_eq!(lane(&svc, &s).map(|l| l["stale"].clone()), Some(Value::Bool(true)), "{svc:#}");
    let status = d.cli(&["status", "www"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains(&format!("canary www.example.test via {s} -> primary (127.0.0.2)")) && text.contains("CLIENTS STALE"), "{text}");
    let metrics = http().get(format!("{}/metrics", d.api)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("understudy_client_rto_seconds_count{service=\"www\"} ") && !l.ends_with(" 0")), "{metrics}");
    assert!(metrics.lines().any(|l| l.starts_with("understudy_canary_answers_total{") && l.contains("target=\"backup\"") && l.contains("result=\"ok\"")), "{metrics}");

    // Traffic comes back to the primary (the address the stale resolver still serves): resolved.
    primary.start().await;
    d.wait_active("www", "primary", Duration::from_secs(10)).await;
    rx.wait("/hook", "the clients_stale resolution", |v| v["event"] == "clients_stale" && v["status"] == "resolved").await;
    let svc = d.service("www").await;
    assert_eq!(lane(&svc, &s).map(|l| l["stale"].clone()), Some(Value::Bool(false)), "{svc:#}");
}

/// Issue 18's bound through real unbound at TTL 5 with the suspicion TTL, for a real incident:
/// the primary degrades first (every other SYN from the monitor dropped: checks pass only
/// through their hedged attempt, a sign of trouble), so the resolver holds it with `suspect_ttl`
/// (1 s), then nginx on it is killed. The canary on the monitor (every 500 ms, through unbound)
/// records the client RTO in the incident, within detection + switch + 1 s + one step, plus
/// what the client's first failure may precede the first failed check by (interval + timeout)
/// and 1.5 s for unbound's whole-second clock; and its first good answer from the backup comes
/// within 1 s + one step + 1.5 s of the switch (TTL 5 alone allows 5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_suspicion_ttl_the_canary_records_a_client_rto_within_suspect_ttl_of_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    let canary = format!("\n[[canary]]\nservice = \"www\"\nurl = \"http://www.example.test/\"\nresolvers = [\"{}:53\"]\ninterval = \"500ms\"\n", crate::support::netns::CLIENT);
    let text = format!("{}{canary}", config(dir.path(), "1s", "500ms", "5s", 5));
    let b = bed_with_config(dir.path(), &text).await;
    wait_for(Duration::from_secs(10), "the canary to see clients on the primary", || async {
        let st = b.json(&["status", "www", "--json"]).await;
        (st[0]["canary"][0]["target"] == "primary" && st[0]["canary"][0]["agrees"] == true).then_some(())
    })
    .await;

    b.tb.sh(
        Host::Primary,
        &format!(
            "nft add table inet degrade && \
             nft 'add chain inet degrade in {{ type filter hook input priority 0 ; policy accept ; }}' && \
             nft 'add rule inet degrade in ip saddr {MONITOR} tcp flags & (syn | ack) == syn numgen inc mod 2 == 0 counter drop'"
        ),
    );
    // Wait until every copy in the resolver has at most 1 s left: 3 s of answers at TTL <= 1
    // (a copy fetched with TTL 5 would show more for 4 s of its 5).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut short_since: Option<std::time::Instant> = None;
    loop {
        let out = b.tb.sh(Host::Client, &format!("dig @{} -p 53 +time=1 +tries=1 +noall +answer www.example.test A || true", b.resolver.ip()));
        let a: Option<(String, u32)> = out.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && f[3] == "A").then(|| (f[4].to_string(), f[1].parse().unwrap_or(u32::MAX)))
        });
        match &a {
            Some((ip, t)) if ip == PRIMARY && *t <= 1 => {
                if short_since.get_or_insert_with(std::time::Instant::now).elapsed() >= Duration::from_secs(3) {
                    break;
                }
            }
            _ => short_since = None,
        }
        assert!(std::time::Instant::now() < deadline, "the resolver still holds the primary for longer than 1 s: {a:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(b.active().await.as_deref(), Some("primary"), "trouble is no failure");

    // A real outage: nginx on the primary is killed (no drill).
    b.tb.sh(Host::Primary, &format!("kill $(cat {})", b.primary_pidfile.display()));
    let inc = wait_for(Duration::from_secs(30), "the incident's client figures", || async {
        let list = b.json(&["incidents", "--json"]).await;
        list.as_array()?.iter().find(|i| i["client"].as_array().is_some_and(|c| !c.is_empty())).cloned()
    })
    .await;
    b.tb.sh(Host::Primary, "nft delete table inet degrade");
    assert_eq!(inc["to"], "backup", "{inc:#}");
    let c = &inc["client"][0];
    let (detection, switch, rto) = (inc["detection_ms"].as_f64().unwrap(), inc["switch_ms"].as_f64().unwrap(), c["client_rto_ms"].as_f64().unwrap());
    let t = |what: &str| -> u64 {
        inc["timeline"].as_array().unwrap().iter().find(|e| e["what"].as_str().unwrap().contains(what)).unwrap_or_else(|| panic!("{what:?} not in {inc:#}"))["time_us"]
            .as_u64()
            .unwrap()
    };
    let switched_us = t("first failed check of primary") + (inc["rto_ms"].as_f64().unwrap() * 1000.0) as u64;
    let follow_ms = t("first good answer from backup").saturating_sub(switched_us) as f64 / 1000.0;
    eprintln!("TTL 5 + suspect_ttl 1 s, real incident: detection {detection} ms, switch {switch} ms, client RTO {rto} ms, clients on the backup {follow_ms} ms after the switch");
    assert!(c["failed_requests"].as_u64().unwrap() > 0, "{inc:#}");
    assert!(rto <= detection + switch + 1000.0 + 500.0 + 1500.0 + 1500.0, "client RTO {rto} ms: {inc:#}");
    assert!(follow_ms <= 1000.0 + 500.0 + 1500.0, "clients reached the backup {follow_ms} ms after the switch: {inc:#}");
    let answered = b.tb.sh(Host::Client, &format!("dig @{} -p 53 +short www.example.test A", b.resolver.ip()));
    assert_eq!(answered.trim(), BACKUP);
}
