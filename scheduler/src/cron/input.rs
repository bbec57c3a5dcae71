//! Times typed by people (`vishwa backfill --from`, `vishwa next --after`): RFC 3339 with an
//! offset, or a date or date and time read in the DAG's zone.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use chrono_tz::Tz;
use thiserror::Error;

use super::zone::resolve_local;

/// A time the CLI could not read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "`{text}` is not a time; write RFC 3339 like 2025-03-30T02:00:00+02:00, or YYYY-MM-DD or \
     YYYY-MM-DDTHH:MM[:SS], read in the DAG's zone ({zone})"
)]
pub struct TimeInputError {
    pub text: String,
    pub zone: String,
}

/// Local forms accepted after RFC 3339, read in the zone.
const LOCAL_FORMATS: [&str; 4] = [
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
];

/// Reads `text` as an instant. RFC 3339 (`Z` or an offset) is exact; `YYYY-MM-DD` is midnight
/// and `YYYY-MM-DDTHH:MM[:SS]` that wall-clock time in `tz`, resolved like a schedule's slots
/// (a time skipped by DST means the end of the gap, a repeated one its first occurrence).
pub fn parse_time(text: &str, tz: Tz) -> Result<DateTime<Utc>, TimeInputError> {
    let trimmed = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(trimmed) {
        return Ok(t.with_timezone(&Utc));
    }
    let local = LOCAL_FORMATS
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(trimmed, f).ok())
        .or_else(|| {
            NaiveDate::parse_from_str(trimmed, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        });
    match local {
        Some(local) => Ok(resolve_local(tz, local)),
        None => Err(TimeInputError {
            text: text.to_owned(),
            zone: tz.name().to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kolkata() -> Tz {
        "Asia/Kolkata".parse().expect("zone")
    }

    fn rfc(t: DateTime<Utc>) -> String {
        t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    }

    #[test]
    fn rfc3339_is_exact_whatever_the_zone() {
        let t = parse_time("2025-06-02T02:00:00+05:30", chrono_tz::UTC).unwrap();
        assert_eq!(rfc(t), "2025-06-01T20:30:00Z");
        let z = parse_time("2025-06-01T20:30:00Z", kolkata()).unwrap();
        assert_eq!(z, t);
    }

    #[test]
    fn dates_and_local_times_are_read_in_the_dag_zone() {
        let cases = [
            ("2025-06-02", "2025-06-01T18:30:00Z"),
            ("2025-06-02T02:00", "2025-06-01T20:30:00Z"),
            ("2025-06-02T02:00:30", "2025-06-01T20:30:30Z"),
            ("2025-06-02 02:00", "2025-06-01T20:30:00Z"),
        ];
        for (text, want) in cases {
            assert_eq!(rfc(parse_time(text, kolkata()).unwrap()), want, "{text}");
        }
    }

    #[test]
    fn local_times_across_dst_resolve_like_slots() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let gap = parse_time("2024-03-31T02:30", berlin).unwrap();
        assert_eq!(rfc(gap), "2024-03-31T01:00:00Z");
        let repeated = parse_time("2024-10-27T02:30", berlin).unwrap();
        assert_eq!(rfc(repeated), "2024-10-27T00:30:00Z");
    }

    #[test]
    fn anything_else_is_a_clear_error() {
        for text in ["yesterday", "2025-13-01", "2025-06-02T25:00", "02:00", ""] {
            let e = parse_time(text, kolkata()).unwrap_err();
            let message = e.to_string();
            assert!(message.contains("is not a time"), "{message}");
            assert!(message.contains("Asia/Kolkata"), "{message}");
        }
    }
}
