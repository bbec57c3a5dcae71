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
            || entry
                .outputs
                .iter()
                .any(|o| !referenced.contains(&o.digest));
        if gone {
            collected.cache_entries += 1;
            batch.delete_cache(entry.key);
        }
    }
    if !batch.is_empty() {
        store.commit(batch).await?;
    }
    // Blob ages are file times: compared with the system clock that set them.
    let cutoff = SystemTime::now()
        .checked_sub(grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    for (digest, modified, size) in blobs.list().await? {
        if referenced.contains(&digest) || modified > cutoff {
            continue;
        }
        blobs.remove(&digest).await?;
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

/// Deletes the blobs among `digests` (the outputs of deleted runs) that no indexed output
/// refers to any more. Returns how many blobs and bytes went.
pub async fn free_blobs(
    store: &dyn Store,
    blobs: &BlobStore,
    digests: Vec<String>,
) -> Result<(usize, u64), RetentionError> {
    let (mut count, mut bytes) = (0, 0);
    for digest in digests {
        let still_used = store
            .artifacts_by_digest(&digest)?
            .iter()
            .any(|a| a.digest == digest);
        if still_used {
            continue;
        }
        let Some(size) = blobs.size(&digest).await? else {
            continue;
        };
        blobs.remove(&digest).await?;
        count += 1;
        bytes += size;
    }
    Ok((count, bytes))
}

/// Finished runs whose outputs the policy no longer keeps.
pub(crate) fn expired_runs(
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::run::{ArtifactRef, RunRecord, RunState, TriggerKind};
    use crate::store::{ArtifactRecord, CacheEntry, SledStore};

    const DAY: Millis = 86_400_000;

    fn finished_run(id: &str, dag: &str, finished: Millis) -> RunRecord {
        RunRecord {
            id: RunId::from(id),
            dag: dag.to_owned(),
            dag_version: "v".to_owned(),
            params: BTreeMap::new(),
            state: RunState::Succeeded,
            trigger: TriggerKind::Manual,
            created_ms: finished - 1,
            started_ms: Some(finished - 1),
            finished_ms: Some(finished),
            message: None,
            logical_time_ms: None,
            deadline_ms: None,
            cancel_requested: false,
            retries: Vec::new(),
            no_cache: false,
            assets: Vec::new(),
        }
    }

    fn put_blob(blobs: &BlobStore, content: &str) -> String {
        use sha2::Digest as _;
        let digest = hex::encode(sha2::Sha256::digest(content.as_bytes()));
        let path = blobs.file_path(&digest).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
        digest
    }

    fn output(run: &str, digest: &str) -> ArtifactRecord {
        ArtifactRecord {
            run: RunId::from(run),
            stage: "train".to_owned(),
            name: "model.pkl".to_owned(),
            digest: digest.to_owned(),
            size: 1,
            created_ms: 0,
            cached_from: None,
        }
    }

    #[tokio::test]
    async fn old_runs_lose_their_outputs_and_unreferenced_blobs_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("store")).unwrap();
        let blobs = BlobStore::open(&dir.path().join("artifacts"), 1 << 20).unwrap();
        let now = 100 * DAY;
        let old = put_blob(&blobs, "old model");
        let shared = put_blob(&blobs, "shared data");
        let fresh = put_blob(&blobs, "fresh model");
        let stray = put_blob(&blobs, "never indexed");
        let mut b = WriteBatch::new();
        b.put_run(finished_run("d-old", "d", now - 10 * DAY));
        b.put_run(finished_run("d-new", "d", now - DAY));
        b.put_artifact(output("d-old", &old));
        b.put_artifact(ArtifactRecord {
            name: "data.csv".to_owned(),
            ..output("d-old", &shared)
        });
        b.put_artifact(output("d-new", &fresh));
        b.put_artifact(ArtifactRecord {
            name: "data.csv".to_owned(),
            ..output("d-new", &shared)
        });
        b.put_cache(CacheEntry {
            key: "k-old".to_owned(),
            run: RunId::from("d-old"),
            stage: "train".to_owned(),
            outputs: vec![ArtifactRef {
                name: "model.pkl".to_owned(),
                digest: old.clone(),
                size: 1,
            }],
            metrics: BTreeMap::new(),
            created_ms: 0,
        });
        store.commit(b).await.unwrap();

        let policy = RetentionPolicy {
            max_age: Some(Duration::from_secs(7 * 86_400)),
            keep_runs: None,
        };
        let collected = collect_garbage(&store, &blobs, policy, now, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(collected.runs, 1);
        assert_eq!(collected.index_entries, 2);
        assert_eq!(collected.cache_entries, 1);
        assert_eq!(collected.blobs, 2, "the old model and the stray blob go");
        assert!(!blobs.has(&old).await.unwrap());
        assert!(!blobs.has(&stray).await.unwrap());
        assert!(
            blobs.has(&shared).await.unwrap(),
            "still used by the new run"
        );
        assert!(blobs.has(&fresh).await.unwrap());
        assert!(
            store
                .run_artifacts(&RunId::from("d-old"))
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.run_artifacts(&RunId::from("d-new")).unwrap().len(), 2);
        assert!(store.get_cache("k-old").unwrap().is_none());

        // Keeping one run per DAG drops the older of two recent runs; a grace period spares
        // blobs that may belong to an upload not yet reported.
        let mut b = WriteBatch::new();
        b.put_run(finished_run("d-newer", "d", now));
        let newest = put_blob(&blobs, "newest model");
        b.put_artifact(output("d-newer", &newest));
        store.commit(b).await.unwrap();
        let policy = RetentionPolicy {
            max_age: None,
            keep_runs: Some(1),
        };
        let collected = collect_garbage(&store, &blobs, policy, now, BLOB_GRACE)
            .await
            .unwrap();
        assert_eq!(collected.runs, 2);
        assert!(
            store
                .run_artifacts(&RunId::from("d-new"))
                .unwrap()
                .is_empty()
        );
        assert_eq!(collected.blobs, 0, "young blobs wait for the grace period");
        let collected = collect_garbage(&store, &blobs, policy, now, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(collected.blobs, 2);
        assert!(blobs.has(&newest).await.unwrap());
        assert!(!blobs.has(&fresh).await.unwrap() && !blobs.has(&shared).await.unwrap());
    }
}
