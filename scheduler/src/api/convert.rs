//! Conversions between the scheduler's types and the generated protocol types. Generated
//! types go no further than this module and the handlers.

use vishwa_proto::v1 as pb;

use crate::dag::{Command, ExecutorKind};
use crate::engine::{EngineError, TaskAssignment, WorkerView};
use crate::ids::{AttemptId, WorkerId};
use crate::run::{
    ArtifactRef, AttemptOutcome, AttemptRecord, AttemptReport, CacheNote, CacheOutcome,
    ReportedOutput, RunRecord, RunState, StageRecord, StageState,
};
use crate::store::{ArtifactRecord, ConsumerRecord, LogRecord, LogStreamKind};

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

impl TryFrom<pb::ArtifactRef> for ArtifactRef {
    type Error = String;

    /// A reported output as the scheduler keeps it; refuses a bad name or digest.
    fn try_from(a: pb::ArtifactRef) -> Result<Self, String> {
        crate::artifacts::check_digest(&a.digest).map_err(|e| e.to_string())?;
        if a.name.is_empty() || a.name.contains('/') || a.name == "." || a.name == ".." {
            return Err(format!("`{}` is not an output file name", a.name));
        }
        Ok(ArtifactRef {
            name: a.name,
            digest: a.digest,
            size: a.size,
        })
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
pub(crate) fn log_stream_from_pb(s: i32) -> LogStreamKind {
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

impl From<&TaskAssignment> for pb::Task {
    fn from(t: &TaskAssignment) -> Self {
        let command = t.command.as_ref().map(|c| match c {
            Command::Exec(args) => pb::task::Command::Exec(pb::Argv { args: args.clone() }),
            Command::Shell(s) => pb::task::Command::Shell(s.clone()),
        });
        pb::Task {
            attempt_id: t.attempt.0.clone(),
            run_id: t.run.0.clone(),
            dag: t.dag.clone(),
            stage: t.stage.clone(),
            attempt: t.attempt_number,
            executor: match t.executor {
                ExecutorKind::Docker => pb::ExecutorKind::Docker,
                ExecutorKind::Process => pb::ExecutorKind::Process,
            } as i32,
            image: t.image.clone().unwrap_or_default(),
            command,
            env: t.env.clone().into_iter().collect(),
            local_dir: t.local_dir.clone().unwrap_or_default(),
            bundle_digest: t.bundle.clone().unwrap_or_default(),
            gpus: t.gpus.clone(),
            secret_env: t.secret_env.clone(),
            timeout_ms: t.timeout.map(|d| d.as_millis() as u64).unwrap_or(0),
            mounts: t
                .mounts
                .iter()
                .map(|m| pb::Mount {
                    host: m.host.clone(),
                    container: m.container.clone(),
                    read_only: m.read_only,
                })
                .collect(),
            resources: Some(pb::Resources {
                cpus: t.resources.cpus.unwrap_or(0.0),
                memory_bytes: t.resources.memory_bytes.unwrap_or(0),
                gpus: t.resources.gpus.unwrap_or(0),
            }),
            inputs: t
                .inputs
                .iter()
                .map(|i| pb::ArtifactInput {
                    stage: i.stage.clone(),
                    name: i.name.clone(),
                    digest: i.digest.clone(),
                    size: i.size,
                })
                .collect(),
            outputs: t.outputs.clone(),
            max_log_bytes: t.max_log_bytes,
        }
    }
}

impl From<&WorkerView> for pb::WorkerInfo {
    fn from(w: &WorkerView) -> Self {
        pb::WorkerInfo {
            name: w.name.clone(),
            labels: w.labels.clone().into_iter().collect(),
            slots: w.slots,
            cpus: w.cpus,
            memory_bytes: w.memory_bytes,
            gpus: w.gpus.clone(),
            used_slots: w.running.len() as u32,
            used_cpus: w.used_cpus,
            used_memory_bytes: w.used_memory_bytes,
            used_gpus: w.used_gpus.clone(),
            running: w
                .running
                .iter()
                .map(|(run, stage, attempt)| pb::RunningStage {
                    run_id: run.0.clone(),
                    stage: stage.clone(),
                    attempt: *attempt,
                })
                .collect(),
            last_seen_ms: w.last_seen_ms,
            draining: w.draining,
            drained: w.drained,
            connected: w.connected,
        }
    }
}

impl From<pb::report_result_request::Outcome> for AttemptOutcome {
    fn from(outcome: pb::report_result_request::Outcome) -> Self {
        use pb::report_result_request::Outcome;
        match outcome {
            Outcome::ExitCode(code) => AttemptOutcome::Exited { code },
            Outcome::TimedOut(_) => AttemptOutcome::TimedOut,
            Outcome::Cancelled(_) => AttemptOutcome::Cancelled,
            Outcome::Error(e) => AttemptOutcome::Error {
                message: e.message,
                transient: e.transient,
            },
        }
    }
}

/// A worker's report of how an attempt ended. Its outputs are not yet known to be stored:
/// the handler looks each one up in the blob store before the engine applies the report.
pub(crate) struct ResultReport {
    pub worker: WorkerId,
    pub attempt: AttemptId,
    pub report: AttemptReport,
}

impl TryFrom<pb::ReportResultRequest> for ResultReport {
    type Error = EngineError;

    fn try_from(r: pb::ReportResultRequest) -> Result<Self, EngineError> {
        let outcome =
            AttemptOutcome::from(r.outcome.ok_or_else(|| EngineError::InvalidRequest {
                field: "outcome",
                reason: "a result must say how the attempt ended".to_owned(),
            })?);
        // Outputs and metrics count only for a success.
        let success = outcome == (AttemptOutcome::Exited { code: 0 });
        let (outputs, metrics) = if success {
            let outputs = r.outputs.into_iter().map(ReportedOutput::from).collect();
            (outputs, r.metrics.into_iter().collect())
        } else {
            Default::default()
        };
        Ok(ResultReport {
            worker: WorkerId(r.worker_id),
            attempt: AttemptId(r.attempt_id),
            report: AttemptReport {
                outcome,
                outputs,
                metrics,
            },
        })
    }
}

impl From<pb::ArtifactRef> for ReportedOutput {
    /// An uploaded output as reported (`stored: false` until the blob store is asked), or why
    /// it cannot be kept.
    fn from(a: pb::ArtifactRef) -> Self {
        let name = a.name.clone();
        match ArtifactRef::try_from(a) {
            Ok(artifact) => ReportedOutput::Uploaded {
                artifact,
                stored: false,
            },
            Err(error) => ReportedOutput::Unreadable { name, error },
        }
    }
}
