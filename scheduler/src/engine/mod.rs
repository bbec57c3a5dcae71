//! The engine: one actor that owns every active run, the ready queue and the worker registry.
//!
//! Each turn of its loop takes every waiting command, applies the resulting events to the
//! runs' state machines, dispatches ready stages to free workers, writes all changed records
//! in one store batch and syncs it, and only then acts: replies to callers, sends tasks and
//! cancellations to workers, and publishes events to watchers. Batching the writes is what
//! keeps every transition durable at thousands of stages per second.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::dag::{Command as DagCommand, Dag, ExecutorKind, Mount, Resources};
use crate::ids::{AttemptId, RunId, WorkerId};
use crate::metrics::Metrics;
use crate::run::{AttemptReport, RetryMode, RunRecord, StageRecord};
use crate::secrets::SecretBox;
use crate::store::{LogRecord, Store, WriteBatch};

mod approvals;
mod artifacts;
mod assets;
mod cache;
mod core;
mod dispatch;
mod error;
mod leases;
mod metrics;
mod observe;
mod retention;
mod runs;
mod schedule;
mod schedule_api;
mod state;
mod task;
mod waiting;
mod workers;

pub use approvals::Verdict;
pub use error::EngineError;
pub use metrics::DispatchMetrics;
pub use observe::Snapshot;
pub use retention::DeletedRun;
pub(crate) use schedule_api::ScheduleCommand;
pub use schedule_api::{BackfillOutcome, BackfillRequest, BackfillSlot, PauseChange};
pub use waiting::Waiting;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How often workers are told to heartbeat.
    pub heartbeat_interval: Duration,
    /// How long a worker's attempts survive without a heartbeat.
    pub lease: Duration,
    /// Stages running at once over all workers; 0 means no limit beyond the workers' slots.
    pub max_running: u32,
    /// Whether DAG schedules start runs (off for `vishwa run`, which runs one DAG once).
    pub schedules: bool,
    /// The key that opens stored secrets; without it a stage asking for one fails.
    pub secrets: Option<Arc<SecretBox>>,
    /// Output kept per attempt, sent with each task (0: the worker's default).
    pub max_log_bytes: u64,
    /// Where the engine reads the time: leases, timeouts, retry backoff, schedules.
    pub clock: Clock,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            heartbeat_interval: Duration::from_secs(5),
            lease: Duration::from_secs(30),
            max_running: 0,
            schedules: true,
            secrets: None,
            max_log_bytes: 0,
            clock: Clock::system(),
        }
    }
}

/// A worker as `vishwa workers` shows it.
#[derive(Debug, Clone, Default)]
pub struct WorkerView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub slots: u32,
    pub cpus: f64,
    pub memory_bytes: u64,
    pub gpus: Vec<String>,
    pub used_cpus: f64,
    pub used_memory_bytes: u64,
    pub used_gpus: Vec<String>,
    /// (run, stage instance, attempt number) of what runs there.
    pub running: Vec<(RunId, String, u32)>,
    pub last_seen_ms: i64,
    pub draining: bool,
    pub drained: bool,
    pub connected: bool,
}

/// Something watchers may want to know, published after it is stored.
#[derive(Debug, Clone)]
pub enum EngineEvent {
    Stage {
        run: RunId,
        /// The same allocation the store batch wrote.
        record: Arc<StageRecord>,
    },
    Run(RunRecord),
    /// New log chunks of a stage attempt are in the store (read them from there: events
    /// carry no log data, so the event buffer stays small whatever the stages print).
    Log {
        run: RunId,
        stage: String,
        attempt: u32,
    },
}

/// A task for a worker, fully rendered.
#[derive(Debug, Clone)]
pub struct TaskAssignment {
    pub attempt: AttemptId,
    pub attempt_number: u32,
    pub run: RunId,
    pub dag: String,
    pub stage: String,
    pub executor: ExecutorKind,
    pub image: Option<String>,
    pub command: Option<DagCommand>,
    pub env: BTreeMap<String, String>,
    pub local_dir: Option<String>,
    /// Digest of the DAG's bundle, which the worker fetches and mounts.
    pub bundle: Option<String>,
    /// GPU device ids assigned on the chosen worker.
    pub gpus: Vec<String>,
    pub timeout: Option<Duration>,
    pub mounts: Vec<Mount>,
    pub resources: Resources,
    /// Names of `env` entries holding secret values, which the worker masks in output.
    pub secret_env: Vec<String>,
    /// Outputs of the instances this one needs, placed under `/vishwa/in/<stage>/<name>`.
    pub inputs: Vec<TaskInput>,
    /// Declared output names, uploaded from `/vishwa/out` after exit 0.
    pub outputs: Vec<String>,
    /// Outputs among `outputs` the stage may leave unwritten.
    pub optional_outputs: Vec<String>,
    /// Output the worker keeps of the attempt (head and tail); 0: the worker's default.
    pub max_log_bytes: u64,
}

/// One input file of a task: an output of an upstream stage instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInput {
    /// The producing instance (`train` or `train[chocolate]`).
    pub stage: String,
    pub name: String,
    pub digest: String,
    pub size: u64,
}

/// What the engine sends down a worker's inbox.
#[derive(Debug, Clone)]
pub enum WorkerMessage {
    Task(Box<TaskAssignment>),
    Cancel { attempt: AttemptId, reason: String },
}

/// A worker introducing itself.
#[derive(Debug, Clone)]
pub struct WorkerRegistration {
    pub name: String,
    pub slots: u32,
    pub labels: BTreeMap<String, String>,
    pub allow_process: bool,
    pub running: Vec<AttemptId>,
    /// CPUs offered (0: not accounted).
    pub cpus: f64,
    /// Memory offered in bytes (0: not accounted).
    pub memory_bytes: u64,
    /// GPU device ids offered.
    pub gpus: Vec<String>,
    /// Shutting down: it reconnected only to finish what it runs.
    pub draining: bool,
    /// Which process of the worker this is (random per process): while a live process holds
    /// the name, another is refused.
    pub instance: String,
}

/// The engine's answer to a registration.
#[derive(Debug, Clone)]
pub struct Registered {
    pub worker: WorkerId,
    pub heartbeat_interval: Duration,
    pub lease: Duration,
    /// Attempts the worker reported that are no longer current: it must stop them.
    pub cancel: Vec<AttemptId>,
}

/// The engine's answer to a heartbeat.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatReply {
    /// Attempts the worker runs that are no longer current: it must stop them.
    pub cancel: Vec<AttemptId>,
    /// The scheduler does not know the worker: it must register again.
    pub reregister: bool,
}

/// Where a DAG's files come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DagFiles {
    /// A folder on the scheduler's host (embedded modes, whose worker shares the host).
    pub local_dir: Option<String>,
    /// An uploaded bundle, by digest.
    pub bundle: Option<String>,
}

/// The outcome of a submission.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub name: String,
    pub version: String,
    pub changed: bool,
}

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

pub(crate) enum Command {
    Submit {
        dag: Arc<Dag>,
        file_name: String,
        source: String,
        files: DagFiles,
        reply: Reply<Submitted>,
    },
    Trigger {
        dag: String,
        params: BTreeMap<String, String>,
        no_cache: bool,
        reply: Reply<RunRecord>,
    },
    Cancel {
        run: RunId,
        reply: Reply<RunRecord>,
    },
    Register {
        registration: WorkerRegistration,
        reply: Reply<Registered>,
    },
    AttachInbox {
        worker: WorkerId,
        inbox: mpsc::UnboundedSender<WorkerMessage>,
        reply: Reply<()>,
    },
    Heartbeat {
        worker: WorkerId,
        running: Vec<AttemptId>,
        draining: bool,
        reply: Reply<HeartbeatReply>,
    },
    Decide {
        run: RunId,
        stage: String,
        verdict: Verdict,
        reply: Reply<Vec<String>>,
    },
    Retry {
        run: RunId,
        mode: RetryMode,
        reply: Reply<(RunRecord, Vec<String>)>,
    },
    Started {
        worker: WorkerId,
        attempt: AttemptId,
        handle: String,
        reply: Reply<()>,
    },
    Finished {
        worker: WorkerId,
        attempt: AttemptId,
        report: AttemptReport,
        reply: Reply<()>,
    },
    Metrics {
        reply: oneshot::Sender<DispatchMetrics>,
    },
    Snapshot {
        reply: oneshot::Sender<Snapshot>,
    },
    Workers {
        reply: oneshot::Sender<Vec<WorkerView>>,
    },
    Drain {
        worker: WorkerId,
        undo: bool,
        reply: Reply<WorkerView>,
    },
    Schedule(ScheduleCommand),
    DeleteRuns {
        runs: Vec<RunId>,
        reply: Reply<Vec<DeletedRun>>,
    },
    PruneRuns {
        policy: crate::artifacts::retention::RetentionPolicy,
        reply: Reply<Vec<DeletedRun>>,
    },
}

/// A cloneable handle on the engine.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::UnboundedSender<Command>,
    events: broadcast::Sender<Arc<EngineEvent>>,
    store: Arc<dyn Store>,
    waiting: Waiting,
    telemetry: Arc<Metrics>,
    clock: Clock,
}

/// How many events a slow watcher may fall behind before it must re-read the store.
const EVENT_BUFFER: usize = 1 << 16;

impl EngineHandle {
    /// Loads every unfinished run from `store` and starts the engine on `tracker`; it stops
    /// when `shutdown` fires.
    pub async fn start(
        store: Arc<dyn Store>,
        config: EngineConfig,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<EngineHandle, EngineError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let clock = config.clock.clone();
        let mut engine = core::Engine::new(store.clone(), config, events.clone());
        engine.recover().await?;
        let waiting = engine.waiting.clone();
        let telemetry = engine.telemetry.clone();
        tracker.spawn(engine.run(rx, shutdown));
        Ok(EngineHandle {
            tx,
            events,
            store,
            waiting,
            telemetry,
            clock,
        })
    }

    /// The Prometheus series of this engine (and of the API in front of it).
    pub fn telemetry(&self) -> &Arc<Metrics> {
        &self.telemetry
    }

    /// The current state gauges show: slots per worker, running attempts, next cron fires.
    pub async fn snapshot(&self) -> Result<Snapshot, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Snapshot { reply })
            .map_err(|_| self.stopped())?;
        rx.await.map_err(|_| self.stopped())
    }

    /// Whether the engine still takes commands (false once it stopped).
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }

    /// The store the engine writes to; reads may go straight to it.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The clock the engine reads.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Why queued stages wait for a worker (in memory, not stored).
    pub fn waiting(&self) -> &Waiting {
        &self.waiting
    }

    /// Events published after they are stored.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EngineEvent>> {
        self.events.subscribe()
    }

    /// Stores log chunks of runs, makes them durable, then tells watchers about them. A
    /// worker does not send acknowledged chunks again, so they must survive a crash.
    pub async fn append_logs(
        &self,
        batches: Vec<(RunId, Vec<LogRecord>)>,
    ) -> Result<(), EngineError> {
        let mut batch = WriteBatch::new();
        for (run, chunks) in &batches {
            batch.put_logs(run, chunks.clone());
        }
        self.store.commit(batch).await?;
        let bytes: usize = batches
            .iter()
            .flat_map(|(_, chunks)| chunks.iter().map(|c| c.data.len()))
            .sum();
        self.telemetry.log_bytes.inc_by(bytes as u64);
        for (run, chunks) in batches {
            let mut told: Vec<(&str, u32)> = Vec::new();
            for c in &chunks {
                if told.contains(&(c.stage.as_str(), c.attempt)) {
                    continue;
                }
                told.push((c.stage.as_str(), c.attempt));
                let _ = self.events.send(Arc::new(EngineEvent::Log {
                    run: run.clone(),
                    stage: c.stage.clone(),
                    attempt: c.attempt,
                }));
            }
        }
        Ok(())
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).map_err(|_| self.stopped())?;
        rx.await.map_err(|_| self.stopped())?
    }

    /// Why the engine no longer answers: the store cannot write, or it is shutting down.
    fn stopped(&self) -> EngineError {
        match self.store.write_failure() {
            Some(e) => EngineError::Store(e),
            None => EngineError::ShuttingDown,
        }
    }

    /// Registers a validated DAG; unchanged content changes nothing.
    pub async fn submit(
        &self,
        dag: Arc<Dag>,
        file_name: String,
        source: String,
        files: DagFiles,
    ) -> Result<Submitted, EngineError> {
        self.call(|reply| Command::Submit {
            dag,
            file_name,
            source,
            files,
            reply,
        })
        .await
    }

    /// Starts a run of `dag` with parameter overrides.
    pub async fn trigger(
        &self,
        dag: String,
        params: BTreeMap<String, String>,
    ) -> Result<RunRecord, EngineError> {
        self.trigger_with(dag, params, false).await
    }

    /// Starts a run of `dag` with parameter overrides; `no_cache` turns cache lookups off
    /// for the run.
    pub async fn trigger_with(
        &self,
        dag: String,
        params: BTreeMap<String, String>,
        no_cache: bool,
    ) -> Result<RunRecord, EngineError> {
        self.call(|reply| Command::Trigger {
            dag,
            params,
            no_cache,
            reply,
        })
        .await
    }

    /// Cancels a run: running attempts are stopped, the rest will not start.
    pub async fn cancel(&self, run: RunId) -> Result<RunRecord, EngineError> {
        self.call(|reply| Command::Cancel { run, reply }).await
    }

    /// Registers (or re-registers) a worker; refused while another live process holds its
    /// name.
    pub async fn register(
        &self,
        registration: WorkerRegistration,
    ) -> Result<Registered, EngineError> {
        self.call(|reply| Command::Register {
            registration,
            reply,
        })
        .await
    }

    /// Connects a registered worker's inbox.
    pub async fn attach_inbox(
        &self,
        worker: WorkerId,
        inbox: mpsc::UnboundedSender<WorkerMessage>,
    ) -> Result<(), EngineError> {
        self.call(|reply| Command::AttachInbox {
            worker,
            inbox,
            reply,
        })
        .await
    }

    /// Extends a worker's lease; a draining worker gets no new tasks.
    pub async fn heartbeat(
        &self,
        worker: WorkerId,
        running: Vec<AttemptId>,
        draining: bool,
    ) -> Result<HeartbeatReply, EngineError> {
        self.call(|reply| Command::Heartbeat {
            worker,
            running,
            draining,
            reply,
        })
        .await
    }

    /// Approves or rejects the instances of `stage` (a stage or one instance) waiting on
    /// their `approval:` gate; returns the instances decided.
    pub async fn decide(
        &self,
        run: RunId,
        stage: String,
        verdict: Verdict,
    ) -> Result<Vec<String>, EngineError> {
        self.call(|reply| Command::Decide {
            run,
            stage,
            verdict,
            reply,
        })
        .await
    }

    /// Runs a finished run again (see [`RetryMode`]); returns the run and the instances
    /// that will run again.
    pub async fn retry(
        &self,
        run: RunId,
        mode: RetryMode,
    ) -> Result<(RunRecord, Vec<String>), EngineError> {
        self.call(|reply| Command::Retry { run, mode, reply }).await
    }

    /// Records that an attempt started.
    pub async fn started(
        &self,
        worker: WorkerId,
        attempt: AttemptId,
        handle: String,
    ) -> Result<(), EngineError> {
        self.call(|reply| Command::Started {
            worker,
            attempt,
            handle,
            reply,
        })
        .await
    }

    /// Records how an attempt ended (with what it produced, on success); refused for an
    /// attempt that is no longer current.
    pub async fn finished(
        &self,
        worker: WorkerId,
        attempt: AttemptId,
        report: impl Into<AttemptReport>,
    ) -> Result<(), EngineError> {
        let report = report.into();
        self.call(|reply| Command::Finished {
            worker,
            attempt,
            report,
            reply,
        })
        .await
    }

    /// Every registered worker, by name.
    pub async fn workers(&self) -> Result<Vec<WorkerView>, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Workers { reply })
            .map_err(|_| EngineError::ShuttingDown)?;
        rx.await.map_err(|_| EngineError::ShuttingDown)
    }

    /// Stops handing stages to a worker (or, with `undo`, starts again).
    pub async fn drain(&self, worker: WorkerId, undo: bool) -> Result<WorkerView, EngineError> {
        self.call(|reply| Command::Drain {
            worker,
            undo,
            reply,
        })
        .await
    }

    /// Dispatch latency and throughput figures, for benchmarks.
    pub async fn metrics(&self) -> Result<DispatchMetrics, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Metrics { reply })
            .map_err(|_| EngineError::ShuttingDown)?;
        rx.await.map_err(|_| EngineError::ShuttingDown)
    }
}

#[cfg(test)]
mod tests;
