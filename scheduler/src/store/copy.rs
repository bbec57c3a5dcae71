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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::ids::RunId;
    use crate::run::{RunRecord, RunState, StageRecord, TriggerKind};
    use crate::store::{
        ArtifactRecord, AuditEntry, CacheComponents, CacheEntry, ConsumerRecord, DagRecord,
        DagVersion, LastLookup, LogRecord, LogStreamKind, MemoryStore, ScheduleRecord,
        SecretRecord,
    };

    fn run(id: &str) -> RunRecord {
        RunRecord {
            id: RunId::from(id),
            dag: "etl".into(),
            dag_version: "v1".into(),
            params: BTreeMap::new(),
            state: RunState::Succeeded,
            trigger: TriggerKind::Manual,
            created_ms: 1,
            started_ms: Some(2),
            finished_ms: Some(3),
            message: None,
            logical_time_ms: None,
            deadline_ms: None,
            cancel_requested: false,
            retries: Vec::new(),
            no_cache: false,
            assets: Vec::new(),
        }
    }

    #[tokio::test]
    async fn every_kind_of_record_is_copied_and_the_target_then_is_not_empty() {
        let from = MemoryStore::new();
        let mut b = WriteBatch::new();
        for version in ["v0", "v1", "v2"] {
            b.put_dag_version(DagVersion {
                name: "etl".into(),
                version: version.into(),
                file_name: "etl.yaml".into(),
                source: format!("name: etl # {version}"),
                local_dir: None,
                bundle: None,
                submitted_ms: 1,
            });
        }
        b.put_dag(DagRecord {
            name: "etl".into(),
            version: "v2".into(),
            submitted_ms: 1,
            paused: true,
        });
        b.put_run(run("etl-1"));
        b.put_stage(
            &RunId::from("etl-1"),
            StageRecord::pending("a".into(), vec![]),
        );
        b.put_schedule(ScheduleRecord {
            dag: "etl".into(),
            cron: "0 2 * * *".into(),
            timezone: "UTC".into(),
            cursor_ms: 5,
            last_slot_ms: None,
        });
        let artifact = ArtifactRecord {
            run: RunId::from("etl-1"),
            stage: "a".into(),
            name: "out.csv".into(),
            digest: "d1".into(),
            size: 3,
            created_ms: 4,
            cached_from: None,
        };
        b.put_artifact(artifact.clone());
        b.put_consumer(ConsumerRecord {
            digest: "d1".into(),
            run: RunId::from("etl-1"),
            stage: "b".into(),
        });
        b.put_cache(CacheEntry {
            key: "k1".into(),
            run: RunId::from("etl-1"),
            stage: "a".into(),
            outputs: vec![],
            metrics: BTreeMap::new(),
            created_ms: 4,
        });
        b.put_last_lookup(LastLookup {
            dag: "etl".into(),
            stage: "a".into(),
            key: "k1".into(),
            run: RunId::from("etl-1"),
            components: CacheComponents::default(),
        });
        b.put_logs(
            &RunId::from("etl-1"),
            (0..5)
                .map(|seq| LogRecord {
                    stage: "a".into(),
                    attempt: 1,
                    seq,
                    stream: LogStreamKind::Stdout,
                    time_ms: 1,
                    data: vec![b'x'; 10],
                })
                .collect(),
        );
        b.put_secret(SecretRecord {
            name: "token".into(),
            nonce: vec![1; 12],
            ciphertext: vec![2; 20],
            set_ms: 1,
        });
        for i in 0..3 {
            b.append_audit(AuditEntry {
                at_ms: i,
                caller: "admin".into(),
                method: "TriggerRun".into(),
                target: format!("t{i}"),
                outcome: "ok".into(),
            });
        }
        from.commit(b).await.unwrap();

        let to = MemoryStore::new();
        assert!(store_is_empty(&to).unwrap());
        let counts = copy_store(&from, &to).await.unwrap();
        assert_eq!(
            counts,
            CopyCounts {
                dags: 1,
                // v2 is current, the run used v1; v0 is neither: not copied.
                dag_versions: 2,
                runs: 1,
                stages: 1,
                log_chunks: 5,
                schedules: 1,
                artifacts: 1,
                consumers: 1,
                cache_entries: 1,
                last_lookups: 1,
                secrets: 1,
                audit_entries: 3,
            }
        );
        let id = RunId::from("etl-1");
        assert_eq!(to.list_dags().unwrap(), from.list_dags().unwrap());
        assert_eq!(to.get_run(&id).unwrap(), from.get_run(&id).unwrap());
        assert_eq!(to.run_stages(&id).unwrap(), from.run_stages(&id).unwrap());
        assert_eq!(
            to.read_logs(&id, None).unwrap(),
            from.read_logs(&id, None).unwrap()
        );
        assert_eq!(to.list_schedules().unwrap(), from.list_schedules().unwrap());
        assert_eq!(to.run_artifacts(&id).unwrap(), vec![artifact]);
        assert_eq!(
            to.consumers_of("d1").unwrap(),
            from.consumers_of("d1").unwrap()
        );
        assert_eq!(to.list_cache().unwrap(), from.list_cache().unwrap());
        assert_eq!(
            to.get_last_lookup("etl", "a").unwrap(),
            from.get_last_lookup("etl", "a").unwrap()
        );
        assert_eq!(to.list_secrets().unwrap(), from.list_secrets().unwrap());
        assert_eq!(to.list_audit(10).unwrap(), from.list_audit(10).unwrap());
        assert!(!store_is_empty(&to).unwrap());
    }
}
