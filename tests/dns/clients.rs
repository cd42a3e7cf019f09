//! Real clients (`dig`, `kdig`) against the in-process server, over UDP and TCP, and a
//! failover driven through the `DnsActuator`.

use std::sync::Arc;

use understudy::actuator::{Actuator, Desired, TargetRef};
use understudy::decision::Reason;

use super::support::*;

const DIG: &str = "/usr/bin/dig";
const KDIG: &str = "/usr/bin/kdig";

fn args(server: std::net::SocketAddr, extra: &[&str]) -> Vec<String> {
    let mut a = vec![format!("@{}", server.ip()), "-p".into(), server.port().to_string(), "+norec".into(), "+time=2".into(), "+tries=1".into()];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// kdig spells the timeout options differently.
fn kargs(server: std::net::SocketAddr, extra: &[&str]) -> Vec<String> {
    let mut a = vec![format!("@{}", server.ip()), "-p".into(), server.port().to_string(), "+norec".into(), "+timeout=2".into(), "+retry=0".into()];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// The answer lines (`name ttl class type data`), whitespace-normalised.
fn answers(out: &str) -> Vec<String> {
    let mut in_answer = false;
    let mut v = Vec::new();
    for line in out.lines() {
        if line.contains("ANSWER SECTION") {
            in_answer = true;
            continue;
        }
        if in_answer {
            if line.trim().is_empty() || line.starts_with(";;") {
                break;
            }
            v.push(line.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_and_kdig_over_udp_and_tcp() {
    require(DIG, "bind9-dnsutils");
    require(KDIG, "knot-dnsutils");
    let dns = start("127.0.0.21", "");
    let server = dns.local_addrs()[0];

    for transport in ["+notcp", "+tcp"] {
        // dig: flags line is ";; flags: qr aa; QUERY: 1, ..."
        let out = run(DIG, &args(server, &[transport, "www.example.test", "A"])).await;
        assert!(out.contains("status: NOERROR"), "{out}");
        assert!(out.contains("flags: qr aa;"), "AA set, RA/RD clear: {out}");
        assert_eq!(answers(&out), vec!["www.example.test. 5 IN A 127.0.0.2"], "{out}");

        let out = run(DIG, &args(server, &[transport, "nope.example.test", "A"])).await;
        assert!(out.contains("status: NXDOMAIN"), "{out}");
        assert!(out.contains("example.test.\t\t60\tIN\tSOA") || out.contains("60\tIN\tSOA\tns1.example.test."), "negative TTL 60: {out}");

        let out = run(DIG, &args(server, &[transport, "www.example.org", "A"])).await;
        assert!(out.contains("status: REFUSED"), "{out}");
        assert!(!out.contains("flags: qr aa"), "no AA outside our zones: {out}");

        // kdig prints ";; Flags: qr aa; QUERY: 1; ..."
        let out = run(KDIG, &kargs(server, &[transport, "WwW.ExAmPlE.TeSt", "A"])).await;
        assert!(out.contains("status: NOERROR"), "{out}");
        assert!(out.contains("Flags: qr aa;"), "{out}");
        assert!(out.contains("127.0.0.2"), "{out}");
        // kdig lowercases the name it sends; dig sends it as typed.
        let out = run(DIG, &args(server, &[transport, "WwW.ExAmPlE.TeSt", "A"])).await;
        assert!(out.contains(";WwW.ExAmPlE.TeSt."), "question echoed as sent: {out}");
        assert!(out.contains("127.0.0.2"), "{out}");

        let out = run(KDIG, &kargs(server, &[transport, "www.example.test", "AAAA"])).await;
        assert!(out.contains("status: NOERROR") && out.contains("ANSWER: 0") && out.contains("SOA"), "NODATA with SOA: {out}");

        let out = run(KDIG, &kargs(server, &[transport, "chain1.example.test", "A"])).await;
        assert_eq!(answers(&out).len(), 3, "two CNAMEs and the A: {out}");
    }

    // Truncation over UDP without EDNS, then the full answer over TCP.
    let out = run(DIG, &args(server, &["+noedns", "+ignore", "big.example.test", "TXT"])).await;
    assert!(out.contains(" tc"), "TC set over UDP: {out}");
    let out = run(DIG, &args(server, &["+tcp", "big.example.test", "TXT"])).await;
    assert_eq!(answers(&out).len(), 12, "{out}");
    // EDNS: our payload size is advertised; unknown versions get BADVERS.
    let out = run(KDIG, &kargs(server, &["+edns", "www.example.test"])).await;
    assert!(out.contains("UDP size: 1232 B"), "{out}");
    let out = run(KDIG, &kargs(server, &["+edns=1", "www.example.test"])).await;
    assert!(out.contains("status: BADVERS"), "{out}");
    // Transfers are refused for clients not in allow_transfer.
    let out = run(DIG, &args(server, &["example.test", "AXFR"])).await;
    assert!(out.contains("Transfer failed") || out.contains("REFUSED"), "{out}");
    dns.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axfr_for_allowed_clients() {
    require(DIG, "bind9-dnsutils");
    let dns = start("127.0.0.22", "\"127.0.0.22\"");
    let server = dns.local_addrs()[0];
    let out = run(DIG, &[format!("@{}", server.ip()), "-p".into(), server.port().to_string(), "-b".into(), "127.0.0.22".into(), "example.test".into(), "AXFR".into()]).await;
    let soas = out.lines().filter(|l| l.contains("\tSOA\t")).count();
    assert_eq!(soas, 2, "SOA first and last: {out}");
    assert!(out.contains("www.example.test.\t5\tIN\tA\t127.0.0.2"), "{out}");
    assert!(out.contains("XFR size: 31 records"), "{out}");
    dns.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_through_the_actuator_changes_the_answer_and_the_serial() {
    require(DIG, "bind9-dnsutils");
    let dns = start("127.0.0.23", "");
    let server = dns.local_addrs()[0];
    let serial_before = dns.status()[0].serial;
    let act = dns.actuator("www").expect("www has failover records");
    assert!(dns.actuator("nope").is_none());

    let desired = |epoch, addr: &str, name: &str| Desired {
        service: Arc::from("www"),
        epoch,
        active: Some(TargetRef { name: name.into(), address: addr.parse().unwrap() }),
        previous: None,
        reason: Reason::Failover,
        all_down: false,
        decided_at: std::time::Instant::now(),
    };
    let d = desired(7, "127.0.0.3", "backup");
    let applied = act.apply(&d).await;
    assert!(applied.ok, "{applied:?}");
    let verified = act.verify(&d).expect("dns verifies").await;
    assert!(verified.ok, "{verified:?}");
    assert!(verified.detail.contains("first answer"), "{verified:?}");

    let out = run(DIG, &args(server, &["www.example.test", "A"])).await;
    assert_eq!(answers(&out), vec!["www.example.test. 5 IN A 127.0.0.3"], "{out}");
    let st = &dns.status()[0];
    assert_eq!((st.epoch, st.addresses.clone(), st.ttl), (Some(7), vec!["127.0.0.3".parse().unwrap()], 5));
    assert!(st.serial != serial_before && st.serial.wrapping_sub(serial_before) < 1 << 31, "serial increased");
    let soa = run(DIG, &args(server, &["+short", "example.test", "SOA"])).await;
    assert!(soa.contains(&st.serial.to_string()), "{soa}");

    // Repeating is idempotent (no new serial); an older epoch is refused.
    let again = act.apply(&d).await;
    assert!(again.ok && again.detail.contains("already serving"), "{again:?}");
    assert_eq!(dns.status()[0].serial, st.serial);
    let stale = act.apply(&desired(6, "127.0.0.2", "primary")).await;
    assert!(!stale.ok && stale.detail.contains("stale"), "{stale:?}");

    // Fail closed: NODATA.
    let mut none = desired(8, "127.0.0.2", "primary");
    none.active = None;
    assert!(act.apply(&none).await.ok);
    assert!(act.verify(&none).unwrap().await.ok);
    let out = run(DIG, &args(server, &["www.example.test", "A"])).await;
    assert!(out.contains("status: NOERROR") && out.contains("ANSWER: 0"), "{out}");
    dns.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_pipelines_queries_and_closes_idle_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cfg = config("127.0.0.26:0", "");
    let mut dns_cfg = dns_config(&cfg);
    dns_cfg.tcp_idle_timeout = std::time::Duration::from_millis(300);
    let dns = understudy::dns::Dns::start(dns_cfg, &services(&cfg), tokio_util::sync::CancellationToken::new()).unwrap();
    let server = dns.local_addrs()[0];
    let mut s = tokio::net::TcpStream::connect(server).await.unwrap();
    // Three queries in one write (RFC 7766 6.2.1.1: pipelining), answered in order.
    let mut batch = Vec::new();
    for (id, name) in [(1u16, "www"), (2, "nope"), (3, "alias")] {
        let q = understudy::dns::client::build_query(id, &understudy::dns::name::Name::parse_absolute(&format!("{name}.example.test")).unwrap(), 1);
        batch.extend_from_slice(&(q.len() as u16).to_be_bytes());
        batch.extend_from_slice(&q);
    }
    s.write_all(&batch).await.unwrap();
    for (id, rcode) in [(1u16, 0u8), (2, 3), (3, 0)] {
        let len = s.read_u16().await.unwrap() as usize;
        let mut m = vec![0u8; len];
        s.read_exact(&mut m).await.unwrap();
        assert_eq!((u16::from_be_bytes([m[0], m[1]]), m[3] & 0x0F), (id, rcode));
    }
    // Idle past the timeout: the server closes the connection.
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await.expect("closed within 5 s").unwrap_or(0);
    assert_eq!(n, 0, "EOF");
    assert!(started.elapsed() >= std::time::Duration::from_millis(250), "{:?}", started.elapsed());
    dns.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_zone_data_and_keeps_what_failover_records_serve() {
    require(DIG, "bind9-dnsutils");
    let cfg = config("127.0.0.27:0", "");
    let dns = understudy::dns::Dns::start(dns_config(&cfg), &services(&cfg), tokio_util::sync::CancellationToken::new()).unwrap();
    let server = dns.local_addrs()[0];
    assert!(dns.apply("www", 3, Some("127.0.0.3".parse().unwrap())).unwrap().changed);
    let serial = dns.status()[0].serial;

    // The same file plus one record: served at once, failover state kept, serial bumped.
    let text = format!(
        "{SERVICES}{}\n[[dns.zone.record]]\nname = \"new\"\ntype = \"TXT\"\nvalue = \"hello\"\n",
        dns_block("127.0.0.27:0", "")
    );
    let (new_cfg, _) = understudy::config::from_str(&text, std::path::Path::new("test.toml")).unwrap();
    let later = dns.reload(dns_config(&new_cfg), &services(&new_cfg));
    assert!(later.is_empty(), "{later:?}");
    let out = run(DIG, &args(server, &["+short", "new.example.test", "TXT"])).await;
    assert_eq!(out.trim(), "\"hello\"");
    let out = run(DIG, &args(server, &["+short", "www.example.test", "A"])).await;
    assert_eq!(out.trim(), "127.0.0.3");
    let st = &dns.status()[0];
    assert_eq!(st.epoch, Some(3));
    assert!(st.serial != serial && st.serial.wrapping_sub(serial) < 1 << 31);

    // Listen addresses need a restart, and the caller is told so.
    let moved = config("127.0.0.28:5399", "");
    let later = dns.reload(dns_config(&moved), &services(&moved));
    assert!(later.iter().any(|l| l.contains("dns.listen")), "{later:?}");
    dns.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_on_ipv6_loopback() {
    require(DIG, "bind9-dnsutils");
    let dns = start("[::1]", "");
    let server = dns.local_addrs()[0];
    assert!(server.is_ipv6());
    for transport in ["+notcp", "+tcp"] {
        let out = run(DIG, &args(server, &[transport, "+short", "v6.example.test", "AAAA"])).await;
        assert_eq!(out.trim(), "2001:db8::2", "{out}");
    }
    // verify() queries the server on its own address, over IPv6 here.
    let act = dns.actuator("v6").unwrap();
    let d = Desired {
        service: Arc::from("v6"),
        epoch: 1,
        active: Some(TargetRef { name: "backup".into(), address: "2001:db8::3".parse().unwrap() }),
        previous: None,
        reason: Reason::Failover,
        all_down: false,
        decided_at: std::time::Instant::now(),
    };
    assert!(act.apply(&d).await.ok);
    let v = act.verify(&d).unwrap().await;
    assert!(v.ok, "{v:?}");
    dns.stop();
}
