//! Exact timing through the running engine on paused time: retry backoff, stage and run
//! timeouts, the first lease after a start, and cron slots across daylight-saving changes.
//! Each says when something happens and that it does not happen a millisecond earlier.

use super::*;
use crate::run::{DEADLINE_GRACE_MS, RunState};

/// A lease long enough that no test here has to heartbeat.
const LONG_LEASE: Duration = Duration::from_secs(24 * 3600);
/// A lease well under the timeouts tested.
const SHORT_LEASE: Duration = Duration::from_secs(1);

/// Heartbeats until dropped.
struct KeepAlive(tokio::task::JoinHandle<()>);

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn at(text: &str) -> Millis {
    text.parse::<DateTime<Utc>>()
        .expect("valid test instant")
        .timestamp_millis()
}

/// Whether a message waits in `inbox` now, without letting time pass.
fn has_message(inbox: &mut mpsc::UnboundedReceiver<WorkerMessage>) -> bool {
    !inbox.is_empty()
}

async fn fail(engine: &EngineHandle, worker: &str, task: &TaskAssignment) {
    engine
        .finished(
            WorkerId::from(worker),
            task.attempt.clone(),
            AttemptOutcome::Exited { code: 1 },
        )
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_retry_starts_exactly_when_its_backoff_ends_and_the_next_waits_twice_as_long() {
    const FLAKY: &str = "
name: flaky
stages:
  - {name: work, image: busybox, command: [false], retries: {limit: 2, backoff: 2s}}
";
    let f = engine_with(config_with_lease(LONG_LEASE), FLAKY).await;
    let (_, mut w1) = connect_worker(&f.engine, "w1", vec![]).await;
    f.engine
        .trigger("flaky".into(), Default::default())
        .await
        .unwrap();
    let first = next_task(&mut w1).await;
    let failed_at = f.clock.now_ms();
    fail(&f.engine, "w1", &first).await;
    pass_until(&f.engine, failed_at + 1_999).await;
    assert!(!has_message(&mut w1), "no retry before its backoff");
    let second = next_task(&mut w1).await;
    assert_eq!(second.attempt_number, 2);
    assert_eq!(f.clock.now_ms(), failed_at + 2_000);

    let failed_at = f.clock.now_ms();
    fail(&f.engine, "w1", &second).await;
    pass_until(&f.engine, failed_at + 3_999).await;
    assert!(
        !has_message(&mut w1),
        "the second backoff is twice the first"
    );
    let third = next_task(&mut w1).await;
    assert_eq!(third.attempt_number, 3);
    assert_eq!(f.clock.now_ms(), failed_at + 4_000);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_its_worker_never_reports_times_out_exactly_after_timeout_and_grace() {
    const TIMED: &str = "
name: timed
stages:
  - {name: work, image: busybox, command: [sleep, '600'], timeout: 5s}
";
    // A short lease the worker keeps by heartbeats: the timeout, not the lease, ends it.
    let f = engine_with(config_with_lease(SHORT_LEASE), TIMED).await;
    let (_, mut w1) = connect_worker(&f.engine, "w1", vec![]).await;
    let _beat = KeepAlive(keep_alive(&f.engine, "w1"));
    let run = f
        .engine
        .trigger("timed".into(), Default::default())
        .await
        .unwrap();
    let task = next_task(&mut w1).await;
    let dispatched_at = f.clock.now_ms();
    let deadline = dispatched_at + 5_000 + DEADLINE_GRACE_MS;
    pass_until(&f.engine, deadline - 1).await;
    assert_eq!(
        first_outcome(&f.store, &run.id, 0),
        Some(AttemptOutcome::Running)
    );
    assert!(!has_message(&mut w1));
    pass_until(&f.engine, deadline).await;
    assert_eq!(
        first_outcome(&f.store, &run.id, 0),
        Some(AttemptOutcome::TimedOut)
    );
    match w1.try_recv() {
        Ok(WorkerMessage::Cancel { attempt, .. }) => assert_eq!(attempt, task.attempt),
        other => panic!("expected the attempt to be stopped, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_fresh_engine_does_not_hold_back_a_timeout_that_falls_inside_its_first_lease() {
    const TIMED: &str = "
name: timed
stages:
  - {name: work, image: busybox, command: [sleep, '600'], timeout: 5s}
";
    // Nothing was running before this engine started, so nothing waits for workers to
    // re-report: the deadline strikes on time although the first lease lasts a day.
    let f = engine_with(config_with_lease(LONG_LEASE), TIMED).await;
    let (_, mut w1) = connect_worker(&f.engine, "w1", vec![]).await;
    let run = f
        .engine
        .trigger("timed".into(), Default::default())
        .await
        .unwrap();
    next_task(&mut w1).await;
    let deadline = f.clock.now_ms() + 5_000 + DEADLINE_GRACE_MS;
    pass_until(&f.engine, deadline - 1).await;
    assert_eq!(
        first_outcome(&f.store, &run.id, 0),
        Some(AttemptOutcome::Running)
    );
    pass_until(&f.engine, deadline).await;
    assert_eq!(
        first_outcome(&f.store, &run.id, 0),
        Some(AttemptOutcome::TimedOut)
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_fails_exactly_at_its_timeout_and_its_running_stage_is_stopped() {
    const SLOW_RUN: &str = "
name: slow
timeout: 10s
stages:
  - {name: work, image: busybox, command: [sleep, '600']}
";
    let f = engine_with(config_with_lease(SHORT_LEASE), SLOW_RUN).await;
    let (_, mut w1) = connect_worker(&f.engine, "w1", vec![]).await;
    let _beat = KeepAlive(keep_alive(&f.engine, "w1"));
    let triggered_at = f.clock.now_ms();
    let run = f
        .engine
        .trigger("slow".into(), Default::default())
        .await
        .unwrap();
    let task = next_task(&mut w1).await;
    let state = |store: &MemoryStore| store.get_run(&run.id).unwrap().unwrap().state;
    pass_until(&f.engine, triggered_at + 9_999).await;
    assert_eq!(state(&f.store), RunState::Running);
    pass_until(&f.engine, triggered_at + 10_000).await;
    let record = f.store.get_run(&run.id).unwrap().unwrap();
    assert_eq!(record.state, RunState::Failed);
    assert_eq!(record.finished_ms, Some(triggered_at + 10_000));
    assert!(
        record
            .message
            .as_deref()
            .unwrap_or("")
            .contains("timed out"),
        "{record:?}"
    );
    assert!(matches!(
        w1.try_recv(),
        Ok(WorkerMessage::Cancel { attempt, .. }) if attempt == task.attempt
    ));
}

#[tokio::test(start_paused = true)]
async fn a_stage_no_worker_fits_fails_exactly_one_lease_after_the_engine_started() {
    const GPU: &str = "
name: gpu
stages:
  - {name: work, image: busybox, command: [true], worker: {pool: gpu}}
";
    let lease = Duration::from_secs(2);
    let config = config_with_lease(lease);
    let started_at = config.clock.now_ms();
    let f = engine_with(config, GPU).await;
    // Connected workers fit nothing, but others may still come back within a lease.
    let (_, _w1) = connect_worker(&f.engine, "w1", vec![]).await;
    let beat = keep_alive(&f.engine, "w1");
    let run = f
        .engine
        .trigger("gpu".into(), Default::default())
        .await
        .unwrap();
    let stage = |store: &MemoryStore| store.run_stages(&run.id).unwrap().remove(0).state;
    pass_until(&f.engine, started_at + 1_999).await;
    assert!(matches!(stage(&f.store), StageState::Queued { .. }));
    pass_until(&f.engine, started_at + 2_000).await;
    beat.abort();
    match stage(&f.store) {
        StageState::Failed { error: reason, .. } => {
            assert!(reason.contains("no worker can run stage work"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Runs of `dag`'s schedule in the store: (slot, when the run was created), oldest first.
fn scheduled(store: &MemoryStore, dag: &str) -> Vec<(Millis, Millis)> {
    let mut runs: Vec<(Millis, Millis)> = store
        .list_runs()
        .unwrap()
        .into_iter()
        .filter(|r| r.dag == dag)
        .map(|r| (r.logical_time_ms.expect("a scheduled run"), r.created_ms))
        .collect();
    runs.sort();
    runs
}

fn schedule_yaml(name: &str, cron: &str) -> String {
    format!(
        "name: {name}\nschedule:\n  cron: \"{cron}\"\n  timezone: Europe/Berlin\n  overlap: allow\n\
         stages:\n  - {{name: work, image: busybox, command: [\"true\"]}}\n"
    )
}

/// An engine whose clock reads `start`, with `yaml` submitted then.
async fn engine_at(start: &str, yaml: &str) -> Fixture {
    let config = EngineConfig {
        clock: Clock::starting_at(start.parse().expect("valid instant")),
        ..config_with_lease(LONG_LEASE)
    };
    engine_with(config, yaml).await
}

#[tokio::test(start_paused = true)]
async fn a_schedule_fires_once_at_the_first_of_a_repeated_local_hour() {
    // Berlin falls back from 03:00 CEST to 02:00 CET on 2026-10-25: 02:30 happens twice.
    let f = engine_at(
        "2026-10-24T12:00:00Z",
        &schedule_yaml("nightly", "30 2 * * *"),
    )
    .await;
    pass_until(&f.engine, at("2026-10-25T00:29:59.999Z")).await;
    assert_eq!(scheduled(&f.store, "nightly"), vec![]);
    pass_until(&f.engine, at("2026-10-26T06:00:00Z")).await;
    let first = at("2026-10-25T00:30:00Z");
    let next_day = at("2026-10-26T01:30:00Z");
    assert_eq!(
        scheduled(&f.store, "nightly"),
        vec![(first, first), (next_day, next_day)],
        "each slot fired once, at its instant (not again at 01:30Z, the second 02:30)"
    );
}

#[tokio::test(start_paused = true)]
async fn a_schedule_in_a_skipped_local_hour_fires_once_at_the_transition() {
    // Berlin springs forward from 02:00 CET to 03:00 CEST on 2026-03-29: 02:00-02:59 never
    // happen, so every quarter of that hour lands on the transition, once.
    let f = engine_at(
        "2026-03-28T12:00:00Z",
        &schedule_yaml("quarterly", "*/15 2 * * *"),
    )
    .await;
    pass_until(&f.engine, at("2026-03-29T00:59:59.999Z")).await;
    assert_eq!(scheduled(&f.store, "quarterly"), vec![]);
    pass_until(&f.engine, at("2026-03-29T12:00:00Z")).await;
    let transition = at("2026-03-29T01:00:00Z");
    assert_eq!(
        scheduled(&f.store, "quarterly"),
        vec![(transition, transition)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_schedule_follows_the_wall_clock_when_it_is_set_back() {
    // The wall clock is set back an hour just before a slot: the slot fires when the wall
    // clock reaches it again, once, not at the monotonic instant first planned.
    let f = engine_at(
        "2026-06-01T09:00:00Z",
        &schedule_yaml("hourly", "0 * * * *"),
    )
    .await;
    let slot = at("2026-06-01T10:00:00Z");
    pass_until(&f.engine, slot - 60_000).await;
    f.clock.jump(-3_600_000);
    settle(&f.engine).await;
    let before = f.clock.instant();
    pass_until(&f.engine, slot).await;
    assert_eq!(before.elapsed(), Duration::from_secs(3_660));
    assert_eq!(scheduled(&f.store, "hourly"), vec![(slot, slot)]);
}
