//! Due slots after downtime under each catch-up policy, slot ranges and slot run ids.

use chrono::DateTime;

use super::*;

fn ms(text: &str) -> Millis {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("bad test instant {text}: {e}"))
        .timestamp_millis()
}

fn utc_tz() -> Tz {
    chrono_tz::UTC
}

fn hourly() -> CronExpr {
    CronExpr::parse("0 * * * *").expect("valid")
}

#[test]
fn run_ids_are_the_dag_and_the_slot_in_utc() {
    assert_eq!(
        slot_run_id("nightly-retrain", ms("2025-06-01T20:30:00Z")).as_str(),
        "nightly-retrain-20250601T203000Z"
    );
    assert_eq!(
        slot_run_id("x", ms("2025-06-02T02:00:00+05:30")).as_str(),
        "x-20250601T203000Z"
    );
}

#[test]
fn slots_between_excludes_the_start_and_includes_the_end() {
    let slots = slots_between(
        &hourly(),
        utc_tz(),
        ms("2025-01-01T10:00:00Z"),
        ms("2025-01-01T13:00:00Z"),
        100,
    );
    assert_eq!(
        slots,
        [
            ms("2025-01-01T11:00:00Z"),
            ms("2025-01-01T12:00:00Z"),
            ms("2025-01-01T13:00:00Z")
        ]
    );
    let limited = slots_between(
        &hourly(),
        utc_tz(),
        ms("2025-01-01T10:00:00Z"),
        ms("2025-01-01T13:00:00Z"),
        2,
    );
    assert_eq!(limited.len(), 2);
}

#[test]
fn downtime_with_catchup_all_fires_every_missed_slot_in_order() {
    let due = due_slots(
        &hourly(),
        utc_tz(),
        Catchup::All,
        ms("2025-01-01T10:00:00Z"),
        ms("2025-01-01T13:30:00Z"),
        1000,
    );
    assert_eq!(
        due.fire,
        [
            ms("2025-01-01T11:00:00Z"),
            ms("2025-01-01T12:00:00Z"),
            ms("2025-01-01T13:00:00Z")
        ]
    );
    assert_eq!(due.cursor, ms("2025-01-01T13:00:00Z"));
    assert_eq!(due.passed_over, None);
}

#[test]
fn catchup_all_over_a_long_downtime_comes_in_bounded_steps() {
    let every_second = CronExpr::parse("* * * * * *").expect("valid");
    let start = ms("2025-01-01T00:00:00Z");
    let now = start + 86_400_000;
    let first = due_slots(&every_second, utc_tz(), Catchup::All, start, now, 1000);
    assert_eq!(first.fire.len(), 1000);
    assert_eq!(first.cursor, start + 1_000_000);
    let second = due_slots(
        &every_second,
        utc_tz(),
        Catchup::All,
        first.cursor,
        now,
        1000,
    );
    assert_eq!(second.fire[0], start + 1_001_000);
}

#[test]
fn downtime_with_catchup_latest_fires_only_the_most_recent_slot() {
    let due = due_slots(
        &hourly(),
        utc_tz(),
        Catchup::Latest,
        ms("2025-01-01T10:00:00Z"),
        ms("2025-01-01T13:30:00Z"),
        1000,
    );
    assert_eq!(due.fire, [ms("2025-01-01T13:00:00Z")]);
    assert_eq!(due.cursor, ms("2025-01-01T13:00:00Z"));
    assert_eq!(
        due.passed_over,
        Some((ms("2025-01-01T11:00:00Z"), ms("2025-01-01T12:00:00Z")))
    );
}

#[test]
fn downtime_with_catchup_none_passes_over_late_slots() {
    let due = due_slots(
        &hourly(),
        utc_tz(),
        Catchup::None,
        ms("2025-01-01T10:00:00Z"),
        ms("2025-01-01T13:30:00Z"),
        1000,
    );
    assert!(due.fire.is_empty());
    assert_eq!(due.cursor, ms("2025-01-01T13:00:00Z"));
    assert_eq!(
        due.passed_over,
        Some((ms("2025-01-01T11:00:00Z"), ms("2025-01-01T13:00:00Z")))
    );
    // The slot that is due right now is not "missed": it fires.
    let on_time = due_slots(
        &hourly(),
        utc_tz(),
        Catchup::None,
        ms("2025-01-01T10:00:00Z"),
        ms("2025-01-01T13:00:00.250Z"),
        1000,
    );
    assert_eq!(on_time.fire, [ms("2025-01-01T13:00:00Z")]);
}

#[test]
fn every_policy_fires_a_slot_that_is_on_time() {
    for catchup in [Catchup::None, Catchup::Latest, Catchup::All] {
        let due = due_slots(
            &hourly(),
            utc_tz(),
            catchup,
            ms("2025-01-01T12:00:00Z"),
            ms("2025-01-01T13:00:00.004Z"),
            1000,
        );
        assert_eq!(due.fire, [ms("2025-01-01T13:00:00Z")], "{catchup:?}");
        assert_eq!(due.passed_over, None, "{catchup:?}");
    }
}

#[test]
fn nothing_is_due_before_the_next_slot() {
    let due = due_slots(
        &hourly(),
        utc_tz(),
        Catchup::Latest,
        ms("2025-01-01T12:00:00Z"),
        ms("2025-01-01T12:59:59.999Z"),
        1000,
    );
    assert!(due.fire.is_empty());
    assert_eq!(due.cursor, ms("2025-01-01T12:00:00Z"));
}

#[test]
fn the_latest_slot_of_a_sparse_schedule_is_found_years_back() {
    let yearly = CronExpr::parse("@yearly").expect("valid");
    assert_eq!(
        latest_slot(
            &yearly,
            utc_tz(),
            ms("2019-06-01T00:00:00Z"),
            ms("2024-06-01T00:00:00Z")
        ),
        Some(ms("2024-01-01T00:00:00Z"))
    );
    assert_eq!(
        latest_slot(
            &yearly,
            utc_tz(),
            ms("2024-02-01T00:00:00Z"),
            ms("2024-06-01T00:00:00Z")
        ),
        None
    );
}

#[test]
fn catchup_latest_after_a_long_downtime_of_a_per_second_schedule_is_cheap() {
    let every_second = CronExpr::parse("* * * * * *").expect("valid");
    let start = ms("2025-01-01T00:00:00Z");
    let now = start + 30 * 86_400_000 + 500;
    let begun = std::time::Instant::now();
    let due = due_slots(&every_second, utc_tz(), Catchup::Latest, start, now, 1000);
    assert_eq!(due.fire, [start + 30 * 86_400_000]);
    // A hang guard: walking 2.6 million missed slots one by one would take far longer.
    assert!(begun.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn catchup_in_a_zone_uses_the_zone_slots() {
    // 02:00 Kolkata is 20:30Z; a scheduler down from the 1st to the 4th (UTC) misses three.
    let expr = CronExpr::parse("0 2 * * *").expect("valid");
    let kolkata: Tz = "Asia/Kolkata".parse().expect("zone");
    let due = due_slots(
        &expr,
        kolkata,
        Catchup::All,
        ms("2025-06-01T00:00:00Z"),
        ms("2025-06-04T00:00:00Z"),
        1000,
    );
    assert_eq!(
        due.fire,
        [
            ms("2025-06-01T20:30:00Z"),
            ms("2025-06-02T20:30:00Z"),
            ms("2025-06-03T20:30:00Z")
        ]
    );
}
