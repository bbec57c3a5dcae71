//! Direct artifact transfers: with S3 artifacts the worker moves the bytes itself through the
//! presigned URLs the scheduler hands out (`ArtifactTransfer`), streaming from and to disk in
//! bounded chunks. Uploads are hashed before they start (the object is keyed by the digest);
//! downloads are hashed while they are written, and a digest that does not match fails the
//! attempt: the scheduler never reads the bytes, so this is where tampering is caught.

use std::path::Path;
use std::sync::OnceLock;

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use vishwa_proto::v1 as pb;

/// Bytes read from disk at a time.
const READ_BYTES: usize = 1 << 20;

/// Why a direct transfer failed, and whether a retry may help.
#[derive(Debug)]
pub struct DirectError {
    pub reason: String,
    pub transient: bool,
}

impl DirectError {
    fn of(reason: String, transient: bool) -> DirectError {
        DirectError { reason, transient }
    }
}

fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    })
}

/// A URL without its query (the signature), for messages.
fn bare(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

fn request_error(url: &str, e: reqwest::Error) -> DirectError {
    DirectError::of(format!("{}: {e}", bare(url)), true)
}

async fn refused(url: &str, response: reqwest::Response) -> DirectError {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    DirectError::of(
        format!("{} answered {status}: {body}", bare(url)),
        status.is_server_error(),
    )
}

/// The sha256 (hex) of the file at `path`, read in bounded chunks.
pub async fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; READ_BYTES];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

/// PUTs `len` bytes of `path` from `offset` to `url`, streamed; returns the ETag S3 answers.
async fn put_range(url: &str, path: &Path, offset: u64, len: u64) -> Result<String, DirectError> {
    let io = |e: std::io::Error| DirectError::of(format!("reading {}: {e}", path.display()), false);
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(io)?;
    let body = tokio_util::io::ReaderStream::with_capacity(file.take(len), READ_BYTES);
    let response = http()
        .put(url)
        .header(reqwest::header::CONTENT_LENGTH, len)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .map_err(|e| request_error(url, e))?;
    if !response.status().is_success() {
        return Err(refused(url, response).await);
    }
    let etag = response
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok(etag)
}

/// Uploads the file at `path` (`size` bytes) as `plan` says; returns the multipart upload's
/// id and its parts' ETags (empty for a single PUT or an object already there).
pub async fn upload(
    plan: &pb::ArtifactTransferResponse,
    path: &Path,
    size: u64,
) -> Result<Vec<String>, DirectError> {
    if plan.exists {
        return Ok(Vec::new());
    }
    if plan.upload_id.is_empty() {
        put_range(&plan.url, path, 0, size).await?;
        return Ok(Vec::new());
    }
    if plan.part_bytes == 0 || plan.part_urls.len() as u64 != size.div_ceil(plan.part_bytes) {
        return Err(DirectError::of(
            format!(
                "the scheduler planned {} parts of {} bytes for {size} bytes",
                plan.part_urls.len(),
                plan.part_bytes
            ),
            false,
        ));
    }
    let mut etags = Vec::with_capacity(plan.part_urls.len());
    for (i, url) in plan.part_urls.iter().enumerate() {
        let offset = i as u64 * plan.part_bytes;
        let len = plan.part_bytes.min(size - offset);
        etags.push(put_range(url, path, offset, len).await?);
    }
    Ok(etags)
}

/// Downloads `url` into `path`, hashing while it is written; returns digest and size.
pub async fn download(url: &str, path: &Path) -> Result<(String, u64), DirectError> {
    let response = http()
        .get(url)
        .send()
        .await
        .map_err(|e| request_error(url, e))?;
    if !response.status().is_success() {
        return Err(refused(url, response).await);
    }
    let io = |e: std::io::Error| DirectError::of(format!("writing {}: {e}", path.display()), true);
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| request_error(url, e))?;
        size += chunk.len() as u64;
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    Ok((hex::encode(hasher.finalize()), size))
}
