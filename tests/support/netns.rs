//! A small network in namespaces for end-to-end tests: a client, a monitor, a primary and a
//! backup host on one bridge, addresses from 198.18.0.0/24 (reserved for network testing), no
//! route out of the machine.
//!
//! ```text
//!   <p>c  client   198.18.0.10  (caching resolver: unbound, drill CLI)
//!   <p>m  monitor  198.18.0.2   (understudy: API :9190, DNS :53)
//!   <p>a  primary  198.18.0.11  (nginx :80)
//!   <p>b  backup   198.18.0.12  (nginx :80)
//!   <p>s  switch: bridge br0, one veth to each host
//! ```
//!
//! Every namespace and every process started through [`Testbed::spawn`] or recorded with
//! [`Testbed::track_pidfile`] is removed / killed by PID when the testbed drops. Needs root.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use std::sync::atomic::{AtomicU32, Ordering};

pub const CLIENT: &str = "198.18.0.10";
pub const MONITOR: &str = "198.18.0.2";
pub const PRIMARY: &str = "198.18.0.11";
pub const BACKUP: &str = "198.18.0.12";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    Client,
    Monitor,
    Primary,
    Backup,
}

impl Host {
    fn suffix(self) -> char {
        match self {
            Host::Client => 'c',
            Host::Monitor => 'm',
            Host::Primary => 'a',
            Host::Backup => 'b',
        }
    }
    pub fn ip(self) -> &'static str {
        match self {
            Host::Client => CLIENT,
            Host::Monitor => MONITOR,
            Host::Primary => PRIMARY,
            Host::Backup => BACKUP,
        }
    }
    const ALL: [Host; 4] = [Host::Client, Host::Monitor, Host::Primary, Host::Backup];
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct Testbed {
    prefix: String,
    pub dir: PathBuf,
    children: Vec<Child>,
    pidfiles: Vec<PathBuf>,
    namespaces: Vec<String>,
}

impl Testbed {
    /// Build the network. Panics with a clear message if not root or `ip` is missing.
    pub fn new(dir: &Path) -> Testbed {
        assert!(unsafe { libc::geteuid() } == 0, "the namespace test bed needs root (CI runs as root)");
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        // Interface names are limited to 15 bytes: keep the prefix short and unique per test.
        let prefix = format!("u{}{}", std::process::id() % 100_000, (b'a' + (n % 26) as u8) as char);
        let mut tb = Testbed { prefix: prefix.clone(), dir: dir.to_owned(), children: Vec::new(), pidfiles: Vec::new(), namespaces: Vec::new() };
        let sw = format!("{prefix}s");
        run(&["ip", "netns", "add", &sw]);
        tb.namespaces.push(sw.clone());
        run(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &sw, "link", "set", "br0", "up"]);
        run(&["ip", "-n", &sw, "link", "set", "lo", "up"]);
        for h in Host::ALL {
            let ns = tb.ns(h);
            run(&["ip", "netns", "add", &ns]);
            tb.namespaces.push(ns.clone());
            let (host_if, sw_if) = (format!("{prefix}{}h", h.suffix()), format!("{prefix}{}s", h.suffix()));
            run(&["ip", "link", "add", &host_if, "netns", &ns, "type", "veth", "peer", "name", &sw_if, "netns", &sw]);
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            run(&["ip", "-n", &ns, "link", "set", &host_if, "name", "eth0"]);
            run(&["ip", "-n", &ns, "addr", "add", &format!("{}/24", h.ip()), "dev", "eth0"]);
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            run(&["ip", "-n", &sw, "link", "set", &sw_if, "master", "br0"]);
            run(&["ip", "-n", &sw, "link", "set", &sw_if, "up"]);
        }
        tb
    }

    pub fn ns(&self, h: Host) -> String {
        format!("{}{}", self.prefix, h.suffix())
    }

    /// A command that runs inside `h`'s namespace.
    pub fn command(&self, h: Host, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(h), program]);
        c
    }

    /// The same, for `tokio::process`.
    pub fn tokio_command(&self, h: Host, program: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("ip");
        c.args(["netns", "exec", &self.ns(h), program]);
        c
    }

    /// Run to completion inside `h`; panic on failure.
    pub fn sh(&self, h: Host, script: &str) -> String {
        let out = self.command(h, "/bin/sh").args(["-c", script]).output().unwrap();
        assert!(out.status.success(), "in {:?}: `{script}` failed: {}", h, String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Start a long-running process inside `h` (killed by PID on drop). `ip netns exec` execs
    /// the program, so the child's PID is the program's.
    pub fn spawn(&mut self, h: Host, program: &str, args: &[&str], log: &Path) -> u32 {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = self
            .command(h, program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Kill (by PID, SIGKILL) everything whose PID is in `pidfile` at teardown.
    pub fn track_pidfile(&mut self, pidfile: PathBuf) {
        self.pidfiles.push(pidfile);
    }

    /// Drop `percent`% of packets at random on `h`'s link, both directions (nftables; the
    /// kernel here has no netem). `0` removes the rule.
    pub fn loss(&self, h: Host, percent: u32) {
        let _ = self.command(h, "nft").args(["delete", "table", "inet", "loss"]).output();
        if percent == 0 {
            return;
        }
        let rule = if percent >= 100 { "counter drop".to_string() } else { format!("numgen random mod 100 < {percent} counter drop") };
        self.sh(
            h,
            &format!(
                "nft add table inet loss && \
                 nft 'add chain inet loss in {{ type filter hook input priority 0 ; policy accept ; }}' && \
                 nft 'add chain inet loss out {{ type filter hook output priority 0 ; policy accept ; }}' && \
                 nft 'add rule inet loss in iifname eth0 {rule}' && nft 'add rule inet loss out oifname eth0 {rule}'"
            ),
        );
    }

    /// Packets the `loss` rules on `h` have dropped so far (both directions; 0 without rules).
    pub fn dropped(&self, h: Host) -> u64 {
        let out = self.command(h, "nft").args(["list", "table", "inet", "loss"]).output().expect("run nft");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .filter_map(|l| l.split_once("counter packets ").and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<u64>().ok()))
            .sum()
    }

    /// nginx inside `h`, serving `/health` and `/` with the host's name, as a daemon with a
    /// pid file (so a drill's commands can stop and start it). Returns the pid file.
    pub fn nginx(&mut self, h: Host, name: &str) -> (PathBuf, String) {
        let dir = self.dir.join(format!("nginx-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let ip = h.ip();
        let conf = format!(
            "daemon on;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               server {{\n    listen {ip}:80;\n    location / {{ default_type text/plain; return 200 \"{name}\\n\"; }}\n  }}\n}}\n"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let pidfile = dir.join("nginx.pid");
        self.track_pidfile(pidfile.clone());
        let start = format!("ip netns exec {} {} -c {} -p {d}", self.ns(h), super::nginx_binary(), conf_path.display());
        run(&["/bin/sh", "-c", &start]);
        (pidfile, start)
    }

    /// unbound in the client namespace on 198.18.0.10:53, forwarding `example.test` to the
    /// monitor (understudy) as a stub zone, honouring TTLs.
    pub fn unbound(&mut self) -> std::net::SocketAddr {
        let unbound = "/usr/sbin/unbound";
        assert!(Path::new(unbound).exists(), "unbound is not installed: run scripts/install-test-deps.sh (apt-get install unbound)");
        let dir = self.dir.join("unbound");
        std::fs::create_dir_all(&dir).unwrap();
        let conf = format!(
            "server:\n  interface: {CLIENT}\n  port: 53\n  do-daemonize: no\n  chroot: \"\"\n  username: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n\
               use-syslog: no\n  logfile: \"\"\n  verbosity: 1\n  num-threads: 1\n  so-reuseport: no\n  outgoing-interface: {CLIENT}\n\
               access-control: 198.18.0.0/15 allow\n  do-not-query-localhost: no\n  module-config: \"iterator\"\n\
               local-zone: \"test.\" nodefault\n  domain-insecure: \"example.test\"\n  qname-minimisation: no\n\
               cache-min-ttl: 0\n  serve-expired: no\n  prefetch: no\n  harden-referral-path: no\n\
             stub-zone:\n  name: \"example.test\"\n  stub-addr: {MONITOR}@53\n",
            d = dir.display()
        );
        let conf_path = dir.join("unbound.conf");
        std::fs::write(&conf_path, conf).unwrap();
        self.spawn(Host::Client, unbound, &["-d", "-c", conf_path.to_str().unwrap()], &dir.join("unbound.log"));
        format!("{CLIENT}:53").parse().unwrap()
    }

    /// Wait until `h` accepts TCP on `port` (checked from inside `h`'s namespace with bash).
    pub async fn wait_port(&self, h: Host, ip: &str, port: u16, within: Duration) {
        super::wait_for(within, &format!("{ip}:{port} in {h:?}"), || async {
            let st = self
                .tokio_command(h, "/bin/bash")
                .args(["-c", &format!("exec 3<>/dev/tcp/{ip}/{port}")])
                .stderr(Stdio::null())
                .status()
                .await
                .ok()?;
            st.success().then_some(())
        })
        .await;
    }
}

fn kill(pid: i32) {
    // SAFETY: kill(2) on a PID this test started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for c in &mut self.children {
            kill(c.id() as i32);
            let _ = c.wait();
        }
        for p in &self.pidfiles {
            if let Some(pid) = std::fs::read_to_string(p).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
                kill(pid);
            }
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// The test bed with understudy (DNS mode) on the monitor, nginx on primary and backup, and
/// unbound on the client.
pub struct Bed {
    pub tb: Testbed,
    pub token: std::path::PathBuf,
    pub primary_pidfile: std::path::PathBuf,
    pub primary_start: String,
    pub resolver: std::net::SocketAddr,
}

pub const API: &str = "http://198.18.0.2:9190";

/// The quick-start service with `[dns]`, checks on port 80, on the monitor host.
pub fn config(dir: &Path, interval: &str, timeout: &str, hold: &str, ttl: u32) -> String {
    format!(
        r#"[daemon]
data_dir = "{data}"
api = "{MONITOR}:9190"
api_token_file = "token"

[[service]]
name = "www"
failback = "auto"
failback_hold = "{hold}"
all_down = "primary"

[service.check]
kind = "http"
port = 80
path = "/"
expect_status = [200]
interval = "{interval}"
timeout = "{timeout}"
fall = 3
rise = 2

[[service.target]]
name = "primary"
address = "{PRIMARY}"

[[service.target]]
name = "backup"
address = "{BACKUP}"

[dns]
listen = ["{MONITOR}:53"]

[[dns.zone]]
name = "example.test"
nameservers = {{ "ns1.example.test" = "{MONITOR}" }}

[[dns.zone.record]]
name = "www"
service = "www"
ttl = {ttl}

[drill.targets]
detection = "30s"
switch = "1s"
rto = "10s"
"#,
        data = dir.join("data").display()
    )
}

pub async fn bed(dir: &Path, interval: &str, timeout: &str, hold: &str, ttl: u32) -> Bed {
    bed_with_config(dir, &config(dir, interval, timeout, hold, ttl)).await
}

/// [`bed`] with the daemon's config text given (e.g. [`config`] with a key added).
pub async fn bed_with_config(dir: &Path, text: &str) -> Bed {
    let mut tb = Testbed::new(dir);
    let (primary_pidfile, primary_start) = tb.nginx(Host::Primary, "primary");
    tb.nginx(Host::Backup, "backup");
    let token = dir.join("token");
    std::fs::write(&token, "drill-token\n").unwrap();
    let cfg = dir.join("understudy.toml");
    std::fs::write(&cfg, text).unwrap();
    tb.spawn(Host::Monitor, super::understudy_bin(), &["run", "-c", cfg.to_str().unwrap()], &dir.join("daemon.log"));
    let resolver = tb.unbound();
    tb.wait_port(Host::Client, MONITOR, 9190, Duration::from_secs(15)).await;
    let b = Bed { tb, token, primary_pidfile, primary_start, resolver };
    super::wait_for(Duration::from_secs(15), "primary active", || async { (b.active().await.as_deref() == Some("primary")).then_some(()) }).await;
    b
}

impl Bed {
    /// The CLI on the client host, talking to the monitor's API.
    pub async fn cli(&self, args: &[&str]) -> Output {
        self.tb
            .tokio_command(Host::Client, super::understudy_bin())
            .args(args)
            .args(["--api", API, "--token-file", self.token.to_str().unwrap()])
            .output()
            .await
            .unwrap()
    }

    pub async fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cli(args).await;
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    pub async fn active(&self) -> Option<String> {
        let out = self.cli(&["status", "www", "--json"]).await;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v[0]["active"].as_str().map(str::to_string)
    }

    /// Decision reasons recorded so far.
    pub async fn decisions(&self) -> Vec<String> {
        let out = self.cli(&["events", "--json"]).await;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["event"]["kind"] == "decision")
            .map(|e| e["event"]["reason"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

