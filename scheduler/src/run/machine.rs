//! The run state machine: `apply(event, now)` moves stage instances through their states and
//! returns the actions the driver must take once the new state is stored. Pure: no IO, no
//! clock; time is an argument.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use thiserror::Error;

use super::plan::RunPlan;
use super::state::{
    ArtifactRef, AttemptOutcome, AttemptRecord, CacheNote, RetryMode, RetryRecord, RunRecord,
    RunState, StageRecord, StageState,
};
use super::when::evaluate_condition;
use crate::dag::TriggerRule;
use crate::ids::{AttemptId, Millis, WorkerId};

/// Lost or transiently failed attempts an instance may have before it fails for good.
pub const INFRA_RETRY_LIMIT: u32 = 3;
/// First wait after a lost or transiently failed attempt; doubles each time.
pub const INFRA_BACKOFF_MS: Millis = 1_000;
/// How long past its timeout the scheduler waits for a worker's report before stopping an
/// attempt itself.
pub const DEADLINE_GRACE_MS: Millis = 30_000;

/// Something that happened to a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The run may start: its root instances are queued.
    Start,
    /// A queued instance was handed to a worker as a new attempt.
    Dispatched {
        instance: usize,
        attempt: AttemptId,
        worker: WorkerId,
        /// GPU device ids assigned on the worker.
        gpus: Vec<String>,
    },
    /// No worker could ever run this queued instance: it fails with `reason`.
    Refused { instance: usize, reason: String },
    /// The worker started the attempt (container id or pid in `handle`).
    Started {
        instance: usize,
        attempt: AttemptId,
        handle: String,
    },
    /// An attempt ended.
    Finished {
        instance: usize,
        attempt: AttemptId,
        outcome: AttemptOutcome,
    },
    /// The cache holds this queued instance's result: it succeeds without running, with the
    /// outputs and metrics of the run that made them.
    CacheHit {
        instance: usize,
        note: CacheNote,
        outputs: Vec<ArtifactRef>,
        metrics: BTreeMap<String, f64>,
    },
    /// Time passed: backoffs expire, deadlines strike.
    Tick,
    /// A person asked to stop the run.
    Cancel { reason: String },
}

/// What the driver must do after storing the new state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The instance may be dispatched to a worker now.
    Ready { instance: usize },
    /// Stop this attempt on its worker.
    Kill {
        instance: usize,
        attempt: AttemptId,
        worker: WorkerId,
    },
    /// The run reached its final state.
    RunFinished { state: RunState },
}

/// Why an event could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransitionError {
    #[error("attempt {attempt} is not the current attempt of {instance}")]
    StaleAttempt {
        instance: String,
        attempt: AttemptId,
    },
    #[error("stage instance {instance} is {state}, not queued")]
    NotQueued {
        instance: String,
        state: &'static str,
    },
    #[error("no stage instance number {0} in this run")]
    UnknownInstance(usize),
    #[error("run {run} is already {state}")]
    RunFinished { run: String, state: &'static str },
    #[error("run {run} was already started")]
    AlreadyStarted { run: String },
    #[error("stored stage {instance} is not part of the run's plan")]
    UnknownStoredInstance { instance: String },
    #[error("run {run} is still {state}; only a finished run can be retried")]
    NotFinished { run: String, state: &'static str },
    #[error("the run's DAG has no stage `{stage}`")]
    UnknownStage { stage: String },
}

/// How an instance's trigger rule judges its upstream so far.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Wait,
    Run,
    Skip(String),
    UpstreamFailed,
    /// The trigger rule let it run but its `when` could not be evaluated.
    ConditionFailed(String),
}

#[derive(Debug, Clone, Copy, Default)]
struct UpstreamCounts {
    done: u32,
    succeeded: u32,
    failed: u32,
}

/// A run in memory: its records plus what is derived from them.
#[derive(Debug, Clone)]
pub struct Run {
    pub record: RunRecord,
    pub plan: Arc<RunPlan>,
    pub stages: Vec<StageRecord>,
    counts: Vec<UpstreamCounts>,
    /// Per DAG stage: instances holding a `max_parallel` slot (ready or running).
    in_flight: Vec<u32>,
    /// Per DAG stage: queued instances waiting for a `max_parallel` slot.
    blocked: Vec<VecDeque<usize>>,
    holds_slot: Vec<bool>,
    timers: BTreeSet<(Millis, usize)>,
    terminal: usize,
    failed: usize,
    dirty: BTreeSet<usize>,
    run_dirty: bool,
}

impl Run {
    /// A new run with every instance pending.
    pub fn new(record: RunRecord, plan: Arc<RunPlan>) -> Run {
        let stages = plan
            .nodes
            .iter()
            .map(|n| StageRecord::pending(n.name.clone(), plan.needs_of(n.stage)))
            .collect();
        let mut run = Run::with_stages(record, plan, stages);
        run.run_dirty = true;
        run.dirty = (0..run.stages.len()).collect();
        run
    }

    /// A run rebuilt from its stored records (after a scheduler restart). Call
    /// [`Run::resume`] to learn which instances are ready.
    pub fn restore(
        record: RunRecord,
        plan: Arc<RunPlan>,
        stored: Vec<StageRecord>,
    ) -> Result<Run, TransitionError> {
        let mut stages: Vec<StageRecord> = plan
            .nodes
            .iter()
            .map(|n| StageRecord::pending(n.name.clone(), plan.needs_of(n.stage)))
            .collect();
        for rec in stored {
            let Some(i) = plan.instance(&rec.instance) else {
                return Err(TransitionError::UnknownStoredInstance {
                    instance: rec.instance,
                });
            };
            stages[i] = rec;
        }
        Ok(Run::with_stages(record, plan, stages))
    }

    fn with_stages(record: RunRecord, plan: Arc<RunPlan>, stages: Vec<StageRecord>) -> Run {
        let n = stages.len();
        let stage_count = plan.dag.stages.len();
        let mut run = Run {
            record,
            plan,
            stages,
            counts: vec![UpstreamCounts::default(); n],
            in_flight: vec![0; stage_count],
            blocked: vec![VecDeque::new(); stage_count],
            holds_slot: vec![false; n],
            timers: BTreeSet::new(),
            terminal: 0,
            failed: 0,
            dirty: BTreeSet::new(),
            run_dirty: false,
        };
        for i in 0..n {
            match &run.stages[i].state {
                s if s.is_final() => {
                    run.terminal += 1;
                    if is_failure(s) {
                        run.failed += 1;
                    }
                    for &d in &run.plan.nodes[i].downstream {
                        count_upstream(&mut run.counts[d], s);
                    }
                }
                StageState::Running { deadline_ms, .. } => {
                    run.in_flight[run.plan.nodes[i].stage] += 1;
                    run.holds_slot[i] = true;
                    if let Some(t) = deadline_ms {
                        run.timers.insert((*t, i));
                    }
                }
                _ => {}
            }
        }
        run
    }

    /// Actions needed to carry on a restored run: queued instances become ready (or wait
    /// for their backoff), and a run whose every instance ended is finished.
    pub fn resume(&mut self, now: Millis) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.record.state != RunState::Running {
            return actions;
        }
        for i in 0..self.stages.len() {
            match self.stages[i].state {
                StageState::Queued { not_before_ms, .. } => match not_before_ms {
                    Some(t) if t > now => {
                        self.timers.insert((t, i));
                    }
                    _ => self.make_ready(i, &mut actions),
                },
                StageState::Pending => {
                    let mut work = vec![i];
                    self.evaluate(&mut work, now, &mut actions);
                }
                _ => {}
            }
        }
        self.finish_if_done(now, &mut actions);
        actions
    }

    /// Applies one event at time `now`.
    pub fn apply(&mut self, event: Event, now: Millis) -> Result<Vec<Action>, TransitionError> {
        let mut actions = Vec::new();
        match event {
            Event::Start => self.start(now, &mut actions)?,
            Event::Dispatched {
                instance,
                attempt,
                worker,
                gpus,
            } => self.dispatched(instance, attempt, worker, gpus, now)?,
            Event::Refused { instance, reason } => {
                self.ensure_not_final()?;
                let stage = self
                    .stages
                    .get(instance)
                    .ok_or(TransitionError::UnknownInstance(instance))?;
                if !matches!(stage.state, StageState::Queued { .. }) {
                    return Err(TransitionError::NotQueued {
                        instance: stage.instance.clone(),
                        state: stage.state.name(),
                    });
                }
                self.release_slot(instance, &mut actions);
                self.fail(instance, reason, now, &mut actions);
            }
            Event::Started {
                instance,
                attempt,
                handle,
            } => self.started(instance, &attempt, handle)?,
            Event::Finished {
                instance,
                attempt,
                outcome,
            } => self.finished(instance, &attempt, outcome, now, &mut actions)?,
            Event::CacheHit {
                instance,
                note,
                outputs,
                metrics,
            } => {
                self.ensure_not_final()?;
                let stage = self
                    .stages
                    .get(instance)
                    .ok_or(TransitionError::UnknownInstance(instance))?;
                if !matches!(stage.state, StageState::Queued { .. }) {
                    return Err(TransitionError::NotQueued {
                        instance: stage.instance.clone(),
                        state: stage.state.name(),
                    });
                }
                self.release_slot(instance, &mut actions);
                let rec = &mut self.stages[instance];
                rec.outputs = outputs;
                rec.metrics = metrics;
                rec.cache = Some(note);
                rec.state = StageState::Succeeded { finished_ms: now };
                self.settle(instance, now, &mut actions);
            }
            Event::Tick => self.tick(now, &mut actions),
            Event::Cancel { reason } => {
                self.ensure_not_final()?;
                self.record.cancel_requested = true;
                self.stop_everything(RunState::Cancelled, reason, now, &mut actions);
            }
        }
        self.finish_if_done(now, &mut actions);
        Ok(actions)
    }

    /// The instances a retry in `mode` runs again, in plan order. Errors name a stage the
    /// run does not have, or a run that is not finished.
    pub fn retry_selection(&self, mode: &RetryMode) -> Result<Vec<usize>, TransitionError> {
        if !self.record.state.is_final() {
            return Err(TransitionError::NotFinished {
                run: self.record.id.0.clone(),
                state: self.record.state.as_str(),
            });
        }
        let instances_of =
            |stage: &str| -> Result<Vec<usize>, TransitionError> {
                let idx = self.plan.dag.stage_index(stage).ok_or_else(|| {
                    TransitionError::UnknownStage {
                        stage: stage.to_owned(),
                    }
                })?;
                Ok(self.plan.instances_of_stage[idx].clone())
            };
        let mut selected = vec![false; self.stages.len()];
        let mut work: Vec<usize> = match mode {
            RetryMode::Failed => (0..self.stages.len())
                .filter(|&i| is_failure(&self.stages[i].state))
                .collect(),
            RetryMode::From(stage) => instances_of(stage)?,
            RetryMode::Only(stage) => instances_of(stage)?,
        };
        if let RetryMode::Only(_) = mode {
            work.iter().for_each(|&i| selected[i] = true);
        } else {
            while let Some(i) = work.pop() {
                if !std::mem::replace(&mut selected[i], true) {
                    work.extend(self.plan.nodes[i].downstream.iter().copied());
                }
            }
        }
        Ok((0..self.stages.len()).filter(|&i| selected[i]).collect())
    }

    /// Runs a finished run again: the `selected` instances go back to pending (their attempts
    /// kept as history, their retry budgets fresh) and the run to running.
    pub fn retry(
        &mut self,
        selected: &[usize],
        mode: RetryMode,
        now: Millis,
    ) -> Result<Vec<Action>, TransitionError> {
        if !self.record.state.is_final() {
            return Err(TransitionError::NotFinished {
                run: self.record.id.0.clone(),
                state: self.record.state.as_str(),
            });
        }
        let mut record = self.record.clone();
        let mut stages = std::mem::take(&mut self.stages);
        for &i in selected {
            let rec = stages
                .get_mut(i)
                .ok_or(TransitionError::UnknownInstance(i))?;
            rec.state = StageState::Pending;
            rec.failures = 0;
            rec.infra_failures = 0;
            rec.outputs.clear();
            rec.metrics.clear();
            rec.cache = None;
        }
        record.retries.push(RetryRecord {
            at_ms: now,
            mode,
            stages: selected
                .iter()
                .map(|&i| stages[i].instance.clone())
                .collect(),
        });
        record.state = RunState::Running;
        record.finished_ms = None;
        record.message = None;
        record.cancel_requested = false;
        record.deadline_ms = self
            .plan
            .dag
            .timeout
            .map(|t| now.saturating_add(t.as_millis() as Millis));
        *self = Run::with_stages(record, self.plan.clone(), stages);
        self.run_dirty = true;
        self.dirty.extend(selected.iter().copied());
        Ok(self.resume(now))
    }

    /// Records what the cache said about instance `i` (a miss and why); not a transition.
    pub fn note_cache(&mut self, i: usize, note: CacheNote) {
        if let Some(rec) = self.stages.get_mut(i) {
            rec.cache = Some(note);
            self.dirty.insert(i);
        }
    }

    /// Keeps the outputs and metrics a successful attempt reported, before its
    /// [`Event::Finished`] is applied; refused for an attempt that is not current.
    pub fn record_outputs(
        &mut self,
        i: usize,
        attempt: &AttemptId,
        outputs: Vec<ArtifactRef>,
        metrics: BTreeMap<String, f64>,
    ) -> Result<(), TransitionError> {
        self.current_attempt(i, attempt)?;
        let rec = &mut self.stages[i];
        rec.outputs = outputs;
        rec.metrics = metrics;
        self.dirty.insert(i);
        Ok(())
    }

    /// The earliest time a [`Event::Tick`] has something to do.
    pub fn next_wakeup(&self) -> Option<Millis> {
        if self.record.state.is_final() {
            return None;
        }
        let timer = self.timers.first().map(|(t, _)| *t);
        match (timer, self.record.deadline_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Instances changed since the last call, and whether the run header changed.
    pub fn take_dirty(&mut self) -> (bool, Vec<usize>) {
        let run = std::mem::take(&mut self.run_dirty);
        let stages = std::mem::take(&mut self.dirty).into_iter().collect();
        (run, stages)
    }

    /// Whether instance `i` is queued and holds a dispatch slot.
    pub fn is_dispatchable(&self, i: usize) -> bool {
        matches!(
            self.stages.get(i).map(|s| &s.state),
            Some(StageState::Queued { .. })
        ) && self.holds_slot[i]
    }

    fn start(&mut self, now: Millis, actions: &mut Vec<Action>) -> Result<(), TransitionError> {
        self.ensure_not_final()?;
        if self.record.state == RunState::Running {
            return Err(TransitionError::AlreadyStarted {
                run: self.record.id.0.clone(),
            });
        }
        self.record.state = RunState::Running;
        self.record.started_ms = Some(now);
        self.record.deadline_ms = self
            .plan
            .dag
            .timeout
            .map(|t| now.saturating_add(t.as_millis() as Millis));
        self.run_dirty = true;
        let mut work: Vec<usize> = (0..self.stages.len())
            .filter(|&i| self.plan.nodes[i].upstream.is_empty())
            .rev()
            .collect();
        self.evaluate(&mut work, now, actions);
        Ok(())
    }

    fn dispatched(
        &mut self,
        i: usize,
        attempt: AttemptId,
        worker: WorkerId,
        gpus: Vec<String>,
        now: Millis,
    ) -> Result<(), TransitionError> {
        self.ensure_not_final()?;
        let stage = self
            .stages
            .get(i)
            .ok_or(TransitionError::UnknownInstance(i))?;
        if !self.is_dispatchable(i) {
            return Err(TransitionError::NotQueued {
                instance: stage.instance.clone(),
                state: stage.state.name(),
            });
        }
        let timeout = self.plan.dag.stages[self.plan.nodes[i].stage].timeout;
        let deadline_ms =
            timeout.map(|t| now.saturating_add(t.as_millis() as Millis + DEADLINE_GRACE_MS));
        if let Some(t) = deadline_ms {
            self.timers.insert((t, i));
        }
        let rec = &mut self.stages[i];
        let number = rec.attempts.len() as u32 + 1;
        rec.attempts.push(AttemptRecord {
            id: attempt.clone(),
            number,
            worker: worker.clone(),
            started_ms: now,
            finished_ms: None,
            outcome: AttemptOutcome::Running,
            handle: None,
            gpus,
        });
        rec.state = StageState::Running {
            attempt,
            worker,
            started_ms: now,
            deadline_ms,
        };
        self.dirty.insert(i);
        Ok(())
    }

    fn started(
        &mut self,
        i: usize,
        attempt: &AttemptId,
        handle: String,
    ) -> Result<(), TransitionError> {
        self.current_attempt(i, attempt)?;
        if let Some(a) = self.stages[i].attempts.last_mut() {
            a.handle = Some(handle);
        }
        self.dirty.insert(i);
        Ok(())
    }

    fn finished(
        &mut self,
        i: usize,
        attempt: &AttemptId,
        outcome: AttemptOutcome,
        now: Millis,
        actions: &mut Vec<Action>,
    ) -> Result<(), TransitionError> {
        self.current_attempt(i, attempt)?;
        self.close_attempt(i, outcome.clone(), now);
        self.release_slot(i, actions);
        let retries = self.plan.dag.stages[self.plan.nodes[i].stage].retries;
        let lost = matches!(outcome, AttemptOutcome::Lost { .. });
        let rec = &mut self.stages[i];
        match outcome {
            AttemptOutcome::Exited { code: 0 } => {
                rec.state = StageState::Succeeded { finished_ms: now };
                self.settle(i, now, actions);
            }
            AttemptOutcome::Exited { .. } | AttemptOutcome::TimedOut => {
                rec.failures += 1;
                if rec.failures <= retries.limit {
                    let wait = exponential_backoff(
                        retries.backoff.as_millis() as Millis,
                        retries.max_backoff.as_millis() as Millis,
                        rec.failures,
                    );
                    self.requeue(i, now, now + wait, actions);
                } else {
                    let error = match outcome {
                        AttemptOutcome::TimedOut => "timed out".to_owned(),
                        AttemptOutcome::Exited { code } => format!("exited with code {code}"),
                        _ => unreachable!("matched above"),
                    };
                    self.fail(i, error, now, actions);
                }
            }
            AttemptOutcome::Lost { reason }
            | AttemptOutcome::Error {
                message: reason,
                transient: true,
            } => {
                rec.infra_failures += 1;
                if rec.infra_failures <= INFRA_RETRY_LIMIT {
                    // A lost attempt runs again at once (its worker is gone, another can take
                    // it); a transient error waits, as the same cause may still be there.
                    let wait = if lost {
                        0
                    } else {
                        exponential_backoff(INFRA_BACKOFF_MS, 60_000, rec.infra_failures)
                    };
                    self.requeue(i, now, now + wait, actions);
                } else {
                    let error = format!("{reason} (gave up after {INFRA_RETRY_LIMIT} retries)");
                    self.fail(i, error, now, actions);
                }
            }
            AttemptOutcome::Error {
                message,
                transient: false,
            } => self.fail(i, message, now, actions),
            AttemptOutcome::Cancelled => {
                // The worker stopped it on its own (it is shutting down): not the stage's fault.
                rec.infra_failures += 1;
                self.requeue(i, now, now, actions);
            }
            AttemptOutcome::Running => {}
        }
        Ok(())
    }

    fn tick(&mut self, now: Millis, actions: &mut Vec<Action>) {
        if self.record.state != RunState::Running {
            return;
        }
        if self.record.deadline_ms.is_some_and(|d| d <= now) {
            let limit = self
                .plan
                .dag
                .timeout
                .map(|t| humantime::format_duration(t).to_string())
                .unwrap_or_default();
            let reason = format!("run timed out after {limit}");
            self.stop_everything(RunState::Failed, reason, now, actions);
            return;
        }
        while let Some(&(t, i)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            match self.stages[i].state.clone() {
                StageState::Queued {
                    not_before_ms: Some(nb),
                    ..
                } if nb <= now && !self.holds_slot[i] => self.make_ready(i, actions),
                StageState::Running {
                    attempt,
                    worker,
                    deadline_ms: Some(d),
                    ..
                } if d <= now => {
                    actions.push(Action::Kill {
                        instance: i,
                        attempt: attempt.clone(),
                        worker,
                    });
                    // Applying to the current attempt cannot fail.
                    let _ = self.finished(i, &attempt, AttemptOutcome::TimedOut, now, actions);
                }
                _ => {}
            }
        }
    }

    /// Cancels every unfinished instance and ends the run in `state`.
    fn stop_everything(
        &mut self,
        state: RunState,
        reason: String,
        now: Millis,
        actions: &mut Vec<Action>,
    ) {
        for i in 0..self.stages.len() {
            if self.stages[i].state.is_final() {
                continue;
            }
            if let StageState::Running {
                attempt, worker, ..
            } = &self.stages[i].state
            {
                actions.push(Action::Kill {
                    instance: i,
                    attempt: attempt.clone(),
                    worker: worker.clone(),
                });
                self.close_attempt(i, AttemptOutcome::Cancelled, now);
            }
            self.holds_slot[i] = false;
            self.stages[i].state = StageState::Cancelled { finished_ms: now };
            self.dirty.insert(i);
            self.terminal += 1;
            self.failed += 1;
        }
        self.in_flight.iter_mut().for_each(|n| *n = 0);
        self.blocked.iter_mut().for_each(VecDeque::clear);
        self.timers.clear();
        self.end_run(state, Some(reason), now, actions);
    }

    fn finish_if_done(&mut self, now: Millis, actions: &mut Vec<Action>) {
        if self.record.state == RunState::Running && self.terminal == self.stages.len() {
            if self.failed > 0 {
                let failed: Vec<&str> = self
                    .stages
                    .iter()
                    .filter(|s| matches!(s.state, StageState::Failed { .. }))
                    .map(|s| s.instance.as_str())
                    .take(5)
                    .collect();
                let message = format!("failed stages: {}", failed.join(", "));
                self.end_run(RunState::Failed, Some(message), now, actions);
            } else {
                self.end_run(RunState::Succeeded, None, now, actions);
            }
        }
    }

    fn end_run(
        &mut self,
        state: RunState,
        message: Option<String>,
        now: Millis,
        actions: &mut Vec<Action>,
    ) {
        self.record.state = state;
        self.record.finished_ms = Some(now);
        self.record.message = message;
        self.run_dirty = true;
        actions.push(Action::RunFinished { state });
    }

    fn ensure_not_final(&self) -> Result<(), TransitionError> {
        if self.record.state.is_final() {
            return Err(TransitionError::RunFinished {
                run: self.record.id.0.clone(),
                state: self.record.state.as_str(),
            });
        }
        Ok(())
    }

    fn current_attempt(&self, i: usize, attempt: &AttemptId) -> Result<(), TransitionError> {
        let rec = self
            .stages
            .get(i)
            .ok_or(TransitionError::UnknownInstance(i))?;
        match &rec.state {
            StageState::Running {
                attempt: current, ..
            } if current == attempt => Ok(()),
            _ => Err(TransitionError::StaleAttempt {
                instance: rec.instance.clone(),
                attempt: attempt.clone(),
            }),
        }
    }

    fn close_attempt(&mut self, i: usize, outcome: AttemptOutcome, now: Millis) {
        if let Some(a) = self.stages[i].attempts.last_mut() {
            a.outcome = outcome;
            a.finished_ms = Some(now);
        }
        self.dirty.insert(i);
    }

    fn requeue(&mut self, i: usize, now: Millis, not_before: Millis, actions: &mut Vec<Action>) {
        self.stages[i].state = StageState::Queued {
            since_ms: now,
            not_before_ms: (not_before > now).then_some(not_before),
        };
        self.dirty.insert(i);
        if not_before > now {
            self.timers.insert((not_before, i));
        } else {
            self.make_ready(i, actions);
        }
    }

    fn fail(&mut self, i: usize, error: String, now: Millis, actions: &mut Vec<Action>) {
        self.stages[i].state = StageState::Failed {
            finished_ms: now,
            error,
        };
        self.settle(i, now, actions);
    }

    /// Records that instance `i` reached a final state and decides its downstream.
    fn settle(&mut self, i: usize, now: Millis, actions: &mut Vec<Action>) {
        self.dirty.insert(i);
        self.terminal += 1;
        if is_failure(&self.stages[i].state) {
            self.failed += 1;
        }
        let mut work = Vec::new();
        for &d in &self.plan.nodes[i].downstream {
            count_upstream(&mut self.counts[d], &self.stages[i].state);
            if matches!(self.stages[d].state, StageState::Pending) {
                work.push(d);
            }
        }
        self.evaluate(&mut work, now, actions);
    }

    /// Decides pending instances in `work` (and, transitively, what their outcome decides).
    fn evaluate(&mut self, work: &mut Vec<usize>, now: Millis, actions: &mut Vec<Action>) {
        while let Some(i) = work.pop() {
            if !matches!(self.stages[i].state, StageState::Pending) {
                continue;
            }
            let decision = match self.decide(i) {
                Decision::Run if !self.plan.nodes[i].empty_fan_out => self.check_condition(i),
                decision => decision,
            };
            let state = match decision {
                Decision::Wait => continue,
                Decision::Run if self.plan.nodes[i].empty_fan_out => StageState::Skipped {
                    finished_ms: now,
                    reason: "for_each list is empty".to_owned(),
                },
                Decision::Run => {
                    self.stages[i].state = StageState::Queued {
                        since_ms: now,
                        not_before_ms: None,
                    };
                    self.stages[i].queued_ms = Some(now);
                    self.dirty.insert(i);
                    self.make_ready(i, actions);
                    continue;
                }
                Decision::Skip(reason) => StageState::Skipped {
                    finished_ms: now,
                    reason,
                },
                Decision::UpstreamFailed => StageState::UpstreamFailed { finished_ms: now },
                Decision::ConditionFailed(error) => StageState::Failed {
                    finished_ms: now,
                    error,
                },
            };
            self.stages[i].state = state;
            self.dirty.insert(i);
            self.terminal += 1;
            if is_failure(&self.stages[i].state) {
                self.failed += 1;
            }
            for &d in &self.plan.nodes[i].downstream {
                count_upstream(&mut self.counts[d], &self.stages[i].state);
                if matches!(self.stages[d].state, StageState::Pending) {
                    work.push(d);
                }
            }
        }
    }

    /// For an instance its trigger rule lets run: runs it, skips it or fails it by its
    /// stage's `when`. Evaluated each time the instance is decided (again after a retry).
    fn check_condition(&self, i: usize) -> Decision {
        let Some(condition) = &self.plan.dag.stages[self.plan.nodes[i].stage].when else {
            return Decision::Run;
        };
        match evaluate_condition(condition, &self.plan, &self.stages, &self.record.params, i) {
            Ok(true) => Decision::Run,
            Ok(false) => Decision::Skip(format!("when `{condition}` was false")),
            Err(e) => Decision::ConditionFailed(e.to_string()),
        }
    }

    fn decide(&self, i: usize) -> Decision {
        let node = &self.plan.nodes[i];
        let total = node.upstream.len() as u32;
        let c = self.counts[i];
        let all_done = c.done == total;
        let rule = self.plan.dag.stages[node.stage].trigger;
        match rule {
            TriggerRule::AllSuccess => {
                if c.failed > 0 {
                    Decision::UpstreamFailed
                } else if !all_done {
                    Decision::Wait
                } else if c.succeeded < total {
                    Decision::Skip("an upstream stage was skipped".to_owned())
                } else {
                    Decision::Run
                }
            }
            TriggerRule::AllDone => {
                if all_done {
                    Decision::Run
                } else {
                    Decision::Wait
                }
            }
            TriggerRule::OneFailed => {
                if c.failed > 0 {
                    Decision::Run
                } else if all_done {
                    Decision::Skip("no upstream stage failed".to_owned())
                } else {
                    Decision::Wait
                }
            }
            TriggerRule::OneSuccess => {
                if c.succeeded > 0 {
                    Decision::Run
                } else if !all_done {
                    Decision::Wait
                } else if c.failed > 0 {
                    Decision::UpstreamFailed
                } else {
                    Decision::Skip("no upstream stage succeeded".to_owned())
                }
            }
            TriggerRule::NoneFailed => {
                if c.failed > 0 {
                    Decision::UpstreamFailed
                } else if all_done {
                    Decision::Run
                } else {
                    Decision::Wait
                }
            }
        }
    }

    /// Emits `Ready` for a queued instance if its stage has a free `max_parallel` slot;
    /// otherwise it waits in line for one.
    fn make_ready(&mut self, i: usize, actions: &mut Vec<Action>) {
        let stage = self.plan.nodes[i].stage;
        let limit = self.plan.dag.stages[stage].max_parallel.unwrap_or(u32::MAX);
        if self.in_flight[stage] < limit {
            self.in_flight[stage] += 1;
            self.holds_slot[i] = true;
            actions.push(Action::Ready { instance: i });
        } else {
            self.blocked[stage].push_back(i);
        }
    }

    fn release_slot(&mut self, i: usize, actions: &mut Vec<Action>) {
        if !std::mem::take(&mut self.holds_slot[i]) {
            return;
        }
        let stage = self.plan.nodes[i].stage;
        self.in_flight[stage] -= 1;
        while let Some(next) = self.blocked[stage].pop_front() {
            if matches!(self.stages[next].state, StageState::Queued { .. })
                && !self.holds_slot[next]
            {
                self.make_ready(next, actions);
                break;
            }
        }
    }
}

fn is_failure(state: &StageState) -> bool {
    matches!(
        state,
        StageState::Failed { .. }
            | StageState::UpstreamFailed { .. }
            | StageState::Cancelled { .. }
    )
}

fn count_upstream(counts: &mut UpstreamCounts, state: &StageState) {
    counts.done += 1;
    match state {
        StageState::Succeeded { .. } => counts.succeeded += 1,
        s if is_failure(s) => counts.failed += 1,
        _ => {}
    }
}

/// `base * 2^(n-1)`, capped at `max`.
pub fn exponential_backoff(base: Millis, max: Millis, n: u32) -> Millis {
    let factor = 1i64
        .checked_shl(n.saturating_sub(1).min(40))
        .unwrap_or(i64::MAX);
    base.saturating_mul(factor).min(max)
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
