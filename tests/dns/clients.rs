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
