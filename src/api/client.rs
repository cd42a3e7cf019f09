//! A client for the daemon's API, used by the CLI and by drills (which also run inside the
//! daemon for scheduled drills, talking to its own API like any other client).
//!
//! Finding the daemon and its token without the operator's help: the config file is `-c`,
//! else `$UNDERSTUDY_CONFIG`, else `./understudy.toml`, else `/etc/understudy/understudy.toml`
//! (only its `[daemon]` section is read, so a secret the CLI's environment lacks does not stop
//! it). The token is, first to last: given in-process, `$UNDERSTUDY_TOKEN`, `--token-file`,
//! the config's `api_token_file`, then `data_dir/api-token` (the one the daemon generates). A
//! token that cannot be read does not stop reads; a refused mutation says why.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use reqwest::StatusCode;

use super::wire;

/// Where a daemon is and how to authenticate.
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    /// Base URL (`http://127.0.0.1:9190`); scheme optional.
    pub api: Option<String>,
    /// A config file to take `daemon.api`, the token and the TLS certificate from.
    pub config: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    /// A token given directly (in-process, or `$UNDERSTUDY_TOKEN`).
    pub token: Option<String>,
    /// Trust the certificates in this PEM file for an https API (default: the config's
    /// `api_tls_cert`).
    pub ca_file: Option<PathBuf>,
}

/// What the client needs from a config file's `[daemon]` section.
#[derive(Debug, Default)]
struct DaemonSide {
    api: Option<String>,
    token_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
}

/// Config files tried, in order, when none is named.
const DISCOVERED: [&str; 2] = ["understudy.toml", "/etc/understudy/understudy.toml"];

fn daemon_side(path: &Path) -> Result<DaemonSide> {
    #[derive(serde::Deserialize)]
    struct Partial {
        #[serde(default)]
        daemon: crate::config::raw::RawDaemon,
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    let p: Partial = toml::from_str(&text)
        .with_context(|| format!("config {}: [daemon] section", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let rel = |f: &str| {
        let f = Path::new(f);
        if f.is_absolute() {
            f.to_owned()
        } else {
            base.join(f)
        }
    };
    let d = p.daemon;
    let scheme = if d.api_tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    // `data_dir` is relative to the working directory, as for the daemon itself.
    let token_file = d
        .api_token_file
        .as_deref()
        .map(rel)
        .unwrap_or_else(|| super::token::default_path(Path::new(&d.data_dir)));
    Ok(DaemonSide {
        api: Some(format!("{scheme}://{}", d.api)),
        token_file: Some(token_file),
        tls_cert: d.api_tls_cert.as_deref().map(rel),
    })
}

pub struct Client {
    base: String,
    token: Option<String>,
    /// Why there is no token, for the message when a mutation is refused.
    no_token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(t: &Endpoint) -> Result<Client> {
        crate::crypto::install_provider();
        let config = t
            .config
            .clone()
            .or_else(|| std::env::var_os("UNDERSTUDY_CONFIG").map(PathBuf::from));
        let side = match &config {
            Some(path) => daemon_side(path)?,
            None => match DISCOVERED.iter().map(Path::new).find(|p| p.is_file()) {
                Some(found) => daemon_side(found).with_context(|| {
                    format!(
                        "{} was found and read; pass -c to use another config",
                        found.display()
                    )
                })?,
                None => daemon_side_defaults(),
            },
        };
        let base = t
            .api
            .clone()
            .or(side.api)
            .unwrap_or_else(|| format!("http://{}", crate::config::raw::default_api()));
        let base = if base.contains("://") {
            base
        } else {
            format!("http://{base}")
        };
        let (token, no_token) = match (&t.token, t.token_file.as_ref().or(side.token_file.as_ref()))
        {
            (Some(tok), _) => (Some(tok.clone()), None),
            (None, Some(f)) => match crate::config::read_secret_file(f) {
                Ok(s) => (Some(s), None),
                Err(e) => (None, Some(format!("token file: {e}"))),
            },
            (None, None) => (None, Some("no token file".to_string())),
        };
        if t.token_file.is_some()
            && let Some(why) = &no_token
        {
            bail!("{why}");
        }
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30));
        if let Some(ca) = t
            .ca_file
            .as_ref()
            .or(side.tls_cert.as_ref())
            .filter(|_| base.starts_with("https://"))
        {
            builder = builder.tls_backend_preconfigured(trusting(ca)?);
        }
        let http = builder.build().context("cannot build HTTP client")?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            no_token,
            http,
        })
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await.with_context(|| {
            format!(
                "cannot reach the understudy API at {} (is the daemon running?)",
                self.base
            )
        })?;
        let status = resp.status();
        let body = resp.bytes().await.context("reading the API response")?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<wire::ErrorBody>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            if status == StatusCode::UNAUTHORIZED {
                let why = self
                    .no_token
                    .as_deref()
                    .map(|w| format!("{w}; "))
                    .unwrap_or_default();
                bail!(
                    "{msg} ({why}run as a user who can read the daemon's data_dir/api-token, pass -c with the daemon's config, --token-file, or set UNDERSTUDY_TOKEN)"
                );
            }
            bail!("{msg} (HTTP {})", status.as_u16());
        }
        serde_json::from_slice(&body)
            .with_context(|| format!("unexpected API response from {}", self.base))
    }

    pub async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// A mutating call; the body is always JSON (`{}` when there is nothing to say), which the
    /// API requires of every mutation.
    pub async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T> {
        let body = body.unwrap_or_else(|| serde_json::json!({}));
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }
}

/// The defaults of an absent config: `./understudy-data/api-token`, the default address.
fn daemon_side_defaults() -> DaemonSide {
    let data_dir = crate::config::raw::default_data_dir();
    DaemonSide {
        api: None,
        token_file: Some(super::token::default_path(Path::new(&data_dir))),
        tls_cert: None,
    }
}

/// A TLS client config trusting exactly the certificates in `ca` (the daemon's own).
fn trusting(ca: &Path) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("cannot read certificate {}", ca.display()))?
    {
        roots
            .add(cert.with_context(|| format!("certificate {} is not valid PEM", ca.display()))?)
            .with_context(|| format!("certificate {}", ca.display()))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
