//! Engine tests over the in-memory store: leases, fencing, re-registration. Time is tokio's
//! paused clock, read by the engine through a [`Clock`] that follows it: a test lets time pass
//! to an exact instant and asserts what happened by then, and no test waits for real time.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;
use crate::dag::parse_dag;
use crate::ids::Millis;
use crate::run::{AttemptOutcome, StageState};
use crate::store::MemoryStore;

mod timing;

const ONE_STAGE: &str = "
name: lease
stages:
  - {name: work, image: busybox, command: [sleep, '60']}
";

struct Fixture {
    engine: EngineHandle,
    store: Arc<MemoryStore>,
    clock: Clock,
    _shutdown: tokio_util::sync::DropGuard,
}

/// Where the test clock starts (any instant will do; a fixed one keeps ids and logs stable).
fn test_start() -> DateTime<Utc> {
    "2026-06-01T12:00:00Z".parse().expect("valid instant")
}

/// Engine settings for tests: `lease`, and a clock that follows tokio's (paused) time.
fn config_with_lease(lease: Duration) -> EngineConfig {
    EngineConfig {
        heartbeat_interval: lease / 4,
        lease,
        clock: Clock::starting_at(test_start()),
        ..EngineConfig::default()
    }
}

async fn engine_with_lease(lease: Duration) -> Fixture {
    engine_with(config_with_lease(lease), ONE_STAGE).await
}

/// An engine over a memory store with `yaml` submitted.
async fn engine_with(config: EngineConfig, yaml: &str) -> Fixture {
    let store = Arc::new(MemoryStore::new());
    let shutdown = CancellationToken::new();
    let clock = config.clock.clone();
    let engine = EngineHandle::start(store.clone(), config, &TaskTracker::new(), shutdown.clone())
        .await
        .unwrap();
    submit(&engine, yaml).await;
    Fixture {
        engine,
        store,
        clock,
        _shutdown: shutdown.drop_guard(),
    }
}

async fn submit(engine: &EngineHandle, yaml: &str) {
    let dag = Arc::new(parse_dag(yaml, "test.yaml").unwrap());
    engine
        .submit(dag, "test.yaml".into(), yaml.into(), DagFiles::default())
        .await
        .unwrap();
}

/// Lets (paused) time pass until the engine's clock reads `at`: every timer due by then
/// fires at its own instant. Then waits until the engine has finished the turns that woke.
async fn pass_until(engine: &EngineHandle, at: Millis) {
    engine.clock().sleep_until_ms(at).await;
    settle(engine).await;
}

/// Waits until the engine has finished every turn started so far: the second of two
/// round trips is answered only in a later turn than the first.
async fn settle(engine: &EngineHandle) {
    for _ in 0..2 {
        engine.metrics().await.unwrap();
    }
}

async fn connect_worker(
    engine: &EngineHandle,
    name: &str,
    running: Vec<AttemptId>,
) -> (Registered, mpsc::UnboundedReceiver<WorkerMessage>) {
    let registered = engine
        .register(WorkerRegistration {
            name: name.into(),
            slots: 1,
            labels: Default::default(),
            allow_process: false,
            running,
            cpus: 4.0,
            memory_bytes: 8 << 30,
            gpus: Vec::new(),
            draining: false,
            instance: String::new(),
        })
        .await
        .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    engine
        .attach_inbox(registered.worker.clone(), tx)
        .await
        .unwrap();
    (registered, rx)
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

/// Heartbeats for `worker` until aborted.
fn keep_alive(engine: &EngineHandle, worker: &str) -> tokio::task::JoinHandle<()> {
    let engine = engine.clone();
    let worker = WorkerId::from(worker);
    tokio::spawn(async move {
        loop {
            let _ = engine.heartbeat(worker.clone(), vec![], false).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

fn first_outcome(store: &MemoryStore, run: &RunId, instance: usize) -> Option<AttemptOutcome> {
    let stages = store.run_stages(run).unwrap();
    stages[instance].attempts.first().map(|a| a.outcome.clone())
}

fn is_lost(outcome: Option<AttemptOutcome>) -> bool {
    matches!(outcome, Some(AttemptOutcome::Lost { .. }))
}

#[tokio::test(start_paused = true)]
async fn an_expired_lease_requeues_the_attempt_on_another_worker() {
    let f = engine_with_lease(Duration::from_millis(400)).await;
    let registered_at = f.clock.now_ms();
    let (_, mut w1) = connect_worker(&f.engine, "w1", vec![]).await;
    let run = f
        .engine
        .trigger("lease".into(), Default::default())
        .await
        .unwrap();
    let first = next_task(&mut w1).await;
    assert_eq!(first.attempt_number, 1);
    // w1 never heartbeats: its lease runs out, exactly one lease after it registered, and
    // the attempt is lost then, not before.
    pass_until(&f.engine, registered_at + 399).await;
    assert_eq!(
        first_outcome(&f.store, &run.id, 0),
        Some(AttemptOutcome::Running)
    );
    pass_until(&f.engine, registered_at + 400).await;
    assert!(is_lost(first_outcome(&f.store, &run.id, 0)));
    let (_, mut w2) = connect_worker(&f.engine, "w2", vec![]).await;
    let beat = keep_alive(&f.engine, "w2");
    let second = next_task(&mut w2).await;
    beat.abort();
    assert_eq!(second.attempt_number, 2);
    assert_ne!(second.attempt, first.attempt);
    let stage = &f.store.run_stages(&run.id).unwrap()[0];
    match &stage.attempts[0].outcome {
        AttemptOutcome::Lost { reason } => assert!(reason.contains("w1"), "{reason}"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        stage.failures, 0,
        "a lost attempt does not use the stage's retries"
    );
    assert_eq!(stage.infra_failures, 1);
}

#[tokio::test(start_paused = true)]
async fn a_lost_attempt_runs_again_before_stages_that_never_started() {
    const THREE: &str = "
name: backlog
stages:
  - {name: a, image: busybox, command: [sleep, '60']}
  - {name: b, image: busybox, command: [sleep, '60']}
  - {name: c, image: busybox, command: [sleep, '60']}
";
    let f = engine_with_lease(Duration::from_millis(400)).await;
    let dag = Arc::new(parse_dag(THREE, "backlog.yaml").unwrap());
    f.engine
        .submit(
            dag,
            "backlog.yaml".into(),
            THREE.into(),
            DagFiles::default(),
        )
        .await
        .unwrap();
    let registered_at = f.clock.now_ms();
    let (_, mut w1) = connect_worker(&f.engine, "w1", vec![]).await;
    let run = f
        .engine
        .trigger("backlog".into(), Default::default())
        .await
        .unwrap();
    let first = next_task(&mut w1).await;
    // w1 never heartbeats: its attempt is lost while two stages wait for a slot.
    pass_until(&f.engine, registered_at + 400).await;
    assert!((0..3).any(|i| is_lost(first_outcome(&f.store, &run.id, i))));
    let (_, mut w2) = connect_worker(&f.engine, "w2", vec![]).await;
    let beat = keep_alive(&f.engine, "w2");
    let second = next_task(&mut w2).await;
    beat.abort();
    assert_eq!(second.stage, first.stage, "the lost stage goes first");
    assert_eq!(second.attempt_number, 2);
}

#[tokio::test(start_paused = true)]
async fn runs_triggered_in_the_same_second_never_share_an_id() {
    let f = engine_with_lease(Duration::from_secs(30)).await;
    // Ids hold the second and 16 random bits: a thousand runs in a second or two would
    // almost surely draw one id twice, and the second run would replace the first.
    let mut ids = std::collections::HashSet::new();
    for _ in 0..1000 {
        let run = f
            .engine
            .trigger("lease".into(), Default::default())
            .await
            .unwrap();
        assert!(ids.insert(run.id.clone()), "{} handed out twice", run.id);
    }
    assert_eq!(f.store.list_runs().unwrap().len(), 1000);
}

#[tokio::test(start_paused = true)]
async fn a_report_from_a_superseded_attempt_is_refused() {
    let f = engine_with_lease(Duration::from_millis(400)).await;
    let registered_at = f.clock.now_ms();
    let (_, mut w1) = connect_worker(&f.engine, "w1", vec![]).await;
    f.engine
        .trigger("lease".into(), Default::default())
        .await
        .unwrap();
    let first = next_task(&mut w1).await;
    let (_, mut w2) = connect_worker(&f.engine, "w2", vec![]).await;
    // Keep w2 alive while w1's lease runs out.
    let beat = keep_alive(&f.engine, "w2");
    let second = next_task(&mut w2).await;
    assert_eq!(
        f.clock.now_ms(),
        registered_at + 400,
        "the attempt goes elsewhere the moment w1's lease runs out"
    );
    let late = f
        .engine
        .finished(
            WorkerId::from("w1"),
            first.attempt.clone(),
            AttemptOutcome::Exited { code: 0 },
        )
        .await;
    assert!(
        matches!(late, Err(EngineError::StaleAttempt { .. })),
        "{late:?}"
    );
    let started = f
        .engine
        .started(WorkerId::from("w1"), first.attempt.clone(), "c1".into())
        .await;
    assert!(matches!(started, Err(EngineError::StaleAttempt { .. })));
    f.engine
        .finished(
            WorkerId::from("w2"),
            second.attempt.clone(),
            AttemptOutcome::Exited { code: 0 },
        )
        .await
        .unwrap();
    beat.abort();
    let stages = f.store.run_stages(&first.run).unwrap();
    assert!(matches!(stages[0].state, StageState::Succeeded { .. }));
    let completions = stages[0]
        .attempts
        .iter()
        .filter(|a| a.outcome == AttemptOutcome::Exited { code: 0 })
        .count();
    assert_eq!(completions, 1, "exactly one recorded completion");
}

#[tokio::test(start_paused = true)]
async fn a_returning_worker_keeps_its_attempts_and_is_told_to_stop_stale_ones() {
    let f = engine_with_lease(Duration::from_secs(30)).await;
    let (_, mut w1) = connect_worker(&f.engine, "w1", vec![]).await;
    f.engine
        .trigger("lease".into(), Default::default())
        .await
        .unwrap();
    let task = next_task(&mut w1).await;
    // The worker reconnects (say, after a scheduler restart), still running the attempt and
    // one the scheduler never heard of.
    let stranger = AttemptId::from("not-ours");
    let (registered, _w1) = connect_worker(
        &f.engine,
        "w1",
        vec![task.attempt.clone(), stranger.clone()],
    )
    .await;
    assert_eq!(registered.cancel, vec![stranger]);
    f.engine
        .finished(
            WorkerId::from("w1"),
            task.attempt,
            AttemptOutcome::Exited { code: 0 },
        )
        .await
        .expect("the kept attempt still reports");
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_comes_back_without_its_attempt_loses_it() {
    let f = engine_with_lease(Duration::from_secs(30)).await;
    let (_, mut w1) = connect_worker(&f.engine, "w1", vec![]).await;
    let run = f
        .engine
        .trigger("lease".into(), Default::default())
        .await
        .unwrap();
    let first = next_task(&mut w1).await;
    // Restarted (crashed and came back): it runs nothing.
    let (_, mut w1) = connect_worker(&f.engine, "w1", vec![]).await;
    let second = next_task(&mut w1).await;
    assert_eq!(second.attempt_number, 2);
    let stages = f.store.run_stages(&run.id).unwrap();
    assert!(matches!(
        stages[0].attempts[0].outcome,
        AttemptOutcome::Lost { .. }
    ));
    assert_ne!(first.attempt, second.attempt);
}

#[tokio::test(start_paused = true)]
async fn a_draining_worker_gets_no_new_tasks() {
    let f = engine_with_lease(Duration::from_secs(30)).await;
    let (_, mut w1) = connect_worker(&f.engine, "w1", vec![]).await;
    f.engine
        .heartbeat(WorkerId::from("w1"), vec![], true)
        .await
        .unwrap();
    f.engine
        .trigger("lease".into(), Default::default())
        .await
        .unwrap();
    let nothing = tokio::time::timeout(Duration::from_millis(300), w1.recv()).await;
    assert!(nothing.is_err(), "no task for a draining worker");
    let (_, mut w2) = connect_worker(&f.engine, "w2", vec![]).await;
    next_task(&mut w2).await;
}

#[tokio::test(start_paused = true)]
async fn dags_take_turns_so_a_big_fan_out_does_not_starve_a_small_dag() {
    let f = engine_with_lease(Duration::from_secs(30)).await;
    let big = "
name: big
params:
  items: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
stages:
  - {name: shard, image: busybox, command: [true], for_each: '{{ params.items }}'}
";
    for (name, yaml) in [("big.yaml", big), ("small.yaml", SMALL)] {
        let dag = Arc::new(parse_dag(yaml, name).unwrap());
        f.engine
            .submit(dag, name.into(), yaml.into(), DagFiles::default())
            .await
            .unwrap();
    }
    let (_, mut w1) = connect_worker(&f.engine, "w1", vec![]).await;
    let beat = keep_alive(&f.engine, "w1");
    f.engine
        .trigger("big".into(), Default::default())
        .await
        .unwrap();
    // The big DAG's 20 instances are all ready before the small DAG is even triggered.
    let first = next_task(&mut w1).await;
    assert_eq!(first.dag, "big");
    f.engine
        .trigger("nightly".into(), Default::default())
        .await
        .unwrap();
    let mut order = vec![first.dag.clone()];
    let mut task = first;
    for _ in 0..3 {
        f.engine
            .finished(
                WorkerId::from("w1"),
                task.attempt.clone(),
                AttemptOutcome::Exited { code: 0 },
            )
            .await
            .unwrap();
        task = next_task(&mut w1).await;
        order.push(task.dag.clone());
    }
    beat.abort();
    assert!(
        order[..3].contains(&"nightly".to_owned()),
        "the small DAG waited behind the fan-out: {order:?}"
    );
}

const SMALL: &str = "
name: nightly
stages:
  - {name: retrain, image: busybox, command: [true]}
";

#[tokio::test(start_paused = true)]
async fn a_stage_that_fits_an_idle_worker_is_not_held_back_by_a_long_queue_for_a_busy_one() {
    let f = engine_with_lease(Duration::from_secs(30)).await;
    let items: Vec<String> = (0..400).map(|i| i.to_string()).collect();
    let yaml = format!(
        "
name: mixed
params:
  shards: [{}]
stages:
  - {{name: gpu, image: busybox, command: [true], worker: {{pool: gpu}}, for_each: '{{{{ params.shards }}}}'}}
  - {{name: cpu, image: busybox, command: [true], worker: {{pool: cpu}}}}
",
        items.join(", ")
    );
    let dag = Arc::new(parse_dag(&yaml, "mixed.yaml").unwrap());
    f.engine
        .submit(dag, "mixed.yaml".into(), yaml.clone(), DagFiles::default())
        .await
        .unwrap();
    let labelled = |name: &str, pool: &str| WorkerRegistration {
        name: name.into(),
        slots: 1,
        labels: [("pool".to_owned(), pool.to_owned())].into(),
        allow_process: false,
        running: Vec::new(),
        cpus: 4.0,
        memory_bytes: 8 << 30,
        gpus: Vec::new(),
        draining: false,
        instance: String::new(),
    };
    let gpu = f.engine.register(labelled("g1", "gpu")).await.unwrap();
    let (tx, mut g1) = mpsc::unbounded_channel();
    f.engine.attach_inbox(gpu.worker, tx).await.unwrap();
    let beat_g = keep_alive(&f.engine, "g1");
    f.engine
        .trigger("mixed".into(), Default::default())
        .await
        .unwrap();
    // The GPU worker takes one shard and keeps it: 399 shards wait in line ahead of `cpu`.
    assert!(next_task(&mut g1).await.stage.starts_with("gpu["));
    let cpu = f.engine.register(labelled("c1", "cpu")).await.unwrap();
    let (tx, mut c1) = mpsc::unbounded_channel();
    f.engine.attach_inbox(cpu.worker, tx).await.unwrap();
    let beat_c = keep_alive(&f.engine, "c1");
    let task = next_task(&mut c1).await;
    beat_g.abort();
    beat_c.abort();
    assert_eq!(task.stage, "cpu");
}

/// Moves the stored deadline of run `id`'s running attempt into the past, as if the
/// scheduler had been down past it.
async fn expire_stored_deadline(store: &MemoryStore, id: &RunId, now: Millis) {
    let mut stage = store.run_stages(id).unwrap().remove(0);
    let StageState::Running { deadline_ms, .. } = &mut stage.state else {
        panic!("not running: {stage:?}");
    };
    *deadline_ms = Some(now - 1_000);
    let mut batch = crate::store::WriteBatch::new();
    batch.put_stage(id, stage);
    store.commit(batch).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn after_a_restart_a_deadline_that_passed_while_down_waits_for_the_workers_report() {
    const TIMED: &str = "
name: timed
stages:
  - {name: work, image: busybox, command: [sleep, '60'], timeout: 1s}
";
    let store = Arc::new(MemoryStore::new());
    let config = config_with_lease(Duration::from_millis(600));
    let clock = config.clock.clone();
    let start = |shutdown: CancellationToken, tracker: TaskTracker| {
        let config = config.clone();
        let store = store.clone();
        async move { EngineHandle::start(store, config, &tracker, shutdown).await }
    };
    let first = CancellationToken::new();
    let first_tracker = TaskTracker::new();
    let engine = start(first.clone(), first_tracker.clone()).await.unwrap();
    let dag = Arc::new(parse_dag(TIMED, "timed.yaml").unwrap());
    engine
        .submit(dag, "timed.yaml".into(), TIMED.into(), DagFiles::default())
        .await
        .unwrap();
    let mut runs = Vec::new();
    let mut tasks = Vec::new();
    for worker in ["w1", "w2"] {
        let (_, mut inbox) = connect_worker(&engine, worker, vec![]).await;
        runs.push(
            engine
                .trigger("timed".into(), Default::default())
                .await
                .unwrap()
                .id,
        );
        tasks.push(next_task(&mut inbox).await);
    }
    // The scheduler stops; while it is down both deadlines pass and one attempt ends.
    first.cancel();
    first_tracker.close();
    first_tracker.wait().await;
    for id in &runs {
        expire_stored_deadline(&store, id, clock.now_ms()).await;
    }
    let restarted_at = clock.now_ms();
    let engine = start(CancellationToken::new(), TaskTracker::new())
        .await
        .unwrap();
    let (_, _w1) = connect_worker(&engine, "w1", vec![tasks[0].attempt.clone()]).await;
    let (_, _w2) = connect_worker(&engine, "w2", vec![tasks[1].attempt.clone()]).await;
    let beats = [keep_alive(&engine, "w1"), keep_alive(&engine, "w2")];
    engine
        .finished(
            WorkerId::from("w1"),
            tasks[0].attempt.clone(),
            AttemptOutcome::Exited { code: 0 },
        )
        .await
        .expect("the re-reported result is taken, not refused as timed out");
    let outcome = |id: &RunId| store.run_stages(id).unwrap()[0].attempts[0].outcome.clone();
    assert_eq!(outcome(&runs[0]), AttemptOutcome::Exited { code: 0 });
    // The attempt nobody reported on is judged once the workers had their lease: exactly
    // one lease after the restart, not before.
    pass_until(&engine, restarted_at + 599).await;
    assert_eq!(outcome(&runs[1]), AttemptOutcome::Running);
    pass_until(&engine, restarted_at + 600).await;
    assert_eq!(outcome(&runs[1]), AttemptOutcome::TimedOut);
    for beat in beats {
        beat.abort();
    }
}

fn registration(name: &str, instance: &str) -> WorkerRegistration {
    WorkerRegistration {
        name: name.into(),
        slots: 1,
        labels: Default::default(),
        allow_process: false,
        running: Vec::new(),
        cpus: 4.0,
        memory_bytes: 8 << 30,
        gpus: Vec::new(),
        draining: false,
        instance: instance.into(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_second_process_under_a_live_workers_name_is_refused_and_changes_nothing() {
    let f = engine_with_lease(Duration::from_secs(30)).await;
    let first = f.engine.register(registration("w1", "a")).await.unwrap();
    let (tx, mut inbox) = mpsc::unbounded_channel();
    f.engine
        .attach_inbox(first.worker.clone(), tx)
        .await
        .unwrap();
    let error = f
        .engine
        .register(registration("w1", "b"))
        .await
        .expect_err("the name is held");
    assert!(
        matches!(&error, EngineError::WorkerNameTaken { worker, .. } if worker == "w1"),
        "{error}"
    );
    assert!(error.to_string().contains("--name"), "{error}");
    // The holder still gets its tasks.
    let run = f
        .engine
        .trigger("lease".into(), Default::default())
        .await
        .unwrap();
    let task = next_task(&mut inbox).await;
    assert_eq!(task.run, run.id);
    // Its own reconnect is welcome; once its connection is gone, so is another process.
    f.engine
        .register(WorkerRegistration {
            running: vec![task.attempt.clone()],
            ..registration("w1", "a")
        })
        .await
        .expect("the same process reconnects");
    let (tx, inbox) = mpsc::unbounded_channel();
    f.engine.attach_inbox(first.worker, tx).await.unwrap();
    drop(inbox);
    f.engine
        .register(registration("w1", "b"))
        .await
        .expect("the holder's inbox is closed: the name is free");
}

/// Stage events published for `run` so far.
fn stage_events(
    events: &mut tokio::sync::broadcast::Receiver<Arc<EngineEvent>>,
    run: &RunId,
) -> usize {
    let mut n = 0;
    while let Ok(event) = events.try_recv() {
        if matches!(&*event, EngineEvent::Stage { run: r, .. } if r == run) {
            n += 1;
        }
    }
    n
}

#[tokio::test(start_paused = true)]
async fn a_queued_stage_says_why_it_waits_and_is_published_only_when_that_changes() {
    let f = engine_with_lease(Duration::from_secs(30)).await;
    let waiting = f.engine.waiting().clone();
    let first = f
        .engine
        .trigger("lease".into(), Default::default())
        .await
        .unwrap();
    assert_eq!(
        waiting.reason(&first.id, "work").as_deref(),
        Some("waiting for a worker: no worker connected")
    );
    let (_, mut w1) = connect_worker(&f.engine, "w1", vec![]).await;
    next_task(&mut w1).await;
    assert_eq!(waiting.reason(&first.id, "work"), None, "it runs");

    let mut events = f.engine.subscribe();
    let second = f
        .engine
        .trigger("lease".into(), Default::default())
        .await
        .unwrap();
    assert_eq!(
        waiting.reason(&second.id, "work").as_deref(),
        Some("waiting for a worker: the 1 that fit are busy")
    );
    let published = stage_events(&mut events, &second.id);
    assert!(published >= 1, "the queued stage was published");
    // Turns that change nothing publish nothing more about it.
    for _ in 0..5 {
        f.engine.workers().await.unwrap();
    }
    assert_eq!(stage_events(&mut events, &second.id), 0);
    // The worker drains: the reason changes, and that is published.
    f.engine
        .heartbeat(WorkerId::from("w1"), vec![], true)
        .await
        .unwrap();
    settle(&f.engine).await;
    assert_eq!(
        waiting.reason(&second.id, "work").as_deref(),
        Some("waiting for a worker: the 1 that fit are draining")
    );
    f.engine.workers().await.unwrap();
    assert!(stage_events(&mut events, &second.id) >= 1);
}
