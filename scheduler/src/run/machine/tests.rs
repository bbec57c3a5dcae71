//! Table-style tests of the run state machine: events in, states and actions out.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::dag::parse_dag;
use crate::ids::RunId;
use crate::ids::{AttemptId, WorkerId};
use crate::run::state::{ArtifactRef, AttemptOutcome, CacheNote, RunRecord, RunState, StageState};
use crate::run::{RetryMode, RunPlan, TriggerKind};

const T0: Millis = 1_000_000;

/// A run of the DAG in `yaml`, started at `T0`.
struct Harness {
    run: Run,
    attempts: u32,
}

impl Harness {
    fn new(yaml: &str) -> Harness {
        Self::with_params(yaml, BTreeMap::new())
    }

    fn with_params(yaml: &str, overrides: BTreeMap<String, String>) -> Harness {
        let dag = Arc::new(parse_dag(yaml, "test.yaml").expect("test DAG is valid"));
        let params = dag.resolve_params(&overrides).expect("params resolve");
        let plan = Arc::new(RunPlan::build(dag, &params).expect("plan builds"));
        let record = RunRecord {
            id: RunId::from("run-1"),
            dag: "test".into(),
            dag_version: "v".into(),
            params,
            state: RunState::Queued,
            trigger: TriggerKind::Manual,
            created_ms: T0,
            started_ms: None,
            finished_ms: None,
            message: None,
            logical_time_ms: None,
            deadline_ms: None,
            cancel_requested: false,
            retries: Vec::new(),
            no_cache: false,
            assets: Vec::new(),
        };
        Harness {
            run: Run::new(record, plan),
            attempts: 0,
        }
    }

    fn idx(&self, name: &str) -> usize {
        self.run
            .plan
            .instance(name)
            .unwrap_or_else(|| panic!("no instance {name}"))
    }

    fn state(&self, name: &str) -> &'static str {
        self.run.stages[self.idx(name)].state.name()
    }

    fn states(&self) -> Vec<(&str, &'static str)> {
        self.run
            .stages
            .iter()
            .map(|s| (s.instance.as_str(), s.state.name()))
            .collect()
    }

    fn start(&mut self) -> Vec<String> {
        let actions = self.run.apply(Event::Start, T0).expect("start");
        self.ready_names(&actions)
    }

    fn ready_names(&self, actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Ready { instance } => Some(self.run.stages[*instance].instance.clone()),
                _ => None,
            })
            .collect()
    }

    /// Dispatches `name` as a new attempt and returns its id.
    fn dispatch(&mut self, name: &str, now: Millis) -> AttemptId {
        self.attempts += 1;
        let attempt = AttemptId(format!("att-{}", self.attempts));
        let instance = self.idx(name);
        self.run
            .apply(
                Event::Dispatched {
                    instance,
                    attempt: attempt.clone(),
                    worker: WorkerId::from("w1"),
                    gpus: Vec::new(),
                },
                now,
            )
            .expect("dispatch");
        attempt
    }

    fn finish(
        &mut self,
        name: &str,
        attempt: &AttemptId,
        outcome: AttemptOutcome,
        now: Millis,
    ) -> Vec<Action> {
        let instance = self.idx(name);
        self.run
            .apply(
                Event::Finished {
                    instance,
                    attempt: attempt.clone(),
                    report: outcome.into(),
                },
                now,
            )
            .expect("finish")
    }

    /// Dispatches `name` and finishes it with exit `code`; returns the names made ready.
    fn run_stage(&mut self, name: &str, code: i64, now: Millis) -> Vec<String> {
        let a = self.dispatch(name, now);
        let actions = self.finish(name, &a, AttemptOutcome::Exited { code }, now + 10);
        self.ready_names(&actions)
    }
}

fn finished(actions: &[Action]) -> Option<RunState> {
    actions.iter().find_map(|a| match a {
        Action::RunFinished { state } => Some(*state),
        _ => None,
    })
}

const DIAMOND: &str = "
name: diamond
defaults: {image: busybox}
stages:
  - {name: a, command: [true]}
  - {name: b, needs: [a], command: [true]}
  - {name: c, needs: [a], command: [true]}
  - {name: d, needs: [b, c], command: [true]}
";

#[test]
fn diamond_runs_in_dependency_order_and_succeeds() {
    let mut h = Harness::new(DIAMOND);
    assert_eq!(h.start(), ["a"]);
    assert_eq!(h.run.record.state, RunState::Running);
    let mut ready = h.run_stage("a", 0, T0);
    ready.sort();
    assert_eq!(ready, ["b", "c"]);
    assert!(h.run_stage("b", 0, T0 + 100).is_empty(), "d waits for c");
    assert_eq!(h.run_stage("c", 0, T0 + 200), ["d"]);
    let a = h.dispatch("d", T0 + 300);
    let actions = h.finish("d", &a, AttemptOutcome::Exited { code: 0 }, T0 + 400);
    assert_eq!(finished(&actions), Some(RunState::Succeeded));
    assert_eq!(h.run.record.finished_ms, Some(T0 + 400));
    assert!(h.states().iter().all(|(_, s)| *s == "succeeded"));
}

#[test]
fn a_failure_marks_downstream_upstream_failed_and_fails_the_run() {
    let mut h = Harness::new(DIAMOND);
    h.start();
    h.run_stage("a", 0, T0);
    h.run_stage("b", 2, T0 + 100);
    assert_eq!(h.state("b"), "failed");
    assert_eq!(
        h.state("d"),
        "upstream_failed",
        "decided without waiting for c"
    );
    assert_eq!(h.run.record.state, RunState::Running, "c still runs");
    let a = h.dispatch("c", T0 + 200);
    let actions = h.finish("c", &a, AttemptOutcome::Exited { code: 0 }, T0 + 300);
    assert_eq!(finished(&actions), Some(RunState::Failed));
    assert!(h.run.record.message.as_deref().unwrap().contains('b'));
}

const RULES: &str = "
name: rules
defaults: {image: busybox, command: [true]}
stages:
  - {name: ok}
  - {name: bad}
  - {name: all-success, needs: [ok, bad]}
  - {name: all-done, needs: [ok, bad], trigger: all_done}
  - {name: one-failed, needs: [ok, bad], trigger: one_failed}
  - {name: one-success, needs: [ok, bad], trigger: one_success}
  - {name: none-failed, needs: [ok, bad], trigger: none_failed}
";

#[test]
fn trigger_rules_decide_on_a_mix_of_success_and_failure() {
    let mut h = Harness::new(RULES);
    let mut roots = h.start();
    roots.sort();
    assert_eq!(roots, ["bad", "ok"]);
    let ready = h.run_stage("ok", 0, T0);
    assert_eq!(
        ready,
        ["one-success"],
        "one_success fires at the first success"
    );
    let mut ready = h.run_stage("bad", 1, T0 + 100);
    ready.sort();
    assert_eq!(ready, ["all-done", "one-failed"]);
    assert_eq!(h.state("all-success"), "upstream_failed");
    assert_eq!(h.state("none-failed"), "upstream_failed");
}

#[test]
fn trigger_rules_decide_when_everything_succeeds() {
    let mut h = Harness::new(RULES);
    h.start();
    h.run_stage("ok", 0, T0);
    let mut ready = h.run_stage("bad", 0, T0 + 100);
    ready.sort();
    assert_eq!(ready, ["all-done", "all-success", "none-failed"]);
    assert_eq!(h.state("one-failed"), "skipped");
    assert_eq!(
        h.state("one-success"),
        "queued",
        "already ready since the first success"
    );
}

#[test]
fn one_success_is_upstream_failed_when_everything_fails() {
    let mut h = Harness::new(RULES);
    h.start();
    h.run_stage("ok", 1, T0);
    h.run_stage("bad", 1, T0);
    assert_eq!(h.state("one-success"), "upstream_failed");
    assert_eq!(h.state("one-failed"), "queued");
}

#[test]
fn skips_flow_downstream_through_all_success_but_not_none_failed() {
    let yaml = "
name: skips
defaults: {image: busybox, command: [true]}
stages:
  - {name: a}
  - {name: only-on-failure, needs: [a], trigger: one_failed}
  - {name: after-skip, needs: [only-on-failure]}
  - {name: tolerant, needs: [only-on-failure], trigger: none_failed}
";
    let mut h = Harness::new(yaml);
    h.start();
    let ready = h.run_stage("a", 0, T0);
    assert_eq!(ready, ["tolerant"]);
    assert_eq!(h.state("only-on-failure"), "skipped");
    assert_eq!(h.state("after-skip"), "skipped");
    let a = h.dispatch("tolerant", T0 + 50);
    let actions = h.finish("tolerant", &a, AttemptOutcome::Exited { code: 0 }, T0 + 60);
    assert_eq!(
        finished(&actions),
        Some(RunState::Succeeded),
        "skips are not failures"
    );
}

const RETRYING: &str = "
name: retrying
stages:
  - name: flaky
    image: busybox
    command: [true]
    retries: {limit: 2, backoff: 10s, max_backoff: 15s}
  - {name: after, needs: [flaky], image: busybox, command: [true]}
";

#[test]
fn a_failed_attempt_is_retried_after_its_backoff_and_can_then_succeed() {
    let mut h = Harness::new(RETRYING);
    h.start();
    let a1 = h.dispatch("flaky", T0);
    let actions = h.finish("flaky", &a1, AttemptOutcome::Exited { code: 1 }, T0 + 1_000);
    assert!(h.ready_names(&actions).is_empty(), "waits for the backoff");
    assert_eq!(h.state("flaky"), "queued");
    assert_eq!(h.run.next_wakeup(), Some(T0 + 11_000));
    let early = h.run.apply(Event::Tick, T0 + 10_999).unwrap();
    assert!(early.is_empty());
    let due = h.run.apply(Event::Tick, T0 + 11_000).unwrap();
    assert_eq!(h.ready_names(&due), ["flaky"]);
    let ready = h.run_stage("flaky", 0, T0 + 12_000);
    assert_eq!(ready, ["after"]);
    let rec = &h.run.stages[h.idx("flaky")];
    assert_eq!(rec.attempts.len(), 2);
    assert_eq!(rec.attempts[0].outcome, AttemptOutcome::Exited { code: 1 });
    assert_eq!(rec.attempts[1].number, 2);
}

#[test]
fn retries_back_off_exponentially_up_to_the_cap_then_fail() {
    let mut h = Harness::new(RETRYING);
    h.start();
    let a1 = h.dispatch("flaky", T0);
    h.finish("flaky", &a1, AttemptOutcome::Exited { code: 1 }, T0);
    assert_eq!(h.run.next_wakeup(), Some(T0 + 10_000));
    h.run.apply(Event::Tick, T0 + 10_000).unwrap();
    let a2 = h.dispatch("flaky", T0 + 10_000);
    h.finish(
        "flaky",
        &a2,
        AttemptOutcome::Exited { code: 1 },
        T0 + 10_000,
    );
    assert_eq!(h.run.next_wakeup(), Some(T0 + 25_000), "20s capped at 15s");
    h.run.apply(Event::Tick, T0 + 25_000).unwrap();
    let a3 = h.dispatch("flaky", T0 + 25_000);
    let actions = h.finish(
        "flaky",
        &a3,
        AttemptOutcome::Exited { code: 3 },
        T0 + 26_000,
    );
    assert_eq!(h.state("flaky"), "failed");
    assert_eq!(h.state("after"), "upstream_failed");
    assert_eq!(finished(&actions), Some(RunState::Failed));
    match &h.run.stages[h.idx("flaky")].state {
        StageState::Failed { error, .. } => assert_eq!(error, "exited with code 3"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn exponential_backoff_doubles_and_caps() {
    assert_eq!(exponential_backoff(1_000, 60_000, 1), 1_000);
    assert_eq!(exponential_backoff(1_000, 60_000, 3), 4_000);
    assert_eq!(exponential_backoff(1_000, 60_000, 30), 60_000);
    assert_eq!(exponential_backoff(1_000, 60_000, u32::MAX), 60_000);
}

#[test]
fn a_timed_out_attempt_counts_as_a_failure() {
    let yaml = "
name: slow
stages:
  - {name: s, image: busybox, command: [sleep, '100'], timeout: 5s}
";
    let mut h = Harness::new(yaml);
    h.start();
    let a = h.dispatch("s", T0);
    let actions = h.finish("s", &a, AttemptOutcome::TimedOut, T0 + 5_000);
    assert_eq!(finished(&actions), Some(RunState::Failed));
    match &h.run.stages[0].state {
        StageState::Failed { error, .. } => assert_eq!(error, "timed out"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn an_attempt_silent_past_its_deadline_is_killed_by_the_scheduler() {
    let yaml = "
name: slow
stages:
  - {name: s, image: busybox, command: [sleep, '100'], timeout: 5s}
";
    let mut h = Harness::new(yaml);
    h.start();
    let a = h.dispatch("s", T0);
    let deadline = T0 + 5_000 + DEADLINE_GRACE_MS;
    assert_eq!(h.run.next_wakeup(), Some(deadline));
    assert!(h.run.apply(Event::Tick, deadline - 1).unwrap().is_empty());
    let actions = h.run.apply(Event::Tick, deadline).unwrap();
    assert!(actions.contains(&Action::Kill {
        instance: 0,
        attempt: a.clone(),
        worker: WorkerId::from("w1"),
    }));
    assert_eq!(finished(&actions), Some(RunState::Failed));
    let late = h.run.apply(
        Event::Finished {
            instance: 0,
            attempt: a,
            report: AttemptOutcome::Exited { code: 0 }.into(),
        },
        deadline + 1,
    );
    assert!(late.is_err(), "the killed attempt's late report is refused");
}

#[test]
fn cancel_mid_run_kills_running_attempts_and_cancels_the_rest() {
    let mut h = Harness::new(DIAMOND);
    h.start();
    h.run_stage("a", 0, T0);
    let b = h.dispatch("b", T0 + 100);
    let actions = h
        .run
        .apply(
            Event::Cancel {
                reason: "cancelled by request".into(),
            },
            T0 + 200,
        )
        .unwrap();
    assert!(actions.contains(&Action::Kill {
        instance: h.idx("b"),
        attempt: b.clone(),
        worker: WorkerId::from("w1"),
    }));
    assert_eq!(finished(&actions), Some(RunState::Cancelled));
    assert_eq!(h.state("a"), "succeeded");
    for s in ["b", "c", "d"] {
        assert_eq!(h.state(s), "cancelled", "{s}");
    }
    let attempt = &h.run.stages[h.idx("b")].attempts[0];
    assert_eq!(attempt.outcome, AttemptOutcome::Cancelled);
    let stale = h.run.apply(
        Event::Finished {
            instance: h.idx("b"),
            attempt: b,
            report: AttemptOutcome::Cancelled.into(),
        },
        T0 + 300,
    );
    assert!(matches!(stale, Err(TransitionError::StaleAttempt { .. })));
    assert!(
        h.run
            .apply(
                Event::Cancel {
                    reason: "again".into()
                },
                T0 + 400
            )
            .is_err()
    );
}

#[test]
fn the_run_timeout_stops_everything_and_fails_the_run() {
    let yaml = "
name: bounded
timeout: 1m
stages:
  - {name: s, image: busybox, command: [sleep, '1000']}
  - {name: t, needs: [s], image: busybox, command: [true]}
";
    let mut h = Harness::new(yaml);
    h.start();
    assert_eq!(h.run.record.deadline_ms, Some(T0 + 60_000));
    let a = h.dispatch("s", T0);
    let actions = h.run.apply(Event::Tick, T0 + 60_000).unwrap();
    assert!(
        actions
            .iter()
            .any(|x| matches!(x, Action::Kill { attempt, .. } if *attempt == a))
    );
    assert_eq!(finished(&actions), Some(RunState::Failed));
    assert!(
        h.run
            .record
            .message
            .as_deref()
            .unwrap()
            .contains("timed out after 1m")
    );
    assert_eq!(h.state("t"), "cancelled");
}

#[test]
fn reports_from_a_superseded_attempt_are_refused() {
    let mut h = Harness::new(RETRYING);
    h.start();
    let a1 = h.dispatch("flaky", T0);
    let lost = AttemptOutcome::Lost {
        reason: "worker died".into(),
    };
    let actions = h.finish("flaky", &a1, lost, T0);
    assert_eq!(
        h.ready_names(&actions),
        ["flaky"],
        "a lost attempt runs again at once"
    );
    let _a2 = h.dispatch("flaky", T0 + 1);
    let stale = h.run.apply(
        Event::Finished {
            instance: 0,
            attempt: a1.clone(),
            report: AttemptOutcome::Exited { code: 0 }.into(),
        },
        T0 + 5_000,
    );
    assert!(matches!(stale, Err(TransitionError::StaleAttempt { .. })));
    let started = h.run.apply(
        Event::Started {
            instance: 0,
            attempt: a1,
            handle: "c".into(),
        },
        T0 + 5_000,
    );
    assert!(matches!(started, Err(TransitionError::StaleAttempt { .. })));
    assert_eq!(h.state("flaky"), "running");
}

#[test]
fn lost_and_transient_attempts_use_their_own_budget() {
    let yaml = "
name: infra
stages:
  - {name: s, image: missing, command: [true]}
";
    let mut h = Harness::new(yaml);
    h.start();
    let mut now = T0;
    for n in 1..=INFRA_RETRY_LIMIT {
        let a = h.dispatch("s", now);
        let outcome = AttemptOutcome::Error {
            message: "image missing is not present".into(),
            transient: true,
        };
        h.finish("s", &a, outcome, now);
        assert_eq!(h.state("s"), "queued", "retry {n} despite retries: 0");
        now = h.run.next_wakeup().unwrap();
        h.run.apply(Event::Tick, now).unwrap();
    }
    let a = h.dispatch("s", now);
    let outcome = AttemptOutcome::Error {
        message: "image missing is not present".into(),
        transient: true,
    };
    let actions = h.finish("s", &a, outcome, now);
    assert_eq!(finished(&actions), Some(RunState::Failed));
    match &h.run.stages[0].state {
        StageState::Failed { error, .. } => assert!(error.contains("image missing"), "{error}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_permanent_executor_error_fails_without_retrying() {
    let mut h = Harness::new(RETRYING);
    h.start();
    let a = h.dispatch("flaky", T0);
    let outcome = AttemptOutcome::Error {
        message: "mount refused".into(),
        transient: false,
    };
    h.finish("flaky", &a, outcome, T0);
    assert_eq!(h.state("flaky"), "failed");
}

const FAN_OUT: &str = "
name: fan
params:
  flavours: [a, b, c, d, e]
stages:
  - name: train
    image: busybox
    for_each: '{{ params.flavours }}'
    max_parallel: 2
    command: [echo, '{{ item }}']
  - {name: pick, needs: [train], image: busybox, command: [true]}
";

#[test]
fn fan_out_respects_max_parallel_and_the_join_waits_for_every_instance() {
    let mut h = Harness::new(FAN_OUT);
    let ready = h.start();
    assert_eq!(ready, ["train[a]", "train[b]"]);
    let next = h.run_stage("train[a]", 0, T0);
    assert_eq!(next, ["train[c]"]);
    let next = h.run_stage("train[b]", 0, T0);
    assert_eq!(next, ["train[d]"]);
    h.run_stage("train[c]", 0, T0);
    h.run_stage("train[d]", 0, T0);
    let next = h.run_stage("train[e]", 0, T0);
    assert_eq!(next, ["pick"]);
    assert_eq!(h.run.stages[h.idx("pick")].needs, ["train"]);
}

#[test]
fn a_fan_out_of_100_items_never_holds_more_than_max_parallel() {
    let items: Vec<String> = (0..100).map(|i| format!("i{i}")).collect();
    let yaml = format!(
        "name: wide\nstages:\n  - name: shard\n    image: busybox\n    for_each: [{}]\n    \
         max_parallel: 5\n    command: [echo, '{{{{ item }}}}']\n  - {{name: join, needs: [shard], \
         image: busybox, command: [true]}}\n",
        items.join(", ")
    );
    let mut h = Harness::new(&yaml);
    let mut in_flight = h.start();
    assert_eq!(in_flight.len(), 5);
    let mut finished = 0;
    let mut joined = false;
    // Finish instances in a scrambled order; every newly ready one joins the in-flight set.
    while let Some(pos) = (!in_flight.is_empty()).then(|| (finished * 7) % in_flight.len()) {
        let done = in_flight.remove(pos);
        let next = h.run_stage(&done, 0, T0);
        finished += 1;
        for name in next {
            if name == "join" {
                joined = true;
            } else {
                in_flight.push(name);
            }
        }
        assert!(in_flight.len() <= 5, "{} shards at once", in_flight.len());
    }
    assert_eq!(finished, 100);
    assert!(joined, "the join became ready after the last shard");
}

#[test]
fn an_empty_fan_out_is_skipped() {
    let mut h = Harness::with_params(FAN_OUT, BTreeMap::from([("flavours".into(), "[]".into())]));
    let ready = h.start();
    assert!(ready.is_empty());
    assert_eq!(h.state("train"), "skipped");
    assert_eq!(h.state("pick"), "skipped");
    assert_eq!(h.run.record.state, RunState::Succeeded);
}

#[test]
fn a_restored_run_carries_on_where_it_stopped() {
    let mut h = Harness::new(FAN_OUT);
    h.start();
    h.run_stage("train[a]", 0, T0);
    let running = h.dispatch("train[b]", T0);
    h.run.take_dirty();
    let record = h.run.record.clone();
    let stored = h.run.stages.clone();
    let plan = h.run.plan.clone();
    let mut restored = Run::restore(record, plan, stored).unwrap();
    let ready: Vec<_> = restored
        .resume(T0 + 1)
        .into_iter()
        .filter_map(|a| match a {
            Action::Ready { instance } => Some(restored.stages[instance].instance.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(ready, ["train[c]"], "one slot held by the running b");
    let actions = restored
        .apply(
            Event::Finished {
                instance: restored.plan.instance("train[b]").unwrap(),
                attempt: running,
                report: AttemptOutcome::Exited { code: 0 }.into(),
            },
            T0 + 2,
        )
        .unwrap();
    assert!(actions.contains(&Action::Ready {
        instance: restored.plan.instance("train[d]").unwrap()
    }));
}

#[test]
fn dispatching_an_instance_that_is_not_ready_is_refused() {
    let mut h = Harness::new(DIAMOND);
    h.start();
    let d = h.idx("d");
    let refused = h.run.apply(
        Event::Dispatched {
            instance: d,
            attempt: AttemptId::from("x"),
            worker: WorkerId::from("w1"),
            gpus: Vec::new(),
        },
        T0,
    );
    assert!(matches!(refused, Err(TransitionError::NotQueued { .. })));
}

const RETRY_DAG: &str = "
name: retry
defaults: {image: busybox, command: [true]}
stages:
  - {name: a}
  - {name: b, needs: [a]}
  - {name: c, needs: [b]}
  - {name: side, needs: [a]}
  - {name: cleanup, needs: [c, side], trigger: all_done}
";

#[test]
fn a_stage_no_worker_can_run_fails_with_the_reason() {
    let mut h = Harness::new(DIAMOND);
    h.start();
    let a = h.idx("a");
    let actions = h
        .run
        .apply(
            Event::Refused {
                instance: a,
                reason: "no worker can run it: w1 has 2 cpus".into(),
            },
            T0,
        )
        .unwrap();
    assert_eq!(finished(&actions), Some(RunState::Failed));
    match &h.run.stages[a].state {
        StageState::Failed { error, .. } => assert!(error.contains("w1 has 2 cpus")),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(h.state("d"), "upstream_failed");
}

fn model_ref() -> ArtifactRef {
    ArtifactRef {
        name: "model.pkl".to_owned(),
        digest: "ab".repeat(32),
        size: 3,
    }
}

#[test]
fn a_cache_hit_succeeds_a_queued_instance_without_an_attempt_and_readies_what_follows() {
    let mut h = Harness::new(DIAMOND);
    assert_eq!(h.start(), ["a"]);
    let a = h.idx("a");
    let note = CacheNote {
        key: "k".to_owned(),
        outcome: crate::run::CacheOutcome::Hit {
            run: RunId::from("run-0"),
            stage: "a".to_owned(),
        },
    };
    let actions = h
        .run
        .apply(
            Event::CacheHit {
                instance: a,
                note: note.clone(),
                outputs: vec![model_ref()],
                metrics: BTreeMap::from([("acc".to_owned(), 0.9)]),
            },
            T0 + 1,
        )
        .expect("a queued instance can hit");
    let mut ready = h.ready_names(&actions);
    ready.sort();
    assert_eq!(ready, ["b", "c"]);
    let rec = &h.run.stages[a];
    assert_eq!(rec.state.name(), "succeeded");
    assert!(rec.attempts.is_empty());
    assert_eq!(rec.outputs, vec![model_ref()]);
    assert_eq!(rec.metrics["acc"], 0.9);
    assert_eq!(rec.cache, Some(note.clone()));
    // Only a queued instance can hit.
    let d = h.idx("d");
    let refused = h.run.apply(
        Event::CacheHit {
            instance: d,
            note,
            outputs: Vec::new(),
            metrics: BTreeMap::new(),
        },
        T0 + 2,
    );
    assert!(matches!(refused, Err(TransitionError::NotQueued { .. })));
}

mod approval;
mod finish;
mod retry;
