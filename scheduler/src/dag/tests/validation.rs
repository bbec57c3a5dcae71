//! One test per mistake a DAG file can make: the error variant, its place and its help.

use super::{assert_refused, refused};
use crate::cron::CronError;
use crate::dag::{DagError, MountProblem, OutputProblem, StageName, parse_dag};

/// Lines 1-4; the first stage starts on line 5.
const HEAD: &str = "name: t\ndefaults:\n  image: img\nstages:\n";

fn dag(stages: &str) -> String {
    format!("{HEAD}{stages}")
}

fn stage(name: &str) -> StageName {
    StageName(name.to_owned())
}

#[test]
fn unknown_field_names_it_and_suggests_the_closest() {
    let e = assert_refused(
        &dag("  - name: a\n    neds: [b]\n"),
        6,
        5,
        |e| matches!(e, DagError::UnknownField { field, .. } if field == "neds"),
    );
    assert!(e.help().contains("did you mean `needs`?"), "{}", e.help());
    assert!(
        e.help().contains("for_each"),
        "lists allowed fields: {}",
        e.help()
    );
    assert_refused(
        "name: t\nstagez: []\n",
        2,
        1,
        |e| matches!(e, DagError::UnknownField { suggestion: Some(s), .. } if s == "stages"),
    );
}

#[test]
fn missing_required_fields_are_named() {
    assert_refused(
        &dag("  - needs: [b]\n"),
        5,
        5,
        |e| matches!(e, DagError::MissingField { field, .. } if field == "name"),
    );
    assert_refused(
        "name: t\n",
        1,
        1,
        |e| matches!(e, DagError::MissingField { field, .. } if field == "stages"),
    );
    assert_refused(
        &dag("  - name: a\n    retries: {backoff: 5s}\n"),
        6,
        15,
        |e| matches!(e, DagError::MissingField { field, .. } if field == "limit"),
    );
}

#[test]
fn wrong_types_say_what_was_expected() {
    let e = assert_refused(&dag("  - name: a\n    retries: -1\n"), 6, 5, |e| {
        matches!(e, DagError::WrongType { .. })
    });
    assert!(e.to_string().contains("non-negative retry count"), "{e}");
    assert_refused(&dag("  - name: a\n    cache: maybe\n"), 6, 12, |e| {
        matches!(e, DagError::WrongType { .. })
    });
    assert_refused(
        &dag("  - name: a\n    resources: {gpus: -1}\n"),
        6,
        23,
        |e| matches!(e, DagError::WrongType { .. }),
    );
}

#[test]
fn yaml_syntax_errors_have_their_place() {
    assert_refused("name: t\nstages: [\n", 2, 9, |e| {
        matches!(e, DagError::Yaml { .. })
    });
    assert_refused("name: t\n  bad: indent\nstages: []\n", 2, 6, |e| {
        matches!(e, DagError::Yaml { .. })
    });
}

#[test]
fn duplicate_keys_are_refused() {
    assert_refused(
        "name: t\nname: u\nstages: []\n",
        2,
        1,
        |e| matches!(e, DagError::DuplicateKey { key: Some(k), .. } if k == "name"),
    );
}

#[test]
fn unknown_enum_values_list_the_allowed_ones() {
    let e = assert_refused(
        &dag("  - name: a\n    trigger: all_sucess\n"),
        6,
        14,
        |e| matches!(e, DagError::UnknownVariant { value, .. } if value == "all_sucess"),
    );
    assert!(
        e.help().contains("did you mean `all_success`?"),
        "{}",
        e.help()
    );
    assert!(e.help().contains("none_failed"), "{}", e.help());
    assert_refused(
        &dag("  - name: a\n    executor: kubernetes\n"),
        6,
        15,
        |e| matches!(e, DagError::UnknownVariant { allowed, .. } if allowed == &["docker", "process"]),
    );
}

#[test]
fn dag_and_stage_names_follow_their_patterns() {
    assert_refused(
        "name: Cake_Pop\ndefaults: {image: i}\nstages: [{name: a}]\n",
        1,
        7,
        |e| matches!(e, DagError::InvalidDagName { name, .. } if name == "Cake_Pop"),
    );
    assert_refused(
        &dag("  - name: train[0]\n"),
        5,
        11,
        |e| matches!(e, DagError::InvalidStageName { name, .. } if name == "train[0]"),
    );
    assert_refused(&dag("  - name: a/b\n"), 5, 11, |e| {
        matches!(e, DagError::InvalidStageName { .. })
    });
}

#[test]
fn duplicate_stage_points_at_the_second_and_mentions_the_first() {
    let e = assert_refused(
        &dag("  - name: a\n  - name: b\n  - name: a\n"),
        7,
        11,
        |e| matches!(e, DagError::DuplicateStage { first_line: 5, .. }),
    );
    assert!(e.to_string().contains("first defined on line 5"), "{e}");
}

#[test]
fn empty_stage_list_is_refused() {
    assert_refused("name: t\nstages: []\n", 2, 9, |e| {
        matches!(e, DagError::NoStages { .. })
    });
}

#[test]
fn unknown_dependency_suggests_the_closest_stage() {
    let e = assert_refused(
        &dag("  - name: train\n  - name: b\n    needs: [trian]\n"),
        7,
        13,
        |e| {
            matches!(e, DagError::UnknownDependency { stage, missing, .. }
            if stage == &StageName("b".into()) && missing == "trian")
        },
    );
    assert!(e.help().contains("did you mean `train`?"), "{}", e.help());
}

#[test]
fn self_and_repeated_dependencies_are_refused() {
    assert_refused(&dag("  - name: a\n    needs: [a]\n"), 6, 13, |e| {
        matches!(e, DagError::SelfDependency { .. })
    });
    assert_refused(
        &dag("  - name: a\n  - name: b\n    needs: [a, a]\n"),
        7,
        16,
        |e| matches!(e, DagError::DuplicateDependency { dependency, .. } if dependency == &stage("a")),
    );
}

#[test]
fn cycles_print_their_path() {
    let yaml = dag(
        "  - name: a\n    needs: [c]\n  - name: b\n    needs: [a]\n  - name: c\n    needs: [b]\n  - name: d\n    needs: [a]\n",
    );
    let e = assert_refused(&yaml, 6, 13, |e| matches!(e, DagError::Cycle { .. }));
    assert_eq!(e.to_string(), "dependency cycle: a -> b -> c -> a");
    assert!(
        e.help()
            .contains("`b` needs `a`, `c` needs `b`, `a` needs `c`"),
        "{}",
        e.help()
    );
}

#[test]
fn durations_need_units_and_a_valid_spelling() {
    let e = assert_refused(&dag("  - name: a\n    timeout: 30\n"), 6, 14, |e| {
        matches!(
            e,
            DagError::DurationWithoutUnit {
                field: "timeout",
                ..
            }
        )
    });
    assert!(e.help().contains("`30s`"), "{}", e.help());
    assert_refused(&dag("  - name: a\n    timeout: soon\n"), 6, 14, |e| {
        matches!(
            e,
            DagError::InvalidDuration {
                field: "timeout",
                ..
            }
        )
    });
    assert_refused(&dag("  - name: a\n    timeout: 0s\n"), 6, 14, |e| {
        matches!(e, DagError::ZeroTimeout { .. })
    });
    assert_refused(
        "name: t\ntimeout: 2 hours please\nstages: [{name: a, image: i}]\n",
        2,
        10,
        |e| matches!(e, DagError::InvalidDuration { .. }),
    );
    let ok = parse_dag(
        &dag("  - name: a\n    timeout: 1h30m\n    retries: {limit: 1, backoff: 500ms}\n"),
        "d",
    );
    let ok = ok.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        ok.stages[0].timeout,
        Some(std::time::Duration::from_secs(5400))
    );
}

#[test]
fn retry_backoff_must_not_exceed_its_maximum() {
    assert_refused(
        &dag("  - name: a\n    retries: {limit: 2, backoff: 10m, max_backoff: 1m}\n"),
        6,
        34,
        |e| matches!(e, DagError::BackoffAboveMax { .. }),
    );
    assert_refused(
        &dag("  - name: a\n    retries: {limit: 2, backoff: 10}\n"),
        6,
        34,
        |e| {
            matches!(
                e,
                DagError::DurationWithoutUnit {
                    field: "backoff",
                    ..
                }
            )
        },
    );
}

#[test]
fn resources_refuse_bad_quantities() {
    assert_refused(
        &dag("  - name: a\n    resources: {cpus: 0}\n"),
        6,
        23,
        |e| matches!(e, DagError::InvalidCpus { .. }),
    );
    let e = assert_refused(
        &dag("  - name: a\n    resources: {memory: 4GB}\n"),
        6,
        25,
        |e| matches!(e, DagError::InvalidMemory { value, .. } if value == "4GB"),
    );
    assert!(e.help().contains("Gi"), "{}", e.help());
}

#[test]
fn env_names_must_be_valid_and_not_reserved() {
    assert_refused(
        &dag("  - name: a\n    env:\n      MY-VAR: x\n"),
        7,
        7,
        |e| matches!(e, DagError::InvalidEnvName { name, .. } if name == "MY-VAR"),
    );
    assert_refused(
        &dag("  - name: a\n    env:\n      VISHWA_RUN_ID: x\n"),
        7,
        7,
        |e| matches!(e, DagError::ReservedEnvName { .. }),
    );
    assert_refused(
        &dag("  - name: a\n    env:\n      T: {secret: \"a b\"}\n"),
        7,
        19,
        |e| matches!(e, DagError::InvalidSecretName { .. }),
    );
    assert_refused(
        &dag("  - name: a\n    env:\n      T: {secrt: x}\n"),
        7,
        11,
        |e| matches!(e, DagError::UnknownField { suggestion: Some(s), .. } if s == "secret"),
    );
}

#[test]
fn commands_must_not_be_empty() {
    assert_refused(&dag("  - name: a\n    command: []\n"), 6, 14, |e| {
        matches!(e, DagError::EmptyCommand { .. })
    });
    assert_refused(&dag("  - name: a\n    command: \"  \"\n"), 6, 14, |e| {
        matches!(e, DagError::EmptyCommand { .. })
    });
}

#[test]
fn docker_stages_need_an_image_and_process_stages_a_command() {
    assert_refused(
        "name: t\nstages:\n  - name: a\n",
        3,
        5,
        |e| matches!(e, DagError::MissingImage { stage, .. } if stage == &StageName("a".into())),
    );
    assert_refused(
        "name: t\nstages:\n  - name: a\n    executor: process\n",
        3,
        5,
        |e| matches!(e, DagError::ProcessStageWithoutCommand { .. }),
    );
    let ok = parse_dag(
        "name: t\nstages:\n  - name: a\n    executor: process\n    command: ls\n",
        "d",
    );
    assert!(ok.is_ok());
}

#[test]
fn outputs_are_plain_file_names() {
    for (output, problem) in [
        ("a/b.txt", OutputProblem::PathSeparator),
        ("/abs.txt", OutputProblem::PathSeparator),
        ("a\\\\b", OutputProblem::PathSeparator),
        ("..", OutputProblem::DotName),
        (".", OutputProblem::DotName),
        ("", OutputProblem::Empty),
    ] {
        let yaml = dag(&format!(
            "  - name: a\n    outputs: [ok.txt, \"{output}\"]\n"
        ));
        assert_refused(
            &yaml,
            6,
            23,
            |e| matches!(e, DagError::InvalidOutput { problem: p, .. } if *p == problem),
        );
    }
    assert_refused(&dag("  - name: a\n    outputs: [x, x]\n"), 6, 18, |e| {
        matches!(e, DagError::DuplicateOutput { .. })
    });
}

#[test]
fn mounts_are_absolute_host_container_pairs() {
    for (mount, problem) in [
        ("/a", MountProblem::Shape),
        ("/a:/b:/c:ro", MountProblem::Shape),
        ("a:/b", MountProblem::HostNotAbsolute),
        ("/a:b", MountProblem::ContainerNotAbsolute),
        ("/a:/b:rx", MountProblem::UnknownMode("rx".into())),
    ] {
        let yaml = dag(&format!("  - name: a\n    mounts: [\"{mount}\"]\n"));
        assert_refused(
            &yaml,
            6,
            14,
            |e| matches!(e, DagError::InvalidMount { problem: p, .. } if *p == problem),
        );
    }
    let ok = parse_dag(&dag("  - name: a\n    mounts: [\"/data:/data:ro\"]\n"), "d");
    assert!(ok.is_ok_and(|d| d.stages[0].mounts[0].read_only));
}

#[test]
fn when_must_not_be_empty() {
    assert_refused(&dag("  - name: a\n    when: \" \"\n"), 6, 11, |e| {
        matches!(e, DagError::EmptyWhen { .. })
    });
}

#[test]
fn for_each_takes_a_list_or_a_declared_list_param() {
    let params = "name: t\nparams:\n  n: 3\n  xs: [a, b]\ndefaults: {image: i}\nstages:\n";
    assert_refused(
        &format!("{params}  - name: s\n    for_each: xs\n"),
        8,
        15,
        |e| matches!(e, DagError::InvalidForEach { .. }),
    );
    let e = assert_refused(
        &format!("{params}  - name: s\n    for_each: \"{{{{ params.ys }}}}\"\n"),
        8,
        15,
        |e| matches!(e, DagError::ForEachUnknownParam { param, .. } if param == "ys"),
    );
    assert!(e.help().contains("n, xs"), "{}", e.help());
    assert_refused(
        &format!("{params}  - name: s\n    for_each: \"{{{{ params.n }}}}\"\n"),
        8,
        15,
        |e| matches!(e, DagError::ForEachParamNotList { .. }),
    );
    assert_refused(
        &format!("{params}  - name: s\n    for_each: [a, [b]]\n"),
        8,
        19,
        |e| matches!(e, DagError::ForEachItemNotScalar { .. }),
    );
}

#[test]
fn max_parallel_needs_for_each_and_a_positive_value() {
    assert_refused(
        &dag("  - name: a\n    for_each: [1, 2]\n    max_parallel: 0\n"),
        7,
        19,
        |e| matches!(e, DagError::MaxParallelZero { .. }),
    );
    assert_refused(&dag("  - name: a\n    max_parallel: 2\n"), 6, 19, |e| {
        matches!(e, DagError::MaxParallelWithoutForEach { .. })
    });
}

#[test]
fn item_is_only_available_in_fan_out_stages() {
    assert_refused(
        &dag("  - name: a\n    command: [echo, \"{{ item }}\"]\n"),
        6,
        21,
        |e| matches!(e, DagError::ItemOutsideForEach { .. }),
    );
    assert!(
        parse_dag(
            &dag("  - name: a\n    for_each: [1]\n    command: [echo, \"{{ item }}\"]\n"),
            "d"
        )
        .is_ok()
    );
}

#[test]
fn templates_may_only_reference_declared_names() {
    let head = "name: t\nparams:\n  rows: 5\ndefaults: {image: i}\nstages:\n";
    let e = assert_refused(
        &format!("{head}  - name: a\n    command: [run, \"{{{{ params.row }}}}\"]\n"),
        7,
        20,
        |e| matches!(e, DagError::UnknownTemplateReference { reference, .. } if reference == "params.row"),
    );
    assert!(
        e.help().contains("did you mean `params.rows`?"),
        "{}",
        e.help()
    );
    assert!(e.help().contains("declared params: rows"), "{}", e.help());
    assert_refused(
        &format!("{head}  - name: a\n    env:\n      X: \"{{{{ secrets.x }}}}\"\n"),
        8,
        10,
        |e| matches!(e, DagError::UnknownTemplateReference { reference, .. } if reference == "secrets.x"),
    );
    assert_refused(
        &format!("{head}  - name: a\n    command: \"echo {{{{ params.rows\"\n"),
        7,
        14,
        |e| matches!(e, DagError::TemplateSyntax { .. }),
    );
    assert!(parse_dag(&format!("{head}  - name: a\n    command: \"echo {{{{ params.rows }}}} {{{{ run.id }}}} {{{{ run.logical_time }}}}\"\n"), "d").is_ok());
}

#[test]
fn schedule_values_are_checked_where_they_are_written() {
    let head = "name: t\nschedule:\n";
    let tail = "defaults: {image: i}\nstages: [{name: a}]\n";
    let e = assert_refused(
        &format!("{head}  cron: \"61 * * * *\"\n{tail}"),
        3,
        9,
        |e| {
            matches!(
                e,
                DagError::InvalidCron {
                    error: CronError::OutOfRange { .. },
                    ..
                }
            )
        },
    );
    assert!(
        e.to_string()
            .contains("minute field `61` is out of range 0-59"),
        "{e}"
    );
    let e = assert_refused(
        &format!("{head}  cron: \"@daily\"\n  timezone: Asia/Kolkatta\n{tail}"),
        4,
        13,
        |e| matches!(e, DagError::UnknownTimezone { .. }),
    );
    assert!(
        e.help().contains("did you mean `Asia/Kolkata`?"),
        "{}",
        e.help()
    );
    let e = assert_refused(
        &format!("{head}  cron: \"@daily\"\n  timezone: kolkata\n{tail}"),
        4,
        13,
        |e| matches!(e, DagError::UnknownTimezone { .. }),
    );
    assert!(e.help().contains("`Asia/Kolkata`"), "{}", e.help());
    assert_refused(
        &format!("{head}  cron: \"@daily\"\n  catchup: sometimes\n{tail}"),
        4,
        12,
        |e| matches!(e, DagError::UnknownVariant { .. }),
    );
    assert_refused(
        &format!("{head}  cron: \"@daily\"\n  overlap: queue\n{tail}"),
        4,
        12,
        |e| matches!(e, DagError::UnknownVariant { .. }),
    );
    assert_refused(
        &format!("name: t\nmax_active_runs: 0\n{tail}"),
        2,
        18,
        |e| matches!(e, DagError::MaxActiveRunsZero { .. }),
    );
}

#[test]
fn params_are_scalars_or_lists_of_scalars() {
    let tail = "defaults: {image: i}\nstages: [{name: a}]\n";
    assert_refused(
        &format!("name: t\nparams:\n  bad-name: 1\n{tail}"),
        3,
        3,
        |e| matches!(e, DagError::InvalidParamName { .. }),
    );
    assert_refused(
        &format!("name: t\nparams:\n  nested: {{a: 1}}\n{tail}"),
        3,
        11,
        |e| matches!(e, DagError::InvalidParamValue { found: "a map", .. }),
    );
    assert_refused(
        &format!("name: t\nparams:\n  deep: [[1]]\n{tail}"),
        3,
        9,
        |e| matches!(e, DagError::InvalidParamValue { .. }),
    );
}

#[test]
fn per_stage_fields_are_refused_in_defaults() {
    let e = assert_refused(
        "name: t\ndefaults:\n  image: i\n  needs: [a]\nstages: [{name: a}]\n",
        4,
        10,
        |e| matches!(e, DagError::NotAllowedInDefaults { field: "needs", .. }),
    );
    assert!(
        e.help().contains("set `needs` on each stage"),
        "{}",
        e.help()
    );
}

#[test]
fn all_semantic_errors_are_reported_together_in_file_order() {
    let yaml =
        dag("  - name: a\n    timeout: 30\n  - name: b\n    needs: [zz]\n    outputs: [../x]\n");
    let errors = refused(&yaml);
    let lines: Vec<usize> = errors.iter().map(|e| e.location().line).collect();
    assert_eq!(lines, [6, 8, 9], "{errors}");
    let printed = errors.to_string();
    assert_eq!(printed.matches(": error: ").count(), 3, "{printed}");
    assert_eq!(printed.matches("\n  help: ").count(), 3, "{printed}");
    assert!(printed.starts_with("dag.yaml:6:14: error: `timeout` value `30` has no unit in stage `a`\n  help: add a unit"), "{printed}");
}

#[test]
fn an_error_in_defaults_is_reported_once_not_per_stage() {
    let yaml = "name: t\ndefaults:\n  image: i\n  command: [echo, \"{{ item }}\"]\nstages:\n  - name: a\n  - name: b\n";
    let errors = refused(yaml);
    assert_eq!(errors.len(), 1, "{errors}");
}

/// Lines 1-6; the stage with the condition starts on line 7, its `when` is on line 9.
fn conditioned(when: &str) -> String {
    format!(
        "name: t\nparams: {{min_accuracy: 0.8}}\ndefaults: {{image: i}}\nstages:\n  - {{name: train}}\n  - {{name: other}}\n  - name: publish\n    needs: [train]\n    when: {when}\n"
    )
}

#[test]
fn when_syntax_errors_point_into_the_expression() {
    // Plain scalar starting at column 11: the parser stops at the end, column 11 + 37.
    let e = assert_refused(
        &conditioned("stages.train.metrics.x >= params.min_accuracy &&"),
        9,
        59,
        |e| matches!(e, DagError::WhenSyntax { .. }),
    );
    let text = e.to_string();
    assert!(
        text.starts_with(
            "syntax error in `when` of stage `publish`: Syntax error: mismatched input '<EOF>'"
        ),
        "{text}"
    );
    assert!(text.contains("(expression line 1, column 49)"), "{text}");
    assert!(e.help().contains("CEL expression"), "{}", e.help());
    // Quoted: the quote shifts the place by one.
    assert_refused(&conditioned("\"params.min_accuracy > > 1\""), 9, 34, |e| {
        matches!(e, DagError::WhenSyntax { .. })
    });
    // A block scalar: the place where its text starts.
    assert_refused(&conditioned("|\n      params.min_accuracy >"), 10, 7, |e| {
        matches!(e, DagError::WhenSyntax { .. })
    });
}

#[test]
fn when_references_unknown_params_and_stages_are_refused() {
    let e = assert_refused(
        &conditioned("params.min_acuracy > 0.5"),
        9,
        11,
        |e| matches!(e, DagError::WhenUnknownParam { param, .. } if param == "min_acuracy"),
    );
    assert!(
        e.help().starts_with("did you mean `min_accuracy`?"),
        "{}",
        e.help()
    );
    let e = assert_refused(
        &conditioned("stages.trian.state == 'succeeded'"),
        9,
        11,
        |e| matches!(e, DagError::WhenUnknownStage { reference, .. } if reference == "trian"),
    );
    assert!(e.help().contains("did you mean `train`?"), "{}", e.help());
    let e = assert_refused(
        &conditioned("stages.other.state == 'succeeded'"),
        9,
        11,
        |e| matches!(e, DagError::WhenStageNotUpstream { reference, .. } if reference == "other"),
    );
    assert!(e.help().contains("add `other` to `needs`"), "{}", e.help());
    assert_refused(
        &conditioned("stages.train.metric.x > 1.0"),
        9,
        11,
        |e| matches!(e, DagError::WhenUnknownStageField { field, .. } if field == "metric"),
    );
    let e = assert_refused(
        &conditioned("accuracy > 0.5"),
        9,
        11,
        |e| matches!(e, DagError::WhenUnknownVariable { name, .. } if name == "accuracy"),
    );
    assert!(e.help().contains("`params`, `stages`"), "{}", e.help());
}

#[test]
fn when_may_read_stages_needed_through_others_and_comes_from_defaults() {
    let yaml = "name: t\nparams: {go: true}\ndefaults: {image: i, when: params.go}\nstages:\n  - {name: a}\n  - {name: b, needs: [a]}\n  - {name: c, needs: [b], when: \"stages.a.state == 'succeeded'\"}\n";
    let dag = parse_dag(yaml, "d").unwrap_or_else(|e| panic!("{e}"));
    let when: Vec<&str> = dag
        .stages
        .iter()
        .map(|s| s.when.as_ref().map_or("", |w| w.as_str()))
        .collect();
    assert_eq!(
        when,
        ["params.go", "params.go", "stages.a.state == 'succeeded'"]
    );
    // A `defaults:` condition is checked for every stage, and reported once.
    let bad =
        "name: t\ndefaults: {image: i, when: params.nope}\nstages:\n  - {name: a}\n  - {name: b}\n";
    let errors = refused(bad);
    assert_eq!(errors.len(), 1, "{errors}");
}

#[test]
fn approval_takes_a_message_and_a_positive_timeout() {
    let ok = parse_dag(
        &dag("  - name: a\n    approval: {message: ship?, timeout: 24h}\n  - name: b\n    approval: {}\n"),
        "t.yaml",
    )
    .expect("valid");
    let a = ok.stages[0].approval.as_ref().unwrap();
    assert_eq!(a.message, "ship?");
    assert_eq!(a.timeout, Some(std::time::Duration::from_secs(24 * 3600)));
    let b = ok.stages[1].approval.as_ref().unwrap();
    assert_eq!(b.message, "approve stage `b`?");
    assert_eq!(
        b.timeout, None,
        "no timeout: it waits until someone decides"
    );
    assert_refused(
        &dag("  - name: a\n    approval: {timeout: soon}\n"),
        6,
        25,
        |e| {
            matches!(
                e,
                DagError::InvalidDuration {
                    field: "approval.timeout",
                    ..
                } | DagError::DurationWithoutUnit {
                    field: "approval.timeout",
                    ..
                }
            )
        },
    );
    assert_refused(
        &dag("  - name: a\n    approval: {timeout: 0s}\n"),
        6,
        25,
        |e| matches!(e, DagError::ZeroTimeout { .. }),
    );
    assert_refused(
        &dag("  - name: a\n    approval: {mesage: x}\n"),
        6,
        16,
        |e| matches!(e, DagError::UnknownField { field, .. } if field == "mesage"),
    );
    assert_refused(
        "name: t\ndefaults:\n  image: img\n  approval: {}\nstages:\n  - name: a\n",
        4,
        13,
        |e| {
            matches!(
                e,
                DagError::NotAllowedInDefaults {
                    field: "approval",
                    ..
                }
            )
        },
    );
}
