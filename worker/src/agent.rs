//! The worker agent: registers with the scheduler, keeps its lease with heartbeats, takes
//! tasks from its inbox, runs each through an executor, streams the output back and reports
//! the outcome. Reconnects with backoff when the scheduler goes away.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tracing::{debug, info, warn};
use vishwa_proto::v1 as pb;

use crate::api::convert::{ExecutorChoice, log_stream, outcome, task_spec};
use crate::executor::{ExecEvent, Executor, ExecutorError, ExitReport, TaskSpec};

type Client = pb::worker_api_client::WorkerApiClient<Channel>;

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
    #[error("bad scheduler address `{url}`: {reason}")]
    BadAddress { url: String, reason: String },
}

/// Longest wait between reconnection attempts.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(5);
/// Output chunks buffered per attempt before the executor waits.
const OUTPUT_BUFFER: usize = 256;

/// Attempts running here, with the tokens that stop them.
type Running = Arc<Mutex<HashMap<String, CancellationToken>>>;

/// Runs the worker until `shutdown` fires. Running attempts are then cancelled and
/// reported before it returns.
pub async fn run_worker(
    config: WorkerConfig,
    executors: Executors,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let endpoint = Endpoint::from_shared(config.scheduler.clone())
        .map_err(|e| WorkerError::BadAddress {
            url: config.scheduler.clone(),
            reason: e.to_string(),
        })?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let channel = endpoint.connect_lazy();
    let client = Client::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let running: Running = Arc::default();
    let tracker = TaskTracker::new();
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        let session = Session {
            config: &config,
            client: client.clone(),
            executors: &executors,
            running: running.clone(),
            tracker: &tracker,
        };
        match session.run(&shutdown).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(status) => {
                warn!(scheduler = %config.scheduler, error = %status.message(), "lost the scheduler; reconnecting");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
            }
        }
    }
    for token in lock(&running).values() {
        token.cancel();
    }
    tracker.close();
    tracker.wait().await;
    info!(worker = %config.name, "worker stopped");
    Ok(())
}

fn lock(running: &Running) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
    running.lock().unwrap_or_else(|e| e.into_inner())
}

/// One connection to the scheduler: register, heartbeat, take tasks until it breaks.
struct Session<'a> {
    config: &'a WorkerConfig,
    client: Client,
    executors: &'a Executors,
    running: Running,
    tracker: &'a TaskTracker,
}

impl Session<'_> {
    async fn run(self, shutdown: &CancellationToken) -> Result<(), Status> {
        let mut client = self.client.clone();
        let running_attempts: Vec<String> = lock(&self.running).keys().cloned().collect();
        let registered = client
            .register(pb::RegisterRequest {
                name: self.config.name.clone(),
                slots: self.config.slots,
                labels: self.config.labels.clone().into_iter().collect(),
                allow_process: self.config.allow_process,
                running_attempts,
            })
            .await?
            .into_inner();
        let worker_id = registered.worker_id;
        let mut inbox = client
            .tasks(pb::TasksRequest {
                worker_id: worker_id.clone(),
            })
            .await?
            .into_inner();
        info!(worker = %worker_id, "registered with the scheduler");
        let interval = Duration::from_millis(registered.heartbeat_interval_ms.max(100));
        let mut heartbeat = tokio::time::interval(interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = heartbeat.tick() => {
                    let running_attempts = lock(&self.running).keys().cloned().collect();
                    let reply = client
                        .heartbeat(pb::HeartbeatRequest { worker_id: worker_id.clone(), running_attempts })
                        .await?
                        .into_inner();
                    for attempt in reply.cancel_attempts {
                        self.cancel(&attempt, "the scheduler no longer considers it current");
                    }
                    if reply.reregister {
                        return Err(Status::unavailable("the scheduler asked to register again"));
                    }
                }
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

    fn handle(&self, worker_id: &str, command: pb::worker_command::Command) {
        match command {
            pb::worker_command::Command::Task(task) => {
                let token = CancellationToken::new();
                lock(&self.running).insert(task.attempt_id.clone(), token.clone());
                let attempt = Attempt {
                    client: self.client.clone(),
                    worker_id: worker_id.to_owned(),
                    executors: self.executors.clone(),
                    allow_process: self.config.allow_process,
                    running: self.running.clone(),
                };
                self.tracker.spawn(attempt.run(task, token));
            }
            pb::worker_command::Command::Cancel(c) => self.cancel(&c.attempt_id, &c.reason),
        }
    }

    fn cancel(&self, attempt: &str, reason: &str) {
        if let Some(token) = lock(&self.running).get(attempt) {
            info!(%attempt, %reason, "stopping attempt");
            token.cancel();
        }
    }
}

/// One attempt on this worker.
struct Attempt {
    client: Client,
    worker_id: String,
    executors: Executors,
    allow_process: bool,
    running: Running,
}

impl Attempt {
    async fn run(mut self, task: pb::Task, cancel: CancellationToken) {
        let (choice, spec) = task_spec(&task);
        debug!(attempt = %spec.attempt_id, stage = %spec.stage, "attempt starting");
        let (events_tx, events_rx) = mpsc::channel(OUTPUT_BUFFER);
        let forwarder = tokio::spawn(forward_events(
            self.client.clone(),
            self.worker_id.clone(),
            task.clone(),
            events_rx,
        ));
        let result = self.execute(choice, &spec, events_tx, cancel).await;
        // Every output chunk is stored before the result is reported.
        if let Err(e) = forwarder.await {
            warn!(attempt = %spec.attempt_id, error = %e, "log forwarding failed");
        }
        self.report(&spec, &result).await;
        lock(&self.running).remove(&spec.attempt_id);
    }

    async fn execute(
        &self,
        choice: ExecutorChoice,
        spec: &TaskSpec,
        events: mpsc::Sender<ExecEvent>,
        cancel: CancellationToken,
    ) -> Result<ExitReport, ExecutorError> {
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
        executor.run(spec, events, cancel).await
    }

    async fn report(&mut self, spec: &TaskSpec, result: &Result<ExitReport, ExecutorError>) {
        let request = pb::ReportResultRequest {
            worker_id: self.worker_id.clone(),
            attempt_id: spec.attempt_id.clone(),
            outcome: Some(outcome(result)),
        };
        let mut backoff = Duration::from_millis(100);
        for _ in 0..20 {
            match self.client.report_result(request.clone()).await {
                Ok(_) => return,
                Err(status) if status.code() == Code::FailedPrecondition => {
                    debug!(attempt = %spec.attempt_id, "result refused: attempt no longer current");
                    return;
                }
                Err(status) => {
                    warn!(attempt = %spec.attempt_id, error = %status.message(), "reporting the result failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
                }
            }
        }
        warn!(attempt = %spec.attempt_id, "gave up reporting the result");
    }
}

/// Sends the executor's events to the scheduler: the start as a report, output through a
/// [`LogPusher`]. Returns once the scheduler acknowledged every chunk (or pushing gave up).
async fn forward_events(
    mut client: Client,
    worker_id: String,
    task: pb::Task,
    mut events: mpsc::Receiver<ExecEvent>,
) {
    let mut logs = LogPusher::new(client.clone(), task.attempt_id.clone());
    let mut seq = 0u64;
    while let Some(event) = events.recv().await {
        match event {
            ExecEvent::Started { handle } => {
                let request = pb::ReportStartedRequest {
                    worker_id: worker_id.clone(),
                    attempt_id: task.attempt_id.clone(),
                    handle,
                };
                if let Err(status) = client.report_started(request).await {
                    debug!(attempt = %task.attempt_id, error = %status.message(), "start report refused");
                }
            }
            ExecEvent::Output(chunk) => {
                let chunk = pb::LogChunk {
                    attempt_id: task.attempt_id.clone(),
                    stream: log_stream(chunk.stream) as i32,
                    data: chunk.data,
                    seq,
                    time_ms: chrono_now_ms(),
                    run_id: task.run_id.clone(),
                    stage: task.stage.clone(),
                    attempt: task.attempt,
                };
                seq += 1;
                logs.push(chunk).await;
            }
        }
    }
    logs.flush().await;
}

/// Chunks sent over one PushLogs stream before it is closed and acknowledged; bounds what is
/// kept for sending again.
const LOG_CHUNKS_PER_STREAM: usize = 512;
/// Times a batch of output is offered to the scheduler before it is dropped.
const LOG_PUSH_TRIES: u32 = 20;

/// One attempt's output on its way to the scheduler. Chunks go out over a PushLogs stream as
/// they come and are kept until the stream is acknowledged; when it breaks (the scheduler
/// restarted, the connection dropped) they are sent again over a new one, which the scheduler
/// stores once since chunks are keyed by their sequence number.
struct LogPusher {
    client: Client,
    attempt: String,
    unacknowledged: Vec<pb::LogChunk>,
    stream: Option<LogStream>,
}

/// An open PushLogs call: the sender feeding it and the task awaiting its answer.
struct LogStream {
    tx: mpsc::Sender<pb::LogChunk>,
    answer: tokio::task::JoinHandle<Result<(), Status>>,
}

impl LogPusher {
    fn new(client: Client, attempt: String) -> Self {
        LogPusher {
            client,
            attempt,
            unacknowledged: Vec::new(),
            stream: None,
        }
    }

    /// Opens a PushLogs call that first sends `replay`, then what comes through its sender.
    fn open(&self, replay: Vec<pb::LogChunk>) -> LogStream {
        let (tx, rx) = mpsc::channel(OUTPUT_BUFFER);
        let mut client = self.client.clone();
        let body = futures::stream::iter(replay).chain(ReceiverStream::new(rx));
        let answer = tokio::spawn(async move { client.push_logs(body).await.map(|_| ()) });
        LogStream { tx, answer }
    }

    async fn push(&mut self, chunk: pb::LogChunk) {
        self.unacknowledged.push(chunk.clone());
        let stream = match self.stream.take() {
            Some(stream) => stream,
            None => self.open(Vec::new()),
        };
        let sent = stream.tx.send(chunk).await.is_ok();
        self.stream = Some(stream);
        if !sent || self.unacknowledged.len() >= LOG_CHUNKS_PER_STREAM {
            self.flush().await;
        }
    }

    /// Closes the open stream and waits for the scheduler's answer; if the stream broke, sends
    /// every unacknowledged chunk again, with backoff, until it is stored or the tries run out.
    async fn flush(&mut self) {
        if self.stream.is_none() {
            if self.unacknowledged.is_empty() {
                return;
            }
            self.stream = Some(self.open(self.unacknowledged.clone()));
        }
        let mut backoff = Duration::from_millis(100);
        for _ in 0..LOG_PUSH_TRIES {
            let Some(stream) = self.stream.take() else {
                break;
            };
            drop(stream.tx);
            let status = match stream.answer.await {
                Ok(Ok(())) => {
                    self.unacknowledged.clear();
                    return;
                }
                Ok(Err(status)) => status,
                Err(join) => Status::internal(join.to_string()),
            };
            if matches!(
                status.code(),
                Code::InvalidArgument | Code::FailedPrecondition | Code::NotFound
            ) {
                break;
            }
            warn!(attempt = %self.attempt, error = %status.message(), chunks = self.unacknowledged.len(), "pushing logs failed; sending them again");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
            self.stream = Some(self.open(self.unacknowledged.clone()));
        }
        warn!(attempt = %self.attempt, chunks = self.unacknowledged.len(), "gave up pushing logs");
        self.unacknowledged.clear();
        self.stream = None;
    }
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
