//! The operator's front door (issue 16): the dashboard in a real headless Chromium (Debian's
//! `chromium`, driven through the DevTools protocol over a websocket), the Server-Sent Events
//! stream with `Last-Event-ID` resume, and the page's files as served.
//!
//! The browser is started with every outside connection made impossible (a proxy on a closed
//! loopback port for anything but loopback, and a resolver that answers nothing), in its own
//! process group, which the guard kills when the test ends. Screenshots go to
//! `target/tmp/dashboard/` (`CARGO_TARGET_TMPDIR`): test artifacts to look at.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

// ---- a headless Chromium and a minimal DevTools protocol client ---------------------------

struct Chromium {
    child: Option<Child>,
    /// The closed port the browser's proxy setting points at, held while it runs.
    _closed: tokio::net::TcpSocket,
    /// Where the DevTools endpoint listens (host:port).
    devtools: String,
}

impl Chromium {
    async fn start(dir: &Path) -> Chromium {
        let bin = ["/usr/bin/chromium", "/usr/lib/chromium/chromium"].into_iter().find(|p| Path::new(p).exists());
        let bin = bin.expect("chromium is not installed: run scripts/install-test-deps.sh (apt-get install chromium)");
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile).unwrap();
        let stderr_path = dir.join("chromium.log");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let (hold, closed) = closed_port("127.0.0.1");
        let mut cmd = Command::new(bin);
        cmd.args([
            "--headless",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        // Loopback goes direct (Chromium bypasses proxies for it); anything else would go to a
        // closed port, and no name resolves: the test stays on this machine.
        .arg(format!("--proxy-server=http://{closed}"))
        .arg("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1");
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } == 0 {
            cmd.arg("--no-sandbox"); // Chromium refuses to run as root with its sandbox
        }
        use std::os::unix::process::CommandExt;
        let child = cmd.arg("about:blank").process_group(0).stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr).spawn().expect("start chromium");
        let mut browser = Chromium { child: Some(child), _closed: hold, devtools: String::new() };
        // Chromium prints "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID".
        let devtools = wait_for(Duration::from_secs(30), &format!("chromium's DevTools endpoint (see {})", stderr_path.display()), || {
            let p = stderr_path.clone();
            async move {
                let text = std::fs::read_to_string(p).ok()?;
                let url = text.lines().find_map(|l| l.strip_prefix("DevTools listening on "))?;
                Some(url.trim_start_matches("ws://").split('/').next()?.to_string())
            }
        })
        .await;
        browser.devtools = devtools;
        browser
    }

    /// A new tab, and a protocol connection to it.
    async fn new_page(&self) -> Cdp {
        let url = format!("http://{}/json/new?about:blank", self.devtools);
        let page: Value = http().put(&url).send().await.expect("DevTools /json/new").json().await.expect("DevTools /json/new answer");
        let ws = page["webSocketDebuggerUrl"].as_str().unwrap_or_else(|| panic!("no websocket URL in {page}")).to_string();
        let (socket, _) = tokio_tungstenite::connect_async(ws.as_str()).await.expect("connect to the page's DevTools websocket");
        let mut cdp = Cdp { socket, next_id: 0 };
        cdp.call("Page.enable", json!({})).await;
        cdp.call("Runtime.enable", json!({})).await;
        cdp
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The browser and its renderer, GPU and zygote processes: the group we started.
            // SAFETY: kill(2) on the process group of a child we spawned with process_group(0).
            unsafe {
                libc::kill(-(c.id() as i32), libc::SIGKILL);
            }
            let _ = c.wait();
        }
    }
}

struct Cdp {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    next_id: u64,
}

impl Cdp {
    /// Send one command and return its result (protocol events in between are skipped).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.socket.send(Message::text(json!({ "id": id, "method": method, "params": params }).to_string())).await.expect("send to DevTools");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = tokio::time::timeout(left, self.socket.next()).await.unwrap_or_else(|_| panic!("no answer to {method} within 30 s"));
            let msg = msg.expect("DevTools connection closed").expect("DevTools websocket error");
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(&text).expect("DevTools sent JSON");
            if v["id"].as_u64() == Some(id) {
                assert!(v.get("error").is_none(), "{method} failed: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluate a JavaScript expression in the page and return its value.
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self.call("Runtime.evaluate", json!({ "expression": expr, "returnByValue": true, "awaitPromise": true })).await;
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {}", r["exceptionDetails"]);
        r["result"]["value"].clone()
    }

    /// The text of the first element matching `selector` (null when there is none).
    async fn text(&mut self, selector: &str) -> Option<String> {
        let sel = serde_json::to_string(selector).unwrap();
        self.eval(&format!("(() => {{ const e = document.querySelector({sel}); return e ? e.textContent.trim() : null; }})()")).await.as_str().map(str::to_string)
    }

    async fn click(&mut self, selector: &str) {
        let sel = serde_json::to_string(selector).unwrap();
        let found = self.eval(&format!("(() => {{ const e = document.querySelector({sel}); if (!e) return false; e.click(); return true; }})()")).await;
        assert_eq!(found, Value::Bool(true), "nothing to click at {selector}");
    }

    /// Wait until `selector`'s text satisfies `ok`; the last text seen is in the panic message.
    async fn wait_text(&mut self, selector: &str, within: Duration, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let t = self.text(selector).await;
            if let Some(t) = t.as_deref().filter(|t| ok(t)) {
                return t.to_string();
            }
            assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}: {selector} shows {t:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn screenshot(&mut self, to: &Path) {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png", "captureBeyondViewport": true })).await;
        let png = base64_decode(r["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(to, png).unwrap();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &c)| acc | (val(c) as u32) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const ACTIVE: &str = "[data-service=\"www\"] [data-field=\"active\"]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_failover_live_and_refuses_actions_without_the_token() {
    let (dir, port, mut primary, _backup) = two_nginx().await;
    let api = api_addr();
    let interval_ms = 200;
    let cfg = two_target_config(&dir.path().join("data"), api, port, interval_ms, "1h", "");
    let d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("www", "primary", Duration::from_secs(15)).await;

    let browser = Chromium::start(dir.path()).await;
    let mut page = browser.new_page().await;
    page.call("Page.navigate", json!({ "url": format!("{}/", d.api) })).await;
    page.wait_text(ACTIVE, Duration::from_secs(10), "the active target on the page", |t| t == "primary").await;
    page.wait_text("#live", Duration::from_secs(10), "the event stream to connect", |t| t == "live").await;
    assert_eq!(page.text("[data-service=\"www\"] tr[data-target=\"backup\"] [data-field=\"health\"]").await.as_deref().map(|t| t.starts_with("up")), Some(true));
    let shots = artifacts();
    page.screenshot(&shots.join("1-primary-active.png")).await;

    // A mark in the page's JavaScript state: a reload would lose it.
    page.eval("window.__sameDocument = 'still here'").await;
    let loaded_at = page.eval("performance.timeOrigin").await;

    primary.kill();
    let killed = Instant::now();
    // fall x interval + timeout, plus the stream and a page refresh: a few seconds at most.
    let within = Duration::from_millis(3 * interval_ms + interval_ms * 3 / 5) + Duration::from_secs(4);
    page.wait_text(ACTIVE, within, "the page to show the failover", |t| t == "backup").await;
    let incident = page
        .wait_text("#incidents [data-open=\"true\"][data-service=\"www\"] [data-field=\"what\"]", Duration::from_secs(3), "the new incident on the page", |t| {
            t.contains("primary failed") && t.contains("backup")
        })
        .await;
    let shown_after = killed.elapsed();
    assert_eq!(page.eval("window.__sameDocument").await, json!("still here"), "the page was not reloaded");
    assert_eq!(page.eval("performance.timeOrigin").await, loaded_at, "same document");
    // The stream put the switch in the page's event list.
    let kinds = page.eval("[...document.querySelectorAll('#events li')].map(li => li.dataset.kind)").await;
    assert!(kinds.as_array().unwrap().iter().any(|k| k == "switched"), "events shown: {kinds}");
    assert_eq!(page.text("[data-service=\"www\"] tr[data-target=\"primary\"] [data-field=\"health\"]").await.as_deref().map(|t| t.starts_with("down")), Some(true));
    page.screenshot(&shots.join("2-after-failover.png")).await;
    eprintln!("dashboard showed the failover and incident {incident:?} {shown_after:?} after the kill");

    // Drain from the page without the token: refused, and nothing changes.
    let drain = "[data-service=\"www\"] tr[data-target=\"primary\"] [data-action=\"drain\"]";
    page.click(drain).await;
    page.click("#confirm-yes").await;
    let answer = page.wait_text("#answer", Duration::from_secs(5), "the API's answer", |t| t.contains("HTTP")).await;
    assert!(answer.contains("refused, HTTP 401"), "{answer}");
    assert_eq!(d.service("www").await["targets"][0]["enabled"], true, "a refused drain drains nothing");
    page.screenshot(&shots.join("3-drain-refused.png")).await;

    // Paste the token; the same click works.
    let token = serde_json::to_string(&d.token()).unwrap();
    page.eval(&format!("document.querySelector('#token').value = {token}; document.querySelector('#token-save').click()")).await;
    assert_eq!(page.text("#token-state").await.as_deref(), Some("actions enabled"));
    page.click(drain).await;
    page.click("#confirm-yes").await;
    let answer = page.wait_text("#answer", Duration::from_secs(5), "the API's answer", |t| t.contains("done")).await;
    assert!(answer.contains("HTTP 200"), "{answer}");
    page.wait_text("[data-service=\"www\"] tr[data-target=\"primary\"] [data-field=\"rotation\"]", Duration::from_secs(5), "primary drained on the page", |t| t == "drained").await;
    assert_eq!(d.service("www").await["targets"][0]["enabled"], false);
    // The token never went into the page's HTML or the URL: only this tab's sessionStorage.
    assert_eq!(page.eval("document.documentElement.outerHTML.includes(sessionStorage.getItem('understudy-token'))").await, json!(false));

    // On a phone-sized screen the page fits its width (tables scroll inside their cards).
    page.call("Emulation.setDeviceMetricsOverride", json!({ "width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true })).await;
    let width = page.eval("document.documentElement.scrollWidth").await;
    assert!(width.as_u64().unwrap() <= 390, "page is {width} px wide on a 390 px screen");
    page.screenshot(&shots.join("4-phone.png")).await;
}

// ---- the event stream without a browser ---------------------------------------------------

/// One parsed SSE message.
#[derive(Debug, Default, Clone)]
struct SseMessage {
    id: Option<u64>,
    event: Option<String>,
    data: String,
}

/// An open `GET /api/v1/events/stream`, parsed as it arrives.
struct SseClient {
    resp: reqwest::Response,
    buf: String,
}

impl SseClient {
    async fn open(api: &str, last_event_id: Option<u64>, query: &str) -> SseClient {
        let mut req = reqwest::Client::builder().no_proxy().build().unwrap().get(format!("{api}/api/v1/events/stream{query}"));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let resp = req.send().await.expect("open the event stream");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        SseClient { resp, buf: String::new() }
    }

    /// The next message that carries data (keep-alive comments and `retry:` skipped).
    async fn next(&mut self, within: Duration) -> SseMessage {
        let deadline = Instant::now() + within;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut m = SseMessage::default();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        m.id = Some(v.trim().parse().unwrap());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        m.event = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        m.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if !m.data.is_empty() {
                    return m;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.resp.chunk()).await.unwrap_or_else(|_| panic!("no stream message within {within:?}"));
            let chunk = chunk.expect("read the stream").expect("the stream ended");
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

/// Toggle the backup in and out of rotation `n` times: two override events each, with the
/// bearer token, as an operator would.
async fn make_events(d: &Daemon, n: usize) {
    for _ in 0..n {
        for verb in ["drain", "enable"] {
            let r = d.post(&format!("/api/v1/services/www/targets/backup/{verb}"), json!({})).await;
            assert!(r.status().is_success(), "{verb}: {}", r.status());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_is_in_order_and_resumes_with_last_event_id_without_gaps() {
    let (dir, port, _primary, _backup) = two_nginx().await;
    let api = api_addr();
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "1h", "");
    let d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("www", "primary", Duration::from_secs(15)).await;

    // A fresh stream starts with `hello` naming the last event on disk, then only new events.
    let mut s = SseClient::open(&d.api, None, "").await;
    let hello = s.next(Duration::from_secs(5)).await;
    assert_eq!(hello.event.as_deref(), Some("hello"));
    let start = hello.id.expect("hello has an id");
    let on_disk: Value = d.get("/api/v1/event-log").await;
    assert!(start <= on_disk["durable_seq"].as_u64().unwrap());

    make_events(&d, 5).await;
    let mut seen = Vec::new();
    let mut last = start;
    while seen.iter().filter(|m: &&SseMessage| m.data.contains("\"kind\":\"override\"")).count() < 10 {
        let m = s.next(Duration::from_secs(5)).await;
        assert_eq!(m.event, None, "records are plain messages: {m:?}");
        let id = m.id.expect("every record has an id");
        assert_eq!(id, last + 1, "in order, without gaps: {m:?}");
        let rec: Value = serde_json::from_str(&m.data).unwrap();
        assert_eq!(rec["seq"], id);
        last = id;
        seen.push(m);
    }
    drop(s);

    // While nobody listens, more happens; a reconnect with Last-Event-ID gets exactly the rest.
    let resume_from = last - 3; // as if the last three had not reached the client
    make_events(&d, 3).await;
    let all: Value = d.get(&format!("/api/v1/events?since={resume_from}")).await;
    let expected: Vec<u64> = all["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(expected.len() >= 3 + 6, "{expected:?}");
    // Also `?since=` in the URL, which the header overrides (a browser reconnects to the same URL).
    let mut s = SseClient::open(&d.api, Some(resume_from), "?since=1").await;
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let m = s.next(Duration::from_secs(5)).await;
        let rec: Value = serde_json::from_str(&m.data).unwrap();
        assert_eq!(Some(rec["seq"].as_u64().unwrap()), m.id);
        got.push(m.id.unwrap());
    }
    assert_eq!(got, expected, "resumed from {resume_from} without gaps or repeats");
    // And it goes on live from there.
    make_events(&d, 1).await;
    let m = s.next(Duration::from_secs(5)).await;
    assert_eq!(m.id, Some(expected.last().unwrap() + 1));

    // Per service, and bad resume points are refused with a reason.
    let mut only = SseClient::open(&d.api, None, "?since=0&service=nope").await;
    make_events(&d, 1).await;
    assert!(tokio::time::timeout(Duration::from_millis(500), only.next(Duration::from_secs(5))).await.is_err(), "no events of another service");
    let bad = http().get(format!("{}/api/v1/events/stream", d.api)).header("Last-Event-ID", "yesterday").send().await.unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("Last-Event-ID"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_small_self_contained_and_only_to_this_apis_names() {
    let (dir, port, _primary, _backup) = two_nginx().await;
    let api = api_addr();
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "1h", "");
    let d = Daemon::start(dir.path(), &cfg, api).await;
    let c = http();
    let mut total = 0;
    for (path, kind) in [("/", "text/html"), ("/dashboard/app.js", "text/javascript"), ("/dashboard/style.css", "text/css")] {
        let r = c.get(format!("{}{path}", d.api)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with(kind), "{path}");
        let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
        let etag = r.headers()["etag"].to_str().unwrap().to_string();
        let body = r.text().await.unwrap();
        assert!(!body.contains(&d.token()), "{path} embeds the API token");
        total += body.len();
        let again = c.get(format!("{}{path}", d.api)).header("If-None-Match", &etag).send().await.unwrap();
        assert_eq!(again.status(), 304, "{path} revalidates");
    }
    eprintln!("dashboard page weight: {total} bytes ({:.1} KB)", total as f64 / 1024.0);
    assert!(total < 200 * 1024, "page weight {total} bytes");
    assert_eq!(c.get(format!("{}/dashboard/nope.js", d.api)).send().await.unwrap().status(), 404);
    // DNS rebinding: the page is not served to another name.
    let r = c.get(format!("{}/", d.api)).header("Host", "evil.example").send().await.unwrap();
    assert_eq!(r.status(), 403);
}
