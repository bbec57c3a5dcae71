//! The run state machine: `apply(event, now)` moves stage instances through their states and
//! returns the actions the driver must take once the new state is stored. Pure: no IO, no
//! clock; time is an argument.

mod approval;
mod attempts;
mod evaluate;
mod events;
mod fan_out;
mod finish;
mod retry;
mod trigger;

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

pub use events::{
    Action, AttemptReport, DEADLINE_GRACE_MS, Event, INFRA_BACKOFF_MS, INFRA_RETRY_LIMIT,
    ReportedOutput, TransitionError, exponential_backoff,
};
use trigger::{UpstreamCounts, count_upstream, is_failure};

use super::plan::RunPlan;
use super::state::{CacheNote, CacheOutcome, RunRecord, RunState, StageRecord, StageState};
use crate::ids::Millis;

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

    pub(super) fn with_stages(
        record: RunRecord,
        plan: Arc<RunPlan>,
        stages: Vec<StageRecord>,
    ) -> Run {
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
                StageState::WaitingApproval {
                    deadline_ms: Some(t),
                    ..
                } => {
                    run.timers.insert((*t, i));
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
                self.ensure_queued(instance)?;
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
                report,
            } => self.finished(instance, &attempt, report, now, &mut actions)?,
            Event::CacheHit {
                instance,
                note,
                outputs,
                metrics,
            } => {
                self.ensure_queued(instance)?;
                self.release_slot(instance, &mut actions);
                let rec = &mut self.stages[instance];
                rec.cache = Some(note);
                self.succeed(instance, outputs, metrics, now, &mut actions);
            }
            Event::CacheMiss {
                instance,
                key,
                reason,
            } => {
                // Not a transition: the instance stays queued and goes to a worker.
                self.ensure_queued(instance)?;
                self.stages[instance].cache = Some(CacheNote {
                    key,
                    outcome: CacheOutcome::Miss { reason },
                });
                self.dirty.insert(instance);
            }
            Event::Approved { instance, by } => self.approved(instance, by, now, &mut actions)?,
            Event::Rejected {
                instance,
                by,
                reason,
            } => self.rejected(instance, by, reason, now, &mut actions)?,
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

    /// Whether instance `i` changed since the last [`Run::take_dirty`].
    pub fn is_dirty(&self, i: usize) -> bool {
        self.dirty.contains(&i)
    }

    /// Refuses an event for instance `i` unless the run goes on and `i` is queued.
    fn ensure_queued(&self, i: usize) -> Result<(), TransitionError> {
        self.ensure_not_final()?;
        let stage = self
            .stages
            .get(i)
            .ok_or(TransitionError::UnknownInstance(i))?;
        if !matches!(stage.state, StageState::Queued { .. }) {
            return Err(TransitionError::NotQueued {
                instance: stage.instance.clone(),
                state: stage.state.name(),
            });
        }
        Ok(())
    }

    /// Whether instance `i` is queued and holds a dispatch slot.
    pub fn is_dispatchable(&self, i: usize) -> bool {
        matches!(
            self.stages.get(i).map(|s| &s.state),
            Some(StageState::Queued { .. })
        ) && self.holds_slot[i]
    }
}

#[cfg(test)]
mod tests;
