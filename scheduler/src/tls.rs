//! The scheduler's TLS identity: a certificate chain and key from PEM files, checked here so a
//! bad file is reported with its path and what is wrong with it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;
use tokio_rustls::rustls;
use tonic::transport::{Identity, ServerTlsConfig};

/// Why the TLS files cannot be used.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("TLS {what} {path}: {reason}")]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("TLS: {0}")]
    Config(String),
}

/// Reads `path` (`what` names it in errors).
fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        what,
        path: path.to_owned(),
        reason: format!("cannot read it: {e}"),
    })
}

/// Makes ring the process's TLS crypto provider. rustls picks one by itself only when a single
/// provider is compiled in; the S3 client (reqwest, through object_store) brings aws-lc-rs
/// besides ring, and then every TLS config built without an explicit provider (tonic's) would
/// panic. Every process entry point (the `vishwa` binary, the bench, an embedded scheduler)
/// calls this first; calling it again does nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The server side of TLS from a PEM certificate chain and a PEM private key (gRPC).
pub fn server_tls(cert: &Path, key: &Path) -> Result<ServerTlsConfig, TlsError> {
    let (cert_pem, key_pem) = read_identity(cert, key)?;
    Ok(ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem)))
}

/// The same identity as a rustls server configuration (the HTTP port), offering HTTP/2 and
/// HTTP/1.1.
pub fn server_rustls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let key_path = key;
    let (cert_pem, key_pem) = read_identity(cert, key)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Config(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::File {
            what: "key",
            path: key_path.to_owned(),
            reason: format!("cannot serve with it and {}: {e}", cert.display()),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reads and checks both PEM files: the certificate chain holds certificates, the key a key.
fn read_identity(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let cert_pem = read("certificate", cert)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::File {
            what: "certificate",
            path: cert.to_owned(),
            reason: format!("not a valid PEM certificate: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::File {
            what: "certificate",
            path: cert.to_owned(),
            reason: "holds no `BEGIN CERTIFICATE` block; pass the server's certificate \
                     (chain) in PEM"
                .into(),
        });
    }
    let key_pem = read("key", key)?;
    PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::File {
        what: "key",
        path: key.to_owned(),
        reason: format!("holds no usable PEM private key ({e}); pass the key of --tls-cert"),
    })?;
    Ok((cert_pem, key_pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_and_non_pem_files_are_named_with_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not pem at all").unwrap();
        let message = server_tls(&missing, &garbage).unwrap_err().to_string();
        assert!(
            message.contains("missing.pem") && message.contains("cannot read"),
            "{message}"
        );
        let message = server_tls(&garbage, &garbage).unwrap_err().to_string();
        assert!(
            message.contains("garbage.pem") && message.contains("BEGIN CERTIFICATE"),
            "{message}"
        );
    }
}
