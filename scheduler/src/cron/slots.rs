//! Slots: the instants a schedule stands for. Which ones lie in a range, which are due after
//! downtime under each catch-up policy, and the run id each one gets.
//!
//! A schedule keeps a *cursor*: every slot at or before it is settled (fired, skipped, passed
//! over, or older than the schedule itself). When the scheduler looks at time `now`, the slots
//! in `(cursor, now]` are due, and the catch-up policy thins them:
//!
//! - `all` fires each of them, oldest first;
//! - `latest` fires only the most recent one;
//! - `none` fires the most recent one only if it is on time (at most [`ON_TIME_GRACE_MS`] old);
//!   slots the scheduler could not fire on time because it was down or paused are passed over.
//!
//! Either way the cursor moves to the most recent due slot, so nothing is considered twice.

use chrono::DateTime;
use chrono_tz::Tz;

use super::Catchup;
use super::CronExpr;
use super::zone::next_fire_ms;
use crate::ids::{Millis, RunId};

/// How late a slot may be seen and still count as on time under `catchup: none`.
pub const ON_TIME_GRACE_MS: Millis = 60_000;

/// The first window [`latest_slot`] searches back from `until`; it grows fourfold each time it
/// comes up empty, so a sparse schedule costs a few searches, not a walk through the years.
const FIRST_LATEST_WINDOW_MS: Millis = 60_000;

/// The run id of the run standing for `slot` of `dag`: `<dag>-<yyyymmddThhmmssZ>`, the slot in
/// UTC. Deterministic, so a slot can never get two runs, whoever creates them.
pub fn slot_run_id(dag: &str, slot: Millis) -> RunId {
    let time = DateTime::from_timestamp_millis(slot)
        .unwrap_or_default()
        .format("%Y%m%dT%H%M%SZ");
    RunId(format!("{dag}-{time}"))
}

/// Slots of `expr` in `tz` after `after` (exclusive) up to `until` (inclusive), oldest first,
/// at most `limit` of them.
pub fn slots_between(
    expr: &CronExpr,
    tz: Tz,
    after: Millis,
    until: Millis,
    limit: usize,
) -> Vec<Millis> {
    let mut slots = Vec::new();
    let mut cursor = after;
    while slots.len() < limit {
        match next_fire_ms(expr, tz, cursor) {
            Some(slot) if slot <= until => {
                slots.push(slot);
                cursor = slot;
            }
            _ => break,
        }
    }
    slots
}

/// The most recent slot after `after` (exclusive) and at or before `until`, if any.
pub fn latest_slot(expr: &CronExpr, tz: Tz, after: Millis, until: Millis) -> Option<Millis> {
    let mut window = FIRST_LATEST_WINDOW_MS;
    loop {
        let start = after.max(until.saturating_sub(window));
        let mut latest = None;
        let mut cursor = start;
        while let Some(slot) = next_fire_ms(expr, tz, cursor).filter(|s| *s <= until) {
            latest = Some(slot);
            cursor = slot;
        }
        if latest.is_some() || start == after {
            return latest;
        }
        window = window.saturating_mul(4);
    }
}

/// What to do about the slots due at some instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Slots to fire now, oldest first.
    pub fire: Vec<Millis>,
    /// The new cursor: every slot at or before it is settled once `fire` is.
    pub cursor: Millis,
    /// The first and last slot passed over by the catch-up policy, if any.
    pub passed_over: Option<(Millis, Millis)>,
}

/// Decides which of the slots in `(cursor, now]` fire under `catchup` (see the module docs).
/// With `all`, at most `limit` slots are returned and the cursor stops at the last of them, so
/// a long downtime is caught up over several calls rather than in one burst.
pub fn due_slots(
    expr: &CronExpr,
    tz: Tz,
    catchup: Catchup,
    cursor: Millis,
    now: Millis,
    limit: usize,
) -> Due {
    if catchup == Catchup::All {
        let fire = slots_between(expr, tz, cursor, now, limit.max(1));
        let cursor = fire.last().copied().unwrap_or(cursor);
        return Due {
            fire,
            cursor,
            passed_over: None,
        };
    }
    let Some(latest) = latest_slot(expr, tz, cursor, now) else {
        return Due {
            fire: Vec::new(),
            cursor,
            passed_over: None,
        };
    };
    let on_time = catchup == Catchup::Latest || now - latest <= ON_TIME_GRACE_MS;
    let first = next_fire_ms(expr, tz, cursor).unwrap_or(latest);
    let passed_over = match (on_time, first < latest) {
        (true, true) => {
            let before_latest = latest_slot(expr, tz, cursor, latest - 1).unwrap_or(first);
            Some((first, before_latest))
        }
        (true, false) => None,
        (false, _) => Some((first, latest)),
    };
    Due {
        fire: if on_time { vec![latest] } else { Vec::new() },
        cursor: latest,
        passed_over,
    }
}

#[cfg(test)]
#[path = "slots_tests.rs"]
mod tests;
