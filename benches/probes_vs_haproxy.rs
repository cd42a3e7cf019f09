//! Probes vs HAProxy: the CPU cost of one health check, understudy's against HAProxy's, measured
//! in one run against the same listeners, one thread each.
//!
//! For each N in `--targets` it starts the peers (`--kind tcp`: a listener subprocess of this
//! binary, `UNDERSTUDY_VS_HAPROXY_LISTENER=N`, with N TCP listeners on 127.0.0.4 that accept,
//! count and drop connections; `--kind http` / `https`: one nginx with one worker on 127.0.0.5,
//! `GET /health` answered 200, a self-signed ECDSA certificate for https), then **HAProxy** (one
//! thread, N servers with `check inter 1s`, `option httpchk GET /health` for http, `check-ssl
//! verify none` for https) and, in this process, N understudy scheduler tasks with real probes on
//! a **current-thread** tokio runtime (1 s interval, 500 ms timeout, the hedged second attempt
//! on). Both check the same N targets at the same time. After a warm-up it measures for
//! `--seconds` (default 15):
//! - understudy: checks/s, failed checks, user and system CPU (`getrusage`), schedule lag;
//! - HAProxy: user and system CPU (`/proc/<pid>/stat`), failed checks (`chkfail` from its stats
//!   socket, plus servers not UP at the end) and checks/s: for http the requests nginx served
//!   (`stub_status`) minus understudy's, for tcp the configured N per second (see
//!   `haproxy_checks`);
//! - the ratio of CPU per check, understudy / HAProxy (the goal: at most 1.0).
//!
//! Run: `cargo bench --bench probes_vs_haproxy -- [--kind tcp|http|https] [--targets 1000,10000]
//! [--seconds 15] [--close reset|fin] [--keep-alive] [--apart]`. `--apart` measures HAProxy alone,
//! stops it, then measures understudy alone, against the same peers (for https: one nginx worker
//! cannot answer both checkers' handshakes at once on two cores). Needs `/usr/sbin/haproxy` (and nginx and
//! openssl for http/https). It stops by itself and kills every process it started by PID. It
//! must not be used as a test (nothing is asserted; numbers depend on a shared machine), and it
//! counts neither the listener's nor nginx's CPU.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use understudy::config::{HttpCheck, StatusRange, TcpClose};
use understudy::probe::Probe;

// The allocator the binary ships with, so the probe layer is measured as it runs there.
understudy::global_allocator!();
use understudy::probe::lag::LagHistogram;
use understudy::probe::scheduler::{self, Scheduled};

const LISTENER_ENV: &str = "UNDERSTUDY_VS_HAPROXY_LISTENER";
/// TCP listeners' address: not 127.0.0.1, whose ephemeral ports the checks' sockets use.
const LISTEN_IP: [u8; 4] = [127, 0, 0, 4];
const NGINX_IP: [u8; 4] = [127, 0, 0, 5];
/// nginx listens on this many ports; target i checks port i mod NGINX_PORTS.
const NGINX_PORTS: usize = 20;
const HAPROXY: &str = "/usr/sbin/haproxy";
const NGINX: &str = "/usr/sbin/nginx";
const INTERVAL: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_millis(500);
/// Both checkers have had their first (spread) checks of every target.
const WARM_UP: Duration = Duration::from_millis(2_500);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Tcp,
    Http,
    Https,
}

struct Options {
    kind: Kind,
    targets: Vec<usize>,
    seconds: u64,
    close: TcpClose,
    keep_alive: bool,
    /// Run `understudy run` (this binary) as understudy's side instead of in-process probes.
    daemon: Option<PathBuf>,
    /// Measure HAProxy alone first, then understudy alone, against the same peers in the same
    /// run: for https, where one nginx worker cannot answer both checkers' handshakes at once.
    apart: bool,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
        let mut opts = Options { kind: Kind::Tcp, targets: vec![], seconds: 15, close: TcpClose::Reset, keep_alive: false, daemon: None, apart: false };
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--kind" => {
                    opts.kind = match args.next().as_deref() {
                        Some("tcp") => Kind::Tcp,
                        Some("http") => Kind::Http,
                        Some("https") => Kind::Https,
                        other => return Err(format!("--kind expects tcp, http or https, got {other:?}")),
                    }
                }
                "--targets" => {
                    let v = args.next().ok_or("--targets needs a value")?;
                    opts.targets = v.split(',').map(|s| s.trim().parse::<usize>().map_err(|e| format!("--targets {v:?}: {e}"))).collect::<Result<_, _>>()?;
                    if opts.targets.iter().any(|n| *n == 0 || *n > 50_000) {
                        return Err("--targets must be between 1 and 50000".into());
                    }
                }
                "--seconds" => {
                    let v = args.next().ok_or("--seconds needs a value")?;
                    opts.seconds = v.parse().map_err(|e| format!("--seconds {v:?}: {e}"))?;
                    if !(1..=600).contains(&opts.seconds) {
                        return Err("--seconds must be between 1 and 600".into());
                    }
                }
                "--close" => {
                    opts.close = match args.next().as_deref() {
                        Some("reset") => TcpClose::Reset,
                        Some("fin") => TcpClose::Fin,
                        other => return Err(format!("--close expects reset or fin, got {other:?}")),
                    }
                }
                "--keep-alive" => opts.keep_alive = true,
                "--apart" => opts.apart = true,
                "--daemon" => opts.daemon = Some(default_daemon_binary()?),
                "--daemon-binary" => opts.daemon = Some(PathBuf::from(args.next().ok_or("--daemon-binary needs a path")?)),
                // cargo bench passes --bench; ignore it and other harness flags.
                _ => {}
            }
        }
        if opts.targets.is_empty() {
            opts.targets = match opts.kind {
                Kind::Tcp => vec![1_000, 10_000],
                Kind::Http | Kind::Https => vec![1_000, 5_000],
            };
        }
        Ok(opts)
    }
}

fn main() -> ExitCode {
    if let Ok(n) = std::env::var(LISTENER_ENV) {
        return listener_main(&n);
    }
    let opts = match Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "probes_vs_haproxy: {e}\nusage: cargo bench --bench probes_vs_haproxy -- [--kind tcp|http|https] [--targets 1000,10000] [--seconds 15] [--close reset|fin] [--keep-alive] [--apart] [--daemon | --daemon-binary PATH]"
            );
            return ExitCode::from(2);
        }
    };
    if !Path::new(HAPROXY).exists() {
        eprintln!("probes_vs_haproxy: {HAPROXY} is missing (apt-get install -y haproxy, or scripts/install-test-deps.sh)");
        return ExitCode::FAILURE;
    }
    let nofile = raise_nofile();
    if let Some(bin) = &opts.daemon {
        if !bin.exists() {
            eprintln!("probes_vs_haproxy: {} is missing (cargo build --release --bin understudy)", bin.display());
            return ExitCode::FAILURE;
        }
        println!("understudy side: the whole daemon, `{} run` with TOKIO_WORKER_THREADS=1, {} targets per service", bin.display(), TARGETS_PER_SERVICE);
    }
    let what = match opts.kind {
        Kind::Tcp => format!("TCP connect, close = {:?}", opts.close),
        Kind::Http => format!("HTTP GET /health on nginx, keep_alive = {}", opts.keep_alive),
        Kind::Https => format!("HTTPS GET /health on nginx (self-signed, not verified), keep_alive = {}", opts.keep_alive),
    };
    println!(
        "understudy vs HAProxy: {what}; interval {INTERVAL:?}, timeout {TIMEOUT:?}, one thread each, {}s window, {} CPUs, RLIMIT_NOFILE {nofile}",
        opts.seconds,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    );
    println!("CPU = user+system seconds per wall second (user/system); us/chk = CPU microseconds per check\n");
    println!(
        "{:>7} | {:>8} {:>6} {:>20} {:>7} {:>7} {:>8} {:>8} | {:>8} {:>6} {:>20} {:>7} {:>7} | {:>7}",
        "targets", "us chk/s", "failed", "CPU s/s (usr/sys)", "us/chk", "RSS MiB", "lag p50", "lag p99", "HA chk/s", "failed", "CPU s/s (usr/sys)", "us/chk", "RSS MiB", "ratio"
    );
    for &n in &opts.targets {
        let row = match &opts.daemon {
            Some(bin) => run_daemon(&opts, bin, n),
            None => run_one(&opts, n),
        };
        match row {
            Ok(row) => row.print(),
            Err(e) => {
                eprintln!("N = {n}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

/// One checker's numbers over the window.
#[derive(Default, Clone)]
struct Side {
    checks_per_s: f64,
    failed: u64,
    user_per_s: f64,
    sys_per_s: f64,
    rss_kib: u64,
}

impl Side {
    fn cpu_per_s(&self) -> f64 {
        self.user_per_s + self.sys_per_s
    }
    fn us_per_check(&self) -> f64 {
        if self.checks_per_s > 0.0 { self.cpu_per_s() * 1e6 / self.checks_per_s } else { f64::NAN }
    }
    fn columns(&self) -> String {
        format!(
            "{:>8.0} {:>6} {:>20} {:>7.1} {:>7.1}",
            self.checks_per_s,
            self.failed,
            format!("{:.3} ({:.3}/{:.3})", self.cpu_per_s(), self.user_per_s, self.sys_per_s),
            self.us_per_check(),
            self.rss_kib as f64 / 1024.0
        )
    }
}

struct Row {
    targets: usize,
    us: Side,
    haproxy: Side,
    lag_p50: Duration,
    lag_p99: Duration,
    lag_max: Duration,
    failures: BTreeMap<String, u64>,
    haproxy_down: usize,
}

impl Row {
    fn print(&self) {
        // Duration::MAX: beyond the last finite Prometheus bucket (1 s), in --daemon mode.
        let ms = |d: Duration| if d == Duration::MAX { ">1s".to_string() } else { format!("{:.1}ms", d.as_secs_f64() * 1000.0) };
        println!(
            "{:>7} | {} {:>8} {:>8} | {} | {:>6.2}x",
            self.targets,
            self.us.columns(),
            ms(self.lag_p50),
            ms(self.lag_p99),
            self.haproxy.columns(),
            self.us.us_per_check() / self.haproxy.us_per_check()
        );
        eprintln!("  (N = {}: understudy lag max {}; HAProxy servers not UP at the end: {})", self.targets, ms(self.lag_max), self.haproxy_down);
        if !self.failures.is_empty() {
            eprintln!("  understudy failures: {:?}", self.failures);
        }
    }
}

/// What the peers served, HAProxy's (user, system) CPU and its (`chkfail`, servers not UP).
type Counters = (u64, (f64, f64), (u64, usize));

/// The targets' side: something that counts what it was asked.
enum Peers {
    Listener(Listener),
    Nginx(Nginx),
}

impl Peers {
    /// Connections accepted (tcp) or requests served (http), since start.
    fn served(&mut self) -> Result<u64, String> {
        match self {
            Peers::Listener(l) => l.accepted(),
            Peers::Nginx(n) => n.requests(),
        }
    }
}

/// Start the peers for N targets: the listener subprocess (tcp) or nginx (http, https).
fn start_peers(kind: Kind, n: usize, dir: &Path) -> Result<(Peers, Vec<SocketAddr>), String> {
    Ok(match kind {
        Kind::Tcp => {
            let (l, addrs) = start_listener(n)?;
            (Peers::Listener(l), addrs)
        }
        Kind::Http | Kind::Https => {
            let nginx = Nginx::start(dir, kind == Kind::Https)?;
            let addrs = (0..n).map(|i| nginx.ports[i % nginx.ports.len()]).collect();
            (Peers::Nginx(nginx), addrs)
        }
    })
}

fn run_one(opts: &Options, n: usize) -> Result<Row, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let (mut peers, addrs) = start_peers(opts.kind, n, dir.path())?;
    let haproxy = Haproxy::start(dir.path(), opts.kind, &addrs)?;
    // With --apart, HAProxy's window comes first and HAProxy is stopped before our probes start.
    let (haproxy, alone) = if opts.apart {
        std::thread::sleep(WARM_UP);
        let fail0 = haproxy.failed_checks()?.0;
        let (served0, cpu0) = (peers.served()?, haproxy.cpu()?);
        let t = Instant::now();
        std::thread::sleep(Duration::from_secs(opts.seconds));
        let (cpu1, served1) = (haproxy.cpu()?, peers.served()?);
        let wall = t.elapsed().as_secs_f64();
        let (fail1, down) = haproxy.failed_checks()?;
        let side = Side {
            checks_per_s: haproxy_checks(opts.kind, addrs.len(), served1 - served0, 0, wall),
            failed: fail1.saturating_sub(fail0),
            user_per_s: (cpu1.0 - cpu0.0) / wall,
            sys_per_s: (cpu1.1 - cpu0.1) / wall,
            rss_kib: rss_kib(&haproxy.child.id().to_string()),
        };
        drop(haproxy);
        (None, Some((side, down)))
    } else {
        (Some(haproxy), None)
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("cannot build runtime: {e}"))?;
    let kind = opts.kind;
    let (close, keep_alive, seconds) = (opts.close, opts.keep_alive, opts.seconds);
    runtime.block_on(async move {
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let lag = Arc::new(LagHistogram::new());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (id, addr) in addrs.iter().enumerate() {
            let probe: Arc<dyn Probe> = match kind {
                Kind::Tcp => Arc::new(understudy::probe::tcp::TcpProbe::with_close(*addr, close)),
                Kind::Http | Kind::Https => {
                    let check = HttpCheck {
                        tls: kind == Kind::Https,
                        port: addr.port(),
                        path: "/health".into(),
                        method: "GET".into(),
                        host: None,
                        headers: vec![],
                        expect_status: vec![StatusRange { lo: 200, hi: 399 }],
                        body_contains: None,
                        tls_verify: false,
                        keep_alive,
                    };
                    Arc::new(understudy::probe::http::HttpProbe::new(&check, *addr).map_err(|e| e.to_string())?)
                }
            };
            let job = Scheduled { id: id as u64, probe, interval: INTERVAL, timeout: TIMEOUT };
            scheduler::spawn(&tracker, job, tx.clone(), cancel.clone(), lag.clone());
        }
        drop(tx);
        let passed = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let failures = Arc::new(std::sync::Mutex::new(BTreeMap::<String, u64>::new()));
        let consumer = {
            let (passed, failed, measuring, failures) = (passed.clone(), failed.clone(), measuring.clone(), failures.clone());
            tokio::spawn(async move {
                while let Some(report) = rx.recv().await {
                    if report.result.ok {
                        passed.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        if measuring.load(Ordering::Relaxed)
                            && let Ok(mut f) = failures.lock()
                        {
                            *f.entry(report.result.reason.into_owned()).or_default() += 1;
                        }
                    }
                }
            })
        };

        tokio::time::sleep(WARM_UP).await;
        lag.reset();
        measuring.store(true, Ordering::Relaxed);
        // The peers' and HAProxy's counters are read with blocking I/O (HAProxy takes a while to
        // list 10,000 servers): on a thread of their own, never on the probes' only thread.
        let peers = Arc::new(std::sync::Mutex::new(peers));
        let haproxy = Arc::new(haproxy);
        let read_others = {
            let (peers, haproxy) = (peers.clone(), haproxy.clone());
            // `show stat` costs HAProxy CPU (a line per server): it is read before HAProxy's CPU
            // time at the start of the window and after it at the end, so it is never counted.
            move |stat_first: bool| {
                let (peers, haproxy) = (peers.clone(), haproxy.clone());
                async move {
                    tokio::task::spawn_blocking(move || -> Result<Counters, String> {
                        let served = peers.lock().map_err(|_| "peers lock poisoned")?.served()?;
                        let Some(haproxy) = haproxy.as_ref() else {
                            return Ok((served, (0.0, 0.0), (0, 0)));
                        };
                        if stat_first {
                            let failed = haproxy.failed_checks()?;
                            Ok((served, haproxy.cpu()?, failed))
                        } else {
                            let cpu = haproxy.cpu()?;
                            Ok((served, cpu, haproxy.failed_checks()?))
                        }
                    })
                    .await
                    .map_err(|e| format!("reading counters: {e}"))?
                }
            }
        };
        // Ours after the others at the start and before them at the end: reading them (on a
        // blocking thread of this process) is not counted as our CPU either.
        let (served0, ha_cpu0, (ha_fail0, _)) = read_others(true).await?;
        let ours0 = (passed.load(Ordering::Relaxed), failed.load(Ordering::Relaxed), own_cpu());
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let ours1 = (passed.load(Ordering::Relaxed), failed.load(Ordering::Relaxed), own_cpu());
        // Before the others are read: HAProxy takes a while to list 10,000 servers.
        let wall = t0.elapsed().as_secs_f64();
        let (served1, ha_cpu1, (ha_fail1, ha_down)) = read_others(false).await?;
        let our_checks = (ours1.0 - ours0.0) + (ours1.1 - ours0.1);
        // Every check of ours that passed was one connection (tcp) or request (http) the peers
        // saw; the rest are HAProxy's. With keep-alive our passes are still one request each.
        let ha_checks = haproxy_checks(kind, addrs.len(), served1 - served0, ours1.0 - ours0.0, wall);
        let row = Row {
            targets: addrs.len(),
            us: Side {
                checks_per_s: our_checks as f64 / wall,
                failed: ours1.1 - ours0.1,
                user_per_s: (ours1.2.0 - ours0.2.0) / wall,
                sys_per_s: (ours1.2.1 - ours0.2.1) / wall,
                rss_kib: rss_kib("self"),
            },
            haproxy: match &alone {
                Some((side, _)) => side.clone(),
                None => Side {
                    checks_per_s: ha_checks,
                    failed: ha_fail1.saturating_sub(ha_fail0),
                    user_per_s: (ha_cpu1.0 - ha_cpu0.0) / wall,
                    sys_per_s: (ha_cpu1.1 - ha_cpu0.1) / wall,
                    rss_kib: Option::as_ref(&*haproxy).map(|h| rss_kib(&h.child.id().to_string())).unwrap_or(0),
                },
            },
            lag_p50: lag.quantile(0.5),
            lag_p99: lag.quantile(0.99),
            lag_max: lag.max(),
            failures: failures.lock().map(|f| f.clone()).unwrap_or_default(),
            haproxy_down: alone.as_ref().map(|a| a.1).unwrap_or(ha_down),
        };
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
        let _ = consumer.await;
        Ok(row)
    })
}

/// Targets per generated service in `--daemon` mode (1,000 services x 10 targets for 10,000).
const TARGETS_PER_SERVICE: usize = 10;

/// `target/release/understudy`, next to this benchmark's `deps/` directory.
fn default_daemon_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let release = exe.parent().and_then(Path::parent).ok_or("cannot find the target directory")?;
    Ok(release.join("understudy"))
}

/// The config for the whole daemon: one service per `TARGETS_PER_SERVICE` targets, no actuators.
fn daemon_config(opts: &Options, dir: &Path, api: SocketAddr, addrs: &[SocketAddr]) -> String {
    let mut cfg = format!("[daemon]\ndata_dir = \"{}\"\napi = \"{api}\"\n", dir.join("data").display());
    let kind = match opts.kind {
        Kind::Tcp => format!("kind = \"tcp\"\nport = 1\nclose = \"{}\"\n", if opts.close == TcpClose::Fin { "fin" } else { "reset" }),
        Kind::Http => format!("kind = \"http\"\nport = 1\npath = \"/health\"\nkeep_alive = {}\n", opts.keep_alive),
        Kind::Https => format!("kind = \"https\"\nport = 1\npath = \"/health\"\ntls_verify = false\nkeep_alive = {}\n", opts.keep_alive),
    };
    for (si, chunk) in addrs.chunks(TARGETS_PER_SERVICE).enumerate() {
        cfg.push_str(&format!(
            "\n[[service]]\nname = \"s{si}\"\n[service.check]\n{kind}interval = \"{}ms\"\ntimeout = \"{}ms\"\n",
            INTERVAL.as_millis(),
            TIMEOUT.as_millis()
        ));
        for (ti, a) in chunk.iter().enumerate() {
            cfg.push_str(&format!("[[service.target]]\nname = \"t{ti}\"\naddress = \"{}\"\ncheck_port = {}\n", a.ip(), a.port()));
        }
    }
    cfg
}

/// `understudy run`, killed by PID on drop.
struct Daemon {
    child: Child,
    api: SocketAddr,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

impl Daemon {
    /// GET `path` from the API: (status code, body).
    fn get(&self, path: &str) -> Result<(u16, String), String> {
        let mut s = std::net::TcpStream::connect_timeout(&self.api, Duration::from_secs(2)).map_err(|e| format!("API {path}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.api).map_err(|e| format!("API {path}: {e}"))?;
        let mut text = String::new();
        s.read_to_string(&mut text).map_err(|e| format!("API {path}: {e}"))?;
        let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("API {path}: no status line"))?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Ok((status, body))
    }
}

/// What one `/metrics` scrape says about checks, lag and the core.
#[derive(Default, Clone)]
struct Scrape {
    checks: u64,
    failed: u64,
    /// Cumulative lag buckets: (upper bound in seconds, count).
    lag: Vec<(f64, u64)>,
    /// `understudy_core_result_seconds` (sum, count), when the daemon exposes it.
    core: Option<(f64, u64)>,
    /// `understudy_core_queue`: results waiting for the core, when the daemon exposes it.
    queue: Option<u64>,
}

fn scrape(text: &str) -> Scrape {
    let mut out = Scrape::default();
    let (mut core_sum, mut core_count) = (None, None);
    for line in text.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else { continue };
        let v: f64 = value.parse().unwrap_or(0.0);
        if name.starts_with("understudy_checks_total{") {
            out.checks += v as u64;
            if !name.contains("result=\"pass\"") {
                out.failed += v as u64;
            }
        } else if let Some(rest) = name.strip_prefix("understudy_probe_schedule_lag_seconds_bucket{le=\"") {
            let le = rest.trim_end_matches("\"}");
            let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) };
            out.lag.push((bound, v as u64));
        } else if name == "understudy_core_result_seconds_sum" {
            core_sum = Some(v);
        } else if name == "understudy_core_result_seconds_count" {
            core_count = Some(v as u64);
        } else if name == "understudy_core_queue" {
            out.queue = Some(v as u64);
        }
    }
    if let (Some(sum), Some(count)) = (core_sum, core_count) {
        out.core = Some((sum, count));
    }
    out
}

/// The upper bound of the Prometheus bucket holding quantile `q` of the lag between two scrapes.
fn lag_quantile(a: &Scrape, b: &Scrape, q: f64) -> Duration {
    let counts: Vec<(f64, u64)> = b.lag.iter().map(|(le, n)| (*le, n.saturating_sub(a.lag.iter().find(|(l, _)| l == le).map(|x| x.1).unwrap_or(0)))).collect();
    let total = counts.last().map(|x| x.1).unwrap_or(0);
    let want = (q * total as f64).ceil() as u64;
    let bound = counts.iter().find(|(_, n)| *n >= want.max(1)).map(|x| x.0).unwrap_or(f64::INFINITY);
    if bound.is_finite() { Duration::from_secs_f64(bound) } else { Duration::MAX }
}

/// understudy's side is the whole daemon: `understudy run` with a generated config.
fn run_daemon(opts: &Options, bin: &Path, n: usize) -> Result<Row, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let (mut peers, addrs) = start_peers(opts.kind, n, dir.path())?;
    let api = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
        l.local_addr().map_err(|e| e.to_string())?
    };
    let conf = dir.path().join("understudy.toml");
    std::fs::write(&conf, daemon_config(opts, dir.path(), api, &addrs)).map_err(|e| format!("write config: {e}"))?;
    let log = std::fs::File::create(dir.path().join("daemon.log")).map_err(|e| format!("daemon log: {e}"))?;
    let child = Command::new(bin)
        .arg("run")
        .arg("-c")
        .arg(&conf)
        .env("TOKIO_WORKER_THREADS", "1")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let mut daemon = Daemon { child, api };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) = daemon.get("/healthz") {
            break;
        }
        if let Ok(Some(status)) = daemon.child.try_wait() {
            let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
            let tail: String = log.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
            return Err(format!("understudy exited with {status}:\n{tail}"));
        }
        if Instant::now() > deadline {
            return Err("understudy's /healthz was not 200 within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let haproxy = Haproxy::start(dir.path(), opts.kind, &addrs)?;
    std::thread::sleep(WARM_UP);
    // At start every target flips up (an event each) and every service decides: the core works
    // through that backlog first. The window measures the steady state, so it starts once the
    // results waiting for the core are fewer than a tenth of a second's worth (at most 120 s).
    let waited = Instant::now();
    loop {
        let queue = scrape(&daemon.get("/metrics")?.1).queue;
        if queue.is_none_or(|q| q < (n as u64 / 10).max(10)) {
            eprintln!("  (N = {n}: core queue {queue:?} after waiting {:.1} s for it to drain)", waited.elapsed().as_secs_f64());
            break;
        }
        if waited.elapsed() > Duration::from_secs(120) {
            eprintln!("  (N = {n}: core queue still {queue:?} after 120 s: measuring anyway)");
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    let pid = daemon.child.id();
    let s0 = scrape(&daemon.get("/metrics")?.1);
    let s0_at = Instant::now();
    // HAProxy's `show stat` before its CPU time here and after it at the end: never counted.
    let ha_fail0 = haproxy.failed_checks()?.0;
    let (cpu0, served0, ha_cpu0) = (proc_cpu(pid)?, peers.served()?, haproxy.cpu()?);
    let t0 = Instant::now();
    // /healthz twice a second through the window; every answer but 200 is counted.
    let (mut healthz_ok, mut healthz_bad) = (0u32, Vec::new());
    while t0.elapsed() < Duration::from_secs(opts.seconds) {
        match daemon.get("/healthz") {
            Ok((200, _)) => healthz_ok += 1,
            Ok((code, body)) => healthz_bad.push(format!("{code} {}", body.trim())),
            Err(e) => healthz_bad.push(e),
        }
        std::thread::sleep(Duration::from_millis(500).min(Duration::from_secs(opts.seconds).saturating_sub(t0.elapsed())));
    }
    let (cpu1, served1, ha_cpu1) = (proc_cpu(pid)?, peers.served()?, haproxy.cpu()?);
    let wall = t0.elapsed().as_secs_f64();
    let (ha_fail1, ha_down) = haproxy.failed_checks()?;
    let s1 = scrape(&daemon.get("/metrics")?.1);
    // Our checks are counted between the two scrapes, which are a little wider apart than the
    // CPU window: their rate is taken over their own interval.
    let scraped = s0_at.elapsed().as_secs_f64();
    let rss = rss_kib(&pid.to_string());
    let our_checks = s1.checks.saturating_sub(s0.checks);
    let our_failed = s1.failed.saturating_sub(s0.failed);
    let our_passes_in_wall = ((our_checks - our_failed) as f64 * wall / scraped) as u64;
    let ha_checks = haproxy_checks(opts.kind, addrs.len(), served1 - served0, our_passes_in_wall, wall);
    match (s0.core, s1.core) {
        (Some(a), Some(b)) if b.1 > a.1 => eprintln!(
            "  (N = {n}: core loop {:.1} us per result over {} results)",
            (b.0 - a.0) * 1e6 / (b.1 - a.1) as f64,
            b.1 - a.1
        ),
        _ => eprintln!("  (N = {n}: this daemon does not expose understudy_core_result_seconds)"),
    }
    eprintln!("  (N = {n}: /healthz {healthz_ok} x 200, {} other: {:?})", healthz_bad.len(), healthz_bad.iter().take(3).collect::<Vec<_>>());
    Ok(Row {
        targets: addrs.len(),
        us: Side {
            checks_per_s: our_checks as f64 / scraped,
            failed: our_failed,
            user_per_s: (cpu1.0 - cpu0.0) / wall,
            sys_per_s: (cpu1.1 - cpu0.1) / wall,
            rss_kib: rss,
        },
        haproxy: Side {
            checks_per_s: ha_checks,
            failed: ha_fail1.saturating_sub(ha_fail0),
            user_per_s: (ha_cpu1.0 - ha_cpu0.0) / wall,
            sys_per_s: (ha_cpu1.1 - ha_cpu0.1) / wall,
            rss_kib: rss_kib(&haproxy.child.id().to_string()),
        },
        lag_p50: lag_quantile(&s0, &s1, 0.5),
        lag_p99: lag_quantile(&s0, &s1, 0.99),
        lag_max: lag_quantile(&s0, &s1, 1.0),
        failures: BTreeMap::new(),
        haproxy_down: ha_down,
    })
}

/// HAProxy's checks per second. It counts no checks itself, so for http they are the requests
/// nginx served minus understudy's passes. For tcp nothing can tell them apart: a reset check
/// (HAProxy's, and understudy's by default) never completes its handshake, so the listener never
/// accepts it; the rate is then the configured one (N per interval), which HAProxy keeps when it
/// is not overloaded (its `chkfail` and the servers' state say whether checks went wrong).
fn haproxy_checks(kind: Kind, n: usize, served: u64, our_passes: u64, wall: f64) -> f64 {
    match kind {
        Kind::Tcp => {
            eprintln!("  (N = {n}: the listener accepted {:.0} connections/s: completed handshakes, i.e. not reset checks)", served as f64 / wall);
            n as f64 / INTERVAL.as_secs_f64()
        }
        Kind::Http | Kind::Https => served.saturating_sub(our_passes) as f64 / wall,
    }
}

/// (user, system) CPU seconds of this process.
fn own_cpu() -> (f64, f64) {
    // SAFETY: getrusage writes into the struct we pass; zeroed is a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return (0.0, 0.0);
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (tv(usage.ru_utime), tv(usage.ru_stime))
}

/// (user, system) CPU seconds of process `pid`, all threads, from `/proc/<pid>/stat`.
fn proc_cpu(pid: u32) -> Result<(f64, f64), String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or("unexpected /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).ok_or_else(|| format!("/proc/{pid}/stat: no field {}", i + 3));
    // utime is field 14, stime field 15.
    Ok((field(11)? / hz, field(12)? / hz))
}

/// VmRSS in KiB of `/proc/<who>` (`self` or a PID), 0 when unknown.
fn rss_kib(who: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{who}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()))
        .unwrap_or(0)
}

/// Raise the soft RLIMIT_NOFILE to the hard limit; returns the resulting soft limit.
fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur as u64
    }
}

/// Kill `child` by PID and reap it.
fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// HAProxy with one thread and one backend of N servers, killed by PID on drop.
struct Haproxy {
    child: Child,
    socket: PathBuf,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

impl Haproxy {
    fn start(dir: &Path, kind: Kind, addrs: &[SocketAddr]) -> Result<Haproxy, String> {
        let socket = dir.join("haproxy.sock");
        let (mode, options, server_opts) = match kind {
            Kind::Tcp => ("tcp", "", ""),
            Kind::Http => ("http", "    option httpchk GET /health\n    http-check expect status 200\n", ""),
            Kind::Https => ("http", "    option httpchk GET /health\n    http-check expect status 200\n", " check-ssl verify none"),
        };
        let mut cfg = format!(
            "global\n    nbthread 1\n    maxconn {maxconn}\n    stats socket {sock} level admin\n\n\
             defaults\n    mode {mode}\n    timeout connect {t}ms\n    timeout check {t}ms\n    timeout client 5s\n    timeout server 5s\n\n\
             backend checked\n{options}    default-server check inter {i}ms fall 3 rise 2{server_opts}\n",
            // Checks do not count against maxconn, but HAProxy reserves 2 descriptors per
            // connection on top of one per server: keep it small so it fits RLIMIT_NOFILE.
            maxconn = 1_000,
            sock = socket.display(),
            t = TIMEOUT.as_millis(),
            i = INTERVAL.as_millis(),
        );
        for (i, a) in addrs.iter().enumerate() {
            cfg.push_str(&format!("    server s{i} {a}\n"));
        }
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).map_err(|e| format!("write {}: {e}", path.display()))?;
        let log = std::fs::File::create(dir.join("haproxy.log")).map_err(|e| format!("haproxy log: {e}"))?;
        let child = Command::new(HAPROXY)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {HAPROXY}: {e}"))?;
        let mut h = Haproxy { child, socket };
        // HAProxy 2.6 needs seconds of CPU to set up 10,000 servers (45 s of wall time on a
        // loaded 2-core machine).
        let deadline = Instant::now() + Duration::from_secs(180);
        while h.failed_checks().is_err() {
            if let Ok(Some(status)) = h.child.try_wait() {
                let log = std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default();
                return Err(format!("haproxy exited with {status}:\n{log}"));
            }
            if Instant::now() > deadline {
                return Err("haproxy's stats socket did not answer within 180 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(h)
    }

    fn cpu(&self) -> Result<(f64, f64), String> {
        proc_cpu(self.child.id())
    }

    /// (sum of `chkfail` over the servers, servers whose status is not UP), from `show stat`.
    fn failed_checks(&self) -> Result<(u64, usize), String> {
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket).map_err(|e| format!("haproxy stats socket: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        s.write_all(b"show stat\n").map_err(|e| format!("haproxy stats socket: {e}"))?;
        let mut text = String::new();
        s.read_to_string(&mut text).map_err(|e| format!("haproxy stats socket: {e}"))?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().trim_start_matches("# ").split(',').collect();
        let col = |name: &str| header.iter().position(|h| *h == name).ok_or_else(|| format!("haproxy `show stat` has no {name} column"));
        let (sv, chkfail, status) = (col("svname")?, col("chkfail")?, col("status")?);
        let (mut failed, mut down) = (0u64, 0usize);
        for line in lines {
            let f: Vec<&str> = line.split(',').collect();
            if f.len() <= chkfail.max(status).max(sv) || f[sv] == "BACKEND" || f[sv] == "FRONTEND" {
                continue;
            }
            failed += f[chkfail].parse::<u64>().unwrap_or(0);
            if !f[status].starts_with("UP") {
                down += 1;
            }
        }
        Ok((failed, down))
    }
}

/// nginx with one worker, `NGINX_PORTS` ports, `/health` answered 200, `stub_status` on a port
/// of its own; killed by PID on drop.
struct Nginx {
    child: Child,
    ports: Vec<SocketAddr>,
    status: SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

impl Nginx {
    fn start(dir: &Path, tls: bool) -> Result<Nginx, String> {
        let free = || -> Result<SocketAddr, String> {
            let l = std::net::TcpListener::bind(SocketAddr::from((NGINX_IP, 0))).map_err(|e| format!("bind: {e}"))?;
            l.local_addr().map_err(|e| e.to_string())
        };
        let ports: Vec<SocketAddr> = (0..NGINX_PORTS).map(|_| free()).collect::<Result<_, _>>()?;
        let status = free()?;
        let d = dir.display();
        let mut listens = String::new();
        for p in &ports {
            listens.push_str(&format!("        listen {p}{} reuseport;\n", if tls { " ssl" } else { "" }));
        }
        let tls_conf = if tls {
            let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
            let out = Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=bench.test", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run openssl: {e}"))?;
            if !out.status.success() {
                return Err(format!("openssl req failed: {}", String::from_utf8_lossy(&out.stderr)));
            }
            format!("        ssl_certificate {};\n        ssl_certificate_key {};\n        ssl_session_cache shared:bench:20m;\n", cert.display(), key.display())
        } else {
            String::new()
        };
        let config = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\nworker_rlimit_nofile 100000;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 50000; }}\n\
             http {{\n    access_log off;\n    client_body_temp_path {d}/cb;\n    proxy_temp_path {d}/px;\n    fastcgi_temp_path {d}/fc;\n    uwsgi_temp_path {d}/uw;\n    scgi_temp_path {d}/sc;\n\
             \x20   default_type text/plain;\n\
             \x20   server {{\n{listens}{tls_conf}        location = /health {{ return 200 \"ok\\n\"; }}\n    }}\n\
             \x20   server {{\n        listen {status};\n        location = /status {{ stub_status; }}\n    }}\n}}\n"
        );
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config).map_err(|e| format!("write nginx.conf: {e}"))?;
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {NGINX}: {e}"))?;
        let mut nginx = Nginx { child, ports, status };
        let deadline = Instant::now() + Duration::from_secs(10);
        while nginx.requests().is_err() {
            if let Ok(Some(s)) = nginx.child.try_wait() {
                return Err(format!("nginx exited with {s}: {}", std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()));
            }
            if Instant::now() > deadline {
                return Err("nginx did not answer within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(nginx)
    }

    /// Requests served since start (`stub_status`), not counting the status requests.
    fn requests(&mut self) -> Result<u64, String> {
        let mut s = std::net::TcpStream::connect_timeout(&self.status, Duration::from_secs(2)).map_err(|e| format!("nginx status: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        s.write_all(b"GET /status HTTP/1.0\r\n\r\n").map_err(|e| format!("nginx status: {e}"))?;
        let mut text = String::new();
        s.read_to_string(&mut text).map_err(|e| format!("nginx status: {e}"))?;
        // "server accepts handled requests\n 1 1 1\n"
        let counts = text.lines().skip_while(|l| !l.trim_start().starts_with("server accepts")).nth(1).ok_or("nginx status: no counters")?;
        let requests: u64 = counts.split_whitespace().nth(2).and_then(|r| r.parse().ok()).ok_or("nginx status: bad counters")?;
        Ok(requests)
    }
}

/// The TCP listener subprocess, killed by PID on drop.
struct Listener {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

impl Listener {
    /// Connections accepted so far (asks the subprocess with a line on its stdin).
    fn accepted(&mut self) -> Result<u64, String> {
        self.stdin.write_all(b"count\n").and_then(|_| self.stdin.flush()).map_err(|e| format!("listener: {e}"))?;
        let mut line = String::new();
        self.stdout.read_line(&mut line).map_err(|e| format!("listener: {e}"))?;
        line.trim().parse().map_err(|e| format!("listener answered {line:?}: {e}"))
    }
}

fn start_listener(n: usize) -> Result<(Listener, Vec<SocketAddr>), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let mut child = Command::new(exe)
        .env(LISTENER_ENV, n.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start listener subprocess: {e}"))?;
    let (stdin, stdout) = match (child.stdin.take(), child.stdout.take()) {
        (Some(i), Some(o)) => (i, o),
        _ => {
            stop(&mut child);
            return Err("listener has no stdin or stdout".into());
        }
    };
    let mut listener = Listener { child, stdin, stdout: BufReader::new(stdout) };
    let mut addrs = Vec::with_capacity(n);
    loop {
        let mut line = String::new();
        if listener.stdout.read_line(&mut line).map_err(|e| format!("reading listener ports: {e}"))? == 0 {
            return Err("listener exited before it was ready".into());
        }
        let line = line.trim();
        if line == "ready" {
            break;
        }
        let port: u16 = line.parse().map_err(|e| format!("listener printed {line:?}: {e}"))?;
        addrs.push(SocketAddr::from((LISTEN_IP, port)));
    }
    if addrs.len() != n {
        return Err(format!("listener bound {} of {n} ports", addrs.len()));
    }
    Ok((listener, addrs))
}

/// The listener subprocess: bind N listeners on 127.0.0.4 (SO_REUSEADDR, ephemeral ports),
/// print their ports and `ready`, accept, count and drop connections, and answer each line on
/// stdin with the count, until stdin closes.
fn listener_main(n: &str) -> ExitCode {
    let Ok(n) = n.parse::<usize>() else {
        eprintln!("{LISTENER_ENV}={n:?} is not a number");
        return ExitCode::from(2);
    };
    raise_nofile();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("listener: cannot build runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let accepted = Arc::new(AtomicU64::new(0));
    runtime.block_on(async move {
        let mut out = std::io::stdout().lock();
        for _ in 0..n {
            let listener = match bind_reusable() {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("listener: bind {}:0: {e}", std::net::Ipv4Addr::from(LISTEN_IP));
                    return ExitCode::FAILURE;
                }
            };
            let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
            if writeln!(out, "{port}").is_err() {
                return ExitCode::FAILURE;
            }
            let accepted = accepted.clone();
            tokio::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            drop(stream)
                        }
                        // Out of file descriptors or similar: back off instead of spinning.
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            });
        }
        if writeln!(out, "ready").and_then(|_| out.flush()).is_err() {
            return ExitCode::FAILURE;
        }
        drop(out);
        let _ = tokio::task::spawn_blocking(move || {
            let mut out = std::io::stdout();
            for line in std::io::stdin().lines() {
                if line.is_err() || writeln!(out, "{}", accepted.load(Ordering::Relaxed)).and_then(|_| out.flush()).is_err() {
                    break;
                }
            }
        })
        .await;
        ExitCode::SUCCESS
    })
}

/// Bind `LISTEN_IP:0` with SO_REUSEADDR (see `benches/probe_capacity.rs` for why).
fn bind_reusable() -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((LISTEN_IP, 0)))?;
    socket.listen(1024)
}
