//! Issue 3, `vishwa retry`: a failed run's failed stages and what follows them run again;
//! `--from STAGE` runs a stage and what follows it, `--only` just the stage. Earlier attempts
//! are kept, and `vishwa get` shows every attempt and every retry. Real processes and Docker.

mod cluster;

use std::time::Duration;

use cluster::dags::yaml_string;
use cluster::{Cluster, IMAGE, RunView};

/// a → b → c, and a → d; b fails while the file `fail-b` is in `flags`.
fn retry_dag(name: &str, flags: &str) -> String {
    let b = yaml_string("if [ -e /flags/fail-b ]; then echo failing; exit 1; fi; echo b");
    format!(
        "name: {name}\ndefaults:\n  image: {IMAGE}\n  mounts: [\"{flags}:/flags:ro\"]\nstages:\n  - {{name: a, command: \"echo a\"}}\n  - {{name: b, needs: [a], command: {b}}}\n  - {{name: c, needs: [b], command: \"echo c\"}}\n  - {{name: d, needs: [a], command: \"echo d\"}}\n"
    )
}

/// Attempts per stage, in stage order a, b, c, d.
fn attempt_counts(view: &RunView) -> [usize; 4] {
    ["a", "b", "c", "d"].map(|s| view.stage(s).attempts.len())
}

/// Runs `vishwa retry RUN ARGS -o json`; returns the stages it says will run again.
fn retry(cluster: &Cluster, run: &str, args: &[&str]) -> Vec<String> {
    let mut all = vec!["retry", run];
    all.extend(args);
    all.extend(["-o", "json"]);
    let out = cluster.vishwa(&all);
    let value: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    value["stages"]
        .as_array()
        .unwrap_or_else(|| panic!("no stages in {}", out.stdout))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn retry_runs_the_failed_stages_then_from_a_stage_then_only_that_stage() {
    let cluster = Cluster::new();
    let flags = cluster.dir().join("flags");
    std::fs::create_dir(&flags).unwrap();
    let flags = flags.canonicalize().unwrap();
    let flags_text = flags.to_str().unwrap();
    cluster.start_scheduler();
    let worker = cluster.name("w");
    cluster.start_worker(&worker, 2, &["--allow-mount", flags_text]);
    let dag = cluster.name("retry");
    cluster.submit("retry.yaml", &retry_dag(&dag, flags_text));

    std::fs::write(flags.join("fail-b"), "").unwrap();
    let run = cluster.trigger(&dag, &[]);
    let view = cluster.wait_run_final(&run, Duration::from_secs(60));
    assert_eq!(view.state, "failed", "{}", view.summary());
    let states = ["a", "b", "c", "d"].map(|s| view.stage(s).state.clone());
    assert_eq!(
        states,
        ["succeeded", "failed", "upstream_failed", "succeeded"],
        "{}",
        view.summary()
    );
    assert_eq!(attempt_counts(&view), [1, 1, 0, 1]);

    // The cause is gone: the failed stage and what it held back run again.
    std::fs::remove_file(flags.join("fail-b")).unwrap();
    assert_eq!(retry(&cluster, &run, &[]), ["b", "c"]);
    let view = cluster.wait_run_final(&run, Duration::from_secs(60));
    assert_eq!(view.state, "succeeded", "{}", view.summary());
    assert_eq!(attempt_counts(&view), [1, 2, 1, 1], "{}", view.summary());
    let b = view.stage("b");
    assert_eq!(
        (b.attempts[0].outcome.as_str(), b.attempts[0].exit_code),
        ("failed", Some(1)),
        "the failed attempt is kept"
    );
    assert_eq!(
        (b.attempts[1].outcome.as_str(), b.attempts[1].exit_code),
        ("succeeded", Some(0))
    );
    assert_eq!(b.attempts[1].number, 2);
    assert_eq!(view.retries.len(), 1);
    assert_eq!(view.retries[0].mode, "failed");
    assert_eq!(view.retries[0].stages, ["b", "c"]);

    // A succeeded run can be run again from a stage: it and what follows it.
    assert_eq!(retry(&cluster, &run, &["--from", "b"]), ["b", "c"]);
    let view = cluster.wait_run_final(&run, Duration::from_secs(60));
    assert_eq!(view.state, "succeeded", "{}", view.summary());
    assert_eq!(attempt_counts(&view), [1, 3, 2, 1], "{}", view.summary());
    assert_eq!(view.retries.len(), 2);
    assert_eq!(view.retries[1].mode, "from b");

    // Or that stage alone.
    assert_eq!(retry(&cluster, &run, &["--from", "b", "--only"]), ["b"]);
    let view = cluster.wait_run_final(&run, Duration::from_secs(60));
    assert_eq!(view.state, "succeeded", "{}", view.summary());
    assert_eq!(attempt_counts(&view), [1, 4, 2, 1], "{}", view.summary());
    assert_eq!(view.retries.len(), 3);
    assert_eq!(view.retries[2].mode, "only b");
    assert_eq!(view.retries[2].stages, ["b"]);
    for stage in &view.stages {
        for (i, attempt) in stage.attempts.iter().enumerate() {
            assert_eq!(attempt.number as usize, i + 1, "{}", view.summary());
        }
    }
    assert!(
        cluster.wait_no_containers_of_run(&run, Duration::from_secs(10)),
        "containers left: {:?}",
        cluster.containers_of_run(&run)
    );
}
