//! Conversions between protocol types and the worker's own.

use std::path::PathBuf;
use std::time::Duration;

use vishwa_proto::v1 as pb;

use crate::agent::WorkerConfig;
use crate::executor::{CommandSpec, ExecutorError, ExitReport, MountSpec, OutputStream, TaskSpec};

/// Which executor a task asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorChoice {
    Docker,
    Process,
}

/// A task from the scheduler as the executors take it.
pub fn task_spec(task: &pb::Task, worker: &str) -> (ExecutorChoice, TaskSpec) {
    let choice = match pb::ExecutorKind::try_from(task.executor) {
        Ok(pb::ExecutorKind::Process) => ExecutorChoice::Process,
        _ => ExecutorChoice::Docker,
    };
    let command = task.command.as_ref().map(|c| match c {
        pb::task::Command::Exec(argv) => CommandSpec::Exec(argv.args.clone()),
        pb::task::Command::Shell(s) => CommandSpec::Shell(s.clone()),
    });
    let resources = task.resources.unwrap_or_default();
    let spec = TaskSpec {
        run_id: task.run_id.clone(),
        dag: task.dag.clone(),
        stage: task.stage.clone(),
        attempt_id: task.attempt_id.clone(),
        attempt: task.attempt,
        worker: worker.to_owned(),
        image: task.image.clone(),
        command,
        env: task.env.clone().into_iter().collect(),
        local_dir: (!task.local_dir.is_empty()).then(|| PathBuf::from(&task.local_dir)),
        timeout: (task.timeout_ms > 0).then(|| Duration::from_millis(task.timeout_ms)),
        mounts: task
            .mounts
            .iter()
            .map(|m| MountSpec {
                host: PathBuf::from(&m.host),
                container: m.container.clone(),
                read_only: m.read_only,
            })
            .collect(),
        cpus: (resources.cpus > 0.0).then_some(resources.cpus),
        memory_bytes: (resources.memory_bytes > 0).then_some(resources.memory_bytes),
        gpus: task.gpus.clone(),
    };
    (choice, spec)
}

/// The protocol's name for an output stream.
pub fn log_stream(s: OutputStream) -> pb::LogStream {
    match s {
        OutputStream::Stdout => pb::LogStream::Stdout,
        OutputStream::Stderr => pb::LogStream::Stderr,
        OutputStream::System => pb::LogStream::System,
    }
}

/// This worker introducing itself: what it offers, what it still runs (`running`), whether
/// it drains, and which process it is (`instance`).
pub fn register_request(
    config: &WorkerConfig,
    running: Vec<String>,
    draining: bool,
    instance: String,
) -> pb::RegisterRequest {
    pb::RegisterRequest {
        name: config.name.clone(),
        slots: config.slots,
        labels: config.labels.clone().into_iter().collect(),
        allow_process: config.allow_process,
        running_attempts: running,
        cpus: config.capacity.cpus,
        memory_bytes: config.capacity.memory_bytes,
        gpus: config.capacity.gpus.clone(),
        draining,
        instance,
    }
}

/// How an attempt ended, with its uploaded outputs and metrics (after exit 0).
pub fn result_request(
    worker_id: &str,
    spec: &TaskSpec,
    result: &Result<ExitReport, ExecutorError>,
    outputs: Vec<pb::ArtifactRef>,
    metrics: std::collections::BTreeMap<String, f64>,
) -> pb::ReportResultRequest {
    pb::ReportResultRequest {
        worker_id: worker_id.to_owned(),
        attempt_id: spec.attempt_id.clone(),
        outcome: Some(outcome(result)),
        outputs,
        metrics: metrics.into_iter().collect(),
    }
}

/// How an attempt ended, as reported to the scheduler.
fn outcome(result: &Result<ExitReport, ExecutorError>) -> pb::report_result_request::Outcome {
    use pb::report_result_request::Outcome;
    match result {
        Ok(ExitReport::Exited { code }) => Outcome::ExitCode(*code),
        Ok(ExitReport::TimedOut) => Outcome::TimedOut(true),
        Ok(ExitReport::Cancelled) => Outcome::Cancelled(true),
        Err(e) => Outcome::Error(pb::ExecutorFailure {
            message: e.to_string(),
            transient: e.is_transient(),
        }),
    }
}
