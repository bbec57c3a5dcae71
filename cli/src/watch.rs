//! Following a run as it happens: state changes (and log lines) as event lines, or a live
//! stage table redrawn in place on a terminal.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::StreamExt;
use vishwa_proto::v1 as pb;

use crate::client::Client;
use crate::loglines::{Line, LineJoiner};
use crate::output::{self, Format};
use crate::reconnect::{LogDedup, Reconnect};

/// How a watch shows things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// One line per state change and log chunk.
    Lines,
    /// A stage table redrawn in place (terminals only).
    LiveTable,
    /// One JSON object per event.
    Json,
}

impl Style {
    /// Lines with logs; the live table when logs are off and stdout is a terminal.
    pub(crate) fn choose(format: Format, with_logs: bool) -> Style {
        match format {
            Format::Json => Style::Json,
            Format::Table if !with_logs && std::io::stdout().is_terminal() => Style::LiveTable,
            Format::Table => Style::Lines,
        }
    }
}

/// Follows `run_id` to its end and returns its final summary. Rides through a scheduler
/// restart: the watch is opened again and carries on (nothing shown twice).
pub(crate) async fn watch_run(
    client: &mut Client,
    run_id: &str,
    with_logs: bool,
    style: Style,
) -> Result<pb::RunSummary> {
    let mut view = View::new(style);
    let mut reconnect = Reconnect::new();
    loop {
        let mut stream = match client.watch_run(run_id, with_logs).await {
            Ok(stream) => stream,
            Err(status) => {
                if reconnect.should_retry(&status, client.server()).await {
                    continue;
                }
                return Err(client.error(status));
            }
        };
        reconnect.connected();
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(event) => event,
                Err(status) => {
                    if reconnect.should_retry(&status, client.server()).await {
                        break;
                    }
                    return Err(client.error(status));
                }
            };
            match event.event {
                Some(pb::run_event::Event::Stage(stage)) => view.stage(stage),
                Some(pb::run_event::Event::Log(line)) => view.log(&line),
                Some(pb::run_event::Event::Run(run)) => {
                    let done = output::run_is_final(run.state);
                    view.run(&run);
                    if done {
                        view.finish();
                        return Ok(run);
                    }
                }
                None => {}
            }
        }
    }
}

struct View {
    style: Style,
    stages: BTreeMap<String, pb::StageRun>,
    order: Vec<String>,
    /// Last (state, attempt, message) printed per stage, so repeats are not printed again
    /// (a queued stage is shown again when why it waits changes).
    shown: BTreeMap<String, (i32, u32, String)>,
    width: usize,
    run: Option<pb::RunSummary>,
    drawn_lines: usize,
    last_draw: Option<Instant>,
    logs_seen: LogDedup,
    lines: LineJoiner,
}

impl View {
    fn new(style: Style) -> Self {
        View {
            style,
            stages: BTreeMap::new(),
            order: Vec::new(),
            shown: BTreeMap::new(),
            width: 8,
            run: None,
            drawn_lines: 0,
            last_draw: None,
            logs_seen: LogDedup::default(),
            lines: LineJoiner::default(),
        }
    }

    fn stage(&mut self, stage: pb::StageRun) {
        if !self.stages.contains_key(&stage.name) {
            self.order.push(stage.name.clone());
            self.width = self.width.max(stage.name.chars().count()).min(40);
        }
        let key = (stage.state, stage.attempt, stage.message.clone());
        let changed = self.shown.get(&stage.name) != Some(&key);
        match self.style {
            Style::Lines if changed && stage.state != pb::StageState::Pending as i32 => {
                outln!("{}", self.stage_line(&stage));
            }
            Style::Json if changed => {
                output::print_json(&serde_json::json!({"stage": output::stage_json(&stage)}));
            }
            _ => {}
        }
        self.shown.insert(stage.name.clone(), key);
        self.stages.insert(stage.name.clone(), stage);
        if self.style == Style::LiveTable {
            self.draw(false);
        }
    }

    fn stage_line(&self, s: &pb::StageRun) -> String {
        let when = [s.finished_ms, s.started_ms, s.queued_ms]
            .into_iter()
            .find(|t| *t > 0)
            .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
        let state = output::stage_label(s);
        let detail = match pb::StageState::try_from(s.state) {
            _ if output::is_cache_hit(s) => {
                let from = s.cache.as_ref().map_or("", |c| c.from_run.as_str());
                format!("(from run {from})")
            }
            Ok(pb::StageState::Running) => format!("on {} (attempt {})", s.worker, s.attempt),
            Ok(pb::StageState::Queued) if s.not_before_ms > 0 => format!(
                "retry {} in {}{}",
                s.attempt + 1,
                output::human_ms(s.not_before_ms - chrono::Utc::now().timestamp_millis()),
                if s.message.is_empty() {
                    last_attempt_note(s)
                } else {
                    format!(": {}", s.message)
                }
            ),
            Ok(pb::StageState::Succeeded) => output::duration(s.started_ms, s.finished_ms),
            Ok(pb::StageState::Failed) if s.attempts.is_empty() => s.message.clone(),
            Ok(pb::StageState::Failed) => {
                format!("{} after {} attempt(s)", s.message, s.attempts.len())
            }
            _ => s.message.clone(),
        };
        format!(
            "{}  {:<w$}  {:<15} {}",
            output::clock(when),
            s.name,
            state,
            detail,
            w = self.width
        )
        .trim_end()
        .to_owned()
    }

    fn log(&mut self, line: &pb::LogLine) {
        if !self.logs_seen.first_time(line) {
            return;
        }
        match self.style {
            Style::Lines => {
                let lines = self.lines.push(line);
                self.print_lines(lines);
            }
            Style::Json => output::print_json(&serde_json::json!({"log": {
                "stage": line.stage,
                "attempt": line.attempt,
                "stream": match pb::LogStream::try_from(line.stream) {
                    Ok(pb::LogStream::Stderr) => "stderr",
                    Ok(pb::LogStream::System) => "system",
                    _ => "stdout",
                },
                "text": String::from_utf8_lossy(&line.data),
            }})),
            Style::LiveTable => {}
        }
    }

    fn run(&mut self, run: &pb::RunSummary) {
        if self.style == Style::Json && output::run_is_final(run.state) {
            output::print_json(&serde_json::json!({"run": output::run_json(run)}));
        }
        self.run = Some(run.clone());
        if self.style == Style::LiveTable {
            self.draw(false);
        }
    }

    fn print_lines(&self, lines: Vec<Line>) {
        let mut out = std::io::stdout().lock();
        for l in lines {
            let marker = match pb::LogStream::try_from(l.stream) {
                Ok(pb::LogStream::Stderr) => "!",
                Ok(pb::LogStream::System) => "*",
                _ => "|",
            };
            let _ = writeln!(
                out,
                "{:>8}  {:<w$} {marker} {}",
                "",
                l.stage,
                l.text,
                w = self.width
            );
        }
    }

    fn finish(&mut self) {
        if self.style == Style::Lines {
            let lines = self.lines.finish();
            self.print_lines(lines);
        }
        if self.style == Style::LiveTable {
            self.draw(true);
        }
    }

    fn draw(&mut self, force: bool) {
        let now = Instant::now();
        if !force
            && self
                .last_draw
                .is_some_and(|t| now.duration_since(t) < Duration::from_millis(100))
        {
            return;
        }
        self.last_draw = Some(now);
        let mut table = output::Table::new(vec!["STAGE", "STATE", "ATTEMPT", "WORKER", "DURATION"]);
        for name in &self.order {
            let s = &self.stages[name];
            table.row(vec![
                s.name.clone(),
                output::stage_label(s).to_owned(),
                if s.attempt == 0 {
                    "-".into()
                } else {
                    s.attempt.to_string()
                },
                if s.worker.is_empty() {
                    "-".into()
                } else {
                    s.worker.clone()
                },
                output::duration(s.started_ms, s.finished_ms),
            ]);
        }
        let mut text = table.render();
        for name in &self.order {
            let s = &self.stages[name];
            let noted = [pb::StageState::Queued, pb::StageState::WaitingApproval];
            if noted.iter().any(|n| s.state == *n as i32) && !s.message.is_empty() {
                text.push_str(&format!("{name}: {}\n", s.message));
            }
        }
        if let Some(run) = &self.run {
            text.push_str(&format!(
                "run {}: {} ({}/{} succeeded, {} failed, {} running)\n",
                run.run_id,
                output::run_state(run.state),
                run.stages_succeeded,
                run.stages_total,
                run.stages_failed,
                run.stages_running
            ));
        }
        let mut out = std::io::stdout().lock();
        if self.drawn_lines > 0 {
            let _ = write!(out, "\x1b[{}A\x1b[J", self.drawn_lines);
        }
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
        self.drawn_lines = text.lines().count();
    }
}

fn last_attempt_note(s: &pb::StageRun) -> String {
    match s.attempts.last() {
        Some(a) if a.has_exit_code => format!(": exited with code {}", a.exit_code),
        Some(a) if !a.message.is_empty() => format!(": {}", a.message),
        Some(a) => format!(": {}", a.outcome),
        None => String::new(),
    }
}
