//! The worker service's conversions: registration and heartbeats, the task stream, log
//! chunks, and result reports (with their outputs), plus workers as `vishwa workers` shows
//! them.

use vishwa_proto::v1 as pb;

use crate::dag::{Command, ExecutorKind};
use crate::engine::{
    EngineError, HeartbeatReply, Registered, TaskAssignment, WorkerMessage, WorkerRegistration,
    WorkerView,
};
use crate::ids::{AttemptId, WorkerId};
use crate::run::{ArtifactRef, AttemptOutcome, AttemptReport, ReportedOutput};
use crate::store::LogRecord;

use super::log_stream_from_pb;

/// Refuses an empty `value` of `field`.
fn required(field: &'static str, value: &str) -> Result<(), EngineError> {
    if value.is_empty() {
        return Err(EngineError::invalid(field, "must not be empty".to_owned()));
    }
    Ok(())
}

impl TryFrom<pb::RegisterRequest> for WorkerRegistration {
    type Error = EngineError;

    fn try_from(r: pb::RegisterRequest) -> Result<Self, EngineError> {
        required("name", &r.name)?;
        Ok(WorkerRegistration {
            name: r.name,
            slots: r.slots,
            labels: r.labels.into_iter().collect(),
            allow_process: r.allow_process,
            running: r.running_attempts.into_iter().map(AttemptId).collect(),
            cpus: r.cpus,
            memory_bytes: r.memory_bytes,
            gpus: r.gpus,
            draining: r.draining,
            instance: r.instance,
        })
    }
}

impl From<Registered> for pb::RegisterResponse {
    fn from(r: Registered) -> Self {
        pb::RegisterResponse {
            worker_id: r.worker.0,
            heartbeat_interval_ms: r.heartbeat_interval.as_millis() as u64,
            lease_ms: r.lease.as_millis() as u64,
            cancel_attempts: r.cancel.into_iter().map(|a| a.0).collect(),
        }
    }
}

impl From<HeartbeatReply> for pb::HeartbeatResponse {
    fn from(r: HeartbeatReply) -> Self {
        pb::HeartbeatResponse {
            cancel_attempts: r.cancel.into_iter().map(|a| a.0).collect(),
            reregister: r.reregister,
        }
    }
}

impl From<WorkerMessage> for pb::WorkerCommand {
    fn from(message: WorkerMessage) -> Self {
        let command = match message {
            WorkerMessage::Task(task) => pb::worker_command::Command::Task((&*task).into()),
            WorkerMessage::Cancel { attempt, reason } => {
                pb::worker_command::Command::Cancel(pb::CancelAttempt {
                    attempt_id: attempt.0,
                    reason,
                })
            }
        };
        pb::WorkerCommand {
            command: Some(command),
        }
    }
}

impl TryFrom<pb::LogChunk> for LogRecord {
    type Error = EngineError;

    /// A chunk of a stage's output; its run (`run_id`, also required) is the caller's to read.
    fn try_from(chunk: pb::LogChunk) -> Result<Self, EngineError> {
        required("run_id", &chunk.run_id)?;
        required("stage", &chunk.stage)?;
        Ok(LogRecord {
            stage: chunk.stage,
            attempt: chunk.attempt,
            seq: chunk.seq,
            stream: log_stream_from_pb(chunk.stream),
            time_ms: chunk.time_ms,
            data: chunk.data.to_vec(),
        })
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
            optional_outputs: t.optional_outputs.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn report(outcome: Option<pb::report_result_request::Outcome>) -> pb::ReportResultRequest {
        pb::ReportResultRequest {
            worker_id: "w1".into(),
            attempt_id: "a1".into(),
            outcome,
            outputs: vec![
                pb::ArtifactRef {
                    name: "model.pkl".into(),
                    digest: "ab".repeat(32),
                    size: 3,
                },
                pb::ArtifactRef {
                    name: "a/b".into(),
                    digest: "ab".repeat(32),
                    size: 3,
                },
            ],
            metrics: [("acc".to_owned(), 0.9)].into(),
        }
    }

    #[test]
    fn a_result_report_converts_its_outputs_only_for_a_success() {
        use pb::report_result_request::Outcome;
        let converted = ResultReport::try_from(report(Some(Outcome::ExitCode(0)))).unwrap();
        assert_eq!(converted.worker, WorkerId::from("w1"));
        assert_eq!(converted.attempt, AttemptId::from("a1"));
        let success = converted.report;
        assert_eq!(success.outcome, AttemptOutcome::Exited { code: 0 });
        assert_eq!(success.metrics["acc"], 0.9);
        assert!(matches!(
            &success.outputs[0],
            ReportedOutput::Uploaded { artifact, stored: false } if artifact.name == "model.pkl"
        ));
        assert!(matches!(
            &success.outputs[1],
            ReportedOutput::Unreadable { name, error }
                if name == "a/b" && error.contains("not an output file name")
        ));
        let failed = ResultReport::try_from(report_with_code(1)).unwrap().report;
        assert_eq!(failed.outcome, AttemptOutcome::Exited { code: 1 });
        assert!(failed.outputs.is_empty() && failed.metrics.is_empty());
        let Err(error) = ResultReport::try_from(report(None)) else {
            panic!("a report without an outcome converts");
        };
        assert!(error.to_string().starts_with("outcome: "), "{error}");
    }

    fn report_with_code(code: i64) -> pb::ReportResultRequest {
        report(Some(pb::report_result_request::Outcome::ExitCode(code)))
    }

    #[test]
    fn a_registration_needs_a_name_and_a_log_chunk_its_run_and_stage() {
        let Err(error) = WorkerRegistration::try_from(pb::RegisterRequest::default()) else {
            panic!("a nameless registration converts");
        };
        assert_eq!(error.to_string(), "name: must not be empty");
        let chunk = pb::LogChunk {
            run_id: "r".into(),
            ..Default::default()
        };
        let Err(error) = LogRecord::try_from(chunk) else {
            panic!("a chunk without a stage converts");
        };
        assert_eq!(error.to_string(), "stage: must not be empty");
    }
}
