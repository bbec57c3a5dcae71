//! `outputs:` entries that publish assets, and `triggers:`.

use super::assert_refused;
use crate::dag::{AssetMode, DagError, Trigger, parse_dag};

#[test]
fn outputs_may_publish_assets_and_be_optional() {
    let dag = parse_dag(
        "name: collect\nstages:\n  - name: a\n    image: i\n    outputs:\n      - plain.txt\n      \
         - {path: data.csv, asset: survey-data}\n      - {path: extra.csv, optional: true}\n",
        "d",
    )
    .unwrap();
    let a = &dag.stages[0];
    assert_eq!(a.outputs, ["plain.txt", "data.csv", "extra.csv"]);
    assert_eq!(a.optional_outputs, ["extra.csv"]);
    assert_eq!(
        a.assets.get("data.csv").map(String::as_str),
        Some("survey-data")
    );
    assert_eq!(dag.published_assets(), ["survey-data"]);
}

#[test]
fn triggers_name_one_asset_or_several_with_a_mode() {
    let dag = parse_dag(
        "name: train\ntriggers:\n  - asset: survey-data\n  - {asset: [a, b], mode: all}\n\
         stages: [{name: s, image: i}]\n",
        "d",
    )
    .unwrap();
    let shapes: Vec<(Vec<String>, AssetMode)> = dag
        .triggers
        .iter()
        .map(|t| match t {
            Trigger::Assets { names, mode, .. } => (names.clone(), *mode),
        })
        .collect();
    assert_eq!(
        shapes,
        [
            (vec!["survey-data".to_owned()], AssetMode::Any),
            (vec!["a".to_owned(), "b".to_owned()], AssetMode::All),
        ]
    );
}

#[test]
fn bad_assets_and_triggers_are_refused_at_their_place() {
    let stages = "stages: [{name: s, image: i}]\n";
    assert_refused(
        &format!("name: t\ntriggers:\n  - {{asset: [a, b], mode: every}}\n{stages}"),
        3,
        27,
        |e| matches!(e, DagError::UnknownAssetMode { mode, .. } if mode == "every"),
    );
    assert_refused(
        &format!("name: t\ntriggers:\n  - {{asset: [a, Bad_Name]}}\n{stages}"),
        3,
        17,
        |e| matches!(e, DagError::InvalidAssetName { name, .. } if name == "Bad_Name"),
    );
    assert_refused(
        &format!("name: t\ntriggers:\n  - {{asset: [a, a]}}\n{stages}"),
        3,
        17,
        |e| matches!(e, DagError::DuplicateTriggerAsset { .. }),
    );
    assert_refused(
        &format!("name: t\ntriggers:\n  - {{asset: []}}\n{stages}"),
        3,
        13,
        |e| matches!(e, DagError::EmptyAssetTrigger { .. }),
    );
    assert_refused(
        &format!("name: t\ntriggers:\n  - {{mode: all}}\n{stages}"),
        3,
        12,
        |e| matches!(e, DagError::ModeWithoutAsset { .. }),
    );
    assert_refused(
        "name: t\nstages:\n  - {name: s, image: i, outputs: [{path: o, asset: NO}]}\n",
        3,
        52,
        |e| matches!(e, DagError::InvalidAssetName { .. }),
    );
    // A DAG started by an asset it publishes itself.
    assert_refused(
        "name: t\ntriggers: [{asset: x}]\nstages:\n  - {name: s, image: i, outputs: [{path: o, asset: x}]}\n",
        2,
        12,
        |e| matches!(e, DagError::AssetCycle { .. }),
    );
}
