//! Bundles: a DAG's folder packed as a tar by `vishwa submit DIR`, kept by content digest
//! (sha256) in the scheduler's data dir, and streamed to workers on other machines, so no
//! shared filesystem is needed. Every byte is verified against the digest on the way in.

use std::path::Path;

use futures::{Stream, StreamExt};
use thiserror::Error;
use vishwa_proto::v1 as pb;

use crate::blobs::{BlobError, Blobs, Layout, Piece};

/// Bytes per chunk when a bundle is streamed.
pub use crate::blobs::CHUNK_BYTES;
/// Largest bundle accepted unless configured otherwise.
pub const DEFAULT_MAX_BUNDLE_BYTES: u64 = 256 << 20;

/// Why a bundle was refused or could not be read.
#[derive(Debug, Error)]
pub enum BundleError {
    #[error("`{digest}` is not a bundle digest (64 lowercase hex characters of sha256)")]
    BadDigest { digest: String },
    #[error("the upload is empty: its first chunk must name the bundle's digest and size")]
    Empty,
    #[error(
        "bundle is {size} bytes, over the limit of {limit} bytes; leave large data out of the DAG folder"
    )]
    TooLarge { size: u64, limit: u64 },
    #[error("bundle content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("bundle is {actual} bytes, but its first chunk announced {announced}")]
    SizeMismatch { announced: u64, actual: u64 },
    #[error("no bundle {digest} on this scheduler; submit the DAG folder again")]
    Missing { digest: String },
    #[error("bundle storage: {0}")]
    Io(String),
}

impl From<BlobError> for BundleError {
    fn from(e: BlobError) -> BundleError {
        match e {
            BlobError::BadDigest { digest } => BundleError::BadDigest { digest },
            BlobError::TooLarge { size, limit } => BundleError::TooLarge { size, limit },
            BlobError::DigestMismatch { expected, actual } => {
                BundleError::DigestMismatch { expected, actual }
            }
            BlobError::SizeMismatch { announced, actual } => {
                BundleError::SizeMismatch { announced, actual }
            }
            BlobError::Missing { digest } => BundleError::Missing { digest },
            BlobError::Io(message) => BundleError::Io(message),
        }
    }
}

/// Checks that `digest` looks like a sha256 in hex.
pub fn check_digest(digest: &str) -> Result<(), BundleError> {
    Ok(crate::blobs::check_digest(digest)?)
}

/// Bundles on disk as `<digest>.tar`, in the shared [`Blobs`] store.
#[derive(Debug, Clone)]
pub struct BundleStore {
    blobs: Blobs,
}

impl BundleStore {
    /// Opens (creating) the bundle folder `dir`.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<BundleStore, BundleError> {
        let blobs = Blobs::open(dir, Layout::Flat("tar"), max_bytes)?;
        Ok(BundleStore { blobs })
    }

    /// Whether the bundle `digest` is here.
    pub fn has(&self, digest: &str) -> Result<bool, BundleError> {
        Ok(self.blobs.has(digest)?)
    }

    /// Receives an upload, verifies size and digest, and keeps it. Returns digest and size.
    /// The first chunk names the digest, so a bundle already here is not read again.
    pub async fn receive<S, E>(&self, chunks: S) -> Result<(String, u64), BundleError>
    where
        S: Stream<Item = Result<pb::BundleChunk, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut chunks = chunks;
        let first = match chunks.next().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => return Err(BundleError::Io(format!("receiving the upload: {e}"))),
            None => return Err(BundleError::Empty),
        };
        check_digest(&first.digest)?;
        self.blobs.check_size(first.size)?;
        if self.blobs.has(&first.digest)? {
            return Ok((first.digest, first.size));
        }
        let size = first.size;
        let first = Piece {
            data: first.data,
            digest: first.digest,
        };
        // Only the first chunk names the digest.
        let rest = chunks.map(|chunk| {
            chunk.map(|c| Piece {
                data: c.data,
                digest: String::new(),
            })
        });
        let pieces = futures::stream::once(async { Ok(first) }).chain(rest);
        Ok(self.blobs.put(size, Box::pin(pieces)).await?)
    }

    /// Streams a kept bundle in chunks; the first names its digest and size.
    pub async fn send(
        &self,
        digest: &str,
        tx: tokio::sync::mpsc::Sender<Result<pb::BundleChunk, tonic::Status>>,
    ) -> Result<(), BundleError> {
        let chunk = |size: Option<u64>, data| {
            Ok(pb::BundleChunk {
                digest: size.map(|_| digest.to_owned()).unwrap_or_default(),
                size: size.unwrap_or(0),
                data,
            })
        };
        Ok(self.blobs.send(digest, tx, chunk).await?)
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    fn digest_of(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    fn upload(digest: &str, size: u64, parts: &[&[u8]]) -> Vec<Result<pb::BundleChunk, String>> {
        parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Ok(pb::BundleChunk {
                    digest: if i == 0 {
                        digest.to_owned()
                    } else {
                        String::new()
                    },
                    size: if i == 0 { size } else { 0 },
                    data: p.to_vec().into(),
                })
            })
            .collect()
    }

    #[tokio::test]
    async fn an_upload_is_kept_when_it_matches_its_digest_and_streams_back_intact() {
        let dir = tempfile::tempdir().unwrap();
        let store = BundleStore::open(dir.path(), 1 << 20).unwrap();
        let data = b"hello bundle".repeat(1000);
        let digest = digest_of(&data);
        let parts: Vec<&[u8]> = data.chunks(777).collect();
        let stream = futures::stream::iter(upload(&digest, data.len() as u64, &parts));
        let (kept, size) = store.receive(stream).await.unwrap();
        assert_eq!((kept.as_str(), size), (digest.as_str(), data.len() as u64));
        assert!(store.has(&digest).unwrap());

        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        store.send(&digest, tx).await.unwrap();
        let mut back = Vec::new();
        let mut first = None;
        while let Some(chunk) = rx.recv().await {
            let chunk = chunk.unwrap();
            first.get_or_insert((chunk.digest.clone(), chunk.size));
            back.extend_from_slice(&chunk.data);
        }
        assert_eq!(back, data);
        assert_eq!(first, Some((digest, data.len() as u64)));
    }

    #[tokio::test]
    async fn a_tampered_upload_is_refused_and_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = BundleStore::open(dir.path(), 1 << 20).unwrap();
        let digest = digest_of(b"the real content");
        let stream = futures::stream::iter(upload(&digest, 16, &[b"the fake content"]));
        let err = store.receive(stream).await.unwrap_err();
        assert!(matches!(err, BundleError::DigestMismatch { .. }), "{err}");
        assert!(!store.has(&digest).unwrap());
        let leftovers = std::fs::read_dir(dir.path().join("incoming"))
            .unwrap()
            .count();
        assert_eq!(leftovers, 0);
    }

    #[tokio::test]
    async fn an_oversized_upload_is_refused_early_and_late() {
        let dir = tempfile::tempdir().unwrap();
        let store = BundleStore::open(dir.path(), 10).unwrap();
        let data = b"0123456789abcdef";
        let digest = digest_of(data);
        let announced = futures::stream::iter(upload(&digest, 16, &[data]));
        let err = store.receive(announced).await.unwrap_err();
        assert!(
            matches!(
                err,
                BundleError::TooLarge {
                    size: 16,
                    limit: 10
                }
            ),
            "{err}"
        );
        // Lying about the size does not help.
        let lying = futures::stream::iter(upload(&digest, 8, &[data]));
        let err = store.receive(lying).await.unwrap_err();
        assert!(
            matches!(
                err,
                BundleError::TooLarge { .. } | BundleError::SizeMismatch { .. }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn malformed_digests_are_refused_before_touching_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = BundleStore::open(dir.path(), 1 << 20).unwrap();
        for bad in ["", "abc", "../../etc/passwd", &"G".repeat(64)] {
            assert!(
                matches!(store.has(bad), Err(BundleError::BadDigest { .. })),
                "{bad}"
            );
        }
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let missing = "0".repeat(64);
        assert!(matches!(
            store.send(&missing, tx).await,
            Err(BundleError::Missing { .. })
        ));
    }
}
