//! The application health agent: `understudy agent -c agent.toml` runs on each application
//! server and answers `GET /health` with the state of what the application needs (its
//! database, its cache, free disk, a command, the application's own HTTP endpoint), so the
//! monitor's HTTP check (or any load balancer) tests real state instead of a bare
//! `check_app.sh`.
//!
//! Layout: `config.rs` reads and validates the agent's own file (errors with file, line and
//! key), `parts.rs` runs one part with its timeout, and this file composes them: every part runs
//! concurrently on each evaluation; the answer is 200 when all pass and 503 otherwise, with a JSON
//! body naming every part, its result, latency and message, and `failed` listing the parts that
//! failed. One evaluation at a time: an answer is reused for `cache` (default 1 s), and requests
//! that arrive while an evaluation runs wait for it, so a storm of monitors costs one round of
//! checks per `cache` period.
//!
//! It must not decide failover, keep state between evaluations beyond that cache, or write to
//! the servers it checks.

pub mod config;
pub mod parts;

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use config::{AgentConfig, Part};
use parts::Runner;

/// One part's line in the answer.
#[derive(Debug, Clone, Serialize)]
pub struct PartReport {
    pub name: String,
    pub kind: &'static str,
    pub ok: bool,
    pub latency_ms: f64,
    pub message: String,
}

/// One evaluation of every part.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `"ok"` or `"fail"`.
    pub status: &'static str,
    /// Names of the parts that failed, in config order.
    pub failed: Vec<String>,
    pub parts: Vec<PartReport>,
    /// When the evaluation started, milliseconds since the Unix epoch.
    pub checked_at_ms: u64,
    #[serde(skip)]
    started: Option<Instant>,
}

/// The agent: its parts, ready to run, and the last answer.
pub struct Agent {
    parts: Vec<(Part, Arc<Runner>)>,
    cache_for: Duration,
    last: tokio::sync::Mutex<Option<Arc<Report>>>,
}

impl Agent {
    pub fn new(cfg: &AgentConfig) -> Result<Agent, String> {
        let mut parts = Vec::new();
        for p in &cfg.parts {
            let runner = parts::build(p).map_err(|e| format!("check \"{}\": {e}", p.name))?;
            parts.push((p.clone(), Arc::new(runner)));
        }
        Ok(Agent { parts, cache_for: cfg.cache, last: tokio::sync::Mutex::new(None) })
    }

    /// The current answer: the last one while it is younger than `cache`, or one whose
    /// evaluation started after this call began; otherwise a fresh evaluation. Returns whether
    /// it was reused.
    pub async fn report(&self) -> (Arc<Report>, bool) {
        let asked = Instant::now();
        let mut last = self.last.lock().await;
        if let Some(r) = last.as_ref()
            && let Some(started) = r.started
            && (started >= asked || started.elapsed() < self.cache_for)
        {
            return (r.clone(), true);
        }
        let fresh = Arc::new(self.evaluate().await);
        *last = Some(fresh.clone());
        (fresh, false)
    }

    /// Run every part concurrently, each within its timeout.
    pub async fn evaluate(&self) -> Report {
        let started = Instant::now();
        let checked_at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let mut set = tokio::task::JoinSet::new();
        for (i, (part, runner)) in self.parts.iter().enumerate() {
            let (runner, timeout) = (runner.clone(), part.timeout);
            set.spawn(async move { (i, parts::run(&runner, timeout).await) });
        }
        let mut outcomes: Vec<Option<parts::Outcome>> = vec![None; self.parts.len()];
        while let Some(done) = set.join_next().await {
            if let Ok((i, o)) = done {
                outcomes[i] = Some(o);
            }
        }
        let mut reports = Vec::new();
        for ((part, _), o) in self.parts.iter().zip(outcomes) {
            let o = o.unwrap_or_else(|| parts::Outcome { ok: false, latency: started.elapsed(), message: "the check's task failed".into() });
            reports.push(PartReport { name: part.name.clone(), kind: part.kind.name(), ok: o.ok, latency_ms: (o.latency.as_secs_f64() * 1e6).round() / 1e3, message: o.message });
        }
        let failed: Vec<String> = reports.iter().filter(|r| !r.ok).map(|r| r.name.clone()).collect();
        Report { status: if failed.is_empty() { "ok" } else { "fail" }, failed, parts: reports, checked_at_ms, started: Some(started) }
    }
}

/// `GET /health` (and `HEAD`).
pub fn router(agent: Arc<Agent>) -> Router {
    Router::new().route("/health", get(health)).with_state(agent)
}

async fn health(State(agent): State<Arc<Agent>>) -> Response {
    let (report, cached) = agent.report().await;
    let age_ms = report.started.map(|s| s.elapsed().as_millis() as u64).unwrap_or(0);
    let mut body = serde_json::to_value(&*report).unwrap_or_default();
    if let Some(map) = body.as_object_mut() {
        map.insert("cached".into(), cached.into());
        map.insert("age_ms".into(), age_ms.into());
    }
    let code = if report.failed.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut resp = (code, axum::Json(body)).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Serve `cfg` until `shutdown` completes.
pub async fn serve(cfg: &AgentConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), String> {
    let agent = Arc::new(Agent::new(cfg)?);
    let listener = tokio::net::TcpListener::bind(cfg.listen).await.map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    eprintln!("understudy agent: serving GET /health on http://{local}/health ({} checks)", cfg.parts.len());
    axum::serve(listener, router(agent)).with_graceful_shutdown(shutdown).await.map_err(|e| e.to_string())
}

/// `understudy agent -c FILE [--check-config]`: exit 0, 1 (could not serve) or 2 (bad config).
pub async fn main(file: &Path, check_only: bool) -> ExitCode {
    let cfg = match config::load(file) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            return ExitCode::from(2);
        }
    };
    if check_only {
        let names: Vec<String> = cfg.parts.iter().map(|p| format!("{} ({})", p.name, p.kind.name())).collect();
        println!("{}: OK ({} checks: {}; listen {})", file.display(), cfg.parts.len(), names.join(", "), cfg.listen);
        return ExitCode::SUCCESS;
    }
    let shutdown = async {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    match serve(&cfg, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn agent(extra: &str, cache: &str) -> Arc<Agent> {
        let text = format!("listen = \"127.0.0.1:0\"\ncache = \"{cache}\"\n[[check]]\nname = \"root\"\nkind = \"disk\"\npath = \"/\"\nmin_free = 0\n{extra}");
        Arc::new(Agent::new(&config::from_str(&text, Path::new("agent.toml")).unwrap()).unwrap())
    }

    async fn get(a: &Arc<Agent>) -> (StatusCode, serde_json::Value) {
        let resp = router(a.clone()).oneshot(Request::get("/health").body(Body::empty()).unwrap()).await.unwrap();
        let code = resp.status();
        let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
        (code, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn all_parts_passing_is_200_and_one_failing_is_503_naming_it() {
        let a = agent("", "0s");
        let (code, body) = get(&a).await;
        assert_eq!((code, body["status"].as_str()), (StatusCode::OK, Some("ok")), "{body}");
        assert_eq!(body["parts"][0]["kind"], "disk");
        let a = agent("[[check]]\nname = \"flag\"\nkind = \"exec\"\ncommand = \"echo missing; exit 3\"\n", "0s");
        let (code, body) = get(&a).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["failed"], serde_json::json!(["flag"]));
        assert_eq!(body["parts"][1]["message"], "exit status 3: missing");
        assert_eq!(body["parts"][0]["ok"], true);
    }

    #[tokio::test]
    async fn a_slow_part_times_out_without_holding_the_others() {
        let a = agent("[[check]]\nname = \"slow\"\nkind = \"exec\"\ncommand = \"sleep 30\"\ntimeout = \"200ms\"\n", "0s");
        let t = Instant::now();
        let (code, body) = get(&a).await;
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!((code, body["parts"][1]["message"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("timed out after 200ms")));
    }

    #[tokio::test]
    async fn a_storm_of_requests_runs_the_checks_once_per_cache_period() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("runs");
        let a = agent(&format!("[[check]]\nname = \"count\"\nkind = \"exec\"\ncommand = \"echo x >> {}\"\n", count.display()), "60s");
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let a = a.clone();
            set.spawn(async move { get(&a).await.0 });
        }
        while let Some(code) = set.join_next().await {
            assert_eq!(code.unwrap(), StatusCode::OK);
        }
        assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 1, "twenty requests, one round of checks");
        let (_, body) = get(&a).await;
        assert_eq!(body["cached"], true);
    }
}
