//! The router through `tower::ServiceExt::oneshot`: no socket for the requests themselves
//! (the daemon under it is real, with no services, so nothing is probed).

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

pub(crate) async fn daemon(token: Option<&str>) -> (tempfile::TempDir, understudy::cli::run::Running) {
    let dir = tempfile::tempdir().unwrap();
    let mut text = format!("[daemon]\ndata_dir = \"{}\"\napi = \"127.0.0.1:0\"\n", dir.path().join("data").display());
    if let Some(t) = token {
        std::fs::write(dir.path().join("token"), t).unwrap();
        text.push_str("api_token_file = \"token\"\n");
    }
    text.push_str(
        "\n[[service]]\nname = \"www\"\n[service.check]\nkind = \"exec\"\ncommand = \"true\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\n\
         [[service.target]]\nname = \"primary\"\naddress = \"127.0.0.2\"\n[[service.target]]\nname = \"backup\"\naddress = \"127.0.0.3\"\n",
    );
    let path = dir.path().join("understudy.toml");
    std::fs::write(&path, &text).unwrap();
    let (cfg, _) = understudy::config::load(&path).unwrap();
    let handle = understudy::cli::run::start(cfg).await.unwrap();
    (dir, handle)
}

pub(crate) async fn call(h: &understudy::cli::run::Running, method: &str, uri: &str, auth: Option<&str>, body: Option<&str>) -> (StatusCode, String) {
    // What a CLI or curl sends: the API's own address as Host, JSON on every mutation.
    let mut req = Request::builder().method(method).uri(uri).header(header::HOST, h.api_addr.to_string());
    if method == "POST" {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, format!("Bearer {a}"));
    }
    let req = req.body(body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty)).unwrap();
    let resp = understudy::api::router(h.api.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn errors_are_json_with_fitting_status_codes() {
    let (_dir, h) = daemon(None).await;
    let token = h.api.token.clone().expect("a generated token");
    let tok = Some(token.as_str());
    let (s, body) = call(&h, "GET", "/api/v1/services/nope", None, None).await;
    assert_eq!((s, body.as_str()), (StatusCode::NOT_FOUND, r#"{"error":"no service named \"nope\""}"#));
    let (s, body) = call(&h, "POST", "/api/v1/services/www/switchover", tok, Some("{\"targ\": 1}")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body.contains("expected a JSON body like {\\\"target\\\": \\\"backup\\\"}"), "{body}");
    let (s, _) = call(&h, "POST", "/api/v1/services/www/targets/zzz/drain", tok, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(&h, "GET", "/api/v1/incidents/42", None, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, body) = call(&h, "GET", "/api/v1/events?since=abc", None, None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let (s, body) = call(&h, "GET", "/healthz", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.starts_with("ok"));
    let (s, body) = call(&h, "GET", "/api/v1/events?since=0", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["events"][0]["event"]["kind"], "daemon_started");
    h.shutdown().await;
}

#[tokio::test]
async fn a_configured_token_guards_mutations_only() {
    let (_dir, h) = daemon(Some("s3cret")).await;
    let (s, _) = call(&h, "GET", "/api/v1/services", None, None).await;
    assert_eq!(s, StatusCode::OK, "reads stay open");
    let (s, body) = call(&h, "POST", "/api/v1/services/www/targets/backup/drain", None, None).await;
    assert_eq!((s, body.as_str()), (StatusCode::UNAUTHORIZED, r#"{"error":"missing or wrong bearer token"}"#));
    let (s, _) = call(&h, "POST", "/api/v1/services/www/targets/backup/drain", Some("wrong"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, body) = call(&h, "POST", "/api/v1/services/www/targets/backup/drain", Some("s3cret"), None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["targets"][1]["enabled"], false);
    let (_, events) = call(&h, "GET", "/api/v1/events?since=0", None, None).await;
    assert!(events.contains(r#""by":"api""#), "{events}");
    h.shutdown().await;
}

#[tokio::test]
async fn metrics_use_the_documented_names() {
    let (_dir, h) = daemon(None).await;
    let (s, body) = call(&h, "GET", "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(!body.contains("quantile="), "no gauge with a quantile label:\n{body}");
    for name in [
        "understudy_target_up{service=\"www\",target=\"primary\"}",
        "understudy_service_active_target{service=\"www\",target=\"backup\"}",
        "understudy_failovers_total{service=\"www\"} 0",
        "# TYPE understudy_check_duration_seconds histogram",
        "# TYPE understudy_probe_schedule_lag_seconds histogram",
        "understudy_probe_schedule_lag_seconds_bucket{le=\"0.001\"}",
        "understudy_probe_schedule_lag_seconds_bucket{le=\"+Inf\"}",
        "understudy_probe_schedule_lag_seconds_count ",
        "understudy_probe_schedule_lag_seconds_sum ",
    ] {
        assert!(body.contains(name), "missing {name} in:\n{body}");
    }
    h.shutdown().await;
}
