//! The life of attempts and of the run: start, dispatch, the start report, deadlines,
//! cancellation and the end of the run. How an attempt ends is `finish`.

use std::collections::VecDeque;

use super::Run;
use super::events::{Action, DEADLINE_GRACE_MS, TransitionError};
use crate::ids::{AttemptId, Millis, WorkerId};
use crate::run::state::{AttemptOutcome, AttemptRecord, RunState, StageState};

impl Run {
    pub(super) fn start(
        &mut self,
        now: Millis,
        actions: &mut Vec<Action>,
    ) -> Result<(), TransitionError> {
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

    pub(super) fn dispatched(
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

    pub(super) fn started(
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

    pub(super) fn tick(&mut self, now: Millis, actions: &mut Vec<Action>) {
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
                    let timed_out = AttemptOutcome::TimedOut.into();
                    let _ = self.finished(i, &attempt, timed_out, now, actions);
                }
                StageState::WaitingApproval {
                    deadline_ms: Some(d),
                    ..
                } if d <= now => self.approval_timed_out(i, now, actions),
                _ => {}
            }
        }
    }

    /// Cancels every unfinished instance and ends the run in `state`.
    pub(super) fn stop_everything(
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

    pub(super) fn finish_if_done(&mut self, now: Millis, actions: &mut Vec<Action>) {
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

    pub(super) fn end_run(
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

    pub(super) fn ensure_not_final(&self) -> Result<(), TransitionError> {
        if self.record.state.is_final() {
            return Err(TransitionError::RunFinished {
                run: self.record.id.0.clone(),
                state: self.record.state.as_str(),
            });
        }
        Ok(())
    }

    pub(super) fn current_attempt(
        &self,
        i: usize,
        attempt: &AttemptId,
    ) -> Result<(), TransitionError> {
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

    pub(super) fn close_attempt(&mut self, i: usize, outcome: AttemptOutcome, now: Millis) {
        if let Some(a) = self.stages[i].attempts.last_mut() {
            a.outcome = outcome;
            a.finished_ms = Some(now);
        }
        self.dirty.insert(i);
    }

    pub(super) fn requeue(
        &mut self,
        i: usize,
        now: Millis,
        not_before: Millis,
        actions: &mut Vec<Action>,
    ) {
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

    pub(super) fn fail(&mut self, i: usize, error: String, now: Millis, actions: &mut Vec<Action>) {
        self.stages[i].state = StageState::Failed {
            finished_ms: now,
            error,
        };
        self.settle(i, now, actions);
    }
}
