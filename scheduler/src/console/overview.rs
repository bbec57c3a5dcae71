//! The DAG pages: `/` (every DAG with its last run, next fire and success sparkline) and
//! `/dags/NAME` (graph, params with the trigger form, schedule, recent runs, metric charts).

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, State};
use axum::response::Html;
use maud::{Markup, html};

use super::charts::{Point, line_chart, sparkline};
use super::graph::{self, Node};
use super::layout::{Live, csrf_field, page, state_badge, time, time_or_dash};
use super::{Console, ConsoleError, Session, encode_segment};
use crate::api::schedule::next_fire_ms_of;
use crate::dag::{Dag, param_text};
use crate::run::{RunRecord, RunState};

/// Finished runs the sparkline shows.
const SPARK_RUNS: usize = 30;
/// Runs listed (and charted) on a DAG's page.
const DAG_PAGE_RUNS: usize = 50;

/// Every run of every DAG, newest first, grouped by DAG.
fn runs_by_dag(console: &Console) -> Result<HashMap<String, Vec<RunRecord>>, ConsoleError> {
    let mut by_dag: HashMap<String, Vec<RunRecord>> = HashMap::new();
    for run in console.store().list_runs()? {
        by_dag.entry(run.dag.clone()).or_default().push(run);
    }
    for runs in by_dag.values_mut() {
        runs.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(b.id.cmp(&a.id)));
    }
    Ok(by_dag)
}

/// `GET /`.
pub(super) async fn index(
    State(console): State<Console>,
    session: Session,
) -> Result<Html<String>, ConsoleError> {
    let dags = console.store().list_dags()?;
    let runs = runs_by_dag(&console)?;
    let none = Vec::new();
    let now = console.engine().clock().now_ms();
    let content = html! {
        h1 { "DAGs" }
        @if dags.is_empty() {
            p.muted { "No DAG is registered yet: submit one with " code { "vishwa submit FILE" } "." }
        } @else {
            table {
                thead { tr { th { "DAG" } th { "Last run" } th { "State" } th { "Next run" } th { "Recent runs" } } }
                tbody {
                    @for d in &dags {
                        @let dag = console.api().dag(&d.name, &d.version).ok();
                        @let runs = runs.get(&d.name).unwrap_or(&none);
                        @let last = runs.first();
                        @let outcomes: Vec<bool> = runs.iter().filter(|r| r.state.is_final()).take(SPARK_RUNS)
                            .map(|r| r.state == RunState::Succeeded).collect::<Vec<_>>().into_iter().rev().collect();
                        tr {
                            td {
                                a href={ "/dags/" (encode_segment(&d.name)) } { (d.name) }
                                @if let Some(desc) = dag.as_ref().and_then(|g| g.description.as_ref()) {
                                    br; span.muted { (desc) }
                                }
                            }
                            td { @if let Some(r) = last { a href={ "/runs/" (encode_segment(&r.id.0)) } { (r.id) } } @else { "—" } }
                            td { @if let Some(r) = last { (state_badge(r.state.as_str())) } }
                            td {
                                @if d.paused { span.muted { "paused" } }
                                @else { (time_or_dash(dag.as_deref().map(|g| next_fire_ms_of(g, now)))) }
                            }
                            td { (sparkline(&outcomes)) }
                        }
                    }
                }
            }
        }
    };
    Ok(page("DAGs", Some(&session), Live::default(), content))
}

/// The graph of a DAG's stages (one node per stage).
pub(super) fn dag_graph(dag: &Dag, states: &BTreeMap<String, (String, String)>) -> Markup {
    let nodes: Vec<Node> = dag
        .stages
        .iter()
        .map(|s| {
            let (state, counts) = states.get(s.name.as_str()).cloned().unwrap_or_else(|| {
                (
                    "pending".to_owned(),
                    if s.for_each.is_some() {
                        "for each".to_owned()
                    } else {
                        String::new()
                    },
                )
            });
            Node {
                name: s.name.0.clone(),
                state,
                counts,
            }
        })
        .collect();
    let index: HashMap<&str, usize> = dag
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let edges: Vec<(usize, usize)> = dag
        .stages
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            s.needs
                .iter()
                .filter_map(|n| index.get(n.as_str()))
                .map(move |&p| (p, i))
                .collect::<Vec<_>>()
        })
        .collect();
    graph::svg(&nodes, &edges, None)
}

/// `GET /dags/NAME`.
pub(super) async fn dag_page(
    State(console): State<Console>,
    session: Session,
    Path(name): Path<String>,
) -> Result<Html<String>, ConsoleError> {
    let record = console.store().get_dag(&name)?.ok_or_else(|| {
        ConsoleError::NotFound(format!("there is no DAG `{name}`; see the list at /"))
    })?;
    let dag = console.api().dag(&name, &record.version)?;
    let mut runs = runs_by_dag(&console)?.remove(&name).unwrap_or_default();
    runs.truncate(DAG_PAGE_RUNS);
    // Each metric (`stage.metric`) across the listed runs, oldest first.
    let mut metrics: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for run in runs.iter().rev() {
        for stage in console.store().run_stages(&run.id)? {
            for (metric, value) in &stage.metrics {
                metrics
                    .entry(format!("{}.{metric}", stage.instance))
                    .or_default()
                    .push(Point {
                        run: run.id.0.clone(),
                        value: *value,
                    });
            }
        }
    }
    let can_trigger = session.may("TriggerRun");
    let can_pause = session.may("PauseDag");
    let content = html! {
        h1 { "DAG " (name) }
        @if let Some(desc) = &dag.description { p { (desc) } }
        div.card { (dag_graph(&dag, &BTreeMap::new())) }
        h2 { "Schedule" }
        @match &dag.schedule {
            Some(s) => {
                dl.kv {
                    dt { "cron" } dd.mono { (s.cron) }
                    dt { "time zone" } dd { (s.timezone.name()) }
                    dt { "next run" } dd { @if record.paused { "paused" } @else { (time_or_dash(Some(next_fire_ms_of(&dag, console.engine().clock().now_ms())))) " UTC" } }
                }
                @if can_pause {
                    div.actions {
                        @if record.paused {
                            form.inline method="post" action={ "/dags/" (encode_segment(&name)) "/resume" } {
                                (csrf_field(&session)) button type="submit" { "Resume schedule" }
                            }
                        } @else {
                            form.inline method="post" action={ "/dags/" (encode_segment(&name)) "/pause" } {
                                (csrf_field(&session)) button.plain type="submit" { "Pause schedule" }
                            }
                        }
                    }
                }
            }
            None => { p.muted { "No schedule: runs start when triggered." } }
        }
        h2 { "Params" }
        @if can_trigger {
            form.stack #trigger-form method="post" action={ "/dags/" (encode_segment(&name)) "/trigger" } {
                (csrf_field(&session))
                @for (param, value) in &dag.params {
                    label for={ "p-" (param) } { (param) }
                    input type="text" id={ "p-" (param) } name={ "p." (param) } value=(param_text(value));
                }
                @if dag.params.is_empty() { p.muted { "This DAG has no params." } }
                p { button #trigger type="submit" { "Trigger run" } }
            }
        } @else {
            table {
                thead { tr { th { "param" } th { "default" } } }
                tbody { @for (param, value) in &dag.params { tr { td { (param) } td.mono { (param_text(value)) } } } }
            }
        }
        @if !metrics.is_empty() {
            h2 { "Metrics across runs" }
            div.card { @for (metric, points) in &metrics { (line_chart(metric, points)) } }
        }
        h2 { "Recent runs" }
        (run_table(&runs))
        p { a href={ "/runs?dag=" (super::encode_query(&name)) } { "All runs of " (name) } }
    };
    Ok(page(
        &format!("DAG {name}"),
        Some(&session),
        Live::default(),
        content,
    ))
}

/// A table of runs.
pub(super) fn run_table(runs: &[RunRecord]) -> Markup {
    html! {
        table {
            thead { tr { th { "run" } th { "DAG" } th { "state" } th { "trigger" } th { "created" } th { "duration" } } }
            tbody {
                @for r in runs {
                    tr {
                        td { a href={ "/runs/" (encode_segment(&r.id.0)) } { (r.id) } }
                        td { (r.dag) }
                        td { (state_badge(r.state.as_str())) }
                        td { (r.trigger.as_str()) }
                        td { (time(r.created_ms)) }
                        td { @if let (Some(s), Some(f)) = (r.started_ms, r.finished_ms) { (super::layout::duration(f - s)) } }
                    }
                }
            }
        }
    }
}
