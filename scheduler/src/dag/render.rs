//! The DAG as text for people (`vishwa graph`) and as Graphviz (`vishwa graph --dot`).

use std::fmt::Write;

use crate::dag::model::{Dag, ExecutorKind, ForEach, Stage, TriggerRule};
use crate::dag::params::param_text;

fn trigger_name(rule: TriggerRule) -> &'static str {
    match rule {
        TriggerRule::AllSuccess => "all_success",
        TriggerRule::AllDone => "all_done",
        TriggerRule::OneFailed => "one_failed",
        TriggerRule::OneSuccess => "one_success",
        TriggerRule::NoneFailed => "none_failed",
    }
}

fn runs_on(stage: &Stage) -> String {
    match stage.executor {
        ExecutorKind::Docker => match &stage.image {
            Some(image) => format!("docker {image}"),
            None => "docker".to_owned(),
        },
        ExecutorKind::Process => "process".to_owned(),
    }
}

fn fan_out(stage: &Stage) -> Option<String> {
    let over = match stage.for_each.as_ref()? {
        ForEach::Param(template) => template.clone(),
        ForEach::List(items) => {
            let items: Vec<String> = items.iter().map(param_text).collect();
            format!("[{}]", items.join(", "))
        }
    };
    Some(match stage.max_parallel {
        Some(n) => format!("for each of {over}, {n} at once"),
        None => format!("for each of {over}"),
    })
}

/// Details shown after a stage's name, in both renderings.
fn details(stage: &Stage) -> Vec<String> {
    let mut parts = vec![runs_on(stage)];
    if stage.trigger != TriggerRule::default() {
        parts.push(format!("trigger {}", trigger_name(stage.trigger)));
    }
    if let Some(when) = &stage.when {
        parts.push(format!("when {when}"));
    }
    if let Some(over) = fan_out(stage) {
        parts.push(over);
    }
    parts
}

/// Renders the DAG grouped by level: level 0 holds the stages that need nothing, each
/// further level the stages whose needs are all on earlier levels. Fan-out stages are
/// marked `[*]`.
pub fn render_graph_text(dag: &Dag) -> String {
    let levels = dag.levels();
    let depth = levels.iter().max().map_or(0, |m| m + 1);
    let mut by_level: Vec<Vec<usize>> = vec![Vec::new(); depth];
    for (i, level) in levels.iter().enumerate() {
        by_level[*level].push(i);
    }
    let width = dag
        .stages
        .iter()
        .map(|s| s.name.as_str().len() + if s.for_each.is_some() { 3 } else { 0 })
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} ({} stages, {} levels)",
        dag.name,
        dag.stages.len(),
        depth
    );
    for (level, stages) in by_level.iter().enumerate() {
        let _ = writeln!(out, "level {level}");
        for &i in stages {
            let stage = &dag.stages[i];
            let marker = if stage.for_each.is_some() { "[*]" } else { "" };
            let label = format!("{}{marker}", stage.name);
            let mut parts = Vec::new();
            if !stage.needs.is_empty() {
                let needs: Vec<&str> = stage.needs.iter().map(|n| n.as_str()).collect();
                parts.push(format!("needs {}", needs.join(", ")));
            }
            parts.extend(details(stage));
            let _ = writeln!(out, "  {label:<width$}  {}", parts.join(" · "));
        }
    }
    out
}

/// Quotes a string for a DOT identifier or label.
fn dot_quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => {}
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Renders the DAG as a Graphviz digraph, left to right; fan-out stages are drawn as
/// stacked boxes and non-default trigger rules label the stage.
pub fn render_graph_dot(dag: &Dag) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", dot_quote(dag.name.as_str()));
    let _ = writeln!(out, "  rankdir=LR;");
    let _ = writeln!(out, "  node [shape=box, fontname=\"Helvetica\"];");
    for stage in &dag.stages {
        let label = format!("{}\n{}", stage.name, details(stage).join("\n"));
        let shape = if stage.for_each.is_some() {
            ", shape=box3d"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {} [label={}{shape}];",
            dot_quote(stage.name.as_str()),
            dot_quote(&label)
        );
    }
    for edge in dag.graph.raw_edges() {
        let from = &dag.stages[dag.graph[edge.source()]].name;
        let to = &dag.stages[dag.graph[edge.target()]].name;
        let _ = writeln!(
            out,
            "  {} -> {};",
            dot_quote(from.as_str()),
            dot_quote(to.as_str())
        );
    }
    out.push_str("}\n");
    out
}
