//! TLS material from PEM files (through `rustls-pki-types`) and the rustls
//! configurations built from it. One crypto provider: aws-lc-rs.

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{read_file, ConfigError, TlsFiles};

/// Installs aws-lc-rs as the process-wide rustls provider (idempotent).
pub fn install_crypto_provider() {
    // Err only means another call already installed it.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

pub fn load_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = read_file(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::file(key, path, format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(ConfigError::file(key, path, "no certificate in PEM file"));
    }
    Ok(certs)
}

pub fn load_private_key(
    key: &'static str,
    path: &Path,
) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let pem = read_file(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| ConfigError::file(key, path, format!("no usable private key: {e}")))
}

pub fn root_store(key: &'static str, path: &Path) -> Result<RootCertStore, ConfigError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(key, path)? {
        roots
            .add(cert)
            .map_err(|e| ConfigError::file(key, path, format!("not a CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// Server TLS for a service. With `client_ca`, every peer must present a
/// certificate from that CA (mutual TLS).
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, ConfigError> {
    install_crypto_provider();
    let certs = load_certs("tls.cert", &files.cert)?;
    let key = load_private_key("tls.key", &files.key)?;
    let builder = ServerConfig::builder();
    let builder = match &files.client_ca {
        Some(ca) => {
            let roots = root_store("tls.client_ca", ca)?;
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| ConfigError::invalid("tls.client_ca", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| ConfigError::invalid("tls.key", format!("does not match tls.cert: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Client TLS: trust `ca`, present `identity` (certificate and key PEM
/// files, with their settings' names) when given, and offer HTTP/2 only.
pub fn client_config(
    ca_key: &'static str,
    ca: &Path,
    identity: Option<Identity<'_>>,
) -> Result<Arc<ClientConfig>, ConfigError> {
    install_crypto_provider();
    let builder = ClientConfig::builder().with_root_certificates(root_store(ca_key, ca)?);
    let mut config = match identity {
        Some(identity) => {
            let certs = load_certs(identity.cert_key, identity.cert)?;
            let key = load_private_key(identity.key_key, identity.key)?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                ConfigError::invalid(
                    identity.key_key,
                    format!("does not match {}: {e}", identity.cert_key),
                )
            })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A client certificate and its key, each with its setting's name.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub cert_key: &'static str,
    pub cert: &'a Path,
    pub key_key: &'static str,
    pub key: &'a Path,
}
