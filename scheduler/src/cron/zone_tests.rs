//! Fire times around daylight-saving transitions, with explicit instants.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

use super::*;

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("bad test instant {text}: {e}"))
        .with_timezone(&Utc)
}

fn tz(name: &str) -> Tz {
    name.parse().expect("known zone")
}

/// The next `count` fire times of `cron` in `zone` after `after`, as UTC RFC 3339.
fn fires(cron: &str, zone: &str, after: &str, count: usize) -> Vec<String> {
    let expr = CronExpr::parse(cron).expect("valid expression");
    let mut at = utc(after);
    let mut out = Vec::new();
    for _ in 0..count {
        at = next_fire(&expr, tz(zone), at).expect("fires again");
        out.push(format_utc(at.timestamp_millis()));
    }
    out
}

#[test]
fn berlin_spring_forward_fires_a_skipped_time_once_at_the_end_of_the_gap() {
    // 2024-03-31: 02:00 CET becomes 03:00 CEST (01:00Z); 02:30 does not exist.
    assert_eq!(
        fires("30 2 * * *", "Europe/Berlin", "2024-03-29T12:00:00Z", 3),
        [
            "2024-03-30T01:30:00Z", // 02:30 CET
            "2024-03-31T01:00:00Z", // 03:00 CEST, the first instant after the gap
            "2024-04-01T00:30:00Z", // 02:30 CEST
        ]
    );
    // Every slot inside the gap lands on the same instant: one fire, not four.
    assert_eq!(
        fires("*/15 2 * * *", "Europe/Berlin", "2024-03-31T00:00:00Z", 2),
        ["2024-03-31T01:00:00Z", "2024-04-01T00:00:00Z"]
    );
}

#[test]
fn berlin_fall_back_fires_a_repeated_time_once_at_its_first_occurrence() {
    // 2024-10-27: 03:00 CEST becomes 02:00 CET (01:00Z); 02:30 happens twice.
    assert_eq!(
        fires("30 2 * * *", "Europe/Berlin", "2024-10-26T12:00:00Z", 2),
        ["2024-10-27T00:30:00Z", "2024-10-28T01:30:00Z"]
    );
}

#[test]
fn new_york_spring_forward() {
    // 2024-03-10: 02:00 EST becomes 03:00 EDT (07:00Z).
    assert_eq!(
        fires("30 2 * * *", "America/New_York", "2024-03-09T12:00:00Z", 3),
        [
            "2024-03-10T07:00:00Z",
            "2024-03-11T06:30:00Z",
            "2024-03-12T06:30:00Z"
        ]
    );
    assert_eq!(
        fires("0 * * * *", "America/New_York", "2024-03-10T05:30:00Z", 3),
        [
            "2024-03-10T06:00:00Z", // 01:00 EST
            "2024-03-10T07:00:00Z", // 02:00 does not exist; 03:00 EDT fires once
            "2024-03-10T08:00:00Z", // 04:00 EDT
        ]
    );
}

#[test]
fn new_york_fall_back_does_not_fire_in_the_second_pass() {
    // 2024-11-03: 02:00 EDT becomes 01:00 EST (06:00Z); 01:00-01:59 happens twice.
    assert_eq!(
        fires("30 1 * * *", "America/New_York", "2024-11-02T12:00:00Z", 2),
        ["2024-11-03T05:30:00Z", "2024-11-04T06:30:00Z"]
    );
    assert_eq!(
        fires(
            "*/15 1 * * *",
            "America/New_York",
            "2024-11-03T04:00:00Z",
            5
        ),
        [
            "2024-11-03T05:00:00Z",
            "2024-11-03T05:15:00Z",
            "2024-11-03T05:30:00Z",
            "2024-11-03T05:45:00Z",
            "2024-11-04T06:00:00Z", // the next day: 01:00-01:45 EST fired nothing
        ]
    );
    // Asked from inside the second pass, the next fire is past it.
    assert_eq!(
        fires(
            "*/15 1 * * *",
            "America/New_York",
            "2024-11-03T06:10:00Z",
            1
        ),
        ["2024-11-04T06:00:00Z"]
    );
    assert_eq!(
        fires("0 * * * *", "America/New_York", "2024-11-03T04:30:00Z", 3),
        [
            "2024-11-03T05:00:00Z", // 01:00 EDT
            "2024-11-03T07:00:00Z", // 01:00 EST is the repeat; next is 02:00 EST
            "2024-11-03T08:00:00Z",
        ]
    );
    // A per-second schedule is silent for the repeated hour.
    assert_eq!(
        fires("* * * * * *", "America/New_York", "2024-11-03T05:59:58Z", 3),
        [
            "2024-11-03T05:59:59Z",
            "2024-11-03T07:00:00Z",
            "2024-11-03T07:00:01Z"
        ]
    );
}

#[test]
fn kolkata_has_no_transitions() {
    // 02:00 IST is 20:30Z the day before, all year round.
    assert_eq!(
        fires("0 2 * * *", "Asia/Kolkata", "2024-03-09T00:00:00Z", 3),
        [
            "2024-03-09T20:30:00Z",
            "2024-03-10T20:30:00Z",
            "2024-03-11T20:30:00Z"
        ]
    );
    assert_eq!(
        fires("0 2 * * *", "Asia/Kolkata", "2024-11-02T00:00:00Z", 2),
        ["2024-11-02T20:30:00Z", "2024-11-03T20:30:00Z"]
    );
}

#[test]
fn lord_howe_half_hour_spring_forward() {
    // 2024-10-06: 02:00 LHST (+10:30) becomes 02:30 LHDT (+11) at 15:30Z the day before.
    assert_eq!(
        fires(
            "0 2 * * *",
            "Australia/Lord_Howe",
            "2024-10-04T12:00:00Z",
            3
        ),
        [
            "2024-10-04T15:30:00Z", // 02:00 +10:30
            "2024-10-05T15:30:00Z", // 02:00 does not exist: 02:30 +11
            "2024-10-06T15:00:00Z", // 02:00 +11
        ]
    );
    assert_eq!(
        fires(
            "15 2 * * *",
            "Australia/Lord_Howe",
            "2024-10-05T12:00:00Z",
            1
        ),
        ["2024-10-05T15:30:00Z"]
    );
}

#[test]
fn lord_howe_half_hour_fall_back() {
    // 2024-04-07: 02:00 LHDT (+11) becomes 01:30 LHST (+10:30) at 15:00Z the day before;
    // 01:30-01:59 happens twice, 02:00 once.
    assert_eq!(
        fires(
            "0 2 * * *",
            "Australia/Lord_Howe",
            "2024-04-05T12:00:00Z",
            3
        ),
        [
            "2024-04-05T15:00:00Z", // 02:00 +11
            "2024-04-06T15:30:00Z", // 02:00 +10:30, after the repeat
            "2024-04-07T15:30:00Z",
        ]
    );
    assert_eq!(
        fires(
            "45 1 * * *",
            "Australia/Lord_Howe",
            "2024-04-06T12:00:00Z",
            2
        ),
        ["2024-04-06T14:45:00Z", "2024-04-07T15:15:00Z"]
    );
}

#[test]
fn a_skipped_day_resolves_to_the_next_valid_instant() {
    // Samoa skipped 2011-12-30 entirely when it crossed the date line.
    assert_eq!(
        fires("0 12 * * *", "Pacific/Apia", "2011-12-29T12:00:00Z", 3),
        [
            "2011-12-29T22:00:00Z", // 12:00 on the 29th, -10
            "2011-12-30T10:00:00Z", // the 30th never happened: midnight on the 31st, +14
            "2011-12-30T22:00:00Z", // 12:00 on the 31st, +14
        ]
    );
}

#[test]
fn resolution_never_moves_backwards() {
    let zone = tz("America/New_York");
    let day = NaiveDate::from_ymd_opt(2024, 11, 3).expect("date");
    let mut last = None;
    for minute in 0..(4 * 60) {
        let local = day.and_hms_opt(minute / 60, minute % 60, 0).expect("time");
        let at = resolve_local(zone, local);
        if let Some(previous) = last {
            assert!(
                at > previous,
                "{local} resolved to {at}, not after {previous}"
            );
        }
        last = Some(at);
    }
}

#[test]
fn fire_times_are_strictly_after_the_starting_instant() {
    let expr = CronExpr::parse("0 2 * * *").expect("valid");
    let slot = utc("2024-03-09T20:30:00Z");
    let kolkata = tz("Asia/Kolkata");
    assert_eq!(
        next_fire(&expr, kolkata, slot - chrono::Duration::milliseconds(1)),
        Some(slot)
    );
    assert_eq!(
        next_fire(&expr, kolkata, slot),
        Some(utc("2024-03-10T20:30:00Z"))
    );
}

#[test]
fn instants_render_in_the_zone_and_in_utc() {
    let ms = utc("2024-03-09T20:30:00Z").timestamp_millis();
    assert_eq!(
        format_in_zone(ms, tz("Asia/Kolkata")),
        "2024-03-10T02:00:00+05:30"
    );
    assert_eq!(format_utc(ms), "2024-03-09T20:30:00Z");
}
