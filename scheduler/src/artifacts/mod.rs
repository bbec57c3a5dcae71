//! The artifact blob store: stage outputs kept by content digest (sha256) under the
//! scheduler's data dir as `artifacts/sha256/ab/cdef…`, written to a temporary file and
//! renamed into place once the bytes match their digest. The index (which run and stage made
//! what, who consumed it) lives in the [`Store`](crate::store::Store); retention is in
//! [`retention`].

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use futures::{Stream, StreamExt};
use thiserror::Error;
use vishwa_proto::v1 as pb;

use crate::blobs::s3::{S3Blobs, S3Location, S3Settings};
use crate::blobs::{BlobError, Blobs, Layout, Piece};

pub mod retention;
pub mod transfer;

/// Bytes per chunk when an artifact is streamed.
pub use crate::blobs::CHUNK_BYTES;
/// Largest artifact accepted unless configured otherwise (`--max-artifact-bytes`).
pub const DEFAULT_MAX_ARTIFACT_BYTES: u64 = 8 << 30;

/// Where the artifacts are kept (`--artifacts`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ArtifactsAt {
    /// `artifacts/` under the scheduler's data dir.
    #[default]
    DataDir,
    /// `file:DIR`.
    File(std::path::PathBuf),
    /// `s3://BUCKET/PREFIX`, with the `AWS_*` environment variables.
    S3(S3Location),
}

impl std::str::FromStr for ArtifactsAt {
    type Err = String;

    /// Parses `file:DIR` or `s3://BUCKET/PREFIX`.
    fn from_str(text: &str) -> Result<ArtifactsAt, String> {
        let hint = "use file:DIR (a folder on the scheduler) or s3://BUCKET/PREFIX (with \
                    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL)";
        if let Some(dir) = text.strip_prefix("file:") {
            if dir.is_empty() {
                return Err(format!("`{text}` names no folder; {hint}"));
            }
            return Ok(ArtifactsAt::File(dir.into()));
        }
        if text.starts_with("s3://") {
            return S3Location::parse(text)
                .map(ArtifactsAt::S3)
                .map_err(|e| format!("{e}; {hint}"));
        }
        Err(format!("`{text}` is not an artifact location; {hint}"))
    }
}

impl<'de> serde::Deserialize<'de> for ArtifactsAt {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Why an artifact was refused or could not be read.
#[derive(Debug, Error)]
pub enum ArtifactError {
    #[error("`{digest}` is not an artifact digest (64 lowercase hex characters of sha256)")]
    BadDigest { digest: String },
    #[error("the upload is empty: its first chunk must name the attempt, the file and its size")]
    Empty,
    #[error("the upload's first chunk must name {field}")]
    MissingField { field: &'static str },
    #[error(
        "output `{name}` is {size} bytes, over the scheduler's limit of {limit} bytes; write \
         less, or raise the limit with `vishwa scheduler --max-artifact-bytes`"
    )]
    TooLarge { name: String, size: u64, limit: u64 },
    #[error(
        "output `{name}` was corrupted on the way: the worker sent sha256 {expected}, the scheduler received {actual}"
    )]
    DigestMismatch {
        name: String,
        expected: String,
        actual: String,
    },
    #[error("output `{name}` is {actual} bytes, but its upload announced {announced}")]
    SizeMismatch {
        name: String,
        announced: u64,
        actual: u64,
    },
    #[error("no artifact {digest} on this scheduler (removed by retention?)")]
    Missing { digest: String },
    #[error("artifact storage: {0}")]
    Io(String),
}

impl ArtifactError {
    /// The blob store's error `e`, about the output `name`.
    fn about(name: &str, e: BlobError) -> ArtifactError {
        let name = name.to_owned();
        match e {
            BlobError::BadDigest { digest } => ArtifactError::BadDigest { digest },
            BlobError::TooLarge { size, limit } => ArtifactError::TooLarge { name, size, limit },
            BlobError::DigestMismatch { expected, actual } => ArtifactError::DigestMismatch {
                name,
                expected,
                actual,
            },
            BlobError::SizeMismatch { announced, actual } => ArtifactError::SizeMismatch {
                name,
                announced,
                actual,
            },
            BlobError::Missing { digest } => ArtifactError::Missing { digest },
            BlobError::Io(message) => ArtifactError::Io(message),
        }
    }

    /// Whether a retry may succeed (storage trouble) rather than the upload being wrong.
    pub fn is_io(&self) -> bool {
        matches!(self, ArtifactError::Io(_))
    }
}

/// Checks that `digest` looks like a sha256 in hex.
pub fn check_digest(digest: &str) -> Result<(), ArtifactError> {
    crate::blobs::check_digest(digest).map_err(|e| ArtifactError::about("", e))
}

/// What an upload's first chunk says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadHeader {
    pub attempt: String,
    pub worker: String,
    pub name: String,
    pub size: u64,
}

/// Where the artifact blobs live: the one blob store, with a file or an S3 backend.
#[derive(Debug, Clone)]
enum Backend {
    /// Files under the data dir; bytes pass through the scheduler.
    File(Blobs),
    /// Objects in a bucket; workers move the bytes through presigned URLs.
    S3(S3Blobs),
}

/// How many artifact bytes the scheduler's process itself wrote (uploads received) and read
/// (downloads served). With S3 artifacts both stay at zero: the bytes go around it.
#[derive(Debug, Default)]
pub struct ByteCounters {
    written: AtomicU64,
    read: AtomicU64,
}

impl ByteCounters {
    /// Artifact bytes the scheduler received and wrote.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Artifact bytes the scheduler read and sent.
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
}

/// Artifact blobs by digest, on disk ([`Blobs`]) or in an S3 bucket ([`S3Blobs`]).
#[derive(Debug, Clone)]
pub struct BlobStore {
    backend: Backend,
    max_bytes: u64,
    counters: Arc<ByteCounters>,
}

impl BlobStore {
    /// Opens (creating) the artifact folder `dir`.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<BlobStore, ArtifactError> {
        let blobs = Blobs::open(dir, Layout::Sharded, max_bytes)
            .map_err(|e| ArtifactError::about("", e))?;
        Ok(BlobStore {
            backend: Backend::File(blobs),
            max_bytes,
            counters: Arc::default(),
        })
    }

    /// Opens the store `at` (`data_dir/artifacts` by default); S3 is reached with `s3`, or
    /// the `AWS_*` environment variables.
    pub fn open_at(
        at: &ArtifactsAt,
        data_dir: &Path,
        s3: Option<&S3Settings>,
        max_bytes: u64,
    ) -> Result<BlobStore, ArtifactError> {
        match at {
            ArtifactsAt::DataDir => BlobStore::open(&data_dir.join("artifacts"), max_bytes),
            ArtifactsAt::File(dir) => BlobStore::open(dir, max_bytes),
            ArtifactsAt::S3(location) => {
                let settings = s3.cloned().unwrap_or_else(S3Settings::from_env);
                let s3 = S3Blobs::connect(location.clone(), &settings)
                    .map_err(|e| ArtifactError::about("", e))?;
                Ok(BlobStore::s3(s3, max_bytes))
            }
        }
    }

    /// Keeps artifacts in the bucket `blobs`.
    pub fn s3(blobs: S3Blobs, max_bytes: u64) -> BlobStore {
        BlobStore {
            backend: Backend::S3(blobs),
            max_bytes,
            counters: Arc::default(),
        }
    }

    /// The bucket, when artifacts are kept in S3 (workers then move the bytes themselves).
    pub fn s3_backend(&self) -> Option<&S3Blobs> {
        match &self.backend {
            Backend::S3(s3) => Some(s3),
            Backend::File(_) => None,
        }
    }

    /// The artifact bytes this process read and wrote.
    pub fn counters(&self) -> Arc<ByteCounters> {
        self.counters.clone()
    }

    /// Largest artifact accepted, in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Refuses an output of `size` bytes over the limit.
    pub fn check_size(&self, name: &str, size: u64) -> Result<(), ArtifactError> {
        if size > self.max_bytes {
            return Err(ArtifactError::TooLarge {
                name: name.to_owned(),
                size,
                limit: self.max_bytes,
            });
        }
        Ok(())
    }

    /// Where the blob `digest` lives on disk (file backend only).
    pub fn file_path(&self, digest: &str) -> Option<std::path::PathBuf> {
        match &self.backend {
            Backend::File(blobs) => Some(blobs.path(digest)),
            Backend::S3(_) => None,
        }
    }

    fn file(&self) -> Result<&Blobs, ArtifactError> {
        match &self.backend {
            Backend::File(blobs) => Ok(blobs),
            Backend::S3(_) => Err(ArtifactError::Io(
                "artifacts are kept in S3: workers move their bytes through presigned URLs \
                 (ArtifactTransfer); upgrade the worker"
                    .to_owned(),
            )),
        }
    }

    /// The size of the blob `digest`, or `None` if it is not kept.
    pub async fn size(&self, digest: &str) -> Result<Option<u64>, ArtifactError> {
        let about = |e| ArtifactError::about("", e);
        match &self.backend {
            Backend::File(blobs) => {
                blobs.has(digest).map_err(about)?;
                Ok(std::fs::metadata(blobs.path(digest)).ok().map(|m| m.len()))
            }
            Backend::S3(s3) => s3.size(digest).await.map_err(about),
        }
    }

    /// Whether the blob `digest` is kept.
    pub async fn has(&self, digest: &str) -> Result<bool, ArtifactError> {
        Ok(self.size(digest).await?.is_some())
    }

    /// Removes the blob `digest`; a missing one is not an error.
    pub async fn remove(&self, digest: &str) -> Result<(), ArtifactError> {
        let about = |e| ArtifactError::about("", e);
        match &self.backend {
            Backend::File(blobs) => blobs.remove(digest).map_err(about),
            Backend::S3(s3) => s3.remove(digest).await.map_err(about),
        }
    }

    /// Every blob digest kept, with the time it was last written and its size.
    pub async fn list(&self) -> Result<Vec<(String, SystemTime, u64)>, ArtifactError> {
        let about = |e| ArtifactError::about("", e);
        match &self.backend {
            Backend::File(blobs) => Ok(blobs
                .list()
                .map_err(about)?
                .into_iter()
                .map(|(digest, modified)| {
                    let size = std::fs::metadata(blobs.path(&digest)).map_or(0, |m| m.len());
                    (digest, modified, size)
                })
                .collect()),
            Backend::S3(s3) => s3.list().await.map_err(about),
        }
    }

    /// Receives one upload, hashing while it is written; keeps it only when the digest the
    /// sender computed (last chunk) matches. Returns the header, digest and size.
    pub async fn receive<S, E>(
        &self,
        chunks: S,
    ) -> Result<(UploadHeader, String, u64), ArtifactError>
    where
        S: Stream<Item = Result<pb::ArtifactChunk, E>> + Unpin,
        E: std::fmt::Display,
    {
        let blobs = self.file()?;
        let mut chunks = chunks;
        let first = match chunks.next().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => return Err(ArtifactError::Io(format!("receiving the upload: {e}"))),
            None => return Err(ArtifactError::Empty),
        };
        for (field, value) in [
            ("the attempt", &first.attempt_id),
            ("the worker", &first.worker_id),
            ("the file", &first.name),
        ] {
            if value.is_empty() {
                return Err(ArtifactError::MissingField { field });
            }
        }
        let header = UploadHeader {
            attempt: first.attempt_id,
            worker: first.worker_id,
            name: first.name,
            size: first.size,
        };
        let first = Piece {
            data: first.data,
            digest: first.digest,
        };
        let counters = self.counters.clone();
        let pieces = futures::stream::once(async { Ok(first) })
            .chain(chunks.map(|chunk| {
                chunk.map(|c| Piece {
                    data: c.data,
                    digest: c.digest,
                })
            }))
            .inspect(move |piece| {
                if let Ok(piece) = piece {
                    counters
                        .written
                        .fetch_add(piece.data.len() as u64, Ordering::Relaxed);
                }
            });
        let (digest, size) = blobs
            .put(header.size, Box::pin(pieces))
            .await
            .map_err(|e| ArtifactError::about(&header.name, e))?;
        Ok((header, digest, size))
    }

    /// Streams a kept blob in chunks; the first names its digest and size. The bytes are sent
    /// as stored: the receiver checks them against the digest it expects.
    pub async fn send(
        &self,
        digest: &str,
        name: &str,
        tx: tokio::sync::mpsc::Sender<Result<pb::ArtifactChunk, tonic::Status>>,
    ) -> Result<(), ArtifactError> {
        let counters = self.counters.clone();
        let chunk = |size: Option<u64>, data: bytes::Bytes| {
            counters
                .read
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            Ok(pb::ArtifactChunk {
                digest: size.map(|_| digest.to_owned()).unwrap_or_default(),
                name: size.map(|_| name.to_owned()).unwrap_or_default(),
                size: size.unwrap_or(0),
                data,
                ..Default::default()
            })
        };
        let about = |e| ArtifactError::about(name, e);
        match &self.backend {
            Backend::File(blobs) => blobs.send(digest, tx, chunk).await.map_err(about),
            Backend::S3(s3) => {
                let (size, mut stream) = s3.get(digest).await.map_err(about)?;
                let mut first = Some(size);
                while let Some(data) = stream.next().await {
                    let data = data.map_err(about)?;
                    if tx.send(chunk(first.take(), data)).await.is_err() {
                        return Ok(());
                    }
                }
                if first.is_some() {
                    let _ = tx.send(chunk(first, bytes::Bytes::new())).await;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    fn digest_of(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    fn upload(
        name: &str,
        size: u64,
        parts: &[&[u8]],
        digest: &str,
    ) -> Vec<Result<pb::ArtifactChunk, String>> {
        let last = parts.len() - 1;
        parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut chunk = pb::ArtifactChunk {
                    data: p.to_vec().into(),
                    ..Default::default()
                };
                if i == 0 {
                    chunk.attempt_id = "a1".into();
                    chunk.worker_id = "w1".into();
                    chunk.name = name.into();
                    chunk.size = size;
                }
                if i == last {
                    chunk.digest = digest.into();
                }
                Ok(chunk)
            })
            .collect()
    }

    #[test]
    fn artifact_locations_are_file_or_s3_and_anything_else_says_what_to_write() {
        assert_eq!(
            "file:/srv/artifacts".parse::<ArtifactsAt>().unwrap(),
            ArtifactsAt::File("/srv/artifacts".into())
        );
        let ArtifactsAt::S3(at) = "s3://ml-bucket/vishwa".parse::<ArtifactsAt>().unwrap() else {
            panic!("an s3:// location")
        };
        assert_eq!(
            (at.bucket.as_str(), at.prefix.as_str()),
            ("ml-bucket", "vishwa")
        );
        for bad in ["/srv/artifacts", "file:", "s3://UPPER/x", "gs://bucket"] {
            let err = bad.parse::<ArtifactsAt>().unwrap_err();
            assert!(
                err.contains("file:DIR") && err.contains("s3://BUCKET/PREFIX"),
                "{err}"
            );
        }
    }

    #[tokio::test]
    async fn an_upload_is_kept_under_its_digest_sharded_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 1 << 20).unwrap();
        let digest = digest_of(b"hello world");
        let chunks = upload("model.pkl", 11, &[b"hello ", b"world"], &digest);
        let (header, got, size) = store.receive(futures::stream::iter(chunks)).await.unwrap();
        assert_eq!(
            (header.name.as_str(), got.as_str(), size),
            ("model.pkl", digest.as_str(), 11)
        );
        let path = dir
            .path()
            .join("sha256")
            .join(&digest[..2])
            .join(&digest[2..]);
        assert_eq!(std::fs::read(path).unwrap(), b"hello world");
        assert_eq!(store.list().await.unwrap().len(), 1);
        assert_eq!(
            std::fs::read_dir(dir.path().join("incoming"))
                .unwrap()
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn a_corrupted_upload_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 1 << 20).unwrap();
        let claimed = digest_of(b"hello world");
        let chunks = upload("model.pkl", 11, &[b"hello ", b"w0rld"], &claimed);
        let err = store
            .receive(futures::stream::iter(chunks))
            .await
            .unwrap_err();
        assert!(matches!(err, ArtifactError::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains("model.pkl"), "{err}");
        assert!(store.list().await.unwrap().is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path().join("incoming"))
                .unwrap()
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn an_upload_over_the_limit_is_refused_with_the_flag_to_raise_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 4).unwrap();
        let digest = digest_of(b"hello");
        let err = store
            .receive(futures::stream::iter(upload(
                "big.bin",
                5,
                &[b"hello"],
                &digest,
            )))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("--max-artifact-bytes"), "{err}");
        // A sender that announces less than it sends is stopped at the limit too.
        let err = store
            .receive(futures::stream::iter(upload(
                "big.bin",
                3,
                &[b"hello"],
                &digest,
            )))
            .await
            .unwrap_err();
        assert!(matches!(err, ArtifactError::TooLarge { .. }), "{err}");
    }
}
