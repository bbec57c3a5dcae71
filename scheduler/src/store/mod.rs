//! Persistent state behind the [`Store`] trait: DAGs and their versions, runs, one record per
//! stage instance (so a 100k-way fan-out is 100k small keys, not one huge value), and logs.
//! [`SledStore`] is the embedded default, [`PostgresStore`] keeps the state in a PostgreSQL
//! database ([`StoreLocation`] says which); [`MemoryStore`] serves unit tests.
//!
//! Every write is a [`WriteBatch`] given to [`Store::commit`], which returns once the batch
//! is durable: log chunks, secrets and audit entries included, so there is one write path
//! (see [`writer`] for sled's group commit) and an acknowledged write survives a crash.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::{Millis, RunId};
use crate::run::{RunRecord, StageRecord};

mod artifacts;
mod assets;
mod copy;
mod location;
mod memory;
mod pg;
mod schedule;
mod security;
mod sled_store;
mod writer;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use artifacts::{ArtifactRecord, CacheComponents, CacheEntry, ConsumerRecord, LastLookup};
pub use assets::{AssetCursor, AssetRecord, AssetVersion};
pub use copy::{CopyCounts, copy_store, store_is_empty};
pub use location::{BadStoreLocation, StoreLocation};
pub use memory::MemoryStore;
pub use pg::{PostgresStore, redact_url};
pub use schedule::ScheduleRecord;
pub use security::{AuditEntry, SecretRecord};
pub use sled_store::SledStore;

/// Why the store failed.
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Backend(String),
    /// A write could not be made durable (e.g. the disk is full). The store writes nothing
    /// more: the scheduler must stop and start again from what is on disk.
    #[error("store write failed: {reason} ({})", path.display())]
    WriteFailed {
        reason: String,
        path: std::path::PathBuf,
    },
    #[error("store: record {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// The current version of a registered DAG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DagRecord {
    pub name: String,
    /// Content hash of the current version.
    pub version: String,
    pub submitted_ms: Millis,
    /// Paused DAGs are not started by their schedule.
    pub paused: bool,
}

/// One version of a DAG, kept as long as runs may refer to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DagVersion {
    pub name: String,
    pub version: String,
    pub file_name: String,
    pub source: String,
    /// Folder on the scheduler's host with the DAG's files (embedded modes only).
    pub local_dir: Option<String>,
    /// Digest of the uploaded bundle holding the DAG's folder.
    #[serde(default)]
    pub bundle: Option<String>,
    pub submitted_ms: Millis,
}

/// Which stream a log chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStreamKind {
    Stdout,
    Stderr,
    System,
}

/// A stored piece of a stage's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub stage: String,
    pub attempt: u32,
    /// Per attempt, from 0, as the worker numbered it.
    pub seq: u64,
    pub stream: LogStreamKind,
    pub time_ms: Millis,
    pub data: Vec<u8>,
}

/// Where a page of logs starts: this chunk, or the first one after it in (stage, attempt,
/// seq) order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogPosition {
    pub stage: String,
    pub attempt: u32,
    pub seq: u64,
}

impl LogPosition {
    /// The position right after `record`: where the next page goes on.
    pub fn after(record: &LogRecord) -> LogPosition {
        LogPosition {
            stage: record.stage.clone(),
            attempt: record.attempt,
            seq: record.seq.saturating_add(1),
        }
    }
}

/// How many bytes of log data one page read from the store holds (about: a page ends with
/// the chunk that reaches it).
pub const LOG_PAGE_BYTES: usize = 256 << 10;

/// A set of writes applied atomically.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    pub(crate) ops: Vec<WriteOp>,
}

#[derive(Debug, Clone)]
pub(crate) enum WriteOp {
    Dag(DagRecord),
    DagVersion(DagVersion),
    Run(RunRecord),
    /// Shared with the event the engine publishes for the same change: not copied again.
    Stage(RunId, Arc<StageRecord>),
    Schedule(ScheduleRecord),
    Asset(AssetRecord),
    AssetCursor(AssetCursor),
    Artifact(ArtifactRecord),
    Consumer(ConsumerRecord),
    Cache(CacheEntry),
    LastLookup(LastLookup),
    DeleteArtifact(ArtifactRecord),
    DeleteConsumer(ConsumerRecord),
    DeleteCache(String),
    Logs(RunId, Vec<LogRecord>),
    Secret(SecretRecord),
    DeleteSecret(String),
    Audit(AuditEntry),
    DeleteRun(RunId),
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores (or replaces) an asset with its versions.
    pub fn put_asset(&mut self, asset: AssetRecord) {
        self.ops.push(WriteOp::Asset(asset));
    }

    /// Stores (or replaces) where a DAG's asset triggers stand.
    pub fn put_asset_cursor(&mut self, cursor: AssetCursor) {
        self.ops.push(WriteOp::AssetCursor(cursor));
    }

    /// Stores (or replaces) a DAG's current-version record.
    pub fn put_dag(&mut self, dag: DagRecord) {
        self.ops.push(WriteOp::Dag(dag));
    }

    /// Stores a DAG version.
    pub fn put_dag_version(&mut self, version: DagVersion) {
        self.ops.push(WriteOp::DagVersion(version));
    }

    /// Stores (or replaces) a run header.
    pub fn put_run(&mut self, run: RunRecord) {
        self.ops.push(WriteOp::Run(run));
    }

    /// Stores (or replaces) one stage instance of a run.
    pub fn put_stage(&mut self, run: &RunId, stage: impl Into<Arc<StageRecord>>) {
        self.ops.push(WriteOp::Stage(run.clone(), stage.into()));
    }

    /// Stores (or replaces) where a DAG's schedule stands.
    pub fn put_schedule(&mut self, schedule: ScheduleRecord) {
        self.ops.push(WriteOp::Schedule(schedule));
    }

    /// Indexes one output of a stage instance (and its digest, for lineage).
    pub fn put_artifact(&mut self, artifact: ArtifactRecord) {
        self.ops.push(WriteOp::Artifact(artifact));
    }

    /// Records that a stage instance took a digest as an input.
    pub fn put_consumer(&mut self, consumer: ConsumerRecord) {
        self.ops.push(WriteOp::Consumer(consumer));
    }

    /// Stores (or replaces) a cache entry.
    pub fn put_cache(&mut self, entry: CacheEntry) {
        self.ops.push(WriteOp::Cache(entry));
    }

    /// Stores (or replaces) the last cache lookup of a DAG's stage instance.
    pub fn put_last_lookup(&mut self, lookup: LastLookup) {
        self.ops.push(WriteOp::LastLookup(lookup));
    }

    /// Drops an output from the index (retention).
    pub fn delete_artifact(&mut self, artifact: ArtifactRecord) {
        self.ops.push(WriteOp::DeleteArtifact(artifact));
    }

    /// Drops a consumer record (retention).
    pub fn delete_consumer(&mut self, consumer: ConsumerRecord) {
        self.ops.push(WriteOp::DeleteConsumer(consumer));
    }

    /// Drops a cache entry (its blobs are gone).
    pub fn delete_cache(&mut self, key: String) {
        self.ops.push(WriteOp::DeleteCache(key));
    }

    /// Stores log chunks of a run; a chunk stored again (same stage, attempt, seq) replaces
    /// the first, so re-sending after a reconnect is harmless.
    pub fn put_logs(&mut self, run: &RunId, chunks: Vec<LogRecord>) {
        self.ops.push(WriteOp::Logs(run.clone(), chunks));
    }

    /// Stores (or replaces) an encrypted secret.
    pub fn put_secret(&mut self, secret: SecretRecord) {
        self.ops.push(WriteOp::Secret(secret));
    }

    /// Removes a secret, if there is one.
    pub fn delete_secret(&mut self, name: &str) {
        self.ops.push(WriteOp::DeleteSecret(name.to_owned()));
    }

    /// Appends an entry to the audit log (after every entry committed before).
    pub fn append_audit(&mut self, entry: AuditEntry) {
        self.ops.push(WriteOp::Audit(entry));
    }

    /// Deletes a run with everything recorded about it: its header, stage records, logs,
    /// output index entries and lineage, and the cache entries and last lookups it made. The
    /// blobs stay (other runs may share them); see `artifacts::retention`.
    pub fn delete_run(&mut self, run: RunId) {
        self.ops.push(WriteOp::DeleteRun(run));
    }

    /// Whether the batch holds no writes.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Number of writes in the batch.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Moves the writes of `other` to the end of this batch.
    pub fn append(&mut self, other: &mut WriteBatch) {
        self.ops.append(&mut other.ops);
    }
}

/// Persistent state. Writes are atomic per batch and durable once [`Store::commit`]
/// returns: callers act on a write (answer a client, send a task) only after that.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies every write of `batch` or none of them; returns once they survive a crash.
    async fn commit(&self, batch: WriteBatch) -> Result<(), StoreError>;

    /// Why the store can no longer write, once a write failed for good (a full disk).
    fn write_failure(&self) -> Option<StoreError> {
        None
    }

    /// Resolves once a write failed for good; never for a store that cannot fail.
    async fn wait_write_failure(&self) -> StoreError {
        std::future::pending().await
    }

    fn get_dag(&self, name: &str) -> Result<Option<DagRecord>, StoreError>;
    fn list_dags(&self) -> Result<Vec<DagRecord>, StoreError>;
    fn get_dag_version(&self, name: &str, version: &str) -> Result<Option<DagVersion>, StoreError>;

    fn get_run(&self, id: &RunId) -> Result<Option<RunRecord>, StoreError>;
    /// Every run, in id order.
    fn list_runs(&self) -> Result<Vec<RunRecord>, StoreError>;
    /// The stage records of a run, in instance-name order.
    fn run_stages(&self, id: &RunId) -> Result<Vec<StageRecord>, StoreError>;

    fn get_schedule(&self, dag: &str) -> Result<Option<ScheduleRecord>, StoreError>;
    /// Every schedule record, in DAG name order.
    fn list_schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError>;
    fn get_asset(&self, name: &str) -> Result<Option<AssetRecord>, StoreError>;
    /// Every asset, by name.
    fn list_assets(&self) -> Result<Vec<AssetRecord>, StoreError>;
    fn get_asset_cursor(&self, dag: &str) -> Result<Option<AssetCursor>, StoreError>;

    /// Stores log chunks of a run, durably (see [`WriteBatch::put_logs`]).
    async fn append_logs(&self, run: &RunId, chunks: &[LogRecord]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::new();
        batch.put_logs(run, chunks.to_vec());
        self.commit(batch).await
    }
    /// One page of a run's (or one stage's) log chunks, ordered by stage, attempt and seq,
    /// from `from` on (from the first chunk when `None`). The page ends with the chunk that
    /// brings its data to `max_bytes`, so it holds at least one chunk while any remain; an
    /// empty page means the end. Go on from [`LogPosition::after`] its last chunk.
    fn read_log_page(
        &self,
        run: &RunId,
        stage: Option<&str>,
        from: Option<&LogPosition>,
        max_bytes: usize,
    ) -> Result<Vec<LogRecord>, StoreError>;

    /// Every log chunk of a run (or one stage of it), ordered by stage, attempt and seq.
    /// Holds the whole log in memory: for tests and small logs; stream with
    /// [`Store::read_log_page`].
    fn read_logs(&self, run: &RunId, stage: Option<&str>) -> Result<Vec<LogRecord>, StoreError> {
        let mut all = Vec::new();
        let mut from = None;
        loop {
            let page = self.read_log_page(run, stage, from.as_ref(), LOG_PAGE_BYTES)?;
            let Some(last) = page.last() else {
                return Ok(all);
            };
            from = Some(LogPosition::after(last));
            all.extend(page);
        }
    }

    /// Stores (or replaces) an encrypted secret; durable when this returns.
    async fn put_secret(&self, secret: &SecretRecord) -> Result<(), StoreError> {
        let mut batch = WriteBatch::new();
        batch.put_secret(secret.clone());
        self.commit(batch).await
    }
    fn get_secret(&self, name: &str) -> Result<Option<SecretRecord>, StoreError>;
    /// Every secret, in name order.
    fn list_secrets(&self) -> Result<Vec<SecretRecord>, StoreError>;
    /// Removes a secret; false if there was none. Durable when this returns.
    async fn delete_secret(&self, name: &str) -> Result<bool, StoreError> {
        let existed = self.get_secret(name)?.is_some();
        let mut batch = WriteBatch::new();
        batch.delete_secret(name);
        self.commit(batch).await?;
        Ok(existed)
    }

    /// Appends an entry to the audit log; durable when this returns.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let mut batch = WriteBatch::new();
        batch.append_audit(entry.clone());
        self.commit(batch).await
    }
    /// The newest `limit` audit entries, oldest first.
    fn list_audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;
    /// The outputs of a run, ordered by stage instance and file name.
    fn run_artifacts(&self, run: &RunId) -> Result<Vec<ArtifactRecord>, StoreError>;
    /// Every output whose digest starts with `prefix` (a whole digest finds exactly its
    /// producers), ordered by digest, run, stage and name.
    fn artifacts_by_digest(&self, prefix: &str) -> Result<Vec<ArtifactRecord>, StoreError>;
    /// Every indexed output, for retention and garbage collection.
    fn all_artifacts(&self) -> Result<Vec<ArtifactRecord>, StoreError>;
    /// The stage instances that took a digest as an input, ordered by run and stage.
    fn consumers_of(&self, digest: &str) -> Result<Vec<ConsumerRecord>, StoreError>;
    fn get_cache(&self, key: &str) -> Result<Option<CacheEntry>, StoreError>;
    /// Every cache entry, ordered by key.
    fn list_cache(&self) -> Result<Vec<CacheEntry>, StoreError>;
    fn get_last_lookup(&self, dag: &str, stage: &str) -> Result<Option<LastLookup>, StoreError>;
}

/// Counts runs per state; handy for invariants and listings.
pub fn count_runs_by_state(runs: &[RunRecord]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for r in runs {
        *counts.entry(r.state.as_str()).or_default() += 1;
    }
    counts
}
