//! The API and its neighbours (issue 8, section 4) and the daemon's life under systemd
//! (section 6): a hostile web page or a DNS-rebound name cannot drive the API, the token is
//! created and found without the operator's help, TLS works with a self-signed certificate,
//! the connection cap and body limit hold, systemd hears READY=1 and WATCHDOG=1, logs carry no
//! colour codes off a terminal, and the shipped unit passes `systemd-analyze verify`.
//!
//! The router cases run through `oneshot` (no socket); the reproductions from the issue run
//! the real binary and real curl on loopback.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::support::*;

const DRAIN: &str = "/api/v1/services/www/targets/primary/drain";

/// A request through the router with exactly these headers.
async fn raw(h: &understudy::cli::run::Running, method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = understudy::api::router(h.api.clone()).oneshot(req.body(Body::from(body.to_string())).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn primary_enabled(h: &understudy::cli::run::Running) -> bool {
    let svc = h.shared.services().await.unwrap();
    svc[0].status.targets[0].enabled
}

#[tokio::test]
async fn router_refuses_cross_site_rebound_and_tokenless_mutations() {
    let (dir, h) = crate::api::daemon(None).await;
    let host = h.api_addr.to_string();
    let token_path = dir.path().join("data").join("api-token");
    let token = std::fs::read_to_string(&token_path).expect("the daemon created data_dir/api-token").trim().to_string();
    assert_eq!(std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(Some(&token), h.api.token.as_ref());
    let bearer = format!("Bearer {token}");

    // The issue's request: form content type, Origin evil.example, no token.
    let form = [("host", host.as_str()), ("content-type", "application/x-www-form-urlencoded"), ("origin", "http://evil.example")];
    let (s, body) = raw(&h, "POST", DRAIN, &form, "").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("cross-site request refused"), "{body}");
    // Even with the token, a cross-site page or a form post does not get through.
    let (s, _) = raw(&h, "POST", DRAIN, &[form[0], form[1], form[2], ("authorization", &bearer)], "").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, body) = raw(&h, "POST", DRAIN, &[form[0], form[1], ("authorization", &bearer)], "").await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    let json = ("content-type", "application/json");
    let (s, _) = raw(&h, "POST", DRAIN, &[form[0], json, ("origin", "http://evil.example"), ("authorization", &bearer)], "{}").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // DNS rebinding: the right address, a foreign name.
    for method in ["GET", "POST"] {
        let (s, body) = raw(&h, method, "/api/v1/services", &[("host", "evil.example:9190"), json, ("authorization", &bearer)], "{}").await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method}: {body}");
        assert!(body.contains("does not answer to Host \\\"evil.example:9190\\\""), "{body}");
    }
    // Secure by default: no token configured, yet a mutation without one is refused.
    let (s, _) = raw(&h, "POST", DRAIN, &[form[0], json], "{}").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(primary_enabled(&h).await, "nothing above drained the primary");

    // What the CLI sends passes; so does a same-origin page on localhost.
    let (s, body) = raw(&h, "POST", DRAIN, &[form[0], json, ("authorization", &bearer)], "{}").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(!primary_enabled(&h).await);
    let local = format!("localhost:{}", h.api_addr.port());
    let origin = format!("http://{local}");
    let enable = "/api/v1/services/www/targets/primary/enable";
    let (s, body) = raw(&h, "POST", enable, &[("host", &local), json, ("origin", &origin), ("authorization", &bearer)], "").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(primary_enabled(&h).await);

    let (_, metrics) = raw(&h, "GET", "/metrics", &[form[0]], "").await;
    for reason in ["origin", "content_type", "host", "token"] {
        assert!(metrics.contains(&format!("understudy_api_requests_refused_total{{reason=\"{reason}\"}}")), "{reason}:\n{metrics}");
    }
    h.shutdown().await;
}

#[tokio::test]
async fn api_hosts_admit_a_proxy_name_and_a_configured_token_file_wins() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "from-the-config\n").unwrap();
    let text = format!(
        "[daemon]\ndata_dir = \"{}\"\napi = \"127.0.0.1:0\"\napi_token_file = \"token\"\napi_hosts = [\"Understudy.Example.NET\"]\n",
        dir.path().join("data").display()
    );
    let path = dir.path().join("understudy.toml");
    std::fs::write(&path, text).unwrap();
    let (cfg, _) = understudy::config::load(&path).unwrap();
    let h = understudy::cli::run::start(cfg).await.unwrap();
    assert_eq!(h.api.token.as_deref(), Some("from-the-config"));
    assert!(!dir.path().join("data").join("api-token").exists(), "no token generated when one is configured");
    let (s, _) = raw(&h, "GET", "/healthz", &[("host", "understudy.example.net:443")], "").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = raw(&h, "GET", "/healthz", &[("host", "other.example.net")], "").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    h.shutdown().await;
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl").args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"]).args(args).output().expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_string(), format!("{body}{}", String::from_utf8_lossy(&out.stderr)))
}

/// The reproduction from the issue, with the real binary and curl, and the operator's CLI
/// (run from the config's directory, no flags, as in the README) still working.
#[tokio::test]
async fn the_issue_reproduction_is_refused_and_the_plain_cli_still_works() {
    let (dir, port, _primary, _backup) = two_nginx().await;
    let api = api_addr();
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "1s", "");
    let d = Daemon::start(dir.path(), &cfg, api).await;
    d.wait_active("www", "primary", Duration::from_secs(5)).await;
    let url = format!("{}{DRAIN}", d.api);

    let (code, body) = curl(&["-X", "POST", "-H", "Content-Type: application/x-www-form-urlencoded", "-H", "Origin: http://evil.example", &url]);
    assert_eq!(code, "403", "{body}");
    let (code, body) = curl(&["-H", "Host: evil.example", &format!("{}/api/v1/services", d.api)]);
    assert_eq!(code, "403", "{body}");
    let (code, body) = curl(&["-X", "POST", "-H", "Content-Type: application/json", "-d", "{}", &url]);
    assert_eq!(code, "401", "no token: {body}");
    assert_eq!(d.service("www").await["targets"][0]["enabled"], true, "the primary was not drained");

    // `understudy drain www primary`, exactly as the README shows it: the CLI finds
    // ./understudy.toml, the API address and the token in data_dir.
    let cli = |args: &[&str]| {
        Command::new(understudy_bin())
            .args(args)
            .current_dir(dir.path())
            .env_remove("UNDERSTUDY_API")
            .env_remove("UNDERSTUDY_TOKEN")
            .env_remove("UNDERSTUDY_TOKEN_FILE")
            .env_remove("UNDERSTUDY_CONFIG")
            .output()
            .unwrap()
    };
    let out = cli(&["drain", "www", "primary"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    d.wait_active("www", "backup", Duration::from_secs(5)).await;
    let out = cli(&["enable", "www", "primary"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A wrong token is refused, with a hint on where the CLI looked.
    let out = Command::new(understudy_bin()).args(["drain", "www", "primary", "--api", &d.api]).current_dir(dir.path()).env("UNDERSTUDY_TOKEN", "nope").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing or wrong bearer token"), "{}", String::from_utf8_lossy(&out.stderr));

    // Logs go to a file here: no colour codes.
    let logs = d.logs();
    assert!(logs.contains("understudy is running"), "{logs}");
    assert!(!logs.contains('\x1b'), "ANSI escape codes in a non-terminal log:\n{logs}");
}

#[tokio::test]
async fn body_limit_and_connection_cap_hold() {
    let (dir, port, _primary, _backup) = two_nginx().await;
    let api = api_addr();
    let cfg = two_target_config(&dir.path().join("data"), api, port, 200, "1s", "");
    let d = Daemon::start(dir.path(), &cfg, api).await;

    let big = serde_json::json!({ "pad": "x".repeat(2 << 20) });
    let r = d.post("/api/v1/drills/1/finish", big).await;
    assert_eq!(r.status(), 413, "a 2 MiB body is refused");

    // Fill every slot with idle connections; the next one is closed at once, not queued.
    let mut idle = Vec::new();
    for _ in 0..understudy::api::serve::MAX_CONNECTIONS {
        idle.push(tokio::net::TcpStream::connect(api).await.unwrap());
    }
    wait_for(Duration::from_secs(5), "a connection over the cap to be closed", || async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(api).await.ok()?;
        let _ = s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {api}\r\n\r\n").as_bytes()).await;
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await.ok()?.unwrap_or(0);
        (n == 0).then_some(())
    })
    .await;
    drop(idle);
    wait_for(Duration::from_secs(5), "the API to serve again once the idle connections close", || async {
        http().get(format!("{}/healthz", d.api)).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
    })
    .await;
    let metrics = http().get(format!("{}/metrics", d.api)).send().await.unwrap().text().await.unwrap();
    let line = metrics.lines().find(|l| l.starts_with("understudy_api_connections_refused_total")).expect("the cap metric");
    assert_ne!(line.rsplit(' ').next(), Some("0"), "{line}");
}

/// A self-signed certificate for 127.0.0.1 (a leaf, not a CA: rustls clients insist).
fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("api.crt"), dir.join("api.key"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=understudy test"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed (scripts/install-test-deps.sh)");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

#[tokio::test]
async fn the_api_serves_tls_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _key) = self_signed(dir.path());
    let api = api_addr();
    let config = dir.path().join("understudy.toml");
    let text = format!(
        "[daemon]\ndata_dir = \"{}\"\napi = \"{api}\"\napi_tls_cert = \"api.crt\"\napi_tls_key = \"api.key\"\n\n\
         [[service]]\nname = \"www\"\n[service.check]\nkind = \"exec\"\ncommand = \"true\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\n\
         [[service.target]]\nname = \"primary\"\naddress = \"127.0.0.2\"\n[[service.target]]\nname = \"backup\"\naddress = \"127.0.0.3\"\n",
        dir.path().join("data").display()
    );
    std::fs::write(&config, text).unwrap();
    let _p = Proc::spawn(&config, &dir.path().join("daemon.log"), &[]);
    let https = format!("https://{api}");
    let cacert = cert.to_str().unwrap();
    wait_for(Duration::from_secs(15), "the API over TLS", || async { (curl(&["--cacert", cacert, &format!("{https}/healthz")]).0 == "200").then_some(()) }).await;
    let (code, body) = curl(&["--cacert", cacert, &format!("{https}/api/v1/services/www")]);
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("\"name\":\"www\""), "{body}");
    // Plain HTTP to the TLS port gets no API answer, and an untrusted client refuses the cert.
    assert_ne!(curl(&[&format!("http://{api}/healthz")]).0, "200");
    assert_ne!(curl(&[&format!("{https}/healthz")]).0, "200");
    // The CLI trusts the configured certificate and finds the token.
    let out = Command::new(understudy_bin()).args(["drain", "www", "backup", "-c"]).arg(&config).env_remove("UNDERSTUDY_API").env_remove("UNDERSTUDY_TOKEN").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, body) = curl(&["--cacert", cacert, &format!("{https}/api/v1/services/www")]);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["targets"][1]["enabled"], false, "{v}");

    // A key that does not match the certificate is a config error naming the files.
    let (other_cert, _) = {
        let d2 = dir.path().join("other");
        std::fs::create_dir_all(&d2).unwrap();
        self_signed(&d2)
    };
    std::fs::copy(&other_cert, dir.path().join("api.crt")).unwrap();
    let out = Command::new(understudy_bin()).arg("check-config").arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("daemon.api_tls_cert") && err.contains("do not work together"), "{err}");
}

#[tokio::test]
async fn systemd_hears_ready_after_the_listeners_and_watchdog_pings() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let api = api_addr();
    let config = dir.path().join("understudy.toml");
    std::fs::write(&config, format!("[daemon]\ndata_dir = \"{}\"\napi = \"{api}\"\n", dir.path().join("data").display())).unwrap();
    let started = std::time::Instant::now();
    let _p = Proc::spawn(&config, &dir.path().join("daemon.log"), &[("NOTIFY_SOCKET", sock_path.to_str().unwrap()), ("WATCHDOG_USEC", "400000")]);
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("READY=1 within 15 s");
    assert_eq!(&buf[..n], b"READY=1");
    println!("READY=1 arrived {:.1} ms after exec", started.elapsed().as_secs_f64() * 1000.0);
    // READY means the API is already listening: connect at once, no retry.
    let c = std::net::TcpStream::connect_timeout(&api, Duration::from_secs(1));
    assert!(c.is_ok(), "the API is not listening when READY=1 arrives: {c:?}");
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..2 {
        let n = sock.recv(&mut buf).expect("WATCHDOG=1 every 200 ms");
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }
}

#[test]
fn the_shipped_unit_passes_systemd_analyze_verify() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("dist/understudy.service")).unwrap();
    for needed in ["Type=notify", "WatchdogSec=", "DynamicUser=yes", "User=understudy", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "AmbientCapabilities=CAP_NET_BIND_SERVICE"] {
        assert!(unit.lines().any(|l| l.starts_with(needed)), "the unit lacks {needed}");
    }
    // Verify a copy whose ExecStart names the binary just built (verify checks it exists).
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("understudy.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/understudy", understudy_bin())).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&copy).output().expect("systemd-analyze (Debian package systemd; scripts/install-test-deps.sh)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // verify exits 0 on many warnings ("Unknown key", "Failed to parse"): none for our file.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("understudy.service")).collect();
    assert!(ours.is_empty(), "systemd-analyze warnings: {ours:#?}");
}

/// A token file that cannot be read or written (here: a directory in its place, since root
/// ignores modes) must not stop the daemon: it runs, fails over, and refuses mutations.
#[tokio::test]
async fn an_unwritable_token_file_does_not_stop_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("api-token")).unwrap();
    let path = dir.path().join("understudy.toml");
    std::fs::write(&path, format!("[daemon]\ndata_dir = \"{}\"\napi = \"127.0.0.1:0\"\n", data.display())).unwrap();
    let (cfg, _) = understudy::config::load(&path).unwrap();
    let h = understudy::cli::run::start(cfg).await.expect("the daemon starts without its token file");
    let host = h.api_addr.to_string();
    let (s, _) = raw(&h, "GET", "/healthz", &[("host", &host)], "").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = raw(&h, "POST", "/api/v1/services/www/clear", &[("host", &host), ("content-type", "application/json"), ("authorization", "Bearer ")], "{}").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    h.shutdown().await;
}
