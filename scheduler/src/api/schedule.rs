//! The schedule part of the client API: the next fire time shown with each DAG (backfill's
//! conversions are in `convert`).

use crate::cron::next_fire_ms;
use crate::dag::Dag;
use crate::ids::Millis;

/// The next fire time of `dag`'s schedule after `after`, 0 when it has none.
pub(crate) fn next_fire_ms_of(dag: &Dag, after: Millis) -> i64 {
    dag.schedule
        .as_ref()
        .and_then(|s| next_fire_ms(&s.expression, s.timezone, after))
        .unwrap_or(0)
}
