//! Crontab expressions (5 fields, 6 with leading seconds, `@` macros) and their translation
//! into the Quartz syntax the `cron` crate speaks.

use thiserror::Error;

/// A parsed cron expression.
#[derive(Debug, Clone)]
pub struct CronExpr {
    /// The Quartz form handed to the `cron` crate.
    pub quartz: String,
    pub schedule: cron::Schedule,
}

/// Why a cron expression was refused.
#[derive(Debug, Clone, Error)]
#[error("{message}")]
pub struct CronError {
    pub message: String,
}
