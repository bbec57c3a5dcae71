//! Retention: outputs of finished runs older than a number of days, or past the newest N
//! finished runs of their DAG, leave the index (with their lineage and cache entries); then
//! every blob no index entry refers to is deleted. Blobs younger than a grace period are
//! spared, so an upload whose attempt has not reported yet is never collected.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

use tracing::info;

use super::{ArtifactError, BlobStore};
use crate::ids::{Millis, RunId};
use crate::store::{Store, StoreError, WriteBatch};

/// How long artifacts are kept. With neither limit set, everything is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Outputs of runs that finished longer ago than this are dropped.
    pub max_age: Option<Duration>,
    /// Only the newest this many finished runs of each DAG keep their outputs.
    pub keep_runs: Option<u32>,
}

impl RetentionPolicy {
    /// Whether the policy ever drops anything.
    pub fn is_active(&self) -> bool {
        self.max_age.is_some() || self.keep_runs.is_some()
    }
}

/// How long an unreferenced blob must have existed before it is collected.
pub const BLOB_GRACE: Duration = Duration::from_secs(3600);

/// What one collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    /// Runs whose outputs left the index.
    pub runs: usize,
    pub index_entries: usize,
    pub cache_entries: usize,
    pub blobs: usize,
    pub bytes: u64,
}

/// Why a collection failed.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Blobs(#[from] ArtifactError),
}

/// Applies `policy` at time `now`, then deletes unreferenced blobs older than `grace`.
pub async fn collect_garbage(
    store: &dyn Store,
    blobs: &BlobStore,
    policy: RetentionPolicy,
    now: Millis,
    grace: Duration,
) -> Result<Collected, RetentionError> {
    let expired = expired_runs(store, policy, now)?;
    let mut collected = Collected {
        runs: expired.len(),
        ..Default::default()
    };
    let mut batch = WriteBatch::new();
    let artifacts = store.all_artifacts()?;
    let mut digests: HashSet<String> = HashSet::new();
    for a in &artifacts {
        digests.insert(a.digest.clone());
    }
    for digest in &digests {
        for c in store.consumers_of(digest)? {
            if expired.contains(&c.run) {
                batch.delete_consumer(c);
            }
        }
    }
    let mut referenced: HashSet<String> = HashSet::new();
    for a in artifacts {
        if expired.contains(&a.run) {
            collected.index_entries += 1;
            batch.delete_artifact(a);
        } else {
            referenced.insert(a.digest);
        }
    }
    for entry in store.list_cache()? {
        let gone = expired.contains(&entry.run)
            || entry.outputs.iter().any(|o| !referenced.contains(&o.digest));
        if gone {
            collected.cache_entries += 1;
            batch.delete_cache(entry.key);
        }
    }
    if !batch.is_empty() {
        store.commit(batch)?;
        store.sync().await?;
    }
    let cutoff = SystemTime::now()
        .checked_sub(grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    for (digest, modified) in blobs.list()? {
        if referenced.contains(&digest) || modified > cutoff {
            continue;
        }
        let size = std::fs::metadata(blobs.path(&digest))
            .map(|m| m.len())
            .unwrap_or(0);
        blobs.remove(&digest)?;
        collected.blobs += 1;
        collected.bytes += size;
    }
    if collected != Collected::default() {
        info!(
            runs = collected.runs,
            blobs = collected.blobs,
            bytes = collected.bytes,
            "artifact retention collected"
        );
    }
    Ok(collected)
}

/// Finished runs whose outputs the policy no longer keeps.
fn expired_runs(
    store: &dyn Store,
    policy: RetentionPolicy,
    now: Millis,
) -> Result<HashSet<RunId>, StoreError> {
    let mut expired = HashSet::new();
    if !policy.is_active() {
        return Ok(expired);
    }
    let mut by_dag: BTreeMap<String, Vec<(Millis, Millis, RunId)>> = BTreeMap::new();
    for run in store.list_runs()? {
        if !run.state.is_final() {
            continue;
        }
        let finished = run.finished_ms.unwrap_or(run.created_ms);
        by_dag
            .entry(run.dag.clone())
            .or_default()
            .push((run.created_ms, finished, run.id));
    }
    for runs in by_dag.values_mut() {
        // Newest first.
        runs.sort_by(|a, b| b.cmp(a));
        for (rank, (_, finished, id)) in runs.iter().enumerate() {
            let too_old = policy
                .max_age
                .is_some_and(|age| now.saturating_sub(*finished) > age.as_millis() as Millis);
            let too_many = policy.keep_runs.is_some_and(|keep| rank >= keep as usize);
            if too_old || too_many {
                expired.insert(id.clone());
            }
        }
    }
    Ok(expired)
}
