//! Crypto set-up shared by every module: installing rustls' `ring` provider as the process
//! default, and TLS for the API (`daemon.api_tls_cert` / `daemon.api_tls_key`): loading the PEM
//! files into a rustls server config (ring provider).
//!
//! Config validation calls [`server_config`] so a bad certificate or key is a located config
//! error, never a failure at bind time. Errors name the file, never print key material.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use std::path::Path;

/// Install rustls' `ring` crypto provider as the process default, if no provider is installed
/// yet. Building a reqwest client without a provider panics; calling this first never does.
pub fn install_provider() {
    // Err means a provider is already installed (ours or someone else's): both are fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A rustls server config from the PEM certificate chain and private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    struct Files<'a> {
        cert: &'a Path,
        key: &'a Path,
    }
    let tls = Files { cert, key };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(tls.cert)
        .map_err(|e| format!("cannot read certificate {}: {e}", tls.cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate {} is not valid PEM: {e}", tls.cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "certificate {} holds no CERTIFICATE block",
            tls.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(tls.key)
        .map_err(|e| format!("cannot read a private key from {}: {e}", tls.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "certificate {} and key {} do not work together: {e}",
                tls.cert.display(),
                tls.key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
