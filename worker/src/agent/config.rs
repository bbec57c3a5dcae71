//! The worker's settings, its executors, and why it stops.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::capacity::Capacity;
use crate::connect::ConnectError;
use crate::executor::Executor;

/// Settings of `vishwa worker`.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The scheduler's URL, e.g. `http://127.0.0.1:7070`.
    pub scheduler: String,
    /// This worker's name; unique among the scheduler's workers.
    pub name: String,
    /// Attempts run at once.
    pub slots: u32,
    /// Labels stages can select this worker by.
    pub labels: BTreeMap<String, String>,
    /// Whether `executor: process` stages may run on this host.
    pub allow_process: bool,
    /// Host paths (and what lies below them) that stages may mount; nothing else.
    pub allow_mounts: Vec<PathBuf>,
    /// On shutdown, how long running attempts may go on before they are stopped.
    pub grace: Duration,
    /// Where fetched DAG bundles are kept, unpacked.
    pub cache_dir: PathBuf,
    /// CPUs, memory and GPUs offered to stages.
    pub capacity: Capacity,
    /// Bearer token (role `worker`) sent with every call.
    pub token: Option<String>,
    /// CA certificate (PEM) to trust for an `https://` scheduler instead of the system's roots.
    pub tls_ca: Option<PathBuf>,
}

impl WorkerConfig {
    /// Grace period used when none is given.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
}

/// The executors a worker has.
#[derive(Clone, Default)]
pub struct Executors {
    /// None when Docker is not reachable: Docker stages then fail with a transient error.
    pub docker: Option<Arc<dyn Executor>>,
    pub process: Option<Arc<dyn Executor>>,
}

/// Why the worker stopped.
#[derive(Debug, Error)]
pub enum WorkerError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(
        "the scheduler at {url} refused this worker: {reason} (workers pass a token with the \
         worker role: --token or VISHWA_TOKEN)"
    )]
    Refused { url: String, reason: String },
    #[error("the scheduler at {url} refused this worker: {reason}")]
    NameTaken { url: String, reason: String },
    #[error("cannot use {dir} for bundles: {reason}")]
    Cache { dir: PathBuf, reason: String },
}

/// Who owns what this worker starts: its name at its scheduler. Two workers of the same
/// name serving different schedulers on one Docker host (two `vishwa run`s at once, say)
/// never clean up each other's containers.
pub(super) fn owner_label(config: &WorkerConfig) -> String {
    format!("{}@{}", config.name, config.scheduler)
}
