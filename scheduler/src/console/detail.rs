//! A run's details: a stage's log (`/runs/ID/logs/STAGE`, line-numbered, followed live by
//! the script, downloadable in full), its outputs with lineage (`/runs/ID/artifacts`,
//! downloadable), and runs side by side (`/compare`).

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use bytes::Bytes;
use maud::{Markup, html};
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use super::layout::{Live, page, time};
use super::{Console, ConsoleError, Session, encode_query, encode_segment};
use crate::ids::RunId;
use crate::run::RunRecord;
use crate::store::{LOG_PAGE_BYTES, LogPosition, LogRecord, LogStreamKind};

/// Lines a log page shows; the rest is in the download.
const LOG_PAGE_LINES: usize = 20_000;
/// Runs `/compare` takes at once.
const MAX_COMPARE: usize = 20;

pub(super) fn run_of(console: &Console, id: &str) -> Result<RunRecord, ConsoleError> {
    console
        .store()
        .get_run(&RunId::from(id))?
        .ok_or_else(|| ConsoleError::NotFound(format!("there is no run `{id}`; see /runs")))
}

/// Refuses a stage instance the run does not have, naming the ones it has.
pub(super) fn check_stage(
    console: &Console,
    run: &RunRecord,
    stage: &str,
) -> Result<(), ConsoleError> {
    let stages = console.store().run_stages(&run.id)?;
    if stages.iter().any(|s| s.instance == stage) {
        return Ok(());
    }
    let names: Vec<&str> = stages
        .iter()
        .take(20)
        .map(|s| s.instance.as_str())
        .collect();
    Err(ConsoleError::NotFound(format!(
        "run {} has no stage `{stage}`; its stages include: {}",
        run.id,
        names.join(", ")
    )))
}

pub(super) fn stream_name(kind: LogStreamKind) -> &'static str {
    match kind {
        LogStreamKind::Stdout => "stdout",
        LogStreamKind::Stderr => "stderr",
        LogStreamKind::System => "system",
    }
}

/// One rendered log line: `Some(number)` for output, `None` for an attempt separator.
struct Line {
    number: Option<usize>,
    stream: &'static str,
    text: String,
}

/// Splits chunks into lines, carrying a partial line across chunks; says whether the last
/// line is still open (no newline yet).
fn lines_of(chunks: &[LogRecord]) -> (Vec<Line>, bool) {
    let mut lines = Vec::new();
    let mut attempt = 0;
    let mut open = false;
    let mut number = 0;
    for chunk in chunks {
        if chunk.attempt != attempt {
            attempt = chunk.attempt;
            lines.push(Line {
                number: None,
                stream: "sep",
                text: format!("attempt {attempt}"),
            });
            open = false;
        }
        let text = String::from_utf8_lossy(&chunk.data);
        let parts: Vec<&str> = text.split('\n').collect();
        for (i, part) in parts.iter().enumerate() {
            let end = i == parts.len() - 1;
            if end && part.is_empty() {
                open = false;
                continue;
            }
            match lines.last_mut() {
                Some(last) if i == 0 && open => last.text.push_str(part),
                _ => {
                    number += 1;
                    lines.push(Line {
                        number: Some(number),
                        stream: stream_name(chunk.stream),
                        text: (*part).to_owned(),
                    });
                }
            }
            open = end;
        }
    }
    (lines, open)
}

/// `GET /runs/ID/logs/STAGE`.
pub(super) async fn logs(
    State(console): State<Console>,
    session: Session,
    Path((id, stage)): Path<(String, String)>,
) -> Result<Html<String>, ConsoleError> {
    let run = run_of(&console, &id)?;
    check_stage(&console, &run, &stage)?;
    let chunks = console.store().read_logs(&run.id, Some(&stage))?;
    let (lines, open) = lines_of(&chunks);
    let from = chunks.last().map(LogPosition::after);
    let skipped = lines.len().saturating_sub(LOG_PAGE_LINES);
    let base = format!(
        "/runs/{}/logs/{}",
        encode_segment(&run.id.0),
        encode_segment(&stage)
    );
    let events = match &from {
        Some(p) => format!("{base}/events?attempt={}&seq={}", p.attempt, p.seq),
        None => format!("{base}/events"),
    };
    let shown = &lines[skipped..];
    let content = html! {
        h1 { "Log of " (stage) }
        p {
            "Run " a href={ "/runs/" (encode_segment(&run.id.0)) } { (run.id) } " · "
            a href={ (base) "/download" } download { "download in full" } " · "
            label { input #follow type="checkbox" checked; " follow the tail" }
        }
        @if skipped > 0 { p.muted { (skipped) " earlier lines are in the download." } }
        ol.log #log {
            @for (i, line) in shown.iter().enumerate() {
                @let last = i + 1 == shown.len();
                li class={ @if line.number.is_some() { "line " } (line.stream) } data-open=[(last && open).then_some("1")] {
                    span.n { @if let Some(n) = line.number { (n) } }
                    span.t { (line.text) }
                }
            }
        }
        @if lines.is_empty() { p.muted #no-output { "No output yet." } }
    };
    let live = Live {
        run_events: None,
        log_events: Some(events),
    };
    Ok(page(
        &format!("Log of {stage}"),
        Some(&session),
        live,
        content,
    ))
}

/// `GET /runs/ID/logs/STAGE/download`: the whole log as text, read a page at a time.
pub(super) async fn download_logs(
    State(console): State<Console>,
    _session: Session,
    Path((id, stage)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    let run = run_of(&console, &id)?;
    check_stage(&console, &run, &stage)?;
    let store = console.store().clone();
    let run_id = run.id.clone();
    let stage_name = stage.clone();
    let pages = futures::stream::unfold(Some(None::<LogPosition>), move |from| {
        let store = store.clone();
        let run_id = run_id.clone();
        let stage_name = stage_name.clone();
        async move {
            let from = from?;
            let page = match store.read_log_page(
                &run_id,
                Some(&stage_name),
                from.as_ref(),
                LOG_PAGE_BYTES,
            ) {
                Ok(p) => p,
                Err(e) => return Some((Err(std::io::Error::other(e.to_string())), None)),
            };
            let last = page.last()?;
            let next = Some(Some(LogPosition::after(last)));
            let bytes: Vec<u8> = page.iter().flat_map(|c| c.data.iter().copied()).collect();
            Some((Ok(Bytes::from(bytes)), next))
        }
    });
    let file = format!(
        "{}-{}.log",
        run.id,
        stage.replace(['[', ']', '/', '"'], "_")
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        Body::from_stream(pages),
    )
        .into_response())
}

/// `GET /runs/ID/artifacts`.
pub(super) async fn artifacts(
    State(console): State<Console>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Html<String>, ConsoleError> {
    let run = run_of(&console, &id)?;
    let outputs = console.store().run_artifacts(&run.id)?;
    let run_path = format!("/runs/{}", encode_segment(&run.id.0));
    let content = html! {
        h1 { "Artifacts of " a href=(run_path) { (run.id) } }
        @if outputs.is_empty() { p.muted { "This run has no stored outputs." } }
        @else {
            table {
                thead { tr { th { "stage" } th { "file" } th.num { "bytes" } th { "sha256" } th { "consumers" } th {} } }
                tbody {
                    @for a in &outputs {
                        @let consumers = console.store().consumers_of(&a.digest)?;
                        tr {
                            td.mono { (a.stage) @if let Some(from) = &a.cached_from { br; span.muted { "cached from " (from) } } }
                            td.mono { (a.name) }
                            td.num { (a.size) }
                            td.mono title=(a.digest) { (a.digest.get(..16).unwrap_or(&a.digest)) "…" }
                            td {
                                @for c in consumers.iter().take(20) {
                                    a href={ "/runs/" (encode_segment(&c.run.0)) } { (c.run) } " " span.mono { (c.stage) } br;
                                }
                                @if consumers.len() > 20 { span.muted { "and " (consumers.len() - 20) " more" } }
                            }
                            td { a href={ (run_path) "/artifacts/" (encode_segment(&a.stage)) "/" (encode_segment(&a.name)) } { "download" } }
                        }
                    }
                }
            }
        }
    };
    Ok(page(
        &format!("Artifacts of {}", run.id),
        Some(&session),
        Live::default(),
        content,
    ))
}

/// `GET /runs/ID/artifacts/STAGE/NAME`: the file, streamed from the blob store.
pub(super) async fn download_artifact(
    State(console): State<Console>,
    _session: Session,
    Path((id, stage, name)): Path<(String, String, String)>,
) -> Result<Response, ConsoleError> {
    let run = run_of(&console, &id)?;
    let record = console
        .store()
        .run_artifacts(&run.id)?
        .into_iter()
        .find(|a| a.stage == stage && a.name == name)
        .ok_or_else(|| {
            ConsoleError::NotFound(format!(
                "run {} has no output `{name}` of stage `{stage}`",
                run.id
            ))
        })?;
    let blobs = console
        .api()
        .blob_store()
        .ok_or_else(|| ConsoleError::NotFound("this scheduler stores no artifacts".to_owned()))?;
    let path = blobs.file_path(&record.digest).ok_or_else(|| {
        ConsoleError::NotFound(format!(
            "`{name}` is kept in S3; download it with `vishwa artifacts get {} {stage}/{name}`",
            run.id
        ))
    })?;
    let file = tokio::fs::File::open(&path).await.map_err(|e| {
        ConsoleError::NotFound(format!(
            "the content of `{name}` is gone ({e}); retention may have deleted it"
        ))
    })?;
    let chunks = futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 64 << 10];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    let file_name = name.replace(['"', '/', '\\'], "_");
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}\""),
            ),
            (header::CONTENT_LENGTH, record.size.to_string()),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct CompareQuery {
    #[serde(default)]
    runs: String,
}

/// `GET /compare?runs=A,B,...`.
pub(super) async fn compare(
    State(console): State<Console>,
    session: Session,
    Query(q): Query<CompareQuery>,
) -> Result<Html<String>, ConsoleError> {
    let ids: Vec<&str> = q
        .runs
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if ids.len() > MAX_COMPARE {
        return Err(ConsoleError::BadRequest(format!(
            "{} runs asked; compare at most {MAX_COMPARE} at once",
            ids.len()
        )));
    }
    let mut runs = Vec::new();
    let mut params: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
    let mut metrics: BTreeMap<String, Vec<Option<f64>>> = BTreeMap::new();
    for (col, id) in ids.iter().enumerate() {
        let run = run_of(&console, id)?;
        for (k, v) in &run.params {
            params
                .entry(k.clone())
                .or_insert_with(|| vec![None; ids.len()])[col] = Some(crate::dag::param_text(v));
        }
        for s in console.store().run_stages(&run.id)? {
            for (m, v) in &s.metrics {
                metrics
                    .entry(format!("{}.{m}", s.instance))
                    .or_insert_with(|| vec![None; ids.len()])[col] = Some(*v);
            }
        }
        runs.push(run);
    }
    let differs = |cells: &[Option<String>]| cells.iter().collect::<BTreeSet<_>>().len() > 1;
    let metric_cells: BTreeMap<&String, Vec<Option<String>>> = metrics
        .iter()
        .map(|(k, v)| (k, v.iter().map(|x| x.map(|x| x.to_string())).collect()))
        .collect();
    let content = html! {
        h1 { "Compare runs" }
        form.filters method="get" action="/compare" {
            label { "runs (comma-separated ids)" input type="text" name="runs" value=(q.runs) size="80"; }
            button type="submit" { "Compare" }
        }
        @if !runs.is_empty() {
            table {
                thead { tr { th {} @for r in &runs { th { a href={ "/runs/" (encode_segment(&r.id.0)) } { (r.id) } } } } }
                tbody {
                    tr { td { "state" } @for r in &runs { td { (super::layout::state_badge(r.state.as_str())) } } }
                    tr { td { "created" } @for r in &runs { td { (time(r.created_ms)) } } }
                    (rows("param ", &params, &differs))
                    (rows("", &metric_cells, &differs))
                }
            }
            p.muted { "Highlighted rows differ between the runs." }
        }
        @if ids.len() == 1 {
            p { "Add run ids to compare, e.g. " a href={ "/compare?runs=" (encode_query(ids[0])) ",OTHER" } { (ids[0]) ",OTHER" } }
        }
    };
    Ok(page(
        "Compare runs",
        Some(&session),
        Live::default(),
        content,
    ))
}

fn rows<K: std::fmt::Display>(
    prefix: &str,
    table: &BTreeMap<K, Vec<Option<String>>>,
    differs: &dyn Fn(&[Option<String>]) -> bool,
) -> Markup {
    html! {
        @for (name, cells) in table {
            tr class=[differs(cells).then_some("diff")] {
                td { (prefix) (name) }
                @for c in cells { td.mono { @if let Some(c) = c { (c) } @else { span.muted { "—" } } } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(attempt: u32, seq: u64, data: &str) -> LogRecord {
        LogRecord {
            stage: "s".into(),
            attempt,
            seq,
            stream: LogStreamKind::Stdout,
            time_ms: 0,
            data: data.as_bytes().to_vec(),
        }
    }

    #[test]
    fn lines_join_across_chunks_and_attempts_are_separated() {
        let (lines, open) = lines_of(&[chunk(1, 0, "a\nb"), chunk(1, 1, "c\n"), chunk(2, 0, "d")]);
        let texts: Vec<_> = lines.iter().map(|l| (l.number, l.text.as_str())).collect();
        assert_eq!(
            texts,
            vec![
                (None, "attempt 1"),
                (Some(1), "a"),
                (Some(2), "bc"),
                (None, "attempt 2"),
                (Some(3), "d")
            ]
        );
        assert!(open);
    }
}
