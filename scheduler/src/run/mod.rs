//! Runs: the persisted records, the plan (stages expanded into instances) and the pure state
//! machine that moves them.

mod machine;
mod plan;
mod state;
mod when;

pub use machine::{
    Action, AttemptReport, DEADLINE_GRACE_MS, Event, INFRA_BACKOFF_MS, INFRA_RETRY_LIMIT,
    ReportedOutput, Run, TransitionError, exponential_backoff,
};
pub use plan::{PlanNode, RunPlan};
pub use state::{
    ArtifactRef, AttemptOutcome, AttemptRecord, CacheNote, CacheOutcome, ConsumedAsset, RetryMode,
    RetryRecord, RunRecord, RunState, StageRecord, StageState, TriggerKind,
};
