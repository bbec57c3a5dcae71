//! A DAG's validated schedule: its cron expression, time zone and the policies for missed
//! and overlapping slots. The `dag` module builds it from a file; cron only reads it.

use serde::{Deserialize, Serialize};

use super::CronExpr;

/// What to do about slots missed while the scheduler was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Catchup {
    None,
    #[default]
    Latest,
    All,
}

/// What to do when a slot comes while the previous run is still active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    #[default]
    Skip,
    Allow,
    CancelPrevious,
}

/// A validated schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The expression as written (crontab, 5 or 6 fields, or an `@` macro).
    pub cron: String,
    /// The same expression translated for the `cron` crate (Quartz syntax).
    pub expression: CronExpr,
    pub timezone: chrono_tz::Tz,
    pub catchup: Catchup,
    pub overlap: Overlap,
}
