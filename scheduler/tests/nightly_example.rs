//! The nightly retraining example under `dags/` parses and fires at 02:00 Asia/Kolkata.

use chrono::DateTime;
use vishwa_scheduler::cron::{format_in_zone, format_utc, next_fire_ms, slot_run_id};
use vishwa_scheduler::dag::parse_dag;

#[test]
fn the_nightly_example_fires_at_two_in_the_morning_kolkata_time() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dags/nightly-retrain/dag.yaml"
    );
    let source = std::fs::read_to_string(path).expect("the example exists");
    let dag = parse_dag(&source, path).unwrap_or_else(|e| panic!("{e}"));
    let schedule = dag.schedule.expect("the example is scheduled");
    assert_eq!(schedule.timezone.name(), "Asia/Kolkata");
    let after = DateTime::parse_from_rfc3339("2025-06-01T12:00:00Z")
        .unwrap()
        .timestamp_millis();
    let slot = next_fire_ms(&schedule.expression, schedule.timezone, after).unwrap();
    assert_eq!(
        format_in_zone(slot, schedule.timezone),
        "2025-06-02T02:00:00+05:30"
    );
    assert_eq!(format_utc(slot), "2025-06-01T20:30:00Z");
    assert_eq!(
        slot_run_id("nightly-retrain", slot).as_str(),
        "nightly-retrain-20250601T203000Z"
    );
    let uses_logical_time = dag
        .stages
        .iter()
        .all(|s| format!("{:?}", s.command).contains("run.logical_time"));
    assert!(
        uses_logical_time,
        "every stage reads its night from the logical time"
    );
}
