//! What must hold in the scheduler's store whenever it is opened, however the scheduler died:
//! read straight from sled, checked against each run's plan, and against what the store held
//! the last time it was opened (nothing durable may go back).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use vishwa_scheduler::dag::parse_dag;
use vishwa_scheduler::ids::RunId;
use vishwa_scheduler::run::{
    AttemptOutcome, RunPlan, RunRecord, RunState, StageRecord, StageState,
};
use vishwa_scheduler::store::{SledStore, Store};

/// Everything the store held about runs when it was opened.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub runs: BTreeMap<RunId, (RunRecord, Vec<StageRecord>)>,
}

impl Snapshot {
    /// Runs in each state.
    pub fn count(&self, state: RunState) -> usize {
        self.runs.values().filter(|(r, _)| r.state == state).count()
    }
}

/// Reads every run and checks it; returns the snapshot and every violation found. Assumes
/// runs are never retried or cancelled and every stage uses the default trigger rule (the
/// crash loop's DAG), so it can also insist on one completion per succeeded stage, exact
/// retry counters and upstream stages that succeeded before a stage ran.
pub fn check_store(store: &SledStore) -> (Snapshot, Vec<String>) {
    let mut problems = Vec::new();
    let mut snapshot = Snapshot::default();
    let runs = match store.list_runs() {
        Ok(runs) => runs,
        Err(e) => return (snapshot, vec![format!("cannot list runs: {e}")]),
    };
    let mut attempt_ids = HashSet::new();
    for run in runs {
        let stages = match store.run_stages(&run.id) {
            Ok(stages) => stages,
            Err(e) => {
                problems.push(format!("{}: cannot read its stages: {e}", run.id));
                continue;
            }
        };
        let mut say = |what: String| problems.push(format!("{}: {what}", run.id));
        match plan_of(store, &run) {
            Ok(plan) => check_run(&run, &stages, &plan, &mut attempt_ids, &mut say),
            Err(e) => say(e),
        }
        snapshot.runs.insert(run.id.clone(), (run, stages));
    }
    (snapshot, problems)
}

/// Checks that nothing the store held before (`earlier`, read after an earlier crash) went
/// back or vanished in `now`.
pub fn check_progress(earlier: &Snapshot, now: &Snapshot) -> Vec<String> {
    let mut problems = Vec::new();
    for (id, (run, stages)) in &earlier.runs {
        let Some((run_now, stages_now)) = now.runs.get(id) else {
            problems.push(format!("{id}: the run vanished"));
            continue;
        };
        if run.state.is_final() && run_now != run {
            problems.push(format!(
                "{id}: finished {} before, now {:?}",
                run.state.as_str(),
                run_now
            ));
        }
        let by_name: BTreeMap<&str, &StageRecord> = stages_now
            .iter()
            .map(|s| (s.instance.as_str(), s))
            .collect();
        for stage in stages {
            let Some(stage_now) = by_name.get(stage.instance.as_str()) else {
                problems.push(format!("{id}: stage {} vanished", stage.instance));
                continue;
            };
            if stage.state.is_final() && stage_now.state != stage.state {
                problems.push(format!(
                    "{id}: {} was {:?}, now {:?}",
                    stage.instance, stage.state, stage_now.state
                ));
            }
            if stage_now.attempts.len() < stage.attempts.len() {
                problems.push(format!(
                    "{id}: {} had {} attempts, now {}",
                    stage.instance,
                    stage.attempts.len(),
                    stage_now.attempts.len()
                ));
                continue;
            }
            for (before, after) in stage.attempts.iter().zip(&stage_now.attempts) {
                let same = before.id == after.id
                    && before.number == after.number
                    && (before.outcome == AttemptOutcome::Running || before == after);
                if !same {
                    problems.push(format!(
                        "{id}: {} attempt {} was {before:?}, now {after:?}",
                        stage.instance, before.number
                    ));
                }
            }
        }
    }
    problems
}

fn plan_of(store: &SledStore, run: &RunRecord) -> Result<RunPlan, String> {
    let version = store
        .get_dag_version(&run.dag, &run.dag_version)
        .map_err(|e| format!("cannot read its DAG version: {e}"))?
        .ok_or_else(|| format!("its DAG version {} is missing", run.dag_version))?;
    let dag = parse_dag(&version.source, &version.file_name)
        .map_err(|e| format!("its stored DAG does not parse: {e}"))?;
    RunPlan::build(Arc::new(dag), &run.params).map_err(|e| format!("its plan does not build: {e}"))
}

fn check_run(
    run: &RunRecord,
    stages: &[StageRecord],
    plan: &RunPlan,
    attempt_ids: &mut HashSet<String>,
    say: &mut impl FnMut(String),
) {
    let planned: BTreeSet<&str> = plan.nodes.iter().map(|n| n.name.as_str()).collect();
    let stored: BTreeSet<&str> = stages.iter().map(|s| s.instance.as_str()).collect();
    if planned != stored {
        let missing: Vec<_> = planned.difference(&stored).collect();
        let extra: Vec<_> = stored.difference(&planned).collect();
        say(format!(
            "stage records do not match the plan: missing {missing:?}, extra {extra:?}"
        ));
    }
    match run.state {
        RunState::Queued => {
            if run.started_ms.is_some() || stages.iter().any(|s| s.state != StageState::Pending) {
                say("queued, yet started".into());
            }
        }
        RunState::Running => {
            if run.started_ms.is_none() || run.finished_ms.is_some() {
                say(format!(
                    "running with started {:?} finished {:?}",
                    run.started_ms, run.finished_ms
                ));
            }
        }
        RunState::Succeeded | RunState::Failed | RunState::Cancelled => {
            if run.finished_ms.is_none() {
                say(format!("{} without a finish time", run.state.as_str()));
            }
            if let Some(s) = stages.iter().find(|s| !s.state.is_final()) {
                say(format!(
                    "{} while {} is {}",
                    run.state.as_str(),
                    s.instance,
                    s.state.name()
                ));
            }
        }
    }
    if run.state == RunState::Succeeded
        && let Some(s) = stages.iter().find(|s| {
            !matches!(
                s.state,
                StageState::Succeeded { .. } | StageState::Skipped { .. }
            )
        })
    {
        say(format!(
            "succeeded while {} is {}",
            s.instance,
            s.state.name()
        ));
    }
    let by_name: BTreeMap<&str, &StageRecord> =
        stages.iter().map(|s| (s.instance.as_str(), s)).collect();
    for stage in stages {
        let mut say_stage = |what: String| say(format!("{}: {what}", stage.instance));
        check_stage(stage, attempt_ids, &mut say_stage);
        // Default trigger rule: a stage that was queued or ran had every upstream succeed.
        let ran = !matches!(
            stage.state,
            StageState::Pending | StageState::UpstreamFailed { .. } | StageState::Skipped { .. }
        ) || !stage.attempts.is_empty();
        if let (true, Some(i)) = (ran, plan.instance(&stage.instance)) {
            for &up in &plan.nodes[i].upstream {
                let name = plan.nodes[up].name.as_str();
                if !by_name
                    .get(name)
                    .is_some_and(|u| matches!(u.state, StageState::Succeeded { .. }))
                {
                    say_stage(format!(
                        "is {} though upstream {name} did not succeed",
                        stage.state.name()
                    ));
                }
            }
        }
    }
}

fn check_stage(
    stage: &StageRecord,
    attempt_ids: &mut HashSet<String>,
    say: &mut impl FnMut(String),
) {
    for (i, a) in stage.attempts.iter().enumerate() {
        if a.number != i as u32 + 1 {
            say(format!("attempt #{} is number {}", i + 1, a.number));
        }
        if !attempt_ids.insert(a.id.0.clone()) {
            say(format!("attempt id {} is used twice", a.id));
        }
        let open = a.outcome == AttemptOutcome::Running;
        if open == a.finished_ms.is_some() {
            say(format!(
                "attempt {} is {} with finish time {:?}",
                a.number,
                a.outcome.name(),
                a.finished_ms
            ));
        }
        if open && i + 1 != stage.attempts.len() {
            say(format!(
                "attempt {} still runs but is not the last",
                a.number
            ));
        }
    }
    let last = stage.attempts.last();
    let last_running = last.is_some_and(|a| a.outcome == AttemptOutcome::Running);
    match &stage.state {
        StageState::Running {
            attempt, worker, ..
        } => match last {
            Some(a)
                if a.outcome == AttemptOutcome::Running
                    && &a.id == attempt
                    && &a.worker == worker => {}
            _ => say(format!(
                "running attempt {attempt} on {worker}, but its last attempt is {last:?}"
            )),
        },
        StageState::Succeeded { .. }
            if last.map(|a| &a.outcome) != Some(&AttemptOutcome::Exited { code: 0 }) =>
        {
            say(format!("succeeded, but its last attempt is {last:?}"))
        }
        other if last_running => say(format!("{} with a running attempt", other.name())),
        StageState::Pending if !stage.attempts.is_empty() => {
            say("pending with attempts (nothing was retried)".into())
        }
        _ => {}
    }
    let completions = stage
        .attempts
        .iter()
        .filter(|a| a.outcome == AttemptOutcome::Exited { code: 0 })
        .count();
    if completions > 1 {
        say(format!("{completions} recorded completions"));
    }
    let failures = stage
        .attempts
        .iter()
        .filter(|a| {
            matches!(
                a.outcome,
                AttemptOutcome::Exited { code } if code != 0
            ) || a.outcome == AttemptOutcome::TimedOut
        })
        .count() as u32;
    let infra = stage
        .attempts
        .iter()
        .filter(|a| {
            matches!(
                a.outcome,
                AttemptOutcome::Lost { .. }
                    | AttemptOutcome::Cancelled
                    | AttemptOutcome::Error {
                        transient: true,
                        ..
                    }
            )
        })
        .count() as u32;
    if (stage.failures, stage.infra_failures) != (failures, infra) {
        say(format!(
            "counters say {} failures and {} infrastructure failures; its attempts say {failures} and {infra}",
            stage.failures, stage.infra_failures
        ));
    }
}
