//! The run pages: `/runs` (filtered by DAG, state and age, paged) and `/runs/ID` (the
//! layered graph with `for_each` instances grouped, the Gantt timeline and the stage table,
//! updated live by the script).

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::response::Html;
use maud::html;
use serde::Deserialize;

use super::charts::{Bar, gantt};
use super::graph::{self, Node};
use super::layout::{Live, csrf_field, duration, page, time, time_or_dash};
use super::overview::run_table;
use super::{Console, ConsoleError, Session, encode_query, encode_segment};
use crate::ids::RunId;
use crate::run::{RunRecord, StageRecord, StageState};

/// Runs per page of `/runs`.
const RUNS_PER_PAGE: usize = 50;
/// Stage instances per page of a run's table.
const STAGES_PER_PAGE: usize = 500;
/// Above this many instances the timeline shows one bar per stage, not per instance.
const GANTT_INSTANCES: usize = 200;

/// The filters of `/runs`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RunFilter {
    #[serde(default)]
    dag: String,
    #[serde(default)]
    state: String,
    /// Only runs created in the last this many hours.
    #[serde(default)]
    hours: String,
    #[serde(default)]
    page: Option<usize>,
}

const RUN_STATES: [&str; 5] = ["queued", "running", "succeeded", "failed", "cancelled"];

/// `GET /runs`.
pub(super) async fn list(
    State(console): State<Console>,
    session: Session,
    Query(filter): Query<RunFilter>,
) -> Result<Html<String>, ConsoleError> {
    if !filter.state.is_empty() && !RUN_STATES.contains(&filter.state.as_str()) {
        return Err(ConsoleError::BadRequest(format!(
            "`{}` is not a run state; use one of {}",
            filter.state,
            RUN_STATES.join(", ")
        )));
    }
    let since = match filter.hours.trim() {
        "" => None,
        h => Some(h.parse::<f64>().ok().filter(|h| *h > 0.0).ok_or_else(|| {
            ConsoleError::BadRequest(format!("`{h}` is not a number of hours; use e.g. 24"))
        })?),
    }
    .map(|h| console.engine().clock().now_ms() - (h * 3_600_000.0) as i64);
    let mut runs: Vec<RunRecord> = console
        .store()
        .list_runs()?
        .into_iter()
        .filter(|r| filter.dag.is_empty() || r.dag == filter.dag)
        .filter(|r| filter.state.is_empty() || r.state.as_str() == filter.state)
        .filter(|r| since.is_none_or(|s| r.created_ms >= s))
        .collect();
    runs.sort_unstable_by(|a, b| b.created_ms.cmp(&a.created_ms).then(b.id.cmp(&a.id)));
    let total = runs.len();
    let page_no = filter.page.unwrap_or(1).max(1);
    let shown: Vec<RunRecord> = runs
        .into_iter()
        .skip((page_no - 1) * RUNS_PER_PAGE)
        .take(RUNS_PER_PAGE)
        .collect();
    let dags = console.store().list_dags()?;
    let link = |p: usize| {
        format!(
            "/runs?dag={}&state={}&hours={}&page={p}",
            encode_query(&filter.dag),
            encode_query(&filter.state),
            encode_query(&filter.hours)
        )
    };
    let content = html! {
        h1 { "Runs" }
        form.filters method="get" action="/runs" {
            label { "DAG" select name="dag" {
                option value="" { "any" }
                @for d in &dags { option value=(d.name) selected[d.name == filter.dag] { (d.name) } }
            } }
            label { "state" select name="state" {
                option value="" { "any" }
                @for s in RUN_STATES { option value=(s) selected[s == filter.state] { (s) } }
            } }
            label { "created in the last (hours)" input type="text" name="hours" value=(filter.hours) size="6"; }
            button type="submit" { "Filter" }
        }
        p.muted { (total) " runs" @if total > 0 { ", page " (page_no) " of " (total.div_ceil(RUNS_PER_PAGE)) } }
        (run_table(&shown))
        div.pager {
            @if page_no > 1 { a href=(link(page_no - 1)) { "← newer" } }
            @if page_no * RUNS_PER_PAGE < total { a href=(link(page_no + 1)) { "older →" } }
        }
    };
    Ok(page("Runs", Some(&session), Live::default(), content))
}

/// The stage an instance belongs to (`train[a]` → `train`).
pub(super) fn group_of(instance: &str) -> &str {
    instance.split('[').next().unwrap_or(instance)
}

/// Instance counts of one stage per state.
pub(super) type Counts = BTreeMap<&'static str, usize>;

/// The state a stage's node shows for its instances: what still moves first, then what
/// went wrong, then how it ended.
pub(super) fn group_state(counts: &Counts) -> &'static str {
    for state in [
        "running",
        "failed",
        "queued",
        "upstream_failed",
        "cancelled",
        "pending",
    ] {
        if counts.get(state).copied().unwrap_or(0) > 0 {
            return state;
        }
    }
    if counts.get("succeeded").copied().unwrap_or(0) > 0 {
        "succeeded"
    } else {
        "skipped"
    }
}

/// The second line of a stage's node: `×300 · 120 running · 180 succeeded`.
pub(super) fn counts_text(counts: &Counts) -> String {
    let total: usize = counts.values().sum();
    if total <= 1 {
        return counts
            .keys()
            .next()
            .map(|s| s.to_string())
            .unwrap_or_default();
    }
    let parts: Vec<String> = counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    format!("×{total} · {}", parts.join(" · "))
}

/// When an instance started and (so far) ended.
fn span_of(stage: &StageRecord, now: i64) -> Option<(i64, i64)> {
    let start = stage.attempts.first().map(|a| a.started_ms)?;
    let end = stage
        .state
        .finished_ms()
        .or_else(|| stage.attempts.last().and_then(|a| a.finished_ms))
        .unwrap_or(now);
    Some((start, end.max(start)))
}

/// Why a queued instance waits for a worker, as `vishwa get` says it.
fn waiting_text(console: &Console, run: &RunId, stage: &StageRecord) -> String {
    let mut message = String::new();
    console.engine().waiting().explain(run, stage, &mut message);
    message
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RunPageQuery {
    page: Option<usize>,
}

/// `GET /runs/ID`.
pub(super) async fn run_page(
    State(console): State<Console>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<RunPageQuery>,
) -> Result<Html<String>, ConsoleError> {
    let run = console
        .store()
        .get_run(&RunId::from(id.as_str()))?
        .ok_or_else(|| ConsoleError::NotFound(format!("there is no run `{id}`; see /runs")))?;
    let mut stages = console.store().run_stages(&run.id)?;
    let dag = console.api().dag(&run.dag, &run.dag_version).ok();
    let now = console.engine().clock().now_ms();

    // One node per stage, in the DAG's order when it is known.
    let mut groups: Vec<String> = Vec::new();
    let mut counts: HashMap<String, Counts> = HashMap::new();
    let mut needs: HashMap<String, Vec<String>> = HashMap::new();
    if let Some(dag) = &dag {
        for s in &dag.stages {
            groups.push(s.name.0.clone());
            needs.insert(
                s.name.0.clone(),
                s.needs.iter().map(|n| n.0.clone()).collect(),
            );
        }
    }
    for s in &stages {
        let g = group_of(&s.instance);
        if !counts.contains_key(g) {
            if !needs.contains_key(g) {
                groups.push(g.to_owned());
                needs.insert(g.to_owned(), s.needs.clone());
            }
            counts.insert(g.to_owned(), Counts::new());
        }
        if let Some(c) = counts.get_mut(g) {
            *c.entry(s.state.name()).or_default() += 1;
        }
    }
    let index: HashMap<&str, usize> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.as_str(), i))
        .collect();
    // Instances in the DAG's order, then by name.
    stages.sort_by_cached_key(|s| {
        let g = index
            .get(group_of(&s.instance))
            .copied()
            .unwrap_or(usize::MAX);
        (g, s.instance.clone())
    });
    let nodes: Vec<Node> = groups
        .iter()
        .map(|g| {
            let c = counts.get(g).cloned().unwrap_or_default();
            Node {
                name: g.clone(),
                state: if c.is_empty() {
                    "pending".to_owned()
                } else {
                    group_state(&c).to_owned()
                },
                counts: counts_text(&c),
            }
        })
        .collect();
    let edges: Vec<(usize, usize)> = groups
        .iter()
        .enumerate()
        .flat_map(|(i, g)| {
            needs
                .get(g)
                .into_iter()
                .flatten()
                .filter_map(|n| index.get(n.as_str()).map(|&p| (p, i)))
                .collect::<Vec<_>>()
        })
        .collect();

    // The timeline: per instance for small runs, per stage for big ones.
    let bars: Vec<Bar> = if stages.len() <= GANTT_INSTANCES {
        stages
            .iter()
            .filter_map(|s| {
                span_of(s, now).map(|(start, end)| Bar {
                    label: s.instance.clone(),
                    state: s.state.name().to_owned(),
                    start,
                    end,
                })
            })
            .collect()
    } else {
        let mut spans: HashMap<&str, (i64, i64)> = HashMap::new();
        for s in &stages {
            if let Some((a, b)) = span_of(s, now) {
                let e = spans.entry(group_of(&s.instance)).or_insert((a, b));
                e.0 = e.0.min(a);
                e.1 = e.1.max(b);
            }
        }
        nodes
            .iter()
            .filter_map(|n| {
                spans.get(n.name.as_str()).map(|&(start, end)| Bar {
                    label: n.name.clone(),
                    state: n.state.clone(),
                    start,
                    end,
                })
            })
            .collect()
    };

    let page_no = q.page.unwrap_or(1).max(1);
    let pages = stages.len().div_ceil(STAGES_PER_PAGE).max(1);
    let can_cancel = session.may("CancelRun") && !run.state.is_final();
    let can_retry = session.may("RetryRun") && run.state.is_final();
    let run_path = format!("/runs/{}", encode_segment(&run.id.0));
    let content = html! {
        h1 { "Run " (run.id) " " span class={ "state run-state " (run.state.as_str()) } { (run.state.as_str()) } }
        dl.kv {
            dt { "DAG" } dd { a href={ "/dags/" (encode_segment(&run.dag)) } { (run.dag) } }
            dt { "trigger" } dd { (run.trigger.as_str()) }
            dt { "created" } dd { (time(run.created_ms)) " UTC" }
            dt { "started" } dd { (time_or_dash(run.started_ms)) }
            dt { "finished" } dd { (time_or_dash(run.finished_ms)) }
            @if let Some(m) = &run.message { dt { "message" } dd { (m) } }
            @for (k, v) in &run.params { dt { "param " (k) } dd.mono { (crate::dag::param_text(v)) } }
        }
        div.actions {
            a href={ (run_path) "/artifacts" } { "Artifacts" }
            a href={ "/compare?runs=" (encode_query(&run.id.0)) } { "Compare" }
            @if can_cancel {
                form.inline #cancel-form method="post" action={ (run_path) "/cancel" } {
                    (csrf_field(&session)) button.danger #cancel type="submit" { "Cancel run" }
                }
            }
            @if can_retry && run.state.as_str() != "succeeded" {
                form.inline method="post" action={ (run_path) "/retry" } {
                    (csrf_field(&session)) button type="submit" { "Retry failed stages" }
                }
            }
        }
        h2 { "Graph" }
        div.card { (graph::svg(&nodes, &edges, Some(&|name: &str| graph::stage_anchor(name)))) }
        h2 { "Timeline" }
        div.card { (gantt(&bars)) }
        h2 #stages { "Stages" }
        @if pages > 1 {
            p.muted { (stages.len()) " instances, page " (page_no) " of " (pages) }
        }
        table {
            thead { tr { th { "stage" } th { "state" } th.num { "attempts" } th { "worker" } th { "started" } th.num { "duration" } th { "message" } th {} } }
            tbody {
                @for s in stages.iter().skip((page_no - 1) * STAGES_PER_PAGE).take(STAGES_PER_PAGE) {
                    @let last = s.attempts.last();
                    tr id={ "stage-" (encode_segment(&s.instance)) } {
                        td.mono { (s.instance) }
                        td { span class={ "state stage-state " (s.state.name()) } data-instance=(s.instance) { (s.state.name()) } }
                        td.num { (s.attempts.len()) }
                        td { @if let Some(a) = last { (a.worker) } }
                        td { @if let Some(a) = last { (time(a.started_ms)) } }
                        td.num { @if let Some((a, b)) = span_of(s, now) { (duration(b - a)) } }
                        td { @match &s.state {
                            StageState::Failed { error, .. } => { (error) }
                            StageState::Skipped { reason, .. } => { (reason) }
                            _ => { (waiting_text(&console, &run.id, s)) }
                        } }
                        td {
                            a href={ (run_path) "/logs/" (encode_segment(&s.instance)) } { "logs" }
                            @if can_retry && matches!(s.state, StageState::Failed { .. }) {
                                " "
                                form.inline method="post" action={ (run_path) "/retry" } {
                                    (csrf_field(&session))
                                    input type="hidden" name="stage" value=(s.instance);
                                    input type="hidden" name="only" value="true";
                                    button.plain type="submit" { "retry" }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if pages > 1 {
            div.pager {
                @if page_no > 1 { a href={ (run_path) "?page=" (page_no - 1) "#stages" } { "← previous" } }
                @if page_no < pages { a href={ (run_path) "?page=" (page_no + 1) "#stages" } { "next →" } }
            }
        }
    };
    let live = Live {
        run_events: Some(format!("{run_path}/events")),
        log_events: None,
    };
    Ok(page(
        &format!("Run {}", run.id),
        Some(&session),
        live,
        content,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_shows_what_still_moves_then_what_went_wrong() {
        let mut c = Counts::new();
        c.insert("succeeded", 5);
        assert_eq!(group_state(&c), "succeeded");
        c.insert("failed", 1);
        assert_eq!(group_state(&c), "failed");
        c.insert("running", 2);
        assert_eq!(group_state(&c), "running");
        assert_eq!(counts_text(&c), "×8 · 1 failed · 2 running · 5 succeeded");
    }
}
