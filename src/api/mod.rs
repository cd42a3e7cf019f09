//! The HTTP API: JSON under `/api/v1`, Prometheus text at `/metrics`, `/healthz`.
//!
//! [`router`] builds the axum `Router` from the daemon's [`Shared`] handle; tests call it with
//! `oneshot` and no socket. Handlers hold no state of their own: reads go to the core (or to
//! the event log's in-memory window), writes become [`Control`](crate::daemon::Control)
//! messages. Every error is an [`ApiError`], turned into a status and a JSON body in one place.
//!
//! Every request passes [`guard`] first (its `Host` must name this API; a mutating call needs
//! `Content-Type: application/json` and no cross-site `Origin`), and every mutating endpoint
//! needs `Authorization: Bearer <token>`: the token from `daemon.api_token_file`, or the one the
//! daemon keeps in `data_dir/api-token` ([`token`]). [`serve`] is the accept loop (TLS,
//! connection cap, timeouts).

pub mod client;
pub mod dashboard;
pub mod guard;
pub mod serve;
pub mod sse;
pub mod token;
pub mod view;
pub mod wire;

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::daemon::{Refusal, Shared};
use crate::events::OverrideAction;

/// An API failure, rendered as `{"error": "..."}` with a fitting status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("request body larger than {} bytes", serve::BODY_LIMIT)]
    TooLarge,
    #[error("{0}")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Refused(Refusal::NoService(_) | Refusal::NoTarget { .. } | Refusal::NoIncident(_) | Refusal::NoDrill(_)) => StatusCode::NOT_FOUND,
            ApiError::Refused(Refusal::Conflict(_)) => StatusCode::CONFLICT,
            ApiError::Refused(Refusal::ShuttingDown) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut resp = (status, Json(wire::ErrorBody { error: self.to_string() })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

type ApiResult<T> = Result<T, ApiError>;

pub fn router(api: ApiState) -> Router {
    Router::new()
        .route("/", get(dashboard::index))
        .route("/dashboard/{file}", get(dashboard::file))
        .route("/api/v1/events/stream", get(sse::stream))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/services", get(services))
        .route("/api/v1/services/{name}", get(service))
        .route("/api/v1/services/{name}/switchover", post(switchover))
        .route("/api/v1/services/{name}/clear", post(clear))
        .route("/api/v1/services/{name}/targets/{target}/drain", post(drain))
        .route("/api/v1/services/{name}/targets/{target}/enable", post(enable))
        .route("/api/v1/services/{name}/targets/{target}/force-down", post(force_down))
        .route("/api/v1/services/{name}/targets/{target}/unforce", post(unforce))
        .route("/api/v1/events", get(events))
        .route("/api/v1/event-log", get(event_log))
        .route("/api/v1/drills", get(drills).post(drill_start))
        .route("/api/v1/drills/{id}", get(drill))
        .route("/api/v1/drills/{id}/finish", post(drill_finish))
        .route("/api/v1/drills/{id}/lease", post(drill_lease))
        .route("/api/v1/incidents", get(incidents))
        .route("/api/v1/incidents/{id}", get(incident))
        .route("/api/v1/incidents/{id}/close", post(close_incident))
        .route("/api/v1/notify", get(notify_status))
        .route("/api/v1/vips", get(vips))
        .route("/api/v1/cluster", get(cluster))
        .route("/api/v1/notify/{channel}/test", post(notify_test))
        .layer(axum::middleware::from_fn_with_state(api.clone(), guard::layer))
        .with_state(api)
}

/// The state every handler sees: the daemon's [`Shared`] handle plus what only the API has
/// (its token, the names it answers to, its TLS certificate). Handlers that only talk to the
/// daemon take `State<Shared>`.
#[derive(Clone)]
pub struct ApiState {
    pub daemon: Shared,
    /// The bearer token mutating calls need (configured, or generated in `data_dir/api-token`);
    /// without one every mutation is refused.
    pub token: Option<String>,
    /// The names the API answers to (`Host` and `Origin` checks).
    pub hosts: Arc<guard::Hosts>,
    /// The API's TLS certificate, when it serves https (in-process clients trust it).
    pub tls: Option<crate::config::ApiTls>,
}

impl FromRef<ApiState> for Shared {
    fn from_ref(api: &ApiState) -> Shared {
        api.daemon.clone()
    }
}

impl ApiState {
    /// How an in-process client (scheduled drills) reaches this API.
    pub fn endpoint(&self) -> client::Endpoint {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        client::Endpoint {
            api: Some(format!("{scheme}://{}", self.hosts.addr)),
            token: self.token.clone(),
            ca_file: self.tls.as_ref().map(|t| t.cert.clone()),
            ..Default::default()
        }
    }
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind the API on {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("API TLS: {0}")]
    Tls(String),
}

/// Bind the API for a prepared daemon and serve it until the daemon stops. The token is the
/// configured one, or the daemon's `data_dir/api-token` (created on first start).
pub async fn start(daemon: &Shared, cfg: &crate::config::DaemonConfig, tracker: &tokio_util::task::TaskTracker, cancel: &tokio_util::sync::CancellationToken) -> Result<ApiState, StartError> {
    let token = match &cfg.api_token {
        Some(t) => t.clone(),
        // A full or read-only data disk must not stop the daemon (it still fails over): keep a
        // token in memory only; mutations are refused until the file can be written.
        None => token::ensure(&cfg.data_dir).unwrap_or_else(|e| {
            tracing::error!("{e}; mutating API calls will be refused until it can be written and the daemon restarted");
            token::generate()
        }),
    };
    let tls_config = match &cfg.api_tls {
        Some(t) => Some(crate::crypto::server_config(&t.cert, &t.key).map_err(StartError::Tls)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(cfg.api).await.map_err(|source| StartError::Bind { addr: cfg.api, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: cfg.api, source })?;
    let state = ApiState { daemon: daemon.clone(), token: Some(token), hosts: Arc::new(guard::Hosts { addr, extra: cfg.api_hosts.clone() }), tls: cfg.api_tls.clone() };
    let (app, metrics, cancel) = (router(state.clone()), daemon.metrics.clone(), cancel.clone());
    tracker.spawn(async move { serve::serve(listener, app, tls_config, metrics, cancel).await });
    Ok(state)
}

/// A request that carried the right bearer token; holds who is acting, for the event.
pub struct Authorized(pub String);

impl FromRequestParts<ApiState> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &ApiState) -> ApiResult<Authorized> {
        let given = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
        match (given, &api.token) {
            (Some(g), Some(token)) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(Authorized("api".into())),
            _ => {
                api.daemon.metrics.api_refused.get_or_create(&crate::metrics::RefusedLabels { reason: "token".into() }).inc();
                Err(ApiError::Unauthorized)
            }
        }
    }
}

/// A body that is not the JSON expected (400, with `hint`), or too large (413).
fn bad_json(e: axum::extract::rejection::JsonRejection, hint: &str) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::TooLarge;
    }
    ApiError::BadRequest(format!("{hint}{}", e.body_text()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 200 while the core loop turns (it beats at least once a second); 503 when it is stalled.
/// 200 while the core loop turns and check results arrive; 503 (with the reason) otherwise.
async fn healthz(State(shared): State<Shared>) -> Response {
    match shared.self_health() {
        Ok(msg) => (StatusCode::OK, format!("{msg}\n")).into_response(),
        Err(msg) => (StatusCode::SERVICE_UNAVAILABLE, format!("{msg}\n")).into_response(),
    }
}

async fn metrics(State(shared): State<Shared>) -> Response {
    let body = shared.metrics.encode();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

async fn services(State(shared): State<Shared>) -> ApiResult<Json<Vec<wire::Service>>> {
    Ok(Json(shared.services().await?.iter().map(view::service).collect()))
}

async fn service(State(shared): State<Shared>, Path(name): Path<String>) -> ApiResult<Json<wire::Service>> {
    let all = shared.services().await?;
    all.iter().find(|s| s.status.name == name).map(|s| Json(view::service(s))).ok_or(ApiError::Refused(Refusal::NoService(name)))
}

async fn switchover(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    Authorized(by): Authorized,
    body: Result<Json<wire::SwitchoverRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<wire::Service>> {
    let Json(req) = body.map_err(|e| bad_json(e, "expected a JSON body like {\"target\": \"backup\"}: "))?;
    shared.operate(&name, Some(&req.target), OverrideAction::Switchover, &by).await?;
    service(State(shared), Path(name)).await
}

async fn clear(State(shared): State<Shared>, Path(name): Path<String>, Authorized(by): Authorized) -> ApiResult<Json<wire::Service>> {
    shared.operate(&name, None, OverrideAction::Clear, &by).await?;
    service(State(shared), Path(name)).await
}

async fn drain(State(shared): State<Shared>, Path((name, target)): Path<(String, String)>, Authorized(by): Authorized) -> ApiResult<Json<wire::Service>> {
    shared.operate(&name, Some(&target), OverrideAction::Drain, &by).await?;
    service(State(shared), Path(name)).await
}

async fn enable(State(shared): State<Shared>, Path((name, target)): Path<(String, String)>, Authorized(by): Authorized) -> ApiResult<Json<wire::Service>> {
    shared.operate(&name, Some(&target), OverrideAction::Enable, &by).await?;
    service(State(shared), Path(name)).await
}

/// Longest a force-down may last before it lapses by itself.
const MAX_FORCE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

async fn force_down(
    State(shared): State<Shared>,
    Path((name, target)): Path<(String, String)>,
    Authorized(by): Authorized,
    body: Option<Json<wire::ForceDownRequest>>,
) -> ApiResult<Json<wire::Service>> {
    let req = body.map(|Json(b)| b).unwrap_or_default();
    let lasts = match req.lasts.as_deref() {
        Some(s) => crate::config::parse_duration(s).map_err(|e| ApiError::BadRequest(format!("for: {e}")))?,
        None => wire::ForceDownRequest::DEFAULT_LASTS,
    };
    if lasts.is_zero() || lasts > MAX_FORCE {
        return Err(ApiError::BadRequest("for: expected a duration above zero and at most 24h".into()));
    }
    let by = req.by.map(|b| format!("{b} via {by}")).unwrap_or(by);
    shared.force_down(&name, &target, lasts, &by).await?;
    service(State(shared), Path(name)).await
}

async fn unforce(State(shared): State<Shared>, Path((name, target)): Path<(String, String)>, Authorized(by): Authorized) -> ApiResult<Json<wire::Service>> {
    shared.operate(&name, Some(&target), OverrideAction::Unforce, &by).await?;
    service(State(shared), Path(name)).await
}

async fn drills(State(shared): State<Shared>) -> ApiResult<Json<Vec<crate::drill::Summary>>> {
    Ok(Json(shared.drills().await?))
}

async fn drill_start(
    State(shared): State<Shared>,
    _: Authorized,
    body: Result<Json<crate::drill::StartRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<crate::drill::StartResponse>> {
    let Json(req) = body.map_err(|e| bad_json(e, ""))?;
    Ok(Json(shared.drill_start(req).await?))
}

async fn drill_finish(
    State(shared): State<Shared>,
    Path(id): Path<u64>,
    _: Authorized,
    body: Result<Json<crate::drill::Report>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<crate::drill::Summary>> {
    let Json(report) = body.map_err(|e| bad_json(e, ""))?;
    if report.id != id {
        return Err(ApiError::BadRequest(format!("report is for drill #{}, not #{id}", report.id)));
    }
    let summary = crate::drill::Summary::from(&report);
    shared.drill_finish(report).await?;
    Ok(Json(summary))
}

async fn drill_lease(
    State(shared): State<Shared>,
    Path(id): Path<u64>,
    _: Authorized,
    body: Result<Json<crate::drill::LeaseRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<crate::drill::LeaseResponse>> {
    let Json(req) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let lasts = match req.lasts.as_deref() {
        Some(s) => crate::config::parse_duration(s).map_err(|e| ApiError::BadRequest(format!("for: {e}")))?,
        None => crate::drill::LeaseRequest::DEFAULT,
    };
    if lasts.is_zero() || lasts > crate::drill::LeaseRequest::MAX {
        return Err(ApiError::BadRequest(format!("for: expected a duration above zero and at most {}s", crate::drill::LeaseRequest::MAX.as_secs())));
    }
    Ok(Json(shared.drill_lease(id, req.undo, lasts).await?))
}

/// The full report, as stored in the data directory.
async fn drill(State(shared): State<Shared>, Path(id): Path<u64>) -> ApiResult<Json<crate::drill::Report>> {
    let dir = shared.data_dir.join("drills");
    let text = std::fs::read_to_string(dir.join(format!("drill-{id}.json"))).map_err(|_| ApiError::Refused(Refusal::NoDrill(id)))?;
    serde_json::from_str(&text).map(Json).map_err(|e| ApiError::Internal(format!("report of drill #{id} is unreadable: {e}")))
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    #[serde(default)]
    since: u64,
    limit: Option<usize>,
    service: Option<String>,
}

async fn events(State(shared): State<Shared>, q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>) -> ApiResult<Json<wire::Events>> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(format!("expected ?since=N&limit=N&service=NAME: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    // Scan the file (for an old `since`) without holding the lock the core appends under.
    let (in_memory, next_seq, path) = {
        let mut log = shared.log.lock().map_err(|_| ApiError::Internal("event log lock poisoned".into()))?;
        (log.since_in_memory(q.since, limit), log.next_seq(), log.path().to_owned())
    };
    let records = match in_memory {
        Some(r) => r,
        None => crate::events::log::read_since(&path, q.since, limit).map_err(|e| ApiError::Internal(e.to_string()))?,
    };
    let next = records.last().map(|r| r.seq).unwrap_or_else(|| q.since.min(next_seq.saturating_sub(1)));
    let events = records.iter().filter(|r| q.service.as_deref().is_none_or(|s| r.event.service() == Some(s))).map(wire::EventRecord::from).collect();
    Ok(Json(wire::Events { events, next }))
}

/// Whether the event log's disk keeps up.
async fn event_log(State(shared): State<Shared>) -> ApiResult<Json<wire::EventLogStatus>> {
    let st = shared.log.lock().map_err(|_| ApiError::Internal("event log lock poisoned".into()))?.status();
    Ok(Json(wire::EventLogStatus {
        last_seq: st.last_seq,
        durable_seq: st.durable_seq,
        behind: st.behind,
        oldest_pending_ms: st.oldest_pending_ms,
        error: st.error,
        write_errors: st.write_errors,
    }))
}

async fn incidents(State(shared): State<Shared>) -> ApiResult<Json<Vec<wire::Incident>>> {
    Ok(Json(shared.incidents().await?.iter().map(wire::Incident::from).collect()))
}

async fn incident(State(shared): State<Shared>, Path(id): Path<u64>) -> ApiResult<Json<wire::Incident>> {
    let all = shared.incidents().await?;
    all.iter().find(|i| i.id == id).map(|i| Json(wire::Incident::from(i))).ok_or(ApiError::Refused(Refusal::NoIncident(id)))
}

async fn close_incident(State(shared): State<Shared>, Path(id): Path<u64>, Authorized(by): Authorized) -> ApiResult<Json<wire::Incident>> {
    shared.close_incident(id, &by).await?;
    incident(State(shared), Path(id)).await
}

/// This node's virtual IPs: VRRP state, master heard, advert and drop counters.
async fn vips(State(shared): State<Shared>) -> ApiResult<Json<Vec<crate::vrrp::VipStatus>>> {
    Ok(Json(shared.vips().await?))
}

/// This node's place in the cluster, who leads, each node's view and the cluster's verdicts
/// (`{"kind": "standalone"}` for a single node).
async fn cluster(State(shared): State<Shared>) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(match shared.cluster().await? {
        Some(s) => view::cluster(&s),
        None => serde_json::json!({ "kind": "standalone" }),
    }))
}

async fn notify_status(State(shared): State<Shared>) -> Json<wire::NotifyStatus> {
    Json(shared.notify.status())
}

/// Sends a test message now; the receiver's refusal is a 200 with `ok: false` (the daemon did
/// its part), an unknown channel a 404.
async fn notify_test(State(shared): State<Shared>, Path(channel): Path<String>, _: Authorized) -> Response {
    match shared.notify.test(&channel).await {
        Ok(r) => Json(wire::NotifyTestResult { channel, ok: true, answer: r.answer }).into_response(),
        Err(crate::notify::dispatch::TestError::NoChannel(c)) => {
            (StatusCode::NOT_FOUND, Json(wire::ErrorBody { error: format!("no notification channel named \"{c}\"") })).into_response()
        }
        Err(e) => Json(wire::NotifyTestResult { channel, ok: false, answer: e.to_string() }).into_response(),
    }
}
