//! One conformance suite, run against every [`Store`] implementation: memory and sled here,
//! PostgreSQL from `integration-tests` (it needs a server the harness starts). Another
//! crate runs it with [`store_conformance!`](crate::store_conformance) and the
//! `conformance` feature.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::ids::{AttemptId, WorkerId};
use crate::run::{AttemptOutcome, AttemptRecord, RunState, StageState, TriggerKind};

fn run_record(id: &str, dag: &str) -> RunRecord {
    RunRecord {
        id: RunId::from(id),
        dag: dag.to_owned(),
        dag_version: "v1".to_owned(),
        params: BTreeMap::from([("rows".to_owned(), serde_json::json!(10))]),
        state: RunState::Running,
        trigger: TriggerKind::Manual,
        created_ms: 1,
        started_ms: Some(2),
        finished_ms: None,
        message: None,
        logical_time_ms: None,
        deadline_ms: None,
        cancel_requested: false,
        retries: Vec::new(),
        no_cache: false,
        assets: Vec::new(),
    }
}

fn running_stage(name: &str) -> StageRecord {
    let mut s = StageRecord::pending(name.to_owned(), vec!["up".to_owned()]);
    s.state = StageState::Running {
        attempt: AttemptId::from("a1"),
        worker: WorkerId::from("w1"),
        started_ms: 5,
        deadline_ms: Some(99),
    };
    s.attempts.push(AttemptRecord {
        id: AttemptId::from("a1"),
        number: 1,
        worker: WorkerId::from("w1"),
        started_ms: 5,
        finished_ms: None,
        outcome: AttemptOutcome::Running,
        handle: Some("c0ffee".to_owned()),
        gpus: vec!["0".to_owned()],
    });
    s
}

fn log(stage: &str, attempt: u32, seq: u64, data: &[u8]) -> LogRecord {
    LogRecord {
        stage: stage.to_owned(),
        attempt,
        seq,
        stream: LogStreamKind::Stderr,
        time_ms: 7,
        data: data.to_vec(),
    }
}

pub async fn records_round_trip(store: &dyn Store) {
    let mut b = WriteBatch::new();
    b.put_dag(DagRecord {
        name: "etl".into(),
        version: "abc".into(),
        submitted_ms: 3,
        paused: false,
    });
    b.put_dag_version(DagVersion {
        name: "etl".into(),
        version: "abc".into(),
        file_name: "etl.yaml".into(),
        source: "name: etl".into(),
        local_dir: Some("/tmp/etl".into()),
        bundle: None,
        submitted_ms: 3,
    });
    let run = run_record("etl-1", "etl");
    b.put_run(run.clone());
    b.put_stage(&run.id, running_stage("train[a]"));
    b.put_stage(&run.id, StageRecord::pending("collect".into(), Vec::new()));
    store.commit(b).await.unwrap();

    assert_eq!(store.get_dag("etl").unwrap().unwrap().version, "abc");
    assert!(store.get_dag("nope").unwrap().is_none());
    let v = store.get_dag_version("etl", "abc").unwrap().unwrap();
    assert_eq!(v.local_dir.as_deref(), Some("/tmp/etl"));
    assert_eq!(store.get_run(&run.id).unwrap().unwrap(), run);
    let stages = store.run_stages(&run.id).unwrap();
    let names: Vec<_> = stages.iter().map(|s| s.instance.as_str()).collect();
    assert_eq!(names, ["collect", "train[a]"]);
    assert_eq!(stages[1], running_stage("train[a]"));
}

pub async fn stages_of_runs_with_shared_prefixes_stay_apart(store: &dyn Store) {
    let mut b = WriteBatch::new();
    for id in ["a", "ab", "a-b"] {
        b.put_run(run_record(id, "d"));
        b.put_stage(
            &RunId::from(id),
            StageRecord::pending(format!("s-{id}"), Vec::new()),
        );
    }
    store.commit(b).await.unwrap();
    for id in ["a", "ab", "a-b"] {
        let stages = store.run_stages(&RunId::from(id)).unwrap();
        assert_eq!(stages.len(), 1, "run {id}");
        assert_eq!(stages[0].instance, format!("s-{id}"));
    }
    let ids: Vec<_> = store
        .list_runs()
        .unwrap()
        .into_iter()
        .map(|r| r.id.0)
        .collect();
    assert_eq!(ids, ["a", "a-b", "ab"]);
}

pub async fn later_writes_replace_earlier_ones(store: &dyn Store) {
    let mut run = run_record("r", "d");
    let mut b = WriteBatch::new();
    b.put_run(run.clone());
    store.commit(b).await.unwrap();
    run.state = RunState::Succeeded;
    let mut b = WriteBatch::new();
    b.put_run(run.clone());
    store.commit(b).await.unwrap();
    assert_eq!(
        store.get_run(&run.id).unwrap().unwrap().state,
        RunState::Succeeded
    );
    assert_eq!(store.list_runs().unwrap().len(), 1);
}

pub async fn logs_keep_raw_bytes_order_and_deduplicate(store: &dyn Store) {
    let run = RunId::from("r1");
    let other = RunId::from("r10");
    store
        .append_logs(
            &run,
            &[log("b", 1, 1, b"two"), log("b", 1, 0, b"\xff\xfe one")],
        )
        .await
        .unwrap();
    store
        .append_logs(&run, &[log("a", 2, 0, b"a2"), log("a", 1, 5, b"a1")])
        .await
        .unwrap();
    store
        .append_logs(&other, &[log("a", 1, 0, b"other run")])
        .await
        .unwrap();
    // Sent again after a reconnect: stored once.
    store
        .append_logs(&run, &[log("b", 1, 1, b"two")])
        .await
        .unwrap();

    let all = store.read_logs(&run, None).unwrap();
    let data: Vec<&[u8]> = all.iter().map(|l| l.data.as_slice()).collect();
    assert_eq!(data, [&b"a1"[..], b"a2", b"\xff\xfe one", b"two"]);
    assert_eq!(all[0].stream, LogStreamKind::Stderr);
    assert_eq!(all[0].seq, 5);
    let b_only = store.read_logs(&run, Some("b")).unwrap();
    assert_eq!(b_only.len(), 2);
    assert!(store.read_logs(&run, Some("zz")).unwrap().is_empty());
}

pub async fn logs_read_in_pages_from_a_position(store: &dyn Store) {
    let run = RunId::from("r1");
    let chunks: Vec<LogRecord> = (0..10)
        .map(|seq| log("a", 1, seq, &[b'x'; 100]))
        .chain((0..3).map(|seq| log("b", 2, seq, b"bb")))
        .collect();
    store.append_logs(&run, &chunks).await.unwrap();
    store
        .append_logs(&RunId::from("r10"), &[log("a", 1, 0, b"other run")])
        .await
        .unwrap();

    // 250 bytes a page: the page ends with the chunk that reaches it.
    let mut pages = Vec::new();
    let mut from = None;
    loop {
        let page = store.read_log_page(&run, None, from.as_ref(), 250).unwrap();
        let Some(last) = page.last() else { break };
        from = Some(LogPosition::after(last));
        pages.push(
            page.iter()
                .map(|c| (c.stage.clone(), c.seq))
                .collect::<Vec<_>>(),
        );
    }
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [3, 3, 3, 4], "pages: {pages:?}");
    let last: Vec<(&str, u64)> = pages[3].iter().map(|(s, q)| (s.as_str(), *q)).collect();
    assert_eq!(last, [("a", 9), ("b", 0), ("b", 1), ("b", 2)]);

    // One stage, from the middle of it; a position before the stage starts at its start.
    let from = LogPosition {
        stage: "a".into(),
        attempt: 1,
        seq: 8,
    };
    let page = store
        .read_log_page(&run, Some("a"), Some(&from), 1 << 20)
        .unwrap();
    let seqs: Vec<u64> = page.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, [8, 9], "a page of one stage stops at the stage's end");
    let before = LogPosition {
        stage: "a".into(),
        attempt: 0,
        seq: 0,
    };
    let page = store
        .read_log_page(&run, Some("b"), Some(&before), 1 << 20)
        .unwrap();
    assert_eq!(page.len(), 3);
    let past = LogPosition {
        stage: "b".into(),
        attempt: 2,
        seq: 3,
    };
    assert!(
        store
            .read_log_page(&run, None, Some(&past), 1 << 20)
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.read_logs(&run, None).unwrap().len(), 13);
}

pub async fn schedule_records_commit_with_runs_and_replace_by_dag(store: &impl Store) {
    let cursor = |dag: &str, ms| ScheduleRecord {
        dag: dag.to_owned(),
        cron: "0 2 * * *".to_owned(),
        timezone: "Asia/Kolkata".to_owned(),
        cursor_ms: ms,
        last_slot_ms: Some(ms),
    };
    let mut b = WriteBatch::new();
    b.put_run(run_record("nightly-20250601T203000Z", "nightly"));
    b.put_schedule(cursor("nightly", 10));
    b.put_schedule(cursor("hourly", 5));
    store.commit(b).await.unwrap();
    assert_eq!(
        store.get_schedule("nightly").unwrap(),
        Some(cursor("nightly", 10))
    );
    let mut b = WriteBatch::new();
    b.put_schedule(cursor("nightly", 20));
    store.commit(b).await.unwrap();
    let all = store.list_schedules().unwrap();
    assert_eq!(all, [cursor("hourly", 5), cursor("nightly", 20)]);
    assert_eq!(store.get_schedule("nope").unwrap(), None);
    // Schedule keys live apart from runs, DAGs and stages.
    assert_eq!(store.list_runs().unwrap().len(), 1);
    assert!(store.list_dags().unwrap().is_empty());
}

pub async fn secrets_and_audit_entries_round_trip(store: &dyn Store) {
    let secret = |name: &str, byte: u8| SecretRecord {
        name: name.to_owned(),
        nonce: vec![byte; 12],
        ciphertext: vec![byte; 20],
        set_ms: i64::from(byte),
    };
    store.put_secret(&secret("b", 1)).await.unwrap();
    store.put_secret(&secret("a", 2)).await.unwrap();
    store.put_secret(&secret("b", 3)).await.unwrap();
    assert_eq!(store.get_secret("b").unwrap(), Some(secret("b", 3)));
    let names: Vec<_> = store
        .list_secrets()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert!(store.delete_secret("a").await.unwrap());
    assert!(!store.delete_secret("a").await.unwrap());
    assert_eq!(store.get_secret("a").unwrap(), None);

    for i in 0..5 {
        let entry = AuditEntry {
            at_ms: i,
            caller: "ci".into(),
            method: "TriggerRun".into(),
            target: format!("dag-{i}"),
            outcome: "ok".into(),
        };
        store.append_audit(&entry).await.unwrap();
    }
    let last: Vec<_> = store
        .list_audit(3)
        .unwrap()
        .into_iter()
        .map(|e| e.target)
        .collect();
    assert_eq!(last, ["dag-2", "dag-3", "dag-4"]);
    assert_eq!(store.list_audit(100).unwrap().len(), 5);
}

fn artifact(run: &str, stage: &str, name: &str, digest: &str) -> ArtifactRecord {
    ArtifactRecord {
        run: RunId::from(run),
        stage: stage.to_owned(),
        name: name.to_owned(),
        digest: digest.to_owned(),
        size: 42,
        created_ms: 9,
        cached_from: None,
    }
}

pub async fn artifact_index_lists_by_run_by_digest_and_consumers(store: &dyn Store) {
    let d1 = "aa".repeat(32);
    let d2 = "ab".repeat(32);
    let mut b = WriteBatch::new();
    b.put_artifact(artifact("r1", "train[choc]", "model.pkl", &d1));
    b.put_artifact(artifact("r1", "train[choc]", "metrics.json", &d2));
    b.put_artifact(artifact("r10", "train", "model.pkl", &d1));
    let mut cached = artifact("r2", "train[choc]", "model.pkl", &d1);
    cached.cached_from = Some(RunId::from("r1"));
    b.put_artifact(cached.clone());
    b.put_consumer(ConsumerRecord {
        digest: d1.clone(),
        run: RunId::from("r1"),
        stage: "eval".to_owned(),
    });
    b.put_consumer(ConsumerRecord {
        digest: d2.clone(),
        run: RunId::from("r1"),
        stage: "report".to_owned(),
    });
    store.commit(b).await.unwrap();

    // By run: a run id that prefixes another stays apart; ordered by stage, then name.
    let r1 = store.run_artifacts(&RunId::from("r1")).unwrap();
    let names: Vec<&str> = r1.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["metrics.json", "model.pkl"]);
    assert_eq!(
        store.run_artifacts(&RunId::from("r2")).unwrap(),
        vec![cached]
    );
    assert!(store.run_artifacts(&RunId::from("r3")).unwrap().is_empty());
    // By digest and by prefix.
    let producers = store.artifacts_by_digest(&d1).unwrap();
    let runs: Vec<&str> = producers.iter().map(|a| a.run.as_str()).collect();
    assert_eq!(runs, ["r1", "r10", "r2"]);
    assert_eq!(store.artifacts_by_digest("a").unwrap().len(), 4);
    assert_eq!(store.artifacts_by_digest("ab").unwrap().len(), 1);
    assert_eq!(store.all_artifacts().unwrap().len(), 4);
    // Lineage.
    let consumers = store.consumers_of(&d1).unwrap();
    assert_eq!(consumers.len(), 1);
    assert_eq!(consumers[0].stage, "eval");
    // Deletes take both the run and the digest entries.
    let mut b = WriteBatch::new();
    b.delete_artifact(artifact("r10", "train", "model.pkl", &d1));
    b.delete_consumer(consumers[0].clone());
    store.commit(b).await.unwrap();
    assert_eq!(store.artifacts_by_digest(&d1).unwrap().len(), 2);
    assert!(store.run_artifacts(&RunId::from("r10")).unwrap().is_empty());
    assert!(store.consumers_of(&d1).unwrap().is_empty());
}

pub async fn deleting_a_run_takes_everything_recorded_about_it_and_nothing_else(store: &dyn Store) {
    let d1 = "aa".repeat(32);
    let cache = |key: &str, run: &str| CacheEntry {
        key: key.to_owned(),
        run: RunId::from(run),
        stage: "train".to_owned(),
        outputs: Vec::new(),
        metrics: BTreeMap::new(),
        created_ms: 1,
    };
    let lookup = |stage: &str, run: &str| LastLookup {
        dag: "d".to_owned(),
        stage: stage.to_owned(),
        key: "k".to_owned(),
        run: RunId::from(run),
        components: CacheComponents::default(),
    };
    let mut b = WriteBatch::new();
    // "r1" prefixes "r10": deleting r1 must leave r10 alone.
    for run in ["r1", "r10"] {
        let id = RunId::from(run);
        b.put_run(run_record(run, "d"));
        b.put_stage(&id, running_stage("train"));
        b.put_stage(&id, running_stage("eval"));
        b.put_artifact(artifact(run, "train", "model.pkl", &d1));
        b.put_consumer(ConsumerRecord {
            digest: d1.clone(),
            run: id.clone(),
            stage: "eval".to_owned(),
        });
        b.put_cache(cache(&format!("key-{run}"), run));
        b.put_last_lookup(lookup(&format!("train-{run}"), run));
    }
    store.commit(b).await.unwrap();
    for run in ["r1", "r10"] {
        let chunks: Vec<LogRecord> = (0..50).map(|seq| log("train", 1, seq, b"line\n")).collect();
        store.append_logs(&RunId::from(run), &chunks).await.unwrap();
    }

    let mut b = WriteBatch::new();
    b.delete_run(RunId::from("r1"));
    store.commit(b).await.unwrap();

    let gone = RunId::from("r1");
    assert_eq!(store.get_run(&gone).unwrap(), None);
    assert!(store.run_stages(&gone).unwrap().is_empty());
    assert!(store.read_logs(&gone, None).unwrap().is_empty());
    assert!(store.run_artifacts(&gone).unwrap().is_empty());
    assert_eq!(store.get_cache("key-r1").unwrap(), None);
    assert_eq!(store.get_last_lookup("d", "train-r1").unwrap(), None);
    let kept = RunId::from("r10");
    assert!(store.get_run(&kept).unwrap().is_some());
    assert_eq!(store.run_stages(&kept).unwrap().len(), 2);
    assert_eq!(store.read_logs(&kept, None).unwrap().len(), 50);
    let producers = store.artifacts_by_digest(&d1).unwrap();
    let runs: Vec<&str> = producers.iter().map(|a| a.run.as_str()).collect();
    assert_eq!(runs, ["r10"]);
    let consumers = store.consumers_of(&d1).unwrap();
    assert_eq!(consumers.len(), 1);
    assert_eq!(consumers[0].run, kept);
    assert!(store.get_cache("key-r10").unwrap().is_some());
    assert!(store.get_last_lookup("d", "train-r10").unwrap().is_some());
    // Deleting what is gone changes nothing.
    let mut b = WriteBatch::new();
    b.delete_run(gone);
    store.commit(b).await.unwrap();
    assert_eq!(store.list_runs().unwrap().len(), 1);
}

pub async fn assets_and_cursors_commit_with_runs_and_replace_by_name(store: &dyn Store) {
    let version = |n: u64| AssetVersion {
        version: n,
        digest: format!("{n:064x}"),
        file: "data.csv".into(),
        size: n,
        run: RunId::from("producer"),
        stage: "emit".into(),
        created_ms: n as Millis,
    };
    let mut consumer = run_record("consumer", "train");
    consumer.assets = vec![crate::run::ConsumedAsset {
        asset: "survey-data".into(),
        version: 1,
        digest: format!("{:064x}", 1),
        file: "data.csv".into(),
        size: 1,
    }];
    let mut batch = WriteBatch::new();
    batch.put_asset(AssetRecord {
        name: "survey-data".into(),
        versions: vec![version(1)],
    });
    batch.put_asset(AssetRecord {
        name: "survey".into(),
        versions: Vec::new(),
    });
    batch.put_asset_cursor(AssetCursor {
        dag: "train".into(),
        seen: BTreeMap::from([("survey-data".to_owned(), 1)]),
    });
    batch.put_run(consumer.clone());
    store.commit(batch).await.unwrap();
    assert_eq!(store.get_run(&consumer.id).unwrap(), Some(consumer));
    let mut batch = WriteBatch::new();
    batch.put_asset(AssetRecord {
        name: "survey-data".into(),
        versions: vec![version(1), version(2)],
    });
    store.commit(batch).await.unwrap();
    let asset = store.get_asset("survey-data").unwrap().unwrap();
    assert_eq!(asset.latest(), 2);
    let names: Vec<String> = store
        .list_assets()
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["survey", "survey-data"]);
    assert_eq!(store.get_asset("nothing").unwrap(), None);
    let cursor = store.get_asset_cursor("train").unwrap().unwrap();
    assert_eq!(cursor.seen["survey-data"], 1);
    assert_eq!(store.get_asset_cursor("other").unwrap(), None);
}

pub async fn cache_entries_and_last_lookups_round_trip(store: &dyn Store) {
    let entry = CacheEntry {
        key: "k1".to_owned(),
        run: RunId::from("r1"),
        stage: "train".to_owned(),
        outputs: vec![crate::run::ArtifactRef {
            name: "model.pkl".to_owned(),
            digest: "aa".repeat(32),
            size: 3,
        }],
        metrics: BTreeMap::from([("acc".to_owned(), 0.5)]),
        created_ms: 1,
    };
    let lookup = LastLookup {
        dag: "d".to_owned(),
        stage: "train[choc]".to_owned(),
        key: "k1".to_owned(),
        run: RunId::from("r1"),
        components: CacheComponents {
            image: "img".to_owned(),
            ..Default::default()
        },
    };
    let mut b = WriteBatch::new();
    b.put_cache(entry.clone());
    b.put_last_lookup(lookup.clone());
    store.commit(b).await.unwrap();
    assert_eq!(store.get_cache("k1").unwrap(), Some(entry.clone()));
    assert_eq!(store.get_cache("k2").unwrap(), None);
    assert_eq!(store.list_cache().unwrap(), vec![entry]);
    assert_eq!(
        store.get_last_lookup("d", "train[choc]").unwrap(),
        Some(lookup)
    );
    assert_eq!(store.get_last_lookup("d", "train").unwrap(), None);
    let mut b = WriteBatch::new();
    b.delete_cache("k1".to_owned());
    store.commit(b).await.unwrap();
    assert!(store.list_cache().unwrap().is_empty());
}

/// Many callers writing every kind of record at once (the engine's turns, log chunks,
/// audit entries, secrets) all get through, and each sees its own write once acknowledged.
pub async fn concurrent_writers_of_every_kind_all_finish(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for t in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..20 {
                let id = RunId::from(format!("r{t}-{round}").as_str());
                let mut b = WriteBatch::new();
                b.put_run(run_record(id.as_str(), "d"));
                store.commit(b).await.unwrap();
                assert!(store.get_run(&id).unwrap().is_some());
                store
                    .append_logs(&id, &[log("s", 1, round, b"line")])
                    .await
                    .unwrap();
                let entry = AuditEntry {
                    at_ms: round as i64,
                    caller: format!("c{t}"),
                    method: "TriggerRun".into(),
                    target: id.0.clone(),
                    outcome: "ok".into(),
                };
                store.append_audit(&entry).await.unwrap();
                if round % 5 == 0 {
                    let secret = SecretRecord {
                        name: format!("s{t}"),
                        nonce: vec![1; 12],
                        ciphertext: vec![round as u8; 20],
                        set_ms: round as i64,
                    };
                    store.put_secret(&secret).await.unwrap();
                }
            }
        }));
    }
    let all = futures::future::join_all(tasks);
    tokio::time::timeout(std::time::Duration::from_secs(60), all)
        .await
        .expect("concurrent writers did not finish within 60s (deadlock?)")
        .into_iter()
        .for_each(|r| r.unwrap());
    assert_eq!(store.list_runs().unwrap().len(), 1000);
    assert_eq!(store.list_audit(5000).unwrap().len(), 1000);
    assert_eq!(store.list_secrets().unwrap().len(), 50);
}

/// Declares module `$module` with one test per conformance check, each on a store from
/// `$make`, an expression giving `(store, guard)`; the guard lives as long as the test.
#[macro_export]
macro_rules! store_conformance {
    ($module:ident, $make:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test]
            async fn records_round_trip() {
                let (store, _guard) = $make;
                $crate::store::conformance::records_round_trip(&store).await;
            }

            #[tokio::test]
            async fn stages_of_runs_with_shared_prefixes_stay_apart() {
                let (store, _guard) = $make;
                $crate::store::conformance::stages_of_runs_with_shared_prefixes_stay_apart(&store).await;
            }

            #[tokio::test]
            async fn later_writes_replace_earlier_ones() {
                let (store, _guard) = $make;
                $crate::store::conformance::later_writes_replace_earlier_ones(&store).await;
            }

            #[tokio::test]
            async fn logs_keep_raw_bytes_order_and_deduplicate() {
                let (store, _guard) = $make;
                $crate::store::conformance::logs_keep_raw_bytes_order_and_deduplicate(&store).await;
            }

            #[tokio::test]
            async fn logs_read_in_pages_from_a_position() {
                let (store, _guard) = $make;
                $crate::store::conformance::logs_read_in_pages_from_a_position(&store).await;
            }

            #[tokio::test]
            async fn secrets_and_audit_entries_round_trip() {
                let (store, _guard) = $make;
                $crate::store::conformance::secrets_and_audit_entries_round_trip(&store).await;
            }

            #[tokio::test]
            async fn schedule_records_commit_with_runs_and_replace_by_dag() {
                let (store, _guard) = $make;
                $crate::store::conformance::schedule_records_commit_with_runs_and_replace_by_dag(&store).await;
            }

            #[tokio::test]
            async fn artifact_index_lists_by_run_by_digest_and_consumers() {
                let (store, _guard) = $make;
                $crate::store::conformance::artifact_index_lists_by_run_by_digest_and_consumers(&store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_writers_of_every_kind_all_finish() {
                let (store, _guard) = $make;
                $crate::store::conformance::concurrent_writers_of_every_kind_all_finish(std::sync::Arc::new(store))
                    .await;
            }

            #[tokio::test]
            async fn deleting_a_run_takes_everything_recorded_about_it_and_nothing_else() {
                let (store, _guard) = $make;
                $crate::store::conformance::deleting_a_run_takes_everything_recorded_about_it_and_nothing_else(&store)
                    .await;
            }

            #[tokio::test]
            async fn assets_and_cursors_commit_with_runs_and_replace_by_name() {
                let (store, _guard) = $make;
                $crate::store::conformance::assets_and_cursors_commit_with_runs_and_replace_by_name(&store).await;
            }

            #[tokio::test]
            async fn cache_entries_and_last_lookups_round_trip() {
                let (store, _guard) = $make;
                $crate::store::conformance::cache_entries_and_last_lookups_round_trip(&store).await;
            }
        }
    };
}

#[cfg(test)]
crate::store_conformance!(memory, (MemoryStore::new(), ()));
#[cfg(test)]
crate::store_conformance!(sled, {
    let dir = tempfile::tempdir().unwrap();
    (SledStore::open(dir.path()).unwrap(), dir)
});

#[tokio::test]
pub async fn sled_store_keeps_synced_records_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(dir.path()).unwrap();
        let mut b = WriteBatch::new();
        b.put_run(run_record("kept", "d"));
        store.commit(b).await.unwrap();
    }
    let store = SledStore::open(dir.path()).unwrap();
    assert!(store.get_run(&RunId::from("kept")).unwrap().is_some());
}
