//! Every example under `dags/` validates with `vishwa validate`, so examples never rot.

mod common;

use std::path::PathBuf;

use common::{dags_dir, vishwa};

/// The example DAGs: folders holding `dag.yaml` and YAML files directly under `dags/`, as
/// `vishwa dev --dags dags` loads them.
fn example_dags() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dags_dir())
        .expect("cannot read dags/")
        .map(|entry| entry.unwrap().path())
        .filter(|p| {
            (p.is_dir() && p.join("dag.yaml").is_file())
                || p.extension().is_some_and(|e| e == "yaml" || e == "yml")
        })
        .collect();
    paths.sort();
    paths
}

#[test]
fn every_example_dag_validates() {
    let examples = example_dags();
    for example in [
        "hello-pipeline",
        "nightly-retrain",
        "cake-popularity",
        "student-intelligence",
    ] {
        assert!(
            examples.iter().any(|p| p.ends_with(example)),
            "dags/{example} is missing: {examples:?}"
        );
    }
    for path in &examples {
        let path = path.to_str().unwrap();
        let outcome = vishwa(&["validate", path]);
        outcome.expect_code(0);
        assert!(
            outcome.stdout.starts_with(&format!("{path}: ok (")),
            "{outcome}"
        );
    }
}

#[test]
fn every_example_dag_validates_in_one_call_with_json_output() {
    let examples = example_dags();
    let mut args = vec!["-o", "json", "validate"];
    args.extend(examples.iter().map(|p| p.to_str().unwrap()));
    let outcome = vishwa(&args);
    outcome.expect_code(0);
    let results: serde_json::Value = serde_json::from_str(&outcome.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {outcome}"));
    let results = results.as_array().expect("an array of results");
    assert_eq!(results.len(), examples.len());
    for result in results {
        assert_eq!(result["ok"], true, "{result}");
        assert!(result["stages"].as_u64().unwrap() > 0, "{result}");
    }
}

#[test]
fn every_example_dag_draws_as_a_graph() {
    for path in example_dags() {
        let path = path.to_str().unwrap();
        let text = vishwa(&["graph", path]);
        text.expect_code(0);
        assert!(!text.stdout.trim().is_empty(), "{text}");
        let dot = vishwa(&["graph", "--dot", path]);
        dot.expect_code(0);
        assert!(dot.stdout.starts_with("digraph "), "{dot}");
    }
}
