//! `vishwa run`, `validate` and `graph` as a user types them: exit codes, what the output
//! shows, errors that name file:line:col, Graphviz output and `-o json`.

mod common;

use std::collections::BTreeSet;

use std::time::Duration;

use common::{
    Background, assert_no_containers_of_run, dags_dir, ensure_busybox_image, unique_name, vishwa,
    wait_until, write_file,
};
use nix::sys::signal::Signal;
use serde_json::Value;

/// The instances of `dags/hello-pipeline` with its default params.
const HELLO_INSTANCES: &[&str] = &[
    "ingest",
    "validate",
    "features[chocolate]",
    "features[vanilla]",
    "features[red-velvet]",
    "train",
    "report",
];

fn hello_pipeline() -> String {
    dags_dir().join("hello-pipeline").display().to_string()
}

/// Whether `stdout` has a state line `TIME  STAGE  STATE ...` for `stage` in `state`.
fn has_state_line(stdout: &str, stage: &str, state: &str) -> bool {
    stdout.lines().any(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        words.len() >= 3 && words[1] == stage && words[2] == state
    })
}

/// The run id from the first line, `run <id> of <dag> (<n> stages)`.
fn run_id_of(stdout: &str) -> String {
    let first = stdout.lines().next().unwrap_or_default();
    let words: Vec<&str> = first.split_whitespace().collect();
    assert!(
        words.len() >= 4 && words[0] == "run" && words[2] == "of",
        "first line: {first}"
    );
    words[1].to_owned()
}

#[test]
fn run_hello_pipeline_exits_0_and_shows_every_stage_succeeding_with_its_logs() {
    ensure_busybox_image();
    let outcome = vishwa(&["run", &hello_pipeline(), "--slots", "2"]);
    outcome.expect_code(0);
    let out = &outcome.stdout;
    let id = run_id_of(out);
    assert!(id.starts_with("hello-pipeline-"), "{outcome}");
    for instance in HELLO_INSTANCES {
        assert!(
            has_state_line(out, instance, "succeeded"),
            "no `{instance} succeeded` line: {outcome}"
        );
    }
    // Each stage's output, prefixed with its name.
    let log_lines = [
        ("ingest", "collected 200 rows"),
        (
            "validate",
            "validation passed: 200 rows, all fields in range",
        ),
        ("features[chocolate]", "chocolate: "),
        ("features[vanilla]", "vanilla: "),
        ("features[red-velvet]", "red-velvet: "),
        ("train", "model score "),
        (
            "report",
            &format!("run {id} finished its pipeline on the worker host"),
        ),
    ];
    for (stage, text) in log_lines {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(&format!("{stage} ")) && l.contains(text)),
            "no log line `{text}` of {stage}: {outcome}"
        );
    }
    let last = out.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("run {id} succeeded in "))
            && last.ends_with("(7 of 7 stages succeeded)"),
        "last line: {last}"
    );
    assert_no_containers_of_run(&id);
}

#[test]
fn run_exits_1_when_a_stage_fails() {
    ensure_busybox_image();
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("cli-fails");
    let path = write_file(
        dir.path(),
        "fails.yaml",
        &format!(
            r#"name: {name}
stages:
  - name: boom
    image: vishwa-test/busybox:1
    command: echo "going down"; exit 7
  - name: never
    needs: [boom]
    executor: process
    command: echo "must not run"
"#
        ),
    );
    let outcome = vishwa(&["run", &path]);
    outcome.expect_code(1);
    let out = &outcome.stdout;
    assert!(has_state_line(out, "boom", "failed"), "{outcome}");
    assert!(has_state_line(out, "never", "upstream_failed"), "{outcome}");
    assert!(out.contains("going down"), "{outcome}");
    assert!(!out.contains("must not run"), "{outcome}");
    let id = run_id_of(out);
    let last = out.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("run {id} failed in ")) && last.contains("boom"),
        "last line: {last}"
    );
    assert_no_containers_of_run(&id);
}

#[test]
fn interrupting_run_cancels_the_run_exits_3_and_leaves_no_container() {
    interrupt_run_mid_stage(Signal::SIGINT);
}

/// Issue 10, defect 4: SIGTERM (what CI systems and `timeout` send) is treated like Ctrl-C.
#[test]
fn sigterm_to_run_cancels_the_run_exits_3_and_leaves_no_container() {
    interrupt_run_mid_stage(Signal::SIGTERM);
}

/// Starts `vishwa run` of a long Docker stage, sends `signal` once the stage runs, and checks
/// the run is cancelled, `vishwa run` exits 3 and no container of the run is left.
fn interrupt_run_mid_stage(signal: Signal) {
    ensure_busybox_image();
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("cli-interrupt");
    let path = write_file(
        dir.path(),
        "long.yaml",
        &format!(
            r#"name: {name}
stages:
  - name: sleeper
    image: vishwa-test/busybox:1
    command: [sleep, "300"]
"#
        ),
    );
    let run = Background::start(&["run", &path]);
    let running = wait_until(Duration::from_secs(30), || {
        has_state_line(&run.stdout(), "sleeper", "running")
    });
    assert!(running, "the sleeper never ran: {}", run.stdout());
    let id = run_id_of(&run.stdout());

    run.signal(signal);
    let outcome = run.finish(Duration::from_secs(15));
    outcome.expect_code(3);
    assert!(
        has_state_line(&outcome.stdout, "sleeper", "cancelled"),
        "{outcome}"
    );
    assert!(
        outcome.stderr.contains(&format!("cancelling run {id}")),
        "{outcome}"
    );
    assert_no_containers_of_run(&id);
}

#[test]
fn run_with_an_unknown_param_exits_2_naming_it_and_the_known_ones() {
    let outcome = vishwa(&["run", &hello_pipeline(), "-p", "unknown=1"]);
    outcome.expect_code(2);
    assert_eq!(outcome.stdout, "", "nothing ran: {outcome}");
    let error = outcome.stderr.trim_end();
    assert!(
        error.contains("unknown param `unknown`"),
        "the message names the param: {outcome}"
    );
    for known in ["rows", "flavours", "min_score"] {
        assert!(
            error.contains(known),
            "the message lists `{known}`: {outcome}"
        );
    }
}

#[test]
fn run_with_a_param_that_is_not_name_value_exits_2() {
    let outcome = vishwa(&["run", &hello_pipeline(), "-p", "rows"]);
    outcome.expect_code(2);
    assert!(outcome.stderr.contains("name=value"), "{outcome}");
}

#[test]
fn validate_reports_a_cycle_with_file_line_col_and_the_cycle_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(
        dir.path(),
        "cyclic.yaml",
        r#"name: cyclic
defaults:
  image: vishwa-test/busybox:1
stages:
  - name: a
    needs: [c]
    command: echo a
  - name: b
    needs: [a]
    command: echo b
  - name: c
    needs: [b]
    command: echo c
"#,
    );
    let outcome = vishwa(&["validate", &path]);
    outcome.expect_code(2);
    let line = outcome
        .stderr
        .lines()
        .find(|l| l.contains("dependency cycle"))
        .unwrap_or_else(|| panic!("no cycle error: {outcome}"));

    // `<file>:<line>:<col>: error: dependency cycle: a -> b -> c -> a`
    let rest = line
        .strip_prefix(&format!("{path}:"))
        .unwrap_or_else(|| panic!("the error starts with the file: {line}"));
    let mut parts = rest.splitn(3, ':');
    let row: u32 = parts.next().unwrap().parse().expect("a line number");
    let col: u32 = parts.next().unwrap().parse().expect("a column number");
    assert!((5..=13).contains(&row) && col >= 1, "{line}");
    let cycle = line
        .split("dependency cycle: ")
        .nth(1)
        .expect("the cycle's path");
    let stages: Vec<&str> = cycle.split(" -> ").collect();
    assert_eq!(stages.len(), 4, "{line}");
    assert_eq!(stages.first(), stages.last(), "the path closes: {line}");
    assert_eq!(
        stages.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from(["a", "b", "c"]),
        "{line}"
    );

    // `run` refuses the same file the same way, before starting anything.
    let run = vishwa(&["run", &path]);
    run.expect_code(2);
    assert!(run.stderr.contains("dependency cycle"), "{run}");
}

/// The DOT text with the insides of quoted strings removed, and whether every quote closed.
fn outside_quotes(dot: &str) -> (String, bool) {
    let mut out = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in dot.chars() {
        if quoted {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => quoted = false,
                _ => {}
            }
        } else {
            if c == '"' {
                quoted = true;
            }
            out.push(c);
        }
    }
    (out, !quoted)
}

#[test]
fn graph_dot_prints_graphviz_with_every_stage_and_edge() {
    let outcome = vishwa(&["graph", "--dot", &hello_pipeline()]);
    outcome.expect_code(0);
    let dot = outcome.stdout.trim_end();
    assert!(dot.starts_with("digraph \"hello-pipeline\" {"), "{outcome}");
    assert!(dot.ends_with('}'), "{outcome}");
    let (structure, quotes_closed) = outside_quotes(dot);
    assert!(quotes_closed, "every quoted string is closed: {outcome}");
    assert_eq!(structure.matches('{').count(), 1, "{outcome}");
    assert_eq!(structure.matches('}').count(), 1, "{outcome}");
    assert!(
        structure
            .lines()
            .skip(1)
            .all(|l| l.trim().is_empty() || l.trim() == "}" || l.trim_end().ends_with(';')),
        "every statement ends with `;`: {outcome}"
    );
    for stage in ["ingest", "validate", "features", "train", "report"] {
        assert!(
            dot.contains(&format!("\"{stage}\" [")),
            "node {stage}: {outcome}"
        );
    }
    for (from, to) in [
        ("ingest", "validate"),
        ("validate", "features"),
        ("features", "train"),
        ("train", "report"),
    ] {
        assert!(
            dot.contains(&format!("\"{from}\" -> \"{to}\";")),
            "edge {from} -> {to}: {outcome}"
        );
    }
}

#[test]
fn json_output_of_validate_and_run_parses() {
    let validate = vishwa(&["-o", "json", "validate", &hello_pipeline()]);
    validate.expect_code(0);
    let results: Value = serde_json::from_str(&validate.stdout).unwrap();
    assert_eq!(results[0]["ok"], true, "{validate}");
    assert_eq!(results[0]["dag"], "hello-pipeline", "{validate}");

    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("cli-json");
    let path = write_file(
        dir.path(),
        "json.yaml",
        &format!(
            r#"name: {name}
params:
  who: world
stages:
  - name: greet
    executor: process
    command: echo "hello {{{{ params.who }}}}"
  - name: after
    needs: [greet]
    executor: process
    command: echo "after $VISHWA_PARAM_WHO"
"#
        ),
    );
    let run = vishwa(&["-o", "json", "run", &path, "-p", "who=json"]);
    run.expect_code(0);
    let values: Vec<Value> = serde_json::Deserializer::from_slice(&run.stdout_bytes)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("not a JSON stream ({e}): {run}"));
    let last = values.last().expect("at least one value");
    assert_eq!(last["run"]["state"], "succeeded", "{run}");
    assert_eq!(last["run"]["dag"], name.as_str(), "{run}");
    assert_eq!(last["run"]["stages"]["succeeded"], 2, "{run}");
    let logs: Vec<&str> = values
        .iter()
        .filter_map(|v| v["log"]["text"].as_str())
        .collect();
    assert!(logs.contains(&"hello json\n"), "{run}");
    assert!(logs.contains(&"after json\n"), "{run}");
    let stage_states: Vec<(&str, &str)> = values
        .iter()
        .filter_map(|v| Some((v["stage"]["name"].as_str()?, v["stage"]["state"].as_str()?)))
        .collect();
    assert!(stage_states.contains(&("greet", "succeeded")), "{run}");
    assert!(stage_states.contains(&("after", "succeeded")), "{run}");
}

/// A param a hostile operator might pass: command substitutions, backticks, `;`, both
/// quotes, a newline, a glob and a variable. Each would run `touch` on `marker` if it ever
/// became shell syntax.
fn hostile_value(marker: &std::path::Path) -> String {
    let m = marker.display();
    format!(
        "a $(touch {m}.1) `touch {m}.2` ; touch {m}.3 ' \" \n; touch {m}.4\n\\ * $HOME ${{HOME}} '$(touch {m}.5)'"
    )
}

/// The hex SHA-256 of `text`.
fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Issue 10, defect 5 (docs/security.md): params and items reach string-form commands,
/// in Docker and in the process executor, verbatim in every quoting context, and nothing
/// in them runs.
#[test]
fn params_and_items_in_shell_commands_arrive_verbatim_and_never_run() {
    ensure_busybox_image();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let marker = dir.path().join("pwned");
    let value = hostile_value(&marker);
    let item = format!("i;touch {}.item", marker.display());
    let name = unique_name("cli-inject");
    let o = out.display();
    let path = write_file(
        dir.path(),
        "inject.yaml",
        &format!(
            r#"name: {name}
params:
  x: ""
stages:
  - name: boxed
    image: vishwa-test/busybox:1
    command: printf '%s' {{{{ params.x }}}} | sha256sum; printf '%s' "{{{{ params.x }}}}" | sha256sum; printf '%s' 'q{{{{ params.x }}}}q' | sha256sum
  - name: local
    executor: process
    command: |
      printf '%s' {{{{ params.x }}}} > {o}/bare
      printf '%s' "{{{{ params.x }}}}" > {o}/double
      printf '%s' 'q{{{{ params.x }}}}q' > {o}/single
      cat > {o}/heredoc <<EOF
      {{{{ params.x }}}}
      EOF
  - name: each
    executor: process
    for_each: [{item:?}]
    command: printf '%s' {{{{ item }}}} > {o}/item
"#
        ),
    );
    let outcome = vishwa(&["run", &path, "-p", &format!("x={value}")]);
    outcome.expect_code(0);
    let read = |file: &str| std::fs::read_to_string(out.join(file)).unwrap();
    assert_eq!(read("bare"), value, "bare");
    assert_eq!(read("double"), value, "double quotes");
    assert_eq!(read("single"), format!("q{value}q"), "single quotes");
    assert_eq!(read("heredoc"), format!("{value}\n"), "here-document");
    assert_eq!(read("item"), item, "for_each item");
    // In the container: the same bytes, hashed.
    let plain = sha256_hex(&value);
    let quoted = sha256_hex(&format!("q{value}q"));
    let hashes: Vec<&str> = outcome
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("boxed ") && l.trim_end().ends_with(" -"))
        .filter_map(|l| l.split_once('|')?.1.split_whitespace().next())
        .collect();
    assert_eq!(hashes, [&plain, &plain, &quoted], "{outcome}");
    let ran: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pwned"))
        .collect();
    assert!(ran.is_empty(), "injected commands ran: {ran:?}");
}
