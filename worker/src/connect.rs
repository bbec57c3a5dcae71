//! Connecting to the scheduler: `http://` or `https://` (TLS with rustls, trusting a CA file
//! when one is given, else the system's roots) and a bearer token on every call. The CLI's
//! client uses the same helpers.

use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use thiserror::Error;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};
use vishwa_proto::v1 as pb;

/// A worker service client that sends the worker's token with every call.
pub type WorkerClient =
    pb::worker_api_client::WorkerApiClient<InterceptedService<Channel, BearerToken>>;

/// Why a connection to the scheduler cannot be set up.
#[derive(Debug, Error)]
pub enum ConnectError {
    #[error("bad scheduler address `{url}`: {reason}; write it like http://127.0.0.1:7070")]
    BadAddress { url: String, reason: String },
    #[error("TLS CA file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error(
        "--tls-ca is given but `{url}` is not https://; write the scheduler's URL as https://..."
    )]
    CaWithoutTls { url: String },
    #[error("TLS setup for {url}: {reason}")]
    Tls { url: String, reason: String },
    #[error("the token holds characters a header cannot carry; tokens are printable ASCII")]
    BadToken,
}

/// An endpoint for `url`; `https://` URLs use TLS, trusting the CA certificates in `tls_ca`
/// or, without it, the system's roots.
pub fn endpoint(url: &str, tls_ca: Option<&Path>) -> Result<Endpoint, ConnectError> {
    let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| ConnectError::BadAddress {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    let https = url.starts_with("https://");
    if !https {
        if tls_ca.is_some() {
            return Err(ConnectError::CaWithoutTls {
                url: url.to_owned(),
            });
        }
        return Ok(endpoint);
    }
    // A private CA is trusted alone; without one, the system's roots are.
    let tls = match tls_ca {
        Some(path) => ClientTlsConfig::new().ca_certificate(read_ca(path)?),
        None => ClientTlsConfig::new().with_native_roots(),
    };
    endpoint.tls_config(tls).map_err(|e| ConnectError::Tls {
        url: url.to_owned(),
        reason: e.to_string(),
    })
}

/// The CA certificates in the PEM file at `path`, checked.
fn read_ca(path: &Path) -> Result<Certificate, ConnectError> {
    let fail = |reason: String| ConnectError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("not a valid PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(fail(
            "holds no `BEGIN CERTIFICATE` block; pass the CA certificate that signed the \
             scheduler's certificate, in PEM"
                .into(),
        ));
    }
    Ok(Certificate::from_pem(pem))
}

/// Adds `authorization: Bearer TOKEN` to every call when a token is set.
#[derive(Clone, Default)]
pub struct BearerToken {
    value: Option<MetadataValue<Ascii>>,
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.value.is_some() {
            "BearerToken(set)"
        } else {
            "BearerToken(none)"
        })
    }
}

impl BearerToken {
    /// The header for `token`, if any.
    pub fn new(token: Option<&str>) -> Result<BearerToken, ConnectError> {
        let value = token
            .map(|t| {
                let mut value = MetadataValue::try_from(format!("Bearer {}", t.trim()))
                    .map_err(|_| ConnectError::BadToken)?;
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()?;
        Ok(BearerToken { value })
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.value {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_needs_an_https_url_and_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("ca.pem");
        std::fs::write(&garbage, "nothing here").unwrap();
        let e = endpoint("http://127.0.0.1:1", Some(&garbage)).unwrap_err();
        assert!(matches!(e, ConnectError::CaWithoutTls { .. }), "{e}");
        let e = endpoint("https://127.0.0.1:1", Some(&garbage)).unwrap_err();
        assert!(e.to_string().contains("ca.pem") && e.to_string().contains("BEGIN CERTIFICATE"));
        let e = endpoint("https://127.0.0.1:1", Some(&dir.path().join("none.pem"))).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }

    #[test]
    fn tokens_become_a_bearer_header() {
        let mut with = BearerToken::new(Some("abc")).unwrap();
        let request = with.call(Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer abc"
        );
        let mut without = BearerToken::new(None).unwrap();
        assert!(
            without
                .call(Request::new(()))
                .unwrap()
                .metadata()
                .is_empty()
        );
        assert!(BearerToken::new(Some("bad\ntoken")).is_err());
    }
}
