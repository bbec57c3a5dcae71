//! `when:` conditions inside runs: decided when the trigger rule would let a stage run,
//! skipping or failing it, with skips flowing on by the trigger rules.

use std::sync::Arc;

use crate::dag::parse_dag;
use crate::ids::{AttemptId, Millis, RunId, WorkerId};
use crate::run::{
    Action, AttemptOutcome, AttemptReport, Event, RetryMode, Run, RunPlan, RunRecord, RunState,
    StageState, TriggerKind,
};

const T0: Millis = 5_000_000;

struct Harness {
    run: Run,
    attempts: u32,
}

impl Harness {
    fn new(yaml: &str, overrides: &[(&str, &str)]) -> Harness {
        let dag = Arc::new(parse_dag(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}")));
        let overrides = overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let params = dag.resolve_params(&overrides).expect("params resolve");
        let plan = Arc::new(RunPlan::build(dag, &params).expect("plan builds"));
        let record = RunRecord {
            id: RunId::from("run-when"),
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
        let mut h = Harness {
            run: Run::new(record, plan),
            attempts: 0,
        };
        h.run.apply(Event::Start, T0).expect("start");
        h
    }

    fn idx(&self, name: &str) -> usize {
        self.run
            .plan
            .instance(name)
            .unwrap_or_else(|| panic!("no instance {name}"))
    }

    fn state(&self, name: &str) -> &StageState {
        &self.run.stages[self.idx(name)].state
    }

    fn name(&self, name: &str) -> &'static str {
        self.state(name).name()
    }

    /// Runs `name` to exit `code`, reporting `metrics` (kept only on success).
    fn run_stage(&mut self, name: &str, code: i64, metrics: &[(&str, f64)]) -> Vec<Action> {
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
                T0,
            )
            .expect("dispatch");
        let report = AttemptReport {
            outcome: AttemptOutcome::Exited { code },
            outputs: Vec::new(),
            metrics: metrics.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        };
        self.run
            .apply(
                Event::Finished {
                    instance,
                    attempt,
                    report,
                },
                T0 + 10,
            )
            .expect("finish")
    }
}

fn skip_reason(state: &StageState) -> &str {
    match state {
        StageState::Skipped { reason, .. } => reason,
        other => panic!("expected skipped, got {other:?}"),
    }
}

const GATE: &str = "
name: gate
params: {min_accuracy: 0.8, deploy: true}
defaults: {image: busybox, command: [true]}
stages:
  - {name: train}
  - name: publish
    needs: [train]
    when: stages.train.metrics.accuracy >= params.min_accuracy && params.deploy
  - {name: after-all-success, needs: [publish]}
  - {name: after-none-failed, needs: [publish], trigger: none_failed}
  - {name: after-all-done, needs: [publish], trigger: all_done}
";

#[test]
fn a_true_condition_runs_the_stage() {
    let mut h = Harness::new(GATE, &[]);
    h.run_stage("train", 0, &[("accuracy", 0.9)]);
    assert_eq!(h.name("publish"), "queued");
}

#[test]
fn a_false_condition_skips_the_stage_and_the_skip_flows_by_trigger_rule() {
    let mut h = Harness::new(GATE, &[]);
    let actions = h.run_stage("train", 0, &[("accuracy", 0.5)]);
    assert_eq!(
        skip_reason(h.state("publish")),
        "when `stages.train.metrics.accuracy >= params.min_accuracy && params.deploy` was false"
    );
    assert!(h.run.stages[h.idx("publish")].attempts.is_empty());
    assert_eq!(
        skip_reason(h.state("after-all-success")),
        "an upstream stage was skipped"
    );
    assert_eq!(h.name("after-none-failed"), "queued");
    assert_eq!(h.name("after-all-done"), "queued");
    let mut ready: Vec<usize> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Ready { instance } => Some(*instance),
            _ => None,
        })
        .collect();
    ready.sort();
    assert_eq!(
        ready,
        [h.idx("after-none-failed"), h.idx("after-all-done")],
        "only the tolerant stages are handed out"
    );
    h.run_stage("after-none-failed", 0, &[]);
    let actions = h.run_stage("after-all-done", 0, &[]);
    assert!(actions.contains(&Action::RunFinished {
        state: RunState::Succeeded
    }));
}

#[test]
fn params_given_at_trigger_time_decide_the_condition() {
    let mut h = Harness::new(GATE, &[("deploy", "false")]);
    h.run_stage("train", 0, &[("accuracy", 0.99)]);
    assert_eq!(h.name("publish"), "skipped");
    let mut h = Harness::new(GATE, &[("min_accuracy", "0.95")]);
    h.run_stage("train", 0, &[("accuracy", 0.99)]);
    assert_eq!(h.name("publish"), "queued");
}

#[test]
fn a_condition_that_cannot_be_evaluated_fails_the_stage_without_retries() {
    let yaml = GATE.replace(
        "    when:",
        "    retries: {limit: 3, backoff: 1s}\n    when:",
    );
    let mut h = Harness::new(&yaml, &[]);
    let actions = h.run_stage("train", 0, &[("loss", 0.1)]);
    let StageState::Failed { error, .. } = h.state("publish") else {
        panic!("expected failed, got {:?}", h.state("publish"));
    };
    assert!(
        error.starts_with(
            "when `stages.train.metrics.accuracy >= params.min_accuracy && params.deploy` \
             could not be evaluated:"
        ),
        "{error}"
    );
    assert!(
        error.contains("accuracy"),
        "names the missing metric: {error}"
    );
    assert!(h.run.stages[h.idx("publish")].attempts.is_empty());
    assert_eq!(h.run.stages[h.idx("publish")].failures, 0);
    assert_eq!(h.name("after-all-success"), "upstream_failed");
    assert_eq!(h.name("after-none-failed"), "upstream_failed");
    assert_eq!(h.name("after-all-done"), "queued");
    assert!(!actions.contains(&Action::RunFinished {
        state: RunState::Failed
    }));
    let actions = h.run_stage("after-all-done", 0, &[]);
    assert!(actions.contains(&Action::RunFinished {
        state: RunState::Failed
    }));
    assert!(
        h.run.record.message.as_deref().unwrap().contains("publish"),
        "{:?}",
        h.run.record.message
    );
}

#[test]
fn a_condition_that_gives_no_bool_fails_the_stage() {
    let yaml = "
name: t
defaults: {image: busybox, command: [true]}
stages:
  - {name: a}
  - {name: b, needs: [a], when: stages.a.metrics.score}
";
    let mut h = Harness::new(yaml, &[]);
    h.run_stage("a", 0, &[("score", 3.0)]);
    let StageState::Failed { error, .. } = h.state("b") else {
        panic!("{:?}", h.state("b"));
    };
    assert_eq!(
        error,
        "when `stages.a.metrics.score` gave double 3, not true or false"
    );
}

#[test]
fn a_condition_reads_upstream_states_and_stages_needed_through_others() {
    let yaml = "
name: t
defaults: {image: busybox, command: [true]}
stages:
  - {name: a}
  - {name: b, needs: [a], trigger: all_done}
  - name: report-failure
    needs: [b]
    trigger: all_done
    when: stages.a.state == 'failed' || stages.b.state == 'failed'
";
    let mut h = Harness::new(yaml, &[]);
    h.run_stage("a", 0, &[]);
    h.run_stage("b", 0, &[]);
    assert_eq!(h.name("report-failure"), "skipped");

    let mut h = Harness::new(yaml, &[]);
    h.run_stage("a", 1, &[]);
    h.run_stage("b", 0, &[]);
    assert_eq!(h.name("report-failure"), "queued");
}

const FAN_OUT: &str = "
name: t
params: {flavours: [chocolate, vanilla, lemon]}
defaults: {image: busybox, command: [true]}
stages:
  - name: train
    for_each: '{{ params.flavours }}'
  - name: gate
    needs: [train]
    when: stages.train.metrics.accuracy >= 0.8
  - name: any-great
    needs: [train]
    when: stages.train.instances.exists(i, i.item == 'lemon' && i.metrics.accuracy > 0.95)
  - name: summary
    needs: [train]
    trigger: all_done
    when: stages.train.state == 'failed'
  - name: per-item
    for_each: '{{ params.flavours }}'
    when: item != 'vanilla'
";

#[test]
fn a_fan_out_upstream_shows_its_lowest_metrics_and_each_instance() {
    let mut h = Harness::new(FAN_OUT, &[]);
    h.run_stage("train[chocolate]", 0, &[("accuracy", 0.9), ("f1", 0.5)]);
    h.run_stage("train[vanilla]", 0, &[("accuracy", 0.85)]);
    assert_eq!(h.name("gate"), "pending", "waits for every instance");
    h.run_stage("train[lemon]", 0, &[("accuracy", 0.97)]);
    assert_eq!(h.name("gate"), "queued", "lowest accuracy 0.85 >= 0.8");
    assert_eq!(h.name("any-great"), "queued");
    assert_eq!(h.name("summary"), "skipped");

    let mut h = Harness::new(FAN_OUT, &[]);
    h.run_stage("train[chocolate]", 0, &[("accuracy", 0.9)]);
    h.run_stage("train[vanilla]", 0, &[("accuracy", 0.7)]);
    h.run_stage("train[lemon]", 0, &[("accuracy", 0.9)]);
    assert_eq!(h.name("gate"), "skipped", "lowest accuracy 0.7 < 0.8");
    assert_eq!(h.name("any-great"), "skipped");

    let mut h = Harness::new(FAN_OUT, &[]);
    h.run_stage("train[chocolate]", 0, &[("accuracy", 0.9)]);
    h.run_stage("train[vanilla]", 3, &[]);
    h.run_stage("train[lemon]", 0, &[("accuracy", 0.9)]);
    assert_eq!(h.name("gate"), "upstream_failed");
    assert_eq!(
        h.name("summary"),
        "queued",
        "one failed instance fails the fan-out"
    );
}

#[test]
fn each_fan_out_instance_decides_its_own_condition_on_its_item() {
    let h = Harness::new(FAN_OUT, &[]);
    assert_eq!(h.name("per-item[chocolate]"), "queued");
    assert_eq!(
        skip_reason(h.state("per-item[vanilla]")),
        "when `item != 'vanilla'` was false"
    );
    assert_eq!(h.name("per-item[lemon]"), "queued");
}

#[test]
fn a_retried_run_decides_its_conditions_again() {
    let yaml = "
name: t
defaults: {image: busybox, command: [true]}
stages:
  - {name: a}
  - name: gate
    needs: [a]
    trigger: all_done
    when: stages.a.state == 'succeeded' && stages.a.metrics.score > 1.0
";
    let mut h = Harness::new(yaml, &[]);
    let actions = h.run_stage("a", 1, &[]);
    assert!(actions.contains(&Action::RunFinished {
        state: RunState::Failed
    }));
    assert_eq!(h.name("gate"), "skipped");
    let selected = h.run.retry_selection(&RetryMode::Failed).unwrap();
    h.run
        .retry(&selected, RetryMode::Failed, T0 + 1_000)
        .unwrap();
    assert_eq!(h.name("gate"), "pending");
    h.run_stage("a", 0, &[("score", 2.0)]);
    assert_eq!(
        h.name("gate"),
        "queued",
        "decided again on the new outcome of a"
    );
}

#[test]
fn a_restored_run_decides_a_pending_condition_on_resume() {
    let mut h = Harness::new(GATE, &[]);
    let train = h.idx("train");
    h.run_stage("train", 0, &[("accuracy", 0.5)]);
    // As stored just before the decision: train finished, publish and the rest pending.
    let mut stored = h.run.stages.clone();
    for (i, rec) in stored.iter_mut().enumerate() {
        if i != train {
            rec.state = StageState::Pending;
        }
    }
    let mut record = h.run.record.clone();
    record.state = RunState::Running;
    let mut restored = Run::restore(record, h.run.plan.clone(), stored).unwrap();
    restored.resume(T0 + 100);
    let publish = restored.plan.instance("publish").unwrap();
    assert_eq!(restored.stages[publish].state.name(), "skipped");
}
