//! Content-addressed files: blobs kept under one folder by their sha256 digest. An upload is
//! written to a temporary file under `incoming/` while it is hashed, and renamed into place
//! only once its size and digest are right, so a blob on disk is always whole and true to its
//! name. Artifacts ([`crate::artifacts`]) and bundles ([`crate::bundle`]) both keep their
//! bytes here and add their own words to its errors.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ids::AttemptId;

pub mod s3;

/// Bytes per chunk when a blob is streamed.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Why a blob was refused or could not be read. The messages are terse: callers say what the
/// blob is (an output, a bundle) and how to fix it.
#[derive(Debug, Error)]
pub enum BlobError {
    #[error("`{digest}` is not a sha256 digest (64 lowercase hex characters)")]
    BadDigest { digest: String },
    #[error("{size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("{actual} bytes, but the upload announced {announced}")]
    SizeMismatch { announced: u64, actual: u64 },
    #[error("no blob {digest}")]
    Missing { digest: String },
    #[error("{0}")]
    Io(String),
}

/// Checks that `digest` looks like a sha256 in hex (and so is safe as a file name).
pub fn check_digest(digest: &str) -> Result<(), BlobError> {
    let ok = digest.len() == 64
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if ok {
        Ok(())
    } else {
        Err(BlobError::BadDigest {
            digest: digest.chars().take(80).collect(),
        })
    }
}

/// Where the blobs of a folder live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `sha256/ab/cdef…`: sharded by the digest's first two characters.
    Sharded,
    /// `<digest>.<extension>`, directly in the folder.
    Flat(&'static str),
}

/// One piece of an upload: its bytes, and the digest the sender claims for the whole blob if
/// this piece names one (empty otherwise; the last claim counts).
#[derive(Debug, Clone, Default)]
pub struct Piece {
    pub data: Bytes,
    pub digest: String,
}

/// Blobs on disk, one file per digest.
#[derive(Debug, Clone)]
pub struct Blobs {
    dir: PathBuf,
    layout: Layout,
    max_bytes: u64,
}

impl Blobs {
    /// Opens (creating) the folder `dir`; blobs over `max_bytes` are refused.
    pub fn open(dir: &Path, layout: Layout, max_bytes: u64) -> Result<Blobs, BlobError> {
        let mut created = std::fs::create_dir_all(dir.join("incoming"));
        if layout == Layout::Sharded {
            created = created.and_then(|()| std::fs::create_dir_all(dir.join("sha256")));
        }
        created.map_err(|e| BlobError::Io(format!("creating {}: {e}", dir.display())))?;
        Ok(Blobs {
            dir: dir.to_path_buf(),
            layout,
            max_bytes,
        })
    }

    /// Largest blob accepted, in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Refuses a blob of `size` bytes if it is over the limit.
    pub fn check_size(&self, size: u64) -> Result<(), BlobError> {
        if size > self.max_bytes {
            return Err(BlobError::TooLarge {
                size,
                limit: self.max_bytes,
            });
        }
        Ok(())
    }

    /// Where the blob of `digest` lives (`digest` must have passed [`check_digest`]).
    pub fn path(&self, digest: &str) -> PathBuf {
        match self.layout {
            Layout::Sharded => self
                .dir
                .join("sha256")
                .join(&digest[..2])
                .join(&digest[2..]),
            Layout::Flat(extension) => self.dir.join(format!("{digest}.{extension}")),
        }
    }

    /// Whether the blob `digest` is here.
    pub fn has(&self, digest: &str) -> Result<bool, BlobError> {
        check_digest(digest)?;
        Ok(self.path(digest).is_file())
    }

    /// Deletes the blob `digest`; a missing one is not an error.
    pub fn remove(&self, digest: &str) -> Result<(), BlobError> {
        check_digest(digest)?;
        match std::fs::remove_file(self.path(digest)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BlobError::Io(format!("removing blob {digest}: {e}"))),
        }
    }

    /// Every blob digest here with the time its file was last written, sorted by digest.
    pub fn list(&self) -> Result<Vec<(String, SystemTime)>, BlobError> {
        let io = |e: std::io::Error| BlobError::Io(format!("listing blobs: {e}"));
        let mut found = Vec::new();
        let mut add = |digest: String, entry: &std::fs::DirEntry| {
            if check_digest(&digest).is_ok() {
                let modified = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                found.push((digest, modified));
            }
        };
        match self.layout {
            Layout::Sharded => {
                for shard in std::fs::read_dir(self.dir.join("sha256")).map_err(io)? {
                    let shard = shard.map_err(io)?;
                    if !shard.file_type().map_err(io)?.is_dir() {
                        continue;
                    }
                    let prefix = shard.file_name().to_string_lossy().into_owned();
                    for blob in std::fs::read_dir(shard.path()).map_err(io)? {
                        let blob = blob.map_err(io)?;
                        add(
                            format!("{prefix}{}", blob.file_name().to_string_lossy()),
                            &blob,
                        );
                    }
                }
            }
            Layout::Flat(extension) => {
                for blob in std::fs::read_dir(&self.dir).map_err(io)? {
                    let blob = blob.map_err(io)?;
                    let name = blob.file_name().to_string_lossy().into_owned();
                    if let Some(digest) = name.strip_suffix(&format!(".{extension}")) {
                        add(digest.to_owned(), &blob);
                    }
                }
            }
        }
        found.sort();
        Ok(found)
    }

    /// Keeps an upload of `announced` bytes, hashing it while it is written to a temporary
    /// file; the blob is renamed into place only when its size is the one announced and its
    /// digest the one the pieces claim. A blob already here is kept as it is (and touched, so
    /// retention does not collect it before the caller refers to it). Returns digest and size.
    pub async fn put<S, E>(&self, announced: u64, pieces: S) -> Result<(String, u64), BlobError>
    where
        S: Stream<Item = Result<Piece, E>> + Unpin,
        E: Display,
    {
        self.check_size(announced)?;
        let incoming = self.dir.join("incoming").join(format!(
            "{}.{}",
            std::process::id(),
            AttemptId::random()
        ));
        let digest = match self.write_verified(&incoming, announced, pieces).await {
            Ok(digest) => digest,
            Err(e) => {
                let _ = tokio::fs::remove_file(&incoming).await;
                return Err(e);
            }
        };
        let path = self.path(&digest);
        let io = |e: std::io::Error| BlobError::Io(format!("keeping blob {digest}: {e}"));
        if path.is_file() {
            let _ = tokio::fs::remove_file(&incoming).await;
            let _ = std::fs::File::options()
                .append(true)
                .open(&path)
                .and_then(|f| f.set_modified(SystemTime::now()));
        } else {
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(io)?;
            }
            tokio::fs::rename(&incoming, &path).await.map_err(io)?;
        }
        Ok((digest, announced))
    }

    async fn write_verified<S, E>(
        &self,
        path: &Path,
        announced: u64,
        mut pieces: S,
    ) -> Result<String, BlobError>
    where
        S: Stream<Item = Result<Piece, E>> + Unpin,
        E: Display,
    {
        let io = |e: std::io::Error| BlobError::Io(format!("writing {}: {e}", path.display()));
        let mut file = tokio::fs::File::create(path).await.map_err(io)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut claimed = String::new();
        while let Some(piece) = pieces.next().await {
            let piece = piece.map_err(|e| BlobError::Io(format!("receiving the upload: {e}")))?;
            if !piece.digest.is_empty() {
                claimed = piece.digest;
            }
            size += piece.data.len() as u64;
            self.check_size(size)?;
            if size > announced {
                return Err(BlobError::SizeMismatch {
                    announced,
                    actual: size,
                });
            }
            hasher.update(&piece.data);
            file.write_all(&piece.data).await.map_err(io)?;
        }
        file.sync_all().await.map_err(io)?;
        if size != announced {
            return Err(BlobError::SizeMismatch {
                announced,
                actual: size,
            });
        }
        let actual = hex::encode(hasher.finalize());
        check_digest(&claimed)?;
        if actual != claimed {
            return Err(BlobError::DigestMismatch {
                expected: claimed,
                actual,
            });
        }
        Ok(actual)
    }

    /// Streams the blob `digest` in chunks of at most [`CHUNK_BYTES`] to `tx`, each made by
    /// `chunk(size, bytes)`, where `size` is the blob's size on the first chunk only. An empty
    /// blob is sent as one empty chunk. Stops early, without error, if the receiver is gone.
    pub async fn send<T>(
        &self,
        digest: &str,
        tx: tokio::sync::mpsc::Sender<T>,
        mut chunk: impl FnMut(Option<u64>, Bytes) -> T,
    ) -> Result<(), BlobError> {
        check_digest(digest)?;
        let path = self.path(digest);
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|_| BlobError::Missing {
                digest: digest.to_owned(),
            })?;
        let size = file
            .metadata()
            .await
            .map_err(|e| BlobError::Io(e.to_string()))?
            .len();
        let mut first = true;
        loop {
            let mut buf = vec![0u8; CHUNK_BYTES];
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| BlobError::Io(format!("reading {}: {e}", path.display())))?;
            if n == 0 && !first {
                return Ok(());
            }
            buf.truncate(n);
            let item = chunk(first.then_some(size), buf.into());
            first = false;
            if tx.send(item).await.is_err() || n == 0 {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(data: &[u8], digest: &str) -> Result<Piece, String> {
        Ok(Piece {
            data: Bytes::copy_from_slice(data),
            digest: digest.to_owned(),
        })
    }

    #[tokio::test]
    async fn both_layouts_put_list_and_remove_the_same_way() {
        for layout in [Layout::Sharded, Layout::Flat("tar")] {
            let dir = tempfile::tempdir().unwrap();
            let blobs = Blobs::open(dir.path(), layout, 1 << 20).unwrap();
            let digest = hex::encode(Sha256::digest(b"hello world"));
            let pieces = futures::stream::iter([piece(b"hello ", ""), piece(b"world", &digest)]);
            assert_eq!(blobs.put(11, pieces).await.unwrap(), (digest.clone(), 11));
            let relative = match layout {
                Layout::Sharded => format!("sha256/{}/{}", &digest[..2], &digest[2..]),
                Layout::Flat(extension) => format!("{digest}.{extension}"),
            };
            let kept = std::fs::read(dir.path().join(relative)).unwrap();
            assert_eq!(kept, b"hello world");
            let listed: Vec<String> = blobs.list().unwrap().into_iter().map(|e| e.0).collect();
            assert_eq!(listed, vec![digest.clone()], "{layout:?}");
            blobs.remove(&digest).unwrap();
            blobs.remove(&digest).unwrap();
            assert!(!blobs.has(&digest).unwrap());
            assert!(blobs.list().unwrap().is_empty());
        }
    }

    #[tokio::test]
    async fn a_short_upload_is_refused_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path(), Layout::Sharded, 1 << 20).unwrap();
        let digest = hex::encode(Sha256::digest(b"hello"));
        let pieces = futures::stream::iter([piece(b"hell", &digest)]);
        let err = blobs.put(5, pieces).await.unwrap_err();
        assert!(
            matches!(
                err,
                BlobError::SizeMismatch {
                    announced: 5,
                    actual: 4
                }
            ),
            "{err}"
        );
        assert!(blobs.list().unwrap().is_empty());
        let incoming = std::fs::read_dir(dir.path().join("incoming")).unwrap();
        assert_eq!(incoming.count(), 0);
    }
}
