//! A real etcd cluster for tests and benchmarks: three members from Debian's `etcd-server` on
//! 127.0.0.1, 127.0.0.2 and 127.0.0.3 (one client and one peer port, the same number on each),
//! started here and stopped by PID (also on panic); and `Node`, one `Etcd` coordinator with
//! everything it told the core, checking as it goes that committed epochs only grow.
//!
//! Included by `tests/integration/cluster.rs` and `benches/cluster.rs` next to `support/mod.rs`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use understudy::coordinator::config::EtcdConfig;
use understudy::coordinator::quorum::Quorum;
use understudy::coordinator::{Etcd, Input, Proposal, Role};
use understudy::health::Health;

pub const IPS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
pub const LEASE_TTL: Duration = Duration::from_secs(2);

pub fn etcd_binary() -> &'static str {
    let path = "/usr/bin/etcd";
    assert!(Path::new(path).exists(), "etcd is not installed: run scripts/install-test-deps.sh (apt-get install etcd-server etcd-client)");
    path
}

/// A bound, not listening socket that keeps a stopped member's port ours until it restarts.
pub fn hold(addr: SocketAddr) -> tokio::net::TcpSocket {
    let s = tokio::net::TcpSocket::new_v4().expect("socket");
    s.set_reuseaddr(true).expect("SO_REUSEADDR");
    s.bind(addr).unwrap_or_else(|e| panic!("hold {addr}: {e}"));
    s
}

pub struct Member {
    pub name: String,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub dir: PathBuf,
    pub child: Option<Child>,
    pub held: Vec<tokio::net::TcpSocket>,
    /// The group id the member runs with (unique in the test process), so that nftables can
    /// match its sockets (`meta skgid`): every member connects from 127.0.0.1 on loopback.
    pub gid: u32,
}

static NEXT_GID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(64700);

/// Three etcd members; each is stopped by PID when this drops.
pub struct EtcdCluster {
    pub members: Vec<Member>,
    pub initial: String,
}

impl EtcdCluster {
    pub async fn start(dir: &Path) -> EtcdCluster {
        etcd_binary();
        let client_port = crate::support::free_port_on(&IPS);
        let peer_port = crate::support::free_port_on(&IPS);
        let members: Vec<Member> = IPS
            .iter()
            .enumerate()
            .map(|(i, ip)| Member {
                name: format!("m{}", i + 1),
                client: format!("{ip}:{client_port}").parse().unwrap(),
                peer: format!("{ip}:{peer_port}").parse().unwrap(),
                dir: dir.join(format!("etcd-m{}", i + 1)),
                child: None,
                held: Vec::new(),
                gid: NEXT_GID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            })
            .collect();
        let initial = members.iter().map(|m| format!("{}=http://{}", m.name, m.peer)).collect::<Vec<_>>().join(",");
        let mut c = EtcdCluster { members, initial };
        for i in 0..3 {
            c.spawn(i);
        }
        for i in 0..3 {
            c.wait_healthy(i).await;
        }
        c
    }

    pub fn spawn(&mut self, i: usize) {
        let initial = self.initial.clone();
        let m = &mut self.members[i];
        assert!(m.child.is_none(), "member {} already runs", m.name);
        std::fs::create_dir_all(&m.dir).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(m.dir.join("etcd.log")).unwrap();
        let mut cmd = Command::new(etcd_binary());
        std::os::unix::process::CommandExt::gid(&mut cmd, m.gid);
        let child = cmd
            .args(["--name", &m.name, "--data-dir"])
            .arg(m.dir.join("data"))
            .args(["--listen-client-urls", &format!("http://{}", m.client), "--advertise-client-urls", &format!("http://{}", m.client)])
            .args(["--listen-peer-urls", &format!("http://{}", m.peer), "--initial-advertise-peer-urls", &format!("http://{}", m.peer)])
            .args(["--initial-cluster", &initial, "--initial-cluster-state", "new", "--initial-cluster-token", "understudy-test"])
            // Loopback: elect in a fraction of the default second.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        m.child = Some(child);
        m.held.clear();
    }

    pub async fn wait_healthy(&self, i: usize) {
        let url = format!("http://{}/health", self.members[i].client);
        let http = crate::support::http();
        let log = self.members[i].dir.join("etcd.log");
        crate::support::wait_for(Duration::from_secs(20), &format!("etcd {url} healthy (see {})", log.display()), || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let body = http.get(&url).timeout(Duration::from_secs(1)).send().await.ok()?.text().await.ok()?;
                body.contains("\"health\":\"true\"").then_some(())
            }
        })
        .await;
    }

    /// Kill -9 one member and hold its ports.
    pub fn kill(&mut self, i: usize) {
        let m = &mut self.members[i];
        if let Some(mut c) = m.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            let _ = c.wait();
            m.held = vec![hold(m.client), hold(m.peer)];
        }
    }

    pub fn endpoints(&self) -> Vec<reqwest::Url> {
        self.members.iter().map(|m| format!("http://{}", m.client).parse().unwrap()).collect()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

pub fn config(cluster: &EtcdCluster, node: &str, quorum: Quorum) -> EtcdConfig {
    EtcdConfig {
        node: node.into(),
        endpoints: cluster.endpoints(),
        prefix: "/understudy-test".into(),
        lease_ttl: LEASE_TTL,
        quorum,
        ca_pem: None,
        identity_pem: None,
        auth: None,
    }
}

/// One understudy node: its coordinator and everything it told the core.
pub struct Node {
    pub name: String,
    pub c: Option<Etcd>,
    pub rx: mpsc::UnboundedReceiver<Input>,
    pub role: Role,
    pub verdicts: BTreeMap<(String, String), Health>,
    /// Every verdict ever delivered, in order.
    pub verdict_log: Vec<(String, String, Health)>,
    /// service -> committed (epoch, active, by), in the order heard.
    pub committed: BTreeMap<String, Vec<(u64, Option<String>, String)>>,
    pub refused: Vec<(String, u64, String)>,
}

impl Node {
    pub fn start(cfg: EtcdConfig) -> Node {
        let (tx, rx) = mpsc::unbounded_channel();
        let name = cfg.node.clone();
        let c = Etcd::start(cfg, tx).expect("start the etcd coordinator");
        Node { name, c: Some(c), rx, role: Role::default(), verdicts: BTreeMap::new(), verdict_log: Vec::new(), committed: BTreeMap::new(), refused: Vec::new() }
    }

    pub fn c(&mut self) -> &mut Etcd {
        self.c.as_mut().expect("node running")
    }

    /// Apply what the coordinator sent, checking that committed epochs only grow.
    pub fn pump(&mut self) {
        while let Ok(i) = self.rx.try_recv() {
            self.apply(i);
        }
    }

    /// Wait up to `within` for the next input and apply it; false when none came.
    pub async fn recv(&mut self, within: Duration) -> bool {
        match tokio::time::timeout(within, self.rx.recv()).await {
            Ok(Some(i)) => {
                self.apply(i);
                true
            }
            _ => false,
        }
    }

    fn apply(&mut self, i: Input) {
        match i {
            Input::Verdict { service, target, health } => {
                self.verdict_log.push((service.clone(), target.clone(), health));
                self.verdicts.insert((service, target), health);
            }
            Input::Committed { service, epoch, active, by, .. } => {
                let log = self.committed.entry(service.clone()).or_default();
                if let Some((last, ..)) = log.last() {
                    assert!(epoch > *last, "{}: epoch {epoch} for {service} after {last}", self.name);
                }
                log.push((epoch, active, by));
            }
            Input::Refused { service, epoch, why } => self.refused.push((service, epoch, why)),
            Input::Role(r) => self.role = r,
            // The daemon-level tests (cluster_nodes.rs) cover shared overrides.
            Input::Overrides { .. } => {}
        }
    }

    pub fn last_epoch(&self, service: &str) -> Option<u64> {
        self.committed.get(service).and_then(|l| l.last()).map(|(e, ..)| *e)
    }

    pub fn verdict(&self, service: &str, target: &str) -> Option<Health> {
        self.verdicts.get(&(service.to_string(), target.to_string())).copied()
    }
}

/// Poll every node's inputs until `cond` holds, or panic after `within`.
pub async fn until(nodes: &mut [Node], within: Duration, what: &str, mut cond: impl FnMut(&mut [Node]) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        for n in nodes.iter_mut() {
            n.pump();
        }
        if cond(nodes) {
            return start.elapsed();
        }
        let roles: Vec<String> = nodes.iter().map(|n| format!("{}: {:?}", n.name, n.role)).collect();
        assert!(start.elapsed() < within, "timed out after {within:?} waiting for {what}; roles: {roles:#?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Wait, input by input (no polling), until `cond` holds on every node in turn; the time taken
/// is when the last node got there.
pub async fn until_each(nodes: &mut [Node], within: Duration, what: &str, cond: impl Fn(&Node) -> bool) -> Duration {
    let start = Instant::now();
    for n in nodes.iter_mut() {
        n.pump();
        while !cond(n) {
            let left = within.saturating_sub(start.elapsed());
            assert!(n.recv(left).await, "{}: timed out after {within:?} waiting for {what}; role {:?}, refused {:?}, last committed {:?}", n.name, n.role, n.refused, n.committed);
        }
    }
    start.elapsed()
}

pub fn leaders(nodes: &[Node]) -> Vec<usize> {
    (0..nodes.len()).filter(|&i| nodes[i].c.is_some() && nodes[i].role.leading).collect()
}

/// Wait until exactly one running node leads and every running node agrees who.
pub async fn one_leader(nodes: &mut [Node], within: Duration) -> usize {
    until(nodes, within, "exactly one leader that every node sees", |ns| {
        let l = leaders(ns);
        l.len() == 1 && ns.iter().filter(|n| n.c.is_some()).all(|n| n.role.connected && n.role.leader.as_deref() == Some(ns[l[0]].name.as_str()))
    })
    .await;
    leaders(nodes)[0]
}

pub fn proposal(epoch: u64, active: &str) -> Proposal {
    Proposal { epoch, active: Some(active.into()), all_down: false, reason: understudy::decision::Reason::Failover }
}

pub fn three_nodes(cluster: &EtcdCluster, quorum: Quorum) -> Vec<Node> {
    ["mon-a", "mon-b", "mon-c"].iter().map(|n| Node::start(config(cluster, n, quorum))).collect()
}

