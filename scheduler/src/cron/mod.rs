//! Cron schedules: crontab expressions translated for the `cron` crate, evaluated in a time zone.

mod expr;

pub use expr::{CronError, CronExpr, CronField, QuartzSchedule};
