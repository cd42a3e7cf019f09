//! A real nginx on 127.0.0.2 for the probe tests, with its own config in a temporary directory.
//!
//! It serves three ports: `plain` (any host: `/health` 200 "ok", `/bad` 503, `/redirect` 301,
//! `/degraded` 200 "status: degraded"), `vhost` (`health.example.test` 200 "host ok", every
//! other host 404) and `tls` (HTTPS for `health.example.test` with a self-signed certificate
//! made by the `openssl` CLI). `plain` and `tls` log `$connection $ssl_session_reused $uri` per
//! request to `plain.log` and `tls.log` ([`Nginx::log`]). nginx runs in the foreground without a master process and is
//! killed by PID on drop. It must not touch anything outside its temporary directory and must
//! not skip when nginx or openssl is missing: it panics with a message saying what to install.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NGINX: &str = "/usr/sbin/nginx";
pub const HOST: &str = "health.example.test";
pub const IP: &str = "127.0.0.2";

pub struct Nginx {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub plain: SocketAddr,
    pub vhost: SocketAddr,
    pub tls: SocketAddr,
}

impl Nginx {
    /// Start nginx and wait until all its ports accept connections.
    pub fn start() -> Nginx {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} is missing: the probe tests need a real nginx (apt-get install -y nginx)"
        );
        let dir = tempfile::tempdir().expect("create temporary directory");
        let (cert, key) = self_signed_cert(dir.path());
        let plain = free_port();
        let vhost = free_port();
        let tls = free_port();
        let d = dir.path().display();
        let config = format!(
            r#"daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type text/plain;
    log_format conn '$connection $ssl_session_reused $uri';

    server {{
        listen {plain};
        access_log {d}/plain.log conn;
        location = /health {{ return 200 "ok\n"; }}
        location = /bad {{ return 503; }}
        location = /redirect {{ return 301 /health; }}
        location = /degraded {{ return 200 "status: degraded\n"; }}
        location = /echo-header {{ return 200 "x-check=$http_x_check\n"; }}
        location / {{ return 404; }}
    }}

    server {{
        listen {vhost} default_server;
        server_name _;
        location / {{ return 404 "wrong host\n"; }}
    }}
    server {{
        listen {vhost};
        server_name {HOST};
        location / {{ return 200 "host ok\n"; }}
    }}

    server {{
        listen {tls} ssl;
        server_name {HOST};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        access_log {d}/tls.log conn;
        location = /health {{ return 200 "tls ok\n"; }}
    }}
}}
"#,
            cert = cert.display(),
            key = key.display(),
        );
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config).expect("write nginx.conf");
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {NGINX}: {e}"));
        let mut nginx = Nginx { child: Some(child), dir, plain, vhost, tls };
        for addr in [plain, vhost, tls] {
            nginx.wait_ready(addr);
        }
        nginx
    }

    fn wait_ready(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let log = std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
                let mut stderr = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = io::Read::read_to_string(&mut e, &mut stderr);
                }
                panic!("nginx exited with {status} before listening on {addr}\n{stderr}\n{log}");
            }
            assert!(Instant::now() < deadline, "nginx did not listen on {addr} within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The lines of the access log `name` (`plain.log`, `tls.log`) once it has at least `n`
    /// (nginx writes a line when a request ends, just after the client has its answer).
    pub fn log(&self, name: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if lines.len() >= n {
                return lines;
            }
            assert!(Instant::now() < deadline, "{name} has {} lines, not {n}, after 10 s: {lines:?}", lines.len());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill nginx now (SIGKILL by PID) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port on 127.0.0.2 that was free a moment ago (the OS picks it; we release it for nginx).
pub fn free_port() -> SocketAddr {
    let listener = TcpListener::bind((IP, 0)).expect("bind 127.0.0.2:0");
    listener.local_addr().expect("local addr")
}

/// A closed port on 127.0.0.2 that no other process can take while the returned socket lives:
/// a TCP socket bound to it without listening. Connections to it are refused (RST), and the
/// kernel neither hands the port to another `bind` nor picks it as a connection's source port.
/// (Closing a listener and reusing its number is a race with every other test on the machine.)
pub fn closed_port() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("create a TCP socket");
    socket.bind(SocketAddr::new(IP.parse().expect("ip"), 0)).expect("bind 127.0.0.2:0");
    let addr = socket.local_addr().expect("local addr");
    (socket, addr)
}

/// Make a self-signed certificate for `HOST` valid for one day; returns (cert, key).
fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let output = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"])
        .arg("-subj")
        .arg(format!("/CN={HOST}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{HOST}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (apt-get install -y openssl): {e}"));
    assert!(output.status.success(), "openssl req failed: {}", String::from_utf8_lossy(&output.stderr));
    (cert, key)
}
