//! Conversions between the scheduler's types and the generated protocol types, as
//! `From`/`TryFrom` impls (and a few functions where a value needs more than one source).
//! Generated types go no further than this module and the handlers. Runs, stages, artifacts
//! and logs are here; `worker` holds what the worker service exchanges, `admin` schedules,
//! retries, secrets and the audit log.

mod admin;
mod transfer;
mod worker;

use vishwa_proto::v1 as pb;

pub(crate) use admin::backfill_response;
pub(crate) use worker::ResultReport;

use super::schedule::next_fire_ms_of;
use crate::dag::Dag;
use crate::ids::Millis;
use crate::run::{
    ArtifactRef, AttemptOutcome, AttemptRecord, CacheNote, CacheOutcome, RetryRecord, RunRecord,
    RunState, StageRecord, StageState,
};
use crate::store::{ArtifactRecord, ConsumerRecord, DagRecord, LogRecord, LogStreamKind};

impl From<RunState> for pb::RunState {
    fn from(s: RunState) -> Self {
        match s {
            RunState::Queued => pb::RunState::Queued,
            RunState::Running => pb::RunState::Running,
            RunState::Succeeded => pb::RunState::Succeeded,
            RunState::Failed => pb::RunState::Failed,
            RunState::Cancelled => pb::RunState::Cancelled,
        }
    }
}

/// The run state a protocol value names, if any.
pub(crate) fn run_state_from_pb(s: pb::RunState) -> Option<RunState> {
    match s {
        pb::RunState::Unspecified => None,
        pb::RunState::Queued => Some(RunState::Queued),
        pb::RunState::Running => Some(RunState::Running),
        pb::RunState::Succeeded => Some(RunState::Succeeded),
        pb::RunState::Failed => Some(RunState::Failed),
        pb::RunState::Cancelled => Some(RunState::Cancelled),
    }
}

fn stage_state(s: &StageState) -> pb::StageState {
    match s {
        StageState::Pending => pb::StageState::Pending,
        StageState::WaitingApproval { .. } => pb::StageState::WaitingApproval,
        StageState::Queued { .. } => pb::StageState::Queued,
        StageState::Running { .. } => pb::StageState::Running,
        StageState::Succeeded { .. } => pb::StageState::Succeeded,
        StageState::Failed { .. } => pb::StageState::Failed,
        StageState::UpstreamFailed { .. } => pb::StageState::UpstreamFailed,
        StageState::Skipped { .. } => pb::StageState::Skipped,
        StageState::Cancelled { .. } => pb::StageState::Cancelled,
    }
}

/// A run header with counts over its stage records.
pub(crate) fn run_summary(run: &RunRecord, stages: Option<&[StageRecord]>) -> pb::RunSummary {
    let mut summary = pb::RunSummary {
        run_id: run.id.0.clone(),
        dag: run.dag.clone(),
        dag_version: run.dag_version.clone(),
        state: pb::RunState::from(run.state) as i32,
        created_ms: run.created_ms,
        started_ms: run.started_ms.unwrap_or(0),
        finished_ms: run.finished_ms.unwrap_or(0),
        trigger: run.trigger.as_str().to_owned(),
        message: run.message.clone().unwrap_or_default(),
        logical_time_ms: run.logical_time_ms.unwrap_or(0),
        ..Default::default()
    };
    if let Some(stages) = stages {
        summary.stages_total = stages.len() as u32;
        for s in stages {
            match s.state {
                StageState::Succeeded { .. } => summary.stages_succeeded += 1,
                StageState::Failed { .. } | StageState::UpstreamFailed { .. } => {
                    summary.stages_failed += 1
                }
                StageState::Running { .. } => summary.stages_running += 1,
                _ => {}
            }
        }
    }
    summary
}

/// A registered DAG as listed: its current version parsed, its last run if any.
pub(crate) fn dag_summary(
    dag: &Dag,
    record: &DagRecord,
    last_run: Option<&RunRecord>,
    next_fire_after: Millis,
) -> pb::DagSummary {
    let (schedule, timezone) = dag
        .schedule
        .as_ref()
        .map(|s| (s.cron.clone(), s.timezone.name().to_owned()))
        .unwrap_or_default();
    pb::DagSummary {
        name: record.name.clone(),
        description: dag.description.clone().unwrap_or_default(),
        version: record.version.clone(),
        stages: dag.stages.len() as u32,
        schedule,
        timezone,
        next_fire_ms: next_fire_ms_of(dag, next_fire_after),
        submitted_ms: record.submitted_ms,
        last_run: last_run.map(|r| run_summary(r, None)),
        paused: record.paused,
    }
}

/// A run with its params, retries and (already converted) stages.
pub(crate) fn run_view(
    run: &RunRecord,
    stages: &[StageRecord],
    views: Vec<pb::StageRun>,
) -> pb::Run {
    pb::Run {
        summary: Some(run_summary(run, Some(stages))),
        params: run
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
        stages: views,
        retries: run.retries.iter().map(pb::RunRetry::from).collect(),
        no_cache: run.no_cache,
    }
}

impl From<&RetryRecord> for pb::RunRetry {
    fn from(r: &RetryRecord) -> Self {
        pb::RunRetry {
            at_ms: r.at_ms,
            mode: r.mode.describe(),
            stages: r.stages.clone(),
        }
    }
}

fn attempt(a: &AttemptRecord) -> pb::Attempt {
    let (has_exit_code, exit_code, message) = match &a.outcome {
        AttemptOutcome::Exited { code } => (true, *code, String::new()),
        AttemptOutcome::Lost { reason } => (false, 0, reason.clone()),
        AttemptOutcome::Error { message, .. } => (false, 0, message.clone()),
        AttemptOutcome::TimedOut => (false, 0, "killed at its timeout".to_owned()),
        _ => (false, 0, String::new()),
    };
    pb::Attempt {
        id: a.id.0.clone(),
        number: a.number,
        worker: a.worker.0.clone(),
        started_ms: a.started_ms,
        finished_ms: a.finished_ms.unwrap_or(0),
        outcome: a.outcome.name().to_owned(),
        has_exit_code,
        exit_code,
        message,
    }
}

impl From<&StageRecord> for pb::StageRun {
    fn from(s: &StageRecord) -> Self {
        let last = s.attempts.last();
        let (started_ms, worker) = match &s.state {
            StageState::Running {
                started_ms, worker, ..
            } => (*started_ms, worker.0.clone()),
            _ => (
                last.map(|a| a.started_ms).unwrap_or(0),
                last.map(|a| a.worker.0.clone()).unwrap_or_default(),
            ),
        };
        let (message, not_before_ms) = match &s.state {
            StageState::Failed { error, .. } => (error.clone(), 0),
            StageState::Skipped { reason, .. } => (reason.clone(), 0),
            StageState::UpstreamFailed { .. } => ("an upstream stage failed".to_owned(), 0),
            StageState::WaitingApproval { message, .. } => (message.clone(), 0),
            StageState::Queued {
                not_before_ms: Some(t),
                ..
            } => {
                let why = last.map(|a| attempt(a).message).unwrap_or_default();
                (why, *t)
            }
            _ => (String::new(), 0),
        };
        pb::StageRun {
            name: s.instance.clone(),
            state: stage_state(&s.state) as i32,
            needs: s.needs.clone(),
            attempt: s.attempts.len() as u32,
            worker,
            queued_ms: s.queued_ms.unwrap_or(0),
            started_ms,
            finished_ms: s.state.finished_ms().unwrap_or(0),
            message,
            attempts: s.attempts.iter().map(attempt).collect(),
            not_before_ms,
            metrics: s.metrics.clone().into_iter().collect(),
            outputs: s.outputs.iter().map(pb::ArtifactRef::from).collect(),
            cache: s.cache.as_ref().map(pb::StageCache::from),
            approval_deadline_ms: match &s.state {
                StageState::WaitingApproval { deadline_ms, .. } => deadline_ms.unwrap_or(0),
                _ => 0,
            },
        }
    }
}

impl From<&ArtifactRef> for pb::ArtifactRef {
    fn from(a: &ArtifactRef) -> Self {
        pb::ArtifactRef {
            name: a.name.clone(),
            digest: a.digest.clone(),
            size: a.size,
        }
    }
}

impl From<&CacheNote> for pb::StageCache {
    fn from(n: &CacheNote) -> Self {
        match &n.outcome {
            CacheOutcome::Hit { run, stage } => pb::StageCache {
                key: n.key.clone(),
                hit: true,
                from_run: run.0.clone(),
                from_stage: stage.clone(),
                reason: String::new(),
            },
            CacheOutcome::Miss { reason } => pb::StageCache {
                key: n.key.clone(),
                hit: false,
                reason: reason.clone(),
                ..Default::default()
            },
        }
    }
}

/// An indexed output with the stages that consumed its content.
pub(crate) fn artifact(a: &ArtifactRecord, consumers: &[ConsumerRecord]) -> pb::Artifact {
    pb::Artifact {
        run_id: a.run.0.clone(),
        stage: a.stage.clone(),
        name: a.name.clone(),
        digest: a.digest.clone(),
        size: a.size,
        created_ms: a.created_ms,
        cached_from_run: a
            .cached_from
            .as_ref()
            .map(|r| r.0.clone())
            .unwrap_or_default(),
        consumers: consumers.iter().map(artifact_use).collect(),
    }
}

pub(crate) fn artifact_use(c: &ConsumerRecord) -> pb::ArtifactUse {
    pb::ArtifactUse {
        run_id: c.run.0.clone(),
        stage: c.stage.clone(),
    }
}

impl From<LogStreamKind> for pb::LogStream {
    fn from(s: LogStreamKind) -> Self {
        match s {
            LogStreamKind::Stdout => pb::LogStream::Stdout,
            LogStreamKind::Stderr => pb::LogStream::Stderr,
            LogStreamKind::System => pb::LogStream::System,
        }
    }
}

/// The log stream a protocol value names (unknown values count as stdout).
fn log_stream_from_pb(s: i32) -> LogStreamKind {
    match pb::LogStream::try_from(s) {
        Ok(pb::LogStream::Stderr) => LogStreamKind::Stderr,
        Ok(pb::LogStream::System) => LogStreamKind::System,
        _ => LogStreamKind::Stdout,
    }
}

/// A stored log chunk as sent to clients.
pub(crate) fn log_line(run: &str, l: &LogRecord) -> pb::LogLine {
    pb::LogLine {
        run_id: run.to_owned(),
        stage: l.stage.clone(),
        attempt: l.attempt,
        stream: pb::LogStream::from(l.stream) as i32,
        data: l.data.clone().into(),
        seq: l.seq,
        time_ms: l.time_ms,
    }
}
