//! Shared helpers for integration tests: real nginx instances, the real `understudy` binary,
//! and waiting on conditions with deadlines (never sleeping and hoping).
//!
//! Every process started here is stopped by PID when its guard drops.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Poll `cond` every 20 ms until it returns `Some`, or panic after `within` with `what`.
pub async fn wait_for<T, F, Fut>(within: Duration, what: &str, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP port that is free on `ip` right now.
pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0)).expect("bind port 0").local_addr().unwrap().port()
}

/// A port free on every one of `ips`.
pub fn free_port_on(ips: &[&str]) -> u16 {
    for _ in 0..100 {
        let port = free_port(ips[0]);
        if ips.iter().all(|ip| TcpListener::bind((*ip, port)).is_ok()) {
            return port;
        }
    }
    panic!("no port free on all of {ips:?}");
}

/// A port on `ip` that nobody listens on and nobody can take while the returned socket lives:
/// a TCP socket bound to it without listening. Connections are refused; the kernel neither
/// gives the port to another `bind` nor picks it as a source port. A test that later wants to
/// serve on it calls `listen` on the same socket (see the notify tests' receiver). Closing a
/// listener and reusing its number instead would race with every other test on the machine.
pub fn closed_port(ip: &str) -> (tokio::net::TcpSocket, SocketAddr) {
    let addr = SocketAddr::new(ip.parse::<IpAddr>().expect("ip"), 0);
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }.expect("create a TCP socket");
    socket.bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let addr = socket.local_addr().expect("local addr");
    (socket, addr)
}

/// `text` without terminal colour codes (`ESC [ ... m`), as tracing writes them.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a PID we started.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// A real nginx serving `/health` (200 "<name> ok") on one address, started by the test.
///
/// While it is killed its port stays held (bound with SO_REUSEADDR, not listening): connections
/// are refused as after a crash, no other process can bind the port meanwhile (other tests'
/// servers get their ports from `bind(0)`, which never hands out a bound port), and nginx, which
/// binds with SO_REUSEADDR too, can take it back on `start`.
pub struct Nginx {
    pub addr: SocketAddr,
    pub name: String,
    dir: PathBuf,
    child: Option<Child>,
    held: Option<tokio::net::TcpSocket>,
}

pub fn nginx_binary() -> &'static str {
    let path = "/usr/sbin/nginx";
    assert!(Path::new(path).exists(), "nginx is not installed: run scripts/install-test-deps.sh (apt-get install nginx-light)");
    path
}

impl Nginx {
    pub fn new(dir: &Path, name: &str, ip: &str, port: u16) -> Nginx {
        let dir = dir.join(format!("nginx-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let addr = SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port);
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               server {{\n    listen {addr};\n    location = /health {{ default_type text/plain; return 200 \"{name} ok\\n\"; }}\n    location / {{ default_type text/plain; return 200 \"{name}\\n\"; }}\n  }}\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        Nginx { addr, name: name.to_string(), dir, child: None, held: None }
    }

    /// Start and wait until it accepts connections.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "nginx {} already running", self.name);
        let child = Command::new(nginx_binary())
            .arg("-c")
            .arg(self.dir.join("nginx.conf"))
            .arg("-p")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("stderr.log")).unwrap())
            .spawn()
            .expect("start nginx");
        self.child = Some(child);
        let addr = self.addr;
        let dir = self.dir.clone();
        wait_for(Duration::from_secs(10), &format!("nginx on {addr} (see {})", dir.display()), || async move {
            tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
        })
        .await;
        self.held = None;
    }

    /// Kill -9 (a crash, not a graceful stop) and reap it; hold its port until `start`.
    /// Whether it was started and not killed.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), libc::SIGKILL);
            let _ = c.wait();
            let socket = if self.addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }.expect("create a TCP socket");
            socket.set_reuseaddr(true).expect("SO_REUSEADDR");
            socket.bind(self.addr).unwrap_or_else(|e| panic!("hold nginx {}'s port {} while it is down: {e}", self.name, self.addr));
            self.held = Some(socket);
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP client for talking to the daemon (no proxy; installs the TLS crypto provider).
pub fn http() -> reqwest::Client {
    understudy::probe::http::install_crypto_provider();
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap()
}

pub fn understudy_bin() -> &'static str {
    env!("CARGO_BIN_EXE_understudy")
}

/// The real `understudy run`, with its config in a file and its logs captured.
pub struct Daemon {
    pub api: String,
    pub config: PathBuf,
    pub log: PathBuf,
    /// Extra environment variables for the daemon process.
    pub env: Vec<(String, String)>,
    /// Run the daemon with this group id (still as root), so that nftables can match its
    /// sockets (`meta skgid`) and cut this one process off from an address.
    pub gid: Option<u32>,
    child: Option<Child>,
}

impl Daemon {
    /// Write `config` to `dir/understudy.toml` and start the daemon; wait for `/healthz`.
    pub async fn start(dir: &Path, config: &str, api: SocketAddr) -> Daemon {
        Daemon::start_with_env(dir, config, api, &[]).await
    }

    /// [`Daemon::start`] with extra environment variables for the daemon.
    pub async fn start_with_env(dir: &Path, config: &str, api: SocketAddr, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_as(dir, config, api, env, None).await
    }

    /// [`Daemon::start_with_env`], with the daemon's group id set to `gid`.
    pub async fn start_as(dir: &Path, config: &str, api: SocketAddr, env: &[(&str, &str)], gid: Option<u32>) -> Daemon {
        let path = dir.join("understudy.toml");
        std::fs::write(&path, config).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut d = Daemon { api: format!("http://{api}"), config: path, log: dir.join("daemon.log"), env, gid, child: None };
        d.spawn();
        d.wait_healthy().await;
        d
    }

    /// Start again after `kill9`. The API port the dead daemon had is not reused (another
    /// process may have taken it meanwhile): the config asks for port 0 on the same address and
    /// the port the daemon bound is read from its start-up line in the log.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none());
        let old: SocketAddr = self.api.trim_start_matches("http://").parse().expect("api address");
        let config = std::fs::read_to_string(&self.config).unwrap();
        let any_port = SocketAddr::new(old.ip(), 0);
        let replaced = config.replace(&format!("api = \"{old}\""), &format!("api = \"{any_port}\""));
        assert!(replaced != config || config.contains(&format!("api = \"{any_port}\"")), "the config names its API as api = \"{old}\"");
        std::fs::write(&self.config, replaced).unwrap();
        let logged_before = std::fs::metadata(&self.log).map(|m| m.len() as usize).unwrap_or(0);
        self.spawn();
        let log = self.log.clone();
        let api = wait_for(Duration::from_secs(15), &format!("the restarted daemon's API address in {}", log.display()), || {
            let log = log.clone();
            async move {
                let text = strip_ansi(&String::from_utf8_lossy(&std::fs::read(&log).ok()?.split_off(logged_before)));
                let line = text.lines().find(|l| l.contains("understudy is running"))?;
                line.split_whitespace().find_map(|w| w.strip_prefix("api=")).and_then(|a| a.parse::<SocketAddr>().ok())
            }
        })
        .await;
        self.api = format!("http://{api}");
        self.wait_healthy().await;
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut cmd = Command::new(understudy_bin());
        if let Some(gid) = self.gid {
            std::os::unix::process::CommandExt::gid(&mut cmd, gid);
        }
        let child = cmd
            .args(["run", "-c"])
            .arg(&self.config)
            .env("UNDERSTUDY_LOG", "debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start understudy");
        self.child = Some(child);
    }

    async fn wait_healthy(&self) {
        let url = format!("{}/healthz", self.api);
        let logp = self.log.clone();
        wait_for(Duration::from_secs(15), &format!("understudy API at {url} (log: {})", logp.display()), || {
            let url = url.clone();
            async move { http().get(&url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await;
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    pub fn signal(&self, sig: i32) {
        signal(self.pid(), sig);
    }

    /// kill -9 and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), libc::SIGKILL);
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit status (with a deadline).
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("daemon running");
        signal(c.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "daemon did not exit after SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn get(&self, path: &str) -> serde_json::Value {
        let url = format!("{}{path}", self.api);
        let r = http().get(&url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert!(r.status().is_success(), "GET {url}: {}", r.status());
        r.json().await.unwrap()
    }

    pub async fn service(&self, name: &str) -> serde_json::Value {
        self.get(&format!("/api/v1/services/{name}")).await
    }

    /// The active target of `service`, if decided.
    pub async fn active(&self, service: &str) -> Option<String> {
        let s = self.service(service).await;
        s["active"].as_str().map(str::to_string)
    }

    pub async fn events(&self) -> Vec<serde_json::Value> {
        let v = self.get("/api/v1/events?since=0&limit=10000").await;
        v["events"].as_array().cloned().unwrap_or_default()
    }

    /// Wait until `service`'s active target is `target`.
    pub async fn wait_active(&self, service: &str, target: &str, within: Duration) {
        wait_for(within, &format!("{service} active = {target}"), || async {
            (self.active(service).await.as_deref() == Some(target)).then_some(())
        })
        .await;
    }

    /// Run the CLI against this daemon, with its config (so the CLI finds the token the way an
    /// operator's CLI does).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(understudy_bin())
            .args(args)
            .arg("--api")
            .arg(&self.api)
            .arg("-c")
            .arg(&self.config)
            .env_remove("UNDERSTUDY_TOKEN")
            .output()
            .expect("run understudy CLI")
    }

    /// The data directory named in the config.
    pub fn data_dir(&self) -> PathBuf {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let v: toml::Value = toml::from_str(&text).unwrap();
        PathBuf::from(v["daemon"]["data_dir"].as_str().expect("the test config names a data_dir"))
    }

    /// The bearer token the daemon generated in its data directory.
    pub fn token(&self) -> String {
        let path = self.data_dir().join("api-token");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())).trim().to_string()
    }

    /// An authenticated JSON POST, as the CLI sends it.
    pub async fn post(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        let url = format!("{}{path}", self.api);
        http().post(&url).bearer_auth(self.token()).json(&body).send().await.unwrap_or_else(|e| panic!("POST {url}: {e}"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The quick-start config with test addresses, port and timings.
pub fn two_target_config(data_dir: &Path, api: SocketAddr, port: u16, interval_ms: u64, hold: &str, extra: &str) -> String {
    format!(
        r#"[daemon]
data_dir = "{data}"
api = "{api}"

[[service]]
name = "www"
failback = "auto"
failback_hold = "{hold}"
all_down = "primary"

[service.check]
kind = "http"
port = {port}
path = "/health"
expect_status = [200]
interval = "{interval_ms}ms"
timeout = "{timeout_ms}ms"
fall = 3
rise = 2

[[service.target]]
name = "primary"
address = "127.0.0.2"

[[service.target]]
name = "backup"
address = "127.0.0.3"
{extra}"#,
        data = data_dir.display(),
        timeout_ms = interval_ms * 3 / 5,
    )
}

/// A temporary directory and two running nginx on one free port: the primary on 127.0.0.2 and
/// the backup on 127.0.0.3.
pub async fn two_nginx() -> (tempfile::TempDir, u16, Nginx, Nginx) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_on(&["127.0.0.2", "127.0.0.3"]);
    let mut primary = Nginx::new(dir.path(), "primary", "127.0.0.2", port);
    let mut backup = Nginx::new(dir.path(), "backup", "127.0.0.3", port);
    primary.start().await;
    backup.start().await;
    (dir, port, primary, backup)
}

pub fn api_addr() -> SocketAddr {
    SocketAddr::new("127.0.0.1".parse().unwrap(), free_port("127.0.0.1"))
}

pub mod netns;
pub mod pg;

/// `understudy run -c CONFIG` with extra environment variables, its output appended to `log`;
/// killed by PID when dropped. For tests that need what `Daemon` does not give (TLS, a
/// `NOTIFY_SOCKET`): the caller waits for readiness itself.
pub struct Proc {
    child: Option<Child>,
}

impl Proc {
    pub fn spawn(config: &Path, log: &Path, envs: &[(&str, &str)]) -> Proc {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(understudy_bin())
            .args(["run", "-c"])
            .arg(config)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start understudy");
        Proc { child: Some(child) }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().expect("running").try_wait().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), libc::SIGKILL);
            let _ = c.wait();
        }
    }
}

/// A `[dns]` block for the test zone `example.test` on `listen`, with the failover record
/// `www` (TTL 5) for service `www`. Append more `[[dns.zone.record]]` tables after it.
pub fn dns_block(listen: &str) -> String {
    format!(
        r#"
[dns]
listen = ["{listen}"]
udp_workers = 1

[[dns.zone]]
name = "example.test"
nameservers = {{ "ns1.example.test" = "127.0.0.1" }}

[[dns.zone.record]]
name = "www"
service = "www"
ttl = 5
"#
    )
}

/// A service whose two targets flip with a flag file (exec check `test -e FLAG`, 50 ms, fall and
/// rise 1): events are written many times a second while [`toggle_flag`] runs. `daemon_extra`
/// goes into `[daemon]`.
pub fn flappy_config(data: &Path, api: SocketAddr, flag: &Path, daemon_extra: &str) -> String {
    format!(
        r#"[daemon]
data_dir = "{data}"
api = "{api}"
{daemon_extra}
[[service]]
name = "flappy"
failback_hold = "0s"
[service.check]
kind = "exec"
command = "test -e {flag}"
interval = "50ms"
timeout = "40ms"
fall = 1
rise = 1
[[service.target]]
name = "a"
address = "127.0.0.2"
[[service.target]]
name = "b"
address = "127.0.0.3"
"#,
        data = data.display(),
        flag = flag.display()
    )
}

/// Create and remove `flag` every `every`, `times` times (bounded: it stops by itself).
pub fn toggle_flag(flag: &Path, times: u32, every: Duration) -> tokio::task::JoinHandle<()> {
    let flag = flag.to_path_buf();
    tokio::spawn(async move {
        for i in 0..times {
            if i % 2 == 0 {
                let _ = std::fs::write(&flag, b"");
            } else {
                let _ = std::fs::remove_file(&flag);
            }
            tokio::time::sleep(every).await;
        }
    })
}
