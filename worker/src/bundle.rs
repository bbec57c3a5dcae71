//! The worker's bundle cache: a DAG folder fetched from the scheduler by digest, verified,
//! unpacked once into `<cache>/<digest>/` and mounted read-only into every stage of that DAG
//! version. Unpacking refuses anything that could escape the folder: absolute paths, `..`,
//! symlinks pointing outside it, hard links and device files.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use vishwa_proto::v1 as pb;

use crate::executor::ExecutorError;

/// Largest bundle a worker fetches.
pub const MAX_BUNDLE_BYTES: u64 = 1 << 30;

type Client = crate::connect::WorkerClient;

/// Unpacked bundles on this worker's disk.
pub struct BundleCache {
    dir: PathBuf,
    /// One fetch per digest at a time; others wait for it.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl BundleCache {
    /// A cache in `dir` (created when missing).
    pub fn open(dir: &Path) -> std::io::Result<BundleCache> {
        std::fs::create_dir_all(dir.join("incoming"))?;
        Ok(BundleCache {
            dir: dir.to_path_buf(),
            fetching: Mutex::new(HashMap::new()),
        })
    }

    /// The unpacked folder of bundle `digest`, fetching it first when it is not here yet.
    pub async fn ensure(&self, client: &Client, digest: &str) -> Result<PathBuf, ExecutorError> {
        let rejected = |reason: String| ExecutorError::BundleRejected {
            digest: digest.to_owned(),
            reason,
        };
        let valid = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Err(rejected("not a sha256 digest".to_owned()));
        }
        let target = self.dir.join(digest);
        if target.is_dir() {
            return Ok(target);
        }
        let lock = {
            let mut fetching = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
            fetching.entry(digest.to_owned()).or_default().clone()
        };
        let _guard = lock.lock().await;
        if target.is_dir() {
            return Ok(target);
        }
        let tar_path = self.dir.join("incoming").join(format!("{digest}.tar"));
        let result = self.fetch(client, digest, &tar_path).await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tar_path).await;
            return Err(e);
        }
        let staging = self.dir.join("incoming").join(format!("{digest}.d"));
        let _ = std::fs::remove_dir_all(&staging);
        let unpack = {
            let tar_path = tar_path.clone();
            let staging = staging.clone();
            tokio::task::spawn_blocking(move || unpack(&tar_path, &staging))
        };
        let unpacked = unpack
            .await
            .map_err(|e| rejected(format!("unpacking failed: {e}")))
            .and_then(|r| r.map_err(rejected));
        let _ = std::fs::remove_file(&tar_path);
        if let Err(e) = unpacked {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        std::fs::rename(&staging, &target).map_err(|e| ExecutorError::BundleUnavailable {
            digest: digest.to_owned(),
            reason: format!("cannot keep it in {}: {e}", self.dir.display()),
        })?;
        Ok(target)
    }

    /// Downloads bundle `digest` to `path`, checking size and digest.
    async fn fetch(&self, client: &Client, digest: &str, path: &Path) -> Result<(), ExecutorError> {
        let unavailable = |reason: String| ExecutorError::BundleUnavailable {
            digest: digest.to_owned(),
            reason,
        };
        let rejected = |reason: String| ExecutorError::BundleRejected {
            digest: digest.to_owned(),
            reason,
        };
        let mut stream = client
            .clone()
            .fetch_bundle(pb::FetchBundleRequest {
                digest: digest.to_owned(),
            })
            .await
            .map_err(|s| unavailable(s.message().to_owned()))?
            .into_inner();
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(|e| unavailable(format!("writing {}: {e}", path.display())))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut announced = None;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|s| unavailable(s.message().to_owned()))?;
            if announced.is_none() {
                announced = Some(chunk.size);
                if chunk.size > MAX_BUNDLE_BYTES {
                    return Err(rejected(format!(
                        "it is {} bytes, over the worker's limit of {MAX_BUNDLE_BYTES}",
                        chunk.size
                    )));
                }
            }
            size += chunk.data.len() as u64;
            if size > MAX_BUNDLE_BYTES {
                return Err(rejected("it is larger than announced".to_owned()));
            }
            hasher.update(&chunk.data);
            file.write_all(&chunk.data)
                .await
                .map_err(|e| unavailable(format!("writing {}: {e}", path.display())))?;
        }
        file.flush()
            .await
            .map_err(|e| unavailable(format!("writing {}: {e}", path.display())))?;
        let actual = hex::encode(hasher.finalize());
        if actual != digest {
            return Err(rejected(format!(
                "its content hashes to {actual}: it was altered on the way"
            )));
        }
        if announced.is_some_and(|a| a != size) {
            return Err(rejected(
                "its size does not match what was announced".to_owned(),
            ));
        }
        Ok(())
    }
}

/// Unpacks a bundle tar into `dest`, refusing anything that could escape it.
pub fn unpack(tar_path: &Path, dest: &Path) -> Result<(), String> {
    let file = std::fs::File::open(tar_path).map_err(|e| e.to_string())?;
    unpack_from(file, dest)
}

fn unpack_from(reader: impl Read, dest: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dest).map_err(|e| e.to_string())?;
    let root = dest.canonicalize().map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("corrupt tar entry: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("bad path in bundle: {e}"))?
            .into_owned();
        let relative = safe_relative(&path)?;
        let out = dest.join(&relative);
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
            continue;
        }
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            // An earlier symlink must not redirect this entry out of the bundle.
            let real = parent.canonicalize().map_err(|e| e.to_string())?;
            if !real.starts_with(&root) {
                return Err(format!(
                    "{} escapes the bundle through a symlink",
                    path.display()
                ));
            }
        }
        if out.symlink_metadata().is_ok() {
            return Err(format!("{} appears twice in the bundle", path.display()));
        }
        if kind.is_symlink() {
            let target = entry
                .link_name()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("symlink {} has no target", path.display()))?
                .into_owned();
            symlink_stays_inside(&relative, &target)?;
            std::os::unix::fs::symlink(&target, &out).map_err(|e| e.to_string())?;
        } else if kind.is_file() {
            let mode = entry.header().mode().unwrap_or(0o644);
            let mut data = Vec::new();
            entry.read_to_end(&mut data).map_err(|e| e.to_string())?;
            std::fs::write(&out, &data).map_err(|e| e.to_string())?;
            use std::os::unix::fs::PermissionsExt;
            let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
            std::fs::set_permissions(&out, std::fs::Permissions::from_mode(mode))
                .map_err(|e| e.to_string())?;
        } else {
            return Err(format!(
                "{} is a {kind:?} entry; bundles hold only files, folders and symlinks",
                path.display()
            ));
        }
    }
    Ok(())
}

/// `path` as a plain relative path, or why it is refused.
fn safe_relative(path: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            _ => return Err(format!("{} escapes the bundle", path.display())),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(format!("{} is not a file name", path.display()));
    }
    Ok(out)
}

/// Refuses a symlink at `link` (relative to the bundle root) whose `target` leads outside.
fn symlink_stays_inside(link: &Path, target: &Path) -> Result<(), String> {
    let escape = || {
        format!(
            "symlink {} -> {} points outside the bundle",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            if let Some(link) = link {
                header.set_link_name(link).unwrap();
            }
            // Write the raw name so hostile paths reach the unpacker unaltered.
            let name = &mut header.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn files_folders_and_inner_symlinks_unpack() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_with(&[
            ("dag.yaml", tar::EntryType::Regular, b"name: x", None),
            ("scripts/", tar::EntryType::Directory, b"", None),
            ("scripts/run.sh", tar::EntryType::Regular, b"echo hi", None),
            (
                "run.sh",
                tar::EntryType::Symlink,
                b"",
                Some("scripts/run.sh"),
            ),
        ]);
        unpack_from(&tar[..], dir.path()).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("dag.yaml")).unwrap(),
            b"name: x"
        );
        assert_eq!(
            std::fs::read(dir.path().join("run.sh")).unwrap(),
            b"echo hi"
        );
    }

    #[test]
    fn paths_that_escape_the_bundle_are_refused() {
        for (name, link) in [
            ("../evil", None),
            ("/etc/evil", None),
            ("a/../../evil", None),
            ("link", Some("/etc/passwd")),
            ("link", Some("../outside")),
            ("sub/link", Some("../../outside")),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let kind = if link.is_some() {
                tar::EntryType::Symlink
            } else {
                tar::EntryType::Regular
            };
            let tar = tar_with(&[(name, kind, b"", link)]);
            let err = unpack_from(&tar[..], &dir.path().join("out")).unwrap_err();
            assert!(
                err.contains("escapes") || err.contains("outside"),
                "{name}: {err}"
            );
            assert!(!dir.path().join("evil").exists());
        }
    }

    #[test]
    fn a_symlink_cannot_redirect_a_later_entry() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        // `b` points at the bundle's root, so `b/b/..` is lexically inside but really outside.
        let tar = tar_with(&[
            ("b", tar::EntryType::Symlink, b"", Some(".")),
            ("a", tar::EntryType::Symlink, b"", Some("b/b/..")),
            ("a/evil", tar::EntryType::Regular, b"x", None),
        ]);
        let err = unpack_from(&tar[..], &out).unwrap_err();
        assert!(err.contains("escapes"), "{err}");
        assert!(!dir.path().join("evil").exists());
        // A file entry over an earlier symlink would write through it.
        let out = dir.path().join("out2");
        let tar = tar_with(&[
            ("x", tar::EntryType::Symlink, b"", Some("y")),
            ("x", tar::EntryType::Regular, b"x", None),
        ]);
        let err = unpack_from(&tar[..], &out).unwrap_err();
        assert!(err.contains("twice"), "{err}");
    }

    #[test]
    fn hard_links_and_devices_are_refused() {
        for kind in [
            tar::EntryType::Link,
            tar::EntryType::Char,
            tar::EntryType::Fifo,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let tar = tar_with(&[("x", kind, b"", Some("dag.yaml"))]);
            assert!(unpack_from(&tar[..], dir.path()).is_err(), "{kind:?}");
        }
    }

    #[test]
    fn a_symlink_may_point_anywhere_inside() {
        assert!(symlink_stays_inside(Path::new("a/b/link"), Path::new("../c")).is_ok());
        assert!(symlink_stays_inside(Path::new("a/link"), Path::new("../c")).is_ok());
        assert!(symlink_stays_inside(Path::new("link"), Path::new("../c")).is_err());
    }
}
