//! A queued stage says why it waits: `vishwa trigger --watch` names what the stage asks of
//! a worker and why no connected worker takes it, and the stage runs once a worker that
//! fits connects.

mod common;

use std::time::Duration;

use common::{Background, Servers, unique_name, wait_until, write_file};

#[test]
fn a_stage_waiting_for_a_label_says_so_and_runs_when_a_worker_has_it() {
    let servers = Servers::start();
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("queued");
    let path = write_file(
        dir.path(),
        "queued.yaml",
        &format!(
            "name: {name}\nstages:\n  - name: train\n    executor: process\n    \
             worker: {{gpu: \"true\"}}\n    command: echo trained\n"
        ),
    );
    servers.vishwa_ok(&["submit", &path]);

    // Only w1 is connected, and it has no gpu label: the stage waits, and says why.
    let watch = Background::start(&["--server", &servers.url, "trigger", &name, "--watch"]);
    let expected = "waiting for a worker with label gpu=true that allows process stages: \
                    w1 lacks label gpu=true";
    let said = wait_until(Duration::from_secs(20), || {
        watch
            .stdout()
            .lines()
            .any(|l| l.contains("train") && l.contains("queued") && l.contains(expected))
    });
    assert!(
        said,
        "no waiting reason in:\n{}\n{}",
        watch.stdout(),
        servers.logs()
    );

    // A worker with the label lets it run; the watch ends with the run's success.
    servers
        .cluster()
        .start_worker("gpu1", 1, &["--allow-process", "--label", "gpu=true"]);
    let outcome = watch.finish(Duration::from_secs(60));
    assert_eq!(outcome.code(), 0, "{outcome}\n{}", servers.logs());
    let out = &outcome.stdout;
    assert!(
        out.lines()
            .any(|l| l.contains("train") && l.contains("running") && l.contains("gpu1")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("train") && l.contains("succeeded")),
        "{out}"
    );
}
