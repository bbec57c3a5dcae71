//! The worker agent: registers with the scheduler, keeps its lease with heartbeats, takes
//! tasks from its inbox, runs each through an executor, ships the output back in batches and
//! reports the outcome.
//!
//! It rides through a scheduler restart: it reconnects with backoff, registers again naming
//! the attempts it still runs (they carry on), and keeps retrying log batches and results
//! until the scheduler takes them. On start it removes containers an earlier process of the
//! same name left behind. On shutdown it drains: takes nothing new, lets running attempts
//! finish within the grace period, then stops them and reports.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Code, Status};
use tracing::{debug, info, warn};
use vishwa_proto::v1 as pb;

use crate::api::convert::{ExecutorChoice, log_stream, outcome, task_spec};
use crate::artifacts::{
    AttemptDirPool, AttemptDirs, CONTAINER_IN, CONTAINER_OUT, fetch_inputs, read_metrics,
    upload_outputs,
};
use crate::bundle::BundleCache;
use crate::capacity::Capacity;
use crate::connect::{BearerToken, ConnectError, endpoint};
use crate::executor::{
    ExecEvent, Executor, ExecutorError, ExitReport, MountSpec, OutputChunk, OutputStream, TaskSpec,
};
use crate::mask::Masker;

type Client = crate::connect::WorkerClient;

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
    #[error("cannot use {dir} for bundles: {reason}")]
    Cache { dir: PathBuf, reason: String },
}

/// First wait before reconnecting to the scheduler, doubled after each failure.
const FIRST_RECONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between reconnection attempts (shorter once the heartbeat interval is known:
/// never longer than it).
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(5);
/// How long results and log batches are retried while the scheduler is unreachable.
const REPORT_PATIENCE: Duration = Duration::from_secs(600);
/// Output buffered per attempt before a batch is shipped, and how long a chunk may wait.
const LOG_BATCH_BYTES: usize = 64 << 10;
const LOG_BATCH_DELAY: Duration = Duration::from_millis(50);
/// Events buffered per attempt before the executor waits.
const EVENT_BUFFER: usize = 256;

/// What the connection sessions and the attempts share.
#[derive(Default)]
struct Shared {
    /// Attempts running here, with the tokens that stop them.
    running: Mutex<HashMap<String, CancellationToken>>,
    /// Shutting down: take nothing new.
    draining: AtomicBool,
}

impl Shared {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn running_ids(&self) -> Vec<String> {
        self.running().keys().cloned().collect()
    }

    fn cancel(&self, attempt: &str, reason: &str) {
        if let Some(token) = self.running().get(attempt) {
            info!(%attempt, %reason, "stopping attempt");
            token.cancel();
        }
    }

    fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Runs the worker until `shutdown` fires and it has drained: running attempts finish within
/// the grace period, are stopped after it, and are reported before this returns.
pub async fn run_worker(
    config: WorkerConfig,
    executors: Executors,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let endpoint = endpoint(&config.scheduler, config.tls_ca.as_deref())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let token = BearerToken::new(config.token.as_deref())?;
    let client =
        pb::worker_api_client::WorkerApiClient::with_interceptor(endpoint.connect_lazy(), token)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
    remove_leftovers(&executors, &owner_label(&config)).await;
    // Folders of attempts an earlier process of this worker ran: their containers are gone.
    let attempts_dir = config.cache_dir.join("attempts");
    if attempts_dir.exists()
        && let Err(e) = std::fs::remove_dir_all(&attempts_dir)
    {
        warn!(dir = %attempts_dir.display(), error = %e, "cannot remove earlier attempts' folders");
    }
    let attempt_dirs = Arc::new(AttemptDirPool::new(attempts_dir));
    let bundles =
        Arc::new(
            BundleCache::open(&config.cache_dir).map_err(|e| WorkerError::Cache {
                dir: config.cache_dir.clone(),
                reason: e.to_string(),
            })?,
        );

    let shared = Arc::new(Shared::default());
    let tracker = TaskTracker::new();
    let hard_stop = CancellationToken::new();
    tokio::spawn(stop_after_grace(
        shutdown.clone(),
        hard_stop.clone(),
        shared.clone(),
        config.grace,
    ));
    let mut backoff = FIRST_RECONNECT_BACKOFF;
    // A restarted scheduler gives a worker's attempts one lease to be claimed again, so the
    // worker must retry at least as often as it heartbeats; until it knows the interval, the
    // general cap applies.
    let mut backoff_cap = MAX_RECONNECT_BACKOFF;
    loop {
        let session = Session {
            config: &config,
            client: client.clone(),
            executors: &executors,
            bundles: &bundles,
            attempt_dirs: &attempt_dirs,
            shared: shared.clone(),
            tracker: &tracker,
        };
        match session.run(&shutdown, &hard_stop).await {
            SessionEnd::Drained => break,
            SessionEnd::Broke { status, heartbeat } => {
                if let Some(interval) = heartbeat {
                    // It was registered: a new outage starts with a short wait again.
                    backoff = FIRST_RECONNECT_BACKOFF;
                    backoff_cap = interval.clamp(FIRST_RECONNECT_BACKOFF, MAX_RECONNECT_BACKOFF);
                }
                if shutdown.is_cancelled() && shared.running().is_empty() {
                    break;
                }
                let refused = matches!(
                    status.code(),
                    Code::Unauthenticated | Code::PermissionDenied
                );
                // A wrong token does not fix itself; with nothing to report, stop and say so.
                if refused && shared.running().is_empty() {
                    tracker.close();
                    tracker.wait().await;
                    return Err(WorkerError::Refused {
                        url: config.scheduler.clone(),
                        reason: status.message().to_owned(),
                    });
                }
                warn!(scheduler = %config.scheduler, error = %status.message(), "lost the scheduler; reconnecting");
                tokio::select! {
                    _ = hard_stop.cancelled(), if shared.running().is_empty() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(backoff_cap);
            }
        }
    }
    // Every attempt reports before the worker is gone.
    tracker.close();
    tracker.wait().await;
    info!(worker = %config.name, "worker stopped");
    Ok(())
}

/// Once `shutdown` fires, marks the worker draining; after `grace` (or once nothing runs),
/// stops whatever still runs.
async fn stop_after_grace(
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
    shared: Arc<Shared>,
    grace: Duration,
) {
    shutdown.cancelled().await;
    shared.draining.store(true, Ordering::SeqCst);
    let running = shared.running().len();
    if running > 0 {
        info!(running, grace = ?grace, "draining: letting running attempts finish");
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && !shared.running().is_empty() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (attempt, token) in shared.running().iter() {
        info!(%attempt, "grace period over; stopping attempt");
        token.cancel();
    }
    hard_stop.cancel();
}

/// Who owns what this worker starts: its name at its scheduler. Two workers of the same
/// name serving different schedulers on one Docker host (two `vishwa run`s at once, say)
/// never clean up each other's containers.
fn owner_label(config: &WorkerConfig) -> String {
    format!("{}@{}", config.name, config.scheduler)
}

/// Removes what an earlier process of this worker left behind, so no container is orphaned
/// by a crash. The scheduler learns those attempts are gone when the worker registers
/// without them, and runs them again.
async fn remove_leftovers(executors: &Executors, worker: &str) {
    for executor in [&executors.docker, &executors.process]
        .into_iter()
        .flatten()
    {
        match executor.remove_leftovers(worker).await {
            Ok(0) => {}
            Ok(n) => {
                warn!(%worker, removed = n, "removed containers left by an earlier run of this worker")
            }
            Err(e) => {
                warn!(%worker, error = %e, "cannot clean up after an earlier run of this worker")
            }
        }
    }
}

/// How a session with the scheduler ended.
enum SessionEnd {
    /// The worker drained after shutdown.
    Drained,
    /// The connection broke; `heartbeat` is the interval the scheduler asked for when the
    /// session got as far as registering.
    Broke {
        status: Status,
        heartbeat: Option<Duration>,
    },
}

/// One connection to the scheduler: register, heartbeat, take tasks until it breaks.
struct Session<'a> {
    config: &'a WorkerConfig,
    client: Client,
    executors: &'a Executors,
    bundles: &'a Arc<BundleCache>,
    attempt_dirs: &'a Arc<AttemptDirPool>,
    shared: Arc<Shared>,
    tracker: &'a TaskTracker,
}

impl Session<'_> {
    async fn run(self, shutdown: &CancellationToken, hard_stop: &CancellationToken) -> SessionEnd {
        let mut heartbeat = None;
        match self.serve(shutdown, hard_stop, &mut heartbeat).await {
            Ok(()) => SessionEnd::Drained,
            Err(status) => SessionEnd::Broke { status, heartbeat },
        }
    }

    /// Ok once the worker drained after shutdown; Err when the connection broke. Sets
    /// `heartbeat` to the interval the scheduler asks for once registered.
    async fn serve(
        &self,
        shutdown: &CancellationToken,
        hard_stop: &CancellationToken,
        heartbeat_interval: &mut Option<Duration>,
    ) -> Result<(), Status> {
        let mut client = self.client.clone();
        let registered = client
            .register(pb::RegisterRequest {
                name: self.config.name.clone(),
                slots: self.config.slots,
                labels: self.config.labels.clone().into_iter().collect(),
                allow_process: self.config.allow_process,
                running_attempts: self.shared.running_ids(),
                cpus: self.config.capacity.cpus,
                memory_bytes: self.config.capacity.memory_bytes,
                gpus: self.config.capacity.gpus.clone(),
                draining: self.shared.draining(),
            })
            .await?
            .into_inner();
        for attempt in &registered.cancel_attempts {
            self.shared
                .cancel(attempt, "the scheduler no longer considers it current");
        }
        let worker_id = registered.worker_id;
        let mut inbox = client
            .tasks(pb::TasksRequest {
                worker_id: worker_id.clone(),
            })
            .await?
            .into_inner();
        info!(worker = %worker_id, "registered with the scheduler");
        let interval = Duration::from_millis(registered.heartbeat_interval_ms.max(100));
        *heartbeat_interval = Some(interval);
        let mut heartbeat = tokio::time::interval(interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drain_check = tokio::time::interval(Duration::from_millis(100));
        let mut announced_drain = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled(), if !announced_drain => {
                    announced_drain = true;
                    self.shared.draining.store(true, Ordering::SeqCst);
                    self.heartbeat(&mut client, &worker_id).await?;
                }
                _ = drain_check.tick(), if announced_drain => {
                    if self.shared.running().is_empty() || hard_stop.is_cancelled() && self.shared.running().is_empty() {
                        return Ok(());
                    }
                }
                _ = heartbeat.tick() => self.heartbeat(&mut client, &worker_id).await?,
                command = inbox.next() => {
                    match command {
                        Some(Ok(pb::WorkerCommand { command: Some(command) })) => {
                            self.handle(&worker_id, command);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(status)) => return Err(status),
                        None => return Err(Status::unavailable("the scheduler closed the task stream")),
                    }
                }
            }
        }
    }

    async fn heartbeat(&self, client: &mut Client, worker_id: &str) -> Result<(), Status> {
        let reply = client
            .heartbeat(pb::HeartbeatRequest {
                worker_id: worker_id.to_owned(),
                running_attempts: self.shared.running_ids(),
                draining: self.shared.draining(),
            })
            .await?
            .into_inner();
        for attempt in reply.cancel_attempts {
            self.shared
                .cancel(&attempt, "the scheduler no longer considers it current");
        }
        if reply.reregister {
            return Err(Status::unavailable("the scheduler asked to register again"));
        }
        Ok(())
    }

    fn handle(&self, worker_id: &str, command: pb::worker_command::Command) {
        match command {
            pb::worker_command::Command::Task(task) => {
                let token = CancellationToken::new();
                if self.shared.draining() {
                    // Sent before the scheduler heard we are draining: hand it back.
                    token.cancel();
                }
                self.shared
                    .running()
                    .insert(task.attempt_id.clone(), token.clone());
                let attempt = Attempt {
                    client: self.client.clone(),
                    worker_id: worker_id.to_owned(),
                    owner: owner_label(self.config),
                    executors: self.executors.clone(),
                    bundles: self.bundles.clone(),
                    attempt_dirs: self.attempt_dirs.clone(),
                    allow_process: self.config.allow_process,
                    allow_mounts: self.config.allow_mounts.clone(),
                    shared: self.shared.clone(),
                };
                self.tracker.spawn(attempt.run(task, token));
            }
            pb::worker_command::Command::Cancel(c) => self.shared.cancel(&c.attempt_id, &c.reason),
        }
    }
}

/// One attempt on this worker.
struct Attempt {
    client: Client,
    worker_id: String,
    /// Labels what this attempt starts, so a restart of this worker can find it.
    owner: String,
    executors: Executors,
    bundles: Arc<BundleCache>,
    /// Where each attempt gets its `in/` and `out/` folders.
    attempt_dirs: Arc<AttemptDirPool>,
    allow_process: bool,
    allow_mounts: Vec<PathBuf>,
    shared: Arc<Shared>,
}

/// What a successful attempt produced, reported with its result.
#[derive(Default)]
struct Produced {
    outputs: Vec<pb::ArtifactRef>,
    metrics: BTreeMap<String, f64>,
}

impl Attempt {
    async fn run(mut self, task: pb::Task, cancel: CancellationToken) {
        let (choice, mut spec) = task_spec(&task, &self.owner);
        debug!(attempt = %spec.attempt_id, stage = %spec.stage, "attempt starting");
        let (events_tx, events_rx) = mpsc::channel(EVENT_BUFFER);
        let forwarder = tokio::spawn(forward_events(
            self.client.clone(),
            self.worker_id.clone(),
            task.clone(),
            events_rx,
            cancel.clone(),
        ));
        let mut produced = Produced::default();
        let dirs = self.attempt_dirs.acquire();
        let result = if cancel.is_cancelled() {
            Ok(ExitReport::Cancelled)
        } else {
            match &dirs {
                Ok(dirs) => {
                    self.prepare_and_execute(
                        choice,
                        &mut spec,
                        &task,
                        dirs,
                        events_tx,
                        cancel,
                        &mut produced,
                    )
                    .await
                }
                Err(e) => Err(ExecutorError::Io(e.to_string())),
            }
        };
        // Every output chunk is stored before the result is reported.
        if let Err(e) = forwarder.await {
            warn!(attempt = %spec.attempt_id, error = %e, "log forwarding failed");
        }
        self.report(&spec, &result, produced).await;
        if let Ok(dirs) = dirs {
            self.attempt_dirs.release(dirs);
        }
        self.shared.running().remove(&spec.attempt_id);
    }

    /// Fetches the bundle and the inputs, runs the attempt, and after exit 0 reads its
    /// metrics and uploads its declared outputs (before the success is reported).
    #[allow(clippy::too_many_arguments)]
    async fn prepare_and_execute(
        &self,
        choice: ExecutorChoice,
        spec: &mut TaskSpec,
        task: &pb::Task,
        dirs: &AttemptDirs,
        events: mpsc::Sender<ExecEvent>,
        cancel: CancellationToken,
        produced: &mut Produced,
    ) -> Result<ExitReport, ExecutorError> {
        if !task.bundle_digest.is_empty() {
            spec.local_dir = Some(
                self.bundles
                    .ensure(&self.client, &task.bundle_digest)
                    .await?,
            );
        }
        if !task.inputs.is_empty() {
            fetch_inputs(&self.client, dirs, &task.inputs).await?;
            let total: u64 = task.inputs.iter().map(|i| i.size).sum();
            system_line(
                &events,
                format!(
                    "fetched {} input(s), {total} bytes, digests verified",
                    task.inputs.len()
                ),
            )
            .await;
        }
        let report = self
            .execute(choice, spec, Some(dirs), events.clone(), cancel)
            .await?;
        if report != (ExitReport::Exited { code: 0 }) {
            return Ok(report);
        }
        let metrics = read_metrics(dirs)?;
        let outputs = upload_outputs(
            &self.client,
            &self.worker_id,
            &spec.attempt_id,
            dirs,
            &task.outputs,
        )
        .await?;
        for o in &outputs {
            let short: String = o.digest.chars().take(12).collect();
            system_line(
                &events,
                format!(
                    "stored output {} ({} bytes, sha256 {short})",
                    o.name, o.size
                ),
            )
            .await;
        }
        *produced = Produced { outputs, metrics };
        Ok(report)
    }

    async fn execute(
        &self,
        choice: ExecutorChoice,
        spec: &TaskSpec,
        io: Option<&AttemptDirs>,
        events: mpsc::Sender<ExecEvent>,
        cancel: CancellationToken,
    ) -> Result<ExitReport, ExecutorError> {
        for mount in &spec.mounts {
            check_mount_allowed(&mount.host, &self.allow_mounts, &self.worker_id)?;
        }
        let executor = match choice {
            ExecutorChoice::Process if !self.allow_process => {
                return Err(ExecutorError::Spawn {
                    program: "process stage".to_owned(),
                    reason: format!(
                        "worker {} does not run `executor: process` stages; start it with \
                         --allow-process or run the stage in Docker",
                        self.worker_id
                    ),
                });
            }
            ExecutorChoice::Process => self.executors.process.clone(),
            ExecutorChoice::Docker => self.executors.docker.clone(),
        };
        let Some(executor) = executor else {
            return Err(ExecutorError::Docker(format!(
                "worker {} cannot reach a Docker engine",
                self.worker_id
            )));
        };
        match io {
            // The attempt's own folders are the worker's, not the stage's: no allow-list.
            Some(dirs) => {
                let spec = with_io_dirs(choice, spec, dirs);
                executor.run(&spec, events, cancel).await
            }
            None => executor.run(spec, events, cancel).await,
        }
    }

    async fn report(
        &mut self,
        spec: &TaskSpec,
        result: &Result<ExitReport, ExecutorError>,
        produced: Produced,
    ) {
        let request = pb::ReportResultRequest {
            worker_id: self.worker_id.clone(),
            attempt_id: spec.attempt_id.clone(),
            outcome: Some(outcome(result)),
            outputs: produced.outputs,
            metrics: produced.metrics.into_iter().collect(),
        };
        let client = &mut self.client;
        let delivered = with_patience(&spec.attempt_id, "reporting the result", || {
            let mut client = client.clone();
            let request = request.clone();
            async move { client.report_result(request).await.map(|_| ()) }
        })
        .await;
        match delivered {
            Delivery::Refused => {
                debug!(attempt = %spec.attempt_id, "result refused: the attempt is no longer current")
            }
            Delivery::GaveUp => warn!(attempt = %spec.attempt_id, "gave up reporting the result"),
            Delivery::Done => {}
        }
    }
}

/// The task as the executor takes it, with the attempt's folders at `/vishwa/in` (read-only)
/// and `/vishwa/out`; a process stage finds them through `VISHWA_IN` and `VISHWA_OUT`, and
/// one without a DAG folder runs in the attempt's emptied `work/` folder (reused like `in/`
/// and `out/`, so a chain of short stages makes no directory per attempt).
fn with_io_dirs(choice: ExecutorChoice, spec: &TaskSpec, dirs: &AttemptDirs) -> TaskSpec {
    let mut spec = spec.clone();
    match choice {
        ExecutorChoice::Docker => {
            spec.mounts.push(MountSpec {
                host: dirs.input.clone(),
                container: CONTAINER_IN.to_owned(),
                read_only: true,
            });
            spec.mounts.push(MountSpec {
                host: dirs.output.clone(),
                container: CONTAINER_OUT.to_owned(),
                read_only: false,
            });
            spec.env.insert("VISHWA_IN".into(), CONTAINER_IN.into());
            spec.env.insert("VISHWA_OUT".into(), CONTAINER_OUT.into());
        }
        ExecutorChoice::Process => {
            spec.env.insert(
                "VISHWA_IN".into(),
                dirs.input.to_string_lossy().into_owned(),
            );
            spec.env.insert(
                "VISHWA_OUT".into(),
                dirs.output.to_string_lossy().into_owned(),
            );
            // Without it, the executor makes a scratch directory of its own.
            if spec.local_dir.is_none()
                && let Ok(work) = dirs.work_dir()
            {
                spec.local_dir = Some(work.to_path_buf());
            }
        }
    }
    spec
}

/// A line about the attempt in its log (the system stream).
async fn system_line(events: &mpsc::Sender<ExecEvent>, line: String) {
    let chunk = OutputChunk {
        stream: OutputStream::System,
        data: format!("{line}\n").into(),
    };
    let _ = events.send(ExecEvent::Output(chunk)).await;
}

/// How a report to the scheduler ended.
enum Delivery {
    Done,
    /// The scheduler said the attempt is no longer current.
    Refused,
    GaveUp,
}

/// Calls `send` until it succeeds, is refused as stale, or [`REPORT_PATIENCE`] runs out.
async fn with_patience<F, Fut>(attempt: &str, what: &str, mut send: F) -> Delivery
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Status>>,
{
    let started = Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        match send().await {
            Ok(()) => return Delivery::Done,
            Err(status) if status.code() == Code::FailedPrecondition => return Delivery::Refused,
            Err(status) if started.elapsed() < REPORT_PATIENCE => {
                debug!(%attempt, error = %status.message(), "{what} failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
            }
            Err(_) => return Delivery::GaveUp,
        }
    }
}

/// Sends the executor's events to the scheduler: the start as a report (a refused start
/// stops the attempt: it is no longer current), output in batches shipped in order by a
/// separate task, so a slow or restarting scheduler never blocks the stage's output. Returns
/// once every batch is stored.
async fn forward_events(
    client: Client,
    worker_id: String,
    task: pb::Task,
    mut events: mpsc::Receiver<ExecEvent>,
    cancel: CancellationToken,
) {
    let (ship, batches) = mpsc::unbounded_channel::<Vec<pb::LogChunk>>();
    let shipper = tokio::spawn(ship_batches(
        client.clone(),
        task.attempt_id.clone(),
        batches,
    ));
    let mut batch: Vec<pb::LogChunk> = Vec::new();
    let mut batch_bytes = 0;
    let mut seq = 0u64;
    // One masker per stream: a value split across chunks is only split within one stream.
    let secret_values: Vec<&String> = task
        .secret_env
        .iter()
        .filter_map(|name| task.env.get(name))
        .collect();
    let mut maskers: BTreeMap<i32, Masker> = BTreeMap::new();
    let mut chunk_of = |stream: i32, data: Bytes, seq: &mut u64| -> Option<pb::LogChunk> {
        let data = if secret_values.is_empty() {
            data
        } else {
            let masker = maskers
                .entry(stream)
                .or_insert_with(|| Masker::new(secret_values.iter().map(|v| v.as_bytes())));
            Bytes::from(masker.push(&data))
        };
        if data.is_empty() {
            return None;
        }
        let chunk = pb::LogChunk {
            attempt_id: task.attempt_id.clone(),
            stream,
            data,
            seq: *seq,
            time_ms: now_ms(),
            run_id: task.run_id.clone(),
            stage: task.stage.clone(),
            attempt: task.attempt,
        };
        *seq += 1;
        Some(chunk)
    };
    let flush_timer = tokio::time::sleep(LOG_BATCH_DELAY);
    tokio::pin!(flush_timer);
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                match event {
                    ExecEvent::Started { handle } => {
                        report_started(&client, &worker_id, &task.attempt_id, handle, &cancel).await;
                    }
                    ExecEvent::Output(chunk) => {
                        let stream = log_stream(chunk.stream) as i32;
                        let Some(chunk) = chunk_of(stream, chunk.data, &mut seq) else {
                            continue;
                        };
                        if batch.is_empty() {
                            flush_timer.as_mut().reset(tokio::time::Instant::now() + LOG_BATCH_DELAY);
                        }
                        batch_bytes += chunk.data.len();
                        batch.push(chunk);
                        if batch_bytes >= LOG_BATCH_BYTES {
                            let _ = ship.send(std::mem::take(&mut batch));
                            batch_bytes = 0;
                        }
                    }
                }
            }
            _ = &mut flush_timer, if !batch.is_empty() => {
                let _ = ship.send(std::mem::take(&mut batch));
                batch_bytes = 0;
            }
        }
    }
    // What the maskers held back was no secret after all.
    let held: Vec<(i32, Vec<u8>)> = maskers
        .iter_mut()
        .map(|(stream, masker)| (*stream, masker.finish()))
        .filter(|(_, rest)| !rest.is_empty())
        .collect();
    for (stream, rest) in held {
        let chunk = pb::LogChunk {
            attempt_id: task.attempt_id.clone(),
            stream,
            data: Bytes::from(rest),
            seq,
            time_ms: now_ms(),
            run_id: task.run_id.clone(),
            stage: task.stage.clone(),
            attempt: task.attempt,
        };
        seq += 1;
        batch.push(chunk);
    }
    if !batch.is_empty() {
        let _ = ship.send(batch);
    }
    drop(ship);
    let _ = shipper.await;
}

async fn report_started(
    client: &Client,
    worker_id: &str,
    attempt: &str,
    handle: String,
    cancel: &CancellationToken,
) {
    let request = pb::ReportStartedRequest {
        worker_id: worker_id.to_owned(),
        attempt_id: attempt.to_owned(),
        handle,
    };
    // A start report is worth a few tries, not the full patience: the result matters more.
    let mut backoff = Duration::from_millis(100);
    for _ in 0..5 {
        match client.clone().report_started(request.clone()).await {
            Ok(_) => return,
            Err(status) if status.code() == Code::FailedPrecondition => {
                info!(%attempt, "the scheduler refused the start: the attempt is no longer current");
                cancel.cancel();
                return;
            }
            Err(status) => {
                debug!(%attempt, error = %status.message(), "start report failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
    }
}

/// Ships log batches in order, each retried until stored.
async fn ship_batches(
    client: Client,
    attempt: String,
    mut batches: mpsc::UnboundedReceiver<Vec<pb::LogChunk>>,
) {
    while let Some(chunks) = batches.recv().await {
        let batch = pb::LogBatch { chunks };
        let delivered = with_patience(&attempt, "shipping logs", || {
            let mut client = client.clone();
            let batch = batch.clone();
            async move { client.push_logs(batch).await.map(|_| ()) }
        })
        .await;
        if let Delivery::GaveUp = delivered {
            warn!(%attempt, "gave up shipping logs");
        }
    }
}

/// Refuses a host path that is not at or below one of the worker's allowed paths. Paths are
/// resolved first, so a symlink cannot lead out of an allowed folder.
fn check_mount_allowed(
    host: &Path,
    allowed: &[PathBuf],
    worker: &str,
) -> Result<(), ExecutorError> {
    let refuse = |reason: String| ExecutorError::MountRefused {
        host: host.display().to_string(),
        reason,
    };
    let resolved = host
        .canonicalize()
        .map_err(|e| refuse(format!("it cannot be resolved on worker {worker}: {e}")))?;
    let permitted = allowed
        .iter()
        .filter_map(|a| a.canonicalize().ok())
        .any(|a| resolved.starts_with(&a));
    if permitted {
        Ok(())
    } else {
        Err(refuse(format!(
            "worker {worker} does not allow it; start the worker with --allow-mount {}",
            host.display()
        )))
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_are_refused_unless_under_an_allowed_path() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("data");
        std::fs::create_dir_all(allowed.join("sub")).unwrap();
        let outside = dir.path().join("secret");
        std::fs::create_dir_all(&outside).unwrap();
        let list = vec![allowed.clone()];
        assert!(check_mount_allowed(&allowed, &list, "w").is_ok());
        assert!(check_mount_allowed(&allowed.join("sub"), &list, "w").is_ok());
        let err = check_mount_allowed(&outside, &list, "w").unwrap_err();
        assert!(err.to_string().contains("--allow-mount"), "{err}");
        assert!(!err.is_transient());
        assert!(check_mount_allowed(&outside, &[], "w").is_err());
    }

    #[test]
    fn a_symlink_cannot_lead_out_of_an_allowed_path() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("data");
        let outside = dir.path().join("secret");
        std::fs::create_dir_all(&allowed).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, allowed.join("escape")).unwrap();
        let err = check_mount_allowed(&allowed.join("escape"), &[allowed], "w").unwrap_err();
        assert!(matches!(err, ExecutorError::MountRefused { .. }));
    }

    #[test]
    fn a_missing_host_path_is_refused_clearly() {
        let err = check_mount_allowed(Path::new("/no/such/path"), &[PathBuf::from("/")], "w")
            .unwrap_err();
        assert!(err.to_string().contains("cannot be resolved"), "{err}");
    }
}
