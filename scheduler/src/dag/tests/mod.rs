//! Tests of DAG reading as a user meets it: whole files in, `Dag` or printed errors out.

mod assets;
mod example;
mod hostile;
mod runtime;
mod validation;

use crate::dag::{DagError, DagErrors, parse_dag};

/// The example DAG from the product description, verbatim.
pub(super) const EXAMPLE: &str = include_str!("example.yaml");

/// Parses `yaml` expecting it to be refused.
pub(super) fn refused(yaml: &str) -> DagErrors {
    match parse_dag(yaml, "dag.yaml") {
        Ok(dag) => panic!(
            "expected errors, got a DAG with {} stages",
            dag.stages.len()
        ),
        Err(errors) => errors,
    }
}

/// Asserts that `yaml` is refused with an error matching `is_expected` at `line:column`,
/// and that the printed errors show it with its place and its help.
#[track_caller]
pub(super) fn assert_refused(
    yaml: &str,
    line: usize,
    column: usize,
    is_expected: impl Fn(&DagError) -> bool,
) -> DagError {
    let errors = refused(yaml);
    let printed = errors.to_string();
    let Some(error) = errors.iter().find(|e| is_expected(e)) else {
        panic!("no matching error among:\n{printed}");
    };
    let at = error.location();
    assert_eq!(
        (at.line, at.column),
        (line, column),
        "place of {error:?}\n{printed}"
    );
    let header = format!("dag.yaml:{line}:{column}: error: {error}");
    assert!(
        printed.contains(&header),
        "missing `{header}` in:\n{printed}"
    );
    let help = format!("\n  help: {}", error.help());
    assert!(printed.contains(&help), "missing `{help}` in:\n{printed}");
    error.clone()
}
