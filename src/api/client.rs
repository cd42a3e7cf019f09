//! A client for the daemon's API, used by the CLI and by drills (which also run inside the
//! daemon for scheduled drills, talking to its own API like any other client).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use reqwest::StatusCode;

use super::wire;

/// Where a daemon is and how to authenticate.
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    /// Base URL (`http://127.0.0.1:9190`); scheme optional.
    pub api: Option<String>,
    /// A config file to take `daemon.api` and `daemon.api_token_file` from.
    pub config: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    /// A token given directly (used in-process).
    pub token: Option<String>,
}

pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(t: &Endpoint) -> Result<Client> {
        crate::probe::http::install_crypto_provider();
        let mut base = None;
        let mut token_file = t.token_file.clone();
        if let Some(path) = &t.config {
            let (cfg, _) = crate::config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
            base = Some(format!("http://{}", cfg.daemon.api));
            token_file = token_file.or(cfg.daemon.api_token_file);
        }
        let base = t.api.clone().or(base).unwrap_or_else(|| format!("http://{}", crate::config::raw::default_api()));
        let base = if base.contains("://") { base } else { format!("http://{base}") };
        let token = match (&t.token, token_file) {
            (Some(tok), _) => Some(tok.clone()),
            (None, Some(f)) => Some(crate::config::read_secret_file(&f).map_err(|e| anyhow::anyhow!("token file: {e}"))?),
            (None, None) => None,
        };
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().context("cannot build HTTP client")?;
        Ok(Client { base: base.trim_end_matches('/').to_string(), token, http })
    }

    async fn send<T: serde::de::DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await.with_context(|| format!("cannot reach the understudy API at {} (is the daemon running?)", self.base))?;
        let status = resp.status();
        let body = resp.bytes().await.context("reading the API response")?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<wire::ErrorBody>(&body).map(|e| e.error).unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            if status == StatusCode::UNAUTHORIZED {
                bail!("{msg} (pass --token-file, or -c with the daemon's config)");
            }
            bail!("{msg} (HTTP {})", status.as_u16());
        }
        serde_json::from_slice(&body).with_context(|| format!("unexpected API response from {}", self.base))
    }

    pub async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    pub async fn post<T: serde::de::DeserializeOwned>(&self, path: &str, body: Option<serde_json::Value>) -> Result<T> {
        let req = self.http.post(format!("{}{path}", self.base));
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        self.send(req).await
    }
}

