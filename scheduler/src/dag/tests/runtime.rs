//! Serving runs of a validated DAG: params, fan-out items, instance names, graph views.

use std::collections::BTreeMap;

use serde_json::json;

use super::EXAMPLE;
use crate::dag::{
    ParamError, ParamType, StageName, instance_name, parse_dag, render_graph_dot, render_graph_text,
};

fn example() -> crate::dag::Dag {
    parse_dag(EXAMPLE, "dag.yaml").unwrap_or_else(|e| panic!("{e}"))
}

fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn overrides_take_the_type_of_the_default() {
    let dag = example();
    let params = dag
        .resolve_params(&overrides(&[("rows", "500"), ("min_accuracy", "0.95")]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(params["rows"], json!(500));
    assert_eq!(params["min_accuracy"], json!(0.95));
    assert_eq!(
        params["flavours"],
        json!(["chocolate", "vanilla", "red-velvet"])
    );

    for text in ["[lemon, lime]", "lemon,lime", " lemon , lime "] {
        let params = dag
            .resolve_params(&overrides(&[("flavours", text)]))
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(params["flavours"], json!(["lemon", "lime"]), "{text}");
    }
    let params = dag
        .resolve_params(&overrides(&[("flavours", "")]))
        .expect("empty list");
    assert_eq!(params["flavours"], json!([]));
    assert_eq!(
        dag.resolve_params(&BTreeMap::new()).expect("defaults"),
        dag.params
    );
}

#[test]
fn overrides_convert_strings_booleans_and_number_lists() {
    let yaml = "name: t\nparams:\n  label: x\n  fast: false\n  sizes: [1, 2]\ndefaults: {image: i}\nstages: [{name: a}]\n";
    let dag = parse_dag(yaml, "d").unwrap_or_else(|e| panic!("{e}"));
    let params = dag
        .resolve_params(&overrides(&[
            ("label", "42"),
            ("fast", "TRUE"),
            ("sizes", "3, 4"),
        ]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(params["label"], json!("42"));
    assert_eq!(params["fast"], json!(true));
    assert_eq!(params["sizes"], json!([3, 4]));
    let err = dag
        .resolve_params(&overrides(&[("sizes", "3,x")]))
        .expect_err("not numbers");
    assert!(
        matches!(
            err,
            ParamError::InvalidValue {
                expected: ParamType::List,
                ..
            }
        ),
        "{err}"
    );
    let err = dag
        .resolve_params(&overrides(&[("fast", "yes")]))
        .expect_err("not a bool");
    assert_eq!(
        err.to_string(),
        "param `fast` expects a boolean (true or false), got `yes`"
    );
}

#[test]
fn bad_overrides_name_the_param_the_type_and_the_value() {
    let dag = example();
    let err = dag
        .resolve_params(&overrides(&[("rows", "many")]))
        .expect_err("not a number");
    assert_eq!(
        err,
        ParamError::InvalidValue {
            name: "rows".into(),
            expected: ParamType::Number,
            value: "many".into()
        }
    );
    assert_eq!(err.to_string(), "param `rows` expects a number, got `many`");
    let err = dag
        .resolve_params(&overrides(&[("row", "1")]))
        .expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "unknown param `row`; known params: flavours, min_accuracy, rows"
    );
    let err = dag
        .resolve_params(&overrides(&[("flavours", "[a, [b]]")]))
        .expect_err("nested");
    assert!(matches!(err, ParamError::InvalidValue { .. }));
}

#[test]
fn for_each_items_come_from_the_list_or_the_resolved_param() {
    let dag = example();
    let train = dag.stage_index("train").expect("train");
    let params = dag.resolve_params(&BTreeMap::new()).expect("defaults");
    assert_eq!(dag.for_each_items(0, &params), Ok(None));
    assert_eq!(
        dag.for_each_items(train, &params),
        Ok(Some(vec![
            json!("chocolate"),
            json!("vanilla"),
            json!("red-velvet")
        ]))
    );
    let params = dag
        .resolve_params(&overrides(&[("flavours", "[]")]))
        .expect("empty");
    assert_eq!(dag.for_each_items(train, &params), Ok(Some(vec![])));
    // Items that would name one instance twice are refused, naming the item.
    let twice = dag
        .resolve_params(&overrides(&[("flavours", "[a, b, a]")]))
        .expect("a list");
    assert!(matches!(
        dag.for_each_items(train, &twice),
        Err(ParamError::DuplicateItem { item, .. }) if item == "a"
    ));
    let mut broken = params.clone();
    broken.insert("flavours".into(), json!("chocolate"));
    assert!(matches!(
        dag.for_each_items(train, &broken),
        Err(ParamError::NotAList { param, .. }) if param == "flavours"
    ));
    assert_eq!(
        dag.for_each_items(99, &params),
        Err(ParamError::NoSuchStage { index: 99 })
    );

    let literal = parse_dag(
        "name: t\ndefaults: {image: i}\nstages:\n  - name: s\n    for_each: [1, 2.5, x, true]\n",
        "d",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        literal.for_each_items(0, &BTreeMap::new()),
        Ok(Some(vec![json!(1), json!(2.5), json!("x"), json!(true)]))
    );
}

#[test]
fn instance_names_show_items_as_plain_text() {
    let train = StageName("train".into());
    assert_eq!(
        instance_name(&train, &json!("chocolate")),
        "train[chocolate]"
    );
    assert_eq!(instance_name(&train, &json!(3)), "train[3]");
    assert_eq!(instance_name(&train, &json!(0.5)), "train[0.5]");
    assert_eq!(instance_name(&train, &json!(true)), "train[true]");
}

#[test]
fn graph_text_groups_stages_by_level() {
    let text = render_graph_text(&example());
    let expected = "\
cake-popularity (6 stages, 5 levels)
level 0
  collect       docker vishwa-examples/python-ml:1
level 1
  validate      needs collect · docker vishwa-examples/python-ml:1
level 2
  notify-local  needs validate · process
  train[*]      needs validate · docker vishwa-examples/python-ml:1 · for each of {{ params.flavours }}, 2 at once
level 3
  publish       needs train · docker vishwa-examples/python-ml:1 · when stages.train.metrics.accuracy >= params.min_accuracy
level 4
  deploy        needs publish · docker vishwa-examples/python-ml:1
";
    assert_eq!(text, expected);
    let custom = parse_dag("name: t\ndefaults: {image: i}\nstages:\n  - name: a\n  - name: b\n    needs: [a]\n    trigger: all_done\n", "d")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(render_graph_text(&custom).contains("  b  needs a · docker i · trigger all_done\n"));
}

#[test]
fn graph_dot_is_quoted_graphviz() {
    let dot = render_graph_dot(&example());
    assert!(
        dot.starts_with("digraph \"cake-popularity\" {\n  rankdir=LR;\n"),
        "{dot}"
    );
    assert!(dot.ends_with("}\n"), "{dot}");
    for edge in [
        "  \"collect\" -> \"validate\";\n",
        "  \"validate\" -> \"notify-local\";\n",
        "  \"validate\" -> \"train\";\n",
        "  \"train\" -> \"publish\";\n",
        "  \"publish\" -> \"deploy\";\n",
    ] {
        assert!(dot.contains(edge), "missing {edge} in {dot}");
    }
    assert_eq!(dot.matches(" -> ").count(), 5);
    assert!(dot.contains("\"train\" [label=\"train\\ndocker vishwa-examples/python-ml:1\\nfor each of {{ params.flavours }}, 2 at once\", shape=box3d];"), "{dot}");
    let quoted = parse_dag(
        "name: t\nparams: {x: a}\ndefaults: {image: i}\nstages:\n  - name: a\n    when: 'params.x == \"y\\\\z\"'\n",
        "d",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let dot = render_graph_dot(&quoted);
    assert!(
        dot.contains("when params.x == \\\"y\\\\\\\\z\\\"\"]"),
        "{dot}"
    );
}
