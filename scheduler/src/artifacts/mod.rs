//! The artifact blob store: stage outputs kept by content digest (sha256) under the
//! scheduler's data dir as `artifacts/sha256/ab/cdef…`, written to a temporary file and
//! renamed into place once the bytes match their digest. The index (which run and stage made
//! what, who consumed it) lives in the [`Store`](crate::store::Store); retention is in
//! [`retention`].

use std::path::{Path, PathBuf};

use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vishwa_proto::v1 as pb;

use crate::ids::AttemptId;

pub mod retention;

/// Bytes per chunk when an artifact is streamed.
pub const CHUNK_BYTES: usize = 1 << 20;
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
    /// Whether a retry may succeed (storage trouble) rather than the upload being wrong.
    pub fn is_io(&self) -> bool {
        matches!(self, ArtifactError::Io(_))
    }
}

/// Checks that `digest` looks like a sha256 in hex.
pub fn check_digest(digest: &str) -> Result<(), ArtifactError> {
    let ok = digest.len() == 64
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if ok {
        Ok(())
    } else {
        Err(ArtifactError::BadDigest {
            digest: digest.chars().take(80).collect(),
        })
    }
}

/// What an upload's first chunk says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadHeader {
    pub attempt: String,
    pub worker: String,
    pub name: String,
    pub size: u64,
}

/// Artifact blobs on disk, one file per digest.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
    max_bytes: u64,
}

impl BlobStore {
    /// Opens (creating) the artifact folder `dir`.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<BlobStore, ArtifactError> {
        std::fs::create_dir_all(dir.join("incoming"))
            .and_then(|()| std::fs::create_dir_all(dir.join("sha256")))
            .map_err(|e| ArtifactError::Io(format!("creating {}: {e}", dir.display())))?;
        Ok(BlobStore {
            dir: dir.to_path_buf(),
            max_bytes,
        })
    }

    /// Largest artifact accepted, in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Where the blob of `digest` lives: `sha256/ab/cdef…`.
    pub fn path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("sha256")
            .join(&digest[..2])
            .join(&digest[2..])
    }

    /// Whether the blob `digest` is here.
    pub fn has(&self, digest: &str) -> Result<bool, ArtifactError> {
        check_digest(digest)?;
        Ok(self.path(digest).is_file())
    }

    /// Removes the blob `digest`; a missing one is not an error.
    pub fn remove(&self, digest: &str) -> Result<(), ArtifactError> {
        check_digest(digest)?;
        match std::fs::remove_file(self.path(digest)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ArtifactError::Io(format!("removing blob {digest}: {e}"))),
        }
    }

    /// Every blob digest here with the time its file was last written.
    pub fn list(&self) -> Result<Vec<(String, std::time::SystemTime)>, ArtifactError> {
        let io = |e: std::io::Error| ArtifactError::Io(format!("listing blobs: {e}"));
        let mut found = Vec::new();
        for shard in std::fs::read_dir(self.dir.join("sha256")).map_err(io)? {
            let shard = shard.map_err(io)?;
            let prefix = shard.file_name().to_string_lossy().into_owned();
            if !shard.file_type().map_err(io)?.is_dir() {
                continue;
            }
            for blob in std::fs::read_dir(shard.path()).map_err(io)? {
                let blob = blob.map_err(io)?;
                let digest = format!("{prefix}{}", blob.file_name().to_string_lossy());
                if check_digest(&digest).is_err() {
                    continue;
                }
                let modified = blob
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                found.push((digest, modified));
            }
        }
        found.sort();
        Ok(found)
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
            attempt: first.attempt_id.clone(),
            worker: first.worker_id.clone(),
            name: first.name.clone(),
            size: first.size,
        };
        if first.size > self.max_bytes {
            return Err(ArtifactError::TooLarge {
                name: header.name,
                size: first.size,
                limit: self.max_bytes,
            });
        }
        let incoming = self.dir.join("incoming").join(format!(
            "{}.{}",
            std::process::id(),
            AttemptId::random()
        ));
        let result = self
            .write_verified(&incoming, &header, first, &mut chunks)
            .await;
        let digest = match result {
            Ok(digest) => digest,
            Err(e) => {
                let _ = tokio::fs::remove_file(&incoming).await;
                return Err(e);
            }
        };
        let path = self.path(&digest);
        let io = |e: std::io::Error| ArtifactError::Io(format!("keeping blob {digest}: {e}"));
        if path.is_file() {
            let _ = tokio::fs::remove_file(&incoming).await;
            // Touched, so retention does not collect it before the index refers to it.
            let _ = std::fs::File::options()
                .append(true)
                .open(&path)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        } else {
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(io)?;
            }
            tokio::fs::rename(&incoming, &path).await.map_err(io)?;
        }
        let size = header.size;
        Ok((header, digest, size))
    }

    async fn write_verified<S, E>(
        &self,
        path: &Path,
        header: &UploadHeader,
        first: pb::ArtifactChunk,
        rest: &mut S,
    ) -> Result<String, ArtifactError>
    where
        S: Stream<Item = Result<pb::ArtifactChunk, E>> + Unpin,
        E: std::fmt::Display,
    {
        let io = |e: std::io::Error| ArtifactError::Io(format!("writing {}: {e}", path.display()));
        let mut file = tokio::fs::File::create(path).await.map_err(io)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut claimed = first.digest;
        let mut data = first.data;
        loop {
            size += data.len() as u64;
            if size > self.max_bytes {
                return Err(ArtifactError::TooLarge {
                    name: header.name.clone(),
                    size,
                    limit: self.max_bytes,
                });
            }
            if size > header.size {
                return Err(ArtifactError::SizeMismatch {
                    name: header.name.clone(),
                    announced: header.size,
                    actual: size,
                });
            }
            hasher.update(&data);
            file.write_all(&data).await.map_err(io)?;
            match rest.next().await {
                Some(Ok(chunk)) => {
                    if !chunk.digest.is_empty() {
                        claimed = chunk.digest;
                    }
                    data = chunk.data;
                }
                Some(Err(e)) => {
                    return Err(ArtifactError::Io(format!("receiving the upload: {e}")));
                }
                None => break,
            }
        }
        file.sync_all().await.map_err(io)?;
        if size != header.size {
            return Err(ArtifactError::SizeMismatch {
                name: header.name.clone(),
                announced: header.size,
                actual: size,
            });
        }
        let actual = hex::encode(hasher.finalize());
        check_digest(&claimed)?;
        if actual != claimed {
            return Err(ArtifactError::DigestMismatch {
                name: header.name.clone(),
                expected: claimed,
                actual,
            });
        }
        Ok(actual)
    }

    /// Streams a kept blob in chunks; the first names its digest and size. The bytes are sent
    /// as stored: the receiver checks them against the digest it expects.
    pub async fn send(
        &self,
        digest: &str,
        name: &str,
        tx: tokio::sync::mpsc::Sender<Result<pb::ArtifactChunk, tonic::Status>>,
    ) -> Result<(), ArtifactError> {
        check_digest(digest)?;
        let path = self.path(digest);
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|_| ArtifactError::Missing {
                digest: digest.to_owned(),
            })?;
        let size = file
            .metadata()
            .await
            .map_err(|e| ArtifactError::Io(e.to_string()))?
            .len();
        let mut first = true;
        loop {
            let mut buf = vec![0u8; CHUNK_BYTES];
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| ArtifactError::Io(format!("reading {}: {e}", path.display())))?;
            if n == 0 && !first {
                return Ok(());
            }
            buf.truncate(n);
            let chunk = pb::ArtifactChunk {
                digest: if first {
                    digest.to_owned()
                } else {
                    String::new()
                },
                name: if first {
                    name.to_owned()
                } else {
                    String::new()
                },
                size: if first { size } else { 0 },
                data: buf.into(),
                ..Default::default()
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
