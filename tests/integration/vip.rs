//! Virtual IPs with VRRPv3 between two nodes in namespaces (tests/support/netns.rs): the
//! primary host is node "a", the backup host node "b", each running the real `understudy` with
//! a `[[vip]]` for 198.18.0.100 and nginx listening on every address; the client host reaches
//! the VIP (bench/vip/probe.py measures the gap). Interoperability with a real keepalived and
//! tshark's VRRP dissector. Addresses from 198.18.0.0/24 only; no route out. Needs root.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::netns::{Host, Testbed};
use crate::support::wait_for;

const VIP: &str = "198.18.0.100";
/// The IPv6 VIP: documentation prefix, only inside the namespaces (no route out).
const VIP6: &str = "2001:db8::100";

fn probe_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/vip/probe.py")
}

/// nginx on every address of `h` (so on the VIP once it is there), answering its node name.
fn nginx_any(tb: &mut Testbed, h: Host, name: &str) -> PathBuf {
    let dir = tb.dir.join(format!("nginx-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    let conf = format!(
        "daemon on;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           server {{\n    listen 80;\n    listen [::]:80;\n    location / {{ default_type text/plain; return 200 \"{name}\\n\"; }}\n  }}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let pidfile = dir.join("nginx.pid");
    tb.track_pidfile(pidfile.clone());
    tb.sh(h, &format!("{} -c {d}/nginx.conf -p {d}", crate::support::nginx_binary()));
    pidfile
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a PID this test started.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// One understudy node: config, log and PID.
struct Node {
    host: Host,
    config: PathBuf,
    log: PathBuf,
    pid: u32,
}

/// The node's config: a tracked local web service (checks every 100 ms, fall 2) and the VIP.
fn node_config(dir: &Path, h: Host, name: &str, priority: u8, advert: &str, extra: &str) -> String {
    node_config_for(dir, h, name, priority, advert, &format!("{VIP}/24"), extra)
}

/// [`node_config`] with another virtual address (`address` with its prefix length).
fn node_config_for(dir: &Path, h: Host, name: &str, priority: u8, advert: &str, address: &str, extra: &str) -> String {
    format!(
        r#"[daemon]
data_dir = "{data}"
api = "127.0.0.1:9190"

[[service]]
name = "local-web"
[service.check]
kind = "http"
port = 80
path = "/"
interval = "100ms"
timeout = "50ms"
fall = 2
rise = 2
[[service.target]]
name = "self"
address = "{ip}"

[[vip]]
name = "web"
interface = "eth0"
vrid = 51
priority = {priority}
advert_interval = "{advert}"
addresses = ["{address}"]
track = ["local-web"]
lifetime = "3s"
{extra}
"#,
        data = dir.join(format!("data-{name}")).display(),
        ip = h.ip()
    )
}

fn start_node(tb: &mut Testbed, h: Host, name: &'static str, config: &str) -> Node {
    let path = tb.dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    let log = tb.dir.join(format!("{name}.log"));
    let pid = tb.spawn(h, crate::support::understudy_bin(), &["run", "-c", path.to_str().unwrap()], &log);
    Node { host: h, config: path, log, pid }
}

impl Node {
    fn restart(&mut self, tb: &mut Testbed) {
        self.pid = tb.spawn(self.host, crate::support::understudy_bin(), &["run", "-c", self.config.to_str().unwrap()], &self.log);
    }
    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn has_vip(tb: &Testbed, h: Host) -> bool {
    let out = tb.command(h, "ip").args(["-4", "-o", "addr", "show", "dev", "eth0"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).contains(&format!("inet {VIP}/"))
}

/// nginx on both nodes, understudy a (priority 150) and b (100) at `advert` with their extra
/// config, and a holding the VIP with b its backup. Returns a's nginx pid file and both nodes.
async fn two_nodes(tb: &mut Testbed, dir: &Path, advert: &str, extra_a: &str, extra_b: &str) -> (PathBuf, Node, Node) {
    let nginx_a = nginx_any(tb, Host::Primary, "a");
    nginx_any(tb, Host::Backup, "b");
    let a = start_node(tb, Host::Primary, "a", &node_config(dir, Host::Primary, "a", 150, advert, extra_a));
    let b = start_node(tb, Host::Backup, "b", &node_config(dir, Host::Backup, "b", 100, advert, extra_b));
    wait_holder(tb, Host::Primary, Duration::from_secs(15), "a holds the VIP").await;
    wait_for(Duration::from_secs(10), "b is backup", || async { b.logs().contains("VRRP backup").then_some(()) }).await;
    (nginx_a, a, b)
}

async fn wait_holder(tb: &Testbed, h: Host, within: Duration, what: &str) {
    let other = if h == Host::Primary { Host::Backup } else { Host::Primary };
    wait_for(within, what, || async { (has_vip(tb, h) && !has_vip(tb, other)).then_some(()) }).await;
}

/// The wall time (RFC 3339 with microseconds, as tracing prints it) of the first log line
/// containing `needle` after `skip` matching lines, in seconds since the epoch.
fn log_time(logs: &str, needle: &str, skip: usize) -> Option<f64> {
    let line = logs.lines().filter(|l| l.contains(needle)).nth(skip)?;
    let stamp = line.split_whitespace().find(|w| w.len() >= 20 && w.as_bytes().get(4) == Some(&b'-') && w.contains('T'))?;
    let (date, time) = stamp.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().unwrap_or(0));
    let (y, m, day) = (d.next()?, d.next()?, d.next()?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let mut t = time.split(':');
    let (h, mi, s) = (t.next()?.parse::<f64>().ok()?, t.next()?.parse::<f64>().ok()?, t.next()?.parse::<f64>().ok()?);
    Some(days as f64 * 86400.0 + h * 3600.0 + mi * 60.0 + s)
}

/// bench/vip/probe.py in the client namespace, until `stop` is created.
fn start_probe(tb: &Testbed, stop: &Path, seconds: u32) -> tokio::process::Child {
    start_probe_to(tb, VIP, stop, seconds)
}

/// [`start_probe`] to another address.
fn start_probe_to(tb: &Testbed, vip: &str, stop: &Path, seconds: u32) -> tokio::process::Child {
    tb.tokio_command(Host::Client, "python3")
        .args([probe_script().to_str().unwrap(), vip, "80", &seconds.to_string(), stop.to_str().unwrap()])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3")
}

/// The probe has had its first answer (it creates `STOPFILE.ready`).
async fn wait_probe_ready(stop: &Path) {
    let ready = PathBuf::from(format!("{}.ready", stop.display()));
    wait_for(Duration::from_secs(10), "the probe's first answer", || async { ready.exists().then_some(()) }).await;
}

/// The probe's answers now come from `node` (it writes the node to `STOPFILE.served` at each
/// change).
async fn wait_probe_served(stop: &Path, node: &str, within: Duration) {
    let served = PathBuf::from(format!("{}.served", stop.display()));
    wait_for(within, &format!("the client's answers to come from {node}"), || async { (std::fs::read_to_string(&served).ok()?.trim() == node).then_some(()) }).await;
}

async fn finish_probe(child: tokio::process::Child, stop: &Path) -> serde_json::Value {
    std::fs::write(stop, "").unwrap();
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output()).await.expect("probe ends").unwrap();
    let _ = std::fs::remove_file(stop);
    let _ = std::fs::remove_file(format!("{}.ready", stop.display()));
    let _ = std::fs::remove_file(format!("{}.served", stop.display()));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("probe output {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_master_loses_the_vip_to_the_backup_and_takes_it_back_after_preempt_delay() {
    let dir = tempfile::tempdir().unwrap();
    let mut tb = Testbed::new(dir.path());
    let (_, mut a, _b) = two_nodes(&mut tb, dir.path(), "100ms", "preempt_delay = \"2s\"", "").await;

    // 1. The speaker alone dies (kill -9): no resign. The backup takes over after
    //    Master_Down_Interval, and the kernel removes the VIP from a by itself (lifetime 3 s).
    kill(a.pid, libc::SIGKILL);
    let killed = Instant::now();
    wait_for(Duration::from_secs(5), "b takes the VIP", || async { has_vip(&tb, Host::Backup).then_some(()) }).await;
    let took = killed.elapsed();
    wait_for(Duration::from_secs(6), "the dead speaker's VIP lapses on a", || async { (!has_vip(&tb, Host::Primary)).then_some(()) }).await;
    eprintln!("speaker killed: b took the VIP after {took:?}; the VIP lapsed on a after {:?}", killed.elapsed());
    assert!(killed.elapsed() >= Duration::from_secs(2), "the VIP should have lived out (most of) its 3 s lifetime on a");

    // 2. a returns: it preempts (priority 150 > 100), but only once preempt_delay (2 s) is over.
    let stop = dir.path().join("stop");
    let probe = start_probe(&tb, &stop, 60);
    wait_probe_ready(&stop).await;
    let restarted = Instant::now();
    a.restart(&mut tb);
    wait_holder(&tb, Host::Primary, Duration::from_secs(10), "a takes the VIP back").await;
    let back = restarted.elapsed();
    wait_probe_served(&stop, "a", Duration::from_secs(5)).await;
    let r = finish_probe(probe, &stop).await;
    eprintln!("a restarted: preempted after {back:?}; client during failback: {r}");
    assert!(back >= Duration::from_secs(2), "preempted after {back:?}, before preempt_delay");
    let served: Vec<&str> = r["served"].as_array().unwrap().iter().map(|s| s[0].as_str().unwrap()).collect();
    assert_eq!(served, ["b", "a"], "{r}");
    assert!(r["max_gap_ms"].as_f64().unwrap() < 500.0, "failback should be (nearly) seamless: {r}");

    // 3. The whole host crashes (the speaker killed and the link down): the client sees a gap of
    //    about Master_Down_Interval (3 x 100 ms + skew), then b answers.
    let probe = start_probe(&tb, &stop, 60);
    wait_probe_ready(&stop).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // a steady state before the crash
    kill(a.pid, libc::SIGKILL);
    tb.sh(Host::Primary, "ip link set eth0 down");
    wait_for(Duration::from_secs(5), "b takes the VIP", || async { has_vip(&tb, Host::Backup).then_some(()) }).await;
    wait_probe_served(&stop, "b", Duration::from_secs(5)).await;
    let r = finish_probe(probe, &stop).await;
    eprintln!("host crash at advert 100 ms: client {r}");
    let gap = r["max_gap_ms"].as_f64().unwrap();
    assert!(gap > 250.0 && gap < 1500.0, "client gap {gap} ms at advert 100 ms (Master_Down_Interval 361 ms): {r}");
    assert_eq!(r["served"].as_array().unwrap().last().unwrap()[0], "b");
}

/// A webhook receiver listening in `h`'s namespace (the nodes reach it over the bridge): the JSON
/// bodies it got, in order. It answers 200 like a webhook consumer.
fn webhook_receiver(tb: &Testbed, h: Host) -> (String, std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
    use std::os::fd::AsRawFd;
    let ns = format!("/var/run/netns/{}", tb.ns(h));
    let ip = h.ip();
    let listener = std::thread::spawn(move || {
        let f = std::fs::File::open(&ns).unwrap_or_else(|e| panic!("{ns}: {e}"));
        // SAFETY: setns(2) on this short-lived thread only; the socket it opens stays in that
        // namespace after the thread ends.
        let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {ns}: {}", std::io::Error::last_os_error());
        std::net::TcpListener::bind((ip, 0)).expect("bind the receiver in the namespace")
    })
    .join()
    .unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let g = g.clone();
        async move {
            g.lock().unwrap().push(serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default());
            "{}"
        }
    });
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, got)
}

/// A webhook channel for `node_config`'s `extra`.
fn webhook_channel(url: &str) -> String {
    format!("\n[[notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{url}\"\ngroup_window = \"100ms\"\nbackoff_max = \"500ms\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_handover_notifies_through_the_webhook_naming_the_vip_node_and_states() {
    let dir = tempfile::tempdir().unwrap();
    let mut tb = Testbed::new(dir.path());
    let (url, got) = webhook_receiver(&tb, Host::Monitor);
    let (_, a, _b) = two_nodes(&mut tb, dir.path(), "100ms", &webhook_channel(&url), &webhook_channel(&url)).await;

    kill(a.pid, libc::SIGKILL);
    wait_for(Duration::from_secs(5), "b takes the VIP", || async { has_vip(&tb, Host::Backup).then_some(()) }).await;
    let from_b = |n: &serde_json::Value| n["cause"]["event"]["local"] == Host::Backup.ip();
    let n = wait_for(Duration::from_secs(10), "b's webhook for taking the VIP over", || async {
        got.lock().unwrap().iter().find(|n| from_b(n) && n["event"] == "vip_state" && n["phase"] == "open").cloned()
    })
    .await;
    eprintln!("webhook from b: {n}");
    let ev = &n["cause"]["event"];
    assert_eq!((ev["kind"].as_str(), ev["vip"].as_str(), ev["from"].as_str(), ev["to"].as_str()), (Some("vip_state"), Some("web"), Some("backup"), Some("master")), "{n}");
    assert!(!ev["node"].as_str().unwrap_or_default().is_empty(), "the notice names the node's host: {n}");
    let summary = n["summary"].as_str().unwrap();
    assert!(summary.starts_with("vip web: node ") && summary.contains("(198.18.0.12) took the VIP over (backup -> master)"), "{summary}");
    assert_eq!((n["severity"].as_str(), n["status"].as_str()), (Some("warning"), Some("firing")), "{n}");
    assert_eq!(n["key"].as_str().unwrap(), format!("understudy-vip-web-198.18.0.12:vip_state:{}", n["cause"]["seq"]), "{n}");
    // Starting as backup sent nothing: b's first notice is the takeover. (Later ones may follow
    // on a loaded machine, where a late advert can bounce the VIP; each is its own transition.)
    let sent: Vec<serde_json::Value> = got.lock().unwrap().iter().filter(|n| from_b(n)).cloned().collect();
    assert_eq!(sent[0]["key"], n["key"], "b's first notice is the takeover: {sent:#?}");
    assert!(!sent.iter().any(|n| n["cause"]["event"]["from"] != "master" && n["cause"]["event"]["to"] == "backup"), "starting as backup is not notified: {sent:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_tracked_service_resigns_and_the_backup_takes_over_within_50_ms() {
    let dir = tempfile::tempdir().unwrap();
    let mut tb = Testbed::new(dir.path());
    // A 1 s advert interval: a resign must not wait 3 intervals.
    let (nginx_a, a, b) = two_nodes(&mut tb, dir.path(), "1s", "", "").await;

    let stop = dir.path().join("stop");
    let probe = start_probe(&tb, &stop, 60);
    wait_probe_ready(&stop).await;
    let pid: u32 = std::fs::read_to_string(&nginx_a).unwrap().trim().parse().unwrap();
    kill(pid, libc::SIGKILL);
    wait_holder(&tb, Host::Backup, Duration::from_secs(5), "b takes the VIP").await;
    wait_probe_served(&stop, "b", Duration::from_secs(5)).await;
    let r = finish_probe(probe, &stop).await;
    let resigned = log_time(&a.logs(), "VRRP fault", 0).expect("a logged its resign");
    let took = log_time(&b.logs(), "VRRP master", 0).expect("b logged taking over");
    let handover_ms = (took - resigned) * 1000.0;
    eprintln!("tracked nginx killed: a resigned, b master {handover_ms:.1} ms later; client {r}");
    assert!((0.0..=50.0).contains(&handover_ms), "handover {handover_ms:.1} ms after the resign (a 1 s advert would be 3.6 s)");
    // The client's whole gap: detection (fall 2 at 100 ms) plus the handover, far below 3 x 1 s.
    assert!(r["max_gap_ms"].as_f64().unwrap() < 1500.0, "{r}");
    assert_eq!(r["served"].as_array().unwrap().last().unwrap()[0], "b");
}

fn has_vip6(tb: &Testbed, h: Host) -> bool {
    let out = tb.command(h, "ip").args(["-6", "-o", "addr", "show", "dev", "eth0"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().any(|l| l.contains(&format!("inet6 {VIP6}/")))
}

/// `h`'s eth0 has its IPv6 link-local address and nothing tentative (duplicate address
/// detection of the interface's own addresses is over: the speaker binds to the link-local one).
async fn wait_ipv6_ready(tb: &Testbed, h: Host) {
    wait_for(Duration::from_secs(10), "IPv6 link-local address out of DAD", || async {
        let all = tb.sh(h, "ip -6 -o addr show dev eth0 scope link");
        let tentative = tb.sh(h, "ip -6 -o addr show dev eth0 tentative");
        (all.contains("inet6 fe80:") && tentative.trim().is_empty()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_vip_moves_on_a_crash_and_the_client_follows_the_unsolicited_na() {
    let dir = tempfile::tempdir().unwrap();
    let mut tb = Testbed::new(dir.path());
    nginx_any(&mut tb, Host::Primary, "a");
    nginx_any(&mut tb, Host::Backup, "b");
    for h in [Host::Client, Host::Primary, Host::Backup] {
        wait_ipv6_ready(&tb, h).await;
    }
    tb.sh(Host::Client, "ip -6 addr add 2001:db8::10/64 dev eth0 nodad");
    let addr = format!("{VIP6}/64");
    let a = start_node(&mut tb, Host::Primary, "a", &node_config_for(dir.path(), Host::Primary, "a", 150, "100ms", &addr, ""));
    let b = start_node(&mut tb, Host::Backup, "b", &node_config_for(dir.path(), Host::Backup, "b", 100, "100ms", &addr, ""));
    wait_for(Duration::from_secs(15), "a holds the IPv6 VIP", || async { (has_vip6(&tb, Host::Primary) && !has_vip6(&tb, Host::Backup)).then_some(()) }).await;
    wait_for(Duration::from_secs(10), "b is backup", || async { b.logs().contains("VRRP backup").then_some(()) }).await;
    // Added without duplicate address detection: usable at once, never "tentative".
    let line = tb.sh(Host::Primary, &format!("ip -6 -o addr show dev eth0 to {VIP6}"));
    assert!(!line.contains("tentative") && !line.contains("dadfailed"), "{line}");
    assert_eq!(tb.sh(Host::Client, &format!("curl -s -m 2 -g http://[{VIP6}]/")).trim(), "a");
    let (mac_a, mac_b) = (mac(&tb, Host::Primary), mac(&tb, Host::Backup));
    let neigh = || tb.sh(Host::Client, &format!("ip -6 neigh show {VIP6} dev eth0"));
    assert!(neigh().contains(&mac_a), "{}", neigh());

    // The whole host a crashes (speaker killed, link down): b takes the VIP after
    // Master_Down_Interval and its unsolicited neighbour advertisement (override) moves the
    // client at once; without it the client would keep sending to a's MAC until its neighbour
    // entry expired (15 to 45 s).
    let stop = dir.path().join("stop");
    let probe = start_probe_to(&tb, VIP6, &stop, 60);
    wait_probe_ready(&stop).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill(a.pid, libc::SIGKILL);
    tb.sh(Host::Primary, "ip link set eth0 down");
    wait_for(Duration::from_secs(5), "b takes the IPv6 VIP", || async { has_vip6(&tb, Host::Backup).then_some(()) }).await;
    wait_for(Duration::from_secs(2), "the client's neighbour entry points at b", || async { neigh().contains(&mac_b).then_some(()) }).await;
    wait_probe_served(&stop, "b", Duration::from_secs(5)).await;
    let r = finish_probe(probe, &stop).await;
    eprintln!("IPv6 VIP, master killed at advert 100 ms: client {r}; neigh {}", neigh().trim());
    assert_eq!(r["served"].as_array().unwrap().last().unwrap()[0], "b", "{r}");
    let gap = r["max_gap_ms"].as_f64().unwrap();
    assert!(gap > 250.0 && gap < 1500.0, "client gap {gap} ms at advert 100 ms (Master_Down_Interval 361 ms): {r}");
    let line = tb.sh(Host::Backup, &format!("ip -6 -o addr show dev eth0 to {VIP6}"));
    assert!(!line.contains("tentative"), "{line}");
    drop(a);
}

/// MAC address of `h`'s eth0.
fn mac(tb: &Testbed, h: Host) -> String {
    tb.sh(h, "cat /sys/class/net/eth0/address").trim().to_string()
}

fn client_neigh(tb: &Testbed) -> String {
    tb.sh(Host::Client, &format!("ip neigh show {VIP} dev eth0"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healed_partition_leaves_one_master_and_the_client_follows_its_garp() {
    let dir = tempfile::tempdir().unwrap();
    let mut tb = Testbed::new(dir.path());
    let (_, a, b) = two_nodes(&mut tb, dir.path(), "100ms", "", "").await;
    let (mac_a, mac_b) = (mac(&tb, Host::Primary), mac(&tb, Host::Backup));
    tb.sh(Host::Client, &format!("curl -s -m 2 http://{VIP}/ >/dev/null"));
    assert!(client_neigh(&tb).contains(&mac_a), "{}", client_neigh(&tb));

    // Partition: VRRP is dropped between the nodes, both ways (a master that still heard b
    // would win the client back at each of b's adverts); b becomes master too and its ARP
    // moves the client.
    for h in [Host::Primary, Host::Backup] {
        tb.sh(h, "nft add table inet part && nft 'add chain inet part in { type filter hook input priority 0 ; policy accept ; }' && nft 'add rule inet part in ip protocol 112 counter drop'");
    }
    wait_for(Duration::from_secs(5), "two masters", || async { (has_vip(&tb, Host::Primary) && has_vip(&tb, Host::Backup)).then_some(()) }).await;
    wait_for(Duration::from_secs(5), "the client follows b's ARP", || async { client_neigh(&tb).contains(&mac_b).then_some(()) }).await;

    // Heal: exactly one master (a, the higher priority) within an interval or so, and a's
    // re-announcement brings the client back.
    for h in [Host::Primary, Host::Backup] {
        tb.sh(h, "nft delete table inet part");
    }
    let healed = Instant::now();
    wait_holder(&tb, Host::Primary, Duration::from_secs(2), "only a holds the VIP").await;
    let one = healed.elapsed();
    wait_for(Duration::from_secs(2), "the client's neighbour entry points at a", || async { client_neigh(&tb).contains(&mac_a).then_some(()) }).await;
    eprintln!("partition healed: one master after {one:?}, client at a after {:?}; neigh: {}", healed.elapsed(), client_neigh(&tb).trim());
    assert!(one < Duration::from_millis(300), "one master {one:?} after the heal (advert 100 ms)");
    let out = tb.sh(Host::Client, &format!("curl -s -m 2 http://{VIP}/"));
    assert_eq!(out.trim(), "a");
    assert!(b.logs().contains("198.18.0.11 has priority 150"), "b stepped down for a: {}", b.logs());
    drop(a);
}

/// keepalived in `h`'s namespace with one VRRPv3 instance like ours; returns its pid files.
fn keepalived(tb: &mut Testbed, h: Host, priority: u8) -> [PathBuf; 2] {
    assert!(Path::new("/usr/sbin/keepalived").exists(), "keepalived is not installed: run scripts/install-test-deps.sh (apt-get install keepalived)");
    let dir = tb.dir.join("keepalived");
    std::fs::create_dir_all(&dir).unwrap();
    let conf = format!(
        "global_defs {{\n  router_id node-{h:?}\n  vrrp_version 3\n}}\n\
         vrrp_instance web {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n  priority {priority}\n  advert_int 0.1\n  virtual_ipaddress {{\n    {VIP}/24\n  }}\n}}\n"
    );
    let d = dir.display();
    std::fs::write(dir.join("keepalived.conf"), conf).unwrap();
    let pids = [dir.join("keepalived.pid"), dir.join("vrrp.pid")];
    for p in &pids {
        let _ = std::fs::remove_file(p);
        tb.track_pidfile(p.clone());
    }
    tb.sh(h, &format!("/usr/sbin/keepalived -P -l -D -f {d}/keepalived.conf -p {d}/keepalived.pid -r {d}/vrrp.pid -c {d}/checkers.pid >{d}/out.log 2>&1"));
    pids
}

fn kill_pidfiles(pids: &[PathBuf]) {
    for p in pids {
        if let Some(pid) = std::fs::read_to_string(p).ok().and_then(|s| s.trim().parse::<u32>().ok()) {
            kill(pid, libc::SIGKILL);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn understudy_and_keepalived_take_over_from_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let mut tb = Testbed::new(dir.path());
    nginx_any(&mut tb, Host::Primary, "a");
    nginx_any(&mut tb, Host::Backup, "b");

    // understudy master (150), keepalived backup (100).
    let mut a = start_node(&mut tb, Host::Primary, "a", &node_config(dir.path(), Host::Primary, "a", 150, "100ms", ""));
    let k = keepalived(&mut tb, Host::Backup, 100);
    wait_holder(&tb, Host::Primary, Duration::from_secs(15), "understudy (a) holds the VIP").await;
    // keepalived stays backup: it accepts our adverts (checksum, TTL, interval) for a while.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(has_vip(&tb, Host::Primary) && !has_vip(&tb, Host::Backup), "keepalived did not accept understudy as master");
    kill(a.pid, libc::SIGKILL);
    tb.sh(Host::Primary, &format!("ip addr del {VIP}/24 dev eth0"));
    let t = Instant::now();
    wait_holder(&tb, Host::Backup, Duration::from_secs(5), "keepalived (b) takes over from understudy").await;
    eprintln!("keepalived took over {:?} after understudy died", t.elapsed());

    // Reverse: keepalived master (100), understudy backup (50) that takes over when it dies.
    let cfg = node_config(dir.path(), Host::Primary, "a", 50, "100ms", "");
    std::fs::write(&a.config, cfg).unwrap();
    a.restart(&mut tb);
    wait_for(Duration::from_secs(10), "understudy is backup under keepalived", || async { a.logs().matches("VRRP backup").count().ge(&2).then_some(()) }).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!has_vip(&tb, Host::Primary) && has_vip(&tb, Host::Backup), "understudy did not accept keepalived as master: {}", a.logs());
    kill_pidfiles(&k);
    tb.sh(Host::Backup, &format!("ip addr del {VIP}/24 dev eth0 || true"));
    let t = Instant::now();
    wait_holder(&tb, Host::Primary, Duration::from_secs(5), "understudy (a) takes over from keepalived").await;
    eprintln!("understudy took over {:?} after keepalived died", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tshark_decodes_our_adverts_and_malformed_packets_are_counted_and_dropped() {
    assert!(Path::new("/usr/bin/tshark").exists(), "tshark is not installed: run scripts/install-test-deps.sh (apt-get install tshark)");
    let dir = tempfile::tempdir().unwrap();
    let mut tb = Testbed::new(dir.path());
    nginx_any(&mut tb, Host::Primary, "a");
    let a = start_node(&mut tb, Host::Primary, "a", &node_config(dir.path(), Host::Primary, "a", 150, "100ms", ""));
    wait_for(Duration::from_secs(15), "a holds the VIP", || async { has_vip(&tb, Host::Primary).then_some(()) }).await;

    // Capture on the client: every advert from a decodes as VRRPv3 with a good checksum.
    let out = tb
        .command(Host::Client, "tshark")
        .args(["-i", "eth0", "-f", "ip proto 112", "-c", "10", "-a", "duration:10", "-o", "vrrp.v3_checksum_as_in_v2:FALSE", "-T", "fields"])
        .args(["-e", "ip.src", "-e", "ip.ttl", "-e", "vrrp.version", "-e", "vrrp.type", "-e", "vrrp.virt_rtr_id", "-e", "vrrp.prio", "-e", "vrrp.checksum.status", "-e", "vrrp.ip_addr"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    eprintln!("tshark:\n{text}");
    assert_eq!(lines.len(), 10, "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for l in lines {
        let f: Vec<&str> = l.split('\t').collect();
        assert_eq!(f, ["198.18.0.11", "255", "3", "1", "51", "150", "1", VIP], "{l}");
    }

    // Malformed packets sent to a: counted by reason, dropped, a stays master.
    let send = r#"
import socket, struct, sys
def csum(src, dst, msg):
    data = socket.inet_aton(src) + socket.inet_aton(dst) + bytes([0, 112]) + struct.pack('!H', len(msg)) + msg
    if len(data) % 2: data += b'\0'
    s = sum(struct.unpack('!%dH' % (len(data) // 2), data))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
def advert(version=3, prio=200, vrid=51):
    m = bytes([version << 4 | 1, vrid, prio, 1, 0, 10, 0, 0]) + socket.inet_aton('198.18.0.100')
    c = csum('198.18.0.10', '198.18.0.11', m)
    return m[:6] + struct.pack('!H', c) + m[8:]
def send(msg, ttl=255):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
    s.sendto(msg, ('198.18.0.11', 0))
good = advert()
send(good, ttl=64)                                  # ttl
bad = bytearray(good); bad[7] ^= 0xff; send(bytes(bad))   # checksum
send(good[:6])                                      # short
send(advert(version=2))                             # version
send(good[:-2])                                     # length
send(advert(vrid=52))                               # another VRID: ignored, not malformed
"#;
    tb.sh(Host::Client, &format!("python3 -c \"{}\"", send.replace('"', "\\\"")));
    let metrics = wait_for(Duration::from_secs(5), "the drops counted", || async {
        let m = tb.sh(Host::Primary, "curl -s http://127.0.0.1:9190/metrics");
        m.contains("reason=\"length\"").then_some(m)
    })
    .await;
    for reason in ["ttl", "checksum", "short", "version", "length"] {
        let line = format!("understudy_vip_dropped_total{{vip=\"web\",reason=\"{reason}\"}} 1");
        assert!(metrics.contains(&line), "missing {line}:\n{metrics}");
    }
    assert!(metrics.contains("understudy_vip_state{vip=\"web\",state=\"master\"} 1"), "{metrics}");
    // The API says the same: this node is master, and counted each malformed packet once.
    let status: serde_json::Value = serde_json::from_str(&tb.sh(Host::Primary, "curl -s http://127.0.0.1:9190/api/v1/vips")).expect("GET /api/v1/vips is JSON");
    assert_eq!(status[0]["name"], "web", "{status}");
    assert_eq!(status[0]["state"], "master", "{status}");
    assert_eq!(status[0]["dropped"]["checksum"], 1, "{status}");
    // A priority-200 advert with a wrong TTL would have made a step down: it did not.
    assert!(has_vip(&tb, Host::Primary));
    assert!(!a.logs().contains("VRRP backup: 198.18.0.10"), "{}", a.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_of_the_master_hands_over_without_a_refused_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut tb = Testbed::new(dir.path());
    let (_, a, _b) = two_nodes(&mut tb, dir.path(), "1s", "", "").await;
    let stop = dir.path().join("stop");
    let probe = start_probe(&tb, &stop, 60);
    wait_probe_ready(&stop).await;
    kill(a.pid, libc::SIGTERM);
    wait_holder(&tb, Host::Backup, Duration::from_secs(5), "b takes the VIP").await;
    wait_probe_served(&stop, "b", Duration::from_secs(5)).await;
    let r = finish_probe(probe, &stop).await;
    eprintln!("clean stop of the master at advert 1 s: client {r}");
    assert_eq!(r["served"].as_array().unwrap().iter().map(|s| s[0].as_str().unwrap()).collect::<Vec<_>>(), ["a", "b"], "{r}");
    // No new connection fails and the client never waits: the old master keeps the VIP until
    // the new one has announced itself. The one request in flight at the instant the clients'
    // ARP moves can be cut (the new holder resets a connection it never saw: true of every VIP
    // move, keepalived's too), so at most one is cut, never more.
    assert_eq!(r["failed_connect"], 0, "a connection failed during a clean handover: {r}");
    assert!(r["failed_cut"].as_u64().unwrap() <= 1, "more than the one in-flight request was cut: {r}");
    assert!(r["max_gap_ms"].as_f64().unwrap() < 200.0, "the client waited during a clean handover: {r}");
}

/// `pid` has exited (gone, or a zombie waiting for the test bed to reap it).
async fn wait_exit(pid: u32, within: Duration) {
    wait_for(within, "the daemon to exit", || async {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => Some(()),
            Ok(s) => s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')).then_some(()),
        }
    })
    .await;
}

/// `curl` from the client to `ip`: the body, or None when no answer came within 1 s.
fn client_get(tb: &Testbed, ip: &str) -> Option<String> {
    let out = tb.command(Host::Client, "curl").args(["-s", "-m", "1", &format!("http://{ip}/")]).output().unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_mode_false_drops_traffic_to_the_vip_on_a_non_owner_master_and_true_accepts_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut tb = Testbed::new(dir.path());
    nginx_any(&mut tb, Host::Primary, "a");
    let mut a = start_node(&mut tb, Host::Primary, "a", &node_config(dir.path(), Host::Primary, "a", 150, "100ms", "accept_mode = false"));
    wait_for(Duration::from_secs(15), "a holds the VIP", || async { has_vip(&tb, Host::Primary).then_some(()) }).await;
    assert!(tb.sh(Host::Primary, "nft list tables").contains("understudy_vip_"), "the accept_mode = false table is installed");

    // A master that is not the address owner (priority 150) answers ARP for the VIP (the client
    // learns a's MAC) but does not accept packets addressed to it; a's own address still works.
    assert_eq!(client_get(&tb, VIP), None, "a connection to the VIP went through with accept_mode = false");
    assert!(client_neigh(&tb).contains(&mac(&tb, Host::Primary)), "ARP for the VIP is answered: {}", client_neigh(&tb));
    assert_eq!(client_get(&tb, Host::Primary.ip()).as_deref(), Some("a"));
    let ruleset = tb.sh(Host::Primary, "nft list ruleset");
    assert!(ruleset.contains(&format!("ip daddr {VIP} counter packets")) && !ruleset.contains("counter packets 0 "), "the drop counted the client's SYNs: {ruleset}");

    // A clean stop removes the table with the VIP.
    kill(a.pid, libc::SIGTERM);
    wait_exit(a.pid, Duration::from_secs(5)).await;
    assert!(!tb.sh(Host::Primary, "nft list tables").contains("understudy_vip_"), "the table outlived the speaker");
    assert!(!has_vip(&tb, Host::Primary));

    // accept_mode = true (the default): the same master accepts.
    std::fs::write(&a.config, node_config(dir.path(), Host::Primary, "a", 150, "100ms", "")).unwrap();
    a.restart(&mut tb);
    wait_for(Duration::from_secs(15), "a holds the VIP again", || async { has_vip(&tb, Host::Primary).then_some(()) }).await;
    assert_eq!(client_get(&tb, VIP).as_deref(), Some("a"));
    assert!(!tb.sh(Host::Primary, "nft list tables").contains("understudy_vip_"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_mode_false_on_ipv6_drops_traffic_but_answers_neighbour_solicitations_for_the_vip() {
    let dir = tempfile::tempdir().unwrap();
    let mut tb = Testbed::new(dir.path());
    nginx_any(&mut tb, Host::Primary, "a");
    for h in [Host::Client, Host::Primary] {
        wait_ipv6_ready(&tb, h).await;
    }
    tb.sh(Host::Client, "ip -6 addr add 2001:db8::10/64 dev eth0 nodad");
    let addr = format!("{VIP6}/64");
    let _a = start_node(&mut tb, Host::Primary, "a", &node_config_for(dir.path(), Host::Primary, "a", 150, "100ms", &addr, "accept_mode = false"));
    wait_for(Duration::from_secs(15), "a holds the IPv6 VIP", || async { has_vip6(&tb, Host::Primary).then_some(()) }).await;

    let out = tb.command(Host::Client, "curl").args(["-s", "-m", "1", "-g", &format!("http://[{VIP6}]/")]).output().unwrap();
    assert!(!out.status.success(), "a connection to the IPv6 VIP went through with accept_mode = false: {}", String::from_utf8_lossy(&out.stdout));
    // The client resolved the VIP (multicast solicitation) while trying; a unicast solicitation
    // to the VIP itself (how neighbour unreachability detection probes) must be answered too
    // (RFC 5798 6.4.3: neighbour discovery is never dropped).
    let client_mac = mac(&tb, Host::Client);
    let ns = r#"
import select, socket, sys, time
vip = socket.inet_pton(socket.AF_INET6, sys.argv[1])
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
s.bind(('2001:db8::10', 0))
s.sendto(bytes([135, 0, 0, 0, 0, 0, 0, 0]) + vip + bytes([1, 1]) + bytes.fromhex(sys.argv[2].replace(':', '')), (sys.argv[1], 0))
end = time.time() + 2
while time.time() < end:
    if not select.select([s], [], [], max(0, end - time.time()))[0]:
        break
    d, _ = s.recvfrom(2048)
    if d[0] == 136 and d[8:24] == vip:
        print('advertised')
        sys.exit(0)
print('no answer')
"#;
    let out = tb.command(Host::Client, "python3").args(["-c", ns, VIP6, &client_mac]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "advertised", "{}", String::from_utf8_lossy(&out.stderr));
    let ruleset = tb.sh(Host::Primary, "nft list ruleset");
    assert!(ruleset.contains(&format!("ip6 daddr {VIP6} counter packets")) && !ruleset.contains("counter packets 0 "), "the drop counted the client's SYNs: {ruleset}");
}
