//! The client verbs against a scheduler and a worker running as separate processes, as a
//! user drives them: submit, dags, trigger (with --watch), runs, get, logs and cancel.

mod common;

use std::time::Duration;

use common::{
    Background, Servers, assert_no_containers_of_run, ensure_busybox_image, unique_name, vishwa,
    wait_until, wait_until_no_containers_of_run, write_file,
};
use serde_json::Value;

/// Whether a table in `stdout` has a row whose first cells are `cells`.
fn has_row(stdout: &str, cells: &[&str]) -> bool {
    stdout.lines().any(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        words.len() >= cells.len() && words[..cells.len()] == *cells
    })
}

/// A DAG that succeeds: a Docker stage, then a process stage on the worker's host.
fn succeeding_dag(name: &str) -> String {
    format!(
        r#"name: {name}
defaults:
  image: vishwa-test/busybox:1
stages:
  - name: prepare
    command: echo "preparing for $VISHWA_DAG"
  - name: finish
    needs: [prepare]
    executor: process
    command: echo "finished on the worker host"
"#
    )
}

#[test]
fn submit_registers_a_dag_once_and_dags_lists_it() {
    ensure_busybox_image();
    let servers = Servers::start();
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("cli-submit");
    let path = write_file(dir.path(), "dag.yaml", &succeeding_dag(&name));

    let first = servers.vishwa_ok(&["submit", &path]);
    assert!(
        first
            .stdout
            .starts_with(&format!("registered {name} version ")),
        "{first}"
    );
    let again = servers.vishwa_ok(&["submit", &path]);
    assert!(
        again
            .stdout
            .starts_with(&format!("{name} is unchanged (version ")),
        "{again}"
    );

    let dags = servers.vishwa_ok(&["dags"]);
    assert!(dags.stdout.starts_with("NAME"), "{dags}");
    assert!(has_row(&dags.stdout, &[&name]), "{dags}");
    let json = servers.vishwa_ok(&["-o", "json", "dags"]);
    let listed: Value = serde_json::from_str(&json.stdout).unwrap();
    let dag = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name.as_str())
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(dag["stages"], 2);
    assert_eq!(dag["last_run"], Value::Null);
    let version = dag["version"].as_str().unwrap().to_owned();

    // A changed file is a new version.
    let changed = succeeding_dag(&name).replace(
        "defaults:",
        "description: the same DAG, described\ndefaults:",
    );
    let path = write_file(dir.path(), "dag.yaml", &changed);
    let update = servers.vishwa_ok(&["-o", "json", "submit", &path]);
    let update: Value = serde_json::from_str(&update.stdout).unwrap();
    assert_eq!(update["changed"], true);
    assert_ne!(update["dag"]["version"], version.as_str());
}

#[test]
fn trigger_watch_exits_with_the_outcome_and_runs_get_and_logs_show_the_runs() {
    ensure_busybox_image();
    let servers = Servers::start();
    let dir = tempfile::tempdir().unwrap();
    let ok = unique_name("cli-ok");
    let failing = unique_name("cli-failing");
    let ok_path = write_file(dir.path(), "ok.yaml", &succeeding_dag(&ok));
    let failing_path = write_file(
        dir.path(),
        "failing.yaml",
        &format!(
            r#"name: {failing}
stages:
  - name: boom
    image: vishwa-test/busybox:1
    command: echo "about to fail" >&2; exit 5
"#
        ),
    );
    servers.vishwa_ok(&["submit", &ok_path]);
    servers.vishwa_ok(&["submit", &failing_path]);

    // Bad input the scheduler refuses exits 2, as the README says (issue 10).
    let unknown = servers.vishwa(&["trigger", &ok, "-p", "nope=1"]);
    assert_eq!(unknown.code(), 2, "{unknown}");
    assert!(unknown.stderr.contains("unknown param `nope`"), "{unknown}");
    let long_name = servers.vishwa(&["trigger", &"a".repeat(10_000)]);
    assert_eq!(long_name.code(), 2, "{long_name}");
    assert!(long_name.stderr.contains("at most 128"), "{long_name}");
    let big = format!("x={}", "v".repeat(100 << 10));
    let big_param = servers.vishwa(&["trigger", &ok, "-p", &big]);
    assert_eq!(big_param.code(), 2, "{big_param}");
    assert!(
        big_param.stderr.contains("param `x` is 102400 bytes"),
        "{big_param}"
    );

    // --watch follows the run to its end; the exit code is its outcome.
    let watched = servers.vishwa(&["trigger", &ok, "--watch"]);
    assert_eq!(watched.code(), 0, "{watched}\n{}", servers.logs());
    let first = watched.stdout.lines().next().unwrap_or_default();
    let ok_run = first
        .strip_prefix("run ")
        .and_then(|rest| rest.strip_suffix(" (2 stages)"))
        .unwrap_or_else(|| panic!("first line: {watched}"))
        .to_owned();
    assert!(
        watched
            .stdout
            .lines()
            .last()
            .is_some_and(|l| l.starts_with(&format!("run {ok_run} succeeded in "))),
        "{watched}"
    );
    let failed = servers.vishwa(&["trigger", &failing, "--watch"]);
    assert_eq!(failed.code(), 1, "{failed}\n{}", servers.logs());
    let fail_run = failed.stdout.split_whitespace().nth(1).unwrap().to_owned();
    assert!(
        failed
            .stdout
            .contains(&format!("run {fail_run} failed in ")),
        "{failed}"
    );

    // runs: newest first, with states; filtered by DAG; as JSON.
    let runs = servers.vishwa_ok(&["runs"]);
    assert!(
        has_row(&runs.stdout, &[&ok_run, &ok, "succeeded", "manual"]),
        "{runs}"
    );
    assert!(
        has_row(&runs.stdout, &[&fail_run, &failing, "failed", "manual"]),
        "{runs}"
    );
    let only_ok = servers.vishwa(&["runs", "--dag", &ok]);
    assert!(
        only_ok.stdout.contains(&ok_run) && !only_ok.stdout.contains(&fail_run),
        "{only_ok}"
    );
    let json = servers.vishwa_ok(&["-o", "json", "runs", "--state", "failed"]);
    let failed_runs: Value = serde_json::from_str(&json.stdout).unwrap();
    let ids: Vec<&str> = failed_runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [fail_run.as_str()], "{json}");

    // get: the stages with their states, workers and exit codes.
    let get = servers.vishwa_ok(&["get", &ok_run]);
    assert!(
        get.stdout.starts_with(&format!("run {ok_run}  succeeded")),
        "{get}"
    );
    assert!(
        has_row(&get.stdout, &["prepare", "succeeded", "1", "w1"]),
        "{get}"
    );
    assert!(
        has_row(&get.stdout, &["finish", "succeeded", "1", "w1"]),
        "{get}"
    );
    let get_failed = servers.vishwa_ok(&["get", &fail_run]);
    assert!(
        has_row(&get_failed.stdout, &["boom", "failed", "1", "w1"]),
        "{get_failed}"
    );
    assert!(
        get_failed.stdout.contains("exited with code 5"),
        "{get_failed}"
    );
    let json = servers.vishwa(&["-o", "json", "get", &fail_run]);
    let run: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(run["state"], "failed", "{json}");
    assert_eq!(run["stages"][0]["attempts"][0]["exit_code"], 5, "{json}");

    // logs: every stage prefixed with its name, or one stage's raw output.
    let logs = servers.vishwa_ok(&["logs", &ok_run]);
    assert!(
        logs.stdout
            .contains(&format!("prepare | preparing for {ok}\n")),
        "{logs}"
    );
    assert!(
        logs.stdout
            .contains("finish | finished on the worker host\n"),
        "{logs}"
    );
    let one = servers.vishwa_ok(&["logs", &ok_run, "prepare"]);
    assert_eq!(one.stdout, format!("preparing for {ok}\n"), "{one}");
    let stderr = servers.vishwa_ok(&["logs", &fail_run, "boom"]);
    assert_eq!(stderr.stdout, "about to fail\n", "{stderr}");
    let unknown_stage = servers.vishwa(&["logs", &ok_run, "no-such-stage"]);
    assert_ne!(unknown_stage.code(), 0, "{unknown_stage}");
    assert!(
        unknown_stage.stderr.contains("prepare"),
        "names the stages: {unknown_stage}"
    );

    // dags: the last run of each.
    let dags = servers.vishwa(&["dags"]);
    assert!(
        dags.stdout
            .lines()
            .any(|l| l.starts_with(&ok) && l.trim_end().ends_with("succeeded")),
        "{dags}"
    );

    assert_no_containers_of_run(&ok_run);
    assert_no_containers_of_run(&fail_run);

    // Without --watch, trigger prints the run id and returns at once.
    let quick = servers.vishwa_ok(&["trigger", &ok]);
    let quick_run = quick.stdout.trim();
    assert!(
        quick_run.starts_with(&format!("{ok}-")) && !quick_run.contains(' '),
        "{quick}"
    );
}

#[test]
fn cancel_stops_a_long_running_run() {
    ensure_busybox_image();
    let servers = Servers::start();
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("cli-long");
    let path = write_file(
        dir.path(),
        "long.yaml",
        &format!(
            r#"name: {name}
defaults:
  image: vishwa-test/busybox:1
stages:
  - name: sleeper
    command: [sleep, "300"]
  - name: after-sleeper
    needs: [sleeper]
    command: echo "must not run"
"#
        ),
    );
    servers.vishwa_ok(&["submit", &path]);
    // Someone watches the run, someone follows its logs, someone else cancels it.
    let watch = Background::start(&["--server", &servers.url, "trigger", &name, "--watch"]);
    let announced = wait_until(Duration::from_secs(10), || watch.stdout().contains('\n'));
    assert!(announced, "trigger --watch printed nothing");
    let run = watch
        .stdout()
        .split_whitespace()
        .nth(1)
        .expect("`run <id> (<n> stages)`")
        .to_owned();

    let running = wait_until(Duration::from_secs(30), || {
        let get = servers.vishwa(&["-o", "json", "get", &run]);
        serde_json::from_str::<Value>(&get.stdout)
            .is_ok_and(|r| r["stages"][0]["state"] == "running")
    });
    assert!(running, "the sleeper never ran\n{}", servers.logs());
    let follow = Background::start(&["--server", &servers.url, "logs", &run, "-f"]);
    let follow_sleeper =
        Background::start(&["--server", &servers.url, "logs", &run, "sleeper", "-f"]);

    let cancel = servers.vishwa_ok(&["cancel", &run]);
    assert_eq!(cancel.stdout, format!("{run} cancelled\n"), "{cancel}");
    assert!(
        wait_until_no_containers_of_run(&run, Duration::from_secs(5)),
        "the sleeper's container is still there 5s after `vishwa cancel`"
    );
    let watched = watch.finish(Duration::from_secs(10));
    watched.expect_code(3);
    assert!(
        watched.stdout.contains(&format!("run {run} cancelled")),
        "{watched}"
    );
    follow.finish(Duration::from_secs(10)).expect_code(0);
    follow_sleeper
        .finish(Duration::from_secs(10))
        .expect_code(0);

    let get = servers.vishwa_ok(&["get", &run]);
    assert!(
        get.stdout.starts_with(&format!("run {run}  cancelled")),
        "{get}"
    );
    assert!(has_row(&get.stdout, &["sleeper", "cancelled"]), "{get}");
    assert!(
        has_row(&get.stdout, &["after-sleeper", "cancelled"]),
        "{get}"
    );

    let again = servers.vishwa(&["cancel", &run]);
    assert_eq!(again.code(), 1, "{again}");
    assert_eq!(again.stderr.trim_end().lines().count(), 1, "{again}");
    assert!(again.stderr.contains("already cancelled"), "{again}");
}

#[test]
fn unknown_run_ids_fail_with_one_clear_line() {
    let servers = Servers::start();
    for verb in [
        vec!["get", "no-such-run"],
        vec!["logs", "no-such-run"],
        vec!["cancel", "no-such-run"],
        vec!["trigger", "no-such-dag"],
    ] {
        let outcome = servers.vishwa(&verb);
        assert_ne!(outcome.code(), 0, "{outcome}");
        let error = outcome.stderr.trim_end();
        assert_eq!(error.lines().count(), 1, "one line: {outcome}");
        assert!(error.contains(verb[1]), "names what is missing: {outcome}");
        assert_eq!(outcome.stdout, "", "{outcome}");
    }
}

#[test]
fn client_verbs_without_a_scheduler_fail_with_one_line_saying_so() {
    // A port nothing listens on: bound, then released.
    let server = format!(
        "http://{}",
        vishwa_integration_tests::net::free_local_addr()
    );
    let outcome = vishwa(&["--server", &server, "runs"]);
    assert_eq!(outcome.code(), 1, "{outcome}");
    let error = outcome.stderr.trim_end();
    assert_eq!(error.lines().count(), 1, "{outcome}");
    assert!(error.contains("cannot reach the scheduler"), "{outcome}");
}

#[test]
fn a_stopped_worker_stops_its_container_and_another_worker_finishes_the_stage() {
    ensure_busybox_image();
    let mut servers = Servers::start();
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("cli-handover");
    let path = write_file(
        dir.path(),
        "handover.yaml",
        &format!(
            r#"name: {name}
stages:
  - name: patient
    image: vishwa-test/busybox:1
    command: echo "attempt $VISHWA_ATTEMPT"; test "$VISHWA_ATTEMPT" -gt 1 || sleep 300
"#
        ),
    );
    servers.vishwa_ok(&["submit", &path]);
    let triggered = servers.vishwa_ok(&["trigger", &name]);
    let run = triggered.stdout.trim().to_owned();
    let get_json = |servers: &Servers| -> Value {
        let get = servers.vishwa(&["-o", "json", "get", &run]);
        serde_json::from_str(&get.stdout).unwrap_or(Value::Null)
    };
    let running = wait_until(Duration::from_secs(30), || {
        get_json(&servers)["stages"][0]["state"] == "running"
    });
    assert!(
        running,
        "the stage never ran\n{}\n{}",
        servers.vishwa(&["get", &run]),
        servers.logs()
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            common::running_containers_of_run(&run) == 1
                && servers.vishwa(&["logs", &run, "patient"]).stdout == "attempt 1\n"
        }),
        "the stage's container never ran and wrote"
    );

    // SIGTERM: the worker stops what it runs and hands it back before it exits.
    let status = servers.stop_worker("w1");
    assert!(
        status.success(),
        "the worker exited with {status}\n{}",
        servers.logs()
    );
    assert!(
        wait_until_no_containers_of_run(&run, Duration::from_secs(5)),
        "the stopped worker left its container behind"
    );
    let stage = &get_json(&servers)["stages"][0];
    assert_eq!(
        stage["state"], "queued",
        "the stage waits for a worker: {stage}"
    );
    assert_eq!(stage["attempts"][0]["outcome"], "cancelled", "{stage}");

    servers.start_worker("w2");
    let finished = wait_until(Duration::from_secs(30), || {
        get_json(&servers)["state"] == "succeeded"
    });
    let run_json = get_json(&servers);
    assert!(finished, "{run_json:#}\n{}", servers.logs());
    let attempts = run_json["stages"][0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{run_json:#}");
    assert_eq!(attempts[1]["worker"], "w2", "{run_json:#}");
    let logs = servers.vishwa(&["logs", &run, "patient"]);
    // Both attempts' output, with Vishwa's own note on why the first one stopped.
    assert_eq!(
        logs.stdout, "attempt 1\ncancelled; stopping the container\nattempt 2\n",
        "{logs}"
    );
}

#[test]
fn a_scheduler_killed_mid_run_resumes_it_and_keeps_the_output_written_meanwhile() {
    ensure_busybox_image();
    let mut servers = Servers::start();
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("cli-survive");
    let path = write_file(
        dir.path(),
        "survive.yaml",
        &format!(
            r#"name: {name}
defaults:
  image: vishwa-test/busybox:1
stages:
  - name: slow
    command: echo "before"; sleep 3; echo "after"
  - name: next
    needs: [slow]
    command: echo "next"
"#
        ),
    );
    servers.vishwa_ok(&["submit", &path]);
    let triggered = servers.vishwa_ok(&["trigger", &name]);
    let run = triggered.stdout.trim().to_owned();
    let started = wait_until(Duration::from_secs(30), || {
        servers.vishwa(&["logs", &run, "slow"]).stdout == "before\n"
    });
    assert!(started, "the slow stage never wrote\n{}", servers.logs());

    servers.kill_scheduler();
    servers.restart_scheduler();

    let get_json = |servers: &Servers| -> Value {
        let get = servers.vishwa(&["-o", "json", "get", &run]);
        serde_json::from_str(&get.stdout).unwrap_or(Value::Null)
    };
    let finished = wait_until(Duration::from_secs(30), || {
        get_json(&servers)["finished"] != Value::Null
    });
    let run_json = get_json(&servers);
    assert!(finished, "{run_json:#}\n{}", servers.logs());
    assert_eq!(
        run_json["state"],
        "succeeded",
        "{run_json:#}\n{}",
        servers.logs()
    );
    assert_eq!(
        run_json["stages"][0]["attempts"].as_array().unwrap().len(),
        1,
        "the worker kept running the stage through the restart: {run_json:#}"
    );
    let slow = servers.vishwa(&["logs", &run, "slow"]);
    assert_eq!(
        slow.stdout,
        "before\nafter\n",
        "output written while the scheduler was away is kept\n{}",
        servers.logs()
    );
    assert_eq!(servers.vishwa(&["logs", &run, "next"]).stdout, "next\n");
    assert_no_containers_of_run(&run);
}

/// Issue 10: a scheduler that accepts connections but never answers (here a socket nobody
/// reads) does not hang the CLI: the call gives up after --timeout and says why.
#[test]
fn a_scheduler_that_never_answers_fails_the_call_after_the_timeout() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = format!("http://{}", silent.local_addr().unwrap());
    let outcome = vishwa(&["--server", &server, "--timeout", "2s", "runs"]);
    assert_ne!(outcome.code(), 0, "{outcome}");
    assert!(
        outcome
            .stderr
            .contains("did not answer within 2s (--timeout)"),
        "{outcome}"
    );
    drop(silent);
}
