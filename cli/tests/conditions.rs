//! `when:` conditions end to end: a scheduler and a worker as processes, stages in Docker
//! (the busybox test image), conditions over params and upstream states decided by the
//! scheduler, and `vishwa get` telling why a stage was skipped or failed.

mod common;

use common::{Servers, ensure_busybox_image, unique_name, write_file};
use serde_json::Value;

fn conditional_dag(name: &str) -> String {
    format!(
        r#"name: {name}
params:
  deploy: false
  target: production
defaults:
  image: vishwa-test/busybox:1
stages:
  - name: check
    command: echo "checked $VISHWA_PARAM_TARGET"
  - name: deploy
    needs: [check]
    when: params.deploy
    command: echo deploying
  - name: report
    needs: [check]
    when: "params.target == 'staging' && stages.check.state == 'succeeded'"
    command: echo "reporting to {{{{ params.target }}}}"
  - name: after-deploy
    needs: [deploy]
    command: echo "never runs, deploy was skipped"
  - name: cleanup
    needs: [deploy]
    trigger: none_failed
    command: echo cleaned
  - name: gate
    needs: [report]
    when: stages.report.metrics.accuracy > 0.5
    command: echo "never runs, report has no metrics"
"#
    )
}

/// The stage named `name` in `vishwa -o json get` output.
fn stage<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no stage {name} in {run}"))
}

#[test]
fn conditions_skip_or_run_stages_and_get_shows_why() {
    ensure_busybox_image();
    let servers = Servers::start();
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("cli-when");
    let path = write_file(dir.path(), "dag.yaml", &conditional_dag(&name));
    servers.vishwa_ok(&["submit", &path]);

    let watched = servers.vishwa(&["trigger", &name, "-p", "target=staging", "--watch"]);
    assert_eq!(
        watched.code(),
        1,
        "gate's condition cannot be evaluated, so the run fails: {watched}\n{}",
        servers.logs()
    );
    let run_id = watched.stdout.split_whitespace().nth(1).unwrap().to_owned();

    let json = servers.vishwa_ok(&["-o", "json", "get", &run_id]);
    let run: Value = serde_json::from_str(&json.stdout).unwrap();
    let state = |s: &str| {
        stage(&run, s)["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(state("check"), "succeeded", "{json}");
    assert_eq!(state("deploy"), "skipped", "{json}");
    assert_eq!(
        stage(&run, "deploy")["message"],
        "when `params.deploy` was false"
    );
    assert_eq!(
        stage(&run, "deploy")["attempts"].as_array().map(Vec::len),
        Some(0),
        "a skipped stage starts no container: {json}"
    );
    assert_eq!(state("report"), "succeeded", "{json}");
    assert_eq!(state("after-deploy"), "skipped", "{json}");
    assert_eq!(
        stage(&run, "after-deploy")["message"],
        "an upstream stage was skipped"
    );
    assert_eq!(state("cleanup"), "succeeded", "{json}");
    assert_eq!(state("gate"), "failed", "{json}");
    let gate_error = stage(&run, "gate")["message"].as_str().unwrap_or_default();
    assert!(
        gate_error
            .starts_with("when `stages.report.metrics.accuracy > 0.5` could not be evaluated:")
            && gate_error.contains("accuracy"),
        "{json}"
    );

    // The table says the same to a person.
    let get = servers.vishwa_ok(&["get", &run_id]);
    assert!(
        get.stdout.contains("when `params.deploy` was false"),
        "{get}"
    );
    let logs = servers.vishwa_ok(&["logs", &run_id, "report"]);
    assert_eq!(logs.stdout, "reporting to staging\n", "{logs}");

    // With the defaults, report's condition is false and deploy's too: nothing fails.
    let defaults = servers.vishwa(&["trigger", &name, "--watch"]);
    assert_eq!(defaults.code(), 0, "{defaults}\n{}", servers.logs());
    let run_id = defaults
        .stdout
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    let json = servers.vishwa_ok(&["-o", "json", "get", &run_id]);
    let run: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(stage(&run, "report")["state"], "skipped", "{json}");
    assert_eq!(
        stage(&run, "report")["message"],
        "when `params.target == 'staging' && stages.check.state == 'succeeded'` was false"
    );
    assert_eq!(stage(&run, "gate")["state"], "skipped", "{json}");
}

#[test]
fn a_condition_with_a_mistake_is_refused_at_submit_with_its_place() {
    let servers = Servers::start();
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("cli-when-bad");
    let text = conditional_dag(&name).replace("when: params.deploy", "when: params.deploy &&");
    let path = write_file(dir.path(), "dag.yaml", &text);
    let refused = servers.vishwa(&["submit", &path]);
    assert_ne!(refused.code(), 0, "{refused}");
    assert!(
        refused
            .stderr
            .contains("dag.yaml:12:27: error: syntax error in `when` of stage `deploy`"),
        "{refused}"
    );
    assert!(
        refused.stderr.contains("help: write a CEL expression"),
        "{refused}"
    );
    let dags = servers.vishwa_ok(&["dags"]);
    assert!(
        !dags.stdout.contains(&name),
        "nothing was registered: {dags}"
    );
}
