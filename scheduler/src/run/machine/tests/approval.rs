//! Table tests of `approval:` gates: the instance waits without a slot, approval queues it,
//! rejection and the approval's timeout fail it (no retry) and what needs it follows its
//! trigger rule, a restored run keeps waiting with its deadline.

use super::*;

const GATED: &str = "
name: gated
defaults: {image: busybox}
stages:
  - {name: train, command: [true]}
  - name: deploy
    needs: [train]
    command: [true]
    retries: {limit: 3, backoff: 1s}
    approval: {message: ship it?, timeout: 1h}
  - {name: notify, needs: [deploy], command: [true]}
  - {name: report, needs: [deploy], trigger: all_done, command: [true]}
";

const HOUR: Millis = 3_600_000;

fn approve(h: &mut Harness, name: &str, now: Millis) -> Result<Vec<Action>, TransitionError> {
    let instance = h.idx(name);
    h.run.apply(
        Event::Approved {
            instance,
            by: "ops".into(),
        },
        now,
    )
}

fn reject(h: &mut Harness, name: &str, now: Millis) -> Vec<Action> {
    let instance = h.idx(name);
    h.run
        .apply(
            Event::Rejected {
                instance,
                by: "ops".into(),
                reason: "metrics too low".into(),
            },
            now,
        )
        .expect("reject")
}

#[test]
fn a_gated_stage_waits_without_a_slot_until_approved() {
    let mut h = Harness::new(GATED);
    h.start();
    let ready = h.run_stage("train", 0, T0);
    assert!(
        ready.is_empty(),
        "deploy waits for approval, not for a worker"
    );
    let i = h.idx("deploy");
    match &h.run.stages[i].state {
        StageState::WaitingApproval {
            message,
            deadline_ms,
            ..
        } => {
            assert_eq!(message, "ship it?");
            assert_eq!(*deadline_ms, Some(T0 + 10 + HOUR));
        }
        other => panic!("deploy is {other:?}"),
    }
    assert!(!h.run.is_dispatchable(i), "a waiting stage holds no slot");
    assert_eq!(h.run.next_wakeup(), Some(T0 + 10 + HOUR));
    let actions = approve(&mut h, "deploy", T0 + 20).unwrap();
    assert_eq!(h.ready_names(&actions), ["deploy"]);
    let decision = h.run.stages[i].approval.clone().unwrap();
    assert!(decision.approved);
    assert_eq!(decision.by, "ops");
    assert_eq!(h.run_stage("deploy", 0, T0 + 30).len(), 2);
    assert!(
        approve(&mut h, "deploy", T0 + 40).is_err(),
        "a second approval is refused"
    );
}

#[test]
fn a_rejection_fails_the_stage_without_retry_and_flows_by_trigger_rules() {
    let mut h = Harness::new(GATED);
    h.start();
    h.run_stage("train", 0, T0);
    let actions = reject(&mut h, "deploy", T0 + 20);
    assert_eq!(h.ready_names(&actions), ["report"], "all_done runs");
    assert_eq!(h.state("deploy"), "failed");
    assert_eq!(h.state("notify"), "upstream_failed");
    match &h.run.stages[h.idx("deploy")].state {
        StageState::Failed { error, .. } => {
            assert_eq!(error, "rejected by ops: metrics too low")
        }
        other => panic!("deploy is {other:?}"),
    }
    assert!(h.run.stages[h.idx("deploy")].attempts.is_empty());
    let actions = {
        let a = h.dispatch("report", T0 + 30);
        h.finish("report", &a, AttemptOutcome::Exited { code: 0 }, T0 + 40)
    };
    assert_eq!(finished(&actions), Some(RunState::Failed));
}

#[test]
fn the_approval_timeout_rejects() {
    let mut h = Harness::new(GATED);
    h.start();
    h.run_stage("train", 0, T0);
    let deadline = T0 + 10 + HOUR;
    assert!(h.run.apply(Event::Tick, deadline - 1).unwrap().is_empty());
    assert_eq!(h.state("deploy"), "waiting_approval");
    let actions = h.run.apply(Event::Tick, deadline).unwrap();
    assert_eq!(h.ready_names(&actions), ["report"]);
    let rec = &h.run.stages[h.idx("deploy")];
    match &rec.state {
        StageState::Failed { error, .. } => {
            assert_eq!(error, "rejected by timeout: no decision within 1h")
        }
        other => panic!("deploy is {other:?}"),
    }
    assert_eq!(rec.approval.as_ref().unwrap().by, "timeout");
}

#[test]
fn a_stage_not_waiting_cannot_be_approved() {
    let mut h = Harness::new(GATED);
    h.start();
    assert!(matches!(
        approve(&mut h, "deploy", T0),
        Err(TransitionError::NotWaitingApproval { .. })
    ));
    assert!(approve(&mut h, "train", T0).is_err());
}

#[test]
fn a_restored_run_keeps_waiting_and_its_deadline() {
    let mut h = Harness::new(GATED);
    h.start();
    h.run_stage("train", 0, T0);
    let mut restored = Run::restore(
        h.run.record.clone(),
        h.run.plan.clone(),
        h.run.stages.clone(),
    )
    .unwrap();
    assert!(restored.resume(T0 + 100).is_empty(), "nothing to dispatch");
    let i = restored.plan.instance("deploy").unwrap();
    assert_eq!(restored.stages[i].state.name(), "waiting_approval");
    assert_eq!(restored.next_wakeup(), Some(T0 + 10 + HOUR));
    restored.apply(Event::Tick, T0 + 10 + HOUR).unwrap();
    assert_eq!(restored.stages[i].state.name(), "failed");
}

#[test]
fn a_retried_gated_stage_asks_for_approval_again() {
    let mut h = Harness::new(GATED);
    h.start();
    h.run_stage("train", 0, T0);
    reject(&mut h, "deploy", T0 + 20);
    h.run_stage("report", 0, T0 + 30);
    assert_eq!(h.run.record.state, RunState::Failed);
    let selected = h.run.retry_selection(&RetryMode::Failed).unwrap();
    let actions = h.run.retry(&selected, RetryMode::Failed, T0 + 40).unwrap();
    assert!(h.ready_names(&actions).is_empty(), "{actions:?}");
    assert_eq!(h.state("deploy"), "waiting_approval");
    assert!(h.run.stages[h.idx("deploy")].approval.is_none());
}
