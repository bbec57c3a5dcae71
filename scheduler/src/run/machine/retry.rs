//! Retrying a finished run: which instances run again, and the run put back to running.

use super::Run;
use super::events::{Action, TransitionError};
use super::trigger::is_failure;
use crate::ids::Millis;
use crate::run::state::{RetryMode, RetryRecord, RunState, StageState};

impl Run {
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
            // A stage behind an `approval:` gate asks again.
            rec.approval = None;
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
}
