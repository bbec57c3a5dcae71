//! The schedule part of the client API: conversions for pause, resume and backfill, and the
//! next fire time shown with each DAG.

use vishwa_proto::v1 as pb;

use crate::cron::next_fire_ms;
use crate::dag::Dag;
use crate::engine::{BackfillOutcome, BackfillSlot};
use crate::ids::Millis;

/// The next fire time of `dag`'s schedule after `after`, 0 when it has none.
pub(crate) fn next_fire_ms_of(dag: &Dag, after: Millis) -> i64 {
    dag.schedule
        .as_ref()
        .and_then(|s| next_fire_ms(&s.expression, s.timezone, after))
        .unwrap_or(0)
}

/// What a backfill did, as sent to clients.
pub(crate) fn backfill_response(slots: &[BackfillSlot], dag: &Dag) -> pb::BackfillResponse {
    let slots = slots
        .iter()
        .map(|s| pb::BackfillSlot {
            logical_time_ms: s.logical_time_ms,
            run_id: s.run.0.clone(),
            outcome: s.outcome.as_str().to_owned(),
            state: match s.outcome {
                BackfillOutcome::Exists { state } => pb::RunState::from(state) as i32,
                _ => pb::RunState::Unspecified as i32,
            },
        })
        .collect();
    pb::BackfillResponse {
        slots,
        timezone: dag
            .schedule
            .as_ref()
            .map(|s| s.timezone.name().to_owned())
            .unwrap_or_default(),
    }
}
