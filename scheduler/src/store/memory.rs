//! An in-memory [`Store`] for unit tests: same contract as sled, nothing on disk.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{
    ArtifactRecord, AssetCursor, AssetRecord, AuditEntry, CacheEntry, ConsumerRecord, DagRecord,
    DagVersion, LastLookup, LogPosition, LogRecord, ScheduleRecord, SecretRecord, Store,
    StoreError, WriteBatch, WriteOp,
};
use crate::ids::RunId;
use crate::run::{RunRecord, StageRecord};

#[derive(Default)]
struct Inner {
    dags: BTreeMap<String, DagRecord>,
    versions: BTreeMap<(String, String), DagVersion>,
    runs: BTreeMap<RunId, RunRecord>,
    stages: BTreeMap<(RunId, String), StageRecord>,
    logs: BTreeMap<(RunId, String, u32, u64), LogRecord>,
    schedules: BTreeMap<String, ScheduleRecord>,
    assets: BTreeMap<String, AssetRecord>,
    asset_cursors: BTreeMap<String, AssetCursor>,
    secrets: BTreeMap<String, SecretRecord>,
    audit: Vec<AuditEntry>,
    /// By (run, stage, name).
    artifacts: BTreeMap<(RunId, String, String), ArtifactRecord>,
    consumers: BTreeMap<(String, RunId, String), ConsumerRecord>,
    cache: BTreeMap<String, CacheEntry>,
    lookups: BTreeMap<(String, String), LastLookup>,
}

impl Inner {
    fn delete_run(&mut self, run: &RunId) {
        self.runs.remove(run);
        self.stages.retain(|(r, _), _| r != run);
        self.logs.retain(|(r, _, _, _), _| r != run);
        self.artifacts.retain(|(r, _, _), _| r != run);
        self.consumers.retain(|(_, r, _), _| r != run);
        self.cache.retain(|_, e| &e.run != run);
        self.lookups.retain(|_, l| &l.run != run);
    }
}

/// A [`Store`] held in memory.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for op in batch.ops {
            match op {
                WriteOp::Dag(d) => {
                    inner.dags.insert(d.name.clone(), d);
                }
                WriteOp::DagVersion(v) => {
                    inner
                        .versions
                        .insert((v.name.clone(), v.version.clone()), v);
                }
                WriteOp::Run(r) => {
                    inner.runs.insert(r.id.clone(), r);
                }
                WriteOp::Stage(run, s) => {
                    inner
                        .stages
                        .insert((run, s.instance.clone()), Arc::unwrap_or_clone(s));
                }
                WriteOp::Schedule(c) => {
                    inner.schedules.insert(c.dag.clone(), c);
                }
                WriteOp::Asset(a) => {
                    inner.assets.insert(a.name.clone(), a);
                }
                WriteOp::AssetCursor(c) => {
                    inner.asset_cursors.insert(c.dag.clone(), c);
                }
                WriteOp::Artifact(a) => {
                    let k = (a.run.clone(), a.stage.clone(), a.name.clone());
                    inner.artifacts.insert(k, a);
                }
                WriteOp::Consumer(c) => {
                    let k = (c.digest.clone(), c.run.clone(), c.stage.clone());
                    inner.consumers.insert(k, c);
                }
                WriteOp::Cache(e) => {
                    inner.cache.insert(e.key.clone(), e);
                }
                WriteOp::LastLookup(l) => {
                    inner.lookups.insert((l.dag.clone(), l.stage.clone()), l);
                }
                WriteOp::DeleteArtifact(a) => {
                    inner.artifacts.remove(&(a.run, a.stage, a.name));
                }
                WriteOp::DeleteConsumer(c) => {
                    inner.consumers.remove(&(c.digest, c.run, c.stage));
                }
                WriteOp::DeleteCache(k) => {
                    inner.cache.remove(&k);
                }
                WriteOp::Logs(run, chunks) => {
                    for c in chunks {
                        let key = (run.clone(), c.stage.clone(), c.attempt, c.seq);
                        inner.logs.insert(key, c);
                    }
                }
                WriteOp::Secret(secret) => {
                    inner.secrets.insert(secret.name.clone(), secret);
                }
                WriteOp::DeleteSecret(name) => {
                    inner.secrets.remove(&name);
                }
                WriteOp::Audit(entry) => inner.audit.push(entry),
                WriteOp::DeleteRun(run) => inner.delete_run(&run),
            }
        }
        Ok(())
    }

    fn get_dag(&self, name: &str) -> Result<Option<DagRecord>, StoreError> {
        Ok(self.lock().dags.get(name).cloned())
    }

    fn list_dags(&self) -> Result<Vec<DagRecord>, StoreError> {
        Ok(self.lock().dags.values().cloned().collect())
    }

    fn get_dag_version(&self, name: &str, version: &str) -> Result<Option<DagVersion>, StoreError> {
        let key = (name.to_owned(), version.to_owned());
        Ok(self.lock().versions.get(&key).cloned())
    }

    fn get_run(&self, id: &RunId) -> Result<Option<RunRecord>, StoreError> {
        Ok(self.lock().runs.get(id).cloned())
    }

    fn list_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        Ok(self.lock().runs.values().cloned().collect())
    }

    fn run_stages(&self, id: &RunId) -> Result<Vec<StageRecord>, StoreError> {
        let inner = self.lock();
        let from = (id.clone(), String::new());
        Ok(inner
            .stages
            .range(from..)
            .take_while(|((run, _), _)| run == id)
            .map(|(_, s)| s.clone())
            .collect())
    }

    fn get_schedule(&self, dag: &str) -> Result<Option<ScheduleRecord>, StoreError> {
        Ok(self.lock().schedules.get(dag).cloned())
    }

    fn list_schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError> {
        Ok(self.lock().schedules.values().cloned().collect())
    }

    fn get_asset(&self, name: &str) -> Result<Option<AssetRecord>, StoreError> {
        Ok(self.lock().assets.get(name).cloned())
    }

    fn list_assets(&self) -> Result<Vec<AssetRecord>, StoreError> {
        Ok(self.lock().assets.values().cloned().collect())
    }

    fn get_asset_cursor(&self, dag: &str) -> Result<Option<AssetCursor>, StoreError> {
        Ok(self.lock().asset_cursors.get(dag).cloned())
    }

    fn read_log_page(
        &self,
        run: &RunId,
        stage: Option<&str>,
        from: Option<&LogPosition>,
        max_bytes: usize,
    ) -> Result<Vec<LogRecord>, StoreError> {
        let inner = self.lock();
        let first = (run.clone(), stage.unwrap_or_default().to_owned(), 0, 0);
        let start = match from {
            Some(p) => (run.clone(), p.stage.clone(), p.attempt, p.seq).max(first),
            None => first,
        };
        let mut page = Vec::new();
        let mut bytes = 0;
        for ((r, s, _, _), chunk) in inner.logs.range(start..) {
            let in_scope = r == run && stage.is_none_or(|want| want == s);
            if !in_scope || bytes >= max_bytes {
                break;
            }
            bytes += chunk.data.len();
            page.push(chunk.clone());
        }
        Ok(page)
    }

    fn get_secret(&self, name: &str) -> Result<Option<SecretRecord>, StoreError> {
        Ok(self.lock().secrets.get(name).cloned())
    }

    fn list_secrets(&self) -> Result<Vec<SecretRecord>, StoreError> {
        Ok(self.lock().secrets.values().cloned().collect())
    }

    fn list_audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let inner = self.lock();
        let skip = inner.audit.len().saturating_sub(limit);
        Ok(inner.audit[skip..].to_vec())
    }

    fn run_artifacts(&self, run: &RunId) -> Result<Vec<ArtifactRecord>, StoreError> {
        Ok(self
            .lock()
            .artifacts
            .values()
            .filter(|a| &a.run == run)
            .cloned()
            .collect())
    }

    fn artifacts_by_digest(&self, prefix: &str) -> Result<Vec<ArtifactRecord>, StoreError> {
        let mut found: Vec<ArtifactRecord> = self
            .lock()
            .artifacts
            .values()
            .filter(|a| a.digest.starts_with(prefix))
            .cloned()
            .collect();
        found.sort_by(|a, b| {
            (&a.digest, &a.run, &a.stage, &a.name).cmp(&(&b.digest, &b.run, &b.stage, &b.name))
        });
        Ok(found)
    }

    fn all_artifacts(&self) -> Result<Vec<ArtifactRecord>, StoreError> {
        Ok(self.lock().artifacts.values().cloned().collect())
    }

    fn consumers_of(&self, digest: &str) -> Result<Vec<ConsumerRecord>, StoreError> {
        Ok(self
            .lock()
            .consumers
            .values()
            .filter(|c| c.digest == digest)
            .cloned()
            .collect())
    }

    fn get_cache(&self, key: &str) -> Result<Option<CacheEntry>, StoreError> {
        Ok(self.lock().cache.get(key).cloned())
    }

    fn list_cache(&self) -> Result<Vec<CacheEntry>, StoreError> {
        Ok(self.lock().cache.values().cloned().collect())
    }

    fn get_last_lookup(&self, dag: &str, stage: &str) -> Result<Option<LastLookup>, StoreError> {
        let k = (dag.to_owned(), stage.to_owned());
        Ok(self.lock().lookups.get(&k).cloned())
    }
}
