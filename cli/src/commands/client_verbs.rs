//! Client verbs: submit, dags, trigger, runs, get, logs, cancel.

use std::io::Write;

use anyhow::Result;
use futures::StreamExt;
use serde_json::json;
use vishwa_proto::v1 as pb;

use super::{exit_code_of, parse_params};
use crate::client::Client;
use crate::load::load_dag;
use crate::loglines::LineJoiner;
use crate::output::{self, Format, Table};
use crate::reconnect::{LogDedup, Reconnect};
use crate::watch::{Style, watch_run};
use crate::{Global, Verb, WorkersAction, exit};

pub(crate) async fn dispatch(verb: Verb, global: &Global) -> Result<u8> {
    // Read local input before connecting, so bad input fails the same with no scheduler.
    let submission = match &verb {
        Verb::Submit { path } => Some(load_dag(path)?.1),
        _ => None,
    };
    let params = match &verb {
        Verb::Trigger { dag, params, .. } => {
            let params = parse_params(params)?;
            vishwa_scheduler::api::limits::check_trigger(
                dag,
                params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .map_err(|e| crate::load::Invalid(format!("error: {e}")))?;
            params
        }
        _ => Default::default(),
    };
    let mut client = Client::from_global(global).await?;
    let format = global.format;
    match verb {
        Verb::Submit { .. } => {
            let file = submission.expect("read above");
            let mut bundle_digest = String::new();
            if let Some(dir) = &file.dir {
                let packed = crate::bundle::pack(dir)?;
                let sent = crate::bundle::upload(&mut client, &packed).await?;
                if format == Format::Table && sent {
                    outln!(
                        "uploaded bundle {} ({} files, {} bytes)",
                        short(&packed.digest),
                        packed.files,
                        packed.size
                    );
                }
                bundle_digest = packed.digest;
            }
            let response = client
                .submit(pb::SubmitDagRequest {
                    file_name: file.file_name,
                    source: file.source,
                    local_dir: String::new(),
                    bundle_digest,
                })
                .await?;
            let dag = response.dag.unwrap_or_default();
            match format {
                Format::Json => output::print_json(
                    &json!({"dag": output::dag_json(&dag), "changed": response.changed}),
                ),
                Format::Table if response.changed => {
                    outln!("registered {} version {}", dag.name, short(&dag.version))
                }
                Format::Table => outln!(
                    "{} is unchanged (version {})",
                    dag.name,
                    short(&dag.version)
                ),
            }
            Ok(exit::OK)
        }
        Verb::Dags => {
            let dags = client.list_dags().await?;
            if format == Format::Json {
                output::print_json(&json!(
                    dags.iter().map(output::dag_json).collect::<Vec<_>>()
                ));
                return Ok(exit::OK);
            }
            let mut table = Table::new(vec![
                "NAME",
                "VERSION",
                "STAGES",
                "SCHEDULE",
                "NEXT FIRE (ZONE)",
                "NEXT FIRE (UTC)",
                "LAST RUN",
                "STATE",
            ]);
            for d in &dags {
                let schedule = if d.schedule.is_empty() {
                    "-".to_owned()
                } else {
                    format!("{} ({})", d.schedule, d.timezone)
                };
                let (last, state) = d
                    .last_run
                    .as_ref()
                    .map(|r| {
                        (
                            output::time(r.created_ms),
                            output::run_state(r.state).to_owned(),
                        )
                    })
                    .unwrap_or(("-".into(), "-".into()));
                let (next_in_zone, next_utc) = super::schedule_verbs::next_fire_cells(d);
                table.row(vec![
                    d.name.clone(),
                    short(&d.version).to_owned(),
                    d.stages.to_string(),
                    schedule,
                    next_in_zone,
                    next_utc,
                    last,
                    state,
                ]);
            }
            table.print();
            Ok(exit::OK)
        }
        Verb::Trigger {
            dag,
            watch,
            no_cache,
            ..
        } => {
            let run = client
                .trigger(pb::TriggerRunRequest {
                    dag,
                    params: params.into_iter().collect(),
                    no_cache,
                })
                .await?;
            if !watch {
                match format {
                    Format::Json => output::print_json(&output::run_json(&run)),
                    Format::Table => outln!("{}", run.run_id),
                }
                return Ok(exit::OK);
            }
            if format == Format::Table {
                outln!("run {} ({} stages)", run.run_id, run.stages_total);
            }
            let last = watch_run(
                &mut client,
                &run.run_id,
                false,
                Style::choose(format, false),
            )
            .await?;
            if format == Format::Table {
                print_outcome(&last);
            }
            Ok(exit_code_of(last.state))
        }
        Verb::Runs {
            action: None,
            dag,
            state,
            limit,
        } => {
            let state = match state.as_deref() {
                Some("queued") => pb::RunState::Queued,
                Some("running") => pb::RunState::Running,
                Some("succeeded") => pb::RunState::Succeeded,
                Some("failed") => pb::RunState::Failed,
                Some("cancelled") => pb::RunState::Cancelled,
                _ => pb::RunState::Unspecified,
            };
            let runs = client
                .list_runs(pb::ListRunsRequest {
                    dag: dag.unwrap_or_default(),
                    state: state as i32,
                    limit,
                })
                .await?;
            if format == Format::Json {
                output::print_json(&json!(
                    runs.iter().map(output::run_json).collect::<Vec<_>>()
                ));
                return Ok(exit::OK);
            }
            let mut table = Table::new(vec![
                "RUN", "DAG", "STATE", "TRIGGER", "CREATED", "DURATION", "STAGES",
            ]);
            for r in &runs {
                table.row(vec![
                    r.run_id.clone(),
                    r.dag.clone(),
                    output::run_state_label(r),
                    r.trigger.clone(),
                    output::time(r.created_ms),
                    output::duration(r.started_ms, r.finished_ms),
                    format!("{}/{}", r.stages_succeeded, r.stages_total),
                ]);
            }
            table.print();
            Ok(exit::OK)
        }
        Verb::Get { run } => {
            let run = client.get_run(&run).await?;
            print_run(&run, format);
            Ok(exit::OK)
        }
        Verb::Logs { run, stage, follow } => {
            print_logs(&mut client, run, stage, follow, format).await?;
            Ok(exit::OK)
        }
        Verb::Retry {
            run,
            from,
            only,
            watch,
        } => {
            let response = client
                .retry(pb::RetryRunRequest {
                    run_id: run.clone(),
                    from_stage: from.unwrap_or_default(),
                    only,
                })
                .await?;
            let summary = response.run.unwrap_or_default();
            match format {
                Format::Json => output::print_json(&json!({
                    "run": output::run_json(&summary),
                    "stages": response.stages,
                })),
                Format::Table => outln!(
                    "retrying {} stage{} of {}: {}",
                    response.stages.len(),
                    if response.stages.len() == 1 { "" } else { "s" },
                    summary.run_id,
                    response.stages.join(", ")
                ),
            }
            if !watch {
                return Ok(exit::OK);
            }
            let last = watch_run(&mut client, &run, false, Style::choose(format, false)).await?;
            if format == Format::Table {
                print_outcome(&last);
            }
            Ok(exit_code_of(last.state))
        }
        Verb::Workers { action } => {
            match action {
                None => {
                    let workers = client.list_workers().await?;
                    print_workers(&workers, format);
                }
                Some(WorkersAction::Drain { name }) => {
                    let w = client.drain_worker(&name, false).await?;
                    match format {
                        Format::Json => output::print_json(&output::worker_json(&w)),
                        Format::Table => outln!(
                            "drained {}: it finishes its {} running stage(s) and takes nothing new",
                            w.name,
                            w.running.len()
                        ),
                    }
                }
                Some(WorkersAction::Undrain { name }) => {
                    let w = client.drain_worker(&name, true).await?;
                    match format {
                        Format::Json => output::print_json(&output::worker_json(&w)),
                        Format::Table => outln!("{} takes stages again", w.name),
                    }
                }
            }
            Ok(exit::OK)
        }
        Verb::Cancel { run } => {
            let run = client.cancel(&run).await?;
            match format {
                Format::Json => output::print_json(&output::run_json(&run)),
                Format::Table => outln!("{} {}", run.run_id, output::run_state(run.state)),
            }
            Ok(exit::OK)
        }
        _ => unreachable!("dispatch routes only client verbs here"),
    }
}

/// Prints a run's logs (or one stage's); with `follow`, until the run ends, riding through
/// scheduler restarts without printing anything twice.
async fn print_logs(
    client: &mut Client,
    run: String,
    stage: Option<String>,
    follow: bool,
    format: Format,
) -> Result<()> {
    let request = pb::StreamLogsRequest {
        run_id: run,
        stage: stage.clone().unwrap_or_default(),
        follow,
    };
    let mut seen = LogDedup::default();
    let mut lines = LineJoiner::default();
    let mut reconnect = Reconnect::new();
    'open: loop {
        let mut stream = match client.stream_logs(request.clone()).await {
            Ok(stream) => stream,
            Err(status) => {
                if reconnect.should_retry(&status, client.server()).await {
                    continue;
                }
                return Err(client.error(status));
            }
        };
        reconnect.connected();
        while let Some(line) = stream.next().await {
            let line = match line {
                Ok(line) => line,
                Err(status) => {
                    if reconnect.should_retry(&status, client.server()).await {
                        continue 'open;
                    }
                    return Err(client.error(status));
                }
            };
            if seen.first_time(&line) {
                print_log_line(&line, stage.is_some(), format, &mut lines);
            }
        }
        for line in lines.finish() {
            outln!("{} | {}", line.stage, line.text);
        }
        return Ok(());
    }
}

fn print_log_line(line: &pb::LogLine, one_stage: bool, format: Format, lines: &mut LineJoiner) {
    let mut out = std::io::stdout().lock();
    if format == Format::Json {
        let value = json!({
            "stage": line.stage, "attempt": line.attempt, "seq": line.seq,
            "stream": match pb::LogStream::try_from(line.stream) {
                Ok(pb::LogStream::Stderr) => "stderr",
                Ok(pb::LogStream::System) => "system",
                _ => "stdout",
            },
            "text": String::from_utf8_lossy(&line.data),
        });
        let _ = writeln!(out, "{value}");
    } else if one_stage {
        let _ = out.write_all(&line.data);
    } else {
        for l in lines.push(line) {
            let _ = writeln!(out, "{} | {}", l.stage, l.text);
        }
    }
    let _ = out.flush();
}

fn print_workers(workers: &[pb::WorkerInfo], format: Format) {
    if format == Format::Json {
        output::print_json(&json!(
            workers.iter().map(output::worker_json).collect::<Vec<_>>()
        ));
        return;
    }
    let mut table = Table::new(vec![
        "WORKER",
        "STATE",
        "LABELS",
        "SLOTS",
        "CPUS",
        "MEMORY",
        "GPUS",
        "RUNNING",
        "LAST SEEN",
    ]);
    for w in workers {
        let state = if w.drained {
            "drained"
        } else if w.draining {
            "draining"
        } else if w.connected {
            "ready"
        } else {
            "away"
        };
        let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let running: Vec<String> = w
            .running
            .iter()
            .map(|r| format!("{}/{}", r.run_id, r.stage))
            .collect();
        table.row(vec![
            w.name.clone(),
            state.to_owned(),
            if labels.is_empty() {
                "-".into()
            } else {
                labels.join(",")
            },
            format!("{}/{}", w.used_slots, w.slots),
            format!("{}/{}", w.used_cpus, w.cpus),
            format!(
                "{}/{}",
                output::bytes(w.used_memory_bytes),
                output::bytes(w.memory_bytes)
            ),
            format!("{}/{}", w.used_gpus.len(), w.gpus.len()),
            if running.is_empty() {
                "-".into()
            } else {
                running.join(" ")
            },
            output::time(w.last_seen_ms),
        ]);
    }
    table.print();
}

/// The first 12 characters of a version hash.
pub(crate) fn short(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}

/// One line saying how a run ended.
pub(crate) fn print_outcome(run: &pb::RunSummary) {
    let mut line = format!(
        "run {} {} in {} ({} of {} stages succeeded",
        run.run_id,
        output::run_state(run.state),
        output::duration(run.started_ms.max(run.created_ms), run.finished_ms),
        run.stages_succeeded,
        run.stages_total
    );
    if run.stages_failed > 0 {
        line.push_str(&format!(", {} failed", run.stages_failed));
    }
    line.push(')');
    if !run.message.is_empty() && run.state != pb::RunState::Succeeded as i32 {
        line.push_str(&format!(": {}", run.message));
    }
    outln!("{line}");
}

fn print_run(run: &pb::Run, format: Format) {
    let summary = run.summary.clone().unwrap_or_default();
    if format == Format::Json {
        let mut value = output::run_json(&summary);
        value["params"] = json!(
            run.params
                .iter()
                .map(|(k, v)| (
                    k.clone(),
                    serde_json::from_str::<serde_json::Value>(v).unwrap_or(json!(v))
                ))
                .collect::<serde_json::Map<_, _>>()
        );
        value["stages"] = json!(
            run.stages
                .iter()
                .map(output::stage_json)
                .collect::<Vec<_>>()
        );
        value["retries"] = json!(
            run.retries
                .iter()
                .map(|r| json!({"at_ms": r.at_ms, "mode": r.mode, "stages": r.stages}))
                .collect::<Vec<_>>()
        );
        output::print_json(&value);
        return;
    }
    outln!(
        "run {}  {}  (dag {} @ {}, {})",
        summary.run_id,
        output::run_state(summary.state),
        summary.dag,
        short(&summary.dag_version),
        summary.trigger
    );
    outln!(
        "created {}  started {}  duration {}",
        output::time(summary.created_ms),
        output::time(summary.started_ms),
        output::duration(summary.started_ms, summary.finished_ms)
    );
    if !run.params.is_empty() {
        let params: Vec<String> = run.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        outln!("params  {}", params.join("  "));
    }
    if summary.logical_time_ms != 0 {
        outln!(
            "logical time {}",
            vishwa_scheduler::cron::format_utc(summary.logical_time_ms)
        );
    }
    if !summary.message.is_empty() {
        outln!("message {}", summary.message);
    }
    for r in &run.retries {
        outln!(
            "retried {}  {}: {}",
            output::time(r.at_ms),
            r.mode,
            r.stages.join(", ")
        );
    }
    outln!();
    let mut table = Table::new(vec![
        "STAGE", "STATE", "ATTEMPTS", "WORKER", "STARTED", "DURATION", "NOTE",
    ]);
    for s in &run.stages {
        let mut note = if !s.message.is_empty() {
            s.message.clone()
        } else {
            s.attempts
                .last()
                .filter(|a| a.has_exit_code && a.exit_code != 0)
                .map(|a| format!("exit code {}", a.exit_code))
                .unwrap_or_default()
        };
        if let Some(cache) = &s.cache {
            let said = if cache.hit {
                format!("cached from {} ({})", cache.from_run, cache.from_stage)
            } else {
                format!("cache miss: {}", cache.reason)
            };
            note = if note.is_empty() {
                said
            } else {
                format!("{note}; {said}")
            };
        }
        if s.approval_deadline_ms > 0 {
            note = format!(
                "{note} (rejected at {} unless approved)",
                output::time(s.approval_deadline_ms)
            );
        }
        table.row(vec![
            s.name.clone(),
            output::stage_label(s).to_owned(),
            s.attempts.len().to_string(),
            if s.worker.is_empty() {
                "-".into()
            } else {
                s.worker.clone()
            },
            if s.started_ms == 0 {
                "-".into()
            } else {
                output::clock(s.started_ms)
            },
            output::duration(s.started_ms, s.finished_ms),
            note,
        ]);
    }
    table.print();
    let measured: Vec<&pb::StageRun> = run
        .stages
        .iter()
        .filter(|s| !s.metrics.is_empty())
        .collect();
    if !measured.is_empty() {
        outln!();
        let mut metrics = Table::new(vec!["STAGE", "METRICS"]);
        for s in measured {
            let mut pairs: Vec<(&String, &f64)> = s.metrics.iter().collect();
            pairs.sort_by(|a, b| a.0.cmp(b.0));
            let text: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{k}={}", output::number(**v)))
                .collect();
            metrics.row(vec![s.name.clone(), text.join("  ")]);
        }
        metrics.print();
    }
}
