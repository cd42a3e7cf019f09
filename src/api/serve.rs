//! Serving the router: the accept loop, with optional TLS, a connection cap and timeouts.
//!
//! Each accepted connection gets its own task: the TLS handshake (bounded by
//! [`HANDSHAKE_TIMEOUT`]) and HTTP/1.1 with a header read timeout, so a slow or silent client
//! holds one slot for a bounded time and never delays another. At [`MAX_CONNECTIONS`] open
//! connections a new one is closed at once (and counted), so no flood can exhaust the daemon's
//! file descriptors, which the probes need. Request bodies are capped at [`BODY_LIMIT`] and
//! every request at `guard::REQUEST_TIMEOUT`.
//!
//! On cancellation the loop stops accepting and open connections finish their request in
//! progress. Nothing here looks at a request's content.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Most API connections open at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Longest a client may take to send a request's headers (also bounds an idle keep-alive).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request body (a drill report is the largest thing clients send).
pub const BODY_LIMIT: usize = 1 << 20;

/// Serve `app` on `listener` until `cancel`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let app = app.layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; the listener stays.
                    tracing::warn!("API accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics.api_connections_refused.inc();
            tracing::debug!(%peer, "API connection cap ({MAX_CONNECTIONS}) reached; closing the new connection");
            drop(stream);
            continue;
        };
        let (app, acceptor, cancel) = (app.clone(), acceptor.clone(), cancel.clone());
        connections.spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            match acceptor {
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => connection(TokioIo::new(tls), app, cancel).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "API TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "API TLS handshake timed out"),
                    }
                }
                None => connection(TokioIo::new(stream), app, cancel).await,
            }
        });
    }
    connections.close();
    connections.wait().await;
}

async fn connection<I>(io: TokioIo<I>, app: Router, cancel: CancellationToken)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r { tracing::debug!("API connection ended: {e}") },
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}
