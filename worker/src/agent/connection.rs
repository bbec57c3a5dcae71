//! The connection to the scheduler: the reconnect loop that rides through a scheduler
//! restart, registration, and one session's loop of heartbeats, task commands and drain.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Code, Status};
use tracing::{info, warn};
use vishwa_proto::v1 as pb;

use super::config::{Executors, WorkerConfig, WorkerError, owner_label};
use super::heartbeat::{heartbeat, ticker};
use super::retry::{Backoff, FIRST_RECONNECT_BACKOFF, MAX_RECONNECT_BACKOFF};
use super::shared::{Shared, stop_after_grace};
use super::tasks::Tasks;
use crate::api::convert::register_request;
use crate::artifacts::AttemptDirPool;
use crate::bundle::BundleCache;
use crate::connect::WorkerClient as Client;
use crate::connect::{BearerToken, endpoint};

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
    // Cleaning up after an earlier process of this worker waits for the first registration:
    // while another live process holds the name, what is there is its, and is left alone.
    let attempts_dir = config.cache_dir.join("attempts");
    let attempt_dirs = Arc::new(AttemptDirPool::new(attempts_dir));
    let bundles =
        Arc::new(
            BundleCache::open(&config.cache_dir).map_err(|e| WorkerError::Cache {
                dir: config.cache_dir.clone(),
                reason: e.to_string(),
            })?,
        );

    let shared = Arc::new(Shared {
        instance: format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        ),
        ..Shared::default()
    });
    let tracker = TaskTracker::new();
    let hard_stop = CancellationToken::new();
    tokio::spawn(stop_after_grace(
        shutdown.clone(),
        hard_stop.clone(),
        shared.clone(),
        config.grace,
    ));
    // A restarted scheduler gives a worker's attempts one lease to be claimed again, so the
    // worker must retry at least as often as it heartbeats; until it knows the interval, the
    // general cap applies.
    let mut backoff = Backoff::new(FIRST_RECONNECT_BACKOFF, MAX_RECONNECT_BACKOFF);
    loop {
        let session = Session {
            config: &config,
            client: client.clone(),
            shared: shared.clone(),
            tasks: Tasks {
                config: &config,
                client: client.clone(),
                executors: &executors,
                bundles: &bundles,
                attempt_dirs: &attempt_dirs,
                shared: shared.clone(),
                tracker: &tracker,
            },
        };
        match session.run(&shutdown, &hard_stop).await {
            SessionEnd::Drained => break,
            SessionEnd::Broke { status, heartbeat } => {
                if let Some(interval) = heartbeat {
                    // It was registered: a new outage starts with a short wait again.
                    backoff.restart(interval.clamp(FIRST_RECONNECT_BACKOFF, MAX_RECONNECT_BACKOFF));
                }
                if shutdown.is_cancelled() && shared.running().is_empty() {
                    break;
                }
                let refused = matches!(
                    status.code(),
                    Code::Unauthenticated | Code::PermissionDenied
                );
                // Another live worker holds the name: this one took nothing, cleaned nothing.
                if status.code() == Code::AlreadyExists && shared.running().is_empty() {
                    tracker.close();
                    tracker.wait().await;
                    return Err(WorkerError::NameTaken {
                        url: config.scheduler.clone(),
                        reason: status.message().to_owned(),
                    });
                }
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
                    _ = tokio::time::sleep(backoff.next_wait()) => {}
                }
            }
        }
    }
    // Every attempt reports before the worker is gone.
    tracker.close();
    tracker.wait().await;
    info!(worker = %config.name, "worker stopped");
    Ok(())
}

/// Removes what an earlier process of this worker left: its containers and its attempts'
/// folders (the pool makes new ones as needed).
async fn clean_up_earlier_process(config: &WorkerConfig, executors: &Executors) {
    remove_leftovers(executors, &owner_label(config)).await;
    let attempts_dir = config.cache_dir.join("attempts");
    if attempts_dir.exists()
        && let Err(e) = std::fs::remove_dir_all(&attempts_dir)
    {
        warn!(dir = %attempts_dir.display(), error = %e, "cannot remove earlier attempts' folders");
    }
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
    shared: Arc<Shared>,
    tasks: Tasks<'a>,
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
        let registered = self.register(&mut client).await?;
        let worker_id = registered.worker_id;
        let mut inbox = self.tasks.open(&worker_id).await?;
        info!(worker = %worker_id, "registered with the scheduler");
        let interval = Duration::from_millis(registered.heartbeat_interval_ms.max(100));
        *heartbeat_interval = Some(interval);
        let mut heartbeat_tick = ticker(interval);
        let mut drain_check = tokio::time::interval(Duration::from_millis(100));
        let mut announced_drain = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled(), if !announced_drain => {
                    announced_drain = true;
                    self.shared.draining.store(true, Ordering::SeqCst);
                    heartbeat(&mut client, &worker_id, &self.shared).await?;
                }
                _ = drain_check.tick(), if announced_drain => {
                    if self.shared.running().is_empty() || hard_stop.is_cancelled() && self.shared.running().is_empty() {
                        return Ok(());
                    }
                }
                _ = heartbeat_tick.tick() => heartbeat(&mut client, &worker_id, &self.shared).await?,
                command = inbox.next() => {
                    match command {
                        Some(Ok(pb::WorkerCommand { command: Some(command) })) => {
                            self.tasks.handle(&worker_id, command);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(status)) => return Err(status),
                        None => return Err(Status::unavailable("the scheduler closed the task stream")),
                    }
                }
            }
        }
    }

    /// Registers this worker, naming the attempts it still runs; stops those the scheduler
    /// no longer considers current.
    async fn register(&self, client: &mut Client) -> Result<pb::RegisterResponse, Status> {
        let registered = client
            .register(register_request(
                self.config,
                self.shared.running_ids(),
                self.shared.draining(),
                self.shared.instance.clone(),
            ))
            .await?
            .into_inner();
        if !self.shared.cleaned.swap(true, Ordering::SeqCst) {
            clean_up_earlier_process(self.config, self.tasks.executors).await;
        }
        for attempt in &registered.cancel_attempts {
            self.shared
                .cancel(attempt, "the scheduler no longer considers it current");
        }
        Ok(registered)
    }
}
