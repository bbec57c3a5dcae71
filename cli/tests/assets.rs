//! `vishwa assets` and `vishwa assets show NAME` against a real scheduler and worker
//! process: a producer publishes a data asset, its consumer runs on it, and the listing shows
//! the lineage both ways.

mod cluster;

use std::time::{Duration, Instant};

use cluster::{Cluster, IMAGE};
use serde_json::Value;

const RUN_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn assets_lists_versions_with_producer_and_consumer_runs() {
    let cluster = Cluster::new();
    cluster.start_scheduler();
    let worker = cluster.name("w");
    cluster.start_worker(&worker, 2, &[]);
    let producer = cluster.name("collect");
    let consumer = cluster.name("train");
    cluster.submit(
        "collect.yaml",
        &format!(
            r#"name: {producer}
stages:
  - name: emit
    image: {IMAGE}
    command: echo rows > /vishwa/out/data.csv
    outputs: [{{path: data.csv, asset: survey-data}}]
"#
        ),
    );
    cluster.submit(
        "train.yaml",
        &format!(
            r#"name: {consumer}
triggers: [{{asset: survey-data}}]
stages:
  - name: fit
    image: {IMAGE}
    command: cat /vishwa/in/@asset/survey-data/data.csv
"#
        ),
    );
    let run = cluster.trigger(&producer, &[]);
    cluster.wait_run_final(&run, RUN_LIMIT);

    // The consumer's run, started by the new version.
    let start = Instant::now();
    let consumer_run = loop {
        let out = cluster
            .vishwa(&["runs", "--dag", &consumer, "-o", "json"])
            .stdout;
        let runs: Value = serde_json::from_str(&out).unwrap();
        if let Some(id) = runs
            .as_array()
            .and_then(|r| r.first())
            .and_then(|r| r["run_id"].as_str())
        {
            break id.to_owned();
        }
        assert!(start.elapsed() < RUN_LIMIT, "no run of {consumer}: {out}");
        std::thread::sleep(Duration::from_millis(200));
    };
    cluster.wait_run_final(&consumer_run, RUN_LIMIT);

    let listed: Value =
        serde_json::from_str(&cluster.vishwa(&["assets", "-o", "json"]).stdout).unwrap();
    let asset = &listed[0];
    assert_eq!(asset["name"], "survey-data", "{listed:#}");
    assert_eq!(asset["triggers"][0], consumer.as_str());
    let version = &asset["versions"][0];
    assert_eq!(version["version"], 1);
    assert_eq!(version["run"], run.as_str());
    assert_eq!(version["stage"], "emit");
    assert_eq!(version["consumers"][0], consumer_run.as_str());

    let table = cluster.vishwa(&["assets"]).stdout;
    assert!(
        table.contains("survey-data") && table.contains(&consumer),
        "{table}"
    );
    let shown = cluster.vishwa(&["assets", "show", "survey-data"]).stdout;
    assert!(
        shown.contains(&format!("{run}/emit")) && shown.contains(&consumer_run),
        "{shown}"
    );

    let missing = cluster.try_vishwa(&["assets", "show", "no-such"]);
    assert!(!missing.status.success());
    assert!(
        missing
            .stderr
            .contains("no asset `no-such`; `vishwa assets` lists the assets"),
        "{}",
        missing.stderr
    );
}
