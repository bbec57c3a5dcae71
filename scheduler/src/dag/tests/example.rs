//! The product description's example DAG parses into what its comments promise.

use std::time::Duration;

use serde_json::json;

use super::EXAMPLE;
use crate::dag::{
    Catchup, Command, EnvValue, ExecutorKind, ForEach, Mount, Overlap, RetryPolicy, TriggerRule,
    parse_dag,
};

#[test]
fn product_example_parses_with_defaults_merged() {
    let dag = parse_dag(EXAMPLE, "dag.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dag.name.as_str(), "cake-popularity");
    assert_eq!(
        dag.description.as_deref(),
        Some("Predict which cake flavours students will like")
    );
    assert_eq!(dag.params["rows"], json!(1000));
    assert_eq!(dag.params["min_accuracy"], json!(0.8));
    assert_eq!(
        dag.params["flavours"],
        json!(["chocolate", "vanilla", "red-velvet"])
    );
    let schedule = dag.schedule.as_ref().expect("schedule");
    assert_eq!(schedule.cron, "0 2 * * *");
    assert_eq!(schedule.expression.quartz, "0 0 2 * * *");
    assert_eq!(schedule.timezone, chrono_tz::Asia::Kolkata);
    assert_eq!(schedule.catchup, Catchup::Latest);
    assert_eq!(schedule.overlap, Overlap::Skip);
    assert_eq!(dag.max_active_runs, Some(1));
    assert_eq!(dag.timeout, Some(Duration::from_secs(7200)));

    let names: Vec<&str> = dag.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "collect",
            "validate",
            "notify-local",
            "train",
            "publish",
            "deploy"
        ]
    );
    let retries = RetryPolicy {
        limit: 2,
        backoff: Duration::from_secs(10),
        max_backoff: Duration::from_secs(300),
    };
    for stage in &dag.stages {
        // Defaults reach every stage.
        assert_eq!(
            stage.image.as_deref(),
            Some("vishwa-examples/python-ml:1"),
            "{}",
            stage.name
        );
        assert_eq!(stage.retries, retries, "{}", stage.name);
        assert_eq!(
            stage.timeout,
            Some(Duration::from_secs(1800)),
            "{}",
            stage.name
        );
    }

    let collect = &dag.stages[0];
    assert_eq!(
        collect.command,
        Some(Command::Exec(
            ["python3", "collect.py", "--rows", "{{ params.rows }}"]
                .map(String::from)
                .to_vec()
        ))
    );
    assert_eq!(collect.outputs, ["survey.csv"]);
    assert_eq!(collect.location.line, 19);

    let notify = &dag.stages[2];
    assert_eq!(notify.executor, ExecutorKind::Process);
    assert_eq!(
        notify.command,
        Some(Command::Shell("echo validated".into()))
    );

    let train = &dag.stages[3];
    assert_eq!(
        train.for_each,
        Some(ForEach::Param("{{ params.flavours }}".into()))
    );
    assert_eq!(
        train.for_each.as_ref().and_then(ForEach::param_name),
        Some("flavours")
    );
    assert_eq!(train.max_parallel, Some(2));
    assert_eq!(train.resources.cpus, Some(2.0));
    assert_eq!(train.resources.memory_bytes, Some(4 << 30));
    assert_eq!(train.resources.gpus, Some(0));
    assert_eq!(train.worker.get("pool").map(String::as_str), Some("cpu"));
    assert_eq!(train.outputs, ["model.pkl", "metrics.json"]);
    assert!(train.cache);

    let publish = &dag.stages[4];
    assert_eq!(
        publish.when.as_ref().map(|w| w.as_str()),
        Some("stages.train.metrics.accuracy >= params.min_accuracy")
    );
    assert_eq!(publish.trigger, TriggerRule::AllSuccess);
    assert_eq!(publish.env["TARGET"], EnvValue::Literal("staging".into()));
    assert_eq!(
        publish.env["REGISTRY_TOKEN"],
        EnvValue::Secret("registry-token".into())
    );

    let deploy = &dag.stages[5];
    assert_eq!(
        deploy.mounts,
        [Mount {
            host: "/var/run/docker.sock".into(),
            container: "/var/run/docker.sock".into(),
            read_only: false
        }]
    );

    // Graph: collect → validate → {notify-local, train}; train → publish → deploy.
    assert_eq!(dag.topo_order, [0, 1, 2, 3, 4, 5]);
    assert_eq!(dag.stage_index("train"), Some(3));
    assert_eq!(dag.stage_index("nope"), None);
    assert_eq!(dag.upstream(3), [1]);
    assert_eq!(dag.downstream(1), [2, 3]);
    assert_eq!(dag.upstream(0), Vec::<usize>::new());
    assert_eq!(dag.downstream(5), Vec::<usize>::new());
    assert_eq!(dag.levels(), [0, 1, 2, 2, 3, 4]);
}

#[test]
fn stage_values_override_defaults_and_maps_merge() {
    let yaml = "\
name: merge
defaults:
  image: base:1
  env: {A: from-defaults, B: from-defaults}
  worker: {pool: cpu, zone: a}
  resources: {cpus: 1, memory: 1Gi}
  outputs: [a.txt]
  cache: true
stages:
  - name: s
    image: special:2
    env: {B: from-stage, C: 3}
    worker: {zone: b}
    resources: {cpus: 4}
    outputs: [b.txt]
    cache: false
";
    let dag = parse_dag(yaml, "dag.yaml").unwrap_or_else(|e| panic!("{e}"));
    let s = &dag.stages[0];
    assert_eq!(s.image.as_deref(), Some("special:2"));
    assert_eq!(s.env["A"], EnvValue::Literal("from-defaults".into()));
    assert_eq!(s.env["B"], EnvValue::Literal("from-stage".into()));
    assert_eq!(s.env["C"], EnvValue::Literal("3".into()));
    assert_eq!(s.worker.get("pool").map(String::as_str), Some("cpu"));
    assert_eq!(s.worker.get("zone").map(String::as_str), Some("b"));
    assert_eq!(s.resources.cpus, Some(4.0));
    assert_eq!(s.resources.memory_bytes, Some(1 << 30));
    assert_eq!(s.outputs, ["b.txt"]);
    assert!(!s.cache);
    assert_eq!(s.retries, RetryPolicy::default());
}

#[test]
fn scalars_keep_their_spelling_in_commands_and_env() {
    let yaml = "\
name: spelling
stages:
  - name: s
    image: i
    command: [run, 1.10, 007, true, yes]
    env: {VERSION: 1.10, HEX: 0x10, FLAG: true, WORD: no}
    retries: 3
";
    let dag = parse_dag(yaml, "dag.yaml").unwrap_or_else(|e| panic!("{e}"));
    let s = &dag.stages[0];
    assert_eq!(
        s.command,
        Some(Command::Exec(
            ["run", "1.10", "007", "true", "yes"]
                .map(String::from)
                .to_vec()
        ))
    );
    assert_eq!(s.env["VERSION"], EnvValue::Literal("1.10".into()));
    assert_eq!(s.env["HEX"], EnvValue::Literal("0x10".into()));
    assert_eq!(s.env["FLAG"], EnvValue::Literal("true".into()));
    assert_eq!(s.env["WORD"], EnvValue::Literal("no".into()));
    assert_eq!(s.retries.limit, 3);
    assert_eq!(s.retries.backoff, RetryPolicy::DEFAULT_BACKOFF);
}
