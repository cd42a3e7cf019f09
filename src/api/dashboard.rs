//! The web dashboard: three static files from `assets/dashboard/`, compiled into the binary
//! and served on the API's own listener (`/`, `/dashboard/app.js`, `/dashboard/style.css`).
//!
//! The page is a client of the JSON API like the CLI: it reads `/api/v1/services`,
//! `/incidents`, `/drills` and `/events`, follows `/api/v1/events/stream` (Server-Sent Events,
//! see [`super::sse`]) and sends actions as JSON POSTs with the bearer token the operator
//! pastes into it (kept in the tab's `sessionStorage`). So it passes the same guard as any
//! client: the `Host` check on every request, JSON and same-origin on every mutation, the token
//! in the handler.
//!
//! It must not: render anything on the server (no templating, no state in these handlers),
//! embed the token or any other secret in what it serves, or load anything from another origin
//! (the `Content-Security-Policy` below allows only this origin, so an injected script or a
//! stray CDN link would not run either).

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One embedded file.
struct Asset {
    body: &'static str,
    content_type: &'static str,
}

const INDEX: Asset = Asset { body: include_str!("../../assets/dashboard/index.html"), content_type: "text/html; charset=utf-8" };
const APP_JS: Asset = Asset { body: include_str!("../../assets/dashboard/app.js"), content_type: "text/javascript; charset=utf-8" };
const STYLE: Asset = Asset { body: include_str!("../../assets/dashboard/style.css"), content_type: "text/css; charset=utf-8" };

/// Scripts, styles, requests and images from this origin only; no framing (clickjacking of the
/// action buttons); inline SVG sparklines are elements, not images, so they need nothing more.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Total bytes of the page's files (index, script, style): what a first load transfers.
pub fn page_weight() -> usize {
    INDEX.body.len() + APP_JS.body.len() + STYLE.body.len()
}

/// `GET /`: the page.
pub async fn index(headers: HeaderMap) -> Response {
    serve(&INDEX, 0, &headers)
}

/// `GET /dashboard/{file}`: its script and style.
pub async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match name.as_str() {
        "app.js" => serve(&APP_JS, 1, &headers),
        "style.css" => serve(&STYLE, 2, &headers),
        _ => (StatusCode::NOT_FOUND, axum::Json(super::wire::ErrorBody { error: format!("no dashboard file named {:?}", name.chars().take(60).collect::<String>()) })).into_response(),
    }
}

/// A strong validator per file, computed once: the browser revalidates (`no-cache`) and gets a
/// 304 without the body when nothing changed, and never keeps a page from an older binary.
fn etag(slot: usize, body: &str) -> &'static str {
    static TAGS: [OnceLock<String>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    TAGS[slot].get_or_init(|| {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(body.as_bytes());
        let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
        format!("\"{hex}\"")
    })
}

fn serve(asset: &Asset, slot: usize, headers: &HeaderMap) -> Response {
    let tag = etag(slot, asset.body);
    let fresh = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut resp = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { asset.body.into_response() };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(header::ETAG, HeaderValue::from_static(tag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_small_and_self_contained() {
        assert!(page_weight() < 200 * 1024, "dashboard weighs {} bytes", page_weight());
        for (name, body) in [("index.html", INDEX.body), ("app.js", APP_JS.body), ("style.css", STYLE.body)] {
            // Nothing from another origin: no absolute URLs to fetch, no web fonts. (The SVG
            // namespace is a name, not a fetch.)
            let body = body.replace("http://www.w3.org/2000/svg", "");
            for needle in ["http://", "https://", "//cdn", "@import", "@font-face"] {
                assert!(!body.contains(needle), "{name} refers to {needle}");
            }
        }
        assert!(INDEX.body.contains("/dashboard/app.js") && INDEX.body.contains("/dashboard/style.css"));
    }

    #[test]
    fn etags_differ_per_file_and_match_on_revalidation() {
        let a = etag(0, INDEX.body);
        let b = etag(1, APP_JS.body);
        assert_ne!(a, b);
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static(a));
        assert_eq!(serve(&INDEX, 0, &h).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(serve(&INDEX, 0, &HeaderMap::new()).status(), StatusCode::OK);
    }
}
