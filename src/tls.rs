//! TLS for `enclave serve`: a certificate chain and private key in PEM files become a rustls
//! server configuration (ring as the crypto provider, TLS 1.2 and 1.3). Read once at start, so
//! a bad file fails before the port is taken. Depends on nothing else in the crate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read a PEM certificate chain: {message}")]
    Certificate { path: PathBuf, message: String },
    #[error("{path}: cannot read a PEM private key: {message}")]
    Key { path: PathBuf, message: String },
    #[error("{cert} and {key} do not make a TLS configuration: {message}")]
    Config {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
}

pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificate {
            path: cert.to_path_buf(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate {
            path: cert.to_path_buf(),
            message: "no CERTIFICATE block found".into(),
        });
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_path_buf(),
        message: e.to_string(),
    })?;
    let config_error = |message: String| TlsError::Config {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        message,
    };
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, private_key)
            .map_err(|e| config_error(e.to_string()))?;
    Ok(Arc::new(config))
}
