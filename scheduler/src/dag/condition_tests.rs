//! Compiling, checking and evaluating `when:` expressions on their own.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::*;

struct Fixture {
    params: BTreeMap<String, ParamValue>,
    all: BTreeSet<String>,
    upstream: BTreeSet<String>,
}

fn fixture() -> Fixture {
    Fixture {
        params: BTreeMap::from([
            ("min_accuracy".to_owned(), json!(0.8)),
            ("rows".to_owned(), json!(1000)),
            ("target".to_owned(), json!("staging")),
            ("flavours".to_owned(), json!(["chocolate", "vanilla"])),
        ]),
        all: ["collect", "train", "eval-model", "publish", "later"]
            .map(String::from)
            .into(),
        upstream: ["collect", "train", "eval-model"].map(String::from).into(),
    }
}

fn compile(source: &str) -> Result<Condition, Vec<ConditionProblem>> {
    compile_in(source, false)
}

fn compile_in(source: &str, fan_out: bool) -> Result<Condition, Vec<ConditionProblem>> {
    let f = fixture();
    let is_upstream = |name: &str| f.upstream.contains(name);
    let upstream = || f.upstream.iter().cloned().collect();
    Condition::compile(
        source,
        &ConditionScope {
            params: &f.params,
            all_stages: &f.all,
            is_upstream: &is_upstream,
            upstream: &upstream,
            fan_out,
        },
    )
}

fn view(state: &str, metrics: &[(&str, f64)]) -> StageView {
    let metrics: BTreeMap<String, f64> = metrics.iter().map(|(k, v)| ((*k).into(), *v)).collect();
    StageView {
        state: state.to_owned(),
        metrics: metrics.clone(),
        instances: vec![InstanceView {
            item: None,
            state: state.to_owned(),
            metrics,
        }],
    }
}

fn eval(source: &str, stages: &[(&str, StageView)]) -> Result<bool, ConditionError> {
    let condition = compile(source).unwrap_or_else(|p| panic!("{source}: {p:?}"));
    let f = fixture();
    let views = stages
        .iter()
        .map(|(n, v)| ((*n).to_owned(), v.clone()))
        .collect();
    condition.evaluate(
        &ConditionInput {
            params: &f.params,
            item: None,
        },
        &views,
    )
}

#[test]
fn conditions_over_params_and_metrics_give_true_or_false() {
    let train = || ("train", view("succeeded", &[("accuracy", 0.85)]));
    let gate = "stages.train.metrics.accuracy >= params.min_accuracy";
    assert_eq!(eval(gate, &[train()]), Ok(true));
    let worse = ("train", view("succeeded", &[("accuracy", 0.5)]));
    assert_eq!(eval(gate, &[worse]), Ok(false));
    assert_eq!(
        eval("params.rows > 500 && params.target == 'staging'", &[]),
        Ok(true)
    );
    assert_eq!(eval("params[\"rows\"] == 1000", &[]), Ok(true));
    assert_eq!(eval("'vanilla' in params.flavours", &[]), Ok(true));
    assert_eq!(eval("size(params.flavours) == 3", &[]), Ok(false));
    // Mixed int and double compare as numbers.
    assert_eq!(
        eval("stages.train.metrics.accuracy < 1", &[train()]),
        Ok(true)
    );
    let failed = ("collect", view("failed", &[]));
    assert_eq!(
        eval("stages.collect.state == 'failed'", &[failed]),
        Ok(true)
    );
    let dashed = ("eval-model", view("succeeded", &[("f1", 0.7)]));
    assert_eq!(
        eval("stages['eval-model'].metrics.f1 > 0.5", &[dashed]),
        Ok(true)
    );
    assert_eq!(
        eval(
            "stages.train.instances.all(i, i.state == 'succeeded')",
            &[train()]
        ),
        Ok(true)
    );
    assert_eq!(
        eval("has(stages.train.metrics.loss)", &[train()]),
        Ok(false)
    );
}

#[test]
fn a_missing_metric_or_a_non_bool_result_is_an_evaluation_error() {
    let train = || ("train", view("succeeded", &[("accuracy", 0.85)]));
    let missing = eval("stages.train.metrics.loss < 0.1", &[train()]).unwrap_err();
    let text = missing.to_string();
    assert!(
        text.contains("when `stages.train.metrics.loss < 0.1`"),
        "{text}"
    );
    assert!(text.contains("loss"), "names the missing key: {text}");

    let wrong_type = eval("params.target > 3", &[]).unwrap_err();
    assert!(
        matches!(&wrong_type, ConditionError::Evaluation { .. }),
        "{wrong_type:?}"
    );

    let number = eval("stages.train.metrics.accuracy", &[train()]).unwrap_err();
    assert_eq!(
        number,
        ConditionError::NotBool {
            expression: "stages.train.metrics.accuracy".into(),
            found: "double 0.85".into()
        }
    );
    assert!(number.to_string().contains("not true or false"), "{number}");
}

#[test]
fn a_syntax_error_gives_the_parser_message_and_its_column() {
    let problems = compile("params.rows >").unwrap_err();
    let [ConditionProblem::Syntax { line, column, .. }] = problems.as_slice() else {
        panic!("{problems:?}");
    };
    assert_eq!((*line, *column), (1, 14));
    let problems = compile("params.rows = = 3").unwrap_err();
    assert!(
        matches!(problems[0], ConditionProblem::Syntax { column, .. } if column == 13),
        "{problems:?}"
    );
}

#[test]
fn references_must_name_declared_params_and_upstream_stages() {
    let refused = |source: &str| compile(source).unwrap_err();
    assert_eq!(
        refused("params.min_acuracy < 1.0"),
        [ConditionProblem::UnknownParam("min_acuracy".into())]
    );
    assert_eq!(
        refused("params['nope'] == 1"),
        [ConditionProblem::UnknownParam("nope".into())]
    );
    assert_eq!(
        refused("stages.deploy.state == 'failed'"),
        [ConditionProblem::UnknownStage("deploy".into())]
    );
    assert_eq!(
        refused("stages.later.state == 'failed'"),
        [ConditionProblem::NotUpstream("later".into())]
    );
    assert_eq!(
        refused("stages.train.metric.accuracy > 1.0"),
        [ConditionProblem::UnknownStageField {
            stage: "train".into(),
            field: "metric".into()
        }]
    );
    // `stages.eval-model` subtracts `model` from `stages.eval`.
    let dashed = refused("stages.eval-model.metrics.f1 > 0.5");
    assert!(dashed.contains(&ConditionProblem::UnknownStage("eval".into())));
    assert!(dashed.contains(&ConditionProblem::UnknownVariable("model".into())));
    assert_eq!(
        refused("item == 'a'"),
        [ConditionProblem::UnknownVariable("item".into())]
    );
    assert!(compile_in("item == 'a'", true).is_ok());
    // Names bound by a macro are not variables of the run.
    assert!(compile("params.flavours.exists(f, f == 'vanilla')").is_ok());
}

#[test]
fn a_condition_reads_only_the_stages_it_names_unless_it_uses_the_whole_map() {
    let named = compile("stages.train.state == 'succeeded' && params.rows > 1").unwrap();
    assert_eq!(named.stages_read(), ["train"]);
    assert!(!named.reads_instances());
    let whole = compile("size(stages) == 3").unwrap();
    assert_eq!(whole.stages_read(), ["collect", "eval-model", "train"]);
    let fan = compile("stages.train.instances.exists(i, i.metrics.accuracy > 0.9)").unwrap();
    assert!(fan.reads_instances());
}

#[test]
fn fan_out_items_are_visible_as_item() {
    let condition = compile_in("item != 'vanilla'", true).unwrap();
    let f = fixture();
    let run = |item: ParamValue| {
        condition.evaluate(
            &ConditionInput {
                params: &f.params,
                item: Some(&item),
            },
            &BTreeMap::new(),
        )
    };
    assert_eq!(run(json!("chocolate")), Ok(true));
    assert_eq!(run(json!("vanilla")), Ok(false));
}

#[test]
fn hostile_expressions_are_refused_or_handled_without_overflowing_the_stack() {
    let f = fixture();
    let input = ConditionInput {
        params: &f.params,
        item: None,
    };
    // Each about as deep as the length limit allows; the CEL parser recurses on every level.
    let deep = [
        format!("{}params.rows > 1", "!".repeat(1980)),
        format!("{}params.rows", "-".repeat(1980)),
        format!("{}1 == params.rows", "1+".repeat(990)),
        format!("{}true{}", "(".repeat(990), ")".repeat(990)),
        format!("{}params.rows{} > 0", "[".repeat(990), "]".repeat(990)),
        format!("{}true", "params.rows > 0 && ".repeat(100)),
    ];
    for text in deep {
        assert!(text.chars().count() <= MAX_CONDITION_CHARS);
        if let Ok(condition) = compile(&text) {
            let _ = condition.evaluate(&input, &BTreeMap::new());
        }
    }
    let long = format!("{}true", "true && ".repeat(300));
    assert_eq!(
        compile(&long).unwrap_err(),
        [ConditionProblem::TooLong {
            chars: long.chars().count()
        }]
    );
}
