//! The schedule verbs as a user drives them: `vishwa next` on a file with no scheduler, and
//! `dags`, `pause`, `resume`, `backfill` and `next` against a scheduler and a worker.

mod common;

use std::time::Duration;

use common::{Servers, dags_dir, unique_name, vishwa, wait_until, write_file};
use serde_json::Value;

#[test]
fn next_shows_a_local_file_fire_times_in_its_zone_and_in_utc() {
    let example = dags_dir().join("nightly-retrain");
    let outcome = vishwa(&[
        "next",
        example.to_str().unwrap(),
        "-n",
        "2",
        "--after",
        "2025-06-01T02:00",
    ]);
    outcome.expect_code(0);
    assert_eq!(
        outcome.stdout,
        "nightly-retrain: `0 2 * * *` in Asia/Kolkata (catchup: latest, overlap: skip)\n\
         IN ZONE                    UTC\n\
         2025-06-02T02:00:00+05:30  2025-06-01T20:30:00Z\n\
         2025-06-03T02:00:00+05:30  2025-06-02T20:30:00Z\n"
    );
}

#[test]
fn a_time_that_is_not_one_is_refused_in_one_line() {
    let example = dags_dir().join("nightly-retrain");
    let outcome = vishwa(&["next", example.to_str().unwrap(), "--after", "tomorrow"]);
    outcome.expect_code(2);
    let error = outcome.stderr.trim_end();
    assert_eq!(error.lines().count(), 1, "{outcome}");
    assert!(error.contains("`tomorrow` is not a time"), "{outcome}");
    assert!(error.contains("Asia/Kolkata"), "{outcome}");
}

#[test]
fn pause_resume_and_backfill_a_registered_schedule() {
    let servers = Servers::start();
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("cli-yearly");
    let path = write_file(
        dir.path(),
        "yearly.yaml",
        &format!(
            "name: {name}\nschedule:\n  cron: \"@yearly\"\n  timezone: Europe/Berlin\n\
             stages:\n  - name: night\n    executor: process\n    \
             command: echo \"night $VISHWA_LOGICAL_TIME\"\n"
        ),
    );
    servers.vishwa_ok(&["submit", &path]);

    let dags = servers.vishwa_ok(&["dags"]);
    assert!(dags.stdout.contains("NEXT FIRE (ZONE)"), "{dags}");
    let row = dags.stdout.lines().find(|l| l.starts_with(&name)).unwrap();
    assert!(row.contains("-01-01T00:00:00+01:00"), "{row}");
    assert!(row.contains("-12-31T23:00:00Z"), "{row}");

    let paused = servers.vishwa_ok(&["pause", &name]);
    assert!(
        paused.stdout.starts_with(&format!("paused {name}")),
        "{paused}"
    );
    let again = servers.vishwa_ok(&["pause", &name]);
    assert_eq!(again.stdout, format!("{name} was already paused\n"));
    let dags = servers.vishwa_ok(&["-o", "json", "dags"]);
    let listed: Value = serde_json::from_str(&dags.stdout).unwrap();
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["paused"], true);
    let resumed = servers.vishwa_ok(&["resume", &name, "--skip-missed"]);
    assert!(
        resumed.stdout.starts_with(&format!("resumed {name}\n")),
        "{resumed}"
    );

    // Three yearly slots, 2020 to 2022, midnight in Berlin.
    let range = ["--from", "2020-01-01", "--to", "2022-01-01"];
    let mut args = vec!["backfill", name.as_str()];
    args.extend_from_slice(&range);
    let mut dry = args.clone();
    dry.push("--dry-run");
    let listed = servers.vishwa_ok(&dry);
    assert!(
        listed
            .stdout
            .contains("dry run: 3 slots; would create 3 runs"),
        "{listed}"
    );
    let first = servers.vishwa_ok(&args);
    assert!(first.stdout.contains("created 3 runs"), "{first}");
    let first_run = format!("{name}-20191231T230000Z");
    assert!(first.stdout.contains(&first_run), "{first}");
    let second = servers.vishwa_ok(&args);
    assert!(
        second
            .stdout
            .contains("nothing new: all 3 slots already have runs"),
        "{second}"
    );

    let done = wait_until(Duration::from_secs(30), || {
        let runs = servers.vishwa(&["-o", "json", "runs", "--dag", &name]);
        let runs: Value = serde_json::from_str(&runs.stdout).unwrap_or(Value::Null);
        runs.as_array().is_some_and(|r| {
            r.len() == 3
                && r.iter()
                    .all(|run| run["state"] == "succeeded" && run["trigger"] == "backfill")
        })
    });
    assert!(
        done,
        "the backfilled runs did not all succeed\n{}",
        servers.logs()
    );
    let get = servers.vishwa_ok(&["get", &first_run]);
    assert!(
        get.stdout.contains("logical time 2019-12-31T23:00:00Z"),
        "{get}"
    );
    let logs = servers.vishwa_ok(&["logs", &first_run, "night"]);
    assert_eq!(logs.stdout, "night 2019-12-31T23:00:00+00:00\n");

    let next = servers.vishwa_ok(&["next", &name, "-n", "1", "--after", "2030-06-01"]);
    assert!(
        next.stdout
            .ends_with("2031-01-01T00:00:00+01:00  2030-12-31T23:00:00Z\n"),
        "{next}"
    );
}
