//! Executors run one attempt of a stage: in a Docker container ([`docker::DockerExecutor`]) or
//! as a local process ([`process::ProcessExecutor`]). Both honour the same contract: command,
//! environment, working directory, streamed output, exit code, timeout and cancellation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub mod docker;
pub mod process;
mod support;

/// Working directory of every stage inside its container: the DAG's files, read-only.
pub const CONTAINER_WORKDIR: &str = "/vishwa/dag";

/// How the stage's command is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandSpec {
    /// Run argv directly.
    Exec(Vec<String>),
    /// Run with `/bin/sh -c`.
    Shell(String),
}

/// A host path bind-mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub host: PathBuf,
    pub container: String,
    pub read_only: bool,
}

/// Everything an executor needs to run one attempt. Templates are already rendered.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub run_id: String,
    pub dag: String,
    pub stage: String,
    pub attempt_id: String,
    /// 1-based.
    pub attempt: u32,
    /// The worker running it, as `name@scheduler` (labels its container, so a restarted
    /// worker finds what it left behind).
    pub worker: String,
    /// Docker image (Docker executor only).
    pub image: String,
    /// None: the image's default command (Docker only).
    pub command: Option<CommandSpec>,
    pub env: BTreeMap<String, String>,
    /// Host folder with the DAG's files: bind-mounted read-only at [`CONTAINER_WORKDIR`] by the
    /// Docker executor, the working directory of the process executor.
    pub local_dir: Option<PathBuf>,
    pub timeout: Option<Duration>,
    pub mounts: Vec<MountSpec>,
    pub cpus: Option<f64>,
    pub memory_bytes: Option<u64>,
    /// GPU device ids the scheduler assigned to this attempt.
    pub gpus: Vec<String>,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
    /// Lines Vishwa writes about the attempt itself (pulling an image, ...).
    System,
}

/// A piece of an attempt's output, as raw bytes (not necessarily UTF-8, not necessarily a line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    pub stream: OutputStream,
    pub data: Bytes,
}

/// What an executor reports while an attempt runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// The container or process is running; `handle` is its container id or process id.
    Started { handle: String },
    /// Output, in the order it was produced per stream.
    Output(OutputChunk),
}

/// Where an executor sends events as they happen.
pub type EventSink = mpsc::Sender<ExecEvent>;

/// How an attempt ended, when the executor could run it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReport {
    /// The command ran to its end.
    Exited { code: i64 },
    /// Killed because it ran past its timeout.
    TimedOut,
    /// Killed because the cancellation token fired.
    Cancelled,
}

/// Why an executor could not run an attempt.
#[derive(Debug, Error)]
pub enum ExecutorError {
    /// The image is not present and pulling it failed.
    #[error("image {image} is not present and could not be pulled: {reason}")]
    ImageUnavailable { image: String, reason: String },
    /// Docker could not be reached or refused a request.
    #[error("docker: {0}")]
    Docker(String),
    /// Docker refused the attempt's container as configured: a mount source that does not exist,
    /// a relative container path, an invalid setting.
    #[error("docker refused the container: {reason}")]
    ContainerRejected { reason: String },
    /// A Docker stage was given no image.
    #[error("stage has no image; set `image:` on the stage or in `defaults:`")]
    MissingImage,
    /// The DAG's bundle could not be fetched now (the scheduler is unreachable, ...).
    #[error("cannot fetch bundle {digest}: {reason}")]
    BundleUnavailable { digest: String, reason: String },
    /// The DAG's bundle was refused: tampered, too large, or holding a path that escapes it.
    #[error("bundle {digest} refused: {reason}")]
    BundleRejected { digest: String, reason: String },
    /// The worker does not allow this host path to be mounted.
    #[error("mount of host path {host} refused: {reason}")]
    MountRefused { host: String, reason: String },
    /// A process stage was given no command.
    #[error("a process stage needs a command")]
    MissingCommand,
    /// The process could not be started (program not found, bad working directory, ...).
    #[error("could not start {program}: {reason}")]
    Spawn { program: String, reason: String },
    /// Waiting on or reading from the attempt failed.
    #[error("{0}")]
    Io(String),
    /// The stage exited 0 without writing a declared output.
    #[error(
        "declared output `{name}` was not written: the stage exited 0 without creating /vishwa/out/{name}"
    )]
    OutputMissing { name: String },
    /// Moving an artifact between the worker and the scheduler failed.
    #[error("{direction} `{name}`: {reason}")]
    Artifact {
        name: String,
        direction: &'static str,
        reason: String,
        transient: bool,
    },
    /// An input's bytes do not hash to the digest the scheduler indexed.
    #[error(
        "input `{name}` does not match its digest: expected sha256 {expected}, got {actual}; the stored artifact is corrupt"
    )]
    DigestMismatch {
        name: String,
        expected: String,
        actual: String,
    },
    /// `metrics.json` is not a flat JSON object of numbers.
    #[error("/vishwa/out/metrics.json: {reason}")]
    BadMetrics { reason: String },
}

impl ExecutorError {
    /// Whether trying again later may succeed (a failed pull, an unreachable engine), as
    /// opposed to a fault in the stage itself.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ExecutorError::ImageUnavailable { .. }
                | ExecutorError::Docker(_)
                | ExecutorError::BundleUnavailable { .. }
                | ExecutorError::Artifact {
                    transient: true,
                    ..
                }
        )
    }
}

/// Runs attempts. Implementations send `Started` once the attempt runs and all output before
/// returning (a closed sink is not an error: output is then dropped), kill
/// what they started on timeout or cancellation, and leave nothing behind (no container, no
/// process) when they return.
#[async_trait::async_trait]
pub trait Executor: Send + Sync {
    async fn run(
        &self,
        task: &TaskSpec,
        events: EventSink,
        cancel: CancellationToken,
    ) -> Result<ExitReport, ExecutorError>;

    /// Stops and removes whatever a worker of this name left running before it crashed, and
    /// returns how many things it removed. Called once when a worker starts.
    async fn remove_leftovers(&self, _worker: &str) -> Result<usize, ExecutorError> {
        Ok(0)
    }
}
