//! A stage's files in and out: each attempt gets its own host folders, `in/` (mounted
//! read-only at `/vishwa/in`) filled with the outputs of the stages it needs, each checked
//! against its digest, and `out/` (mounted at `/vishwa/out`), from which the declared outputs
//! are uploaded after exit 0, hashed while they stream, and `metrics.json` is read.
//!
//! Inputs land in `in/<stage>/<file>`; a fan-out instance keeps its name, so a consumer of
//! `train` sees `in/train[chocolate]/model.pkl`, `in/train[vanilla]/model.pkl`, ... (a `/` in
//! an instance name becomes `_`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::Code;
use vishwa_proto::v1 as pb;

use crate::executor::ExecutorError;

type Client = crate::connect::WorkerClient;

/// Where a stage reads its inputs inside its container.
pub const CONTAINER_IN: &str = "/vishwa/in";
/// Where a stage writes its outputs inside its container.
pub const CONTAINER_OUT: &str = "/vishwa/out";
/// The file in `/vishwa/out` whose numbers become the stage's metrics.
pub const METRICS_FILE: &str = "metrics.json";
/// Bytes per upload chunk.
const CHUNK_BYTES: usize = 1 << 20;
/// Largest metrics.json read.
const MAX_METRICS_BYTES: u64 = 1 << 20;

/// One attempt's host folders.
#[derive(Debug, Clone)]
pub struct AttemptDirs {
    pub root: PathBuf,
    pub input: PathBuf,
    pub output: PathBuf,
    /// The working directory of a process stage that has no DAG folder, made by
    /// [`AttemptDirs::work_dir`] on first use and emptied with the others, so each attempt
    /// finds it empty, like a scratch directory of its own.
    pub work: PathBuf,
}

impl AttemptDirs {
    /// Creates fresh `in/` and `out/` for `attempt` under `base`.
    pub fn create(base: &Path, attempt: &str) -> Result<AttemptDirs, ExecutorError> {
        let root = base.join(safe_component(attempt));
        let dirs = AttemptDirs {
            input: root.join("in"),
            output: root.join("out"),
            work: root.join("work"),
            root,
        };
        let io = |e: std::io::Error| {
            ExecutorError::Io(format!(
                "cannot create the attempt's folders under {}: {e}",
                base.display()
            ))
        };
        if dirs.root.exists() {
            std::fs::remove_dir_all(&dirs.root).map_err(io)?;
        }
        std::fs::create_dir_all(&dirs.input).map_err(io)?;
        std::fs::create_dir_all(&dirs.output).map_err(io)?;
        // The container may run as any user: it must be able to write its outputs.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dirs.output, std::fs::Permissions::from_mode(0o777))
            .map_err(io)?;
        Ok(dirs)
    }

    /// The `work/` folder, made if this is its first use.
    pub fn work_dir(&self) -> std::io::Result<&Path> {
        std::fs::create_dir_all(&self.work)?;
        Ok(&self.work)
    }

    /// Removes the folders; what is left is only logged.
    pub fn remove(&self) {
        if let Err(e) = std::fs::remove_dir_all(&self.root) {
            tracing::warn!(dir = %self.root.display(), error = %e, "cannot remove an attempt's folders");
        }
    }
}

/// Attempt folders kept for reuse. Creating and deleting three directories per attempt
/// is cheap once, but thousands of short attempts make ext4 scan its recently deleted
/// inodes on every `mkdir` (it was most of the worker's CPU in the 10,000-stage benchmark),
/// so a finished attempt's folders are emptied and handed to the next attempt instead.
#[derive(Debug)]
pub struct AttemptDirPool {
    base: PathBuf,
    free: std::sync::Mutex<Vec<AttemptDirs>>,
}

impl AttemptDirPool {
    /// A pool whose folders live under `base` (created on first use).
    pub fn new(base: PathBuf) -> AttemptDirPool {
        AttemptDirPool {
            base,
            free: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn free(&self) -> std::sync::MutexGuard<'_, Vec<AttemptDirs>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Empty `in/` and `out/` folders for one attempt (and `work/`, if it was made).
    pub fn acquire(&self) -> Result<AttemptDirs, ExecutorError> {
        // Another worker sharing this cache folder may have swept it when it started.
        if let Some(dirs) = self.free().pop()
            && dirs.input.is_dir()
            && dirs.output.is_dir()
        {
            return Ok(dirs);
        }
        // Unique across pools and processes: workers may share a cache folder.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        AttemptDirs::create(&self.base, &format!("slot-{}-{n}", std::process::id()))
    }

    /// Empties an attempt's folders and keeps them for the next one; folders that cannot
    /// be emptied are deleted. A folder is made only when none is free, so the pool never
    /// holds more than the most attempts that ran here at once.
    pub fn release(&self, dirs: AttemptDirs) {
        let emptied = empty_dir(&dirs.input)
            .and_then(|()| empty_dir(&dirs.output))
            .and_then(|()| match empty_dir(&dirs.work) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            });
        match emptied {
            Ok(()) => self.free().push(dirs),
            Err(e) => {
                tracing::warn!(dir = %dirs.root.display(), error = %e, "cannot empty an attempt's folders; deleting them");
                dirs.remove();
            }
        }
    }
}

/// Removes everything inside `dir`, leaving `dir` itself.
fn empty_dir(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// The folder under `in/` for inputs from `stage`: the stage's own folder, or for an asset
/// (`@asset/NAME`) the folder `@asset/NAME`, each part kept inside its parent.
fn input_folder(stage: &str) -> PathBuf {
    match stage.strip_prefix("@asset/") {
        Some(asset) => Path::new("@asset").join(safe_component(asset)),
        None => PathBuf::from(safe_component(stage)),
    }
}

/// A file or folder name that cannot leave its parent.
fn safe_component(name: &str) -> String {
    // Percent-encoded, so distinct names stay distinct (`a/b` and `a_b` once shared a folder).
    let mut cleaned = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '%' => cleaned.push_str("%25"),
            '/' => cleaned.push_str("%2F"),
            '\0' => cleaned.push_str("%00"),
            c => cleaned.push(c),
        }
    }
    match cleaned.as_str() {
        "" | "." | ".." => format!("_{cleaned}"),
        _ => cleaned,
    }
}

fn transient(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
    )
}

/// Downloads every input into `dirs.input/<stage>/<name>`, verifying each digest.
pub async fn fetch_inputs(
    client: &Client,
    (worker_id, attempt_id): (&str, &str),
    dirs: &AttemptDirs,
    inputs: &[pb::ArtifactInput],
) -> Result<(), ExecutorError> {
    for input in inputs {
        let dir = dirs.input.join(input_folder(&input.stage));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| ExecutorError::Io(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join(safe_component(&input.name));
        fetch_one(client, (worker_id, attempt_id), input, &path).await?;
    }
    Ok(())
}

async fn fetch_one(
    client: &Client,
    (worker_id, attempt_id): (&str, &str),
    input: &pb::ArtifactInput,
    path: &Path,
) -> Result<(), ExecutorError> {
    let name = format!("{}/{}", input.stage, input.name);
    let failed = |reason: String, transient: bool| ExecutorError::Artifact {
        name: name.clone(),
        direction: "fetching input",
        reason,
        transient,
    };
    let plan = client
        .clone()
        .artifact_transfer(pb::ArtifactTransferRequest {
            attempt_id: attempt_id.to_owned(),
            worker_id: worker_id.to_owned(),
            name: name.clone(),
            digest: input.digest.clone(),
            size: input.size,
            upload: false,
        })
        .await
        .map_err(|s| failed(s.message().to_owned(), transient(&s)))?
        .into_inner();
    if plan.direct {
        let (actual, size) = crate::direct::download(&plan.url, path)
            .await
            .map_err(|e| failed(e.reason, e.transient))?;
        return check_download(input, name, actual, size);
    }
    let mut stream = client
        .clone()
        .fetch_artifact(pb::FetchArtifactRequest {
            digest: input.digest.clone(),
        })
        .await
        .map_err(|s| failed(s.message().to_owned(), transient(&s)))?
        .into_inner();
    let io = |e: std::io::Error| failed(format!("writing {}: {e}", path.display()), true);
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|s| failed(s.message().to_owned(), transient(&s)))?;
        size += chunk.data.len() as u64;
        hasher.update(&chunk.data);
        file.write_all(&chunk.data).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    check_download(input, name, hex::encode(hasher.finalize()), size)
}

/// A downloaded input must have the digest and size the index gave: a mismatch (corruption,
/// or an object overwritten in the bucket) fails the attempt naming both digests.
fn check_download(
    input: &pb::ArtifactInput,
    name: String,
    actual: String,
    size: u64,
) -> Result<(), ExecutorError> {
    if actual != input.digest {
        return Err(ExecutorError::DigestMismatch {
            name,
            expected: input.digest.clone(),
            actual,
        });
    }
    if size != input.size {
        return Err(ExecutorError::Artifact {
            name,
            direction: "fetching input",
            reason: format!("it is {size} bytes, but the index says {}", input.size),
            transient: false,
        });
    }
    Ok(())
}

/// Uploads each declared output of a finished attempt; a missing one (unless `optional`),
/// or one that is not a plain file, fails the attempt naming it.
pub async fn upload_outputs(
    client: &Client,
    worker_id: &str,
    attempt_id: &str,
    dirs: &AttemptDirs,
    outputs: &[String],
    optional: &[String],
) -> Result<Vec<pb::ArtifactRef>, ExecutorError> {
    let mut uploaded = Vec::with_capacity(outputs.len());
    for name in outputs {
        let path = dirs.output.join(safe_component(name));
        // Not followed: a link could point at any file on the worker's host.
        let meta = match tokio::fs::symlink_metadata(&path).await {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && optional.contains(name) => {
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ExecutorError::OutputMissing { name: name.clone() });
            }
            Err(e) => {
                return Err(ExecutorError::Io(format!("reading output `{name}`: {e}")));
            }
        };
        if !meta.file_type().is_file() {
            return Err(ExecutorError::Artifact {
                name: name.clone(),
                direction: "uploading output",
                reason: "it is not a regular file (a folder or a symlink); write the file itself, or pack a folder with tar".to_owned(),
                transient: false,
            });
        }
        uploaded.push(upload_one(client, worker_id, attempt_id, name, &path, meta.len()).await?);
    }
    Ok(uploaded)
}

async fn upload_one(
    client: &Client,
    worker_id: &str,
    attempt_id: &str,
    name: &str,
    path: &Path,
    size: u64,
) -> Result<pb::ArtifactRef, ExecutorError> {
    let failed = |reason: String, transient: bool| ExecutorError::Artifact {
        name: name.to_owned(),
        direction: "uploading output",
        reason,
        transient,
    };
    // The object is keyed by its digest: hash first, then ask where the bytes go.
    let digest = crate::direct::hash_file(path)
        .await
        .map_err(|e| failed(format!("reading it: {e}"), false))?;
    let plan = client
        .clone()
        .artifact_transfer(pb::ArtifactTransferRequest {
            attempt_id: attempt_id.to_owned(),
            worker_id: worker_id.to_owned(),
            name: name.to_owned(),
            digest: digest.clone(),
            size,
            upload: true,
        })
        .await
        .map_err(|s| failed(s.message().to_owned(), transient(&s)))?
        .into_inner();
    if plan.direct {
        let part_etags = crate::direct::upload(&plan, path, size)
            .await
            .map_err(|e| failed(e.reason, e.transient))?;
        let stored = client
            .clone()
            .complete_artifact_upload(pb::CompleteArtifactUploadRequest {
                attempt_id: attempt_id.to_owned(),
                worker_id: worker_id.to_owned(),
                name: name.to_owned(),
                digest,
                size,
                upload_id: plan.upload_id,
                part_etags,
            })
            .await
            .map_err(|s| failed(s.message().to_owned(), transient(&s)))?
            .into_inner();
        return Ok(stored);
    }
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| failed(format!("opening it: {e}"), false))?;
    let (tx, rx) = mpsc::channel::<pb::ArtifactChunk>(4);
    let header = pb::ArtifactChunk {
        attempt_id: attempt_id.to_owned(),
        worker_id: worker_id.to_owned(),
        name: name.to_owned(),
        size,
        ..Default::default()
    };
    // Read and hash while the upload runs; the digest goes in a last, empty chunk.
    let reader = tokio::spawn(async move {
        let mut hasher = Sha256::new();
        let mut first = Some(header);
        loop {
            let mut buf = vec![0u8; CHUNK_BYTES];
            let n = file.read(&mut buf).await?;
            buf.truncate(n);
            hasher.update(&buf);
            let mut chunk = first.take().unwrap_or_default();
            chunk.data = buf.into();
            if n == 0 {
                chunk.digest = hex::encode(hasher.finalize());
                let _ = tx.send(chunk).await;
                return Ok::<(), std::io::Error>(());
            }
            if tx.send(chunk).await.is_err() {
                return Ok(());
            }
        }
    });
    let result = client
        .clone()
        .upload_artifact(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    let read = reader.await;
    match read {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(failed(format!("reading it: {e}"), false)),
        Err(e) => return Err(failed(format!("reading it: {e}"), false)),
    }
    let stored = result
        .map_err(|s| failed(s.message().to_owned(), transient(&s)))?
        .into_inner();
    Ok(stored)
}

/// Reads `metrics.json` from the attempt's outputs: absent means no metrics; anything but a
/// flat JSON object of numbers is an error naming the key at fault.
pub fn read_metrics(dirs: &AttemptDirs) -> Result<BTreeMap<String, f64>, ExecutorError> {
    let path = dirs.output.join(METRICS_FILE);
    let bad = |reason: String| ExecutorError::BadMetrics { reason };
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(bad(format!("cannot read it: {e}"))),
    };
    if !meta.file_type().is_file() {
        return Err(bad("it is not a regular file".to_owned()));
    }
    if meta.len() > MAX_METRICS_BYTES {
        return Err(bad(format!(
            "it is {} bytes, over the limit of {MAX_METRICS_BYTES}",
            meta.len()
        )));
    }
    let text = std::fs::read(&path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    parse_metrics(&text)
}

/// Parses a flat JSON object of numbers.
pub fn parse_metrics(text: &[u8]) -> Result<BTreeMap<String, f64>, ExecutorError> {
    let bad = |reason: String| ExecutorError::BadMetrics { reason };
    let value: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| bad(format!("it is not valid JSON: {e}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(bad(format!(
            "it must be a JSON object of numbers like {{\"accuracy\": 0.93}}, not {}",
            json_kind(&value)
        )));
    };
    let mut metrics = BTreeMap::new();
    for (key, value) in map {
        let Some(number) = value.as_f64() else {
            return Err(bad(format!(
                "key `{key}` is {}, not a number; metrics are a flat object of numbers",
                json_kind(&value)
            )));
        };
        metrics.insert(key, number);
    }
    Ok(metrics)
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_attempt_folders_come_back_empty_for_the_next_attempt() {
        let base = tempfile::tempdir().unwrap();
        let pool = AttemptDirPool::new(base.path().join("attempts"));
        let first = pool.acquire().unwrap();
        std::fs::write(first.output.join("model.pkl"), b"m").unwrap();
        std::fs::create_dir(first.input.join("train")).unwrap();
        std::fs::write(first.input.join("train/data.csv"), b"d").unwrap();
        std::fs::write(first.work_dir().unwrap().join("scratch.txt"), b"s").unwrap();
        // A second attempt running at the same time gets folders of its own.
        let second = pool.acquire().unwrap();
        assert_ne!(first.root, second.root);
        let root = first.root.clone();
        pool.release(first);
        let again = pool.acquire().unwrap();
        assert_eq!(again.root, root, "released folders are reused");
        assert_eq!(std::fs::read_dir(&again.input).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(&again.output).unwrap().count(), 0);
        assert_eq!(
            std::fs::read_dir(again.work_dir().unwrap())
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn metrics_are_a_flat_object_of_numbers() {
        let m = parse_metrics(br#"{"accuracy": 0.93, "rows": 500}"#).unwrap();
        assert_eq!(m["accuracy"], 0.93);
        assert_eq!(m["rows"], 500.0);
        let err = parse_metrics(br#"{"accuracy": "high"}"#).unwrap_err();
        assert!(
            err.to_string().contains("key `accuracy` is a string"),
            "{err}"
        );
        let err = parse_metrics(br#"{"nested": {"a": 1}}"#).unwrap_err();
        assert!(
            err.to_string().contains("key `nested` is an object"),
            "{err}"
        );
        let err = parse_metrics(b"[1, 2]").unwrap_err();
        assert!(err.to_string().contains("not a list"), "{err}");
        let err = parse_metrics(b"{accuracy: 1").unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
        assert!(!err.is_transient());
    }

    #[test]
    fn names_cannot_leave_their_folder() {
        assert_eq!(safe_component("train[a/b]"), "train[a%2Fb]");
        assert_eq!(safe_component("train[a_b]"), "train[a_b]");
        assert_eq!(safe_component("train[a%2Fb]"), "train[a%252Fb]");
        assert_eq!(safe_component(".."), "_..");
        assert_eq!(safe_component("train[chocolate]"), "train[chocolate]");
        assert_eq!(input_folder("train"), PathBuf::from("train"));
        assert_eq!(
            input_folder("@asset/survey-data"),
            Path::new("@asset").join("survey-data")
        );
        assert_eq!(input_folder("@asset/.."), Path::new("@asset").join("_.."));
    }
}
