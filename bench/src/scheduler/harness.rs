//! An in-process cluster: the real scheduler (`Scheduler::start` on a loopback port, sled in a
//! temporary directory or a PostgreSQL database, or the in-memory store as a baseline), real worker agents talking gRPC
//! to it, and a no-op executor, so that what is timed is the scheduler's own work.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use vishwa_integration_tests::inproc::{
    InProcessScheduler, InProcessWorker, connect_client, worker_config,
};
use vishwa_proto::v1 as pb;
use vishwa_scheduler::SchedulerConfig;
use vishwa_scheduler::engine::{DispatchMetrics, EngineEvent};
use vishwa_scheduler::ids::RunId;
use vishwa_scheduler::run::{RunState, StageState};
use vishwa_scheduler::store::{MemoryStore, Store, StoreLocation};
use vishwa_worker::Executors;
use vishwa_worker::executor::{
    EventSink, ExecEvent, Executor, ExecutorError, ExitReport, TaskSpec,
};

use crate::cpu::process_cpu_time;

type Client = pb::vishwa_client::VishwaClient<Channel>;

/// The label each worker carries (`bench-worker: <index>`), so a warm-up stage can be pinned
/// to each of them.
const WORKER_LABEL: &str = "bench-worker";
/// Longest a measured run may take before the benchmark gives up.
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// An executor that runs nothing: it reports the start and exit code 0 at once, as a real
/// executor would for an instant command.
struct NoopExecutor;

#[async_trait::async_trait]
impl Executor for NoopExecutor {
    async fn run(
        &self,
        _task: &TaskSpec,
        events: EventSink,
        _cancel: CancellationToken,
    ) -> Result<ExitReport, ExecutorError> {
        let _ = events
            .send(ExecEvent::Started {
                handle: "noop".to_owned(),
            })
            .await;
        Ok(ExitReport::Exited { code: 0 })
    }
}

/// Which store the scheduler writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum StoreKind {
    /// sled in a temporary directory, every batch synced: the real thing.
    Sled,
    /// A PostgreSQL database (`Layout::postgres`), every batch committed.
    Postgres,
    /// The in-memory store: the same engine and gRPC with nothing written to disk.
    Memory,
}

/// How the cluster is laid out.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) store: StoreKind,
    /// The database's URL when `store` is [`StoreKind::Postgres`].
    pub(crate) postgres: Option<String>,
    pub(crate) workers: usize,
    pub(crate) slots: u32,
}

/// What one measured run gave.
#[derive(Debug, Clone)]
pub(crate) struct RunFigures {
    /// Stage instances the run had (every one checked to have succeeded).
    pub(crate) stages: usize,
    /// From the trigger call to the run's final event.
    pub(crate) wall: Duration,
    /// CPU time this process (scheduler, workers and harness) used over the same span.
    pub(crate) cpu: Duration,
    /// The engine's figures for this run alone.
    pub(crate) metrics: DispatchMetrics,
}

/// A scheduler and its workers, in this process.
pub(crate) struct Cluster {
    scheduler: InProcessScheduler,
    workers: Vec<InProcessWorker>,
    client: Client,
    _data: tempfile::TempDir,
}

impl Cluster {
    /// Starts the scheduler and `layout.workers` workers, and returns once every worker has
    /// run a warm-up stage.
    pub(crate) async fn start(layout: Layout) -> Result<Cluster> {
        let data = tempfile::Builder::new()
            .prefix("vishwa-bench-")
            .tempdir()
            .context("cannot create a data dir")?;
        let mut config = SchedulerConfig {
            data_dir: data.path().to_path_buf(),
            ..SchedulerConfig::default()
        };
        let scheduler = match layout.store {
            StoreKind::Sled => InProcessScheduler::start(config).await?,
            StoreKind::Postgres => {
                let url = layout.postgres.clone().context("no PostgreSQL URL")?;
                config.store = Some(StoreLocation::Postgres(url));
                InProcessScheduler::start(config).await?
            }
            StoreKind::Memory => {
                let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
                InProcessScheduler::start_with_store(config, store).await?
            }
        };
        let url = scheduler.url.clone();
        let executor: Arc<dyn Executor> = Arc::new(NoopExecutor);
        let workers = (0..layout.workers)
            .map(|i| {
                let mut config = worker_config(
                    &url,
                    &format!("bench-{i}"),
                    layout.slots,
                    data.path().join(format!("cache-{i}")),
                );
                config.labels = BTreeMap::from([(WORKER_LABEL.to_owned(), i.to_string())]);
                let executors = Executors {
                    docker: Some(executor.clone()),
                    process: None,
                };
                InProcessWorker::spawn(config, executors)
            })
            .collect();
        let client = connect_client(&url)
            .await
            .context("cannot connect to the scheduler")?;
        let mut cluster = Cluster {
            scheduler,
            workers,
            client,
            _data: data,
        };
        cluster
            .run_dag(&warm_up_dag(layout.workers))
            .await
            .context("warm-up run")?;
        Ok(cluster)
    }

    /// Submits `yaml`, triggers it, and waits for the run to end; the run must succeed.
    pub(crate) async fn run_dag(&mut self, yaml: &str) -> Result<RunFigures> {
        let engine = &self.scheduler.scheduler().engine;
        let submitted = self
            .client
            .submit_dag(pb::SubmitDagRequest {
                file_name: "bench.yaml".to_owned(),
                source: yaml.to_owned(),
                local_dir: String::new(),
                bundle_digest: String::new(),
            })
            .await
            .context("submit")?
            .into_inner();
        let dag = submitted.dag.context("submit answered no DAG")?.name;
        let before = engine.metrics().await?;
        let mut events = engine.subscribe();
        let cpu_start = process_cpu_time();
        let start = Instant::now();
        let run = self
            .client
            .trigger_run(pb::TriggerRunRequest {
                dag,
                params: Default::default(),
                ..Default::default()
            })
            .await
            .context("trigger")?
            .into_inner()
            .run
            .context("trigger answered no run")?;
        let run_id = RunId(run.run_id);
        let state = tokio::time::timeout(RUN_LIMIT, async {
            loop {
                match events.recv().await {
                    Ok(event) => {
                        if let EngineEvent::Run(record) = &*event
                            && record.id == run_id
                            && record.state.is_final()
                        {
                            return Ok(record.state);
                        }
                    }
                    // Too far behind to see every event: the store has the truth.
                    Err(RecvError::Lagged(_)) => {
                        if let Some(record) = engine.store().get_run(&run_id)?
                            && record.state.is_final()
                        {
                            return Ok(record.state);
                        }
                    }
                    Err(RecvError::Closed) => bail!("the engine stopped during the run"),
                }
            }
        })
        .await
        .context("the run did not end in time")??;
        let wall = start.elapsed();
        let cpu = process_cpu_time().saturating_sub(cpu_start);
        let after = engine.metrics().await?;
        ensure!(state == RunState::Succeeded, "run {run_id} ended {state:?}");
        let stages = engine.store().run_stages(&run_id)?;
        let unfinished = stages
            .iter()
            .filter(|s| !matches!(s.state, StageState::Succeeded { .. }))
            .count();
        ensure!(unfinished == 0, "{unfinished} stages did not succeed");
        Ok(RunFigures {
            stages: stages.len(),
            wall,
            cpu,
            metrics: metrics_since(&before, &after),
        })
    }

    /// Stops the workers, then the scheduler, and removes the data dir.
    pub(crate) async fn stop(self) -> Result<()> {
        for worker in self.workers {
            worker.stop().await?;
        }
        self.scheduler.stop().await?;
        Ok(())
    }
}

/// One stage pinned to each worker: when the run ends, every worker is registered and its
/// connection warm.
fn warm_up_dag(workers: usize) -> String {
    let mut yaml = "name: warm-up\ndefaults:\n  image: noop\nstages:\n".to_owned();
    for i in 0..workers {
        yaml.push_str(&format!(
            "  - name: w{i}\n    command: [\"true\"]\n    worker: {{{WORKER_LABEL}: \"{i}\"}}\n"
        ));
    }
    yaml
}

/// The engine's figures between two readings.
fn metrics_since(before: &DispatchMetrics, after: &DispatchMetrics) -> DispatchMetrics {
    DispatchMetrics {
        ready_to_dispatch_us: after.ready_to_dispatch_us[before.ready_to_dispatch_us.len()..]
            .to_vec(),
        eligible_to_dispatch_us: after.eligible_to_dispatch_us
            [before.eligible_to_dispatch_us.len()..]
            .to_vec(),
        dispatched: after.dispatched - before.dispatched,
        commits: after.commits - before.commits,
    }
}
