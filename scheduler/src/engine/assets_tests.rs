//! The engine publishing assets and starting their consumers, over the in-memory store with
//! a test playing the worker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dag::parse_dag;
use crate::engine::{
    DagFiles, EngineConfig, EngineError, EngineHandle, TaskAssignment, WorkerMessage,
    WorkerRegistration,
};
use crate::ids::WorkerId;
use crate::run::{ArtifactRef, AttemptOutcome, AttemptReport, ReportedOutput, TriggerKind};
use crate::store::{MemoryStore, Store};

const PRODUCER: &str = "
name: collect
stages:
  - name: emit
    image: busybox
    outputs: [{path: data.csv, asset: survey-data}, {path: extra.csv, optional: true}]
";

const CONSUMER: &str = "
name: train
triggers:
  - asset: survey-data
stages:
  - {name: fit, image: busybox}
";

struct Fixture {
    engine: EngineHandle,
    inbox: mpsc::UnboundedReceiver<WorkerMessage>,
    shutdown: CancellationToken,
}

async fn start(store: Arc<MemoryStore>, dags: &[&str]) -> Fixture {
    let shutdown = CancellationToken::new();
    let engine = EngineHandle::start(
        store,
        EngineConfig::default(),
        &TaskTracker::new(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    for source in dags {
        submit(&engine, source).await.unwrap();
    }
    let registered = engine
        .register(WorkerRegistration {
            name: "w".into(),
            slots: 8,
            labels: Default::default(),
            allow_process: false,
            running: Vec::new(),
            cpus: 8.0,
            memory_bytes: 8 << 30,
            gpus: Vec::new(),
            draining: false,
            instance: String::new(),
        })
        .await
        .unwrap();
    let (tx, inbox) = mpsc::unbounded_channel();
    engine.attach_inbox(registered.worker, tx).await.unwrap();
    Fixture {
        engine,
        inbox,
        shutdown,
    }
}

async fn submit(engine: &EngineHandle, source: &str) -> Result<(), EngineError> {
    let dag = Arc::new(parse_dag(source, "dag.yaml").unwrap());
    engine
        .submit(dag, "dag.yaml".into(), source.into(), DagFiles::default())
        .await
        .map(|_| ())
}

async fn next_task(inbox: &mut mpsc::UnboundedReceiver<WorkerMessage>) -> TaskAssignment {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
            .await
            .expect("a task within 5 s")
            .expect("inbox open");
        if let WorkerMessage::Task(task) = message {
            return *task;
        }
    }
}

/// No task arrives within a short while.
async fn no_task(inbox: &mut mpsc::UnboundedReceiver<WorkerMessage>) {
    let got = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            if let Some(WorkerMessage::Task(task)) = inbox.recv().await {
                return task;
            }
        }
    })
    .await;
    assert!(got.is_err(), "unexpected task: {:?}", got.map(|t| t.stage));
}

fn digest(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

/// Ends `task` with exit 0 and the outputs named, each with the digest given.
async fn succeed(engine: &EngineHandle, task: &TaskAssignment, outputs: &[(&str, String)]) {
    let report = AttemptReport {
        outcome: AttemptOutcome::Exited { code: 0 },
        outputs: outputs
            .iter()
            .map(|(name, digest)| ReportedOutput::Uploaded {
                artifact: ArtifactRef {
                    name: (*name).to_owned(),
                    digest: digest.clone(),
                    size: 3,
                },
                stored: true,
            })
            .collect(),
        metrics: BTreeMap::new(),
    };
    engine
        .finished(WorkerId::from("w"), task.attempt.clone(), report)
        .await
        .unwrap();
}

/// Runs `dag` once; its one task ends with the outputs given.
async fn produce(f: &mut Fixture, dag: &str, outputs: &[(&str, String)]) {
    f.engine.trigger(dag.into(), BTreeMap::new()).await.unwrap();
    let task = next_task(&mut f.inbox).await;
    assert_eq!(task.dag, dag);
    succeed(&f.engine, &task, outputs).await;
}

fn runs_of(store: &MemoryStore, dag: &str) -> Vec<crate::run::RunRecord> {
    let mut runs: Vec<_> = store
        .list_runs()
        .unwrap()
        .into_iter()
        .filter(|r| r.dag == dag)
        .collect();
    runs.sort_by_key(|r| r.created_ms);
    runs
}

#[tokio::test]
async fn a_consumer_runs_once_per_new_digest_reading_that_version() {
    let store = Arc::new(MemoryStore::new());
    let mut f = start(store.clone(), &[PRODUCER, CONSUMER]).await;

    produce(&mut f, "collect", &[("data.csv", digest(1))]).await;
    let fit = next_task(&mut f.inbox).await;
    assert_eq!((fit.dag.as_str(), fit.stage.as_str()), ("train", "fit"));
    let input = fit
        .inputs
        .iter()
        .find(|i| i.stage == "@asset/survey-data")
        .expect("the asset is an input");
    assert_eq!(
        (input.name.as_str(), &input.digest),
        ("data.csv", &digest(1))
    );
    succeed(&f.engine, &fit, &[]).await;

    // The same bytes again: no new version, no run.
    produce(&mut f, "collect", &[("data.csv", digest(1))]).await;
    no_task(&mut f.inbox).await;

    // New bytes (and the optional output this time): a second run, reading them.
    produce(
        &mut f,
        "collect",
        &[("data.csv", digest(2)), ("extra.csv", digest(9))],
    )
    .await;
    let fit = next_task(&mut f.inbox).await;
    assert_eq!(fit.dag, "train");
    assert!(
        fit.inputs
            .iter()
            .any(|i| i.stage == "@asset/survey-data" && i.digest == digest(2))
    );
    assert!(!fit.inputs.iter().any(|i| i.digest == digest(1)));
    succeed(&f.engine, &fit, &[]).await;

    let runs = runs_of(&store, "train");
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r.trigger == TriggerKind::Asset));
    let consumed: Vec<(u64, String)> = runs
        .iter()
        .map(|r| (r.assets[0].version, r.assets[0].digest.clone()))
        .collect();
    assert_eq!(consumed, [(1, digest(1)), (2, digest(2))]);
    let asset = store.get_asset("survey-data").unwrap().unwrap();
    assert_eq!(asset.versions.len(), 2);
    assert_eq!(asset.versions[0].stage, "emit");
    assert_eq!(runs_of(&store, "collect").len(), 3);
    f.shutdown.cancel();
}

#[tokio::test]
async fn an_absent_optional_output_does_not_fail_the_stage() {
    let store = Arc::new(MemoryStore::new());
    let mut f = start(store.clone(), &[PRODUCER]).await;
    produce(&mut f, "collect", &[("data.csv", digest(1))]).await;
    let run = &runs_of(&store, "collect")[0];
    let stages = store.run_stages(&run.id).unwrap();
    assert!(
        matches!(stages[0].state, crate::run::StageState::Succeeded { .. }),
        "{:?}",
        stages[0].state
    );
    f.shutdown.cancel();
}

#[tokio::test]
async fn mode_all_waits_for_a_new_version_of_every_asset() {
    let a = "
name: make-a
stages:
  - {name: a, image: busybox, outputs: [{path: a.txt, asset: asset-a}]}
";
    let b = "
name: make-b
stages:
  - {name: b, image: busybox, outputs: [{path: b.txt, asset: asset-b}]}
";
    let both = "
name: join
triggers:
  - {asset: [asset-a, asset-b], mode: all}
stages:
  - {name: merge, image: busybox}
";
    let store = Arc::new(MemoryStore::new());
    let mut f = start(store.clone(), &[a, b, both]).await;
    produce(&mut f, "make-a", &[("a.txt", digest(1))]).await;
    produce(&mut f, "make-a", &[("a.txt", digest(2))]).await;
    no_task(&mut f.inbox).await;
    produce(&mut f, "make-b", &[("b.txt", digest(3))]).await;
    let merge = next_task(&mut f.inbox).await;
    assert_eq!(merge.dag, "join");
    let mut read: Vec<(&str, &str)> = merge
        .inputs
        .iter()
        .map(|i| (i.stage.as_str(), i.digest.as_str()))
        .collect();
    read.sort();
    assert_eq!(
        read,
        [
            ("@asset/asset-a", digest(2).as_str()),
            ("@asset/asset-b", digest(3).as_str())
        ]
    );
    succeed(&f.engine, &merge, &[]).await;
    // Only `a` is new again: still waiting for `b`.
    produce(&mut f, "make-a", &[("a.txt", digest(4))]).await;
    no_task(&mut f.inbox).await;
    assert_eq!(runs_of(&store, "join").len(), 1);
    f.shutdown.cancel();
}

#[tokio::test]
async fn a_restart_after_publishing_neither_loses_nor_repeats_the_consumer_run() {
    let store = Arc::new(MemoryStore::new());
    let mut f = start(store.clone(), &[PRODUCER, CONSUMER]).await;
    produce(&mut f, "collect", &[("data.csv", digest(1))]).await;
    // The consumer's run is durable with the version that started it, before any worker
    // took its task: stop the engine here.
    let _ = next_task(&mut f.inbox).await;
    f.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(runs_of(&store, "train").len(), 1);

    let mut f = start(store.clone(), &[]).await;
    let fit = next_task(&mut f.inbox).await;
    assert_eq!(fit.dag, "train");
    succeed(&f.engine, &fit, &[]).await;
    no_task(&mut f.inbox).await;
    assert_eq!(runs_of(&store, "train").len(), 1);
    f.shutdown.cancel();
}

#[tokio::test]
async fn a_cycle_of_asset_triggers_across_dags_is_refused_at_submit() {
    let first = "
name: first
triggers: [{asset: second-out}]
stages:
  - {name: s, image: busybox, outputs: [{path: o.txt, asset: first-out}]}
";
    let second = "
name: second
triggers: [{asset: first-out}]
stages:
  - {name: s, image: busybox, outputs: [{path: o.txt, asset: second-out}]}
";
    let store = Arc::new(MemoryStore::new());
    let f = start(store.clone(), &[first]).await;
    let refused = submit(&f.engine, second).await.unwrap_err().to_string();
    assert!(
        refused.contains(
            "asset triggers form a cycle: second publishes `second-out` -> first publishes \
             `first-out` -> second"
        ),
        "{refused}"
    );
    assert!(refused.starts_with("dag.yaml:3:12: error:"), "{refused}");
    assert!(store.get_dag("second").unwrap().is_none());
    f.shutdown.cancel();
}
