//! A scheduler and workers inside the test process: the real `Scheduler` serving gRPC on a
//! real loopback socket (port 0, so no other test can take it first) and the real
//! `run_worker` agent talking to it. Both stop when their handle is dropped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use vishwa_proto::v1::vishwa_client::VishwaClient;
use vishwa_scheduler::store::Store;
use vishwa_scheduler::{Scheduler, SchedulerConfig};
use vishwa_worker::executor::Executor;
use vishwa_worker::executor::docker::DockerExecutor;
use vishwa_worker::executor::process::ProcessExecutor;
use vishwa_worker::{Capacity, Executors, WorkerConfig, WorkerError, run_worker};

/// Largest message a test client sends or takes (bundles, long logs).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// A scheduler serving on a loopback port of its own.
pub struct InProcessScheduler {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub addr: SocketAddr,
    /// The HTTP port's `http://127.0.0.1:PORT` (none when the config's `http` is off).
    pub http_url: Option<String>,
    scheduler: Option<Scheduler>,
    shutdown: CancellationToken,
}

impl InProcessScheduler {
    /// Starts a scheduler over the sled store in `config.data_dir` (its `listen` is set to
    /// the port it gets).
    pub async fn start(config: SchedulerConfig) -> anyhow::Result<InProcessScheduler> {
        Self::start_inner(config, None).await
    }

    /// Starts a scheduler over `store` instead of one in `config.data_dir`.
    pub async fn start_with_store(
        config: SchedulerConfig,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<InProcessScheduler> {
        Self::start_inner(config, Some(store)).await
    }

    async fn start_inner(
        mut config: SchedulerConfig,
        store: Option<Arc<dyn Store>>,
    ) -> anyhow::Result<InProcessScheduler> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the scheduler's port")?;
        let addr = listener.local_addr()?;
        config.listen = addr;
        // Any free port, so tests in parallel never fight over the default.
        config.http = config.http.map(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let shutdown = CancellationToken::new();
        let scheduler = match store {
            None => Scheduler::start(&config, listener, shutdown.clone()).await,
            Some(store) => {
                Scheduler::start_with_store(&config, store, listener, shutdown.clone()).await
            }
        }
        .with_context(|| format!("starting a scheduler over {}", config.data_dir.display()))?;
        Ok(InProcessScheduler {
            url: format!("http://{addr}"),
            addr,
            http_url: scheduler.http_url(),
            scheduler: Some(scheduler),
            shutdown,
        })
    }

    /// The running scheduler (its engine, for benchmarks).
    pub fn scheduler(&self) -> &Scheduler {
        self.scheduler
            .as_ref()
            .expect("the scheduler runs until stop")
    }

    /// A client of it.
    pub async fn client(&self) -> anyhow::Result<VishwaClient<Channel>> {
        connect_client(&self.url).await
    }

    /// Stops serving and waits until the store is closed (a new scheduler may open it).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(scheduler) = self.scheduler.take() {
            scheduler.wait().await.context("stopping the scheduler")?;
        }
        Ok(())
    }
}

impl Drop for InProcessScheduler {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A client of the scheduler at `url`, with room for large messages.
pub async fn connect_client(url: &str) -> anyhow::Result<VishwaClient<Channel>> {
    Ok(VishwaClient::connect(url.to_owned())
        .await
        .with_context(|| format!("connecting a client to {url}"))?
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// Settings of a test worker: no labels, process stages refused, no mounts, no grace
/// period, the host's capacity, no token. Change fields as the test needs.
pub fn worker_config(url: &str, name: &str, slots: u32, cache_dir: PathBuf) -> WorkerConfig {
    WorkerConfig {
        scheduler: url.to_owned(),
        name: name.to_owned(),
        slots,
        labels: BTreeMap::new(),
        allow_process: false,
        allow_mounts: Vec::new(),
        grace: Duration::ZERO,
        cache_dir,
        capacity: Capacity::detect(),
        token: None,
        tls_ca: None,
    }
}

/// The real Docker executor and the process executor; fails when Docker is unreachable.
pub async fn docker_and_process_executors() -> anyhow::Result<Executors> {
    let docker: Arc<dyn Executor> = Arc::new(
        DockerExecutor::connect()
            .await
            .context("the worker cannot reach docker")?,
    );
    Ok(Executors {
        docker: Some(docker),
        process: Some(Arc::new(ProcessExecutor::new())),
    })
}

/// Only the process executor.
pub fn process_executors() -> Executors {
    Executors {
        docker: None,
        process: Some(Arc::new(ProcessExecutor::new())),
    }
}

/// A worker agent running on the test's runtime.
pub struct InProcessWorker {
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), WorkerError>>>,
}

impl InProcessWorker {
    /// Starts `run_worker(config, executors)`.
    pub fn spawn(config: WorkerConfig, executors: Executors) -> InProcessWorker {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_worker(config, executors, shutdown.clone()));
        InProcessWorker {
            shutdown,
            task: Some(task),
        }
    }

    /// Shuts it down and waits until it drained (running attempts reported).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.context("the worker panicked")??;
        }
        Ok(())
    }

    /// Like [`InProcessWorker::stop`], abandoning the worker after `limit` (it only takes
    /// that long when the scheduler is gone and its last reports cannot be delivered);
    /// returns whether it stopped in time.
    pub async fn stop_within(mut self, limit: Duration) -> anyhow::Result<bool> {
        self.shutdown.cancel();
        let Some(mut task) = self.task.take() else {
            return Ok(true);
        };
        match tokio::time::timeout(limit, &mut task).await {
            Ok(joined) => {
                joined.context("the worker panicked")??;
                Ok(true)
            }
            Err(_) => {
                task.abort();
                Ok(false)
            }
        }
    }
}

impl Drop for InProcessWorker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
