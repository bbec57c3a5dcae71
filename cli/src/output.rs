//! How the CLI shows things: tables for people, JSON for scripts, times and durations.

use std::io::Write;

use serde_json::{Value, json};
use vishwa_proto::v1 as pb;

/// Output format chosen with `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Table,
    Json,
}

/// A plain text table with aligned columns.
pub(crate) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: Vec<&'static str>) -> Self {
        Table {
            header,
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    pub(crate) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        let line = |cells: &mut dyn Iterator<Item = &str>, out: &mut String| {
            let mut first = true;
            let mut pending = String::new();
            for (i, cell) in cells.enumerate() {
                if !first {
                    pending.push_str("  ");
                }
                first = false;
                pending.push_str(cell);
                let pad = widths[i].saturating_sub(cell.chars().count());
                pending.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(pending.trim_end());
            out.push('\n');
        };
        line(&mut self.header.iter().copied(), &mut out);
        for row in &self.rows {
            line(&mut row.iter().map(String::as_str), &mut out);
        }
        out
    }

    pub(crate) fn print(&self) {
        out!("{}", self.render());
    }
}

/// Prints a JSON value, pretty.
pub(crate) fn print_json(value: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, value);
    let _ = writeln!(out);
}

/// A time in the local zone, or `-` for unset.
pub(crate) fn time(ms: i64) -> String {
    if ms == 0 {
        return "-".to_owned();
    }
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "-".to_owned())
}

/// Only the time of day, for event lines.
pub(crate) fn clock(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

/// RFC 3339 in UTC, for JSON.
pub(crate) fn rfc3339(ms: i64) -> Value {
    if ms == 0 {
        return Value::Null;
    }
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

/// A duration between two times, `-` when either is unset (with `end` 0, up to now).
pub(crate) fn duration(start: i64, end: i64) -> String {
    if start == 0 {
        return "-".to_owned();
    }
    let end = if end == 0 {
        chrono::Utc::now().timestamp_millis()
    } else {
        end
    };
    human_ms(end - start)
}

/// `850ms`, `12.3s`, `4m05s`, `2h03m`.
pub(crate) fn human_ms(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

pub(crate) fn stage_state(s: i32) -> &'static str {
    match pb::StageState::try_from(s).unwrap_or(pb::StageState::Unspecified) {
        pb::StageState::Unspecified => "unknown",
        pb::StageState::Pending => "pending",
        pb::StageState::Queued => "queued",
        pb::StageState::Running => "running",
        pb::StageState::Succeeded => "succeeded",
        pb::StageState::Failed => "failed",
        pb::StageState::UpstreamFailed => "upstream_failed",
        pb::StageState::Skipped => "skipped",
        pb::StageState::Cancelled => "cancelled",
        pb::StageState::WaitingApproval => "waiting_approval",
    }
}

/// A stage's state as people read it: a success that reused another run's outputs says
/// `cached` rather than `succeeded`, since nothing ran.
pub(crate) fn stage_label(s: &pb::StageRun) -> &'static str {
    if is_cache_hit(s) {
        "cached"
    } else {
        stage_state(s.state)
    }
}

/// Whether the stage succeeded by reusing a cached result.
pub(crate) fn is_cache_hit(s: &pb::StageRun) -> bool {
    s.state == pb::StageState::Succeeded as i32 && s.cache.as_ref().is_some_and(|c| c.hit)
}

pub(crate) fn run_state(s: i32) -> &'static str {
    match pb::RunState::try_from(s).unwrap_or(pb::RunState::Unspecified) {
        pb::RunState::Unspecified => "unknown",
        pb::RunState::Queued => "queued",
        pb::RunState::Running => "running",
        pb::RunState::Succeeded => "succeeded",
        pb::RunState::Failed => "failed",
        pb::RunState::Cancelled => "cancelled",
    }
}

/// A run's state for tables: a slot skipped by `overlap: skip` is a cancelled run record whose
/// message starts with `skipped:`, shown as `cancelled (skipped)`.
pub(crate) fn run_state_label(r: &pb::RunSummary) -> String {
    let state = run_state(r.state);
    if r.state == pb::RunState::Cancelled as i32 && r.message.starts_with("skipped:") {
        format!("{state} (skipped)")
    } else {
        state.to_owned()
    }
}

/// Whether a run state is final.
pub(crate) fn run_is_final(s: i32) -> bool {
    matches!(
        pb::RunState::try_from(s),
        Ok(pb::RunState::Succeeded | pb::RunState::Failed | pb::RunState::Cancelled)
    )
}

pub(crate) fn run_json(r: &pb::RunSummary) -> Value {
    json!({
        "run_id": r.run_id,
        "dag": r.dag,
        "dag_version": r.dag_version,
        "state": run_state(r.state),
        "trigger": r.trigger,
        "created": rfc3339(r.created_ms),
        "started": rfc3339(r.started_ms),
        "finished": rfc3339(r.finished_ms),
        "logical_time": rfc3339(r.logical_time_ms),
        "message": (!r.message.is_empty()).then_some(&r.message),
        "stages": {
            "total": r.stages_total,
            "succeeded": r.stages_succeeded,
            "failed": r.stages_failed,
            "running": r.stages_running,
        },
    })
}

pub(crate) fn stage_json(s: &pb::StageRun) -> Value {
    json!({
        "name": s.name,
        "state": stage_state(s.state),
        "needs": s.needs,
        "attempt": s.attempt,
        "worker": (!s.worker.is_empty()).then_some(&s.worker),
        "queued": rfc3339(s.queued_ms),
        "started": rfc3339(s.started_ms),
        "finished": rfc3339(s.finished_ms),
        "message": (!s.message.is_empty()).then_some(&s.message),
        "retry_at": rfc3339(s.not_before_ms),
        "approval_deadline": rfc3339(s.approval_deadline_ms),
        "attempts": s.attempts.iter().map(|a| json!({
            "id": a.id,
            "number": a.number,
            "worker": a.worker,
            "started": rfc3339(a.started_ms),
            "finished": rfc3339(a.finished_ms),
            "outcome": a.outcome,
            "exit_code": a.has_exit_code.then_some(a.exit_code),
            "message": (!a.message.is_empty()).then_some(&a.message),
        })).collect::<Vec<_>>(),
        "metrics": s.metrics.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "outputs": s.outputs.iter().map(|o| json!({
            "name": o.name,
            "digest": o.digest,
            "size": o.size,
        })).collect::<Vec<_>>(),
        "cache": s.cache.as_ref().map(|c| json!({
            "key": c.key,
            "hit": c.hit,
            "from_run": (!c.from_run.is_empty()).then_some(&c.from_run),
            "from_stage": (!c.from_stage.is_empty()).then_some(&c.from_stage),
            "reason": (!c.reason.is_empty()).then_some(&c.reason),
        })),
    })
}

/// A metric for people: integers without a fraction, others with up to 6 significant
/// decimals.
pub(crate) fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        let text = format!("{v:.6}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// A byte count for people: `512Mi`, `4.0Gi`.
pub(crate) fn bytes(n: u64) -> String {
    const GI: f64 = (1u64 << 30) as f64;
    const MI: f64 = (1u64 << 20) as f64;
    let f = n as f64;
    if n == 0 {
        "0".to_owned()
    } else if f >= GI {
        format!("{:.1}Gi", f / GI)
    } else if f >= MI {
        format!("{:.0}Mi", f / MI)
    } else {
        format!("{n}B")
    }
}

pub(crate) fn worker_json(w: &pb::WorkerInfo) -> Value {
    json!({
        "name": w.name,
        "labels": w.labels,
        "slots": w.slots,
        "cpus": w.cpus,
        "memory_bytes": w.memory_bytes,
        "gpus": w.gpus,
        "used": {
            "slots": w.used_slots,
            "cpus": w.used_cpus,
            "memory_bytes": w.used_memory_bytes,
            "gpus": w.used_gpus,
        },
        "running": w.running.iter().map(|r| json!({
            "run_id": r.run_id, "stage": r.stage, "attempt": r.attempt,
        })).collect::<Vec<_>>(),
        "last_seen": rfc3339(w.last_seen_ms),
        "draining": w.draining,
        "drained": w.drained,
        "connected": w.connected,
    })
}

pub(crate) fn dag_json(d: &pb::DagSummary) -> Value {
    json!({
        "name": d.name,
        "description": d.description,
        "version": d.version,
        "stages": d.stages,
        "schedule": (!d.schedule.is_empty()).then_some(&d.schedule),
        "timezone": (!d.timezone.is_empty()).then_some(&d.timezone),
        "next_fire": rfc3339(d.next_fire_ms),
        "next_fire_in_zone": (d.next_fire_ms != 0)
            .then(|| d.timezone.parse::<chrono_tz::Tz>().ok())
            .flatten()
            .map(|tz| vishwa_scheduler::cron::format_in_zone(d.next_fire_ms, tz)),
        "submitted": rfc3339(d.submitted_ms),
        "paused": d.paused,
        "last_run": d.last_run.as_ref().map(run_json),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_trim_trailing_space() {
        let mut t = Table::new(vec!["NAME", "STATE"]);
        t.row(vec!["collect".into(), "succeeded".into()]);
        t.row(vec!["a".into(), String::new()]);
        assert_eq!(t.render(), "NAME     STATE\ncollect  succeeded\na\n");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_ms(850), "850ms");
        assert_eq!(human_ms(12_340), "12.3s");
        assert_eq!(human_ms(245_000), "4m05s");
        assert_eq!(human_ms(7_380_000), "2h03m");
    }
}
