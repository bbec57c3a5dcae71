//! `approval:` gates: an instance its dependencies let run waits in `waiting_approval`,
//! holding no slot, until a person approves (it is queued) or rejects it, or its timeout
//! rejects it (it fails without retry; what needs it follows its trigger rule).

use super::Run;
use super::events::{Action, TransitionError};
use crate::ids::Millis;
use crate::run::state::{ApprovalDecision, StageState};

/// Who rejected an instance whose approval timed out.
const APPROVAL_TIMEOUT_BY: &str = "timeout";

impl Run {
    /// Whether instance `i` has a gate nobody decided yet.
    pub(super) fn needs_approval(&self, i: usize) -> bool {
        self.plan.dag.stages[self.plan.nodes[i].stage]
            .approval
            .is_some()
            && self.stages[i].approval.is_none()
    }

    pub(super) fn wait_for_approval(&mut self, i: usize, now: Millis) {
        let Some(gate) = &self.plan.dag.stages[self.plan.nodes[i].stage].approval else {
            return;
        };
        let deadline_ms = gate
            .timeout
            .map(|t| now.saturating_add(t.as_millis() as Millis));
        if let Some(t) = deadline_ms {
            self.timers.insert((t, i));
        }
        self.stages[i].state = StageState::WaitingApproval {
            since_ms: now,
            message: gate.message.clone(),
            deadline_ms,
        };
        self.dirty.insert(i);
    }

    fn ensure_waiting(&self, i: usize) -> Result<(), TransitionError> {
        self.ensure_not_final()?;
        let stage = self
            .stages
            .get(i)
            .ok_or(TransitionError::UnknownInstance(i))?;
        if !matches!(stage.state, StageState::WaitingApproval { .. }) {
            return Err(TransitionError::NotWaitingApproval {
                instance: stage.instance.clone(),
                state: stage.state.name(),
            });
        }
        Ok(())
    }

    pub(super) fn approved(
        &mut self,
        i: usize,
        by: String,
        now: Millis,
        actions: &mut Vec<Action>,
    ) -> Result<(), TransitionError> {
        self.ensure_waiting(i)?;
        let rec = &mut self.stages[i];
        rec.approval = Some(ApprovalDecision {
            approved: true,
            by,
            reason: None,
            at_ms: now,
        });
        rec.state = StageState::Queued {
            since_ms: now,
            not_before_ms: None,
        };
        rec.queued_ms = Some(now);
        self.dirty.insert(i);
        self.make_ready(i, actions);
        Ok(())
    }

    pub(super) fn rejected(
        &mut self,
        i: usize,
        by: String,
        reason: String,
        now: Millis,
        actions: &mut Vec<Action>,
    ) -> Result<(), TransitionError> {
        self.ensure_waiting(i)?;
        let error = if reason.is_empty() {
            format!("rejected by {by}")
        } else {
            format!("rejected by {by}: {reason}")
        };
        self.stages[i].approval = Some(ApprovalDecision {
            approved: false,
            by,
            reason: Some(reason).filter(|r| !r.is_empty()),
            at_ms: now,
        });
        self.fail(i, error, now, actions);
        Ok(())
    }

    /// The approval's timeout struck: the instance is rejected.
    pub(super) fn approval_timed_out(&mut self, i: usize, now: Millis, actions: &mut Vec<Action>) {
        let limit = self.plan.dag.stages[self.plan.nodes[i].stage]
            .approval
            .as_ref()
            .and_then(|g| g.timeout)
            .map(|t| humantime::format_duration(t).to_string())
            .unwrap_or_default();
        let reason = format!("no decision within {limit}");
        // The instance is waiting (checked by the caller), so this cannot fail.
        let _ = self.rejected(i, APPROVAL_TIMEOUT_BY.to_owned(), reason, now, actions);
    }
}
