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
        assert!(steps.iter().any(|(_, ok, det)| *ok && det.contains("-> 127.0.0.3 (TTL ") && det.contains("answered NOERROR") && det.contains("TSIG verified")), "{a}: {steps:?}");
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
    // Both providers are done with the newest decision (a step that failed on a loaded machine
    // would be retried, and a retry repairs drift as an ordinary apply): from here on their
    // workers only verify, every second.
    let epoch = d.service("www").await["epoch"].as_u64().unwrap();
    wait_for(Duration::from_secs(20), "the newest decision's switch", || async {
        d.events().await.iter().any(|e| e["event"]["kind"] == "switched" && e["event"]["epoch"] == epoch && e["event"]["ok"] == true).then_some(())
    })
    .await;

    nsupdate(bind.addr, &s, "127.0.0.66");
    nsupdate(knot.addr, &s, "127.0.0.66");
    wait_www(bind.addr, "127.0.0.2", "BIND after the drift repair").await;
    wait_www(knot.addr, "127.0.0.2", "Knot after the drift repair").await;
    let drifts = wait_for(Duration::from_secs(10), "drift_repaired events", || {
        let d = &d;
        async move {
            let ev = d.events().await;
            let drifts: Vec<serde_json::Value> = ev.iter().filter(|e| e["event"]["kind"] == "drift_repaired").cloned().collect();
            // A new decision since (a flap on a loaded machine) also rewrites the records: say so.
            let later: Vec<&serde_json::Value> = ev.iter().filter(|e| e["event"]["kind"] == "decision" && e["event"]["epoch"].as_u64() > Some(epoch)).collect();
            assert!(later.is_empty(), "a decision after epoch {epoch} came during the drift test: {later:?}");
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

/// PowerDNS Authoritative with the sqlite3 backend and its HTTP API, on loopback high ports.
struct Pdns {
    peer: Peer,
    api: String,
    key: String,
}

async fn pdns(dir: &Path) -> Pdns {
    require("/usr/sbin/pdns_server", "pdns-server pdns-backend-sqlite3");
    let schema = Path::new("/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql");
    assert!(schema.exists(), "{} is missing: apt-get install pdns-backend-sqlite3", schema.display());
    let dir = dir.join("pdns");
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("pdns.db");
    let mut sqlite = Command::new("sqlite3").arg(&db).stdin(Stdio::piped()).spawn().expect("run sqlite3 (apt-get install sqlite3)");
    use std::io::Write;
    sqlite.stdin.take().unwrap().write_all(&std::fs::read(schema).unwrap()).unwrap();
    assert!(sqlite.wait().unwrap().success(), "sqlite3 could not create the PowerDNS schema");
    let (dns_port, web_port) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let key = secret();
    let conf = format!(
        "launch=gsqlite3\ngsqlite3-database={}\nlocal-address=127.0.0.1\nlocal-port={dns_port}\napi=yes\napi-key={key}\nwebserver=yes\n\
         webserver-address=127.0.0.1\nwebserver-port={web_port}\nwebserver-allow-from=127.0.0.0/8\nsocket-dir={}\nguardian=no\ndaemon=no\n\
         disable-syslog=yes\nwrite-pid=no\n",
        db.display(),
        dir.display()
    );
    std::fs::write(dir.join("pdns.conf"), conf).unwrap();
    let cd = format!("--config-dir={}", dir.display());
    for args in [vec!["create-zone", "example.test", "ns1.example.test"], vec!["add-record", "example.test", "www", "A", "30", "127.0.0.9"]] {
        let out = Command::new("pdnsutil").arg(&cd).args(&args).output().expect("run pdnsutil");
        assert!(out.status.success(), "pdnsutil {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let log = std::fs::File::create(dir.join("pdns.log")).unwrap();
    let child = Command::new("/usr/sbin/pdns_server").arg(&cd).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("start pdns_server");
    let peer = Peer { child, addr: format!("127.0.0.1:{dns_port}").parse().unwrap(), dir };
    wait_serving(peer.addr, "pdns_server").await;
    Pdns { peer, api: format!("http://127.0.0.1:{web_port}"), key }
}

/// The PowerDNS HTTP API: the failover PATCHes the RRset; PowerDNS then answers the new
/// address over DNS, and the API reads it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn powerdns_api_failover() {
    let (dir, port, mut primary, _backup) = two_nginx().await;
    let p = pdns(dir.path()).await;
    std::fs::write(dir.path().join("pdns.key"), format!("{}\n", p.key)).unwrap();
    let extra = format!(
        "\n[[dns.provider]]\nname = \"pdns\"\nkind = \"powerdns\"\nurl = \"{}\"\napi_key_file = \"pdns.key\"\nzone = \"example.test\"\n\
         [[dns.provider.record]]\nname = \"www\"\nservice = \"www\"\nttl = 30\n",
        p.api
    );
    let api = api_addr();
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "1h", &extra);
    let d = Daemon::start(dir.path(), &cfg, api).await;
    wait_www(p.peer.addr, "127.0.0.2", "PowerDNS").await;
    primary.kill();
    d.wait_active("www", "backup", Duration::from_secs(10)).await;
    wait_www(p.peer.addr, "127.0.0.3", "PowerDNS").await;
    let steps = wait_for(Duration::from_secs(10), "a verified PowerDNS step", || {
        let d = &d;
        async move {
            let s = actuated(&d.events().await, "provider:pdns");
            s.iter().any(|(_, ok, det)| *ok && det.contains("the PowerDNS API holds 127.0.0.3")).then_some(s)
        }
    })
    .await;
    assert!(steps.iter().any(|(_, ok, det)| *ok && det.contains("-> 127.0.0.3 (TTL ") && det.contains("PowerDNS answered HTTP 204")), "{steps:?}");
    assert!(!steps.iter().any(|(_, _, det)| det.contains(&p.key)), "the API key never appears in events");
}

/// moto in server mode stands in for the AWS Route 53 API (it answers the same REST/XML
/// requests; it does not check signatures, our SigV4 is checked against AWS's published test
/// vectors in `provider::sigv4`).
struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a PID we started.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

async fn moto(dir: &Path) -> Moto {
    let port = free_port("127.0.0.1");
    let log = std::fs::File::create(dir.join("moto.log")).unwrap();
    let child = Command::new("python3")
        .args(["-u", "-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        .env_remove("PYTHONUNBUFFERED")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start python3 -m moto.server (pip install 'moto[server]'; scripts/install-test-deps.sh does)");
    let m = Moto { child, url: format!("http://127.0.0.1:{port}") };
    let url = m.url.clone();
    let logp = dir.join("moto.log");
    wait_for(Duration::from_secs(30), "moto to listen", || {
        let (url, logp) = (url.clone(), logp.clone());
        async move {
            let log = std::fs::read_to_string(&logp).unwrap_or_default();
            assert!(!log.contains("No module named"), "moto is not installed: run scripts/install-test-deps.sh (pip install 'moto[server]'): {log}");
            http().get(&url).send().await.ok().map(|_| ())
        }
    })
    .await;
    m
}

/// A Route 53 call to moto, signed like understudy signs (moto routes on the signature's scope).
async fn route53_call(url: &str, method: reqwest::Method, body: Option<&str>) -> String {
    let u = reqwest::Url::parse(url).unwrap();
    let creds = understudy::provider::sigv4::Credentials { access_key_id: "AKIDTEST", secret_access_key: "test-secret", session_token: None };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut req = http().request(method.clone(), u.clone());
    for (k, v) in understudy::provider::sigv4::sign(&creds, "us-east-1", "route53", now, method.as_str(), &u, body.unwrap_or("").as_bytes()) {
        req = req.header(k, v);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/xml").body(b.to_string());
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{method} {url}: {status}: {text}");
    text
}

/// Route 53 (moto standing in for AWS): create the hosted zone, fail over, and read the
/// record back through moto's API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route53_failover_through_moto() {
    let (dir, port, mut primary, _backup) = two_nginx().await;
    let m = moto(dir.path()).await;
    let created = route53_call(
        &format!("{}/2013-04-01/hostedzone", m.url),
        reqwest::Method::POST,
        Some("<?xml version=\"1.0\" encoding=\"UTF-8\"?><CreateHostedZoneRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><Name>example.test.</Name><CallerReference>understudy-test</CallerReference></CreateHostedZoneRequest>"),
    )
    .await;
    let zone = created.split("<Id>/hostedzone/").nth(1).and_then(|s| s.split('<').next()).expect("a hosted zone id").to_string();
    let extra = format!(
        "\n[[dns.provider]]\nname = \"r53\"\nkind = \"route53\"\nhosted_zone_id = \"{zone}\"\naccess_key_id = \"AKIDTEST\"\nsecret_access_key = \"test-secret\"\n\
         endpoint = \"{}\"\nzone = \"example.test\"\n[[dns.provider.record]]\nname = \"www\"\nservice = \"www\"\nttl = 30\n",
        m.url
    );
    let api = api_addr();
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "1h", &extra);
    let d = Daemon::start(dir.path(), &cfg, api).await;
    let list = format!("{}/2013-04-01/hostedzone/{zone}/rrset?name=www.example.test.&maxitems=10", m.url);
    let holds = |want: &'static str| {
        let list = list.clone();
        move || {
            let list = list.clone();
            async move { route53_call(&list, reqwest::Method::GET, None).await.contains(&format!("<Type>A</Type><TTL>30</TTL><ResourceRecords><ResourceRecord><Value>{want}</Value>")).then_some(()) }
        }
    };
    wait_for(Duration::from_secs(20), "Route 53 (moto) holding 127.0.0.2", holds("127.0.0.2")).await;
    primary.kill();
    d.wait_active("www", "backup", Duration::from_secs(10)).await;
    wait_for(Duration::from_secs(20), "Route 53 (moto) holding 127.0.0.3", holds("127.0.0.3")).await;
    let steps = wait_for(Duration::from_secs(10), "a verified Route 53 step", || {
        let d = &d;
        async move {
            let s = actuated(&d.events().await, "provider:r53");
            s.iter().any(|(_, ok, det)| *ok && det.contains("Route 53 holds 127.0.0.3")).then_some(s)
        }
    })
    .await;
    assert!(steps.iter().any(|(_, ok, det)| *ok && det.contains("-> 127.0.0.3") && det.contains("INSYNC")), "{steps:?}");
    assert!(!steps.iter().any(|(_, _, det)| det.contains("test-secret")));
}

/// A local receiver standing in for Cloudflare's v4 DNS records endpoints: it implements the
/// documented request and response shapes of list (`GET .../dns_records?name=`), patch,
/// create and delete, checks the bearer token, and answers the first PATCH with 429 and
/// `Retry-After: 1` (Cloudflare's rate limit answer).
mod cloudflare_stand_in {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use axum::extract::{Path, Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, patch};
    use axum::{Json, Router};
    use serde_json::{Value, json};

    pub const TOKEN: &str = "cf-test-token";

    #[derive(Default)]
    pub struct Zone {
        pub records: Vec<Value>,
        pub patches: Vec<Instant>,
    }

    pub type Shared = Arc<Mutex<Zone>>;

    fn denied() -> Response {
        (StatusCode::FORBIDDEN, Json(json!({"success": false, "errors": [{"code": 10000, "message": "Authentication error"}], "messages": [], "result": null}))).into_response()
    }

    fn authorized(h: &HeaderMap) -> bool {
        h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
    }

    async fn list(State(z): State<Shared>, h: HeaderMap, Path(_zone): Path<String>, Query(q): Query<std::collections::HashMap<String, String>>) -> Response {
        if !authorized(&h) {
            return denied();
        }
        let z = z.lock().unwrap();
        let result: Vec<Value> = z.records.iter().filter(|r| q.get("name").is_none_or(|n| r["name"] == n.as_str())).cloned().collect();
        let n = result.len();
        Json(json!({"success": true, "errors": [], "messages": [], "result": result, "result_info": {"page": 1, "per_page": 100, "count": n, "total_count": n}})).into_response()
    }

    async fn update(State(z): State<Shared>, h: HeaderMap, Path((_zone, id)): Path<(String, String)>, Json(body): Json<Value>) -> Response {
        if !authorized(&h) {
            return denied();
        }
        let mut z = z.lock().unwrap();
        z.patches.push(Instant::now());
        if z.patches.len() == 1 {
            return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], Json(json!({"success": false, "errors": [{"code": 971, "message": "Please wait and consider throttling your request speed"}], "messages": [], "result": null}))).into_response();
        }
        let Some(r) = z.records.iter_mut().find(|r| r["id"] == id.as_str()) else {
            return (StatusCode::NOT_FOUND, Json(json!({"success": false, "errors": [{"code": 81044, "message": "Record does not exist."}], "messages": [], "result": null}))).into_response();
        };
        for (k, v) in body.as_object().cloned().unwrap_or_default() {
            r[k.as_str()] = v;
        }
        let r = r.clone();
        Json(json!({"success": true, "errors": [], "messages": [], "result": r})).into_response()
    }

    async fn create(State(z): State<Shared>, h: HeaderMap, Path(_zone): Path<String>, Json(mut body): Json<Value>) -> Response {
        if !authorized(&h) {
            return denied();
        }
        let mut z = z.lock().unwrap();
        body["id"] = json!(format!("rec{}", z.records.len() + 100));
        z.records.push(body.clone());
        Json(json!({"success": true, "errors": [], "messages": [], "result": body})).into_response()
    }

    async fn delete(State(z): State<Shared>, h: HeaderMap, Path((_zone, id)): Path<(String, String)>) -> Response {
        if !authorized(&h) {
            return denied();
        }
        z.lock().unwrap().records.retain(|r| r["id"] != id.as_str());
        Json(json!({"success": true, "errors": [], "messages": [], "result": {"id": id}})).into_response()
    }

    /// Serve on `listener` until the test ends.
    pub fn serve(listener: std::net::TcpListener, zone: Shared) {
        let app = Router::new()
            .route("/client/v4/zones/{zone}/dns_records", get(list).post(create))
            .route("/client/v4/zones/{zone}/dns_records/{id}", patch(update).delete(delete))
            .with_state(zone);
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
    }
}

/// Cloudflare (a local receiver implementing the documented v4 shapes): the record's content
/// is PATCHed and `proxied` stays as the user set it; the 429 is waited out as `Retry-After`
/// asks; a wrong token is a fatal "credentials rejected".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudflare_failover_through_a_stand_in() {
    use cloudflare_stand_in::*;
    let (dir, port, mut primary, _backup) = two_nginx().await;
    let zone: Shared = Default::default();
    zone.lock().unwrap().records.push(serde_json::json!({"id": "rec1", "type": "A", "name": "www.example.test", "content": "127.0.0.9", "proxied": true, "ttl": 1}));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}/client/v4", listener.local_addr().unwrap());
    serve(listener, zone.clone());
    let block = |name: &str, token: &str| {
        format!(
            "\n[[dns.provider]]\nname = \"{name}\"\nkind = \"cloudflare\"\nzone_id = \"023e105f4ecef8ad9ca31a8372d0c353\"\napi_token = \"{token}\"\nendpoint = \"{endpoint}\"\nzone = \"example.test\"\n\
             [[dns.provider.record]]\nname = \"www\"\nservice = \"www\"\nttl = 60\n"
        )
    };
    let extra = format!("{}{}", block("cf", TOKEN), block("cf-wrong", "not-the-token"));
    let api = api_addr();
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "1h", &extra);
    let d = Daemon::start(dir.path(), &cfg, api).await;
    let content = |z: &Shared| z.lock().unwrap().records.iter().map(|r| format!("{} {} proxied={}", r["type"].as_str().unwrap(), r["content"].as_str().unwrap(), r["proxied"])).collect::<Vec<_>>();
    wait_for(Duration::from_secs(20), "the stand-in holding 127.0.0.2", || {
        let z = zone.clone();
        async move { (content(&z) == ["A 127.0.0.2 proxied=true"]).then_some(()) }
    })
    .await;
    {
        let z = zone.lock().unwrap();
        assert_eq!(z.patches.len(), 2, "one 429, then the PATCH");
        assert!(z.patches[1] - z.patches[0] >= Duration::from_secs(1), "Retry-After: 1 was waited out");
    }
    primary.kill();
    d.wait_active("www", "backup", Duration::from_secs(10)).await;
    wait_for(Duration::from_secs(20), "the stand-in holding 127.0.0.3", || {
        let z = zone.clone();
        async move { (content(&z) == ["A 127.0.0.3 proxied=true"]).then_some(()) }
    })
    .await;
    let events = d.events().await;
    let steps = actuated(&events, "provider:cf");
    assert!(steps.iter().any(|(_, ok, det)| *ok && det.contains("patched www.example.test A 127.0.0.2 -> 127.0.0.3")), "{steps:?}");
    let wrong = actuated(&events, "provider:cf-wrong");
    assert!(wrong.iter().all(|(_, ok, det)| !ok && det.contains("HTTP 403: Authentication error (10000) (credentials rejected)")), "{wrong:?}");
    assert!(!wrong.is_empty());
}

/// `www`'s A record at `addr` as (TTL, address), through dig.
fn www_ttl(addr: SocketAddr) -> Option<(u32, String)> {
    let out = Command::new(DIG)
        .args(["+noall", "+answer", "+time=1", "+tries=1", "-p", &addr.port().to_string(), &format!("@{}", addr.ip()), "www.example.test", "A"])
        .output()
        .expect("run dig");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let f: Vec<&str> = text.split_whitespace().collect();
    (f.len() == 5).then(|| (f[1].parse().ok(), f[4].to_string())).and_then(|(t, a)| t.map(|t| (t, a)))
}

/// The suspicion TTL at a real BIND: from the primary's first failed check (long before it
/// is marked down, `fall = 50`) BIND serves it with `suspect_ttl` 1, written by one extra
/// UPDATE; once it passes `rise` checks again the TTL goes back to 30, and nothing failed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suspicion_ttl_is_written_with_one_update() {
    let (dir, port, mut primary, _backup) = two_nginx().await;
    let s = secret();
    let (bind, _) = bind(dir.path(), &s).await;
    let extra = rfc2136_block("corp-bind", bind.addr, "understudy", &format!("tsig_secret = \"{s}\""), "");
    let api = api_addr();
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "1h", &extra).replace("fall = 3", "fall = 50");
    let d = Daemon::start(dir.path(), &cfg, api).await;
    wait_for(Duration::from_secs(20), "BIND serving 127.0.0.2 with TTL 30", || async { (www_ttl(bind.addr) == Some((30, "127.0.0.2".into()))).then_some(()) }).await;
    primary.kill();
    wait_for(Duration::from_secs(8), "BIND serving the suspect primary with TTL 1", || async { (www_ttl(bind.addr) == Some((1, "127.0.0.2".into()))).then_some(()) }).await;
    primary.start().await;
    wait_for(Duration::from_secs(10), "BIND back at TTL 30", || async { (www_ttl(bind.addr) == Some((30, "127.0.0.2".into()))).then_some(()) }).await;
    assert_eq!(d.active("www").await.as_deref(), Some("primary"));
    let log = std::fs::read_to_string(bind.dir.join("named.log")).unwrap();
    assert!(log.contains("adding an RR at 'www.example.test' A 127.0.0.2"), "{log}");
}

/// understudy's own server as a hidden primary: real Knot and BIND are its secondaries with
/// TSIG-signed transfers (key `xfr`), and their refresh timer is a day, so only understudy's
/// NOTIFY explains them serving the new address after a failover. Also: an unknown TSIG key
/// gets a BADKEY error record (RFC 8945), and an unsigned transfer is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_primary_notifies_tsig_secondaries() {
    use understudy::dns::name::Name;
    use understudy::provider::{msg, tsig};
    let (dir, port, mut primary, _backup) = two_nginx().await;
    let s = secret();
    let dns_port = free_port("127.0.0.1");
    let (knot_port, bind_port) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let extra = format!(
        "\n[dns]\nlisten = [\"127.0.0.1:{dns_port}\"]\nudp_workers = 1\n\n[[dns.key]]\nname = \"xfr\"\nalgorithm = \"hmac-sha256\"\nsecret = \"{s}\"\n\n\
         [[dns.zone]]\nname = \"example.test\"\nnameservers = {{ \"ns1.example.test\" = \"127.0.0.1\" }}\ntransfer_key = \"xfr\"\n\
         notify = [\"127.0.0.1:{knot_port}\", \"127.0.0.1:{bind_port}\"]\n\n[dns.zone.soa]\nrefresh = 86400\nretry = 86400\n\n\
         [[dns.zone.record]]\nname = \"www\"\nservice = \"www\"\nttl = 5\n"
    );
    let api = api_addr();
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "1h", &extra);
    let d = Daemon::start(dir.path(), &cfg, api).await;
    let ours: SocketAddr = format!("127.0.0.1:{dns_port}").parse().unwrap();
    wait_www(ours, "127.0.0.2", "understudy").await;

    // Knot as a secondary.
    let kdir = dir.path().join("knot-secondary");
    std::fs::create_dir_all(&kdir).unwrap();
    let kd = kdir.display();
    std::fs::write(
        kdir.join("knot.conf"),
        format!(
            "server:\n    listen: 127.0.0.1@{knot_port}\n    rundir: {kd}\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n\
             key:\n  - id: xfr\n    algorithm: hmac-sha256\n    secret: {s}\n\
             remote:\n  - id: hidden\n    address: 127.0.0.1@{dns_port}\n    key: xfr\n\
             acl:\n  - id: notify_acl\n    address: 127.0.0.1\n    key: xfr\n    action: notify\n\
             database:\n    storage: {kd}\n\
             log:\n  - target: stderr\n    any: info\n\
             zone:\n  - domain: example.test\n    master: hidden\n    acl: notify_acl\n    file: {kd}/example.test.zone\n    zonefile-sync: -1\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(kdir.join("knot.log")).unwrap();
    let child = Command::new(KNOTD).arg("-c").arg(kdir.join("knot.conf")).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("start knotd");
    let knot = Peer { child, addr: format!("127.0.0.1:{knot_port}").parse().unwrap(), dir: kdir };

    // BIND as a secondary.
    require(NAMED, "bind9");
    let bdir = dir.path().join("bind-secondary");
    std::fs::create_dir_all(&bdir).unwrap();
    let bd = bdir.display();
    std::fs::write(
        bdir.join("named.conf"),
        format!(
            "options {{\n  directory \"{bd}\";\n  listen-on port {bind_port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  pid-file \"{bd}/named.pid\";\n  \
             session-keyfile \"{bd}/session.key\";\n  managed-keys-directory \"{bd}\";\n  recursion no;\n  dnssec-validation no;\n  notify no;\n}};\n\
             controls {{ }};\nkey \"xfr\" {{ algorithm hmac-sha256; secret \"{s}\"; }};\n\
             zone \"example.test\" {{ type secondary; primaries port {dns_port} {{ 127.0.0.1 key xfr; }}; file \"{bd}/example.test.db\"; }};\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(bdir.join("named.log")).unwrap();
    let child = Command::new(NAMED).args(["-g", "-n", "1", "-c"]).arg(bdir.join("named.conf")).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("start named");
    let bind = Peer { child, addr: format!("127.0.0.1:{bind_port}").parse().unwrap(), dir: bdir };

    // Both transfer the zone at start-up (signed), then serve it.
    wait_www(knot.addr, "127.0.0.2", "the Knot secondary").await;
    wait_www(bind.addr, "127.0.0.2", "the BIND secondary").await;

    primary.kill();
    d.wait_active("www", "backup", Duration::from_secs(10)).await;
    wait_www(ours, "127.0.0.3", "understudy").await;
    // The refresh timer is a day: only the NOTIFY brings the new serial this fast.
    wait_www(knot.addr, "127.0.0.3", "the Knot secondary after NOTIFY").await;
    wait_www(bind.addr, "127.0.0.3", "the BIND secondary after NOTIFY").await;
    let klog = std::fs::read_to_string(knot.dir.join("knot.log")).unwrap();
    assert!(klog.contains("notify"), "Knot logged the NOTIFY: {klog}");
    let blog = std::fs::read_to_string(bind.dir.join("named.log")).unwrap();
    assert!(blog.contains("notify from 127.0.0.1"), "BIND logged the NOTIFY: {blog}");
    assert!(blog.contains("TSIG xfr"), "BIND's transfer was signed: {blog}");

    // An unknown key: NOTAUTH with a TSIG error record BADKEY.
    let zone = Name::parse_absolute("example.test").unwrap();
    let stranger = tsig::Key { name: Name::parse_absolute("stranger").unwrap(), algorithm: tsig::Algorithm::HmacSha256, secret: b"0123456789abcdef".to_vec() };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (q, _) = tsig::sign(&msg::query(77, &zone, 6), &stranger, now, None);
    let answer = msg::exchange(ours, &q, Duration::from_secs(2)).await.unwrap();
    assert_eq!(msg::parse(&answer).unwrap().rcode, 9, "NOTAUTH");
    let found = tsig::find(&answer).expect("a TSIG record in the answer");
    assert_eq!((found.error, found.key_name.to_string().as_str(), found.mac.len()), (tsig::error::BADKEY, "stranger.", 0));
    // The right key: a signed answer that verifies.
    let xfr = tsig::Key { name: Name::parse_absolute("xfr").unwrap(), algorithm: tsig::Algorithm::HmacSha256, secret: base64::engine::general_purpose::STANDARD.decode(&s).unwrap() };
    let (q, mac) = tsig::sign(&msg::query(78, &zone, 6), &xfr, now, None);
    let answer = msg::exchange(ours, &q, Duration::from_secs(2)).await.unwrap();
    assert!(matches!(tsig::verify(&answer, &xfr, now, Some(&mac)), tsig::Checked::Valid { .. }));
    // An unsigned AXFR is refused: the zone transfers only with its key.
    let axfr = Command::new(DIG).args(["+tcp", "+time=2", "+tries=1", "-p", &dns_port.to_string(), "@127.0.0.1", "example.test", "AXFR"]).output().unwrap();
    assert!(String::from_utf8_lossy(&axfr.stdout).contains("Transfer failed"), "{}", String::from_utf8_lossy(&axfr.stdout));
}
