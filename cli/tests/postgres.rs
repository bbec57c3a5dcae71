//! The scheduler on PostgreSQL as a user runs it: `vishwa scheduler --store postgres://...`
//! with a real server started by the harness, workers and Docker stages; the scheduler
//! killed mid-run and restarted; `vishwa migrate` from a sled data dir; bad store URLs.

mod cluster;

use std::time::Duration;

use cluster::dags::{layered_dag, one_stage_dag};
use cluster::{Cluster, RunView, VISHWA};
use vishwa_integration_tests::postgres;

fn assert_every_stage_succeeded_once(view: &RunView) {
    assert_eq!(view.state, "succeeded", "{}", view.summary());
    for stage in &view.stages {
        assert_eq!(stage.state, "succeeded", "{}", view.summary());
        assert_eq!(stage.completions(), 1, "{}", view.summary());
    }
}

#[test]
fn a_run_on_postgres_survives_the_scheduler_killed_mid_run_and_after_it() {
    let url = postgres::shared().fresh_database().unwrap();
    let cluster = Cluster::new();
    let store = ["--store", url.as_str()];
    cluster.start_scheduler_with(&store);
    cluster.start_worker(&cluster.name("w1"), 4, &[]);
    let dag = cluster.name("layers");
    cluster.submit("layers.yaml", &layered_dag(&dag, 3, 6));
    let run = cluster.trigger(&dag, &[]);

    // Killed with SIGKILL while stages run: what was acknowledged is in PostgreSQL.
    assert!(
        cluster::wait_until(Duration::from_secs(60), || cluster
            .get(&run)
            .count("succeeded")
            >= 2),
        "{}",
        cluster.get(&run).summary()
    );
    cluster.kill_scheduler();
    cluster.start_scheduler_with(&store);
    let view = cluster.wait_run_final(&run, Duration::from_secs(180));
    assert_every_stage_succeeded_once(&view);

    // And once more after the end: the run, its stages and its logs come back from the
    // database, and nothing was written to a sled store in the data dir.
    cluster.kill_scheduler();
    cluster.start_scheduler_with(&store);
    let again = cluster.get(&run);
    assert_eq!(again.state, "succeeded", "{}", again.summary());
    assert_eq!(again.stages.len(), 18);
    assert!(
        !cluster.data.join("store").exists(),
        "the state went to PostgreSQL, not to {}",
        cluster.data.join("store").display()
    );
    let db = url.rsplit('/').next().unwrap();
    let rows = postgres::shared()
        .sql(
            db,
            &format!("SELECT count(*) FROM stages WHERE run = '{run}'"),
        )
        .unwrap();
    assert_eq!(rows, "18");
}

#[test]
fn migrate_copies_a_sled_installation_into_postgres_and_refuses_a_non_empty_target() {
    let url = postgres::shared().fresh_database().unwrap();
    let cluster = Cluster::new();
    cluster.start_scheduler();
    cluster.start_worker(&cluster.name("w1"), 2, &[]);
    let dag = cluster.name("hello");
    cluster.submit(
        "hello.yaml",
        &one_stage_dag(&dag, "greet", "echo hello from sled"),
    );
    let run = cluster.trigger(&dag, &[]);
    let before = cluster.wait_run_final(&run, Duration::from_secs(120));
    assert_eq!(before.state, "succeeded", "{}", before.summary());
    let (status, _) = cluster.term_scheduler(Duration::from_secs(10));
    assert!(status.success(), "{status}");

    let from = format!("sled:{}", cluster.data.display());
    let copied = cluster.vishwa(&["migrate", "--from", &from, "--to", &url]);
    assert!(copied.stdout.contains("1 runs"), "{}", copied.stdout);
    assert!(copied.stdout.contains("1 DAGs"), "{}", copied.stdout);

    // A second copy into the now non-empty database is refused, with the way out.
    let refused = cluster.try_vishwa(&["migrate", "--from", &from, "--to", &url]);
    assert_eq!(refused.status.code(), Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("already holds records"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("--into-non-empty"),
        "{}",
        refused.stderr
    );

    // The scheduler on PostgreSQL has the run, its stages and its log.
    cluster.start_scheduler_with(&["--store", url.as_str()]);
    let after = cluster.get(&run);
    assert_eq!(after.state, "succeeded", "{}", after.summary());
    assert_eq!(after.stages.len(), before.stages.len());
    let logs = cluster.vishwa(&["logs", &run]);
    assert!(logs.stdout.contains("hello from sled"), "{}", logs.stdout);
    let dags = cluster.vishwa(&["dags"]);
    assert!(dags.stdout.contains(&dag), "{}", dags.stdout);
}

#[test]
fn a_bad_store_is_refused_with_what_and_how_to_fix() {
    for (store, says) in [
        ("mysql://db/x", "unknown kind of store `mysql`"),
        ("postgres://vishwa@127.0.0.1:5432", "names no database"),
    ] {
        let out = std::process::Command::new(VISHWA)
            .args(["scheduler", "--listen", "127.0.0.1:0", "--store", store])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(stderr.contains("postgres://USER"), "{stderr}");
    }
    // A server that is not there: the scheduler says so and exits non-zero.
    let port = vishwa_integration_tests::net::free_local_addr().port();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(VISHWA)
        .args(["scheduler", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .args([
            "--store",
            &format!("postgres://vishwa:pw@127.0.0.1:{port}/vishwa"),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("cannot connect to PostgreSQL"), "{stderr}");
    assert!(!stderr.contains(":pw@"), "{stderr}");
}
