//! The sled implementation of [`Store`].
//!
//! Layout: one tree `state` holds every record that must change together, under key
//! prefixes (`d/` DAGs, `v/` DAG versions, `r/` runs, `s/` stage instances, `c/` schedule
//! cursors, `a/` outputs by run, `ad/` outputs by digest, `u/` consumers by digest, `k/`
//! cache entries, `kl/` last cache lookups, `as/` assets, `at/` asset trigger cursors), so a batch is one atomic `apply_batch`. Logs live in their own tree with binary keys
//! `run \0 stage \0 attempt(u32 BE) seq(u64 BE)` and values `stream(u8) time(i64 BE) bytes`.
//! Secrets (ciphertext only) live in tree `secrets` keyed by name; the audit log in tree
//! `audit` keyed by a monotonic id (u64 BE).
//!
//! Only the store's writer thread (see [`super::writer`]) applies batches and flushes; sled's
//! own periodic flusher is off, so nothing flushes concurrently with a write.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::writer::{Durable, Writer};
use super::{
    ArtifactRecord, AssetCursor, AssetRecord, AuditEntry, CacheEntry, ConsumerRecord, DagRecord,
    DagVersion, LastLookup, LogPosition, LogRecord, LogStreamKind, ScheduleRecord, SecretRecord,
    Store, StoreError, WriteBatch, WriteOp,
};
use crate::ids::RunId;
use crate::run::{RunRecord, StageRecord};

/// How long [`SledStore::open`] waits for a lock held by a handle that is going away.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Memory sled may use to cache pages.
const CACHE_BYTES: u64 = 64 << 20;

/// A [`Store`] on sled, in a directory of its own.
#[derive(Clone)]
pub struct SledStore {
    state: sled::Tree,
    logs: sled::Tree,
    secrets: sled::Tree,
    audit: sled::Tree,
    writer: Arc<Writer>,
}

/// The writer thread's side of the store: the only code that writes to sled.
struct SledWriter {
    db: sled::Db,
    state: sled::Tree,
    logs: sled::Tree,
    secrets: sled::Tree,
    audit: sled::Tree,
    dir: PathBuf,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    ///
    /// sled holds an exclusive file lock while a `Db` lives, and its background flusher
    /// lets go of it a moment after the last handle drops. A restart in the same process
    /// (tests, `vishwa dev`) can get there first, so a held lock is retried for a few
    /// seconds before it is reported as another process using the directory.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            match sled::Config::new()
                .path(dir)
                .mode(sled::Mode::HighThroughput)
                // The writer flushes after every group of batches.
                .flush_every_ms(None)
                // sled's default page cache is 1 GiB: a scheduler storing a big log would
                // grow toward it. Pages beyond this are read from disk again.
                .cache_capacity(CACHE_BYTES)
                .open()
            {
                Ok(db) => break db,
                Err(sled::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(sled::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Err(StoreError::Backend(format!(
                        "opening {}: the store is locked by another process (is another \
                         scheduler running on this data dir?)",
                        dir.display()
                    )));
                }
                Err(e) => {
                    return Err(StoreError::Backend(format!(
                        "opening {}: {e}",
                        dir.display()
                    )));
                }
            }
        };
        let state = db.open_tree("state")?;
        let logs = db.open_tree("logs")?;
        let secrets = db.open_tree("secrets")?;
        let audit = db.open_tree("audit")?;
        let writer = Writer::start(
            "sled",
            SledWriter {
                db: db.clone(),
                state: state.clone(),
                logs: logs.clone(),
                secrets: secrets.clone(),
                audit: audit.clone(),
                dir: dir.to_path_buf(),
            },
        )?;
        Ok(SledStore {
            state,
            logs,
            secrets,
            audit,
            writer: Arc::new(writer),
        })
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.state.get(key)? {
            Some(bytes) => decode(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn scan<T: DeserializeOwned>(&self, prefix: &[u8]) -> Result<Vec<T>, StoreError> {
        scan_tree(&self.state, prefix)
    }
}

/// Every record under `prefix` in `tree`, decoded.
fn scan_tree<T: DeserializeOwned>(tree: &sled::Tree, prefix: &[u8]) -> Result<Vec<T>, StoreError> {
    tree.scan_prefix(prefix)
        .map(|item| {
            let (key, value) = item?;
            decode(&key, &value)
        })
        .collect()
}

/// Adds to `b` the removal of every log chunk of `run`.
fn delete_logs(logs: &sled::Tree, run: &RunId, b: &mut sled::Batch) -> Result<(), StoreError> {
    for k in logs.scan_prefix(log_prefix(run, None)).keys() {
        b.remove(k?);
    }
    Ok(())
}

/// Adds to `b` the removal of every state record of `run`.
fn delete_run_records(
    state: &sled::Tree,
    run: &RunId,
    b: &mut sled::Batch,
) -> Result<(), StoreError> {
    b.remove(key("r/", &[run.as_str()]));
    let mut stages = key("s/", &[run.as_str()]);
    stages.push(0);
    for k in state.scan_prefix(stages).keys() {
        b.remove(k?);
    }
    let mut artifacts = key("a/", &[run.as_str()]);
    artifacts.push(0);
    for a in scan_tree::<ArtifactRecord>(state, &artifacts)? {
        b.remove(artifact_key(&a));
        b.remove(artifact_digest_key(&a));
    }
    for c in scan_tree::<ConsumerRecord>(state, b"u/")? {
        if &c.run == run {
            b.remove(consumer_key(&c));
        }
    }
    for e in scan_tree::<CacheEntry>(state, b"k/")? {
        if &e.run == run {
            b.remove(key("k/", &[&e.key]));
        }
    }
    for l in scan_tree::<LastLookup>(state, b"kl/")? {
        if &l.run == run {
            b.remove(key("kl/", &[&l.dag, &l.stage]));
        }
    }
    Ok(())
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize to JSON")
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

fn key(prefix: &str, parts: &[&str]) -> Vec<u8> {
    let mut k = prefix.as_bytes().to_vec();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p.as_bytes());
    }
    k
}

fn artifact_key(a: &ArtifactRecord) -> Vec<u8> {
    key("a/", &[a.run.as_str(), &a.stage, &a.name])
}

fn artifact_digest_key(a: &ArtifactRecord) -> Vec<u8> {
    key("ad/", &[&a.digest, a.run.as_str(), &a.stage, &a.name])
}

fn consumer_key(c: &ConsumerRecord) -> Vec<u8> {
    key("u/", &[&c.digest, c.run.as_str(), &c.stage])
}

fn log_prefix(run: &RunId, stage: Option<&str>) -> Vec<u8> {
    let mut k = run.as_str().as_bytes().to_vec();
    k.push(0);
    if let Some(stage) = stage {
        k.extend_from_slice(stage.as_bytes());
        k.push(0);
    }
    k
}

fn log_key(run: &RunId, stage: &str, attempt: u32, seq: u64) -> Vec<u8> {
    let mut k = log_prefix(run, Some(stage));
    k.extend_from_slice(&attempt.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn stream_byte(s: LogStreamKind) -> u8 {
    match s {
        LogStreamKind::Stdout => 1,
        LogStreamKind::Stderr => 2,
        LogStreamKind::System => 3,
    }
}

fn decode_log(key: &[u8], value: &[u8]) -> Result<LogRecord, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_owned(),
    };
    let mut parts = key.splitn(3, |b| *b == 0);
    let (Some(_run), Some(stage), Some(tail)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(corrupt("log key has too few parts"));
    };
    if tail.len() != 12 || value.len() < 9 {
        return Err(corrupt("log record has the wrong length"));
    }
    let attempt = u32::from_be_bytes(tail[..4].try_into().expect("4 bytes"));
    let seq = u64::from_be_bytes(tail[4..].try_into().expect("8 bytes"));
    let stream = match value[0] {
        1 => LogStreamKind::Stdout,
        2 => LogStreamKind::Stderr,
        3 => LogStreamKind::System,
        _ => return Err(corrupt("unknown log stream")),
    };
    let time_ms = i64::from_be_bytes(value[1..9].try_into().expect("8 bytes"));
    Ok(LogRecord {
        stage: String::from_utf8_lossy(stage).into_owned(),
        attempt,
        seq,
        stream,
        time_ms,
        data: value[9..].to_vec(),
    })
}

impl SledWriter {
    fn write_failed(&self, e: sled::Error) -> StoreError {
        let reason = match e {
            sled::Error::Io(io) => io_reason(&io),
            other => other.to_string(),
        };
        StoreError::WriteFailed {
            reason,
            path: self.dir.clone(),
        }
    }
}

/// An I/O error as a person reads it: `No space left on device`, without `(os error 28)`.
/// sled wraps some OS errors in a custom error that only prints the original's `Debug`
/// (`Os { code: 28, .. }`); the code is taken from there.
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    let code = e.raw_os_error().or_else(|| {
        let (_, rest) = text.split_once("code: ")?;
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    });
    let text = match code {
        Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
        None => text,
    };
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_owned(),
        _ => text,
    }
}

impl Durable for SledWriter {
    fn apply(&mut self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        let mut state = sled::Batch::default();
        let mut logs = sled::Batch::default();
        let mut secrets = sled::Batch::default();
        let mut audit = sled::Batch::default();
        let (mut any_state, mut any_logs, mut any_secrets, mut any_audit) =
            (false, false, false, false);
        for op in ops {
            match &op {
                WriteOp::Logs(..) => any_logs = true,
                WriteOp::Secret(_) | WriteOp::DeleteSecret(_) => any_secrets = true,
                WriteOp::Audit(_) => any_audit = true,
                _ => any_state = true,
            }
            match op {
                WriteOp::Dag(d) => state.insert(key("d/", &[&d.name]), encode(&d)),
                WriteOp::DagVersion(v) => {
                    state.insert(key("v/", &[&v.name, &v.version]), encode(&v))
                }
                WriteOp::Run(r) => state.insert(key("r/", &[r.id.as_str()]), encode(&r)),
                WriteOp::Stage(run, s) => {
                    state.insert(key("s/", &[run.as_str(), &s.instance]), encode(&*s))
                }
                WriteOp::Schedule(c) => state.insert(key("c/", &[&c.dag]), encode(&c)),
                WriteOp::Asset(a) => state.insert(key("as/", &[&a.name]), encode(&a)),
                WriteOp::AssetCursor(c) => state.insert(key("at/", &[&c.dag]), encode(&c)),
                WriteOp::Artifact(a) => {
                    state.insert(artifact_key(&a), encode(&a));
                    state.insert(artifact_digest_key(&a), encode(&a));
                }
                WriteOp::Consumer(c) => state.insert(consumer_key(&c), encode(&c)),
                WriteOp::Cache(e) => state.insert(key("k/", &[&e.key]), encode(&e)),
                WriteOp::LastLookup(l) => state.insert(key("kl/", &[&l.dag, &l.stage]), encode(&l)),
                WriteOp::DeleteArtifact(a) => {
                    state.remove(artifact_key(&a));
                    state.remove(artifact_digest_key(&a));
                }
                WriteOp::DeleteConsumer(c) => state.remove(consumer_key(&c)),
                WriteOp::DeleteCache(k) => state.remove(key("k/", &[&k])),
                WriteOp::Logs(run, chunks) => {
                    for c in chunks {
                        let (k, v) = encode_log(&run, &c);
                        logs.insert(k, v);
                    }
                }
                WriteOp::Secret(secret) => secrets.insert(secret.name.as_bytes(), encode(&secret)),
                WriteOp::DeleteSecret(name) => secrets.remove(name.as_bytes()),
                WriteOp::Audit(entry) => {
                    let id = self.db.generate_id().map_err(|e| self.write_failed(e))?;
                    audit.insert(&id.to_be_bytes(), encode(&entry));
                }
                WriteOp::DeleteRun(run) => {
                    any_logs = true;
                    delete_logs(&self.logs, &run, &mut logs)?;
                    delete_run_records(&self.state, &run, &mut state)?;
                }
            }
        }
        for (tree, batch, any) in [
            (&self.state, state, any_state),
            (&self.logs, logs, any_logs),
            (&self.secrets, secrets, any_secrets),
            (&self.audit, audit, any_audit),
        ] {
            if any {
                tree.apply_batch(batch).map_err(|e| self.write_failed(e))?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.db.flush().map_err(|e| self.write_failed(e))?;
        Ok(())
    }
}

fn encode_log(run: &RunId, c: &LogRecord) -> (Vec<u8>, Vec<u8>) {
    let mut k = log_prefix(run, Some(&c.stage));
    k.extend_from_slice(&c.attempt.to_be_bytes());
    k.extend_from_slice(&c.seq.to_be_bytes());
    let mut v = Vec::with_capacity(9 + c.data.len());
    v.push(stream_byte(c.stream));
    v.extend_from_slice(&c.time_ms.to_be_bytes());
    v.extend_from_slice(&c.data);
    (k, v)
}

#[async_trait]
impl Store for SledStore {
    async fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.writer.commit(batch).await
    }

    fn write_failure(&self) -> Option<StoreError> {
        self.writer.failure()
    }

    async fn wait_write_failure(&self) -> StoreError {
        self.writer.wait_failure().await
    }

    fn get_dag(&self, name: &str) -> Result<Option<DagRecord>, StoreError> {
        self.get(&key("d/", &[name]))
    }

    fn list_dags(&self) -> Result<Vec<DagRecord>, StoreError> {
        self.scan(b"d/")
    }

    fn get_dag_version(&self, name: &str, version: &str) -> Result<Option<DagVersion>, StoreError> {
        self.get(&key("v/", &[name, version]))
    }

    fn get_run(&self, id: &RunId) -> Result<Option<RunRecord>, StoreError> {
        self.get(&key("r/", &[id.as_str()]))
    }

    fn list_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        self.scan(b"r/")
    }

    fn run_stages(&self, id: &RunId) -> Result<Vec<StageRecord>, StoreError> {
        let mut prefix = key("s/", &[id.as_str()]);
        prefix.push(0);
        self.scan(&prefix)
    }

    fn get_schedule(&self, dag: &str) -> Result<Option<ScheduleRecord>, StoreError> {
        self.get(&key("c/", &[dag]))
    }

    fn list_schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError> {
        self.scan(b"c/")
    }

    fn get_asset(&self, name: &str) -> Result<Option<AssetRecord>, StoreError> {
        self.get(&key("as/", &[name]))
    }

    fn list_assets(&self) -> Result<Vec<AssetRecord>, StoreError> {
        self.scan(b"as/")
    }

    fn get_asset_cursor(&self, dag: &str) -> Result<Option<AssetCursor>, StoreError> {
        self.get(&key("at/", &[dag]))
    }

    fn read_log_page(
        &self,
        run: &RunId,
        stage: Option<&str>,
        from: Option<&LogPosition>,
        max_bytes: usize,
    ) -> Result<Vec<LogRecord>, StoreError> {
        let prefix = log_prefix(run, stage);
        let start = match from {
            Some(p) => log_key(run, &p.stage, p.attempt, p.seq).max(prefix.clone()),
            None => prefix.clone(),
        };
        let mut page = Vec::new();
        let mut bytes = 0;
        for item in self.logs.range(start..) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) || bytes >= max_bytes {
                break;
            }
            let record = decode_log(&k, &v)?;
            bytes += record.data.len();
            page.push(record);
        }
        Ok(page)
    }

    fn get_secret(&self, name: &str) -> Result<Option<SecretRecord>, StoreError> {
        match self.secrets.get(name.as_bytes())? {
            Some(bytes) => decode(name.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn list_secrets(&self) -> Result<Vec<SecretRecord>, StoreError> {
        self.secrets
            .iter()
            .map(|item| {
                let (k, v) = item?;
                decode(&k, &v)
            })
            .collect()
    }

    fn list_audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let mut entries = self
            .audit
            .iter()
            .rev()
            .take(limit)
            .map(|item| {
                let (k, v) = item?;
                decode(&k, &v)
            })
            .collect::<Result<Vec<AuditEntry>, StoreError>>()?;
        entries.reverse();
        Ok(entries)
    }

    fn run_artifacts(&self, run: &RunId) -> Result<Vec<ArtifactRecord>, StoreError> {
        let mut prefix = key("a/", &[run.as_str()]);
        prefix.push(0);
        self.scan(&prefix)
    }

    fn artifacts_by_digest(&self, prefix: &str) -> Result<Vec<ArtifactRecord>, StoreError> {
        self.scan(&key("ad/", &[prefix]))
    }

    fn all_artifacts(&self) -> Result<Vec<ArtifactRecord>, StoreError> {
        self.scan(b"a/")
    }

    fn consumers_of(&self, digest: &str) -> Result<Vec<ConsumerRecord>, StoreError> {
        let mut prefix = key("u/", &[digest]);
        prefix.push(0);
        self.scan(&prefix)
    }

    fn get_cache(&self, cache_key: &str) -> Result<Option<CacheEntry>, StoreError> {
        self.get(&key("k/", &[cache_key]))
    }

    fn list_cache(&self) -> Result<Vec<CacheEntry>, StoreError> {
        self.scan(b"k/")
    }

    fn get_last_lookup(&self, dag: &str, stage: &str) -> Result<Option<LastLookup>, StoreError> {
        self.get(&key("kl/", &[dag, stage]))
    }
}

#[cfg(test)]
mod io_reason_tests {
    #[test]
    fn a_full_disk_reads_as_such_however_sled_wrapped_it() {
        let os = std::io::Error::from_raw_os_error(28);
        assert_eq!(super::io_reason(&os), "No space left on device");
        let wrapped = std::io::Error::new(std::io::ErrorKind::StorageFull, format!("{os:?}"));
        assert_eq!(super::io_reason(&wrapped), "No space left on device");
        let other = std::io::Error::other("boom");
        assert_eq!(super::io_reason(&other), "boom");
    }
}
