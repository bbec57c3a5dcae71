//! The persisted state of a DAG's schedule.

use serde::{Deserialize, Serialize};

use crate::ids::Millis;

/// Where a DAG's schedule stands. The engine writes it in the same batch as the runs the
/// schedule creates, so a slot's run and the cursor that moved past the slot become durable
/// together: a crash while firing leaves both or neither.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    pub dag: String,
    /// The expression the cursor belongs to, as written; empty once the DAG dropped its
    /// schedule. A DAG submitted with another expression or zone starts afresh.
    pub cron: String,
    /// The IANA zone the cursor belongs to.
    pub timezone: String,
    /// Every slot at or before this instant is settled: fired, skipped, passed over by the
    /// catch-up policy, or older than the schedule.
    pub cursor_ms: Millis,
    /// The last slot given a run record (the run id derives from it), if any.
    pub last_slot_ms: Option<Millis>,
}
