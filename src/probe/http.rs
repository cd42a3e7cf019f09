//! HTTP and HTTPS probe: one request, compare the status (and optionally the body).
//!
//! By default every check opens a fresh connection to the exact check address (no connection
//! pool, like HAProxy), so a listener that died is noticed on the next check rather than hidden
//! behind a kept-alive connection. Such a check asks for `Connection: close` and, once it has its
//! answer, closes with a reset (`SO_LINGER` 0, as the TCP check does): neither side keeps a
//! TIME_WAIT socket per check. `keep_alive = true` keeps one idle connection per probe and
//! reuses it while the target allows it (it reads the rest of the body, up to 64 KiB, so the
//! connection can be reused): no handshake per check, at the price of testing the listener's
//! accept path only when the target closes the connection. The configured `host` is used for the
//! `Host` header and TLS SNI, but it is never looked up in DNS: the check connects to the check
//! address.
//!
//! The request goes through hyper's HTTP/1.1 client connection directly, over a socket and TLS
//! stream the probe opens itself: no client pool, no connector stack, no per-request URL or
//! header map to build. Through reqwest a check cost about twice HAProxy's CPU (issue 17); most
//! of it was the client's own machinery and its system calls (six `setsockopt`, `getpeername`,
//! `getsockname`, `fcntl` per check).
//!
//! HTTPS checks resume TLS sessions: each probe keeps its own small session cache, so the second
//! and later checks of a target skip the certificate exchange and its verification (a full
//! handshake only when the target has forgotten the session). Verifying probes share one
//! certificate verifier (`shared_verifying_tls`) but not one session cache: rustls' default cache
//! holds 256 server names, and a shared one would evict every session before its next use once
//! more than 256 targets are checked in turn.
//!
//! It must not follow redirects (a 301 is a status to compare), use a proxy, read more than 64
//! KiB of body, panic on bad input, or decide health. The timeout is its caller's (the
//! scheduler, the agent): a check is a future they drop when it expires.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Body as _;
use hyper::client::conn::http1;
use hyper::header::{CONNECTION, HOST, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use reqwest::Url;
use rustls::pki_types::ServerName;

use super::tcp::io_reason;
use super::{CheckFuture, Probe, ProbeError, Reason, Verdict};
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
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = rustls_platform_verifier::Verifier::new(provider.clone()).map_err(|e| format!("cannot load the system trust store: {e}"))?;
            client_tls(provider, Arc::new(verifier))
        })
        .clone()
}

/// TLS for `tls_verify = false`: any certificate is accepted, but the handshake's signatures are
/// still checked (the peer holds the key of the certificate it sent).
fn unverified_tls() -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    client_tls(provider.clone(), Arc::new(AnyCertificate(provider)))
}

/// A client config offering HTTP/1.1 over `provider`, with `verifier` judging the certificate.
fn client_tls(provider: Arc<rustls::crypto::CryptoProvider>, verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>) -> Result<rustls::ClientConfig, String> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One HTTP(S) check bound to one address.
pub struct HttpProbe {
    method: Method,
    /// What every request carries, or why none can be sent (reported by every check).
    request: Result<Parts, String>,
    /// For https: the connector (this probe's own session cache) and the name sent as SNI and
    /// verified (the configured host name, or the address).
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    expect_status: Vec<StatusRange>,
    body_contains: Option<String>,
    addr: SocketAddr,
    keep_alive: bool,
    /// With `keep_alive`: the connection left open by the last check.
    idle: Mutex<Option<http1::SendRequest<Empty<Bytes>>>>,
    describe: String,
}

impl std::fmt::Debug for HttpProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpProbe").field("check", &self.describe).field("keep_alive", &self.keep_alive).finish()
    }
}

/// The validated parts of the request.
struct Parts {
    /// The request target (path and query).
    target: Uri,
    /// The `Host` header: the configured host, or the check address.
    host: HeaderValue,
    /// Headers from the config.
    headers: HeaderMap,
}

/// A check's answer: its verdict, and whether the connection may carry the next check.
struct Exchange {
    verdict: Verdict,
    reusable: bool,
}

impl HttpProbe {
    pub fn new(check: &HttpCheck, addr: SocketAddr) -> Result<HttpProbe, ProbeError> {
        install_crypto_provider();
        let scheme = if check.tls { "https" } else { "http" };
        let path = if check.path.starts_with('/') { check.path.clone() } else { format!("/{}", check.path) };
        let host = check.host.as_deref().map(str::trim).filter(|h| !h.is_empty());

        // With a host name, `Host` and SNI carry it (lower-cased, without a port: the connection
        // goes to `addr` whatever the name says). Without one (none, an IP literal, or
        // something the URL parser refuses) the address is the URL's host and SNI (no SNI is
        // sent for an address), and a configured host goes out as the `Host` header only.
        let named = host.and_then(|h| Url::parse(&format!("{scheme}://{h}{path}")).ok()).and_then(|mut url| {
            let domain = url.domain()?.to_string();
            url.set_port(None).ok()?;
            Some((url, domain))
        });
        let (url, host_header, sni) = match named {
            Some((url, domain)) => {
                let sni = ServerName::try_from(domain.clone()).ok();
                (Ok(url), HeaderValue::from_str(&domain).map_err(|_| format!("invalid host {domain:?}")), sni)
            }
            None => {
                let by_addr = format!("{scheme}://{addr}{path}");
                let url = Url::parse(&by_addr).map_err(|e| format!("invalid URL {by_addr:?}: {e}"));
                // As a client writes it: the port only when it is not the scheme's default.
                let authority = match (&url, host) {
                    (_, Some(h)) => h.to_string(),
                    (Ok(u), None) => match (u.host_str(), u.port()) {
                        (Some(h), Some(p)) => format!("{h}:{p}"),
                        (Some(h), None) => h.to_string(),
                        (None, _) => addr.to_string(),
                    },
                    (Err(_), None) => addr.to_string(),
                };
                (url, HeaderValue::from_str(&authority).map_err(|_| format!("invalid host {authority:?}")), Some(ServerName::IpAddress(addr.ip().into())))
            }
        };
        let describe = match &url {
            Ok(url) if url.domain().is_some() => format!("{url} via {addr}"),
            Ok(url) => url.to_string(),
            Err(_) => format!("{scheme}://{addr} (invalid URL)"),
        };
        let target = url.and_then(|u| {
            let pq = match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_string(),
            };
            pq.parse::<Uri>().map_err(|e| format!("invalid path {pq:?}: {e}"))
        });
        let tls = if check.tls {
            let mut cfg = if check.tls_verify { shared_verifying_tls() } else { unverified_tls() }.map_err(|reason| ProbeError::Tls { what: describe.clone(), reason })?;
            // The verifier stays shared (an Arc in the clone); the session cache is this probe's.
            cfg.resumption = rustls::client::Resumption::in_memory_sessions(SESSIONS_PER_PROBE);
            let name = sni.ok_or_else(|| ProbeError::Tls { what: describe.clone(), reason: "no server name to send".into() })?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(cfg)), name))
        } else {
            None
        };
        let method = Method::from_bytes(check.method.to_ascii_uppercase().as_bytes()).unwrap_or(Method::GET);
        let expect_status = if check.expect_status.is_empty() { vec![StatusRange { lo: 200, hi: 399 }] } else { check.expect_status.clone() };
        // The first error in the order a reader meets them: path, host, headers.
        let request = target.and_then(|target| host_header.and_then(|host| build_headers(&check.headers).map(|headers| Parts { target, host, headers })));
        Ok(HttpProbe {
            method,
            request,
            tls,
            expect_status,
            body_contains: check.body_contains.clone(),
            addr,
            keep_alive: check.keep_alive,
            idle: Mutex::new(None),
            describe,
        })
    }

    async fn run(&self) -> Verdict {
        let parts = match &self.request {
            Ok(p) => p,
            Err(why) => return Verdict::fail(why.clone()),
        };
        if self.keep_alive {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(mut sender) = idle
                && sender.ready().await.is_ok()
            {
                match self.exchange(&mut sender, parts).await {
                    Ok(x) => return self.keep(sender, x),
                    // The kept connection went away before it answered (the target closed it
                    // while idle): that says nothing yet, a fresh connection will.
                    Err(e) if e.is_canceled() || e.is_closed() || e.is_incomplete_message() => {}
                    Err(e) => return Verdict::fail(hyper_reason(&e)),
                }
            }
        }
        let tcp = match self.connect().await {
            Ok(s) => s,
            Err(e) => return connect_verdict(&e, self.addr),
        };
        match &self.tls {
            None => self.over(tcp, parts).await,
            Some((connector, name)) => match connector.connect(name.clone(), tcp).await {
                Ok(tls) => self.over(tls, parts).await,
                Err(e) => Verdict::fail(tls_reason(&e)),
            },
        }
    }

    /// A connected socket to the check address. Without keep-alive it closes with a reset once
    /// the check has its answer (the check has read what it needs by then).
    async fn connect(&self) -> std::io::Result<tokio::net::TcpStream> {
        let socket = if self.addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        let stream = socket.connect(self.addr).await?;
        if !self.keep_alive {
            let _ = stream.set_zero_linger();
        }
        Ok(stream)
    }

    /// One request on a fresh connection over `io`.
    async fn over<IO>(&self, io: IO, parts: &Parts) -> Verdict
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = match http1::Builder::new().handshake::<_, Empty<Bytes>>(TokioIo::new(io)).await {
            Ok(pair) => pair,
            Err(e) => return Verdict::fail(hyper_reason(&e)),
        };
        if self.keep_alive {
            // The connection outlives this check: it runs on its own until the target or this
            // probe (dropping the sender) ends it.
            tokio::spawn(async move {
                let _ = conn.await;
            });
            return match self.exchange(&mut sender, parts).await {
                Ok(x) => self.keep(sender, x),
                Err(e) => Verdict::fail(hyper_reason(&e)),
            };
        }
        // The connection is driven beside the exchange until the answer is read; when it ends
        // first (the target closed it), the exchange finishes with what it had received.
        let exchange = self.exchange(&mut sender, parts);
        tokio::pin!(exchange);
        tokio::pin!(conn);
        let result = tokio::select! {
            biased;
            r = &mut exchange => r,
            _ = &mut conn => exchange.await,
        };
        match result {
            Ok(x) => x.verdict,
            Err(e) => Verdict::fail(hyper_reason(&e)),
        }
    }

    /// Keep `sender` for the next check when its connection can carry one.
    fn keep(&self, sender: http1::SendRequest<Empty<Bytes>>, x: Exchange) -> Verdict {
        if x.reusable && !sender.is_closed() {
            *self.idle.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender);
        }
        x.verdict
    }

    /// Send the request, judge the status (and the body).
    async fn exchange(&self, sender: &mut http1::SendRequest<Empty<Bytes>>, parts: &Parts) -> Result<Exchange, hyper::Error> {
        let Parts { target, host, headers } = parts;
        let mut req = Request::new(Empty::<Bytes>::new());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = target.clone();
        let h = req.headers_mut();
        h.insert(HOST, host.clone());
        if !headers.is_empty() {
            // A configured header replaces one of the same name (a configured Host included).
            h.extend(headers.clone());
        }
        if !self.keep_alive {
            h.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        let response = sender.send_request(req).await?;
        let status = response.status().as_u16();
        if !self.expect_status.iter().any(|r| r.contains(status)) {
            let expected: Vec<String> = self.expect_status.iter().map(|r| r.to_string()).collect();
            return Ok(Exchange { verdict: Verdict::fail(format!("HTTP {status} (expected {})", expected.join(", "))), reusable: false });
        }
        let mut reusable = false;
        if let Some(needle) = &self.body_contains {
            let body = match read_capped(response.into_body(), MAX_BODY).await {
                Ok((b, complete)) => {
                    reusable = complete;
                    b
                }
                Err(e) => return Ok(Exchange { verdict: Verdict::fail(format!("HTTP {status}, reading body: {}", hyper_reason(&e))), reusable: false }),
            };
            if !contains(&body, needle.as_bytes()) {
                return Ok(Exchange { verdict: Verdict::fail(format!("body does not contain {needle:?}")), reusable });
            }
        } else if self.keep_alive {
            // A connection can carry the next request only once this body has been read to the
            // end. The status has answered the check; a body that breaks off only costs the reuse.
            reusable = matches!(read_capped(response.into_body(), MAX_BODY).await, Ok((_, true)));
        }
        Ok(Exchange { verdict: Verdict::pass(status_reason(status)), reusable })
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
        self.describe.clone()
    }
}

/// `HTTP 200`, without building a string for the statuses checks usually get.
fn status_reason(status: u16) -> Reason {
    match status {
        200 => "HTTP 200".into(),
        204 => "HTTP 204".into(),
        301 => "HTTP 301".into(),
        302 => "HTTP 302".into(),
        304 => "HTTP 304".into(),
        s => format!("HTTP {s}").into(),
    }
}

/// A connection that could not be opened: a checker error when the monitor could not make it
/// (`checker.rs`), otherwise a failure in the operating system's words.
fn connect_verdict(e: &std::io::Error, addr: SocketAddr) -> Verdict {
    match super::checker::monitor_fault(e, addr) {
        Some(why) => Verdict::checker_error(why),
        None => Verdict::fail(io_reason(e)),
    }
}

/// A failed TLS handshake: `TLS: ` and rustls' words (`invalid peer certificate: UnknownIssuer`),
/// or the I/O error that broke it off.
fn tls_reason(e: &std::io::Error) -> String {
    if e.raw_os_error().is_some() {
        return io_reason(e);
    }
    match e.get_ref() {
        Some(inner) => cap(format!("TLS: {inner}")),
        None => cap(format!("TLS: {e}")),
    }
}

/// A short reason for a failed request: the I/O error when there is one (`connection reset`),
/// otherwise hyper's words and their causes.
fn hyper_reason(e: &hyper::Error) -> String {
    let mut chain = vec![e.to_string()];
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.raw_os_error().is_some()
        {
            return io_reason(io);
        }
        let text = err.to_string();
        if !text.is_empty() && !chain.iter().any(|c| c.contains(&text)) {
            chain.push(text);
        }
        source = err.source();
    }
    cap(chain.join(": "))
}

/// At most 300 bytes of a reason.
fn cap(mut out: String) -> String {
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

fn build_headers(pairs: &[(String, String)]) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        let name_h = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| format!("invalid header name {name:?}"))?;
        let value_h = HeaderValue::from_str(value).map_err(|_| format!("invalid value for header {name:?}"))?;
        map.append(name_h, value_h);
    }
    Ok(map)
}

/// At most `cap` bytes of body, and whether the body ended within them (the rest is left unread;
/// the connection is then not reused).
async fn read_capped(mut body: hyper::body::Incoming, cap: usize) -> Result<(Vec<u8>, bool), hyper::Error> {
    let mut out = Vec::new();
    while out.len() < cap {
        match body.frame().await {
            Some(frame) => {
                if let Ok(data) = frame?.into_data() {
                    let room = cap - out.len();
                    out.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            None => return Ok((out, true)),
        }
    }
    Ok((out, body.is_end_stream()))
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
        let p = HttpProbe::new(&check(), addr()).expect("probe");
        assert_eq!(p.describe(), "http://127.0.0.2:8080/health");
    }

    #[test]
    fn url_uses_the_host_and_pins_the_address() {
        let mut c = check();
        c.tls = true;
        c.host = Some("health.example.test".into());
        let p = HttpProbe::new(&c, addr()).expect("probe");
        assert_eq!(p.describe(), "https://health.example.test/health via 127.0.0.2:8080");
    }

    #[test]
    fn a_port_in_host_is_not_used_for_connecting() {
        let mut c = check();
        c.host = Some("Health.Example.Test:9999".into());
        let p = HttpProbe::new(&c, addr()).expect("probe");
        assert_eq!(p.describe(), "http://health.example.test/health via 127.0.0.2:8080");
    }

    #[test]
    fn an_ip_literal_host_connects_by_address() {
        let mut c = check();
        c.host = Some("192.0.2.1".into());
        let p = HttpProbe::new(&c, addr()).expect("probe");
        assert_eq!(p.describe(), "http://127.0.0.2:8080/health");
        assert_eq!(p.request.as_ref().ok().map(|r| r.host.as_bytes()), Some(&b"192.0.2.1"[..]));
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let p =
            HttpProbe::new(&check(), "[::1]:8080".parse().expect("addr")).expect("probe");
        assert_eq!(p.describe(), "http://[::1]:8080/health");
    }

    #[test]
    fn bad_headers_do_not_panic_and_fail_every_check() {
        let mut c = check();
        c.headers = vec![("bad name".into(), "x".into())];
        let p = HttpProbe::new(&c, addr()).expect("probe");
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
        HttpProbe::new(&c, addr()).expect("probe");
    }

    #[test]
    fn substring_search() {
        assert!(contains(b"status: ok\n", b"ok"));
        assert!(!contains(b"status: degraded", b"ok"));
        assert!(contains(b"", b""));
        assert!(!contains(b"o", b"ok"));
    }
}
