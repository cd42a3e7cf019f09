//! DNS providers (issue 12) through the real binary, against real peers started here on
//! loopback: BIND 9 (`named`) and Knot (`knotd`) taking RFC 2136 UPDATEs signed with TSIG,
//! PowerDNS Authoritative (sqlite3 backend) through its HTTP API, moto in server mode standing
//! in for the Route 53 API, and a small local receiver standing in for Cloudflare's v4 DNS
//! records API (it implements the documented list/patch/create/delete request and response
//! shapes, nothing more). Every peer is stopped by PID when its guard drops.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;

use crate::support::*;

const NAMED: &str = "/usr/sbin/named";
const KNOTD: &str = "/usr/sbin/knotd";
const DIG: &str = "/usr/bin/dig";
const NSUPDATE: &str = "/usr/bin/nsupdate";

fn require(path: &str, package: &str) {
    assert!(Path::new(path).exists(), "{path} is missing: run scripts/install-test-deps.sh (apt-get install {package})");
}

/// A fresh random TSIG secret, base64.
fn secret() -> String {
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
}

const ZONE: &str = "$TTL 300\n@ IN SOA ns1.example.test. hostmaster.example.test. 1 3600 600 604800 60\n@ IN NS ns1.example.test.\nns1 IN A 127.0.0.1\nwww 30 IN A 127.0.0.9\n";

/// A DNS server started by a test, killed by PID when dropped.
struct Peer {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for Peer {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a PID we started.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Wait until `addr` answers the zone's SOA (dig, UDP).
async fn wait_serving(addr: SocketAddr, what: &str) {
    wait_for(Duration::from_secs(20), &format!("{what} answering on {addr}"), || async move {
        let out = dig(addr, "example.test", "SOA");
        out.contains("hostmaster").then_some(())
    })
    .await;
}

fn dig(addr: SocketAddr, name: &str, t: &str) -> String {
    let out = Command::new(DIG)
        .args(["+short", "+time=1", "+tries=1", "-p", &addr.port().to_string(), &format!("@{}", addr.ip()), name, t])
        .output()
        .expect("run dig");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What `addr` answers for www.example.test, A and AAAA together.
fn www(addr: SocketAddr) -> String {
    let a = dig(addr, "www.example.test", "A");
    let aaaa = dig(addr, "www.example.test", "AAAA");
    [a, aaaa].iter().filter(|s| !s.is_empty()).cloned().collect::<Vec<_>>().join(",")
}

/// BIND 9 as the zone's primary with `update-policy` granting key `understudy` (a key file as
/// `tsig-keygen` writes it, returned for understudy to read).
async fn bind(dir: &Path, secret: &str) -> (Peer, PathBuf) {
    require(NAMED, "bind9");
    let dir = dir.join("bind");
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port("127.0.0.1");
    let d = dir.display();
    std::fs::write(dir.join("example.test.zone"), ZONE).unwrap();
    let key_file = dir.join("understudy.key");
    std::fs::write(&key_file, format!("key \"understudy\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{secret}\";\n}};\n")).unwrap();
    let conf = format!(
        "options {{\n  directory \"{d}\";\n  listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  pid-file \"{d}/named.pid\";\n  \
         session-keyfile \"{d}/session.key\";\n  managed-keys-directory \"{d}\";\n  recursion no;\n  dnssec-validation no;\n  notify no;\n}};\n\
         controls {{ }};\ninclude \"{}\";\n\
         zone \"example.test\" {{ type primary; file \"{d}/example.test.zone\"; update-policy {{ grant understudy zonesub ANY; }}; }};\n",
        key_file.display()
    );
    std::fs::write(dir.join("named.conf"), conf).unwrap();
    let log = std::fs::File::create(dir.join("named.log")).unwrap();
    let child = Command::new(NAMED).args(["-g", "-n", "1", "-c"]).arg(dir.join("named.conf")).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("start named");
    let peer = Peer { child, addr: format!("127.0.0.1:{port}").parse().unwrap(), dir };
    wait_serving(peer.addr, "named").await;
    (peer, key_file)
}

/// Knot as the zone's primary with an `update` ACL for key `understudy`.
async fn knot(dir: &Path, secret: &str) -> Peer {
    require(KNOTD, "knot");
    let dir = dir.join("knot");
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port("127.0.0.1");
    let d = dir.display();
    std::fs::write(dir.join("example.test.zone"), ZONE).unwrap();
    let conf = format!(
        "server:\n    listen: 127.0.0.1@{port}\n    rundir: {d}\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n\
         key:\n  - id: understudy\n    algorithm: hmac-sha256\n    secret: {secret}\n\
         acl:\n  - id: update_acl\n    key: understudy\n    action: update\n\
         database:\n    storage: {d}\n\
         log:\n  - target: stderr\n    any: info\n\
         zone:\n  - domain: example.test\n    file: {d}/example.test.zone\n    zonefile-sync: -1\n    acl: update_acl\n"
    );
    std::fs::write(dir.join("knot.conf"), conf).unwrap();
    let log = std::fs::File::create(dir.join("knot.log")).unwrap();
    let child = Command::new(KNOTD).arg("-c").arg(dir.join("knot.conf")).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("start knotd");
    let peer = Peer { child, addr: format!("127.0.0.1:{port}").parse().unwrap(), dir };
    wait_serving(peer.addr, "knotd").await;
    peer
}

/// A `[[dns.provider]]` of kind rfc2136 for `www` at `server`, checked at `server` itself.
fn rfc2136_block(name: &str, server: SocketAddr, key_name: &str, secret_line: &str, extra: &str) -> String {
    format!(
        "\n[[dns.provider]]\nname = \"{name}\"\nkind = \"rfc2136\"\nserver = \"{server}\"\nzone = \"example.test\"\ntsig_key_name = \"{key_name}\"\n\
         tsig_algorithm = \"hmac-sha256\"\n{secret_line}\nverify_servers = [\"{server}\"]\ntimeout = \"2s\"\n{extra}\n\
         [[dns.provider.record]]\nname = \"www\"\nservice = \"www\"\nttl = 30\n"
    )
}

/// `nsupdate -y` changing www behind understudy's back.
fn nsupdate(server: SocketAddr, secret: &str, address: &str) {
    let script = format!(
        "server {} {}\nzone example.test\nupdate delete www.example.test A\nupdate delete www.example.test AAAA\nupdate add www.example.test 30 A {address}\nsend\n",
        server.ip(),
        server.port()
    );
    let mut child = Command::new(NSUPDATE)
        .args(["-y", &format!("hmac-sha256:understudy:{secret}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nsupdate");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "nsupdate failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The `actuated` events of `actuator`: (epoch, ok, detail).
fn actuated(events: &[serde_json::Value], actuator: &str) -> Vec<(u64, bool, String)> {
    events
        .iter()
        .filter(|e| e["event"]["kind"] == "actuated" && e["event"]["actuator"] == actuator)
        .map(|e| (e["event"]["epoch"].as_u64().unwrap(), e["event"]["ok"].as_bool().unwrap(), e["event"]["detail"].as_str().unwrap().to_string()))
        .collect()
}

async fn wait_www(addr: SocketAddr, want: &str, what: &str) {
    let w = want.to_string();
    wait_for(Duration::from_secs(20), &format!("{what} ({addr}) serving www as {want}"), || {
        let w = w.clone();
        async move { (www(addr) == w).then_some(()) }
    })
    .await;
}

/// RFC 2136 + TSIG against real BIND and real Knot: the first decision writes the primary's
/// address (the zone starts with 127.0.0.9), a failover writes the backup's, each change is
/// an event carrying the server's answer, and each server is checked by querying it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc2136_failover_changes_the_record_on_bind_and_knot() {
    let (dir, port, mut primary, _backup) = two_nginx().await;
    let s = secret();
    let (bind, key_file) = bind(dir.path(), &s).await;
    let knot = knot(dir.path(), &s).await;
    let extra = format!(
        "{}{}",
        rfc2136_block("corp-bind", bind.addr, "understudy", &format!("tsig_secret_file = \"{}\"", key_file.display()), ""),
        rfc2136_block("corp-knot", knot.addr, "understudy", &format!("tsig_secret = \"{s}\""), "")
    );
    let api = api_addr();
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "1h", &extra);
    let d = Daemon::start(dir.path(), &cfg, api).await;
    wait_www(bind.addr, "127.0.0.2", "BIND").await;
    wait_www(knot.addr, "127.0.0.2", "Knot").await;

    primary.kill();
    d.wait_active("www", "backup", Duration::from_secs(10)).await;
    wait_www(bind.addr, "127.0.0.3", "BIND").await;
    wait_www(knot.addr, "127.0.0.3", "Knot").await;
    assert_eq!(dig(bind.addr, "www.example.test", "A"), "127.0.0.3");

    let events = wait_for(Duration::from_secs(10), "verified provider steps for the failover", || {
        let d = &d;
        async move {
            let ev = d.events().await;
            let ok = ["provider:corp-bind", "provider:corp-knot"].iter().all(|a| actuated(&ev, a).iter().filter(|(_, ok, det)| *ok && det.contains("serves 127.0.0.3")).count() >= 1);
            ok.then_some(ev)
        }
    })
    .await;
    for a in ["provider:corp-bind", "provider:corp-knot"] {
        let steps = actuated(&events, a);
        assert!(steps.iter().any(|(_, ok, det)| *ok && det.contains("-> 127.0.0.3 (TTL 30)") && det.contains("answered NOERROR") && det.contains("TSIG verified")), "{a}: {steps:?}");
    }
    // BIND logged a signed update by our key.
    let log = std::fs::read_to_string(bind.dir.join("named.log")).unwrap();
    assert!(log.contains("key understudy: updating zone 'example.test/IN'"), "{log}");
}

/// A wrong secret (BIND: BADSIG) and an unknown key name (Knot: BADKEY) are reported as "key
/// rejected by SERVER", once: retrying cannot help, so the runner does not retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_tsig_key_is_reported_once_as_key_rejected() {
    let (dir, port, _primary, _backup) = two_nginx().await;
    let s = secret();
    let (bind, _) = bind(dir.path(), &s).await;
    let knot = knot(dir.path(), &s).await;
    let extra = format!(
        "{}{}",
        rfc2136_block("corp-bind", bind.addr, "understudy", &format!("tsig_secret = \"{}\"", secret()), ""),
        rfc2136_block("corp-knot", knot.addr, "intruder", &format!("tsig_secret = \"{s}\""), "")
    );
    let api = api_addr();
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "1h", &extra);
    let d = Daemon::start(dir.path(), &cfg, api).await;
    let events = wait_for(Duration::from_secs(10), "both providers' failed steps", || {
        let d = &d;
        async move {
            let ev = d.events().await;
            (!actuated(&ev, "provider:corp-bind").is_empty() && !actuated(&ev, "provider:corp-knot").is_empty()).then_some(ev)
        }
    })
    .await;
    let b = actuated(&events, "provider:corp-bind");
    assert!(!b[0].1 && b[0].2.contains(&format!("key rejected by {}: BADSIG", bind.addr)), "{b:?}");
    let k = actuated(&events, "provider:corp-knot");
    assert!(!k[0].1 && k[0].2.contains(&format!("key rejected by {}: BADKEY", knot.addr)), "{k:?}");
    // The runner retries retryable failures after 1 s, 2 s...: a fatal one stays at one
    // attempt per decision.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let events = d.events().await;
    for a in ["provider:corp-bind", "provider:corp-knot"] {
        let steps = actuated(&events, a);
        let mut epochs: Vec<u64> = steps.iter().map(|s| s.0).collect();
        epochs.dedup();
        assert_eq!(epochs.len(), steps.len(), "{a} retried a fatal failure: {steps:?}");
        assert!(steps.iter().all(|s| !s.1 && s.2.contains("key rejected by")), "{steps:?}");
    }
    assert_eq!(www(bind.addr), "127.0.0.9", "nothing was changed with the wrong key");
}

/// A record changed behind understudy's back (with nsupdate) is found by the periodic check
/// and written back (`drift_repaired`); after a kill -9, a change made while the daemon was
/// down is reconciled at start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_repaired_and_a_restart_reconciles() {
    let (dir, port, _primary, _backup) = two_nginx().await;
    let s = secret();
    let (bind, _) = bind(dir.path(), &s).await;
    let knot = knot(dir.path(), &s).await;
    let extra = format!(
        "{}{}",
        rfc2136_block("corp-bind", bind.addr, "understudy", &format!("tsig_secret = \"{s}\""), ""),
        rfc2136_block("corp-knot", knot.addr, "understudy", &format!("tsig_secret = \"{s}\""), "")
    );
    let api = api_addr();
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "1h", &extra).replace("all_down = \"primary\"", "all_down = \"primary\"\nverify_every = \"1s\"");
    let mut d = Daemon::start(dir.path(), &cfg, api).await;
    wait_www(bind.addr, "127.0.0.2", "BIND").await;
    wait_www(knot.addr, "127.0.0.2", "Knot").await;

    nsupdate(bind.addr, &s, "127.0.0.66");
    nsupdate(knot.addr, &s, "127.0.0.66");
    wait_www(bind.addr, "127.0.0.2", "BIND after the drift repair").await;
    wait_www(knot.addr, "127.0.0.2", "Knot after the drift repair").await;
    let drifts = wait_for(Duration::from_secs(10), "drift_repaired events", || {
        let d = &d;
        async move {
            let ev = d.events().await;
            let drifts: Vec<serde_json::Value> = ev.into_iter().filter(|e| e["event"]["kind"] == "drift_repaired").collect();
            (drifts.len() >= 2).then_some(drifts)
        }
    })
    .await;
    for a in ["provider:corp-bind", "provider:corp-knot"] {
        let e = drifts.iter().find(|e| e["event"]["actuator"] == a).unwrap_or_else(|| panic!("no drift_repaired for {a}: {drifts:?}"));
        assert!(e["event"]["drift"].as_str().unwrap().contains("127.0.0.66"), "{e}");
        assert_eq!(e["event"]["ok"], true, "{e}");
    }

    d.kill9();
    nsupdate(bind.addr, &s, "127.0.0.77");
    nsupdate(knot.addr, &s, "127.0.0.77");
    assert_eq!(www(bind.addr), "127.0.0.77");
    d.restart().await;
    wait_www(bind.addr, "127.0.0.2", "BIND after the restart").await;
    wait_www(knot.addr, "127.0.0.2", "Knot after the restart").await;
}
