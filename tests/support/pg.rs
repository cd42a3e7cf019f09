//! Real PostgreSQL 15 clusters for the failover tests and benchmark: a primary and streaming
//! standbys on their own 127.x.y.z addresses (one port shared by all, as on separate hosts),
//! run as the `postgres` user from Debian's `postgresql-15` in a temporary directory.
//!
//! Every server is stopped by PID (`pg_ctl stop -m immediate` reads `postmaster.pid`) when the
//! cluster drops. Servers run in the foreground as children of the test (`runuser -- postgres
//! -D`), not daemonized by `pg_ctl start`: a daemonized postmaster killed with `kill -9` is
//! reparented to PID 1, and where PID 1 does not reap promptly (a container's init) it stays a
//! zombie whose PID still answers `kill(pid, 0)`, so restarting that node fails with `lock file
//! "postmaster.pid" already exists` (issue 14's flaky sync test). A child the test waits for
//! is gone when `kill9` returns. The monitoring login `understudy` gets the least privileges the README
//! lists (no superuser); the application login `app` owns the test tables. Passwords are
//! checked with `md5`, not SCRAM: SCRAM's 4096 PBKDF2 rounds take over 500 ms (the check
//! timeout) in an unoptimised test build on a busy 2-core machine, and each check logs in anew.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const BIN: &str = "/usr/lib/postgresql/15/bin";
pub const APP_PASSWORD: &str = "app-secret";
pub const MON_PASSWORD: &str = "mon-secret";

/// One server of the cluster.
pub struct Node {
    pub name: String,
    pub ip: IpAddr,
    pub dir: PathBuf,
}

pub struct Cluster {
    pub tmp: tempfile::TempDir,
    pub port: u16,
    pub nodes: Vec<Node>,
    /// The foreground server process of each node this cluster started (see the module doc).
    children: std::sync::Mutex<Vec<Option<std::process::Child>>>,
}

fn bin(name: &str) -> String {
    let p = format!("{BIN}/{name}");
    assert!(Path::new(&p).is_file(), "{p} is missing: install Debian's postgresql-15 (scripts/install-test-deps.sh)");
    p
}

/// Run `argv` as the postgres user; panic with its output when it fails.
pub fn as_postgres(argv: &[&str]) -> String {
    let out = Command::new("runuser").args(["-u", "postgres", "--"]).args(argv).output().expect("runuser");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{argv:?} failed: {text}");
    text
}

/// Three random addresses 127.a.b.{11,12,13}, so parallel tests never share one.
fn addresses(n: usize) -> Vec<IpAddr> {
    let a = 30 + (rand::random::<u8>() % 200);
    let b = rand::random::<u8>();
    (0..n).map(|i| format!("127.{a}.{b}.{}", 11 + i).parse().unwrap()).collect()
}

impl Cluster {
    /// A primary `pg1` and standbys `pg2`.. streaming from it. With `sync`,
    /// `synchronous_standby_names = 'FIRST 1 (pg1, pg2, pg3)'` (pg2 is the synchronous one).
    pub fn start(standbys: usize, sync: bool) -> Cluster {
        let tmp = tempfile::Builder::new().prefix("understudy-pg").tempdir().unwrap();
        chmod(tmp.path(), 0o755);
        let ips = addresses(standbys + 1);
        let ip_strs: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
        let port = super::free_port_on(&ip_strs.iter().map(String::as_str).collect::<Vec<_>>());
        let mut nodes = Vec::new();
        for (i, ip) in ips.iter().enumerate() {
            let dir = tmp.path().join(format!("pg{}", i + 1));
            std::fs::create_dir(&dir).unwrap();
            chmod(&dir, 0o700);
            chown_postgres(&dir);
            nodes.push(Node { name: format!("pg{}", i + 1), ip: *ip, dir });
        }
        let children = std::sync::Mutex::new(nodes.iter().map(|_| None).collect());
        let c = Cluster { tmp, port, nodes, children };
        let p = &c.nodes[0];
        let pw = c.tmp.path().join("pw");
        std::fs::write(&pw, "postgres-secret\n").unwrap();
        chmod(&pw, 0o644);
        as_postgres(&[&bin("initdb"), "-D", p.dir.to_str().unwrap(), "-U", "postgres", "--pwfile", pw.to_str().unwrap(), "--data-checksums", "-A", "trust"]);
        std::fs::write(
            p.dir.join("pg_hba.conf"),
            "local all all trust\nhost replication replicator 127.0.0.0/8 trust\nhost all all 127.0.0.0/8 md5\n",
        )
        .unwrap();
        append(
            &p.dir.join("postgresql.conf"),
            "wal_level = replica\nmax_wal_senders = 10\nhot_standby = on\nwal_log_hints = on\nfsync = off\nshared_buffers = 16MB\nmax_connections = 40\nwal_receiver_status_interval = 1s\nwal_keep_size = 256MB\nwal_retrieve_retry_interval = 500ms\n",
        );
        c.node_conf(0);
        c.pg_ctl(0, "start");
        let setup = format!(
            "SET password_encryption = 'md5';
             CREATE ROLE replicator REPLICATION LOGIN;
             CREATE ROLE understudy LOGIN PASSWORD '{MON_PASSWORD}' IN ROLE pg_monitor, pg_signal_backend, pg_read_all_settings, pg_checkpoint;
             GRANT EXECUTE ON FUNCTION pg_promote(boolean, integer) TO understudy;
             GRANT EXECUTE ON FUNCTION pg_reload_conf() TO understudy;
             GRANT ALTER SYSTEM ON PARAMETER primary_conninfo, default_transaction_read_only TO understudy;
             GRANT EXECUTE ON FUNCTION pg_ls_dir(text, boolean, boolean), pg_stat_file(text, boolean), pg_read_binary_file(text), pg_read_binary_file(text, bigint, bigint, boolean) TO understudy;
             CREATE ROLE app LOGIN PASSWORD '{APP_PASSWORD}';"
        );
        c.psql(0, "postgres", &setup);
        c.psql(0, "postgres", "CREATE DATABASE app OWNER app");
        c.psql(0, "app", "SET ROLE app; CREATE TABLE acks (id bigint PRIMARY KEY);");
        for i in 1..c.nodes.len() {
            let d = &c.nodes[i];
            let host = c.nodes[0].ip.to_string();
            let port = c.port.to_string();
            as_postgres(&[&bin("pg_basebackup"), "-h", &host, "-p", &port, "-U", "replicator", "-D", d.dir.to_str().unwrap(), "-X", "stream", "-c", "fast"]);
            std::fs::write(d.dir.join("standby.signal"), "").unwrap();
            c.node_conf(i);
            append(&d.dir.join("postgresql.auto.conf"), &format!("primary_conninfo = '{}'\n", c.conninfo(&d.name, 0)));
            c.pg_ctl(i, "start");
        }
        if sync {
            // Only now: with it set, the setup's own commits would wait for a standby.
            for i in 0..c.nodes.len() {
                c.psql(i, "postgres", "ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 (pg1, pg2, pg3)'");
                c.psql(i, "postgres", "SELECT pg_reload_conf()");
            }
        }
        c
    }

    /// What `replication_conninfo`'s default makes of `standby` following node `primary`.
    pub fn conninfo(&self, standby: &str, primary: usize) -> String {
        format!("host={} port={} user=replicator application_name={standby}", self.nodes[primary].ip, self.port)
    }

    fn node_conf(&self, i: usize) {
        let d = &self.nodes[i];
        let sock = self.tmp.path().join(format!("sock{}", i + 1));
        std::fs::create_dir_all(&sock).unwrap();
        chown_postgres(&sock);
        append(
            &d.dir.join("postgresql.conf"),
            &format!("listen_addresses = '{}'\nport = {}\nunix_socket_directories = '{}'\ncluster_name = '{}'\n", d.ip, self.port, sock.display(), d.name),
        );
    }

    pub fn socket_dir(&self, i: usize) -> PathBuf {
        self.tmp.path().join(format!("sock{}", i + 1))
    }

    /// `pg_ctl start|stop` for node `i` (start waits until it accepts connections).
    pub fn pg_ctl(&self, i: usize, action: &str) {
        let d = &self.nodes[i];
        let logs = self.tmp.path().join("logs");
        if !logs.is_dir() {
            std::fs::create_dir(&logs).unwrap();
            chown_postgres(&logs);
        }
        let log = logs.join(format!("{}.log", d.name));
        if action == "start" {
            self.start_foreground(i, &log);
            return;
        }
        as_postgres(&[&bin("pg_ctl"), "-D", d.dir.to_str().unwrap(), "-m", "fast", "-w", action]);
        if action == "stop" {
            self.reap(i);
        }
    }

    /// Start node `i`'s server as a child of the test and wait (at most 60 s, like `pg_ctl -w`)
    /// until `postmaster.pid` says it is ready (or a hot standby).
    fn start_foreground(&self, i: usize, log: &Path) {
        let d = &self.nodes[i];
        self.reap(i);
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new("runuser")
            .args(["-u", "postgres", "--", &bin("postgres"), "-D", d.dir.to_str().unwrap()])
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("runuser postgres");
        self.children.lock().unwrap()[i] = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let status = std::fs::read_to_string(d.dir.join("postmaster.pid")).ok().and_then(|s| s.lines().nth(7).map(|l| l.trim().to_string()));
            if matches!(status.as_deref(), Some("ready" | "standby")) {
                return;
            }
            let exited = self.children.lock().unwrap()[i].as_mut().and_then(|c| c.try_wait().ok().flatten());
            let tail = || std::fs::read_to_string(log).unwrap_or_default().lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
            assert!(exited.is_none(), "{} exited while starting ({exited:?}):\n{}", d.name, tail());
            assert!(std::time::Instant::now() < deadline, "{} not ready within 60 s:\n{}", d.name, tail());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for node `i`'s foreground server (if this cluster started one) to be gone.
    fn reap(&self, i: usize) {
        if let Some(mut child) = self.children.lock().unwrap()[i].take() {
            let _ = child.wait();
        }
    }

    /// The postmaster's PID of node `i`, from `postmaster.pid`.
    pub fn pid(&self, i: usize) -> Option<i32> {
        std::fs::read_to_string(self.nodes[i].dir.join("postmaster.pid")).ok()?.lines().next()?.trim().parse().ok()
    }

    /// `kill -9` the postmaster of node `i` and wait until its port is closed.
    pub fn kill9(&self, i: usize) {
        let pid = self.pid(i).expect("node is running");
        unsafe { libc::kill(pid, libc::SIGKILL) };
        // Our child (or runuser's, which then exits): waited for, so no zombie keeps its PID.
        self.reap(i);
        let addr = SocketAddr::new(self.nodes[i].ip, self.port);
        for _ in 0..500 {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for _ in 0..500 {
            // Gone, or a zombie nobody reaps (the postmaster's parent, pg_ctl, has exited).
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Its children (backends, checkpointer, walwriter) exit on their own once they notice;
        // until they have, the old shared memory is in use and a restart of this node fails.
        let dir = std::fs::canonicalize(&self.nodes[i].dir).unwrap_or_else(|_| self.nodes[i].dir.clone());
        for _ in 0..1000 {
            if !live_process_in(&dir) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Run SQL as the superuser over node `i`'s Unix socket.
    pub fn psql(&self, i: usize, db: &str, sql: &str) -> String {
        let sock = self.socket_dir(i);
        let port = self.port.to_string();
        as_postgres(&[&bin("psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", sock.to_str().unwrap(), "-p", &port, "-d", db, "-c", sql]).trim().to_string()
    }

    /// Like [`Cluster::psql`], but the error text instead of a panic.
    pub fn try_psql(&self, i: usize, db: &str, sql: &str) -> Result<String, String> {
        let sock = self.socket_dir(i);
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--", &bin("psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", sock.to_str().unwrap(), "-p", &self.port.to_string(), "-d", db, "-c", sql])
            .output()
            .expect("runuser psql");
        if out.status.success() { Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_string()) }
    }

    pub fn in_recovery(&self, i: usize) -> Option<bool> {
        self.try_psql(i, "postgres", "SELECT pg_is_in_recovery()").ok().map(|s| s == "t")
    }

    /// A `[[service]]` for this cluster (`kind = "postgres"`), with `extra` service keys.
    pub fn service_toml(&self, extra: &str, check_extra: &str) -> String {
        let pw = self.tmp.path().join("mon.pass");
        std::fs::write(&pw, MON_PASSWORD).unwrap();
        chmod(&pw, 0o644);
        let verify = if extra.contains("verify_every") { "" } else { "verify_every = \"1s\"\n" };
        let mut s = format!(
            "[[service]]\nname = \"db\"\nkind = \"postgres\"\n{verify}{extra}\n[service.check]\nkind = \"postgres\"\nport = {}\nuser = \"understudy\"\npassword_file = \"{}\"\ninterval = \"1s\"\ntimeout = \"500ms\"\nfall = 3\nrise = 2\n{check_extra}\n",
            self.port,
            pw.display()
        );
        for n in &self.nodes {
            s.push_str(&format!("[[service.target]]\nname = \"{}\"\naddress = \"{}\"\n", n.name, n.ip));
        }
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A failing test shows the servers' own logs (the directory goes with the cluster).
        if std::thread::panicking() {
            for n in &self.nodes {
                let log = std::fs::read_to_string(self.tmp.path().join("logs").join(format!("{}.log", n.name))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                eprintln!("---- {}.log (last {} lines) ----\n{}", n.name, tail.len(), tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
                if let Ok(rejoin) = std::fs::read_to_string(n.dir.join("understudy-rejoin.log")) {
                    let tail: Vec<&str> = rejoin.lines().rev().take(30).collect();
                    eprintln!("---- {} understudy-rejoin.log ----\n{}", n.name, tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
                }
            }
        }
        for n in &self.nodes {
            if let Some(pid) = std::fs::read_to_string(n.dir.join("postmaster.pid")).ok().and_then(|s| s.lines().next()?.trim().parse::<i32>().ok()) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for i in 0..self.nodes.len() {
            self.reap(i);
        }
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all(text.as_bytes()).unwrap();
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown_postgres(p: &Path) {
    let st = Command::new("chown").args(["postgres:postgres", p.to_str().unwrap()]).status().unwrap();
    assert!(st.success());
}

/// A client of the `app` database that finds the server through the daemon's DNS name.
pub struct NameClient {
    pub dns: SocketAddr,
    pub name: String,
    pub port: u16,
    conn: Option<(IpAddr, understudy::pg::client::Conn)>,
}

impl NameClient {
    pub fn new(dns: SocketAddr, name: &str, port: u16) -> NameClient {
        NameClient { dns, name: name.into(), port, conn: None }
    }

    /// Resolve the name (every time a new connection is needed) and run `sql`; on any error the
    /// connection is dropped, so the next call resolves and connects again.
    pub async fn exec(&mut self, sql: &str) -> Result<IpAddr, String> {
        if self.conn.is_none() {
            let ip = understudy::dns::client::resolve(self.dns, &self.name, Duration::from_millis(300)).await?;
            let login = understudy::pg::client::Login { user: "app".into(), password: Some(APP_PASSWORD.into()), dbname: "app".into() };
            let c = understudy::pg::client::connect(ip, self.port, &login, Duration::from_millis(500)).await?;
            self.conn = Some((ip, c));
        }
        let (ip, c) = self.conn.as_ref().unwrap();
        let ip = *ip;
        match tokio::time::timeout(Duration::from_secs(2), understudy::pg::client::rows(c, sql)).await {
            Ok(Ok(_)) => Ok(ip),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err("statement timed out".into())
            }
        }
    }
}

/// Is any live (not zombie) process working in `dir` (its current directory)? PostgreSQL's
/// processes run in their data directory.
fn live_process_in(dir: &Path) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else { return false };
    procs.flatten().any(|p| {
        let path = p.path();
        let in_dir = std::fs::read_link(path.join("cwd")).is_ok_and(|cwd| cwd == dir);
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        let zombie = stat.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z'));
        in_dir && !zombie
    })
}
