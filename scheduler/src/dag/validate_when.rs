//! The `when:` part of validation: each stage's condition compiled against the params and the
//! stages it may read, with errors placed inside the YAML value.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use cel::Program;
use petgraph::Direction;
use petgraph::algo::has_path_connecting;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::dag::basic::{Location, StageName};
use crate::dag::condition::{
    Condition, ConditionProblem, ConditionScope, MAX_CONDITION_CHARS, on_cel_stack,
};
use crate::dag::error::DagError;
use crate::dag::model::Stage;
use crate::dag::validate::PlacedWhen;
use crate::dag::validator::Validator;

impl Validator<'_> {
    /// Compiles each stage's `when` against the params and the stages it needs, directly or
    /// through others, and stores it on the stage. All of it runs on one thread with the
    /// stack CEL needs; each distinct text is parsed once.
    pub(super) fn check_conditions(
        &mut self,
        stages: &mut [Stage],
        whens: Vec<PlacedWhen>,
        graph: &DiGraph<usize, ()>,
        nodes: &[NodeIndex],
    ) {
        let first = whens
            .iter()
            .enumerate()
            .find_map(|(i, w)| w.as_ref().map(|(_, at)| (stages[i].name.clone(), *at)));
        let Some((first_stage, first_at)) = first else {
            return;
        };
        let checked = on_cel_stack(|| self.check_conditions_here(stages, whens, graph, nodes));
        if let Err(reason) = checked {
            self.push(DagError::WhenUnchecked {
                stage: first_stage,
                reason,
                at: first_at,
            });
        }
    }

    fn check_conditions_here(
        &mut self,
        stages: &mut [Stage],
        whens: Vec<PlacedWhen>,
        graph: &DiGraph<usize, ()>,
        nodes: &[NodeIndex],
    ) {
        let all_stages: BTreeSet<String> = stages.iter().map(|s| s.name.0.clone()).collect();
        let index_of: HashMap<String, usize> = stages
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.0.clone(), i))
            .collect();
        let mut parsed: HashMap<String, Result<Arc<Program>, Vec<ConditionProblem>>> =
            HashMap::new();
        for (index, when) in whens.into_iter().enumerate() {
            let Some((text, at)) = when else { continue };
            let program = parsed
                .entry(text.clone())
                .or_insert_with(|| Condition::parse(&text))
                .clone();
            let is_upstream = |name: &str| {
                index_of.get(name).is_some_and(|&up| {
                    up != index && has_path_connecting(graph, nodes[up], nodes[index], None)
                })
            };
            let upstream = || {
                let mut names: Vec<String> = ancestors(graph, nodes[index])
                    .into_iter()
                    .map(|i| stages[i].name.0.clone())
                    .collect();
                names.sort();
                names
            };
            let scope = ConditionScope {
                params: &self.params,
                all_stages: &all_stages,
                is_upstream: &is_upstream,
                upstream: &upstream,
                fan_out: stages[index].for_each.is_some(),
            };
            let checked = program.and_then(|program| Condition::check(&text, program, &scope));
            match checked {
                Ok(condition) => stages[index].when = Some(condition),
                Err(problems) => {
                    let stage = stages[index].name.clone();
                    let upstream = upstream();
                    for problem in problems {
                        let error = self.condition_error(&stage, &text, at, problem, &upstream);
                        self.push(error);
                    }
                }
            }
        }
    }

    fn condition_error(
        &mut self,
        stage: &StageName,
        text: &str,
        at: Location,
        problem: ConditionProblem,
        upstream: &[String],
    ) -> DagError {
        let stage = stage.clone();
        match problem {
            ConditionProblem::Syntax {
                message,
                line,
                column,
            } => DagError::WhenSyntax {
                at: place_in_value(self.source, at, text, line, column),
                stage,
                expression: text.to_owned(),
                detail: format!("{message} (expression line {line}, column {column})"),
            },
            ConditionProblem::UnknownParam(param) => {
                let declared: Vec<String> = self.params.keys().cloned().collect();
                let suggestion = self.suggest(&param, declared.iter().map(String::as_str));
                DagError::WhenUnknownParam {
                    stage,
                    param,
                    declared,
                    suggestion,
                    at,
                }
            }
            ConditionProblem::UnknownStage(reference) => {
                let suggestion = self.suggest(&reference, upstream.iter().map(String::as_str));
                DagError::WhenUnknownStage {
                    stage,
                    reference,
                    upstream: upstream.to_vec(),
                    suggestion,
                    at,
                }
            }
            ConditionProblem::NotUpstream(reference) => DagError::WhenStageNotUpstream {
                stage,
                reference,
                at,
            },
            ConditionProblem::UnknownStageField { stage: of, field } => {
                DagError::WhenUnknownStageField {
                    stage,
                    reference: of,
                    field,
                    at,
                }
            }
            ConditionProblem::UnknownVariable(name) => {
                DagError::WhenUnknownVariable { stage, name, at }
            }
            ConditionProblem::TooLong { chars } => DagError::WhenTooLong {
                stage,
                chars,
                limit: MAX_CONDITION_CHARS,
                at,
            },
        }
    }
}

/// Every stage `node` depends on, directly or through others (cycles allowed).
fn ancestors(graph: &DiGraph<usize, ()>, node: NodeIndex) -> Vec<usize> {
    let mut seen = HashSet::new();
    let mut work = vec![node];
    let mut found = Vec::new();
    while let Some(n) = work.pop() {
        for up in graph.neighbors_directed(n, Direction::Incoming) {
            if up != node && seen.insert(up) {
                found.push(graph[up]);
                work.push(up);
            }
        }
    }
    found
}

/// The place in the file of `line:column` inside a `when` value that starts at `at`. Exact
/// when the value is written on one line, plain or quoted, with no escape before that
/// column; otherwise the start of the value.
fn place_in_value(source: &str, at: Location, text: &str, line: usize, column: usize) -> Location {
    if line != 1 || at.line == 0 || at.column == 0 {
        return at;
    }
    let Some(file_line) = source.lines().nth(at.line - 1) else {
        return at;
    };
    let rest: Vec<char> = file_line.chars().skip(at.column - 1).collect();
    let expr: Vec<char> = text.chars().take(column.saturating_sub(1)).collect();
    let skip = match rest.first() {
        Some('"' | '\'') => 1,
        _ => 0,
    };
    if rest.len() >= skip + expr.len() && rest[skip..skip + expr.len()] == expr[..] {
        Location {
            line: at.line,
            column: at.column + skip + expr.len(),
        }
    } else {
        at
    }
}
