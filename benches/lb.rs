//! The load-balancer level (issue 15): the built-in proxy beside HAProxy, same backends, same run.
//!
//! 1. **Primary crash.** Two nginx backends (127.0.0.2 primary, 127.0.0.3 backup). A client
//!    runs 8 loops of HTTP/1.0 requests, one connection each, through the front for 5 s; the
//!    primary's nginx is killed (SIGKILL) after 1 s. Fronts: `understudy run` with a `[[proxy]]`
//!    (checks every 1 s, fall 3, like the anchor), and HAProxy 2.6 in HTTP mode with
//!    `check inter 1s fall 3` and the backup server marked `backup`: as is, with `option
//!    redispatch`, and with `observe layer4 error-limit 1 on-error mark-down`. Reported: failed
//!    requests and the longest stall (the longest any request waited, answered or not).
//! 2. **Throughput.** wrk (`-t1 -c32`, keep-alive, then `Connection: close`) through the
//!    understudy proxy and through HAProxy in TCP mode (`nbthread 1`), each front pinned to CPU
//!    1 with `taskset`, wrk and the nginx backend on CPU 0. Requests/s and p99 latency, alternating
//!    fronts run by run.
//!
//! Run: `cargo bench --bench lb -- [--runs 3] [--secs 5] [--crash-only | --throughput-only]`. Prints medians (and min-max) and the
//! ratios. It never panics on a failed run: a front that does not come up is reported and skipped.
//! Bounded: every request has a 10 s timeout, every load phase a fixed duration.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Nginx, free_port, free_port_on};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HAPROXY: &str = "/usr/sbin/haproxy";
const LOOPS: usize = 8;
const LOAD: Duration = Duration::from_secs(5);
const KILL_AT: Duration = Duration::from_secs(1);

fn median(v: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn cell(v: &[f64], decimals: usize) -> String {
    let Some(m) = median(v) else { return "-".into() };
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{m:.decimals$} ({lo:.decimals$}-{hi:.decimals$})")
}

/// A process the bench started, killed by PID when dropped.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a PID we started.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

async fn get(addr: SocketAddr) -> Result<String, String> {
    let run = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: www\r\n\r\n").await.map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&buf);
        if text.split_whitespace().nth(1) != Some("200") {
            return Err(text.lines().next().unwrap_or("empty answer").to_string());
        }
        Ok(text.rsplit("\r\n\r\n").next().unwrap_or("").trim().to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), run).await.map_err(|_| "timeout".to_string())?
}

/// `understudy run` with `config`: the binary in `UNDERSTUDY_BIN` (e.g. a release build while
/// the bench itself is built with `--profile dev`), else the one cargo built with this bench.
fn start_daemon(dir: &Path, config: &str) -> Option<Peer> {
    let bin = std::env::var("UNDERSTUDY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_understudy").to_string());
    let path = dir.join("understudy.toml");
    std::fs::write(&path, config).unwrap();
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
    match Command::new(&bin).args(["run", "-c"]).arg(&path).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn() {
        Ok(c) => Some(Peer(c)),
        Err(e) => {
            eprintln!("cannot start {bin}: {e}");
            None
        }
    }
}

async fn backends(dir: &Path) -> (u16, Nginx, Nginx) {
    let port = free_port_on(&["127.0.0.2", "127.0.0.3"]);
    let mut p = Nginx::new(dir, "primary", "127.0.0.2", port);
    let mut b = Nginx::new(dir, "backup", "127.0.0.3", port);
    p.start().await;
    b.start().await;
    (port, p, b)
}

fn daemon_config(dir: &Path, api: SocketAddr, port: u16, listen: SocketAddr) -> String {
    format!(
        "[daemon]\ndata_dir = \"{}\"\napi = \"{api}\"\nlog_format = \"json\"\n\n[[service]]\nname = \"www\"\nfailback_hold = \"30s\"\n\
         [service.check]\nkind = \"http\"\nport = {port}\npath = \"/health\"\ninterval = \"1s\"\ntimeout = \"500ms\"\nfall = 3\nrise = 2\n\
         [[service.target]]\nname = \"primary\"\naddress = \"127.0.0.2\"\n[[service.target]]\nname = \"backup\"\naddress = \"127.0.0.3\"\n\
         [[proxy]]\nservice = \"www\"\nlisten = [\"{listen}\"]\n",
        dir.join("data").display()
    )
}

fn haproxy_config(dir: &Path, mode: &str, front: SocketAddr, servers: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join(format!("haproxy-{}.cfg", front.port()));
    std::fs::write(
        &path,
        format!(
            "global\n  maxconn 4000\n  nbthread 1\ndefaults\n  mode {mode}\n  timeout connect 1s\n  timeout client 10s\n  timeout server 10s\n  retries 3\n{extra}\
             backend www\n{servers}frontend f\n  bind {front}\n  default_backend www\n"
        ),
    )
    .unwrap();
    path
}

fn start_haproxy(cfg: &Path, pin: Option<&str>) -> Option<Peer> {
    let mut cmd = match pin {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpu, HAPROXY]);
            c
        }
        None => Command::new(HAPROXY),
    };
    cmd.arg("-db").arg("-f").arg(cfg).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    match cmd.spawn() {
        Ok(c) => Some(Peer(c)),
        Err(e) => {
            eprintln!("cannot start haproxy: {e}");
            None
        }
    }
}

async fn wait_serving(front: SocketAddr, want: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if get(front).await.is_ok_and(|b| b == want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// One crash run: (failed requests, longest stall in ms after the kill, requests answered,
/// longest wait in ms before the kill: the noise floor of this machine at that moment).
async fn crash_run(front: SocketAddr, primary: &mut Nginx) -> (f64, f64, f64, f64) {
    let start = Instant::now();
    let mut loops = Vec::new();
    for _ in 0..LOOPS {
        loops.push(tokio::spawn(async move {
            let (mut failed, mut ok, mut longest, mut before, mut at) = (0u64, 0u64, Duration::ZERO, Duration::ZERO, Duration::ZERO);
            while start.elapsed() < LOAD {
                let t = Instant::now();
                let r = get(front).await;
                if t.duration_since(start) + t.elapsed() < KILL_AT {
                    before = before.max(t.elapsed());
                    continue;
                }
                match r {
                    Ok(_) => ok += 1,
                    Err(_) => failed += 1,
                }
                if t.elapsed() > longest {
                    longest = t.elapsed();
                    at = t.duration_since(start);
                }
            }
            (failed, ok, longest, before, at)
        }));
    }
    tokio::time::sleep(KILL_AT).await;
    primary.kill();
    let (mut failed, mut ok, mut longest, mut before, mut at) = (0, 0, Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for l in loops {
        let (f, o, lg, b, a) = l.await.unwrap();
        failed += f;
        ok += o;
        if lg > longest {
            longest = lg;
            at = a;
        }
        before = before.max(b);
    }
    eprintln!("  the longest stall began {} ms after the kill", at.as_millis() as i64 - KILL_AT.as_millis() as i64);
    (failed as f64, longest.as_secs_f64() * 1000.0, ok as f64, before.as_secs_f64() * 1000.0)
}

struct CrashRow {
    name: &'static str,
    failed: Vec<f64>,
    stall: Vec<f64>,
    ok: Vec<f64>,
    before: Vec<f64>,
    skipped: Vec<String>,
}

async fn crash(runs: usize) -> Vec<CrashRow> {
    let server = |port: u16, extra: &str| {
        format!("  server web1 127.0.0.2:{port} check inter 1s fall 3 rise 2{extra}\n  server web2 127.0.0.3:{port} check inter 1s fall 3 rise 2 backup\n")
    };
    let names = ["understudy proxy (checks 1s, fall 3)", "HAProxy inter 1s fall 3", "HAProxy + option redispatch", "HAProxy + observe layer4"];
    let mut rows: Vec<CrashRow> = names.iter().map(|n| CrashRow { name: n, failed: vec![], stall: vec![], ok: vec![], before: vec![], skipped: vec![] }).collect();
    for run in 0..runs {
        for (i, row) in rows.iter_mut().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let (port, mut primary, _backup) = backends(dir.path()).await;
            let front = SocketAddr::new("127.0.0.1".parse().unwrap(), free_port("127.0.0.1"));
            let mut _daemon = None;
            let mut _haproxy = None;
            if i == 0 {
                let api = SocketAddr::new("127.0.0.1".parse().unwrap(), free_port("127.0.0.1"));
                _daemon = start_daemon(dir.path(), &daemon_config(dir.path(), api, port, front));
            } else {
                let (srv, extra) = match i {
                    1 => (server(port, ""), ""),
                    2 => (server(port, ""), "  option redispatch\n"),
                    _ => (server(port, " observe layer4 error-limit 1 on-error mark-down"), ""),
                };
                let cfg = haproxy_config(dir.path(), "http", front, &srv, extra);
                _haproxy = start_haproxy(&cfg, None);
            }
            if !wait_serving(front, "primary").await {
                row.skipped.push(format!("run {run}: the front did not serve the primary"));
                continue;
            }
            let (f, s, o, b) = crash_run(front, &mut primary).await;
            row.failed.push(f);
            row.stall.push(s);
            row.ok.push(o);
            row.before.push(b);
            eprintln!("crash run {run}: {}: {f} failed, longest stall {s:.1} ms ({b:.1} ms before the crash), {o} answered", row.name);
        }
    }
    rows
}

/// wrk's requests/s and p99 latency (ms), or why not.
fn wrk(front: SocketAddr, secs: u64, close: bool) -> Result<(f64, f64), String> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0", "wrk", "-t1", "-c32", &format!("-d{secs}s"), "--latency", "--timeout", "5s"]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    let out = cmd.arg(format!("http://{front}/")).output().map_err(|e| format!("cannot run wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rps = text.lines().find_map(|l| l.strip_prefix("Requests/sec:")).and_then(|v| v.trim().parse::<f64>().ok()).ok_or_else(|| format!("no Requests/sec in: {text}"))?;
    let p99 = text.lines().find_map(|l| l.trim().strip_prefix("99%")).map(str::trim).and_then(parse_wrk_time).ok_or_else(|| format!("no 99% line in: {text}"))?;
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        eprintln!("wrk reported errors through {front}: {}", text.lines().filter(|l| l.contains("Non-2xx") || l.contains("Socket errors")).collect::<Vec<_>>().join("; "));
    }
    Ok((rps, p99))
}

fn parse_wrk_time(v: &str) -> Option<f64> {
    let (n, mul) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    n.parse::<f64>().ok().map(|x| x * mul)
}

fn pin_self_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t with CPU 0 set, for this process.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

async fn throughput(runs: usize, secs: u64) -> Option<[[Vec<f64>; 4]; 2]> {
    let dir = tempfile::tempdir().unwrap();
    let (port, _primary, _backup) = backends(dir.path()).await;
    let ours = SocketAddr::new("127.0.0.1".parse().unwrap(), free_port("127.0.0.1"));
    let theirs = SocketAddr::new("127.0.0.1".parse().unwrap(), free_port("127.0.0.1"));
    let api = SocketAddr::new("127.0.0.1".parse().unwrap(), free_port("127.0.0.1"));
    let d = start_daemon(dir.path(), &daemon_config(dir.path(), api, port, ours))?;
    if !wait_serving(ours, "primary").await {
        eprintln!("the understudy proxy did not come up; no throughput figures");
        return None;
    }
    // Every thread of the daemon on CPU 1 (it started on CPU 0, so with one worker per runtime).
    let _ = Command::new("taskset").args(["-a", "-p", "-c", "1", &d.0.id().to_string()]).stdout(Stdio::null()).status();
    let cfg = haproxy_config(dir.path(), "tcp", theirs, &format!("  server web1 127.0.0.2:{port}\n"), "");
    let _h = start_haproxy(&cfg, Some("1"))?;
    if !wait_serving(ours, "primary").await || !wait_serving(theirs, "primary").await {
        eprintln!("a front did not come up; no throughput figures");
        return None;
    }
    // [front][keep-alive rps, keep-alive p99, close rps, close p99]
    let mut r: [[Vec<f64>; 4]; 2] = Default::default();
    for run in 0..runs {
        let order: [usize; 2] = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        for f in order {
            let front = if f == 0 { ours } else { theirs };
            for (j, close) in [false, true].into_iter().enumerate() {
                match wrk(front, secs, close) {
                    Ok((rps, p99)) => {
                        r[f][2 * j].push(rps);
                        r[f][2 * j + 1].push(p99);
                        eprintln!("throughput run {run}: {} {}: {rps:.0} req/s, p99 {p99:.2} ms", ["understudy", "haproxy"][f], ["keep-alive", "close"][j]);
                    }
                    Err(e) => eprintln!("throughput run {run}: {e}"),
                }
            }
        }
    }
    drop(d);
    Some(r)
}

fn ratio(a: &[f64], b: &[f64]) -> String {
    match (median(a), median(b)) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

fn print_crash(rows: &[CrashRow], runs: usize) {
    println!("\n## Primary crash: {LOOPS} client loops, one connection per request, {} s, primary's nginx killed at {} s; median (min-max) of {runs} runs\n", LOAD.as_secs(), KILL_AT.as_secs());
    println!("| front | failed requests | longest stall ms | answered after the kill | longest wait before the kill ms |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for r in rows {
        println!("| {} | {} | {} | {} | {} |", r.name, cell(&r.failed, 0), cell(&r.stall, 1), cell(&r.ok, 0), cell(&r.before, 1));
    }
    for r in rows {
        for s in &r.skipped {
            println!("- {}: {s}", r.name);
        }
    }
    let base = &rows[0];
    for r in &rows[1..] {
        println!("- {}: stall ratio understudy / it = {}", r.name, ratio(&base.stall, &r.stall));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: u64| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default);
    let runs = arg("--runs", 3) as usize;
    let secs = arg("--secs", 5);
    if !Path::new(HAPROXY).exists() || Command::new("wrk").arg("-v").output().is_err() {
        eprintln!("needs haproxy and wrk: run scripts/install-test-deps.sh");
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let only = |what: &str| !args.iter().any(|a| a.starts_with("--") && a.ends_with("-only") && a != what);
    if only("--crash-only") {
        print_crash(&rt.block_on(crash(runs)), runs);
    }
    if !only("--throughput-only") {
        return;
    }
    pin_self_to_cpu0();
    let Some(t) = rt.block_on(throughput(runs, secs)) else { return };
    println!("\n## Throughput: wrk -t1 -c32, {secs} s per run, front on CPU 1, wrk and nginx on CPU 0; median (min-max) of {runs} runs\n");
    println!("| front | keep-alive req/s | keep-alive p99 ms | close req/s | close p99 ms |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (f, name) in ["understudy proxy", "HAProxy 2.6 mode tcp"].iter().enumerate() {
        println!("| {name} | {} | {} | {} | {} |", cell(&t[f][0], 0), cell(&t[f][1], 2), cell(&t[f][2], 0), cell(&t[f][3], 2));
    }
    println!(
        "| ratio understudy / HAProxy | {} | {} | {} | {} |",
        ratio(&t[0][0], &t[1][0]),
        ratio(&t[0][1], &t[1][1]),
        ratio(&t[0][2], &t[1][2]),
        ratio(&t[0][3], &t[1][3])
    );
}
