//! Table tests of `vishwa retry`: which stages a retry selects, and a retried run.

use super::*;

fn finished_failing_at_b() -> Harness {
    let mut h = Harness::new(RETRY_DAG);
    h.start();
    h.run_stage("a", 0, T0);
    h.run_stage("side", 0, T0);
    h.run_stage("b", 1, T0);
    let a = h.dispatch("cleanup", T0);
    let actions = h.finish("cleanup", &a, AttemptOutcome::Exited { code: 0 }, T0);
    assert_eq!(finished(&actions), Some(RunState::Failed));
    h
}

fn names(h: &Harness, selected: &[usize]) -> Vec<String> {
    selected
        .iter()
        .map(|&i| h.run.stages[i].instance.clone())
        .collect()
}

#[test]
fn retry_selects_failed_stages_and_everything_after_them() {
    let h = finished_failing_at_b();
    let selected = h.run.retry_selection(&RetryMode::Failed).unwrap();
    assert_eq!(names(&h, &selected), ["b", "c", "cleanup"]);
}

#[test]
fn retry_from_selects_the_stage_and_everything_downstream() {
    let h = finished_failing_at_b();
    let selected = h.run.retry_selection(&RetryMode::From("a".into())).unwrap();
    assert_eq!(names(&h, &selected), ["a", "b", "c", "side", "cleanup"]);
    let selected = h
        .run
        .retry_selection(&RetryMode::From("side".into()))
        .unwrap();
    assert_eq!(names(&h, &selected), ["side", "cleanup"]);
}

#[test]
fn retry_only_selects_the_stage_alone() {
    let h = finished_failing_at_b();
    let selected = h.run.retry_selection(&RetryMode::Only("b".into())).unwrap();
    assert_eq!(names(&h, &selected), ["b"]);
}

#[test]
fn retry_of_an_unknown_stage_or_an_unfinished_run_is_refused() {
    let h = finished_failing_at_b();
    let err = h
        .run
        .retry_selection(&RetryMode::From("nope".into()))
        .unwrap_err();
    assert!(matches!(err, TransitionError::UnknownStage { .. }));
    let mut running = Harness::new(RETRY_DAG);
    running.start();
    let err = running.run.retry_selection(&RetryMode::Failed).unwrap_err();
    assert!(matches!(err, TransitionError::NotFinished { .. }));
}

#[test]
fn a_retried_run_runs_the_selected_stages_again_and_keeps_their_history() {
    let mut h = finished_failing_at_b();
    let selected = h.run.retry_selection(&RetryMode::Failed).unwrap();
    let actions = h
        .run
        .retry(&selected, RetryMode::Failed, T0 + 1_000)
        .unwrap();
    assert_eq!(
        h.ready_names(&actions),
        ["b"],
        "b's upstream a already succeeded"
    );
    assert_eq!(h.run.record.state, RunState::Running);
    assert_eq!(h.run.record.retries.len(), 1);
    assert_eq!(h.run.record.retries[0].stages, ["b", "c", "cleanup"]);
    assert_eq!(h.state("a"), "succeeded");
    assert_eq!(h.state("cleanup"), "pending");
    let (run_dirty, dirty) = h.run.take_dirty();
    assert!(run_dirty);
    assert_eq!(dirty.len(), 3);
    h.run_stage("b", 0, T0 + 2_000);
    h.run_stage("c", 0, T0 + 3_000);
    let a = h.dispatch("cleanup", T0 + 4_000);
    let actions = h.finish(
        "cleanup",
        &a,
        AttemptOutcome::Exited { code: 0 },
        T0 + 5_000,
    );
    assert_eq!(finished(&actions), Some(RunState::Succeeded));
    let b = &h.run.stages[h.idx("b")];
    assert_eq!(
        b.attempts.len(),
        2,
        "the failed attempt stays in the history"
    );
    assert_eq!(b.attempts[0].outcome, AttemptOutcome::Exited { code: 1 });
    assert_eq!(b.attempts[1].number, 2);
}

#[test]
fn a_retried_stage_gets_its_retry_budget_back() {
    let mut h = Harness::new(RETRYING);
    h.start();
    let a1 = h.dispatch("flaky", T0);
    h.finish("flaky", &a1, AttemptOutcome::Exited { code: 1 }, T0);
    for t in [T0 + 10_000, T0 + 25_000] {
        h.run.apply(Event::Tick, t).unwrap();
        let a = h.dispatch("flaky", t);
        h.finish("flaky", &a, AttemptOutcome::Exited { code: 1 }, t);
    }
    assert_eq!(h.run.record.state, RunState::Failed);
    let selected = h
        .run
        .retry_selection(&RetryMode::Only("flaky".into()))
        .unwrap();
    h.run
        .retry(&selected, RetryMode::Only("flaky".into()), T0 + 60_000)
        .unwrap();
    let a = h.dispatch("flaky", T0 + 60_000);
    h.finish("flaky", &a, AttemptOutcome::Exited { code: 1 }, T0 + 60_000);
    assert_eq!(h.state("flaky"), "queued", "a fresh budget of 2 retries");
}
