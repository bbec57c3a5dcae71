//! Deciding pending instances: when an upstream instance ends, its downstream instances are
//! judged by their trigger rule and `when:` condition, and run, skip or fail in turn.

use super::Run;
use super::events::Action;
use super::trigger::{self, Decision, count_upstream, is_failure};
use crate::ids::Millis;
use crate::run::state::StageState;
use crate::run::when::evaluate_condition;

impl Run {
    /// Records that instance `i` reached a final state and decides its downstream.
    pub(super) fn settle(&mut self, i: usize, now: Millis, actions: &mut Vec<Action>) {
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
    pub(super) fn evaluate(
        &mut self,
        work: &mut Vec<usize>,
        now: Millis,
        actions: &mut Vec<Action>,
    ) {
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
                Decision::Run if self.needs_approval(i) => {
                    self.wait_for_approval(i, now);
                    continue;
                }
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
    pub(super) fn check_condition(&self, i: usize) -> Decision {
        let Some(condition) = &self.plan.dag.stages[self.plan.nodes[i].stage].when else {
            return Decision::Run;
        };
        match evaluate_condition(condition, &self.plan, &self.stages, &self.record.params, i) {
            Ok(true) => Decision::Run,
            Ok(false) => Decision::Skip(format!("when `{condition}` was false")),
            Err(e) => Decision::ConditionFailed(e.to_string()),
        }
    }

    pub(super) fn decide(&self, i: usize) -> Decision {
        let node = &self.plan.nodes[i];
        let rule = self.plan.dag.stages[node.stage].trigger;
        trigger::decide(rule, self.counts[i], node.upstream.len() as u32)
    }
}
