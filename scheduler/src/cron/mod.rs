//! Cron schedules: crontab expressions translated for the `cron` crate ([`CronExpr`]),
//! evaluated in a time zone with the DST rules of [`zone`], the slots due after downtime under
//! each catch-up policy ([`due_slots`]), and the book of every scheduled DAG's next fire time
//! ([`ScheduleBook`]). Everything here is pure: time is an argument.

mod book;
mod expr;
mod input;
mod schedule;
mod slots;
mod zone;

pub use book::{BookEntry, ScheduleBook};
pub use expr::{CronError, CronExpr, CronField, QuartzSchedule};
pub use input::{TimeInputError, parse_time};
pub use schedule::{Catchup, Overlap, Schedule};
pub use slots::{Due, ON_TIME_GRACE_MS, due_slots, latest_slot, slot_run_id, slots_between};
pub use zone::{format_in_zone, format_utc, next_fire, next_fire_ms, resolve_local};
