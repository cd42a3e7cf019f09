//! Who may talk to the API: the checks every request passes before a handler runs.
//!
//! - `Host` must name the API itself: its own IP address (any IP literal when it listens on
//!   0.0.0.0 or ::), `localhost` when it listens on loopback, or a name from `daemon.api_hosts`.
//!   A page on `evil.example` whose name an attacker re-points at 127.0.0.1 (DNS rebinding)
//!   sends `Host: evil.example` and is refused.
//! - Mutating calls (POST) need `Content-Type: application/json`, which a browser cannot send
//!   cross-site without a CORS preflight this API never answers, and an `Origin` (when present)
//!   that names the API itself. Together they stop a web page the operator visits from
//!   draining a target. The bearer token is checked by the handlers (`authorize`).
//! - Every request must finish within [`REQUEST_TIMEOUT`], body included.
//!
//! This module decides from headers only; it reads no body and holds no state but the
//! allowed names.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::wire;

/// The longest a request may take, from its first body byte to the response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The names the API answers to.
#[derive(Debug, Clone)]
pub struct Hosts {
    /// The address the API is bound to (the real port when the config said 0).
    pub addr: SocketAddr,
    /// `daemon.api_hosts`, lowercase, without ports.
    pub extra: Vec<String>,
}

impl Hosts {
    /// Does `host` (a `Host` or `Origin` host, without port) name this API?
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok();
        match ip {
            // An IP literal cannot be rebound by DNS; it must still be one we listen on.
            Some(ip) => {
                self.addr.ip().is_unspecified()
                    || ip == self.addr.ip()
                    || self.extra.iter().any(|h| h == &host)
            }
            None => {
                (host == "localhost" && self.addr.ip().is_loopback())
                    || self.extra.iter().any(|h| h == &host)
            }
        }
    }
}

impl Hosts {
    /// Is `authority` (from an `Origin` with `scheme`) this API? The host must be one of its
    /// names and the port its port: a page on `localhost:3000` is another origin. A name from
    /// `api_hosts` may carry any port (a proxy in front listens elsewhere).
    pub fn same_origin(&self, scheme: &str, authority: &str) -> bool {
        let host = host_part(authority);
        if !self.allows(host) {
            return false;
        }
        if self.extra.iter().any(|h| h.eq_ignore_ascii_case(host.trim_end_matches('.'))) {
            return true;
        }
        let port = match authority[host.len()..].strip_prefix(':') {
            Some(p) => p.parse::<u16>().ok(),
            None => match scheme {
                "http" => Some(80),
                "https" => Some(443),
                _ => None,
            },
        };
        port == Some(self.addr.port())
    }
}

pub use crate::config::host_part;

/// Why a request was turned away before reaching a handler.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    BadHost(String),
    CrossOrigin(String),
    NotJson,
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let (status, error) = match self {
            Rejection::BadHost(h) => (
                StatusCode::FORBIDDEN,
                format!(
                    "this API does not answer to Host \"{h}\" (add it to daemon.api_hosts if it is a name of this daemon)"
                ),
            ),
            Rejection::CrossOrigin(o) => (
                StatusCode::FORBIDDEN,
                format!("cross-site request refused (Origin {o})"),
            ),
            Rejection::NotJson => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "mutating calls need Content-Type: application/json".to_string(),
            ),
        };
        (status, Json(wire::ErrorBody { error })).into_response()
    }
}

/// The header checks, pure: `Ok` when the request may go on to its handler.
pub fn check(
    hosts: &Hosts,
    method: &Method,
    headers: &HeaderMap,
    uri_authority: Option<&str>,
) -> Result<(), Rejection> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or(uri_authority);
    match host {
        Some(h) if hosts.allows(host_part(h)) => {}
        Some(h) => return Err(Rejection::BadHost(h.chars().take(100).collect())),
        None => return Err(Rejection::BadHost(String::new())),
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let o = origin.to_str().unwrap_or("(not text)");
        let same = o
            .split_once("://")
            .map(|(scheme, rest)| hosts.same_origin(scheme, rest.trim_end_matches('/')))
            .unwrap_or(false);
        if !same {
            return Err(Rejection::CrossOrigin(o.chars().take(100).collect()));
        }
    }
    if headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) == Some("cross-site") {
        return Err(Rejection::CrossOrigin("sec-fetch-site: cross-site".into()));
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
        .unwrap_or(false);
    if !json {
        return Err(Rejection::NotJson);
    }
    Ok(())
}

/// The axum middleware around every route.
pub async fn layer(State(api): State<super::ApiState>, req: Request, next: Next) -> Response {
    if let Err(r) = check(
        &api.hosts,
        req.method(),
        req.headers(),
        req.uri().authority().map(|a| a.as_str()),
    ) {
        let reason = match &r {
            Rejection::BadHost(_) => "host",
            Rejection::CrossOrigin(_) => "origin",
            Rejection::NotJson => "content_type",
        };
        api.daemon.metrics.api_refused.get_or_create(&crate::metrics::RefusedLabels { reason: reason.into() }).inc();
        return r.into_response();
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            Json(wire::ErrorBody {
                error: "request took too long".into(),
            }),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(addr: &str, extra: &[&str]) -> Hosts {
        Hosts {
            addr: addr.parse().unwrap(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn host_part_strips_ports_only() {
        assert_eq!(host_part("127.0.0.1:9190"), "127.0.0.1");
        assert_eq!(host_part("[::1]:9190"), "[::1]");
        assert_eq!(host_part("::1"), "::1");
        assert_eq!(host_part("example.net"), "example.net");
    }

    #[test]
    fn the_api_answers_to_its_own_names_only() {
        let h = hosts("127.0.0.1:9190", &[]);
        assert!(h.allows("127.0.0.1") && h.allows("localhost") && h.allows("LOCALHOST."));
        assert!(
            !h.allows("evil.example")
                && !h.allows("127.0.0.2")
                && !h.allows("localhost.evil.example")
        );
        let h = hosts("0.0.0.0:9190", &["understudy.example.net"]);
        assert!(h.allows("198.18.0.5") && h.allows("understudy.example.net"));
        assert!(
            !h.allows("localhost"),
            "localhost is not a name of a non-loopback listener"
        );
        assert!(!h.allows("evil.example"));
        let h = hosts("[::1]:9190", &[]);
        assert!(h.allows("[::1]") && h.allows("localhost") && !h.allows("127.0.0.1"));
    }

    #[test]
    fn the_issue_reproduction_is_refused_and_the_cli_is_not() {
        let h = hosts("127.0.0.1:9190", &[]);
        let post = Method::POST;
        let form = headers(&[
            ("host", "127.0.0.1:9190"),
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", "http://evil.example"),
        ]);
        assert!(matches!(
            check(&h, &post, &form, None),
            Err(Rejection::CrossOrigin(_))
        ));
        let rebind = headers(&[
            ("host", "evil.example:9190"),
            ("content-type", "application/json"),
        ]);
        assert!(matches!(
            check(&h, &post, &rebind, None),
            Err(Rejection::BadHost(_))
        ));
        assert!(
            matches!(
                check(&h, &Method::GET, &rebind, None),
                Err(Rejection::BadHost(_))
            ),
            "reads too"
        );
        let form_no_origin = headers(&[("host", "127.0.0.1:9190"), ("content-type", "text/plain")]);
        assert_eq!(
            check(&h, &post, &form_no_origin, None),
            Err(Rejection::NotJson)
        );
        let cli = headers(&[
            ("host", "127.0.0.1:9190"),
            ("content-type", "application/json"),
        ]);
        assert_eq!(check(&h, &post, &cli, None), Ok(()));
        let same_origin = headers(&[
            ("host", "localhost:9190"),
            ("content-type", "application/json; charset=utf-8"),
            ("origin", "http://localhost:9190"),
        ]);
        assert_eq!(check(&h, &post, &same_origin, None), Ok(()));
        let other_port = headers(&[("host", "127.0.0.1:9190"), ("content-type", "application/json"), ("origin", "http://localhost:3000")]);
        assert!(matches!(check(&h, &post, &other_port, None), Err(Rejection::CrossOrigin(_))), "another port is another origin");
        let null_origin = headers(&[
            ("host", "127.0.0.1:9190"),
            ("content-type", "application/json"),
            ("origin", "null"),
        ]);
        assert!(check(&h, &post, &null_origin, None).is_err());
        assert!(
            matches!(
                check(&h, &Method::GET, &HeaderMap::new(), None),
                Err(Rejection::BadHost(_))
            ),
            "no Host at all"
        );
        assert_eq!(
            check(&h, &Method::GET, &HeaderMap::new(), Some("127.0.0.1:9190")),
            Ok(())
        );
    }
}
