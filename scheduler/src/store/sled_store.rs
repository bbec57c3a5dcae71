//! The sled implementation of [`Store`].
//!
//! Layout: one tree `state` holds every record that must change together, under key
//! prefixes (`d/` DAGs, `v/` DAG versions, `r/` runs, `s/` stage instances, `c/` schedule
//! cursors, `a/` outputs by run, `ad/` outputs by digest, `u/` consumers by digest, `k/`
//! cache entries, `kl/` last cache lookups), so a batch is one atomic `apply_batch`. Logs live in their own tree with binary keys
//! `run \0 stage \0 attempt(u32 BE) seq(u64 BE)` and values `stream(u8) time(i64 BE) bytes`.
//! Secrets (ciphertext only) live in tree `secrets` keyed by name; the audit log in tree
//! `audit` keyed by a monotonic id (u64 BE).

use std::path::Path;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    ArtifactRecord, AuditEntry, CacheEntry, ConsumerRecord, DagRecord, DagVersion, LastLookup,
    LogPosition, LogRecord, LogStreamKind, ScheduleRecord, SecretRecord, Store, StoreError,
    WriteBatch, WriteOp,
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
    db: sled::Db,
    state: sled::Tree,
    logs: sled::Tree,
    secrets: sled::Tree,
    audit: sled::Tree,
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
                .flush_every_ms(Some(200))
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
        Ok(SledStore {
            db,
            state,
            logs,
            secrets,
            audit,
        })
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.state.get(key)? {
            Some(bytes) => decode(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn scan<T: DeserializeOwned>(&self, prefix: &[u8]) -> Result<Vec<T>, StoreError> {
        self.state
            .scan_prefix(prefix)
            .map(|item| {
                let (key, value) = item?;
                decode(&key, &value)
            })
            .collect()
    }
}

impl SledStore {
    fn delete_logs(&self, run: &RunId) -> Result<(), StoreError> {
        let mut logs = sled::Batch::default();
        for k in self.logs.scan_prefix(log_prefix(run, None)).keys() {
            logs.remove(k?);
        }
        self.logs.apply_batch(logs)?;
        Ok(())
    }

    /// Adds to `b` the removal of every state record of `run`.
    fn delete_run_records(&self, run: &RunId, b: &mut sled::Batch) -> Result<(), StoreError> {
        b.remove(key("r/", &[run.as_str()]));
        let mut stages = key("s/", &[run.as_str()]);
        stages.push(0);
        for k in self.state.scan_prefix(stages).keys() {
            b.remove(k?);
        }
        for a in self.run_artifacts(run)? {
            b.remove(artifact_key(&a));
            b.remove(artifact_digest_key(&a));
        }
        for c in self.scan::<ConsumerRecord>(b"u/")? {
            if &c.run == run {
                b.remove(consumer_key(&c));
            }
        }
        for e in self.scan::<CacheEntry>(b"k/")? {
            if &e.run == run {
                b.remove(key("k/", &[&e.key]));
            }
        }
        for l in self.scan::<LastLookup>(b"kl/")? {
            if &l.run == run {
                b.remove(key("kl/", &[&l.dag, &l.stage]));
            }
        }
        Ok(())
    }
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

#[async_trait]
impl Store for SledStore {
    fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for op in &batch.ops {
            match op {
                WriteOp::Dag(d) => b.insert(key("d/", &[&d.name]), encode(d)),
                WriteOp::DagVersion(v) => b.insert(key("v/", &[&v.name, &v.version]), encode(v)),
                WriteOp::Run(r) => b.insert(key("r/", &[r.id.as_str()]), encode(r)),
                WriteOp::Stage(run, s) => {
                    b.insert(key("s/", &[run.as_str(), &s.instance]), encode(s))
                }
                WriteOp::Schedule(c) => b.insert(key("c/", &[&c.dag]), encode(c)),
                WriteOp::Artifact(a) => {
                    b.insert(artifact_key(a), encode(a));
                    b.insert(artifact_digest_key(a), encode(a));
                }
                WriteOp::Consumer(c) => b.insert(consumer_key(c), encode(c)),
                WriteOp::Cache(e) => b.insert(key("k/", &[&e.key]), encode(e)),
                WriteOp::LastLookup(l) => b.insert(key("kl/", &[&l.dag, &l.stage]), encode(l)),
                WriteOp::DeleteArtifact(a) => {
                    b.remove(artifact_key(a));
                    b.remove(artifact_digest_key(a));
                }
                WriteOp::DeleteConsumer(c) => b.remove(consumer_key(c)),
                WriteOp::DeleteCache(k) => b.remove(key("k/", &[k])),
                WriteOp::DeleteRun(run) => {
                    // Logs first: a crash in between leaves a run without logs, which a
                    // second delete finishes, never logs nothing points to.
                    self.delete_logs(run)?;
                    self.delete_run_records(run, &mut b)?;
                }
            }
        }
        self.state.apply_batch(b)?;
        Ok(())
    }

    async fn sync(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
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

    fn append_logs(&self, run: &RunId, chunks: &[LogRecord]) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for c in chunks {
            let k = log_key(run, &c.stage, c.attempt, c.seq);
            let mut v = Vec::with_capacity(9 + c.data.len());
            v.push(stream_byte(c.stream));
            v.extend_from_slice(&c.time_ms.to_be_bytes());
            v.extend_from_slice(&c.data);
            b.insert(k, v);
        }
        self.logs.apply_batch(b)?;
        Ok(())
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

    async fn put_secret(&self, secret: &SecretRecord) -> Result<(), StoreError> {
        self.secrets
            .insert(secret.name.as_bytes(), encode(secret))?;
        self.secrets.flush_async().await?;
        Ok(())
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

    async fn delete_secret(&self, name: &str) -> Result<bool, StoreError> {
        let removed = self.secrets.remove(name.as_bytes())?.is_some();
        self.secrets.flush_async().await?;
        Ok(removed)
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let id = self.db.generate_id()?;
        self.audit.insert(id.to_be_bytes(), encode(entry))?;
        self.audit.flush_async().await?;
        Ok(())
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
