//! Trigger rules: how an instance judges the upstream instances that have ended so far.
//! Pure functions of counts; the run applies what they decide.

use crate::dag::TriggerRule;
use crate::run::state::StageState;

/// How an instance's trigger rule judges its upstream so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decision {
    Wait,
    Run,
    Skip(String),
    UpstreamFailed,
    /// The trigger rule let it run but its `when` could not be evaluated.
    ConditionFailed(String),
}

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct UpstreamCounts {
    pub(super) done: u32,
    pub(super) succeeded: u32,
    pub(super) failed: u32,
}

pub(super) fn is_failure(state: &StageState) -> bool {
    matches!(
        state,
        StageState::Failed { .. }
            | StageState::UpstreamFailed { .. }
            | StageState::Cancelled { .. }
    )
}

pub(super) fn count_upstream(counts: &mut UpstreamCounts, state: &StageState) {
    counts.done += 1;
    match state {
        StageState::Succeeded { .. } => counts.succeeded += 1,
        s if is_failure(s) => counts.failed += 1,
        _ => {}
    }
}

/// What trigger rule `rule` says of an instance with `total` upstream instances, of which
/// `c` have ended.
pub(super) fn decide(rule: TriggerRule, c: UpstreamCounts, total: u32) -> Decision {
    let all_done = c.done == total;
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
