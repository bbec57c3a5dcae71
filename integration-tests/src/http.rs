//! A small blocking HTTP/1.0 client for the scheduler's HTTP port: one request per
//! connection, plain or TLS (trusting a test CA), with an optional bearer token.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls;

/// A response: status code, headers (names lower-cased) and body.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    /// The first header called `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET url` (`http://HOST:PORT/path` or `https://...` trusting `ca`), with
/// `Authorization: Bearer TOKEN` when `token` is given.
pub fn http_get(url: &str, token: Option<&str>, ca: Option<&Path>) -> anyhow::Result<HttpReply> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        anyhow::bail!("{url} is not an http:// or https:// URL");
    };
    let (host_port, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: {host_port}\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    let stream = TcpStream::connect(host_port)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut raw = Vec::new();
    if tls {
        let ca = ca.ok_or_else(|| anyhow::anyhow!("an https:// URL needs the CA to trust"))?;
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(ca)?;
        use rustls::pki_types::pem::PemObject as _;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())?;
        let connection = rustls::ClientConnection::new(Arc::new(config), name)?;
        let mut stream = rustls::StreamOwned::new(connection, stream);
        stream.write_all(request.as_bytes())?;
        read_to_close(&mut stream, &mut raw)?;
    } else {
        let mut stream = stream;
        stream.write_all(request.as_bytes())?;
        read_to_close(&mut stream, &mut raw)?;
    }
    parse(&raw)
}

/// Reads until the server closes; a TLS peer that closes without `close_notify` is fine here.
fn read_to_close(stream: &mut impl Read, raw: &mut Vec<u8>) -> anyhow::Result<()> {
    match stream.read_to_end(raw) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn parse(raw: &[u8]) -> anyhow::Result<HttpReply> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no end of headers in {text:?}"))?;
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(HttpReply {
        status,
        headers,
        body: body.to_owned(),
    })
}
