//! The schedule side of the engine's handle: pause, resume and backfill, sent to the engine
//! actor as [`ScheduleCommand`]s and answered once their writes are durable.

use super::EngineError;
use super::{Command, EngineHandle, Reply};
use crate::ids::{Millis, RunId};
use crate::run::RunState;

/// Commands about schedules, carried by [`Command::Schedule`].
pub(crate) enum ScheduleCommand {
    Pause {
        dag: String,
        reply: Reply<PauseChange>,
    },
    Resume {
        dag: String,
        skip_missed: bool,
        reply: Reply<PauseChange>,
    },
    Backfill {
        request: BackfillRequest,
        reply: Reply<Vec<BackfillSlot>>,
    },
}

/// The outcome of a pause or resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PauseChange {
    /// False when the DAG already was in the asked state.
    pub changed: bool,
}

/// One run per schedule slot in `[from_ms, to_ms]`; slots after now are left to the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillRequest {
    pub dag: String,
    pub from_ms: Millis,
    pub to_ms: Millis,
    /// Only list the slots and what would happen to each.
    pub dry_run: bool,
}

/// What a backfill did (or would do) for one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillSlot {
    pub logical_time_ms: Millis,
    /// The slot's run id, derived from the DAG and the slot.
    pub run: RunId,
    pub outcome: BackfillOutcome,
}

/// What happened to one slot of a backfill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackfillOutcome {
    /// A run was created for the slot.
    Created,
    /// A dry run: a run would be created.
    WouldCreate,
    /// The slot already has a run (scheduled, backfilled or skipped), in this state.
    Exists { state: RunState },
}

impl BackfillOutcome {
    /// The name used in the CLI and the protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            BackfillOutcome::Created => "created",
            BackfillOutcome::WouldCreate => "would_create",
            BackfillOutcome::Exists { .. } => "exists",
        }
    }
}

impl EngineHandle {
    /// Stops `dag`'s schedule from starting runs, persistently; runs already started carry on.
    pub async fn pause(&self, dag: String) -> Result<PauseChange, EngineError> {
        self.call(|reply| Command::Schedule(ScheduleCommand::Pause { dag, reply }))
            .await
    }

    /// Lets `dag`'s schedule start runs again. Slots that came while it was paused follow the
    /// DAG's catch-up policy, unless `skip_missed`, which passes over all of them.
    pub async fn resume(&self, dag: String, skip_missed: bool) -> Result<PauseChange, EngineError> {
        self.call(|reply| {
            Command::Schedule(ScheduleCommand::Resume {
                dag,
                skip_missed,
                reply,
            })
        })
        .await
    }

    /// Creates one run per schedule slot in the range, for slots that have none yet.
    pub async fn backfill(
        &self,
        request: BackfillRequest,
    ) -> Result<Vec<BackfillSlot>, EngineError> {
        self.call(|reply| Command::Schedule(ScheduleCommand::Backfill { request, reply }))
            .await
    }
}
