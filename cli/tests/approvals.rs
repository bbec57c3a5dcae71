//! `vishwa approve` and `vishwa reject` as a user drives them against a scheduler and a
//! worker running as separate processes: `get` shows the waiting stage with its message,
//! approve lets it run, reject fails it with the reason, a finished run is refused in one
//! line.

mod common;

use std::time::Duration;

use common::{Servers, ensure_busybox_image, unique_name, wait_until, write_file};
use serde_json::Value;

fn stage_state(servers: &Servers, run: &str, stage: &str) -> String {
    let get = servers.vishwa(&["-o", "json", "get", run]);
    serde_json::from_str::<Value>(&get.stdout)
        .ok()
        .and_then(|r| {
            r["stages"]
                .as_array()?
                .iter()
                .find(|s| s["name"] == stage)
                .map(|s| s["state"].as_str().unwrap_or_default().to_owned())
        })
        .unwrap_or_default()
}

#[test]
fn approve_and_reject_decide_a_waiting_stage() {
    ensure_busybox_image();
    let servers = Servers::start();
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("cli-gated");
    let path = write_file(
        dir.path(),
        "gated.yaml",
        &format!(
            r#"name: {name}
defaults:
  image: vishwa-test/busybox:1
stages:
  - name: deploy
    command: [true]
    approval: {{message: "Promote this model?", timeout: 1h}}
"#
        ),
    );
    servers.vishwa_ok(&["submit", &path]);

    let run = servers
        .vishwa_ok(&["trigger", &name])
        .stdout
        .trim()
        .to_owned();
    let waiting = wait_until(Duration::from_secs(30), || {
        stage_state(&servers, &run, "deploy") == "waiting_approval"
    });
    assert!(waiting, "deploy never waited\n{}", servers.logs());
    let get = servers.vishwa_ok(&["get", &run]);
    assert!(
        get.stdout.contains("waiting_approval")
            && get.stdout.contains("Promote this model?")
            && get.stdout.contains("unless approved"),
        "{get}"
    );
    let approved = servers.vishwa_ok(&["approve", &run, "deploy"]);
    assert_eq!(
        approved.stdout,
        format!("{run} deploy approved\n"),
        "{approved}"
    );
    let done = wait_until(Duration::from_secs(60), || {
        stage_state(&servers, &run, "deploy") == "succeeded"
    });
    assert!(done, "deploy never ran after approval\n{}", servers.logs());
    let again = servers.vishwa(&["approve", &run, "deploy"]);
    assert_ne!(again.code(), 0, "{again}");
    assert_eq!(again.stderr.trim_end().lines().count(), 1, "{again}");
    assert!(again.stderr.contains("already succeeded"), "{again}");

    let run = servers
        .vishwa_ok(&["trigger", &name])
        .stdout
        .trim()
        .to_owned();
    let waiting = wait_until(Duration::from_secs(30), || {
        stage_state(&servers, &run, "deploy") == "waiting_approval"
    });
    assert!(waiting, "deploy never waited\n{}", servers.logs());
    let rejected = servers.vishwa_ok(&["reject", &run, "deploy", "--reason", "too risky"]);
    assert_eq!(
        rejected.stdout,
        format!("{run} deploy rejected\n"),
        "{rejected}"
    );
    let get = servers.vishwa_ok(&["get", &run]);
    assert!(get.stdout.contains("rejected by "), "{get}");
    assert!(get.stdout.contains("too risky"), "{get}");
    assert_eq!(stage_state(&servers, &run, "deploy"), "failed");
}
