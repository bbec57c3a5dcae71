//! Copying one store into another (`vishwa migrate --from sled:DIR --to postgres://...`),
//! through the [`Store`] trait only, so any backend copies into any other.
//!
//! What is copied: DAGs and the versions that the current records and runs refer to, runs
//! with their stage records, log chunks (a page at a time), schedules, the artifact index
//! with its lineage, cache entries and last lookups, secrets (still sealed with the
//! scheduler's key) and the audit log in order.

use std::collections::{BTreeMap, BTreeSet};

use super::{LOG_PAGE_BYTES, LogPosition, Store, StoreError, WriteBatch};

/// How much a copy moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyCounts {
    pub dags: usize,
    pub dag_versions: usize,
    pub runs: usize,
    pub stages: usize,
    pub log_chunks: usize,
    pub schedules: usize,
    pub artifacts: usize,
    pub consumers: usize,
    pub cache_entries: usize,
    pub last_lookups: usize,
    pub secrets: usize,
    pub audit_entries: usize,
}

/// Whether `store` holds anything a copy would write over or mix with.
pub fn store_is_empty(store: &dyn Store) -> Result<bool, StoreError> {
    Ok(store.list_dags()?.is_empty()
        && store.list_runs()?.is_empty()
        && store.list_schedules()?.is_empty()
        && store.list_secrets()?.is_empty()
        && store.list_audit(1)?.is_empty()
        && store.list_cache()?.is_empty())
}

/// Copies every record of `from` into `to`, one run at a time (each run's records and each
/// page of its logs one committed batch). Records already in `to` with the same key are
/// replaced; the caller decides whether a non-empty target is allowed.
pub async fn copy_store(from: &dyn Store, to: &dyn Store) -> Result<CopyCounts, StoreError> {
    let mut counts = CopyCounts::default();
    let dags = from.list_dags()?;
    let runs = from.list_runs()?;
    let mut versions: BTreeSet<(String, String)> = dags
        .iter()
        .map(|d| (d.name.clone(), d.version.clone()))
        .collect();
    versions.extend(runs.iter().map(|r| (r.dag.clone(), r.dag_version.clone())));

    let mut b = WriteBatch::new();
    for (name, version) in &versions {
        if let Some(v) = from.get_dag_version(name, version)? {
            b.put_dag_version(v);
            counts.dag_versions += 1;
        }
    }
    for dag in dags {
        b.put_dag(dag);
        counts.dags += 1;
    }
    for schedule in from.list_schedules()? {
        b.put_schedule(schedule);
        counts.schedules += 1;
    }
    to.commit(b).await?;

    // (dag, stage instance) pairs that may have a last cache lookup.
    let mut lookups: BTreeSet<(String, String)> = BTreeSet::new();
    let mut artifacts_by_run: BTreeMap<_, Vec<_>> = BTreeMap::new();
    let mut digests = BTreeSet::new();
    for a in from.all_artifacts()? {
        digests.insert(a.digest.clone());
        artifacts_by_run.entry(a.run.clone()).or_default().push(a);
    }
    for run in runs {
        let mut b = WriteBatch::new();
        for stage in from.run_stages(&run.id)? {
            lookups.insert((run.dag.clone(), stage.instance.clone()));
            b.put_stage(&run.id, stage);
            counts.stages += 1;
        }
        for a in artifacts_by_run.remove(&run.id).unwrap_or_default() {
            b.put_artifact(a);
            counts.artifacts += 1;
        }
        b.put_run(run.clone());
        counts.runs += 1;
        to.commit(b).await?;
        let mut position: Option<LogPosition> = None;
        loop {
            let page = from.read_log_page(&run.id, None, position.as_ref(), LOG_PAGE_BYTES)?;
            let Some(last) = page.last() else { break };
            position = Some(LogPosition::after(last));
            counts.log_chunks += page.len();
            to.append_logs(&run.id, &page).await?;
        }
    }
    // Outputs of runs no longer there (kept for lineage) go in too.
    let mut b = WriteBatch::new();
    for a in artifacts_by_run.into_values().flatten() {
        b.put_artifact(a);
        counts.artifacts += 1;
    }
    for entry in from.list_cache()? {
        for output in &entry.outputs {
            digests.insert(output.digest.clone());
        }
        b.put_cache(entry);
        counts.cache_entries += 1;
    }
    for digest in &digests {
        for consumer in from.consumers_of(digest)? {
            b.put_consumer(consumer);
            counts.consumers += 1;
        }
    }
    for (dag, stage) in &lookups {
        if let Some(lookup) = from.get_last_lookup(dag, stage)? {
            b.put_last_lookup(lookup);
            counts.last_lookups += 1;
        }
    }
    for secret in from.list_secrets()? {
        b.put_secret(secret);
        counts.secrets += 1;
    }
    for entry in from.list_audit(usize::MAX)? {
        b.append_audit(entry);
        counts.audit_entries += 1;
    }
    to.commit(b).await?;
    Ok(counts)
}
