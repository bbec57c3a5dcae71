//! Fire times in a time zone.
//!
//! An expression is evaluated in wall-clock time (naive local time, see
//! [`CronExpr::next_after`]); each match is then resolved into an instant in the zone:
//!
//! - a local time that exists once is that instant;
//! - a local time that does not exist (the clocks spring forward over it) resolves to the first
//!   valid instant after the gap, i.e. the instant of the transition. Every match inside one gap
//!   resolves to that same instant, so they fire once together;
//! - a local time that exists twice (the clocks fall back over it) resolves to its first
//!   occurrence; the second pass through the repeated period fires nothing.
//!
//! Resolution never moves time backwards (a later local time never resolves to an earlier
//! instant), so the fire times of a schedule are found by walking local matches forward and
//! keeping the first one that resolves past the starting instant.

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use super::CronExpr;
use crate::ids::Millis;

/// Local matches examined at most for one fire time. The second pass through a repeated hour of
/// a per-second schedule needs 3,600; nothing else comes close.
const MAX_MATCHES_PER_FIRE: usize = 100_000;

/// Widest span, in seconds, between a local time in a gap and the transition that made it: the
/// largest UTC offsets are below 15 hours, so a day and a bit is always enough.
const GAP_SEARCH_SECONDS: i64 = 26 * 3600;

/// Resolves a wall-clock time in `tz` to an instant by the rules in the module docs.
pub fn resolve_local(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, b) => a.with_timezone(&Utc).min(b.with_timezone(&Utc)),
        LocalResult::None => end_of_gap(tz, local),
    }
}

/// The first instant whose local time in `tz` is later than `local`, a time inside a gap:
/// the transition that skipped it. Local time only rises across the search window, so a
/// binary search over whole seconds finds it.
fn end_of_gap(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let local = local.with_nanosecond(0).unwrap_or(local);
    let as_utc = local.and_utc().timestamp();
    let local_at =
        |secs: i64| DateTime::from_timestamp(secs, 0).map(|t| t.with_timezone(&tz).naive_local());
    let (mut before, mut after) = (as_utc - GAP_SEARCH_SECONDS, as_utc + GAP_SEARCH_SECONDS);
    while after - before > 1 {
        let mid = before + (after - before) / 2;
        match local_at(mid) {
            Some(t) if t > local => after = mid,
            _ => before = mid,
        }
    }
    DateTime::from_timestamp(after, 0).unwrap_or_default()
}

/// Returns the first fire time of `expr` in `tz` strictly after the instant `after`, or `None`
/// when the schedule never fires again.
pub fn next_fire(expr: &CronExpr, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // Start from the whole second: fire times are whole seconds and `next_after` is strict.
    let start = after.with_nanosecond(0).unwrap_or(after);
    let mut cursor = start.with_timezone(&tz).naive_local();
    for _ in 0..MAX_MATCHES_PER_FIRE {
        let local = expr.next_after(cursor)?;
        let at = resolve_local(tz, local);
        if at > after {
            return Some(at);
        }
        // A match in the second pass through a repeated period resolves to its first
        // occurrence, already behind us: keep walking.
        cursor = local;
    }
    None
}

/// [`next_fire`] in milliseconds since the epoch.
pub fn next_fire_ms(expr: &CronExpr, tz: Tz, after: Millis) -> Option<Millis> {
    let after = DateTime::from_timestamp_millis(after)?;
    next_fire(expr, tz, after).map(|t| t.timestamp_millis())
}

/// Renders an instant in `tz` as RFC 3339 with the zone's offset, e.g.
/// `2025-06-02T02:00:00+05:30`.
pub fn format_in_zone(ms: Millis, tz: Tz) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&tz)
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
        })
        .unwrap_or_default()
}

/// Renders an instant as RFC 3339 in UTC, e.g. `2025-06-01T20:30:00Z`.
pub fn format_utc(ms: Millis) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

#[cfg(test)]
#[path = "zone_tests.rs"]
mod tests;
