//! The load-balancer level with real peers: a real HAProxy steered through its admin socket, a
//! real nginx as the load balancer (upstream file + reload), and the built-in proxy, each in
//! front of two real nginx backends on 127.0.0.2 (primary) and 127.0.0.3 (backup).
//!
//! Client loops are bounded in count and time and use one connection per request (no
//! keep-alive), so every request shows where the traffic goes at that moment.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// One HTTP/1.0 request on a fresh connection: (status, body).
async fn get(addr: SocketAddr, path: &str) -> Result<(u16, Vec<u8>), String> {
    let run = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: www\r\nConnection: close\r\n\r\n").as_bytes()).await.map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| format!("no response header in {} bytes", buf.len()))?;
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("bad status line: {head}"))?;
        Ok((status, buf[end + 4..].to_vec()))
    };
    tokio::time::timeout(Duration::from_secs(10), run).await.map_err(|_| "no answer in 10 s".to_string())?
}

/// Which backend answered `/` (its body is its name), or why the request failed.
async fn who(addr: SocketAddr) -> Result<String, String> {
    match get(addr, "/").await? {
        (200, body) => Ok(String::from_utf8_lossy(&body).trim().to_string()),
        (status, body) => Err(format!("status {status}: {}", String::from_utf8_lossy(&body).trim())),
    }
}

/// The two backends, with a slow `/big` (768 KiB at 256 KiB/s: about 3 s) besides `/health`
/// and `/` (which answer the backend's name).
async fn backends() -> (tempfile::TempDir, u16, Nginx, Nginx) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_on(&["127.0.0.2", "127.0.0.3"]);
    let mut out = Vec::new();
    for (name, ip) in [("primary", "127.0.0.2"), ("backup", "127.0.0.3")] {
        let n = Nginx::new(dir.path(), name, ip, port);
        // Same paths as the support helper's config, one more location.
        let d = dir.path().join(format!("nginx-{name}"));
        std::fs::write(d.join("big.bin"), vec![b'x'; 768 * 1024]).unwrap();
        let d = d.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               server {{\n    listen {ip}:{port} backlog=1024;\n    location = /health {{ default_type text/plain; return 200 \"{name} ok\\n\"; }}\n\
                 location = /big {{ alias {d}/big.bin; default_type application/octet-stream; limit_rate 262144; }}\n\
                 location / {{ default_type text/plain; return 200 \"{name}\\n\"; }}\n  }}\n}}\n"
        );
        std::fs::write(dir.path().join(format!("nginx-{name}")).join("nginx.conf"), conf).unwrap();
        out.push(n);
    }
    let mut backup = out.pop().unwrap();
    let mut primary = out.pop().unwrap();
    primary.start().await;
    backup.start().await;
    (dir, port, primary, backup)
}

/// A process the test started, killed by PID when dropped.
struct Peer(Option<Child>);

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            // SIGTERM first: an nginx master stops its workers on it (a SIGKILLed master leaves
            // them behind, still listening); then SIGKILL whatever is left after 3 s.
            // SAFETY: kill(2) on a PID we started.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            loop {
                if c.try_wait().ok().flatten().is_some() {
                    return; // exited and reaped
                }
                if std::time::Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // SAFETY: kill(2) on our child, which has not exited (not reaped, so the PID is ours).
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

/// Answers per backend name, failures with their messages, the longest request.
type LoopResult = (Vec<(String, u64)>, Vec<String>, Duration);

/// A client loop through `addr`: one request per connection, until `stop` or `max` requests
/// or `within`. Returns (answers per backend name, failures with their messages).
fn client_loop(addr: SocketAddr, stop: Arc<AtomicBool>, done: Arc<AtomicU64>, max: u64, within: Duration) -> tokio::task::JoinHandle<LoopResult> {
    tokio::spawn(async move {
        let deadline = Instant::now() + within;
        let mut seen: Vec<(String, u64)> = Vec::new();
        let mut failures = Vec::new();
        let mut longest = Duration::ZERO;
        for _ in 0..max {
            if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                break;
            }
            let t = Instant::now();
            match who(addr).await {
                Ok(name) => match seen.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, c)) => *c += 1,
                    None => seen.push((name, 1)),
                },
                Err(e) => failures.push(e),
            }
            longest = longest.max(t.elapsed());
            done.fetch_add(1, Ordering::Relaxed);
        }
        (seen, failures, longest)
    })
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_in_proxy_loses_no_request_when_the_primary_crashes_and_drains_on_failback() {
    let (dir, port, mut primary, _backup) = backends().await;
    let listen = SocketAddr::new("127.0.0.1".parse().unwrap(), free_port("127.0.0.1"));
    let api = api_addr();
    let extra = format!("\n[[proxy]]\nservice = \"www\"\nlisten = [\"{listen}\"]\non_switch = \"drain\"\ndrain_timeout = \"30s\"\nconnect_timeout = \"500ms\"\n");
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "1s", &extra);
    let d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("www", "primary", Duration::from_secs(5)).await;
    assert_eq!(who(listen).await.unwrap(), "primary");

    // A bounded loop of fresh connections while the primary's nginx is killed.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let load = client_loop(listen, stop.clone(), done.clone(), 50_000, Duration::from_secs(40));
    wait_for(Duration::from_secs(10), "100 requests before the crash", || async { (done.load(Ordering::Relaxed) >= 100).then_some(()) }).await;
    primary.kill();
    d.wait_active("www", "backup", Duration::from_secs(10)).await;
    let at_decision = done.load(Ordering::Relaxed);
    wait_for(Duration::from_secs(10), "200 requests after the failover", || async { (done.load(Ordering::Relaxed) >= at_decision + 200).then_some(()) }).await;
    stop.store(true, Ordering::Relaxed);
    let (seen, failures, longest) = load.await.unwrap();
    assert!(failures.is_empty(), "{} failed requests through the proxy (answers: {seen:?}): {:?}", failures.len(), &failures[..failures.len().min(5)]);
    let count = |n: &str| seen.iter().find(|(s, _)| s == n).map(|(_, c)| *c).unwrap_or(0);
    assert!(count("primary") >= 100 && count("backup") >= 200, "{seen:?}");
    eprintln!("proxy: {seen:?}, longest request {longest:?}");

    // The crashed primary was passed over at least once (a retry, not luck), and the proxy
    // counted what it did.
    let m = http().get(format!("{}/metrics", d.api)).send().await.unwrap().text().await.unwrap();
    assert!(metric(&m, "understudy_proxy_retries_total") >= 1.0, "{m}");
    assert!(metric(&m, "understudy_proxy_connections_total") >= 300.0);
    assert!(metric(&m, "understudy_proxy_bytes_total{service=\"www\",direction=\"to_client\"}") > 0.0);

    // Failback with drain: a long transfer from the backup, begun before the failback, ends
    // complete while new connections already go to the primary.
    let big = tokio::spawn(async move { get(listen, "/big").await });
    wait_for(Duration::from_secs(5), "the long transfer to be open", || async {
        let m = http().get(format!("{}/metrics", d.api)).send().await.ok()?.text().await.ok()?;
        (metric(&m, "understudy_proxy_open_connections") >= 1.0).then_some(())
    })
    .await;
    primary.start().await;
    d.wait_active("www", "primary", Duration::from_secs(10)).await;
    wait_for(Duration::from_secs(5), "new connections to reach the primary", || async { (who(listen).await.ok()? == "primary").then_some(()) }).await;
    assert!(!big.is_finished(), "the long transfer ended before the failback; make it longer");
    let (status, body) = big.await.unwrap().expect("the in-flight transfer survives the failback");
    assert_eq!((status, body.len()), (200, 768 * 1024));
    let events = d.events().await;
    assert!(
        events.iter().any(|e| e["event"]["kind"] == "actuated" && e["event"]["actuator"] == "proxy" && e["event"]["detail"].as_str().unwrap().contains("drain")),
        "the proxy's step says what happens to open connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_switch_close_cuts_open_connections_to_the_old_target() {
    let (dir, port, mut primary, _backup) = backends().await;
    let listen = SocketAddr::new("127.0.0.1".parse().unwrap(), free_port("127.0.0.1"));
    let api = api_addr();
    let extra = format!("\n[[proxy]]\nservice = \"www\"\nlisten = [\"{listen}\"]\non_switch = \"close\"\n");
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "1s", &extra);
    let d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("www", "primary", Duration::from_secs(5)).await;
    primary.kill();
    d.wait_active("www", "backup", Duration::from_secs(10)).await;
    let big = tokio::spawn(async move { get(listen, "/big").await });
    primary.start().await;
    d.wait_active("www", "primary", Duration::from_secs(10)).await;
    let r = tokio::time::timeout(Duration::from_secs(2), big).await.expect("the transfer is cut at the switch, not left to finish").unwrap();
    assert!(r.as_ref().map_or(true, |(_, b)| b.len() < 768 * 1024), "the transfer was cut: {:?}", r.map(|(s, b)| (s, b.len())));
}

const HAPROXY: &str = "/usr/sbin/haproxy";

async fn haproxy_states(sock: &Path) -> Vec<(String, String)> {
    let ep = understudy::lb::config::Endpoint::Unix(sock.to_path_buf());
    let text = understudy::lb::haproxy::command(&ep, "show servers state www", Duration::from_secs(2)).await.expect("HAProxy answers");
    understudy::lb::haproxy::parse_servers_state(&text, "www").unwrap().into_iter().map(|s| (s.name.clone(), s.admin_state().to_string())).collect()
}

fn pair(a: &str, b: &str) -> Vec<(String, String)> {
    vec![("web1".into(), a.into()), ("web2".into(), b.into())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_follows_the_decision_through_its_admin_socket() {
    assert!(Path::new(HAPROXY).exists(), "haproxy is not installed: run scripts/install-test-deps.sh (apt-get install haproxy)");
    let (dir, port, mut primary, _backup) = backends().await;
    let front = SocketAddr::new("127.0.0.1".parse().unwrap(), free_port("127.0.0.1"));
    let sock = dir.path().join("haproxy.sock");
    let hcfg = dir.path().join("haproxy.cfg");
    // HAProxy's own checks stay on; both servers start ready, as an operator left them.
    std::fs::write(
        &hcfg,
        format!(
            "global\n  stats socket {} mode 600 level admin\n  maxconn 1000\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 10s\n  timeout server 10s\n\
             backend www\n  server web1 127.0.0.2:{port} check inter 1s fall 3 rise 2\n  server web2 127.0.0.3:{port} check inter 1s fall 3 rise 2\n\
             frontend f\n  bind {front}\n  default_backend www\n",
            sock.display()
        ),
    )
    .unwrap();
    let _haproxy = Peer(Some(
        Command::new(HAPROXY).arg("-db").arg("-f").arg(&hcfg).stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(dir.path().join("haproxy.log")).unwrap()).spawn().expect("start haproxy"),
    ));
    wait_for(Duration::from_secs(10), "HAProxy's admin socket", || async { tokio::net::UnixStream::connect(&sock).await.ok().map(|_| ()) }).await;

    let api = api_addr();
    let extra = format!("\n[[haproxy]]\nservice = \"www\"\nsocket = \"{}\"\nbackend = \"www\"\nservers = {{ primary = \"web1\", backup = \"web2\" }}\n", sock.display());
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "1s", &extra);
    let d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("www", "primary", Duration::from_secs(5)).await;
    let s = sock.clone();
    wait_for(Duration::from_secs(5), "web1 ready, web2 drained", || {
        let s = s.clone();
        async move { (haproxy_states(&s).await == pair("ready", "drain")).then_some(()) }
    })
    .await;
    for _ in 0..20 {
        assert_eq!(who(front).await.unwrap(), "primary", "only the active target takes traffic");
    }

    // Kill the primary: until understudy decides, HAProxy has no server to send to (web2 is
    // drained); once it has, traffic goes to the backup and the states match the decision.
    primary.kill();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let load = client_loop(front, stop.clone(), done.clone(), 20_000, Duration::from_secs(30));
    d.wait_active("www", "backup", Duration::from_secs(10)).await;
    let s = sock.clone();
    wait_for(Duration::from_secs(5), "web2 ready, web1 drained", || {
        let s = s.clone();
        async move { (haproxy_states(&s).await == pair("drain", "ready")).then_some(()) }
    })
    .await;
    let at = done.load(Ordering::Relaxed);
    wait_for(Duration::from_secs(10), "50 requests after the switch", || async { (done.load(Ordering::Relaxed) >= at + 50).then_some(()) }).await;
    stop.store(true, Ordering::Relaxed);
    let (seen, failures, _) = load.await.unwrap();
    assert!(seen.iter().any(|(n, c)| n == "backup" && *c >= 50), "traffic moved to the backup: {seen:?}");
    assert!(!seen.iter().any(|(n, _)| n == "primary"), "the dead primary answered nothing: {seen:?}");
    eprintln!("haproxy: {seen:?}, {} failed while understudy decided", failures.len());
    for _ in 0..20 {
        assert_eq!(who(front).await.unwrap(), "backup");
    }
    let events = d.events().await;
    assert!(events.iter().any(|e| e["event"]["actuator"] == "haproxy" && e["event"]["step"] == "verified" && e["event"]["ok"] == true), "verified with show servers state");

    // Failback moves it back.
    primary.start().await;
    d.wait_active("www", "primary", Duration::from_secs(10)).await;
    let s = sock.clone();
    wait_for(Duration::from_secs(5), "web1 ready again, web2 drained", || {
        let s = s.clone();
        async move { (haproxy_states(&s).await == pair("ready", "drain")).then_some(()) }
    })
    .await;
    // HAProxy's own check must see web1 up again before it sends traffic there.
    wait_for(Duration::from_secs(10), "traffic back on the primary", || async { (who(front).await.ok()? == "primary").then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_as_the_load_balancer_gets_a_new_upstream_file_and_keeps_the_old_one_when_its_test_fails() {
    let (dir, port, mut primary, _backup) = backends().await;
    let lb_dir = dir.path().join("lb");
    std::fs::create_dir_all(&lb_dir).unwrap();
    let front = SocketAddr::new("127.0.0.1".parse().unwrap(), free_port("127.0.0.1"));
    let upstream = lb_dir.join("upstream.conf");
    let extra_conf = lb_dir.join("extra.conf");
    std::fs::write(&upstream, format!("upstream www {{\n    server 127.0.0.2:{port};\n}}\n")).unwrap();
    std::fs::write(&extra_conf, "").unwrap();
    let d_ = lb_dir.display();
    let conf = lb_dir.join("nginx.conf");
    // A master process (reload needs one) kept in the foreground, so the test holds its PID.
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes 1;\npid {d_}/nginx.pid;\nerror_log {d_}/error.log warn;\nevents {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d_}/body;\n  proxy_temp_path {d_}/proxy;\n  fastcgi_temp_path {d_}/fastcgi;\n  uwsgi_temp_path {d_}/uwsgi;\n  scgi_temp_path {d_}/scgi;\n\
               include {};\n  include {};\n\
               server {{\n    listen {front};\n    location / {{ proxy_pass http://www; add_header X-Upstream-Addr $upstream_addr always; }}\n  }}\n}}\n",
            upstream.display(),
            extra_conf.display()
        ),
    )
    .unwrap();
    let nginx = nginx_binary();
    let _lb = Peer(Some(
        Command::new(nginx).arg("-c").arg(&conf).arg("-p").arg(&lb_dir).stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(lb_dir.join("stderr.log")).unwrap()).spawn().expect("start nginx"),
    ));
    wait_for(Duration::from_secs(10), "the load-balancer nginx", || async { (who(front).await.ok()? == "primary").then_some(()) }).await;

    let api = api_addr();
    let c = conf.display();
    let p = lb_dir.display();
    let extra = format!(
        "\n[[nginx]]\nservice = \"www\"\nupstream = \"www\"\nfile = \"{}\"\ntest = [\"{nginx}\", \"-t\", \"-q\", \"-c\", \"{c}\", \"-p\", \"{p}\"]\n\
         reload = [\"{nginx}\", \"-s\", \"reload\", \"-c\", \"{c}\", \"-p\", \"{p}\"]\nverify_url = \"http://{front}/\"\n",
        upstream.display()
    );
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "1s", &extra);
    let d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("www", "primary", Duration::from_secs(5)).await;
    let up = upstream.clone();
    wait_for(Duration::from_secs(10), "the upstream file written by understudy", || {
        let up = up.clone();
        async move { std::fs::read_to_string(&up).ok().filter(|t| t.contains(&format!("server 127.0.0.2:{port};\n    server 127.0.0.3:{port} backup;"))).map(|_| ()) }
    })
    .await;

    primary.kill();
    d.wait_active("www", "backup", Duration::from_secs(10)).await;
    let up = upstream.clone();
    wait_for(Duration::from_secs(10), "the upstream file to put the backup first", || {
        let up = up.clone();
        async move { std::fs::read_to_string(&up).ok().filter(|t| t.contains(&format!("server 127.0.0.3:{port};\n    server 127.0.0.2:{port} backup;"))).map(|_| ()) }
    })
    .await;
    wait_for(Duration::from_secs(10), "nginx to send traffic to the backup", || async { (who(front).await.ok()? == "backup").then_some(()) }).await;
    let verified = |events: &[serde_json::Value]| {
        events.iter().any(|e| e["event"]["actuator"] == "nginx" && e["event"]["step"] == "verified" && e["event"]["ok"] == true && e["event"]["detail"].as_str().unwrap().contains("127.0.0.3"))
    };
    wait_for(Duration::from_secs(10), "a verification through nginx naming the backup", || async { verified(&d.events().await).then_some(()) }).await;
    // The newest decision (a loaded machine may have flapped the backup on the way) is done
    // before nginx's config is broken: no apply of it is still between its test and its reload.
    let epoch = d.service("www").await["epoch"].as_u64().unwrap();
    wait_for(Duration::from_secs(20), "the newest decision's switch", || async {
        d.events().await.iter().any(|e| e["event"]["kind"] == "switched" && e["event"]["epoch"] == epoch && e["event"]["ok"] == true).then_some(())
    })
    .await;

    // Break nginx's config elsewhere: the failback's new file fails `nginx -t`, so the old one
    // (backup first) is put back and the step fails with nginx's own message.
    let before = std::fs::read_to_string(&upstream).unwrap();
    std::fs::write(&extra_conf, "this_is_not_a_directive on;\n").unwrap();
    primary.start().await;
    d.wait_active("www", "primary", Duration::from_secs(10)).await;
    let back = d.service("www").await["epoch"].as_u64().unwrap();
    let failed = wait_for(Duration::from_secs(10), "the failback's failed nginx step", || async {
        d.events()
            .await
            .into_iter()
            .find(|e| e["event"]["actuator"] == "nginx" && e["event"]["step"] == "applied" && e["event"]["epoch"] == back && e["event"]["ok"] == false)
            .map(|e| e["event"]["detail"].as_str().unwrap().to_string())
    })
    .await;
    assert!(failed.contains("this_is_not_a_directive") && failed.contains("previous file was put back"), "{failed}");
    assert_eq!(std::fs::read_to_string(&upstream).unwrap(), before, "the old upstream file is kept");
    assert_eq!(who(front).await.unwrap(), "backup", "nginx still runs the old config");
    let leftovers: Vec<_> = std::fs::read_dir(&lb_dir).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().contains(".tmp")).collect();
    assert!(leftovers.is_empty(), "no temporary file left behind: {leftovers:?}");
}
