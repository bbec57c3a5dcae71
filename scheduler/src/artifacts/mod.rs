//! The artifact blob store: stage outputs kept by content digest (sha256) under the
//! scheduler's data dir as `artifacts/sha256/ab/cdef…`, written to a temporary file and
//! renamed into place once the bytes match their digest. The index (which run and stage made
//! what, who consumed it) lives in the [`Store`](crate::store::Store); retention is in
//! [`retention`].

use std::path::{Path, PathBuf};

use futures::{Stream, StreamExt};
use thiserror::Error;
use vishwa_proto::v1 as pb;

use crate::blobs::{BlobError, Blobs, Layout, Piece};

pub mod retention;

/// Bytes per chunk when an artifact is streamed.
pub use crate::blobs::CHUNK_BYTES;
/// Largest artifact accepted unless configured otherwise (`--max-artifact-bytes`).
pub const DEFAULT_MAX_ARTIFACT_BYTES: u64 = 8 << 30;

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

/// Artifact blobs on disk, one file per digest, in the shared [`Blobs`] store.
#[derive(Debug, Clone)]
pub struct BlobStore {
    blobs: Blobs,
}

impl BlobStore {
    /// Opens (creating) the artifact folder `dir`.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<BlobStore, ArtifactError> {
        let blobs = Blobs::open(dir, Layout::Sharded, max_bytes)
            .map_err(|e| ArtifactError::about("", e))?;
        Ok(BlobStore { blobs })
    }

    /// The content-addressed store underneath.
    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    /// Largest artifact accepted, in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.blobs.max_bytes()
    }

    /// Where the blob of `digest` lives: `sha256/ab/cdef…`.
    pub fn path(&self, digest: &str) -> PathBuf {
        self.blobs.path(digest)
    }

    /// Whether the blob `digest` is here.
    pub fn has(&self, digest: &str) -> Result<bool, ArtifactError> {
        self.blobs
            .has(digest)
            .map_err(|e| ArtifactError::about("", e))
    }

    /// Removes the blob `digest`; a missing one is not an error.
    pub fn remove(&self, digest: &str) -> Result<(), ArtifactError> {
        self.blobs
            .remove(digest)
            .map_err(|e| ArtifactError::about("", e))
    }

    /// Every blob digest here with the time its file was last written.
    pub fn list(&self) -> Result<Vec<(String, std::time::SystemTime)>, ArtifactError> {
        self.blobs.list().map_err(|e| ArtifactError::about("", e))
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
        let pieces = futures::stream::once(async { Ok(first) }).chain(chunks.map(|chunk| {
            chunk.map(|c| Piece {
                data: c.data,
                digest: c.digest,
            })
        }));
        let (digest, size) = self
            .blobs
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
        let chunk = |size: Option<u64>, data| {
            Ok(pb::ArtifactChunk {
                digest: size.map(|_| digest.to_owned()).unwrap_or_default(),
                name: size.map(|_| name.to_owned()).unwrap_or_default(),
                size: size.unwrap_or(0),
                data,
                ..Default::default()
            })
        };
        self.blobs
            .send(digest, tx, chunk)
            .await
            .map_err(|e| ArtifactError::about(name, e))
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
        assert_eq!(store.list().unwrap().len(), 1);
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
        assert!(store.list().unwrap().is_empty());
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
