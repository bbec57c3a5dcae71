//! Schedules in the engine, driven turn by turn with explicit instants: first fire of a new
//! DAG, downtime under each catch-up policy, each overlap policy, crashes while firing,
//! backfill, and pause/resume across restarts.

use std::sync::Arc;

use chrono::DateTime;
use tokio::sync::broadcast;

use super::super::core::Engine;
use super::*;
use crate::dag::parse_dag;
use crate::engine::{BackfillOutcome, BackfillRequest, BackfillSlot, DagFiles, EngineConfig};
use crate::run::RunRecord;
use crate::store::{MemoryStore, SledStore, Store, WriteBatch};

fn ms(text: &str) -> Millis {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("bad test instant {text}: {e}"))
        .timestamp_millis()
}

fn dag_yaml(cron: &str, catchup: &str, overlap: &str, max_active_runs: Option<u32>) -> String {
    let limit = max_active_runs
        .map(|n| format!("max_active_runs: {n}\n"))
        .unwrap_or_default();
    format!(
        "name: hourly\nschedule:\n  cron: \"{cron}\"\n  catchup: {catchup}\n  overlap: {overlap}\n\
         {limit}stages:\n  - name: work\n    executor: process\n    command: \"true\"\n"
    )
}

fn hourly(catchup: &str, overlap: &str) -> String {
    dag_yaml("0 * * * *", catchup, overlap, None)
}

/// An engine over `store` as the scheduler starts it, recovered from what the store holds.
async fn start(store: &Arc<dyn Store>) -> Engine {
    let (events, _) = broadcast::channel(1024);
    let mut engine = Engine::new(store.clone(), EngineConfig::default(), events);
    engine.recover().await.expect("recovers");
    engine
}

async fn submit(engine: &mut Engine, yaml: &str, now: Millis) {
    let dag = Arc::new(parse_dag(yaml, "hourly.yaml").expect("valid test dag"));
    engine
        .submit(
            dag,
            "hourly.yaml".into(),
            yaml.into(),
            DagFiles::default(),
            now,
        )
        .expect("submits");
    engine.end_turn().await.expect("commits");
}

/// One engine turn at `now` that fires whatever schedules are due.
async fn turn(engine: &mut Engine, now: Millis) {
    engine.fire_schedules(now);
    engine.end_turn().await.expect("commits");
}

fn runs(store: &Arc<dyn Store>) -> Vec<RunRecord> {
    let mut runs = store.list_runs().expect("lists");
    runs.sort_by(|a, b| a.id.cmp(&b.id));
    runs
}

fn ids(store: &Arc<dyn Store>) -> Vec<String> {
    runs(store).into_iter().map(|r| r.id.0).collect()
}

fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

#[tokio::test]
async fn a_new_dag_first_fires_at_the_next_slot_after_submission() {
    let store = memory();
    let mut engine = start(&store).await;
    submit(
        &mut engine,
        &hourly("all", "skip"),
        ms("2025-01-01T10:10:00Z"),
    )
    .await;
    // No history is backfilled, even with `catchup: all`.
    assert_eq!(
        engine.next_schedule_deadline(),
        Some(ms("2025-01-01T11:00:00Z"))
    );
    turn(&mut engine, ms("2025-01-01T10:59:59.999Z")).await;
    assert!(runs(&store).is_empty());
    turn(&mut engine, ms("2025-01-01T11:00:00.004Z")).await;
    let fired = runs(&store);
    assert_eq!(fired.len(), 1);
    let run = &fired[0];
    assert_eq!(run.id.as_str(), "hourly-20250101T110000Z");
    assert_eq!(run.trigger, TriggerKind::Schedule);
    assert_eq!(run.logical_time_ms, Some(ms("2025-01-01T11:00:00Z")));
    assert_eq!(run.created_ms, ms("2025-01-01T11:00:00.004Z"));
    assert_eq!(run.state, RunState::Running);
    let cursor = store.get_schedule("hourly").unwrap().expect("stored");
    assert_eq!(cursor.cursor_ms, ms("2025-01-01T11:00:00Z"));
    assert_eq!(cursor.last_slot_ms, Some(ms("2025-01-01T11:00:00Z")));
    assert_eq!(
        engine.next_schedule_deadline(),
        Some(ms("2025-01-01T12:00:00Z"))
    );
}

/// Submits at 10:10, stops the scheduler, starts it again at 13:30 and lets it fire.
async fn after_downtime(catchup: &str, max_active_runs: Option<u32>) -> Vec<RunRecord> {
    let store = memory();
    let yaml = dag_yaml("0 * * * *", catchup, "allow", max_active_runs);
    {
        let mut engine = start(&store).await;
        submit(&mut engine, &yaml, ms("2025-01-01T10:10:00Z")).await;
    }
    let mut engine = start(&store).await;
    turn(&mut engine, ms("2025-01-01T13:30:00Z")).await;
    // Nothing more is due until 14:00.
    turn(&mut engine, ms("2025-01-01T13:59:00Z")).await;
    runs(&store)
}

#[tokio::test]
async fn downtime_with_catchup_none_starts_nothing_for_missed_slots() {
    assert!(after_downtime("none", None).await.is_empty());
}

#[tokio::test]
async fn downtime_with_catchup_latest_runs_the_most_recent_slot() {
    let fired = after_downtime("latest", None).await;
    let ids: Vec<&str> = fired.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["hourly-20250101T130000Z"]);
}

#[tokio::test]
async fn downtime_with_catchup_all_runs_each_slot_in_order_under_max_active_runs() {
    let fired = after_downtime("all", Some(1)).await;
    let states: Vec<(&str, RunState)> = fired.iter().map(|r| (r.id.as_str(), r.state)).collect();
    assert_eq!(
        states,
        [
            ("hourly-20250101T110000Z", RunState::Running),
            ("hourly-20250101T120000Z", RunState::Queued),
            ("hourly-20250101T130000Z", RunState::Queued),
        ]
    );
}

/// Fires 11:00, then 12:00 while the 11:00 run is still running (no worker takes it).
async fn two_slots(overlap: &str) -> (Arc<dyn Store>, Engine) {
    let store = memory();
    let mut engine = start(&store).await;
    submit(
        &mut engine,
        &hourly("latest", overlap),
        ms("2025-01-01T10:10:00Z"),
    )
    .await;
    turn(&mut engine, ms("2025-01-01T11:00:00Z")).await;
    turn(&mut engine, ms("2025-01-01T12:00:00Z")).await;
    (store, engine)
}

#[tokio::test]
async fn overlap_skip_records_the_skipped_slot_as_a_visible_run() {
    let (store, _engine) = two_slots("skip").await;
    let fired = runs(&store);
    assert_eq!(fired.len(), 2);
    assert_eq!(fired[0].state, RunState::Running);
    let skipped = &fired[1];
    assert_eq!(skipped.id.as_str(), "hourly-20250101T120000Z");
    assert_eq!(skipped.state, RunState::Cancelled);
    assert_eq!(skipped.trigger, TriggerKind::Schedule);
    assert_eq!(skipped.logical_time_ms, Some(ms("2025-01-01T12:00:00Z")));
    let message = skipped.message.as_deref().unwrap_or_default();
    assert!(message.starts_with("skipped:"), "{message}");
    assert!(message.contains("hourly-20250101T110000Z"), "{message}");
}

#[tokio::test]
async fn overlap_skip_fires_normally_once_the_previous_run_ended() {
    let store = memory();
    let mut engine = start(&store).await;
    submit(
        &mut engine,
        &hourly("latest", "skip"),
        ms("2025-01-01T10:10:00Z"),
    )
    .await;
    turn(&mut engine, ms("2025-01-01T11:00:00Z")).await;
    let first = RunId::from("hourly-20250101T110000Z");
    engine
        .cancel(&first, ms("2025-01-01T11:30:00Z"))
        .expect("cancels");
    engine.end_turn().await.unwrap();
    turn(&mut engine, ms("2025-01-01T12:00:00Z")).await;
    let second = store
        .get_run(&RunId::from("hourly-20250101T120000Z"))
        .unwrap()
        .expect("fired");
    assert_eq!(second.state, RunState::Running);
}

#[tokio::test]
async fn overlap_allow_runs_both() {
    let (store, _engine) = two_slots("allow").await;
    let states: Vec<RunState> = runs(&store).iter().map(|r| r.state).collect();
    assert_eq!(states, [RunState::Running, RunState::Running]);
}

#[tokio::test]
async fn overlap_cancel_previous_cancels_the_active_run_then_starts_the_new_one() {
    let (store, _engine) = two_slots("cancel_previous").await;
    let fired = runs(&store);
    assert_eq!(fired[0].state, RunState::Cancelled);
    let reason = fired[0].message.as_deref().unwrap_or_default();
    assert!(reason.contains("cancel_previous"), "{reason}");
    assert_eq!(fired[1].state, RunState::Running);
    assert_eq!(fired[1].id.as_str(), "hourly-20250101T120000Z");
}

#[tokio::test]
async fn a_run_stored_without_its_cursor_is_not_fired_again() {
    let store = memory();
    {
        let mut engine = start(&store).await;
        submit(
            &mut engine,
            &hourly("all", "allow"),
            ms("2025-01-01T10:10:00Z"),
        )
        .await;
        turn(&mut engine, ms("2025-01-01T11:00:00Z")).await;
    }
    // Roll the cursor back as if the crash came between the run and the cursor.
    let mut cursor = store.get_schedule("hourly").unwrap().expect("stored");
    cursor.cursor_ms = ms("2025-01-01T10:10:00Z");
    cursor.last_slot_ms = None;
    let mut batch = WriteBatch::new();
    batch.put_schedule(cursor);
    store.commit(batch).await.unwrap();

    let mut engine = start(&store).await;
    turn(&mut engine, ms("2025-01-01T11:00:05Z")).await;
    assert_eq!(ids(&store), ["hourly-20250101T110000Z"]);
    let cursor = store.get_schedule("hourly").unwrap().expect("stored");
    assert_eq!(cursor.cursor_ms, ms("2025-01-01T11:00:00Z"));
}

#[tokio::test]
async fn a_cursor_stored_without_its_run_gets_the_run_exactly_once() {
    let store = memory();
    {
        let mut engine = start(&store).await;
        submit(
            &mut engine,
            &hourly("latest", "allow"),
            ms("2025-01-01T10:10:00Z"),
        )
        .await;
    }
    // The cursor says 11:00 fired, but its run never reached the store.
    let mut cursor = store.get_schedule("hourly").unwrap().expect("stored");
    cursor.cursor_ms = ms("2025-01-01T11:00:00Z");
    cursor.last_slot_ms = Some(ms("2025-01-01T11:00:00Z"));
    let mut batch = WriteBatch::new();
    batch.put_schedule(cursor);
    store.commit(batch).await.unwrap();

    let mut engine = start(&store).await;
    turn(&mut engine, ms("2025-01-01T11:00:05Z")).await;
    assert_eq!(ids(&store), ["hourly-20250101T110000Z"]);
    // A second restart finds the run and creates nothing.
    drop(engine);
    let mut engine = start(&store).await;
    turn(&mut engine, ms("2025-01-01T11:00:10Z")).await;
    assert_eq!(ids(&store), ["hourly-20250101T110000Z"]);
}

fn backfill_request(dry_run: bool) -> BackfillRequest {
    BackfillRequest {
        dag: "hourly".into(),
        from_ms: ms("2025-01-01T01:00:00Z"),
        to_ms: ms("2025-01-01T04:00:00Z"),
        dry_run,
    }
}

fn outcomes(slots: &[BackfillSlot]) -> Vec<(&str, BackfillOutcome)> {
    slots.iter().map(|s| (s.run.as_str(), s.outcome)).collect()
}

#[tokio::test]
async fn backfill_is_idempotent_and_queues_under_max_active_runs() {
    let store = memory();
    let mut engine = start(&store).await;
    let yaml = dag_yaml("0 * * * *", "latest", "skip", Some(1));
    submit(&mut engine, &yaml, ms("2025-01-01T10:10:00Z")).await;
    let now = ms("2025-01-01T10:20:00Z");

    let dry = engine.backfill(backfill_request(true), now).unwrap();
    assert_eq!(dry.len(), 4);
    assert!(
        dry.iter()
            .all(|s| s.outcome == BackfillOutcome::WouldCreate)
    );
    engine.end_turn().await.unwrap();
    assert!(runs(&store).is_empty());

    let first = engine.backfill(backfill_request(false), now).unwrap();
    engine.end_turn().await.unwrap();
    assert_eq!(
        outcomes(&first),
        [
            ("hourly-20250101T010000Z", BackfillOutcome::Created),
            ("hourly-20250101T020000Z", BackfillOutcome::Created),
            ("hourly-20250101T030000Z", BackfillOutcome::Created),
            ("hourly-20250101T040000Z", BackfillOutcome::Created),
        ]
    );
    let stored = runs(&store);
    assert!(stored.iter().all(|r| r.trigger == TriggerKind::Backfill));
    let states: Vec<RunState> = stored.iter().map(|r| r.state).collect();
    assert_eq!(
        states,
        [
            RunState::Running,
            RunState::Queued,
            RunState::Queued,
            RunState::Queued
        ]
    );

    let again = engine.backfill(backfill_request(false), now).unwrap();
    engine.end_turn().await.unwrap();
    assert!(again.iter().all(|s| matches!(
        s.outcome,
        BackfillOutcome::Exists {
            state: RunState::Running | RunState::Queued
        }
    )));
    assert_eq!(runs(&store).len(), 4);
}

#[tokio::test]
async fn backfill_leaves_future_slots_to_the_schedule_and_refuses_bad_ranges() {
    let store = memory();
    let mut engine = start(&store).await;
    submit(
        &mut engine,
        &hourly("latest", "skip"),
        ms("2025-01-01T10:10:00Z"),
    )
    .await;
    let now = ms("2025-01-01T02:30:00Z");
    let slots = engine.backfill(backfill_request(true), now).unwrap();
    assert_eq!(slots.len(), 2);
    let mut backwards = backfill_request(true);
    std::mem::swap(&mut backwards.from_ms, &mut backwards.to_ms);
    let e = engine.backfill(backwards, now).unwrap_err();
    assert!(matches!(e, EngineError::BackwardsRange { .. }), "{e}");
    let mut huge = backfill_request(true);
    huge.from_ms = ms("2020-01-01T00:00:00Z");
    let e = engine
        .backfill(huge, ms("2025-01-01T10:20:00Z"))
        .unwrap_err();
    assert!(matches!(e, EngineError::BackfillTooLarge { .. }), "{e}");
}

#[tokio::test]
async fn pause_and_resume_persist_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let open = || -> Arc<dyn Store> { Arc::new(SledStore::open(dir.path()).unwrap()) };
    {
        let store = open();
        let mut engine = start(&store).await;
        submit(
            &mut engine,
            &hourly("latest", "skip"),
            ms("2025-01-01T10:10:00Z"),
        )
        .await;
        let change = engine.set_paused("hourly", true, false, ms("2025-01-01T10:20:00Z"));
        assert!(change.unwrap().changed);
        engine.end_turn().await.unwrap();
        assert!(
            !engine
                .set_paused("hourly", true, false, ms("2025-01-01T10:21:00Z"))
                .unwrap()
                .changed
        );
    }
    {
        let store = open();
        let mut engine = start(&store).await;
        assert!(store.get_dag("hourly").unwrap().unwrap().paused);
        turn(&mut engine, ms("2025-01-01T13:30:00Z")).await;
        assert!(runs(&store).is_empty(), "a paused dag fired");
    }
    let store = open();
    let mut engine = start(&store).await;
    // Resuming counts the paused time as downtime: `catchup: latest` runs the latest slot.
    engine
        .set_paused("hourly", false, false, ms("2025-01-01T13:40:00Z"))
        .unwrap();
    engine.end_turn().await.unwrap();
    turn(&mut engine, ms("2025-01-01T13:40:00.002Z")).await;
    assert_eq!(ids(&store), ["hourly-20250101T130000Z"]);
    assert!(!store.get_dag("hourly").unwrap().unwrap().paused);
}

#[tokio::test]
async fn resume_with_skip_missed_replays_nothing() {
    let store = memory();
    let mut engine = start(&store).await;
    submit(
        &mut engine,
        &hourly("all", "allow"),
        ms("2025-01-01T10:10:00Z"),
    )
    .await;
    engine
        .set_paused("hourly", true, false, ms("2025-01-01T10:20:00Z"))
        .unwrap();
    engine
        .set_paused("hourly", false, true, ms("2025-01-01T13:40:00Z"))
        .unwrap();
    engine.end_turn().await.unwrap();
    turn(&mut engine, ms("2025-01-01T13:40:01Z")).await;
    assert!(runs(&store).is_empty());
    assert_eq!(
        engine.next_schedule_deadline(),
        Some(ms("2025-01-01T14:00:00Z"))
    );
}

#[tokio::test]
async fn a_changed_expression_starts_afresh_and_other_changes_keep_the_cursor() {
    let store = memory();
    let mut engine = start(&store).await;
    submit(
        &mut engine,
        &hourly("all", "allow"),
        ms("2025-01-01T10:10:00Z"),
    )
    .await;
    // Only the catch-up policy changes: the cursor stays at 10:10, 11:00 is still next.
    submit(
        &mut engine,
        &hourly("latest", "allow"),
        ms("2025-01-01T10:50:00Z"),
    )
    .await;
    assert_eq!(
        engine.next_schedule_deadline(),
        Some(ms("2025-01-01T11:00:00Z"))
    );
    // A new expression starts at its submission: no catch-up of the old cursor's gap.
    let every_minute = dag_yaml("* * * * *", "all", "allow", None);
    submit(&mut engine, &every_minute, ms("2025-01-01T12:30:30Z")).await;
    turn(&mut engine, ms("2025-01-01T12:31:00Z")).await;
    assert_eq!(ids(&store), ["hourly-20250101T123100Z"]);
}

#[tokio::test]
async fn a_dag_that_drops_its_schedule_stops_firing() {
    let store = memory();
    let mut engine = start(&store).await;
    submit(
        &mut engine,
        &hourly("all", "allow"),
        ms("2025-01-01T10:10:00Z"),
    )
    .await;
    let unscheduled =
        "name: hourly\nstages:\n  - name: work\n    executor: process\n    command: \"true\"\n";
    submit(&mut engine, unscheduled, ms("2025-01-01T10:20:00Z")).await;
    turn(&mut engine, ms("2025-01-01T12:00:00Z")).await;
    assert!(runs(&store).is_empty());
    assert_eq!(engine.next_schedule_deadline(), None);
}

#[tokio::test]
async fn a_catch_up_larger_than_one_turn_continues_without_skipping_itself() {
    let store = memory();
    let yaml = dag_yaml("* * * * *", "all", "skip", None);
    {
        let mut engine = start(&store).await;
        submit(&mut engine, &yaml, ms("2025-01-01T00:00:30Z")).await;
    }
    // Down for 1,500 minutes: more than one turn's share of 1,000 slots.
    let mut engine = start(&store).await;
    let now = ms("2025-01-02T01:00:10Z");
    turn(&mut engine, now).await;
    assert_eq!(runs(&store).len(), 1_000);
    turn(&mut engine, now + 1).await;
    let fired = runs(&store);
    assert_eq!(fired.len(), 1_500);
    assert!(
        fired.iter().all(|r| r.state == RunState::Running),
        "the second share of the catch-up was skipped as overlapping the first"
    );
    // The catch-up is over: the next slot overlaps the runs still active and is skipped.
    turn(&mut engine, ms("2025-01-02T01:01:00Z")).await;
    let next = store
        .get_run(&RunId::from("hourly-20250102T010100Z"))
        .unwrap()
        .expect("recorded");
    assert_eq!(next.state, RunState::Cancelled);
}
