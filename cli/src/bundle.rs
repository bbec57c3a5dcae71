//! Packing a DAG folder as a bundle for `vishwa submit DIR`: a tar with entries in sorted
//! order and no timestamps or owners, so the same files always give the same digest (and
//! re-submitting unchanged content is a no-op). Symlinks must stay inside the folder.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use sha2::{Digest, Sha256};
use vishwa_proto::v1 as pb;

use crate::client::Client;

/// Largest bundle the CLI packs (the scheduler has its own limit, 256 MiB by default).
pub(crate) const MAX_BUNDLE_BYTES: u64 = 256 << 20;
/// Folders never packed.
const SKIPPED: &[&str] = &[".git", "__pycache__", ".venv", "node_modules"];
const CHUNK_BYTES: usize = 1 << 20;

/// A packed bundle in a temporary file.
pub(crate) struct Packed {
    file: tempfile::NamedTempFile,
    pub(crate) digest: String,
    pub(crate) size: u64,
    pub(crate) files: usize,
}

/// Packs `dir` (a DAG folder) deterministically.
pub(crate) fn pack(dir: &Path) -> Result<Packed> {
    let mut paths = Vec::new();
    collect(dir, Path::new(""), &mut paths)?;
    paths.sort();
    let file = tempfile::NamedTempFile::new().context("cannot create a temporary file")?;
    let mut builder = tar::Builder::new(HashingWriter {
        inner: file.reopen().context("cannot reopen the temporary file")?,
        hasher: Sha256::new(),
        size: 0,
    });
    let mut files = 0;
    for relative in &paths {
        let full = dir.join(relative);
        let meta = std::fs::symlink_metadata(&full)
            .with_context(|| format!("cannot read {}", full.display()))?;
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&full)?;
            check_symlink(relative, &target)?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            builder.append_link(&mut header, relative, &target)?;
        } else if meta.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder.append_data(&mut header, relative, std::io::empty())?;
        } else if meta.is_file() {
            use std::os::unix::fs::PermissionsExt;
            let executable = meta.permissions().mode() & 0o111 != 0;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if executable { 0o755 } else { 0o644 });
            header.set_size(meta.len());
            let data = std::fs::File::open(&full)
                .with_context(|| format!("cannot read {}", full.display()))?;
            builder.append_data(&mut header, relative, data)?;
            files += 1;
        } else {
            bail!(
                "{} is neither a file, a folder nor a symlink; a DAG folder holds only those",
                full.display()
            );
        }
        if builder.get_ref().size > MAX_BUNDLE_BYTES {
            bail!(
                "{} holds more than {} MiB; keep data out of the DAG folder (stages can fetch it, or use mounts)",
                dir.display(),
                MAX_BUNDLE_BYTES >> 20
            );
        }
    }
    let writer = builder.into_inner().context("cannot finish the bundle")?;
    Ok(Packed {
        digest: hex::encode(writer.hasher.finalize()),
        size: writer.size,
        files,
        file,
    })
}

/// Uploads `packed` unless the scheduler already has it; returns whether it was sent.
pub(crate) async fn upload(client: &mut Client, packed: &Packed) -> Result<bool> {
    if client.has_bundle(&packed.digest).await? {
        return Ok(false);
    }
    let mut file = packed.file.reopen()?;
    let digest = packed.digest.clone();
    let size = packed.size;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Read;
        let mut first = true;
        loop {
            let mut buf = vec![0u8; CHUNK_BYTES];
            let n = file.read(&mut buf)?;
            if n == 0 && !first {
                return Ok(());
            }
            buf.truncate(n);
            let chunk = pb::BundleChunk {
                digest: if first { digest.clone() } else { String::new() },
                size: if first { size } else { 0 },
                data: buf.into(),
            };
            first = false;
            if tx.blocking_send(chunk).is_err() || n == 0 {
                return Ok(());
            }
        }
    });
    client
        .upload_bundle(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?;
    reader
        .await
        .map_err(|e| anyhow!("reading the bundle: {e}"))??;
    Ok(true)
}

fn collect(root: &Path, relative: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let dir = root.join(relative);
    let entries =
        std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if SKIPPED.iter().any(|s| name == *s) {
            continue;
        }
        let child = relative.join(&name);
        let kind = entry.file_type()?;
        out.push(child.clone());
        if kind.is_dir() {
            collect(root, &child, out)?;
        }
    }
    Ok(())
}

/// Refuses a symlink at `link` (relative to the folder) whose target leads outside it.
fn check_symlink(link: &Path, target: &Path) -> Result<()> {
    let escape = || {
        anyhow!(
            "symlink {} -> {} points outside the DAG folder; bundles must be self-contained",
            link.display(),
            target.display()
        )
    };
    if target.is_absolute() {
        return Err(escape());
    }
    let mut depth: i64 = link.components().count() as i64 - 1;
    for component in target.components() {
        match component {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return Err(escape()),
        }
        if depth < 0 {
            return Err(escape());
        }
    }
    Ok(())
}

/// Hashes and counts what is written through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("dag.yaml"), "name: x\n").unwrap();
        std::fs::create_dir(dir.path().join("scripts")).unwrap();
        std::fs::write(dir.path().join("scripts/train.py"), "print(1)\n").unwrap();
        std::fs::create_dir(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join(".git/HEAD"), "ref").unwrap();
        dir
    }

    #[test]
    fn the_same_files_always_pack_to_the_same_digest() {
        let a = folder();
        let b = folder();
        let (pa, pb) = (pack(a.path()).unwrap(), pack(b.path()).unwrap());
        assert_eq!(pa.digest, pb.digest);
        assert_eq!(pa.files, 2, ".git is left out");
        std::fs::write(a.path().join("scripts/train.py"), "print(2)\n").unwrap();
        assert_ne!(pack(a.path()).unwrap().digest, pb.digest);
    }

    #[test]
    fn symlinks_leading_outside_the_folder_are_refused() {
        let dir = folder();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("passwd")).unwrap();
        let err = pack(dir.path()).err().unwrap();
        assert!(err.to_string().contains("points outside"), "{err}");
        std::fs::remove_file(dir.path().join("passwd")).unwrap();
        std::os::unix::fs::symlink("scripts/train.py", dir.path().join("train.py")).unwrap();
        assert!(pack(dir.path()).is_ok());
    }
}
