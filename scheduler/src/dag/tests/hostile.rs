//! Input meant to hurt, or simply broken: it must be refused quickly and clearly, and
//! large honest DAGs must stay fast.

use std::time::{Duration, Instant};

use super::refused;
use crate::dag::{DagError, MAX_DAG_FILE_BYTES, parse_dag};

/// A guard against hangs, not a speed test: speed is measured by `vishwa-bench validate`.
/// Anything still running after this long would be a hang whatever the machine's load.
const HANG_GUARD: Duration = Duration::from_secs(30);

#[test]
fn empty_and_comment_only_files_are_refused_clearly() {
    for yaml in [
        "",
        "   \n\n",
        "# just a comment\n# and another\n",
        "---\n# c\n",
    ] {
        let errors = refused(yaml);
        assert!(
            matches!(errors.errors[..], [DagError::EmptyFile { .. }]),
            "{yaml:?}: {errors}"
        );
        assert_eq!(
            errors.to_string().lines().next(),
            Some("dag.yaml: error: empty DAG file")
        );
    }
}

#[test]
fn non_mapping_documents_are_refused() {
    for yaml in ["~\n", "null\n", "hello\n", "[1, 2]\n", "42\n"] {
        let errors = refused(yaml);
        assert_eq!(errors.len(), 1, "{yaml:?}: {errors}");
    }
    let errors = refused("name: a\nstages: []\n---\nname: b\nstages: []\n");
    assert_eq!(errors.len(), 1, "{errors}");
}

#[test]
fn control_characters_are_refused_with_their_place() {
    let errors = refused("name: t\nstages:\n  - name: a\x00b\n");
    assert!(
        matches!(
            errors.errors[..],
            [DagError::ControlCharacter { code: 0, .. }]
        ),
        "{errors}"
    );
    assert!(
        errors
            .to_string()
            .starts_with("dag.yaml:3:12: error: control character U+0000")
    );
    let errors = refused("name: t\x1b[31m\n");
    assert!(matches!(
        errors.errors[..],
        [DagError::ControlCharacter { code: 0x1b, .. }]
    ));
}

#[test]
fn garbage_never_panics() {
    // Deterministic pseudo-random input: raw bytes decoded lossily, and YAML punctuation soup.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet: Vec<char> = "ab:-[]{},&*!|>'\"%@#?\n \t0.~=\\stagesname"
        .chars()
        .collect();
    for _ in 0..300 {
        let bytes: Vec<u8> = (0..200).map(|_| (next() & 0xff) as u8).collect();
        let text = String::from_utf8_lossy(&bytes);
        assert!(parse_dag(&text, "g.yaml").is_err());
        let soup: String = (0..120)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let _ = parse_dag(&soup, "g.yaml");
        let _ = parse_dag(
            &format!("name: t\nstages:\n  - name: a\n    {soup}"),
            "g.yaml",
        );
    }
}

#[test]
fn alias_bombs_are_refused_quickly() {
    let mut yaml = String::from(
        "name: t\nparams:\n  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for level in 1..10 {
        let prev = format!("*l{}", level - 1);
        let items = [prev.as_str(); 10].join(", ");
        yaml.push_str(&format!("  l{level}: &l{level} [{items}]\n"));
    }
    yaml.push_str("stages: [{name: a, image: i}]\n");
    let start = Instant::now();
    let errors = refused(&yaml);
    eprintln!("alias bomb refused in {:?}", start.elapsed());
    assert!(start.elapsed() < HANG_GUARD, "took {:?}", start.elapsed());
    assert!(
        matches!(errors.errors[..], [DagError::TooComplex { .. }]),
        "{errors}"
    );
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    let flow = format!(
        "name: t\nparams:\n  x: {}{}\nstages: []\n",
        "[".repeat(50_000),
        "]".repeat(50_000)
    );
    let braces = format!(
        "name: t\nparams:\n  x: {}{}\nstages: []\n",
        "{a: ".repeat(10_000),
        "}".repeat(10_000)
    );
    let mut block = String::from("name: t\nparams:\n  x:\n");
    for depth in 0..2_000 {
        block.push_str(&" ".repeat(depth + 4));
        block.push_str("-\n");
    }
    block.push_str("stages: []\n");
    for yaml in [flow, braces, block] {
        // Stack use is bounded by the parser's depth limit, not by the input: half of a
        // tokio worker thread's 2 MiB is plenty even in a debug build.
        let handle = std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(move || parse_dag(&yaml, "deep.yaml").map(|_| ()))
            .expect("spawn");
        let result = handle.join().expect("no stack overflow or panic");
        assert!(result.is_err());
    }
}

#[test]
fn oversized_files_are_refused_before_parsing() {
    let yaml = format!("name: t\n# {}\n", "x".repeat(MAX_DAG_FILE_BYTES));
    let errors = refused(&yaml);
    assert!(
        matches!(errors.errors[..], [DagError::TooLarge { .. }]),
        "{errors}"
    );
}

#[test]
fn long_keys_and_unicode_names_are_refused_cleanly() {
    let yaml = format!("name: t\n{}: 1\nstages: []\n", "k".repeat(5_000));
    assert_eq!(refused(&yaml).len(), 1);
    let errors = refused("name: t\ndefaults: {image: i}\nstages:\n  - name: tr\u{e4}in\n");
    assert!(
        matches!(errors.errors[..], [DagError::InvalidStageName { .. }]),
        "{errors}"
    );
    let with_bom = "\u{feff}name: t\ndefaults: {image: i}\nstages: [{name: a}]\n";
    assert!(parse_dag(with_bom, "bom.yaml").is_ok());
}

fn chain(n: usize) -> String {
    let mut yaml = String::from(
        "name: big\nparams: {rows: 1}\ndefaults:\n  image: i\n  retries: {limit: 1, backoff: 1s}\nstages:\n",
    );
    for i in 0..n {
        yaml.push_str(&format!(
            "  - name: s{i}\n    command: [run, \"{{{{ params.rows }}}}\", \"{i}\"]\n"
        ));
        if i > 0 {
            yaml.push_str(&format!("    needs: [s{}]\n", i - 1));
        }
    }
    yaml
}

#[test]
fn ten_thousand_stage_chain_parses_fast() {
    let yaml = chain(10_000);
    let start = Instant::now();
    let dag = parse_dag(&yaml, "big.yaml").unwrap_or_else(|e| panic!("{e}"));
    let took = start.elapsed();
    eprintln!(
        "10,000-stage chain ({} bytes) validated in {took:?}",
        yaml.len()
    );
    assert_eq!(dag.stages.len(), 10_000);
    assert_eq!(dag.topo_order.len(), 10_000);
    assert_eq!(dag.upstream(9_999), [9_998]);
    assert!(took < HANG_GUARD, "took {took:?}");
}

#[test]
fn ten_thousand_stage_fan_out_parses_fast() {
    let mut yaml = String::from("name: wide\ndefaults: {image: i}\nstages:\n  - name: root\n");
    let mut all = Vec::new();
    for i in 0..10_000 {
        yaml.push_str(&format!("  - name: w{i}\n    needs: [root]\n"));
        all.push(format!("w{i}"));
    }
    yaml.push_str(&format!(
        "  - name: join\n    needs: [{}]\n",
        all.join(", ")
    ));
    let start = Instant::now();
    let dag = parse_dag(&yaml, "wide.yaml").unwrap_or_else(|e| panic!("{e}"));
    let took = start.elapsed();
    eprintln!(
        "10,002-stage fan-out ({} bytes) validated in {took:?}",
        yaml.len()
    );
    assert_eq!(dag.stages.len(), 10_002);
    assert_eq!(dag.downstream(0).len(), 10_000);
    assert_eq!(dag.upstream(10_001).len(), 10_000);
    assert_eq!(dag.levels()[10_001], 2);
    assert!(took < HANG_GUARD, "took {took:?}");
}

#[test]
fn ten_thousand_broken_stages_still_report_quickly() {
    let mut yaml = String::from("name: broken\nstages:\n");
    for i in 0..10_000 {
        yaml.push_str(&format!(
            "  - name: s{i}\n    needs: [missing{i}]\n    timeout: 5\n"
        ));
    }
    let start = Instant::now();
    let errors = refused(&yaml);
    let took = start.elapsed();
    eprintln!("10,000 broken stages reported in {took:?}");
    // missing image + unknown dependency + duration without unit, per stage
    assert_eq!(errors.len(), 30_000);
    assert!(took < HANG_GUARD, "took {took:?}");
}

#[test]
fn a_condition_in_defaults_over_ten_thousand_stages_is_parsed_once_and_checked_fast() {
    let mut yaml = String::from(
        "name: wide\nparams: {go: true}\ndefaults: {image: i, when: params.go}\nstages:\n  - name: root\n",
    );
    let mut all = Vec::new();
    for i in 0..10_000 {
        yaml.push_str(&format!("  - name: w{i}\n    needs: [root]\n"));
        all.push(format!("w{i}"));
    }
    yaml.push_str(&format!(
        "  - name: join\n    needs: [{}]\n    when: \"stages.w9999.state == 'succeeded' && stages.root.state == 'succeeded'\"\n",
        all.join(", ")
    ));
    let start = Instant::now();
    let dag = parse_dag(&yaml, "wide.yaml").unwrap_or_else(|e| panic!("{e}"));
    let took = start.elapsed();
    eprintln!("10,002 stages with conditions validated in {took:?}");
    assert!(dag.stages.iter().all(|s| s.when.is_some()));
    assert_eq!(
        dag.stages[10_001].when.as_ref().unwrap().stages_read(),
        ["root", "w9999"]
    );
    assert!(took < HANG_GUARD, "took {took:?}");
}
