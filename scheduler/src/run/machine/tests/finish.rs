//! Table tests of the one event a stage finishes by ([`Event::Finished`], and the cache's
//! [`Event::CacheHit`] / [`Event::CacheMiss`]): declared outputs checked, outputs and metrics
//! kept, the cache entry named only on success, stale reports refused without a change.

use super::*;
use crate::run::machine::{AttemptReport, ReportedOutput};

const PIPELINE: &str = "
name: pipeline
defaults: {image: busybox}
stages:
  - {name: train, command: [true], outputs: [model.pkl], cache: true, retries: {limit: 1, backoff: 1s}}
  - {name: plain, command: [true], outputs: [model.pkl]}
  - {name: serve, needs: [train, plain], command: [true]}
";

fn stored(artifact: ArtifactRef) -> ReportedOutput {
    ReportedOutput::Uploaded {
        artifact,
        stored: true,
    }
}

fn extra_ref() -> ArtifactRef {
    ArtifactRef {
        name: "scratch.txt".to_owned(),
        digest: "cd".repeat(32),
        size: 1,
    }
}

fn success(outputs: Vec<ReportedOutput>) -> AttemptReport {
    AttemptReport {
        outcome: AttemptOutcome::Exited { code: 0 },
        outputs,
        metrics: BTreeMap::from([("acc".to_owned(), 0.9)]),
    }
}

fn report(
    h: &mut Harness,
    name: &str,
    attempt: &AttemptId,
    report: AttemptReport,
    now: Millis,
) -> Result<Vec<Action>, TransitionError> {
    let instance = h.idx(name);
    h.run.apply(
        Event::Finished {
            instance,
            attempt: attempt.clone(),
            report,
        },
        now,
    )
}

fn miss(h: &mut Harness, name: &str, now: Millis) {
    let instance = h.idx(name);
    h.run
        .apply(
            Event::CacheMiss {
                instance,
                key: "key-1".to_owned(),
                reason: "no entry for key".to_owned(),
            },
            now,
        )
        .expect("a queued instance can miss");
}

fn succeeded(actions: &[Action]) -> Vec<(usize, Option<String>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Succeeded {
                instance,
                cache_key,
            } => Some((*instance, cache_key.clone())),
            _ => None,
        })
        .collect()
}

fn failure(h: &Harness, name: &str) -> String {
    match &h.run.stages[h.idx(name)].state {
        StageState::Failed { error, .. } => error.clone(),
        other => panic!("{name} is {}, not failed", other.name()),
    }
}

#[test]
fn a_success_keeps_declared_outputs_and_metrics_and_names_the_cache_entry() {
    let mut h = Harness::new(PIPELINE);
    h.start();
    miss(&mut h, "train", T0);
    let train = h.idx("train");
    assert_eq!(h.state("train"), "queued", "a miss is not a transition");
    let attempt = h.dispatch("train", T0 + 1);
    let outputs = vec![stored(model_ref()), stored(extra_ref())];
    let actions = report(&mut h, "train", &attempt, success(outputs), T0 + 2).unwrap();
    assert_eq!(succeeded(&actions), [(train, Some("key-1".to_owned()))]);
    let rec = &h.run.stages[train];
    assert_eq!(rec.state.name(), "succeeded");
    assert_eq!(rec.outputs, [model_ref()], "undeclared outputs are dropped");
    assert_eq!(rec.metrics["acc"], 0.9);
    assert_eq!(rec.attempts[0].outcome, AttemptOutcome::Exited { code: 0 });
    assert!(h.run.is_dirty(train));

    // Not a `cache: true` stage: indexed, no cache entry.
    let plain = h.idx("plain");
    let attempt = h.dispatch("plain", T0 + 3);
    let actions = report(
        &mut h,
        "plain",
        &attempt,
        success(vec![stored(model_ref())]),
        T0 + 4,
    )
    .unwrap();
    assert_eq!(succeeded(&actions), [(plain, None)]);
    assert_eq!(
        h.ready_names(&actions),
        ["serve"],
        "downstream ready in the same event"
    );
}

#[test]
fn a_missing_declared_output_fails_the_attempt_with_a_clear_reason() {
    let mut h = Harness::new(PIPELINE);
    h.start();
    let attempt = h.dispatch("plain", T0);
    let only_extra = success(vec![stored(extra_ref())]);
    let actions = report(&mut h, "plain", &attempt, only_extra, T0 + 1).unwrap();
    assert!(succeeded(&actions).is_empty());
    let reason = failure(&h, "plain");
    assert_eq!(
        reason,
        "declared output `model.pkl` was not uploaded by the worker; it must be written to \
         /vishwa/out/model.pkl"
    );
    let rec = &h.run.stages[h.idx("plain")];
    assert!(rec.outputs.is_empty() && rec.metrics.is_empty());
    assert_eq!(
        rec.attempts[0].outcome,
        AttemptOutcome::Error {
            message: reason.clone(),
            transient: false
        },
        "the attempt says why, not `exited 0`"
    );
    assert_eq!(h.state("serve"), "upstream_failed");
}

#[test]
fn outputs_reported_wrongly_or_not_stored_fail_the_attempt_naming_them() {
    let cases = [
        (
            ReportedOutput::Uploaded {
                artifact: model_ref(),
                stored: false,
            },
            format!(
                "output `model.pkl` was reported, but its upload ({}) is not on the scheduler",
                "ab".repeat(32)
            ),
        ),
        (
            ReportedOutput::Unreadable {
                name: "../model.pkl".to_owned(),
                error: "`../model.pkl` is not an output file name".to_owned(),
            },
            "output `../model.pkl` was reported wrongly: `../model.pkl` is not an output file \
             name"
                .to_owned(),
        ),
    ];
    for (output, expected) in cases {
        let mut h = Harness::new(PIPELINE);
        h.start();
        let attempt = h.dispatch("plain", T0);
        let outputs = vec![output, stored(model_ref())];
        let actions = report(&mut h, "plain", &attempt, success(outputs), T0 + 1).unwrap();
        assert!(succeeded(&actions).is_empty(), "{expected}");
        assert_eq!(failure(&h, "plain"), expected);
    }
}

#[test]
fn a_cache_entry_is_named_only_on_success() {
    let mut h = Harness::new(PIPELINE);
    h.start();
    miss(&mut h, "train", T0);
    let train = h.idx("train");
    // A failure (retried after its backoff), then an exit 0 without the output: no entry.
    let first = h.dispatch("train", T0 + 1);
    let exit_1 = AttemptOutcome::Exited { code: 1 }.into();
    let actions = report(&mut h, "train", &first, exit_1, T0 + 2).unwrap();
    assert!(succeeded(&actions).is_empty());
    assert_eq!(h.state("train"), "queued");
    h.run.apply(Event::Tick, T0 + 2_000).unwrap();
    let second = h.dispatch("train", T0 + 2_001);
    let actions = report(&mut h, "train", &second, success(Vec::new()), T0 + 2_002).unwrap();
    assert!(succeeded(&actions).is_empty());
    assert_eq!(h.state("train"), "failed");
    let rec = &h.run.stages[train];
    assert!(rec.outputs.is_empty() && rec.metrics.is_empty());
    assert!(matches!(
        rec.cache,
        Some(CacheNote {
            outcome: crate::run::CacheOutcome::Miss { .. },
            ..
        })
    ));

    // A hit succeeds and is indexed, but is no new entry.
    let mut h = Harness::new(PIPELINE);
    h.start();
    let note = CacheNote {
        key: "key-1".to_owned(),
        outcome: crate::run::CacheOutcome::Hit {
            run: RunId::from("run-0"),
            stage: "train".to_owned(),
        },
    };
    let hit = Event::CacheHit {
        instance: train,
        note,
        outputs: vec![model_ref()],
        metrics: BTreeMap::new(),
    };
    let actions = h.run.apply(hit, T0).unwrap();
    assert_eq!(succeeded(&actions), [(train, None)]);
}

#[test]
fn a_stale_report_is_refused_and_changes_nothing() {
    let mut h = Harness::new(PIPELINE);
    h.start();
    let plain = h.idx("plain");
    let first = h.dispatch("plain", T0);
    // The first attempt is lost; its report arrives after the second was dispatched.
    let lost = AttemptOutcome::Lost {
        reason: "worker w1 stopped heartbeating".to_owned(),
    };
    report(&mut h, "plain", &first, lost.into(), T0 + 1).unwrap();
    let second = h.dispatch("plain", T0 + 2);
    h.run.take_dirty();
    let before = h.run.stages[plain].clone();
    for stale in [first, AttemptId::from("never-dispatched")] {
        let refused = report(
            &mut h,
            "plain",
            &stale,
            success(vec![stored(model_ref())]),
            T0 + 3,
        );
        assert!(
            matches!(refused, Err(TransitionError::StaleAttempt { ref attempt, .. }) if *attempt == stale),
            "{refused:?}"
        );
    }
    assert_eq!(h.run.stages[plain], before);
    assert!(!h.run.is_dirty(plain));
    // The current attempt still finishes.
    let actions = report(
        &mut h,
        "plain",
        &second,
        success(vec![stored(model_ref())]),
        T0 + 4,
    )
    .unwrap();
    assert_eq!(succeeded(&actions), [(plain, None)]);
    // Once finished, even the current attempt's second report is stale.
    let again = report(&mut h, "plain", &second, success(Vec::new()), T0 + 5);
    assert!(matches!(again, Err(TransitionError::StaleAttempt { .. })));
    assert_eq!(h.run.stages[plain].outputs, [model_ref()]);
}

#[test]
fn a_cache_miss_is_noted_only_on_a_queued_instance() {
    let mut h = Harness::new(PIPELINE);
    h.start();
    let serve = h.idx("serve");
    let refused = h.run.apply(
        Event::CacheMiss {
            instance: serve,
            key: "k".to_owned(),
            reason: "r".to_owned(),
        },
        T0,
    );
    assert!(matches!(refused, Err(TransitionError::NotQueued { .. })));
    assert!(h.run.stages[serve].cache.is_none());
}

#[test]
fn outputs_are_cleared_by_a_retry_of_the_run() {
    let mut h = Harness::new(PIPELINE);
    h.start();
    let plain = h.idx("plain");
    let attempt = h.dispatch("plain", T0);
    report(
        &mut h,
        "plain",
        &attempt,
        success(vec![stored(model_ref())]),
        T0 + 1,
    )
    .unwrap();
    miss(&mut h, "train", T0 + 1);
    let attempt = h.dispatch("train", T0 + 1);
    report(
        &mut h,
        "train",
        &attempt,
        success(vec![stored(model_ref())]),
        T0 + 2,
    )
    .unwrap();
    h.run_stage("serve", 0, T0 + 3);
    assert_eq!(h.run.record.state, RunState::Succeeded);
    assert_eq!(h.run.stages[plain].outputs, [model_ref()]);
    let mode = RetryMode::From("plain".into());
    let selected = h.run.retry_selection(&mode).unwrap();
    h.run.retry(&selected, mode, T0 + 4).unwrap();
    assert!(h.run.stages[plain].outputs.is_empty());
}
