//! HTTP and HTTPS probe: one request, compare the status (and optionally the body).
//!
//! By default every check opens a fresh connection to the exact check address (no connection
//! pool, like HAProxy), so a listener that died is noticed on the next check rather than hidden
//! behind a kept-alive connection. `keep_alive = true` keeps one idle connection per probe and
//! reuses it while the target allows it (it reads the rest of the body, up to 64 KiB, so the
//! connection can be reused): no handshake per check, at the price of testing the listener's
//! accept path only when the target closes the connection. The configured `host` is used for the
//! URL, the `Host` header and TLS SNI, but it is never looked up in DNS: the client resolves it to
//! the check address.
//!
//! HTTPS checks resume TLS sessions: each probe's client keeps its own small session cache, so
//! the second and later checks of a target skip the certificate exchange and its verification
//! (a full handshake only when the target has forgotten the session). Verifying probes share one
//! certificate verifier (`shared_verifying_tls`) but not one session cache: rustls' default cache
//! holds 256 server names, and a shared one would evict every session before its next use once
//! more than 256 targets are checked in turn.
//!
//! It must not follow redirects (a 301 is a status to compare), use a proxy from the
//! environment, read more than 64 KiB of body, panic on bad input, or decide health.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Method, Url};

use super::tcp::io_reason;
use super::{CheckFuture, Probe, ProbeError, Verdict};
use crate::config::{HttpCheck, StatusRange};

/// The most body we read when looking for `body_contains` (or draining it for keep-alive).
pub const MAX_BODY: usize = 64 * 1024;

/// Kept for callers that still name it here; it lives in `crate::crypto`.
pub use crate::crypto::install_provider as install_crypto_provider;

/// Server names in one probe's TLS session cache: a probe talks to one target, so one name; two
/// leave room for a `host` that changed on reload.
const SESSIONS_PER_PROBE: usize = 2;

/// The TLS settings every verifying https probe shares: the platform's trust store behind one
/// verifier, loaded once per process instead of once per probe.
fn shared_verifying_tls() -> Result<rustls::ClientConfig, String> {
    static CONFIG: std::sync::OnceLock<Result<rustls::ClientConfig, String>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let verifier = rustls_platform_verifier::Verifier::new(provider.clone()).map_err(|e| format!("cannot load the system trust store: {e}"))?;
            let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
                .with_no_client_auth();
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(cfg)
        })
        .clone()
}

/// One HTTP(S) check bound to one address.
#[derive(Debug)]
pub struct HttpProbe {
    client: Client,
    method: Method,
    /// The request URL, or why none can be built (reported by every check).
    url: Result<Url, String>,
    /// Headers from the config, or why they cannot be sent (reported by every check).
    headers: Result<HeaderMap, String>,
    expect_status: Vec<StatusRange>,
    body_contains: Option<String>,
    timeout: Duration,
    addr: SocketAddr,
    keep_alive: bool,
}

impl HttpProbe {
    pub fn new(check: &HttpCheck, addr: SocketAddr, timeout: Duration) -> Result<HttpProbe, ProbeError> {
        install_crypto_provider();
        let scheme = if check.tls { "https" } else { "http" };
        let path = if check.path.starts_with('/') { check.path.clone() } else { format!("/{}", check.path) };
        let host = check.host.as_deref().map(str::trim).filter(|h| !h.is_empty());
        let what = || format!("{scheme}://{addr}{path}");

        let mut builder = Client::builder()
            .pool_max_idle_per_host(if check.keep_alive { 1 } else { 0 })
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .tls_danger_accept_invalid_certs(!check.tls_verify);
        if check.tls && check.tls_verify {
            match shared_verifying_tls() {
                Ok(mut tls) => {
                    // The verifier stays shared (an Arc in the clone); the session cache is ours.
                    tls.resumption = rustls::client::Resumption::in_memory_sessions(SESSIONS_PER_PROBE);
                    builder = builder.tls_backend_preconfigured(tls);
                }
                Err(e) => return Err(ProbeError::Tls { what: format!("{scheme}://{addr}{path}"), reason: e }),
            }
        }
        let mut extra_host: Option<String> = None;

        // With a host name, the URL names it, so `Host` and SNI carry it, and `resolve` pins the
        // connection to `addr` (no DNS lookup ever happens). The URL has no port, so the pinned
        // address' port is used; a port written in `host` is dropped for the same reason.
        // Without a host name (none, an IP literal, or something the URL parser refuses) the URL
        // names `addr` and a configured host goes out as the Host header only.
        let named = host.and_then(|h| Url::parse(&format!("{scheme}://{h}{path}")).ok()).and_then(|mut url| {
            let domain = url.domain()?.to_string();
            url.set_port(None).ok()?;
            Some((url, domain))
        });
        let url = match named {
            Some((url, domain)) => {
                builder = builder.resolve(&domain, addr);
                Ok(url)
            }
            None => {
                extra_host = host.map(str::to_string);
                let by_addr = format!("{scheme}://{addr}{path}");
                Url::parse(&by_addr).map_err(|e| format!("invalid URL {by_addr:?}: {e}"))
            }
        };
        let client = builder.build().map_err(|source| ProbeError::HttpClient { what: what(), source })?;
        let method = Method::from_bytes(check.method.to_ascii_uppercase().as_bytes()).unwrap_or(Method::GET);
        let mut headers = build_headers(&check.headers);
        if let (Some(h), Ok(map)) = (extra_host, headers.as_mut()) {
            match HeaderValue::from_str(&h) {
                Ok(v) => {
                    map.insert(reqwest::header::HOST, v);
                }
                Err(_) => headers = Err(format!("invalid host {h:?}")),
            }
        }
        let expect_status = if check.expect_status.is_empty() {
            vec![StatusRange { lo: 200, hi: 399 }]
        } else {
            check.expect_status.clone()
        };
        Ok(HttpProbe {
            client,
            method,
            url,
            headers,
            expect_status,
            body_contains: check.body_contains.clone(),
            timeout,
            addr,
            keep_alive: check.keep_alive,
        })
    }

    async fn run(&self) -> Verdict {
        let (url, headers) = match (&self.url, &self.headers) {
            (Ok(u), Ok(h)) => (u.clone(), h.clone()),
            (Err(why), _) | (_, Err(why)) => return Verdict::fail(why.clone()),
        };
        let response = match self.client.request(self.method.clone(), url).headers(headers).send().await {
            Ok(r) => r,
            Err(e) => return self.error_verdict(&e),
        };
        let status = response.status().as_u16();
        if !self.expect_status.iter().any(|r| r.contains(status)) {
            let expected: Vec<String> = self.expect_status.iter().map(|r| r.to_string()).collect();
            return Verdict::fail(format!("HTTP {status} (expected {})", expected.join(", ")));
        }
        if let Some(needle) = &self.body_contains {
            let body = match read_capped(response, MAX_BODY).await {
                Ok(b) => b,
                Err(e) => return Verdict::fail(format!("HTTP {status}, reading body: {}", self.error_reason(&e))),
            };
            if !contains(&body, needle.as_bytes()) {
                return Verdict::fail(format!("body does not contain {needle:?}"));
            }
        } else if self.keep_alive {
            // A connection goes back to the pool only once its body has been read to the end.
            // The status has answered the check; a body that breaks off only costs the reuse.
            let _ = read_capped(response, MAX_BODY).await;
        }
        Verdict::pass(format!("HTTP {status}"))
    }

    /// A failed request: a checker error when the monitor could not make it (`checker.rs`),
    /// otherwise a failure with [`Self::error_reason`].
    fn error_verdict(&self, e: &reqwest::Error) -> Verdict {
        let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
        while let Some(err) = source {
            if let Some(io) = err.downcast_ref::<std::io::Error>()
                && let Some(why) = super::checker::monitor_fault(io, self.addr)
            {
                return Verdict::checker_error(why);
            }
            source = err.source();
        }
        Verdict::fail(self.error_reason(e))
    }

    /// A short reason for a failed request: the I/O error when there is one (`connection
    /// refused`), otherwise the error's source chain without reqwest's own "error sending request
    /// for url (...)" wrapper.
    fn error_reason(&self, e: &reqwest::Error) -> String {
        if e.is_timeout() {
            return format!("timed out after {:?}", self.timeout);
        }
        let mut chain: Vec<String> = Vec::new();
        let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
        let mut io_error: Option<&std::io::Error> = None;
        let mut tls = false;
        while let Some(err) = source {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                // Only a plain OS error (refused, reset, unreachable) is summarised; an io::Error
                // that wraps a TLS error keeps its chain.
                if io.raw_os_error().is_some() {
                    io_error = Some(io);
                }
            }
            if is_tls_error(err) {
                tls = true;
            }
            let text = err.to_string();
            // hyper-util's "client error (Connect)" says nothing; other layers repeat each other.
            let noise = text.is_empty() || text.starts_with("client error (");
            if !noise && !chain.iter().any(|c| c == &text || c.contains(&text)) {
                chain.push(text);
            }
            source = err.source();
        }
        if let Some(io) = io_error {
            return io_reason(io);
        }
        let mut out = if chain.is_empty() { e.to_string() } else { chain.join(": ") };
        if tls {
            out = format!("TLS: {out}");
        }
        if out.len() > 300 {
            let mut cut = 300;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push('…');
        }
        out
    }
}

impl Probe for HttpProbe {
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(self.run())
    }

    fn hedge(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        match &self.url {
            Ok(url) if url.domain().is_some() => {
                format!("{url} via {}", self.addr)
            }
            Ok(url) => url.to_string(),
            Err(_) => format!("http(s)://{} (invalid URL)", self.addr),
        }
    }
}

/// Whether `err` is a rustls error, possibly inside (nested) `io::Error`s, whose `source()`
/// skips the error they wrap.
fn is_tls_error(mut err: &(dyn std::error::Error + 'static)) -> bool {
    loop {
        if err.is::<rustls::Error>() {
            return true;
        }
        match err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => err = inner,
            None => return false,
        }
    }
}

fn build_headers(pairs: &[(String, String)]) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        let name_h =
            HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| format!("invalid header name {name:?}"))?;
        let value_h = HeaderValue::from_str(value).map_err(|_| format!("invalid value for header {name:?}"))?;
        map.append(name_h, value_h);
    }
    Ok(map)
}

/// Read at most `cap` bytes of body; the rest is left unread (then the connection is not reused).
async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while body.len() < cap {
        match response.chunk().await? {
            Some(chunk) => {
                let room = cap - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            None => break,
        }
    }
    Ok(body)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check() -> HttpCheck {
        HttpCheck {
            tls: false,
            port: 80,
            path: "/health".into(),
            method: "GET".into(),
            host: None,
            headers: vec![],
            expect_status: vec![StatusRange { lo: 200, hi: 399 }],
            body_contains: None,
            tls_verify: true,
            keep_alive: false,
        }
    }

    fn addr() -> SocketAddr {
        "127.0.0.2:8080".parse().expect("addr")
    }

    #[test]
    fn url_uses_the_address_without_a_host() {
        let p = HttpProbe::new(&check(), addr(), Duration::from_millis(500)).expect("probe");
        assert_eq!(p.describe(), "http://127.0.0.2:8080/health");
    }

    #[test]
    fn url_uses_the_host_and_pins_the_address() {
        let mut c = check();
        c.tls = true;
        c.host = Some("health.example.test".into());
        let p = HttpProbe::new(&c, addr(), Duration::from_millis(500)).expect("probe");
        assert_eq!(p.describe(), "https://health.example.test/health via 127.0.0.2:8080");
    }

    #[test]
    fn a_port_in_host_is_not_used_for_connecting() {
        let mut c = check();
        c.host = Some("Health.Example.Test:9999".into());
        let p = HttpProbe::new(&c, addr(), Duration::from_millis(500)).expect("probe");
        assert_eq!(p.describe(), "http://health.example.test/health via 127.0.0.2:8080");
    }

    #[test]
    fn an_ip_literal_host_connects_by_address() {
        let mut c = check();
        c.host = Some("192.0.2.1".into());
        let p = HttpProbe::new(&c, addr(), Duration::from_millis(500)).expect("probe");
        assert_eq!(p.describe(), "http://127.0.0.2:8080/health");
        assert_eq!(p.headers.as_ref().ok().and_then(|h| h.get("host")).map(|v| v.as_bytes()), Some(&b"192.0.2.1"[..]));
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let p =
            HttpProbe::new(&check(), "[::1]:8080".parse().expect("addr"), Duration::from_millis(500)).expect("probe");
        assert_eq!(p.describe(), "http://[::1]:8080/health");
    }

    #[test]
    fn bad_headers_do_not_panic_and_fail_every_check() {
        let mut c = check();
        c.headers = vec![("bad name".into(), "x".into())];
        let p = HttpProbe::new(&c, addr(), Duration::from_millis(500)).expect("probe");
        let v = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt").block_on(p.check());
        assert_eq!(v, Verdict::fail("invalid header name \"bad name\""));
    }

    #[test]
    fn building_twice_installs_the_provider_once_without_panicking() {
        install_crypto_provider();
        install_crypto_provider();
        let mut c = check();
        c.tls = true;
        c.tls_verify = false;
        HttpProbe::new(&c, addr(), Duration::from_secs(1)).expect("probe");
    }

    #[test]
    fn substring_search() {
        assert!(contains(b"status: ok\n", b"ok"));
        assert!(!contains(b"status: degraded", b"ok"));
        assert!(contains(b"", b""));
        assert!(!contains(b"o", b"ok"));
    }
}
