//! The scheduler as a server: opens the store, starts the engine, serves both gRPC services
//! on a listener until shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};
use vishwa_proto::v1 as pb;

use crate::api::{ApiError, ClientApi, WorkerApi};
use crate::artifacts::retention::{BLOB_GRACE, RetentionPolicy, collect_garbage, free_blobs};
use crate::artifacts::{
    ArtifactError, ArtifactsAt, BlobStore, ByteCounters, DEFAULT_MAX_ARTIFACT_BYTES,
};
use crate::auth::{AuthLayer, Authenticator, Tokens, TokensError};
use crate::blobs::s3::S3Settings;
use crate::bundle::{BundleError, BundleStore, DEFAULT_MAX_BUNDLE_BYTES};
use crate::clock::Clock;
use crate::console::Console;
use crate::engine::EngineError;
use crate::engine::{EngineConfig, EngineHandle};
use crate::http::{DEFAULT_HTTP_ADDR, HttpServer, HttpState, parse_http_addr};
use crate::secrets::{DEFAULT_KEY_FILE, SecretBox, SecretError};
use crate::store::{Store, StoreError, StoreLocation};
use crate::tls::{TlsError, server_rustls, server_tls};

/// Largest message either side accepts (a DAG source, a log batch).
const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// How long shutdown waits for in-flight calls, and then for the engine's last turn.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);
/// Output kept per stage attempt unless `--max-log-bytes` says otherwise.
pub const DEFAULT_MAX_LOG_BYTES: u64 = 100 << 20;

/// Settings of `vishwa scheduler`: defaults, then the config file, then flags.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Address of the HTTP port (health probes, metrics, the console); `off` for none.
    #[serde(deserialize_with = "http_addr")]
    pub http: Option<SocketAddr>,
    /// Directory of the sled store (in `store/`), bundles, artifacts and the secret key.
    pub data_dir: PathBuf,
    /// Where the state is kept [default: the sled store in the data dir].
    pub store: Option<StoreLocation>,
    /// How often workers heartbeat.
    #[serde(with = "humantime_serde_compat")]
    pub heartbeat_interval: Duration,
    /// How long a silent worker keeps its attempts.
    #[serde(with = "humantime_serde_compat")]
    pub lease: Duration,
    /// Whether DAG schedules start runs.
    pub schedules: bool,
    /// Largest DAG bundle (a submitted folder) accepted, in bytes.
    pub max_bundle_bytes: u64,
    /// Stages running at once over all workers; 0 means only the workers' slots limit it.
    pub max_parallel_stages: u32,
    /// YAML list of bearer tokens with roles; without it only loopback addresses are served.
    pub tokens: Option<PathBuf>,
    /// PEM certificate chain to serve TLS with (needs `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Key that encrypts secrets at rest [default: `secret.key` in the data dir, created 0600
    /// when the first secret is set].
    pub secret_key_file: Option<PathBuf>,
    /// Where stage outputs are kept: `file:DIR` or `s3://BUCKET/PREFIX` [default:
    /// `artifacts/` in the data dir].
    pub artifacts: ArtifactsAt,
    /// How to reach S3 for `s3://` artifacts [default: the `AWS_*` environment variables];
    /// for embedding programs, not in the config file.
    #[serde(skip)]
    pub s3: Option<S3Settings>,
    /// Largest stage output accepted, in bytes.
    pub max_artifact_bytes: u64,
    /// Outputs of runs that finished more than this many days ago are deleted.
    pub artifact_retention_days: Option<u64>,
    /// Only the newest this many finished runs of each DAG keep their outputs.
    pub artifact_retention_runs: Option<u32>,
    /// Finished runs that ended longer ago than this are deleted, with their logs and the
    /// outputs no other run uses [default: kept].
    #[serde(with = "humantime_serde_compat::option")]
    pub keep_runs: Option<Duration>,
    /// Only the newest this many finished runs of each DAG are kept [default: all].
    pub keep_runs_per_dag: Option<u32>,
    /// Output kept per stage attempt, in bytes: the first and the last half of it, with a
    /// line saying what was dropped between. The worker applies it (it sees the output in
    /// order); the scheduler sends it with each task.
    pub max_log_bytes: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        let engine = EngineConfig::default();
        SchedulerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            http: Some(DEFAULT_HTTP_ADDR),
            data_dir: PathBuf::from("vishwa-data"),
            store: None,
            heartbeat_interval: engine.heartbeat_interval,
            lease: engine.lease,
            schedules: engine.schedules,
            max_bundle_bytes: DEFAULT_MAX_BUNDLE_BYTES,
            max_parallel_stages: 0,
            tokens: None,
            tls_cert: None,
            tls_key: None,
            secret_key_file: None,
            artifacts: ArtifactsAt::DataDir,
            s3: None,
            max_artifact_bytes: DEFAULT_MAX_ARTIFACT_BYTES,
            artifact_retention_days: None,
            artifact_retention_runs: None,
            keep_runs: None,
            keep_runs_per_dag: None,
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("serving gRPC: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Tokens(#[from] TokensError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Secrets(#[from] SecretError),
    #[error(
        "refusing to listen on {addr} without tokens: anyone who can reach it could run \
         containers here. Listen on 127.0.0.1 (the default), or pass --tokens FILE (a YAML \
         list of `{{name, role, token}}`, see docs/security.md)"
    )]
    OpenOnNetwork { addr: SocketAddr },
    #[error("gRPC server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("--tls-cert and --tls-key go together; pass both (or neither)")]
    HalfTls,
    #[error(
        "cannot serve HTTP on {addr}: {reason}. Pass --http ADDR with a free port, or \
         --http off to serve no HTTP port (health, metrics, console)"
    )]
    HttpBind { addr: SocketAddr, reason: String },
}

/// A started scheduler.
pub struct Scheduler {
    /// The engine, for embedding processes and benchmarks.
    pub engine: EngineHandle,
    /// The web console over this scheduler's API, for the HTTP server to mount.
    pub console: Console,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// Set when the store failed to write: the scheduler stopped because of it.
    fatal: Arc<std::sync::Mutex<Option<StoreError>>>,
    http: Option<HttpServer>,
    artifact_counters: Arc<ByteCounters>,
}

/// The sockets a scheduler serves on.
pub struct Listeners {
    /// The gRPC port.
    pub grpc: TcpListener,
    /// The HTTP port, already bound; `None` binds `SchedulerConfig::http` (if set).
    pub http: Option<TcpListener>,
}

impl Scheduler {
    /// Opens the store (`config.store`, or the sled store in `config.data_dir`) and starts
    /// serving on `listener`.
    pub async fn start(
        config: &SchedulerConfig,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<Scheduler, ServeError> {
        let listeners = Listeners {
            grpc: listener,
            http: None,
        };
        Self::start_on(config, None, listeners, shutdown).await
    }

    /// Starts serving on `listener` over an already open store.
    pub async fn start_with_store(
        config: &SchedulerConfig,
        store: Arc<dyn Store>,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<Scheduler, ServeError> {
        let listeners = Listeners {
            grpc: listener,
            http: None,
        };
        Self::start_on(config, Some(store), listeners, shutdown).await
    }

    /// Starts serving on `listeners`, over `store` or the sled store in `config.data_dir`.
    pub async fn start_on(
        config: &SchedulerConfig,
        store: Option<Arc<dyn Store>>,
        listeners: Listeners,
        shutdown: CancellationToken,
    ) -> Result<Scheduler, ServeError> {
        let Listeners {
            grpc: listener,
            http: http_listener,
        } = listeners;
        let addr = listener.local_addr().ok();
        let http_addr = match &http_listener {
            Some(l) => l.local_addr().ok(),
            None => config.http,
        };
        let auth = match &config.tokens {
            Some(path) => {
                let tokens = Tokens::load(path)?;
                info!(tokens = tokens.len(), file = %path.display(), "bearer tokens required");
                Authenticator::with_tokens(tokens)
            }
            None => {
                let open = [addr, http_addr].into_iter().flatten();
                if let Some(addr) = open.into_iter().find(|a| !a.ip().is_loopback()) {
                    return Err(ServeError::OpenOnNetwork { addr });
                }
                warn!("no tokens file: open to local users only (listening on loopback)");
                Authenticator::open()
            }
        };
        let (tls, http_tls) = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => (
                Some(server_tls(cert, key)?),
                Some(server_rustls(cert, key)?),
            ),
            (None, None) => (None, None),
            _ => return Err(ServeError::HalfTls),
        };
        let http_listener = match (http_listener, config.http) {
            (Some(bound), _) => Some(bound),
            (None, Some(http)) => {
                Some(
                    TcpListener::bind(http)
                        .await
                        .map_err(|e| ServeError::HttpBind {
                            addr: http,
                            reason: e.to_string(),
                        })?,
                )
            }
            (None, None) => None,
        };
        let store: Arc<dyn Store> = match store {
            Some(store) => store,
            None => {
                std::fs::create_dir_all(&config.data_dir).map_err(|e| {
                    StoreError::Backend(format!("creating {}: {e}", config.data_dir.display()))
                })?;
                let location = config
                    .store
                    .clone()
                    .unwrap_or_else(|| StoreLocation::Sled(store_dir(&config.data_dir)));
                info!(store = %location, "opening store");
                // Opening blocks (files, or connecting to PostgreSQL): off the async threads.
                tokio::task::spawn_blocking(move || location.open())
                    .await
                    .map_err(|e| StoreError::Backend(format!("opening the store: {e}")))??
            }
        };
        let key_path = config
            .secret_key_file
            .clone()
            .unwrap_or_else(|| config.data_dir.join(DEFAULT_KEY_FILE));
        if let Some(dir) = key_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| SecretError::KeyFile {
                path: key_path.clone(),
                reason: format!("cannot create {}: {e}", dir.display()),
            })?;
        }
        let secrets = Arc::new(SecretBox::load_or_create(&key_path)?);
        let tracker = TaskTracker::new();
        let engine_config = EngineConfig {
            heartbeat_interval: config.heartbeat_interval,
            lease: config.lease,
            schedules: config.schedules,
            max_running: config.max_parallel_stages,
            secrets: Some(secrets.clone()),
            max_log_bytes: config.max_log_bytes,
            clock: Clock::system(),
        };
        let fatal = Arc::new(std::sync::Mutex::new(None));
        tokio::spawn(stop_when_the_store_fails(
            store.clone(),
            fatal.clone(),
            shutdown.clone(),
        ));
        let engine = EngineHandle::start(store, engine_config, &tracker, shutdown.clone()).await?;
        let bundles = Arc::new(BundleStore::open(
            &config.data_dir.join("bundles"),
            config.max_bundle_bytes,
        )?);
        let blobs = Arc::new(BlobStore::open_at(
            &config.artifacts,
            &config.data_dir,
            config.s3.as_ref(),
            config.max_artifact_bytes,
        )?);
        let artifact_counters = blobs.counters();
        let policy = RetentionPolicy {
            max_age: config
                .artifact_retention_days
                .map(|days| Duration::from_secs(days * 86_400)),
            keep_runs: config.artifact_retention_runs,
        };
        let runs_policy = RetentionPolicy {
            max_age: config.keep_runs,
            keep_runs: config.keep_runs_per_dag,
        };
        tracker.spawn(apply_retention(
            engine.clone(),
            blobs.clone(),
            (runs_policy, policy),
            shutdown.clone(),
        ));
        let client_api = Arc::new(
            ClientApi::new(engine.clone(), bundles.clone(), shutdown.clone())
                .with_secrets(secrets)
                .with_artifacts(blobs.clone()),
        );
        let console = Console::new(client_api.clone(), auth.clone(), http_tls.is_some());
        let http =
            match http_listener {
                Some(listener) => {
                    let state = HttpState {
                        engine: engine.clone(),
                        auth: auth.clone(),
                        shutdown: shutdown.clone(),
                        console: Some(console.clone()),
                    };
                    let app = crate::http::router(state);
                    let server = HttpServer::start(listener, http_tls, app, shutdown.clone())
                        .map_err(|e| ServeError::HttpBind {
                            addr: http_addr.unwrap_or(DEFAULT_HTTP_ADDR),
                            reason: e.to_string(),
                        })?;
                    Some(server)
                }
                None => None,
            };
        let client = pb::vishwa_server::VishwaServer::from_arc(client_api)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let worker = pb::worker_api_server::WorkerApiServer::new(
            WorkerApi::new(engine.clone(), bundles).with_artifacts(blobs),
        )
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let mut builder = tonic::transport::Server::builder();
        let tls_on = tls.is_some();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls)?;
        }
        let health = crate::api::standard::health(engine.store().clone(), shutdown.clone()).await;
        let server = tokio::spawn(
            builder
                .layer(AuthLayer::new(auth))
                .add_service(client)
                .add_service(worker)
                .add_service(health)
                .add_service(crate::api::standard::reflection_v1()?)
                .add_service(crate::api::standard::reflection_v1alpha()?)
                .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned()),
        );
        if let Some(addr) = addr {
            info!(%addr, tls = tls_on, "scheduler listening");
        }
        Ok(Scheduler {
            engine,
            console,
            server,
            tracker,
            shutdown,
            fatal,
            http,
            artifact_counters,
        })
    }

    /// The artifact bytes this process read and wrote itself (zero with S3 artifacts, whose
    /// bytes workers move through presigned URLs).
    pub fn artifact_counters(&self) -> Arc<ByteCounters> {
        self.artifact_counters.clone()
    }

    /// Where the HTTP port listens (`None` with `--http off`).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|h| h.addr)
    }

    /// The HTTP port's URL, `http://ADDR` or `https://ADDR` (`None` with `--http off`).
    pub fn http_url(&self) -> Option<String> {
        self.http.as_ref().map(HttpServer::url)
    }

    /// Waits until shutdown fired, in-flight calls finished (for [`SHUTDOWN_GRACE`] at most)
    /// and the engine wrote its last turn (as long again at most). Fails with the store's
    /// error when a failed write stopped the scheduler.
    pub async fn wait(mut self) -> Result<(), ServeError> {
        let served = tokio::select! {
            served = &mut self.server => served,
            _ = self.shutdown.cancelled() => {
                match tokio::time::timeout(SHUTDOWN_GRACE, &mut self.server).await {
                    Ok(served) => served,
                    Err(_) => {
                        warn!(grace = ?SHUTDOWN_GRACE, "calls still in flight after the grace period; closing them");
                        self.server.abort();
                        Ok(Ok(()))
                    }
                }
            }
        };
        if let Some(http) = self.http.take() {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, http.wait()).await;
        }
        self.tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(grace = ?SHUTDOWN_GRACE, "the engine did not stop within the grace period");
        }
        if let Some(e) = self.fatal.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Err(ServeError::Store(e));
        }
        match served {
            Ok(result) => result.map_err(ServeError::from),
            Err(join) => Err(ServeError::Engine(EngineError::InvalidRequest {
                field: "server",
                reason: join.to_string(),
            })),
        }
    }
}

/// Stops the scheduler when the store can no longer write (a full disk): it keeps nothing
/// it could promise, so it exits with the error and a supervisor starts it again once the
/// disk has room, from what is durable.
async fn stop_when_the_store_fails(
    store: Arc<dyn Store>,
    fatal: Arc<std::sync::Mutex<Option<StoreError>>>,
    shutdown: CancellationToken,
) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        e = store.wait_write_failure() => {
            tracing::error!(error = %e, "the store cannot write; the scheduler stops");
            *fatal.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
            shutdown.cancel();
        }
    }
}

/// How often artifact retention runs.
const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

/// Applies the run retention policy (runs deleted) and the artifact retention policy (outputs
/// dropped) now and every [`RETENTION_INTERVAL`] until shutdown; blobs nothing refers to are
/// collected even with no policy.
async fn apply_retention(
    engine: EngineHandle,
    blobs: Arc<BlobStore>,
    (runs, policy): (RetentionPolicy, RetentionPolicy),
    shutdown: CancellationToken,
) {
    let store = engine.store().clone();
    let clock = engine.clock().clone();
    loop {
        if runs.is_active() {
            match engine.prune_runs(runs).await {
                Ok(deleted) if !deleted.is_empty() => {
                    let digests = deleted.iter().flat_map(|d| d.digests.clone()).collect();
                    let freed = free_blobs(&*store, &blobs, digests).await;
                    if let Err(e) = &freed {
                        warn!(error = %e, "deleting the outputs of deleted runs failed");
                    }
                    let (blob_count, bytes) = freed.unwrap_or_default();
                    info!(
                        runs = deleted.len(),
                        blobs = blob_count,
                        bytes,
                        "run retention deleted runs"
                    );
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "run retention failed"),
            }
        }
        let now = clock.now_ms();
        if let Err(e) = collect_garbage(&*store, &blobs, policy, now, BLOB_GRACE).await {
            tracing::warn!(error = %e, "artifact retention failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = clock.sleep(RETENTION_INTERVAL) => {}
        }
    }
}

/// Where the sled store lives inside a data dir (bundles live beside it).
pub fn store_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("store")
}

/// Serves the scheduler on `listener` until `shutdown` fires.
pub async fn serve(
    config: &SchedulerConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    Scheduler::start(config, listener, shutdown)
        .await?
        .wait()
        .await
}

/// The config file's `http:` (an address or `off`).
fn http_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    parse_http_addr(&text).map_err(serde::de::Error::custom)
}

/// Durations in config files as humantime strings (`5s`, `30s`, `2m`).
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration ({e}); write e.g. 5s or 2m"
            ))
        })
    }

    /// The same for an optional duration (`keep_runs: 30d`).
    pub(super) mod option {
        use std::time::Duration;

        use serde::Deserializer;

        pub(in super::super) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}
