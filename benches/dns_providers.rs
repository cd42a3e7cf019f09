//! Decision to new answer through RFC 2136: how long after a decision does BIND (and Knot)
//! answer the new address, when understudy's provider actuator sends the UPDATE, beside
//! `nsupdate -y` doing the same update from the shell in the same run?
//!
//! Both peers are started here on loopback (BIND 9 `named` with `update-policy`, Knot with an
//! `update` ACL, one TSIG key, hmac-sha256). Each round flips `www.example.test` between two
//! addresses: understudy's round takes the time of the decision (`Desired::decided_at`), calls
//! the provider actuator's `apply` (one signed UPDATE, answer and TSIG checked) and then asks the
//! server over UDP until it answers the new address; `nsupdate`'s round spawns `nsupdate -y`
//! with the same delete-and-add script and asks the same way once it is started. Rounds
//! alternate between the two so drift on the machine hits both alike. Median of `--rounds`
//! (default 20) per server and method, min-max beside it, and the ratio understudy / nsupdate.
//! The goal (DESIGN.md): no slower than nsupdate's own round trip plus 1 ms.
//!
//! Run: `cargo bench --bench dns_providers -- [--rounds 20]`. Bounded: each answer is awaited at
//! most 5 s; the servers are killed by PID at the end (and on panic).

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use understudy::actuator::{Actuator, Desired, TargetRef};
use understudy::decision::Reason;
use understudy::dns::name::Name;
use understudy::provider::config::{ProviderConfig, ProviderKind, ProviderRecord};
use understudy::provider::{Provider, tsig};

const ZONE: &str = "$TTL 300\n@ IN SOA ns1.example.test. hostmaster.example.test. 1 3600 600 604800 60\n@ IN NS ns1.example.test.\nns1 IN A 127.0.0.1\nwww 30 IN A 127.0.0.9\n";

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a PID we started.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

fn start_bind(dir: &Path, secret: &str) -> (Peer, SocketAddr) {
    let port = free_port();
    let d = dir.join("bind");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("example.test.zone"), ZONE).unwrap();
    let d_ = d.display();
    let conf = format!(
        "options {{ directory \"{d_}\"; listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }}; pid-file \"{d_}/named.pid\"; \
         session-keyfile \"{d_}/session.key\"; managed-keys-directory \"{d_}\"; recursion no; dnssec-validation no; notify no; }};\n\
         controls {{ }};\nkey \"understudy\" {{ algorithm hmac-sha256; secret \"{secret}\"; }};\n\
         zone \"example.test\" {{ type primary; file \"{d_}/example.test.zone\"; update-policy {{ grant understudy zonesub ANY; }}; }};\n"
    );
    std::fs::write(d.join("named.conf"), conf).unwrap();
    let log = std::fs::File::create(d.join("named.log")).unwrap();
    let child = Command::new("/usr/sbin/named")
        .args(["-g", "-n", "1", "-c"])
        .arg(d.join("named.conf"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start named (apt-get install bind9)");
    (Peer(child), SocketAddr::from(([127, 0, 0, 1], port)))
}

fn start_knot(dir: &Path, secret: &str) -> (Peer, SocketAddr) {
    let port = free_port();
    let d = dir.join("knot");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("example.test.zone"), ZONE).unwrap();
    let d_ = d.display();
    let conf = format!(
        "server:\n    listen: 127.0.0.1@{port}\n    rundir: {d_}\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n\
         key:\n  - id: understudy\n    algorithm: hmac-sha256\n    secret: {secret}\n\
         acl:\n  - id: update_acl\n    key: understudy\n    action: update\n\
         database:\n    storage: {d_}\n\
         zone:\n  - domain: example.test\n    file: {d_}/example.test.zone\n    zonefile-sync: -1\n    acl: update_acl\n"
    );
    std::fs::write(d.join("knot.conf"), conf).unwrap();
    let log = std::fs::File::create(d.join("knot.log")).unwrap();
    let child = Command::new("/usr/sbin/knotd").arg("-c").arg(d.join("knot.conf")).stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("start knotd (apt-get install knot)");
    (Peer(child), SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Ask `server` until it answers `www` with `want`; the instant it did.
async fn answered(server: SocketAddr, want: IpAddr) -> Instant {
    let name = Name::parse_absolute("www.example.test").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(a) = understudy::dns::client::query(server, &name, understudy::dns::wire::rtype::A, Duration::from_millis(500)).await
            && a.addresses == [want]
        {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "{server} did not answer {want} within 5 s");
    }
}

fn nsupdate(server: SocketAddr, secret: &str, address: IpAddr) {
    let script = format!(
        "server {} {}\nzone example.test\nupdate delete www.example.test A\nupdate delete www.example.test AAAA\nupdate add www.example.test 30 A {address}\nsend\n",
        server.ip(),
        server.port()
    );
    let mut child = Command::new("nsupdate")
        .args(["-y", &format!("hmac-sha256:understudy:{secret}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nsupdate (apt-get install bind9-dnsutils)");
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "nsupdate: {}", String::from_utf8_lossy(&out.stderr));
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn wait_up(server: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while understudy::dns::client::query(server, &Name::parse_absolute("example.test").unwrap(), understudy::dns::wire::rtype::SOA, Duration::from_millis(200)).await.is_err() {
        assert!(Instant::now() < deadline, "{server} did not start within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let rounds = arg("--rounds", 20).max(1) as usize;
    let dir = tempfile::tempdir().unwrap();
    let secret_bytes: [u8; 32] = rand::random();
    let secret = base64::engine::general_purpose::STANDARD.encode(secret_bytes);
    let (_bind, bind_addr) = start_bind(dir.path(), &secret);
    let (_knot, knot_addr) = start_knot(dir.path(), &secret);
    wait_up(bind_addr).await;
    wait_up(knot_addr).await;
    println!("decision to new answer through RFC 2136 + TSIG (hmac-sha256), loopback, {rounds} rounds each, medians (min-max)");
    for (label, server) in [("BIND 9", bind_addr), ("Knot", knot_addr)] {
        let cfg = ProviderConfig {
            name: "bench".into(),
            zone: Name::parse_absolute("example.test").unwrap(),
            records: vec![ProviderRecord { name: Name::parse_absolute("www.example.test").unwrap(), service: "www".into(), ttl: 30, suspect_ttl: None }],
            verify_servers: vec![server],
            timeout: Duration::from_secs(2),
            kind: ProviderKind::Rfc2136 {
                server,
                key: Some(tsig::Key { name: Name::parse_absolute("understudy").unwrap(), algorithm: tsig::Algorithm::HmacSha256, secret: secret_bytes.to_vec() }),
            },
        };
        let actuator = Arc::new(Provider::new(cfg).unwrap()).actuator("www");
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for i in 0..rounds * 2 {
            let address: IpAddr = if i % 4 < 2 { [127, 0, 0, 2] } else { [127, 0, 0, 3] }.into();
            if i % 2 == 0 {
                let desired = Desired {
                    service: "www".into(),
                    epoch: i as u64 + 1,
                    active: Some(TargetRef { name: "t".into(), address }),
                    previous: None,
                    reason: Reason::Failover,
                    all_down: false,
                    decided_at: Instant::now(),
                };
                let out = actuator.apply(&desired).await;
                assert!(out.ok, "{label}: {}", out.detail);
                ours.push(answered(server, address).await - desired.decided_at);
            } else {
                let t0 = Instant::now();
                nsupdate(server, &secret, address);
                theirs.push(answered(server, address).await - t0);
            }
        }
        let (lo_o, hi_o) = (*ours.iter().min().unwrap(), *ours.iter().max().unwrap());
        let (lo_t, hi_t) = (*theirs.iter().min().unwrap(), *theirs.iter().max().unwrap());
        let (m_o, m_t) = (median(&mut ours), median(&mut theirs));
        println!(
            "  {label:7} understudy {} ({}-{})   nsupdate -y {} ({}-{})   ratio {:.3}   goal (<= nsupdate + 1 ms): {}",
            ms(m_o),
            ms(lo_o),
            ms(hi_o),
            ms(m_t),
            ms(lo_t),
            ms(hi_t),
            m_o.as_secs_f64() / m_t.as_secs_f64(),
            if m_o <= m_t + Duration::from_millis(1) { "met" } else { "missed" }
        );
    }
}
