//! Notifications end to end: the real daemon fails over between real nginx instances and tells
//! a real Alertmanager, a real SMTP server (aiosmtpd) and a local HTTP receiver that stands in
//! for the hosted services (Slack, PagerDuty, a ticketing webhook), whose request shapes we
//! check against their documentation. Every process is started here and killed by PID.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::Value;
use understudy::api::wire;
use understudy::events::Record;
use understudy::notify::notice::Phase;
use understudy::notify::plan::Planner;

use crate::support::*;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub(crate) struct Got {
    pub(crate) path: String,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: Vec<u8>,
}

impl Got {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{} sent a non-JSON body ({e}): {}", self.path, String::from_utf8_lossy(&self.body)))
    }
}

/// An HTTP receiver standing in for Slack, PagerDuty and a webhook consumer. It answers as they
/// document: Slack `200 ok`, PagerDuty `202 {"status":"success",...}`, others `200 {}`.
///
/// From `new` until `start` its port is bound without listening: connections are refused (the
/// receiver is "down") and no other process can take the port in the meantime.
pub(crate) struct Receiver {
    addr: SocketAddr,
    socket: Option<tokio::net::TcpSocket>,
    got: Arc<Mutex<Vec<Got>>>,
    stop: Option<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

async fn receive(State(got): State<Arc<Mutex<Vec<Got>>>>, uri: Uri, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let path = uri.path().to_string();
    let headers = headers.iter().map(|(k, v)| (k.as_str().to_lowercase(), v.to_str().unwrap_or("").to_string())).collect();
    got.lock().unwrap().push(Got { path: path.clone(), headers, body: body.to_vec() });
    match path.as_str() {
        "/slack" => (StatusCode::OK, "ok".into()),
        "/pd" => {
            let key = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["dedup_key"].as_str().map(str::to_string)).unwrap_or_default();
            (StatusCode::ACCEPTED, format!(r#"{{"status":"success","message":"Event processed","dedup_key":"{key}"}}"#))
        }
        _ => (StatusCode::OK, "{}".into()),
    }
}

impl Receiver {
    pub(crate) fn new() -> Receiver {
        let (socket, addr) = closed_port("127.0.0.1");
        Receiver { addr, socket: Some(socket), got: Arc::default(), stop: None }
    }

    pub(crate) async fn start(&mut self) {
        let listener = self.socket.take().expect("receiver started once").listen(1024).expect("listen on the receiver's port");
        let app = axum::Router::new().fallback(receive).with_state(self.got.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(async move { let _ = rx.await; }).await;
        });
        self.stop = Some((tx, task));
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn got(&self, path: &str) -> Vec<Got> {
        self.got.lock().unwrap().iter().filter(|g| g.path == path).cloned().collect()
    }

    /// Wait for a request to `path` whose JSON body satisfies `pred`.
    pub(crate) async fn wait(&self, path: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Got {
        wait_for(Duration::from_secs(20), what, || async { self.got(path).into_iter().find(|g| pred(&g.json())) }).await
    }
}

/// The HMAC-SHA256 signature the receiver expects, computed independently of the daemon.
fn expected_signature(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

async fn failover_and_back(d: &Daemon, primary: &mut Nginx) {
    d.wait_active("www", "primary", Duration::from_secs(5)).await;
    primary.kill();
    d.wait_active("www", "backup", Duration::from_secs(5)).await;
    primary.start().await;
    d.wait_active("www", "primary", Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_slack_and_pagerduty_get_the_documented_requests() {
    let (dir, port, mut primary, _backup) = two_nginx().await;
    let mut rx = Receiver::new();
    rx.start().await;
    let extra = format!(
        r#"
[[notify]]
name = "hook"
kind = "webhook"
url = "{hook}"
secret = "s3cret"
group_window = "100ms"

[[notify]]
name = "chat"
kind = "slack"
url = "{slack}"
group_window = "100ms"

[[notify]]
name = "pager"
kind = "pagerduty"
url = "{pd}"
routing_key = "R0UTINGKEY"
events = ["incident_opened", "incident_closed"]

[[notify]]
name = "ticket"
kind = "webhook"
url = "{ticket}"
events = ["incident_opened"]
body_template = '{{"fields": {{"summary": {{{{title}}}}, "service": {{{{service}}}}, "incident": {{{{incident_id}}}}}}}}'
"#,
        hook = rx.url("/hook"),
        slack = rx.url("/slack"),
        pd = rx.url("/pd"),
        ticket = rx.url("/ticket"),
    );
    let api = api_addr();
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "1s", &extra);
    let d = Daemon::start(dir.path(), &cfg, api).await;
    failover_and_back(&d, &mut primary).await;

    // PagerDuty Events API v2: trigger, then resolve, with one dedup_key for the incident.
    let trigger = rx.wait("/pd", "a PagerDuty trigger", |v| v["event_action"] == "trigger").await.json();
    assert_eq!(trigger["routing_key"], "R0UTINGKEY");
    assert_eq!(trigger["dedup_key"], "understudy-www-incident-1");
    let p = &trigger["payload"];
    assert!(p["summary"].as_str().unwrap().contains("www: primary failed, traffic moved to backup"), "{trigger}");
    assert_eq!(p["severity"], "warning");
    assert!(p["source"].as_str().unwrap().starts_with("understudy@"));
    assert_eq!(p["component"], "www");
    assert!(p["timestamp"].as_str().unwrap().ends_with('Z'));
    let resolve = rx.wait("/pd", "a PagerDuty resolve", |v| v["event_action"] == "resolve").await.json();
    assert_eq!(resolve["dedup_key"], "understudy-www-incident-1");
    assert_eq!(resolve["routing_key"], "R0UTINGKEY");

    // Slack: a readable text message.
    let opened = rx.wait("/slack", "the Slack message for the failover", |v| v["text"].as_str().is_some_and(|t| t.contains("incident #1"))).await;
    let text = opened.json()["text"].as_str().unwrap().to_string();
    assert!(text.contains("*[WARNING] www: primary failed, traffic moved to backup (incident #1)*"), "{text}");
    assert!(text.contains("detection") && text.contains("RTO"), "{text}");
    rx.wait("/slack", "the Slack message for the failback", |v| v["text"].as_str().is_some_and(|t| t.contains("[RESOLVED]"))).await;

    // Webhook: every field, a signature over the exact bytes, the idempotency key in a header.
    let closed = rx.wait("/hook", "the webhook for the closed incident", |v| v["event"] == "incident_closed").await;
    let body = closed.json();
    assert_eq!(closed.headers["x-understudy-signature"], expected_signature("s3cret", &closed.body));
    assert_eq!(closed.headers["x-understudy-key"], body["key"].as_str().unwrap());
    assert_eq!(closed.headers["idempotency-key"], body["key"].as_str().unwrap());
    assert_eq!(closed.headers["content-type"], "application/json");
    for field in ["key", "condition", "event", "status", "severity", "service", "target", "summary", "details", "incident", "cause", "time", "started", "ended"] {
        assert!(!body[field].is_null(), "webhook body lacks {field}: {body}");
    }
    assert_eq!(body["status"], "resolved");
    assert_eq!(body["incident"]["id"], 1);
    assert_eq!(body["cause"]["event"]["kind"], "incident_closed");
    assert!(body["incident"]["checks"][0]["results"].as_array().is_some_and(|r| r.iter().any(|c| c["ok"] == false)), "{body}");
    for g in rx.got("/hook") {
        assert_eq!(g.headers["x-understudy-signature"], expected_signature("s3cret", &g.body), "every webhook is signed");
    }

    // A user template: placeholders become JSON values.
    let ticket = rx.wait("/ticket", "the templated ticket", |_| true).await.json();
    assert_eq!(ticket["fields"]["service"], "www");
    assert_eq!(ticket["fields"]["incident"], 1);
    assert!(ticket["fields"]["summary"].as_str().unwrap().starts_with("[WARNING] www: primary failed"));
    // Filters: only incident_opened reaches the ticket channel. The close was planned (the
    // PagerDuty resolve above came from it) and every channel's outbox is empty, so a close
    // message the filter let through would have arrived by now; it would carry incident 1 too,
    // so tell them apart by the summary.
    wait_for(Duration::from_secs(10), "every channel's outbox to drain", || async {
        let s: wire::NotifyStatus = serde_json::from_value(d.get("/api/v1/notify").await).unwrap();
        s.channels.iter().all(|c| c.pending == 0).then_some(())
    })
    .await;
    let tickets: Vec<String> = rx.got("/ticket").iter().map(|g| g.json()["fields"]["summary"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(tickets.len(), 1, "the ticket channel gets the opening only: {tickets:?}");
    assert!(tickets.iter().all(|t| t.starts_with("[WARNING]") && !t.contains("RESOLVED")), "{tickets:?}");

    // Status, API, metrics. (The receiver logs a request before the daemon reads the answer,
    // so wait for the daemon to have counted it.)
    let status = wait_for(Duration::from_secs(10), "the daemon to count the deliveries", || async {
        let s: wire::NotifyStatus = serde_json::from_value(d.get("/api/v1/notify").await).unwrap();
        let done = |n: &str, k: u64| s.channels.iter().any(|c| c.name == n && c.delivered == k);
        (done("pager", 2) && done("ticket", 1)).then_some(s)
    })
    .await;
    let chans: BTreeMap<_, _> = status.channels.iter().map(|c| (c.name.as_str(), c)).collect();
    assert_eq!(chans["pager"].kind.as_deref(), Some("pagerduty"));
    assert_eq!(chans["ticket"].delivered, 1);
    let out = d.cli(&["notify", "status"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && table.contains("pager") && table.contains("pagerduty"), "{table}");
    let metrics = http().get(format!("{}/metrics", d.api)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"understudy_notifications_total{channel="pager",result="delivered"} 2"#), "{metrics}");

    // notify test: the receiver's answer is printed.
    let out = d.cli(&["notify", "test", "pager"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said} {}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("HTTP 202 Accepted") && said.contains("Event processed"), "{said}");
    let out = d.cli(&["notify", "test", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no notification channel named \"nope\""));

    // The incident report.
    let out = d.cli(&["incidents", "show", "1", "--format", "markdown"]);
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for want in ["# Incident #1: www — primary failed, traffic moved to backup", "## Measured times", "| Detection |", "## Timeline", "## Check results around the fault", "| **FAIL** |", "## Root cause"] {
        assert!(md.contains(want), "missing {want:?} in\n{md}");
    }
    let text = String::from_utf8_lossy(&d.cli(&["incidents", "show", "1"]).stdout).to_string();
    assert!(text.contains("checks of primary that marked it down"), "{text}");
}

/// Kill -9 while the receiver is down, restart, bring the receiver up: every notice arrives,
/// and nothing arrives twice under different keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_the_receiver_is_down_loses_no_alert() {
    let (dir, port, mut primary, _backup) = two_nginx().await;
    let mut rx = Receiver::new();
    let extra = format!(
        "\n[[notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\ngroup_window = \"100ms\"\nbackoff_max = \"500ms\"\ntimeout = \"2s\"\n",
        rx.url("/hook")
    );
    let api = api_addr();
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "1s", &extra);
    let mut d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("www", "primary", Duration::from_secs(5)).await;
    primary.kill();
    d.wait_active("www", "backup", Duration::from_secs(5)).await;

    // Failures are visible while the receiver is down.
    let status = wait_for(Duration::from_secs(10), "failed attempts to show in notify status", || async {
        let s: wire::NotifyStatus = serde_json::from_value(d.get("/api/v1/notify").await).unwrap();
        let c = s.channels.iter().find(|c| c.name == "hook").cloned()?;
        (c.pending >= 1 && c.failed_attempts >= 2 && c.last_error.is_some()).then_some(c)
    })
    .await;
    let err = status.last_error.as_deref().unwrap();
    assert!(err.contains("error sending request") && err.contains("refused"), "{status:?}");
    assert!(!err.contains(&rx.addr.to_string()), "webhook URLs are secrets and stay out of errors: {err}");
    assert_eq!(status.delivered, 0);

    d.kill9();
    primary.start().await; // recovers while the daemon is dead
    d.restart().await;
    d.wait_active("www", "primary", Duration::from_secs(10)).await;
    rx.start().await;

    let closed = rx.wait("/hook", "the closed incident after the restart", |v| v["event"] == "incident_closed").await;
    assert_eq!(closed.json()["incident"]["id"], 1);
    wait_for(Duration::from_secs(10), "the outbox to drain", || async {
        let s: wire::NotifyStatus = serde_json::from_value(d.get("/api/v1/notify").await).unwrap();
        (s.channels[0].pending == 0).then_some(())
    })
    .await;

    // What should have been sent: the planner over the daemon's own event log.
    let events: Vec<wire::EventRecord> = serde_json::from_value(d.get("/api/v1/events?since=0&limit=10000").await["events"].clone()).unwrap();
    let mut planner = Planner::default();
    let planned: Vec<_> = events.iter().flat_map(|e| planner.observe(&Record { seq: e.seq, time_us: e.time_us, event: e.event.clone() })).collect();
    let planned_keys: BTreeSet<String> = planned.iter().map(|n| n.key.clone()).collect();
    let got: Vec<Value> = rx.got("/hook").iter().map(Got::json).collect();
    let got_keys: BTreeSet<String> = got.iter().map(|v| v["key"].as_str().unwrap().to_string()).collect();

    // Every opening and closing arrives (updates may be folded into a later message).
    for n in planned.iter().filter(|n| n.phase != Phase::Update) {
        assert!(got_keys.contains(&n.key), "{} ({}) never arrived; got {got_keys:?}", n.key, n.summary);
    }
    assert!(planned.iter().any(|n| n.event == understudy::notify::notice::NoticeEvent::DaemonRestarted), "the restart during the incident is a notice");
    // Nothing arrives that was not planned, and one notice never has two keys.
    assert!(got_keys.is_subset(&planned_keys), "unexpected keys: {:?}", got_keys.difference(&planned_keys).collect::<Vec<_>>());
    let mut by_identity: BTreeMap<(String, String, u64), BTreeSet<String>> = BTreeMap::new();
    let mut bodies: BTreeMap<String, Value> = BTreeMap::new();
    for v in &got {
        let id = (v["condition"].as_str().unwrap().to_string(), v["event"].as_str().unwrap().to_string(), v["cause"]["seq"].as_u64().unwrap());
        let key = v["key"].as_str().unwrap().to_string();
        by_identity.entry(id).or_default().insert(key.clone());
        if let Some(prev) = bodies.insert(key.clone(), v.clone()) {
            assert_eq!(prev, *v, "a retried notice ({key}) carries the same facts");
        }
    }
    for (id, keys) in &by_identity {
        assert_eq!(keys.len(), 1, "{id:?} arrived under several keys: {keys:?}");
    }
    // Duplicates (the same key more than once) are possible only for a delivery in flight when
    // the daemon dies, so at most one per key per crash, and, since a channel sends one notice
    // at a time, at most one per channel per crash in all. Here: one crash, one channel.
    let crashes = 1;
    let mut copies: BTreeMap<&str, usize> = BTreeMap::new();
    for v in &got {
        *copies.entry(v["key"].as_str().unwrap()).or_default() += 1;
    }
    let duplicates: usize = copies.values().map(|n| n - 1).sum();
    eprintln!("kill -9 with the receiver down: {} messages, {} keys, {duplicates} duplicates", got.len(), copies.len());
    for (key, n) in &copies {
        assert!(*n <= 1 + crashes, "{key} arrived {n} times after {crashes} crash: at most one duplicate per key per crash");
    }
    assert!(duplicates <= crashes, "{duplicates} duplicates after {crashes} crash of a daemon with one channel: {copies:?}");
}

/// Debian's prometheus-alertmanager, on a free loopback port, clustering off.
struct Alertmanager {
    url: String,
    child: Child,
}

impl Alertmanager {
    async fn start(dir: &Path) -> Alertmanager {
        let bin = "/usr/bin/prometheus-alertmanager";
        assert!(Path::new(bin).exists(), "Alertmanager is not installed: run scripts/install-test-deps.sh (apt-get install prometheus-alertmanager)");
        let dir = dir.join("alertmanager");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("am.yml"), "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n").unwrap();
        let port = free_port("127.0.0.1");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", dir.join("am.yml").display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("alertmanager.log")).unwrap())
            .spawn()
            .expect("start alertmanager");
        let am = Alertmanager { url: format!("http://127.0.0.1:{port}"), child };
        let ready = format!("{}/-/ready", am.url);
        wait_for(Duration::from_secs(15), &format!("Alertmanager at {ready}"), || {
            let u = ready.clone();
            async move { http().get(&u).send().await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await;
        am
    }

    async fn alerts(&self) -> Vec<Value> {
        let v: Value = http().get(format!("{}/api/v2/alerts", self.url)).send().await.unwrap().json().await.unwrap();
        v.as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the PID we started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_alertmanager_sees_the_failover_fire_and_resolve() {
    let (dir, port, mut primary, _backup) = two_nginx().await;
    let am = Alertmanager::start(dir.path()).await;
    // Exactly as the issue writes it, and a second channel that re-sends every second.
    let extra = format!(
        "\n[[notify]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"{url}\"\n\n[[notify]]\nname = \"am-fast\"\nkind = \"alertmanager\"\nurl = \"{url}\"\nresend = \"1s\"\nlabels = {{ team = \"web\" }}\n",
        url = am.url
    );
    let api = api_addr();
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "3s", &extra);
    let d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("www", "primary", Duration::from_secs(5)).await;
    primary.kill();
    d.wait_active("www", "backup", Duration::from_secs(5)).await;

    let alert = wait_for(Duration::from_secs(15), "the firing alert in Alertmanager", || async {
        am.alerts().await.into_iter().find(|a| a["labels"]["alertname"] == "UnderstudyFailover")
    })
    .await;
    let l = &alert["labels"];
    assert_eq!((l["service"].as_str(), l["target"].as_str(), l["severity"].as_str()), (Some("www"), Some("primary"), Some("warning")), "{alert}");
    assert_eq!(alert["status"]["state"], "active", "{alert}");
    let ann = &alert["annotations"];
    assert!(ann["summary"].as_str().unwrap().contains("primary failed, traffic moved to backup"), "{alert}");
    for k in ["detection", "switch", "rto", "opened"] {
        assert!(ann[k].is_string(), "annotation {k} missing: {alert}");
    }
    wait_for(Duration::from_secs(10), "the static label of the second channel", || async {
        am.alerts().await.into_iter().find(|a| a["labels"]["team"] == "web")
    })
    .await;
    // While the incident is open the alert is re-sent (Alertmanager expires what is not).
    let metrics_url = format!("{}/metrics", d.api);
    wait_for(Duration::from_secs(10), "a re-send of the open alert", || async {
        let m = http().get(&metrics_url).send().await.ok()?.text().await.ok()?;
        m.lines().any(|l| l.starts_with(r#"understudy_notifications_total{channel="am-fast",result="resent"}"#)).then_some(())
    })
    .await;

    primary.start().await;
    d.wait_active("www", "primary", Duration::from_secs(15)).await;
    // Resolved alerts (endsAt in the past) leave Alertmanager's list of alerts.
    wait_for(Duration::from_secs(15), "the alert to be resolved in Alertmanager", || async {
        am.alerts().await.iter().all(|a| a["labels"]["alertname"] != "UnderstudyFailover").then_some(())
    })
    .await;
    let s = wait_for(Duration::from_secs(10), "the daemon to count the deliveries", || async {
        let s: wire::NotifyStatus = serde_json::from_value(d.get("/api/v1/notify").await).unwrap();
        s.channels.iter().all(|c| c.delivered >= 2 && c.pending == 0).then_some(s)
    })
    .await;
    assert!(s.channels.iter().all(|c| c.rejected == 0), "{s:?}");
}

/// Python's aiosmtpd, printing every message it receives to a file. Started with `python3 -u`:
/// its debugging handler prints to stdout and never flushes, so a buffered stdout (the default
/// when it is a file, unless PYTHONUNBUFFERED happens to be set) would hold the messages back.
struct SmtpSink {
    port: u16,
    out: PathBuf,
    child: Child,
}

impl SmtpSink {
    async fn start(dir: &Path, args: &[&str]) -> SmtpSink {
        let port = free_port("127.0.0.1");
        let out = dir.join(format!("smtp-{port}.out"));
        let child = Command::new("python3")
            .args(["-u", "-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .env_remove("PYTHONUNBUFFERED")
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(dir.join(format!("smtp-{port}.err"))).unwrap())
            .spawn()
            .expect("start python3 -m aiosmtpd (pip install aiosmtpd; scripts/install-test-deps.sh does)");
        let sink = SmtpSink { port, out, child };
        let errs = dir.join(format!("smtp-{port}.err"));
        wait_for(Duration::from_secs(15), "aiosmtpd to listen", || {
            let e = errs.clone();
            async move {
                let log = std::fs::read_to_string(&e).unwrap_or_default();
                assert!(!log.contains("No module named aiosmtpd"), "aiosmtpd is not installed: run scripts/install-test-deps.sh (pip install aiosmtpd)");
                tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
            }
        })
        .await;
        sink
    }

    fn received(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the PID we started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_smtp_server_receives_the_incident_email() {
    let (dir, port, mut primary, _backup) = two_nginx().await;
    let smtp = SmtpSink::start(dir.path(), &[]).await;
    let extra = format!(
        "\n[[notify]]\nname = \"mail\"\nkind = \"email\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"understudy@example.com\"\nto = [\"oncall@example.com\"]\nevents = [\"incident_opened\", \"incident_closed\"]\n",
        smtp.port
    );
    let api = api_addr();
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "1s", &extra);
    let d = Daemon::start(dir.path(), &cfg, api).await;
    failover_and_back(&d, &mut primary).await;

    let mail = wait_for(Duration::from_secs(15), "both e-mails at the SMTP server", || async {
        let m = smtp.received();
        // Count whole messages: the handler prints a message in several writes, and the file
        // can be read between them.
        (m.matches("------------ END MESSAGE ------------").count() >= 2).then_some(m)
    })
    .await;
    let mail = mail.replace("\n ", " "); // unfold long headers (RFC 5322)
    assert!(mail.contains("Subject: [understudy] [WARNING] www: primary failed, traffic moved to backup (incident #1)"), "{mail}");
    assert!(mail.contains("Subject: [understudy] [RESOLVED] www: traffic is back on primary, incident #1 closed"), "{mail}");
    assert!(mail.contains("From: understudy@example.com") && mail.contains("To: oncall@example.com"), "{mail}");
    assert!(mail.contains("Message-ID: <understudy-www-incident-1.incident_opened."), "{mail}");
    assert!(mail.contains("Timeline:"), "{mail}");

    let out = d.cli(&["notify", "test", "mail"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains("the receiver answered: 250"), "{said}{}", String::from_utf8_lossy(&out.stderr));
}

/// An aiosmtpd server that requires STARTTLS and AUTH (the CLI cannot configure either).
const SMTP_TLS_AUTH_SERVER: &str = r#"
import sys, ssl, threading
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

port, cert, key, user, password, out = sys.argv[1:7]

class Sink:
    async def handle_DATA(self, server, session, envelope):
        with open(out, "a") as f:
            f.write("TLS %s AUTH %s\n" % (bool(session.ssl), session.auth_data.login.decode()))
            f.write(envelope.content.decode("utf-8", "replace") + "\n-- END --\n")
        return "250 2.0.0 accepted by the test sink"

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login.decode() == user and auth_data.password.decode() == password
    # handled=False: let aiosmtpd answer 535 itself on failure.
    return AuthResult(success=ok, handled=False, auth_data=auth_data)

ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
c = Controller(Sink(), hostname="127.0.0.1", port=int(port), tls_context=ctx, require_starttls=True,
               authenticator=authenticator, auth_required=True)
c.start()
print("ready", flush=True)
threading.Event().wait()
"#;

/// A CA and a server certificate for 127.0.0.1 signed by it, made with the openssl CLI.
fn ca_and_server_cert(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).stdin(Stdio::null()).output().expect("run openssl (apt-get install openssl)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=understudy test CA", "-keyout", "ca.key", "-out", "ca.pem"]);
    run(&["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "smtp.key", "-out", "smtp.csr"]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n").unwrap();
    run(&["x509", "-req", "-in", "smtp.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1", "-extfile", "ext.cnf", "-out", "smtp.pem"]);
    (dir.join("ca.pem"), dir.join("smtp.pem"), dir.join("smtp.key"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_uses_starttls_and_auth_and_refuses_a_wrong_password() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = ca_and_server_cert(dir.path());
    let script = dir.path().join("smtp_tls_auth.py");
    std::fs::write(&script, SMTP_TLS_AUTH_SERVER).unwrap();
    let port = free_port("127.0.0.1");
    let out = dir.path().join("mail.out");
    let child = Command::new("python3")
        .arg(&script)
        .args([&port.to_string(), cert.to_str().unwrap(), key.to_str().unwrap(), "understudy", "s3cret", out.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("smtp.err")).unwrap())
        .spawn()
        .expect("start python3");
    let guard = SmtpSink { port, out: out.clone(), child }; // killed by PID on drop
    wait_for(Duration::from_secs(15), "the STARTTLS SMTP server", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
    })
    .await;

    std::fs::write(dir.path().join("smtp-password"), "s3cret\n").unwrap();
    let channel = |name: &str, password_file: &str| {
        format!(
            "\n[[notify]]\nname = \"{name}\"\nkind = \"email\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"starttls\"\nca_file = \"{}\"\n\
             from = \"understudy@example.com\"\nto = [\"oncall@example.com\"]\nuser = \"understudy\"\npassword_file = \"{password_file}\"\n",
            ca.display()
        )
    };
    std::fs::write(dir.path().join("wrong-password"), "nope\n").unwrap();
    let extra = channel("mail", "smtp-password") + &channel("badmail", "wrong-password");
    let api = api_addr();
    // No nginx needed: `notify test` goes through the running daemon's channel.
    let cfg = two_target_config(&dir.path().join("data"), api, free_port("127.0.0.2"), 200, "1s", &extra);
    let d = Daemon::start(dir.path(), &cfg, api).await;

    let res = d.cli(&["notify", "test", "mail"]);
    let said = String::from_utf8_lossy(&res.stdout);
    assert!(res.status.success(), "{said}{}", String::from_utf8_lossy(&res.stderr));
    assert!(said.contains("the receiver answered: 250 2.0.0 accepted by the test sink"), "{said}");
    let got = guard.received();
    assert!(got.contains("TLS True AUTH understudy"), "{got}");
    assert!(got.contains("Subject: [understudy] [INFO] understudy test notification"), "{got}");

    let res = d.cli(&["notify", "test", "badmail"]);
    assert_eq!(res.status.code(), Some(1));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("badmail: not delivered") && err.contains("535"), "{err}");
}

/// A target flapping during an incident: dozens of health flips, a handful of messages (one
/// per group window), and the newest state always arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_target_sends_one_update_per_group_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::new();
    rx.start().await;
    let flag = |t: &str| dir.path().join(format!("up-{t}"));
    std::fs::write(flag("a"), b"").unwrap();
    std::fs::write(flag("b"), b"").unwrap();
    let api = api_addr();
    let cfg = format!(
        r#"[daemon]
data_dir = "{data}"
api = "{api}"

[[service]]
name = "flappy"
failback = "manual"
[service.check]
kind = "exec"
command = "test -e {dir}/up-$UNDERSTUDY_TARGET_NAME"
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

[[notify]]
name = "hook"
kind = "webhook"
url = "{url}"
group_window = "1s"
"#,
        data = dir.path().join("data").display(),
        dir = dir.path().display(),
        url = rx.url("/hook"),
    );
    let d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("flappy", "a", Duration::from_secs(5)).await;
    std::fs::remove_file(flag("a")).unwrap();
    d.wait_active("flappy", "b", Duration::from_secs(5)).await;
    rx.wait("/hook", "the incident to open", |v| v["event"] == "incident_opened").await;

    // Flap the failed target for about 3 s; manual failback keeps the incident open.
    let started = std::time::Instant::now();
    for i in 0..24 {
        if i % 2 == 0 {
            std::fs::write(flag("a"), b"").unwrap();
        } else {
            std::fs::remove_file(flag("a")).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(125)).await;
    }
    let flapped_for = started.elapsed();
    let events: Vec<wire::EventRecord> = serde_json::from_value(d.get("/api/v1/events?since=0&limit=10000").await["events"].clone()).unwrap();
    let flips = events.iter().filter(|e| matches!(e.event.kind(), "target_up" | "target_down") && e.event.service() == Some("flappy")).count();
    assert!(flips >= 12, "the target flapped ({flips} flips)");
    let mut planner = Planner::default();
    let updates: Vec<_> = events
        .iter()
        .flat_map(|e| planner.observe(&Record { seq: e.seq, time_us: e.time_us, event: e.event.clone() }))
        .filter(|n| n.phase == Phase::Update)
        .collect();
    let newest = updates.last().expect("updates were planned").key.clone();
    // The newest update goes out once its window closes.
    rx.wait("/hook", "the newest update", |v| v["key"] == newest.as_str()).await;
    let sent = rx.got("/hook").iter().filter(|g| g.json()["event"] == "incident_updated").count();
    eprintln!("flapping: {flips} health flips, {} planned updates, {sent} update messages in {flapped_for:?}", updates.len());
    // The bound: one update message per 1 s group window while flapping, plus the window still
    // open when the flapping stopped and one whose timer straddles the start. E.g. 24 flips in
    // 3 s: at most 5 update messages, and the opening is still the only other message.
    let windows = flapped_for.as_secs_f64().ceil() as usize + 2;
    assert!(sent <= windows, "{sent} update messages for {} planned updates in {flapped_for:?} (group window 1s)", updates.len());
    assert!(updates.len() >= 3 * sent, "grouping folded {} updates into {sent} messages", updates.len());
    let all = rx.got("/hook").len();
    assert!(all <= windows + 1, "{all} messages in all for one incident and {flips} flips in {flapped_for:?}: at most {} (the opening and one per window)", windows + 1);
    // Folded updates are counted as superseded once the message that carried them is answered.
    wait_for(Duration::from_secs(10), "the folded updates to be counted", || async {
        let s: wire::NotifyStatus = serde_json::from_value(d.get("/api/v1/notify").await).unwrap();
        (s.channels[0].superseded as usize >= updates.len() - sent).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_a_channel_and_notify_test_goes_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::new();
    rx.start().await;
    let api = api_addr();
    let base = format!(
        "[daemon]\ndata_dir = \"{}\"\napi = \"{api}\"\n\n[[service]]\nname = \"s\"\n[service.check]\nkind = \"exec\"\ncommand = \"true\"\n\
         interval = \"100ms\"\ntimeout = \"50ms\"\n[[service.target]]\nname = \"a\"\naddress = \"127.0.0.2\"\n",
        dir.path().join("data").display()
    );
    let d = Daemon::start(dir.path(), &base, api).await;
    let out = d.cli(&["notify", "status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no notification channels configured"));

    let with_hook = format!("{base}\n[[notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret_env = \"UNDERSTUDY_TEST_UNSET_SECRET\"\n", rx.url("/hook"));
    // A channel whose secret cannot be read is refused like any other config error.
    std::fs::write(&d.config, &with_hook).unwrap();
    d.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(5), "the refused reload to be recorded", || async {
        d.events().await.iter().any(|e| e["event"]["kind"] == "config_rejected").then_some(())
    })
    .await;
    std::fs::write(&d.config, with_hook.replace("secret_env = \"UNDERSTUDY_TEST_UNSET_SECRET\"", "secret = \"k\"")).unwrap();
    d.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(5), "the new channel", || async {
        let s: wire::NotifyStatus = serde_json::from_value(d.get("/api/v1/notify").await).unwrap();
        s.channels.iter().any(|c| c.name == "hook" && c.configured).then_some(())
    })
    .await;
    let out = d.cli(&["notify", "test", "hook"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let test = rx.wait("/hook", "the test message", |v| v["event"] == "test").await;
    assert_eq!(test.headers["x-understudy-signature"], expected_signature("k", &test.body));
    // Channels get the events that happen while they exist: the refusal happened before this
    // one did; the accepted reload that resolves it came after.
    let about_config: Vec<Value> = rx.got("/hook").iter().map(Got::json).filter(|v| v["event"] == "config_rejected").collect();
    assert!(about_config.iter().all(|v| v["status"] == "resolved"), "{about_config:?}");
}
