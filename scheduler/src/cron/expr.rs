//! Crontab expressions (5 fields, 6 with leading seconds, `@` macros) and their translation
//! into the Quartz syntax the `cron` crate speaks.
//!
//! The translation is exact: numbers and names are checked against each field's range, days
//! of the week are renumbered (crontab 0-7 with 0 and 7 = Sunday → Quartz 1-7 with 1 =
//! Sunday) and expanded into an explicit list, so ranges that wrap through Sunday
//! (`FRI-SUN`, `5-7`, `6-0`) keep their crontab meaning.
//!
//! # Day of month and day of week
//!
//! Crontab (Vixie cron, cronie) fires when *either* the day of month *or* the day of week
//! matches if both fields are restricted, i.e. neither starts with `*`; the `cron` crate
//! requires both to match. Vishwa follows crontab: `0 0 1 * MON` fires at midnight on the
//! first of every month and on every Monday. Such an expression keeps two Quartz schedules
//! (one restricting only the day of month, [`CronExpr::schedule`], one restricting only the
//! day of week, [`CronExpr::or_day_of_week`]) and fires at the earlier of their next times.
//! When either field starts with `*` (including `*/2`), both must match, as in crontab.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use thiserror::Error;

/// A parsed cron expression.
#[derive(Debug, Clone)]
pub struct CronExpr {
    /// The Quartz form handed to the `cron` crate.
    pub quartz: String,
    pub schedule: cron::Schedule,
    /// Set when both day of month and day of week are restricted (crontab's OR rule): then
    /// [`Self::schedule`] restricts only the day of month, this one only the day of week,
    /// and a time matches when either does. Use [`CronExpr::next_after`] or
    /// [`CronExpr::next_after_in`], which merge both, rather than `schedule` alone.
    pub or_day_of_week: Option<QuartzSchedule>,
}

/// One Quartz expression and the `cron` crate's schedule for it.
#[derive(Debug, Clone)]
pub struct QuartzSchedule {
    pub quartz: String,
    pub schedule: cron::Schedule,
}

/// A field of a crontab expression, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CronField {
    Second,
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

impl CronField {
    /// Returns the smallest and largest value crontab accepts in this field.
    pub fn range(self) -> (u32, u32) {
        match self {
            CronField::Second | CronField::Minute => (0, 59),
            CronField::Hour => (0, 23),
            CronField::DayOfMonth => (1, 31),
            CronField::Month => (1, 12),
            CronField::DayOfWeek => (0, 7),
        }
    }
}

impl fmt::Display for CronField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CronField::Second => "second",
            CronField::Minute => "minute",
            CronField::Hour => "hour",
            CronField::DayOfMonth => "day-of-month",
            CronField::Month => "month",
            CronField::DayOfWeek => "day-of-week",
        })
    }
}

/// Why a cron expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CronError {
    #[error("cron expression is empty")]
    Empty,
    #[error("cron expression has {count} fields, expected 5 (or 6 with leading seconds)")]
    WrongFieldCount { count: usize },
    #[error("unknown cron macro `{name}`")]
    UnknownMacro { name: String },
    #[error("{field} field `{token}` is Quartz syntax, not crontab")]
    QuartzOnly { field: CronField, token: String },
    #[error("{field} field `{value}` is out of range {min}-{max}")]
    OutOfRange {
        field: CronField,
        value: String,
        min: u32,
        max: u32,
    },
    #[error("{field} field has unknown name `{name}`")]
    UnknownName { field: CronField, name: String },
    #[error("{field} field range `{text}` goes backwards")]
    BackwardsRange { field: CronField, text: String },
    #[error("{field} field step in `{text}` must be a number of at least 1")]
    BadStep { field: CronField, text: String },
    #[error("{field} field `{text}` is not valid crontab syntax")]
    Syntax { field: CronField, text: String },
    #[error("cron expression `{expression}` never fires")]
    NeverFires { expression: String },
    #[error("the cron library refused `{quartz}`: {detail}")]
    Rejected { quartz: String, detail: String },
}

impl CronError {
    /// Returns a suggestion for fixing the expression.
    pub fn help(&self) -> String {
        match self {
            CronError::Empty | CronError::WrongFieldCount { .. } | CronError::Syntax { .. } => {
                "write `minute hour day-of-month month day-of-week`, e.g. `0 2 * * *` for 02:00 \
                 every day, or a macro like `@daily`"
                    .to_owned()
            }
            CronError::UnknownMacro { .. } => {
                "use one of @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually"
                    .to_owned()
            }
            CronError::QuartzOnly { .. } => {
                "`?`, `L`, `W` and `#` are not supported; use `*`, numbers, ranges, lists and \
                 steps"
                    .to_owned()
            }
            CronError::OutOfRange {
                field, min, max, ..
            } => {
                let mut help = format!("use a {field} between {min} and {max}");
                if *field == CronField::DayOfWeek {
                    help.push_str(" (0 and 7 are Sunday) or a name SUN-SAT");
                } else if *field == CronField::Month {
                    help.push_str(" or a name JAN-DEC");
                }
                help
            }
            CronError::UnknownName { field, .. } => match field {
                CronField::DayOfWeek => "use a day name SUN, MON, TUE, WED, THU, FRI, SAT".into(),
                CronField::Month => "use a month name JAN, FEB, ..., DEC".into(),
                _ => format!("the {field} field takes numbers only"),
            },
            CronError::BackwardsRange { .. } => {
                "write ranges from low to high, or a list like `22,23,0-2`".to_owned()
            }
            CronError::BadStep { .. } => "write a step like `*/15` or `0-30/5`".to_owned(),
            CronError::NeverFires { .. } => {
                "check the day of month against the month (e.g. February has no 30th)".to_owned()
            }
            CronError::Rejected { .. } => "simplify the expression".to_owned(),
        }
    }
}

impl CronExpr {
    /// Parses a crontab expression and translates it into Quartz syntax.
    pub fn parse(expr: &str) -> Result<CronExpr, CronError> {
        let trimmed = expr.trim();
        if trimmed.is_empty() {
            return Err(CronError::Empty);
        }
        if let Some(name) = trimmed.strip_prefix('@') {
            let quartz = match name.to_ascii_lowercase().as_str() {
                "hourly" => "0 0 * * * *",
                "daily" | "midnight" => "0 0 0 * * *",
                "weekly" => "0 0 0 * * 1",
                "monthly" => "0 0 0 1 * *",
                "yearly" | "annually" => "0 0 0 1 1 *",
                _ => {
                    return Err(CronError::UnknownMacro {
                        name: trimmed.to_owned(),
                    });
                }
            };
            return Self::from_quartz(trimmed, quartz.to_owned(), None);
        }
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        let (second, rest) = match fields.len() {
            5 => ("0".to_owned(), &fields[..]),
            6 => (translate_field(fields[0], CronField::Second)?, &fields[1..]),
            count => return Err(CronError::WrongFieldCount { count }),
        };
        let minute = translate_field(rest[0], CronField::Minute)?;
        let hour = translate_field(rest[1], CronField::Hour)?;
        let dom = translate_field(rest[2], CronField::DayOfMonth)?;
        let month = translate_field(rest[3], CronField::Month)?;
        let dow = translate_field(rest[4], CronField::DayOfWeek)?;
        let both_restricted = !rest[2].starts_with('*') && !rest[4].starts_with('*');
        if both_restricted {
            let by_dom = format!("{second} {minute} {hour} {dom} {month} *");
            let by_dow = format!("{second} {minute} {hour} * {month} {dow}");
            Self::from_quartz(trimmed, by_dom, Some(by_dow))
        } else {
            let quartz = format!("{second} {minute} {hour} {dom} {month} {dow}");
            Self::from_quartz(trimmed, quartz, None)
        }
    }

    fn from_quartz(
        original: &str,
        quartz: String,
        or_dow: Option<String>,
    ) -> Result<CronExpr, CronError> {
        let compile = |quartz: String| -> Result<QuartzSchedule, CronError> {
            match cron::Schedule::from_str(&quartz) {
                Ok(schedule) => Ok(QuartzSchedule { quartz, schedule }),
                Err(e) => Err(CronError::Rejected {
                    detail: e.to_string(),
                    quartz,
                }),
            }
        };
        let primary = compile(quartz)?;
        let or_day_of_week = or_dow.map(compile).transpose()?;
        let expr = CronExpr {
            quartz: primary.quartz,
            schedule: primary.schedule,
            or_day_of_week,
        };
        let epoch = DateTime::from_timestamp(0, 0).map(|t| t.naive_utc());
        if epoch.and_then(|t| expr.next_after(t)).is_none() {
            return Err(CronError::NeverFires {
                expression: original.to_owned(),
            });
        }
        Ok(expr)
    }

    /// Returns the first fire time strictly after `after`, evaluated in wall-clock time
    /// (no time zone, no DST), or `None` when the schedule has no later fire time.
    pub fn next_after(&self, after: NaiveDateTime) -> Option<NaiveDateTime> {
        self.next_after_in(&Utc.from_utc_datetime(&after))
            .map(|t| t.naive_utc())
    }

    /// Returns the first fire time strictly after `after` in `after`'s time zone, applying
    /// the day-of-month/day-of-week rule described in the module docs.
    pub fn next_after_in<Z: TimeZone>(&self, after: &DateTime<Z>) -> Option<DateTime<Z>> {
        let first = self.schedule.after(after).next();
        let second = self
            .or_day_of_week
            .as_ref()
            .and_then(|alt| alt.schedule.after(after).next());
        match (first, second) {
            (Some(a), Some(b)) => Some(if b < a { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

/// One comma-separated element of a field: `*`, `5`, `1-5`, each with an optional `/step`.
enum Base {
    All,
    Single(u32),
    Range(u32, u32),
}

fn translate_field(text: &str, field: CronField) -> Result<String, CronError> {
    if let Some(bad) = text.chars().find(|c| matches!(c, '?' | '#')) {
        return Err(CronError::QuartzOnly {
            field,
            token: if bad == '#' {
                text.to_owned()
            } else {
                "?".into()
            },
        });
    }
    let mut items = Vec::new();
    for item in text.split(',') {
        items.push(parse_item(item, field)?);
    }
    if field == CronField::DayOfWeek {
        return Ok(translate_days_of_week(text, &items));
    }
    let rendered: Vec<String> = items
        .iter()
        .map(|(base, step)| {
            let base = match base {
                Base::All => "*".to_owned(),
                Base::Single(v) => v.to_string(),
                Base::Range(a, b) => format!("{a}-{b}"),
            };
            match step {
                Some(step) => format!("{base}/{step}"),
                None => base,
            }
        })
        .collect();
    Ok(rendered.join(","))
}

fn parse_item(item: &str, field: CronField) -> Result<(Base, Option<u32>), CronError> {
    let syntax = || CronError::Syntax {
        field,
        text: item.to_owned(),
    };
    if item.is_empty() {
        return Err(syntax());
    }
    let (base_text, step) = match item.split_once('/') {
        Some((base, step)) => {
            let step = step
                .parse::<u32>()
                .ok()
                .filter(|s| *s >= 1)
                .ok_or_else(|| CronError::BadStep {
                    field,
                    text: item.to_owned(),
                })?;
            (base, Some(step))
        }
        None => (item, None),
    };
    let base = if base_text == "*" {
        Base::All
    } else if let Some((a, b)) = base_text.split_once('-') {
        let (a, b) = (parse_value(a, field)?, parse_value(b, field)?);
        if a > b && field != CronField::DayOfWeek {
            return Err(CronError::BackwardsRange {
                field,
                text: item.to_owned(),
            });
        }
        Base::Range(a, b)
    } else {
        Base::Single(parse_value(base_text, field)?)
    };
    Ok((base, step))
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn parse_value(text: &str, field: CronField) -> Result<u32, CronError> {
    let (min, max) = field.range();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u32>() {
            Ok(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(CronError::OutOfRange {
                field,
                value: text.to_owned(),
                min,
                max,
            }),
        };
    }
    let upper = text.to_ascii_uppercase();
    let names: &[&str] = match field {
        CronField::Month => &MONTHS,
        CronField::DayOfWeek => &DAYS,
        _ => &[],
    };
    if let Some(pos) = names.iter().position(|n| *n == upper) {
        let pos = pos as u32;
        return Ok(if field == CronField::Month {
            pos + 1
        } else {
            pos
        });
    }
    let quartz_like = upper == "L"
        || upper == "W"
        || upper == "LW"
        || ((upper.ends_with('L') || upper.ends_with('W'))
            && upper[..upper.len() - 1].bytes().all(|b| b.is_ascii_digit()));
    if quartz_like {
        return Err(CronError::QuartzOnly {
            field,
            token: text.to_owned(),
        });
    }
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(CronError::Syntax {
            field,
            text: text.to_owned(),
        });
    }
    Err(CronError::UnknownName {
        field,
        name: text.to_owned(),
    })
}

/// Expands crontab days of week (0-7, 0 and 7 Sunday) into Quartz numbers (1-7, 1 Sunday).
fn translate_days_of_week(text: &str, items: &[(Base, Option<u32>)]) -> String {
    if text == "*" {
        return "*".to_owned();
    }
    let mut days = [false; 7];
    for (base, step) in items {
        // The crontab values the item walks through, in order; a range whose end is below
        // its start (`FRI-SUN`, `6-0`) wraps past Saturday to Sunday.
        let walk: Vec<u32> = match *base {
            Base::All => (0..=6).collect(),
            Base::Single(v) if step.is_some() => (v..=7).collect(),
            Base::Single(v) => vec![v],
            Base::Range(a, b) if a <= b => (a..=b).collect(),
            Base::Range(a, b) => (a..=6).chain(0..=b).collect(),
        };
        let step = step.unwrap_or(1) as usize;
        for value in walk.into_iter().step_by(step) {
            days[(value % 7) as usize] = true;
        }
    }
    // Quartz numbering: Sunday = 1 ... Saturday = 7, which is crontab day + 1.
    let quartz: Vec<u32> = (0..7u32)
        .filter(|d| days[*d as usize])
        .map(|d| d + 1)
        .collect();
    compress_runs(&quartz)
}

/// Renders sorted numbers as a Quartz list, joining consecutive ones into ranges.
fn compress_runs(values: &[u32]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < values.len() {
        let mut j = i;
        while j + 1 < values.len() && values[j + 1] == values[j] + 1 {
            j += 1;
        }
        if j > i {
            parts.push(format!("{}-{}", values[i], values[j]));
        } else {
            parts.push(values[i].to_string());
        }
        i = j + 1;
    }
    parts.join(",")
}

#[cfg(test)]
#[path = "expr_tests.rs"]
mod tests;
