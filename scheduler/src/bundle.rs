//! Bundles: a DAG's folder packed as a tar by `vishwa submit DIR`, kept by content digest
//! (sha256) in the scheduler's data dir, and streamed to workers on other machines, so no
//! shared filesystem is needed. Every byte is verified against the digest on the way in.

use std::path::{Path, PathBuf};

use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vishwa_proto::v1 as pb;

/// Bytes per chunk when a bundle is streamed.
pub const CHUNK_BYTES: usize = 1 << 20;
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

/// Checks that `digest` looks like a sha256 in hex.
pub fn check_digest(digest: &str) -> Result<(), BundleError> {
    let ok = digest.len() == 64
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if ok {
        Ok(())
    } else {
        Err(BundleError::BadDigest {
            digest: digest.chars().take(80).collect(),
        })
    }
}

/// Bundles on disk, one file per digest.
#[derive(Debug, Clone)]
pub struct BundleStore {
    dir: PathBuf,
    max_bytes: u64,
}

impl BundleStore {
    /// Opens (creating) the bundle folder `dir`.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<BundleStore, BundleError> {
        std::fs::create_dir_all(dir.join("incoming"))
            .map_err(|e| BundleError::Io(format!("creating {}: {e}", dir.display())))?;
        Ok(BundleStore {
            dir: dir.to_path_buf(),
            max_bytes,
        })
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.tar"))
    }

    /// Whether the bundle `digest` is here.
    pub fn has(&self, digest: &str) -> Result<bool, BundleError> {
        check_digest(digest)?;
        Ok(self.path(digest).is_file())
    }

    /// Receives an upload, verifies size and digest, and keeps it. Returns digest and size.
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
        let digest = first.digest.clone();
        check_digest(&digest)?;
        if first.size > self.max_bytes {
            return Err(BundleError::TooLarge {
                size: first.size,
                limit: self.max_bytes,
            });
        }
        if self.path(&digest).is_file() {
            return Ok((digest, first.size));
        }
        let incoming = self
            .dir
            .join("incoming")
            .join(format!("{digest}.{}", std::process::id()));
        let result = self.write_verified(&incoming, &first, &mut chunks).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&incoming).await;
        }
        result?;
        tokio::fs::rename(&incoming, self.path(&digest))
            .await
            .map_err(|e| BundleError::Io(format!("keeping bundle {digest}: {e}")))?;
        Ok((digest, first.size))
    }

    async fn write_verified<S, E>(
        &self,
        path: &Path,
        first: &pb::BundleChunk,
        rest: &mut S,
    ) -> Result<(), BundleError>
    where
        S: Stream<Item = Result<pb::BundleChunk, E>> + Unpin,
        E: std::fmt::Display,
    {
        let io = |e: std::io::Error| BundleError::Io(format!("writing {}: {e}", path.display()));
        let mut file = tokio::fs::File::create(path).await.map_err(io)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut data = first.data.clone();
        loop {
            size += data.len() as u64;
            if size > self.max_bytes || size > first.size {
                return Err(if size > self.max_bytes {
                    BundleError::TooLarge {
                        size,
                        limit: self.max_bytes,
                    }
                } else {
                    BundleError::SizeMismatch {
                        announced: first.size,
                        actual: size,
                    }
                });
            }
            hasher.update(&data);
            file.write_all(&data).await.map_err(io)?;
            match rest.next().await {
                Some(Ok(chunk)) => data = chunk.data,
                Some(Err(e)) => return Err(BundleError::Io(format!("receiving the upload: {e}"))),
                None => break,
            }
        }
        file.sync_all().await.map_err(io)?;
        if size != first.size {
            return Err(BundleError::SizeMismatch {
                announced: first.size,
                actual: size,
            });
        }
        let actual = hex::encode(hasher.finalize());
        if actual != first.digest {
            return Err(BundleError::DigestMismatch {
                expected: first.digest.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Streams a kept bundle in chunks; the first names its digest and size.
    pub async fn send(
        &self,
        digest: &str,
        tx: tokio::sync::mpsc::Sender<Result<pb::BundleChunk, tonic::Status>>,
    ) -> Result<(), BundleError> {
        check_digest(digest)?;
        let path = self.path(digest);
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|_| BundleError::Missing {
                digest: digest.to_owned(),
            })?;
        let size = file
            .metadata()
            .await
            .map_err(|e| BundleError::Io(e.to_string()))?
            .len();
        let mut first = true;
        loop {
            let mut buf = vec![0u8; CHUNK_BYTES];
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| BundleError::Io(format!("reading {}: {e}", path.display())))?;
            if n == 0 && !first {
                return Ok(());
            }
            buf.truncate(n);
            let chunk = pb::BundleChunk {
                digest: if first {
                    digest.to_owned()
                } else {
                    String::new()
                },
                size: if first { size } else { 0 },
                data: buf.into(),
            };
            first = false;
            if tx.send(Ok(chunk)).await.is_err() || n == 0 {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
