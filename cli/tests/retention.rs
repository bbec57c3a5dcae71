//! Deleting runs through the CLI against a scheduler and a worker running as processes:
//! `vishwa runs delete`, `vishwa runs prune` and the scheduler's `--keep-runs-per-dag` and
//! `--keep-runs`. Deleted runs take their logs, stage records and the outputs no other run
//! uses with them; a run still running is never deleted.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Servers, unique_name, wait_until, write_file};
use serde_json::Value;

/// A DAG of one process stage that writes an output unique to its run; with `sleep`, it
/// takes that many seconds.
fn dag(name: &str) -> String {
    format!(
        r#"name: {name}
params:
  sleep: 0
stages:
  - name: make
    executor: process
    outputs: [out.txt]
    command: 'echo "made by $VISHWA_RUN_ID"; echo "$VISHWA_RUN_ID" > "$VISHWA_OUT/out.txt"; sleep {{{{ params.sleep }}}}'
"#
    )
}

/// The blob file of the run's output.
fn blob_of(servers: &Servers, run: &str) -> PathBuf {
    let list: Value =
        serde_json::from_str(&servers.vishwa_ok(&["-o", "json", "artifacts", run]).stdout).unwrap();
    let digest = list[0]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no output of {run}: {list:#}"))
        .to_owned();
    servers
        .data_dir()
        .join("artifacts/sha256")
        .join(&digest[..2])
        .join(&digest[2..])
}

fn finished_run(servers: &Servers, name: &str) -> String {
    let run = servers
        .vishwa_ok(&["trigger", name])
        .stdout
        .trim()
        .to_owned();
    let finished = wait_until(Duration::from_secs(60), || {
        let get = servers.vishwa(&["-o", "json", "get", &run]);
        let get: Value = serde_json::from_str(&get.stdout).unwrap_or(Value::Null);
        get["state"] == "succeeded"
    });
    assert!(finished, "run {run} did not succeed\n{}", servers.logs());
    run
}

fn run_ids(servers: &Servers, name: &str) -> Vec<String> {
    let runs: Value = serde_json::from_str(
        &servers
            .vishwa_ok(&["-o", "json", "runs", "--dag", name])
            .stdout,
    )
    .unwrap();
    let mut ids: Vec<String> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[test]
fn runs_delete_and_prune_free_logs_and_outputs_and_never_touch_a_running_run() {
    let mut servers = Servers::start();
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("retention");
    let path = write_file(dir.path(), "dag.yaml", &dag(&name));
    servers.vishwa_ok(&["submit", &path]);

    let first = finished_run(&servers, &name);
    let second = finished_run(&servers, &name);
    let third = finished_run(&servers, &name);
    let running = servers
        .vishwa_ok(&["trigger", &name, "-p", "sleep=120"])
        .stdout
        .trim()
        .to_owned();
    let started = wait_until(Duration::from_secs(30), || {
        servers
            .vishwa(&["logs", &running])
            .stdout
            .contains("made by")
    });
    assert!(started, "the long run never started\n{}", servers.logs());
    let first_blob = blob_of(&servers, &first);
    assert!(first_blob.exists());
    assert!(
        servers
            .vishwa_ok(&["logs", &first])
            .stdout
            .contains(&format!("made by {first}"))
    );

    // A running run is refused, by name, and nothing of the call happens.
    let refused = servers.vishwa(&["runs", "delete", &first, &running]);
    assert_ne!(refused.code(), 0, "{refused}");
    assert!(
        refused.stderr.contains(&running) && refused.stderr.contains("still running"),
        "{refused}"
    );
    assert!(servers.vishwa(&["get", &first]).code() == 0);

    // Deleting a finished run takes its record, logs and its output's blob.
    let deleted = servers.vishwa_ok(&["runs", "delete", &first]);
    assert!(
        deleted.stdout.contains(&format!("deleted {first}"))
            && deleted.stdout.contains("1 output file(s)"),
        "{deleted}"
    );
    let gone = servers.vishwa(&["get", &first]);
    assert_ne!(gone.code(), 0, "{gone}");
    assert!(gone.stderr.contains(&first), "{gone}");
    assert_ne!(servers.vishwa(&["logs", &first]).code(), 0);
    assert!(
        !first_blob.exists(),
        "the blob only {first} used is still there"
    );
    assert!(blob_of(&servers, &second).exists());

    // Prune: keep the newest finished run of the DAG; the running one is not counted.
    let pruned = servers.vishwa_ok(&["-o", "json", "runs", "prune", "--keep", "1"]);
    let pruned: Value = serde_json::from_str(&pruned.stdout).unwrap();
    assert_eq!(pruned["deleted"], serde_json::json!([second]), "{pruned:#}");
    let mut left = vec![third.clone(), running.clone()];
    left.sort();
    assert_eq!(run_ids(&servers, &name), left);

    // A usage mistake is refused before anything is asked.
    let bare = servers.vishwa(&["runs", "prune"]);
    assert_eq!(bare.code(), 2, "{bare}");

    // Both calls are in the audit log.
    let audit = servers.vishwa_ok(&["audit"]).stdout;
    assert!(
        audit.contains("DeleteRuns") && audit.contains("PruneRuns"),
        "{audit}"
    );

    // The scheduler's own retention, at start: finished runs older than 1s go, the running
    // one stays.
    std::thread::sleep(Duration::from_millis(1500));
    servers.restart_scheduler_with(&["--keep-runs", "1s"]);
    let applied = wait_until(Duration::from_secs(30), || {
        run_ids(&servers, &name) == [running.clone()]
    });
    assert!(
        applied,
        "runs left: {:?}\n{}",
        run_ids(&servers, &name),
        servers.logs()
    );
    servers.vishwa_ok(&["cancel", &running]);
}
