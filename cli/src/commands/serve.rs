//! Long-running verbs: `vishwa scheduler`, `vishwa worker` and `vishwa dev`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::Args;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vishwa_proto::v1 as pb;
use vishwa_scheduler::http::DEFAULT_HTTP_ADDR;
use vishwa_scheduler::{Listeners, Scheduler, SchedulerConfig};
use vishwa_worker::executor::Executor;
use vishwa_worker::executor::docker::DockerExecutor;
use vishwa_worker::executor::process::ProcessExecutor;
use vishwa_worker::{Capacity, Executors, WorkerConfig, run_worker};

use crate::client::Client;
use crate::exit;
use crate::load::{Invalid, load_dag};

#[derive(Debug, Args)]
pub(crate) struct SchedulerArgs {
    #[command(flatten)]
    pub(crate) log: super::LogArgs,
    /// Address to listen on [default: 127.0.0.1:7070].
    #[arg(long, env = "VISHWA_LISTEN")]
    listen: Option<SocketAddr>,
    /// Address of the HTTP port (health probes, metrics, console), or `off`
    /// [default: 127.0.0.1:7071].
    #[arg(long, env = "VISHWA_HTTP", value_name = "ADDR|off", value_parser = parse_http_flag)]
    http: Option<HttpFlag>,
    /// Directory of the store [default: vishwa-data].
    #[arg(long, env = "VISHWA_DATA")]
    data: Option<PathBuf>,
    /// Where the state is kept: sled:DIR or postgres://USER[:PASSWORD]@HOST:PORT/DB
    /// [default: the sled store in the data dir].
    #[arg(
        long,
        env = "VISHWA_STORE",
        value_name = "STORE",
        hide_env_values = true
    )]
    store: Option<vishwa_scheduler::store::StoreLocation>,
    /// YAML config file (fields: listen, http, data_dir, store, heartbeat_interval, lease, schedules, tokens, tls_cert, tls_key, secret_key_file).
    #[arg(long)]
    config: Option<PathBuf>,
    /// How often workers heartbeat [default: 5s].
    #[arg(long, value_parser = parse_duration)]
    heartbeat: Option<Duration>,
    /// How long a silent worker keeps its stages before they run elsewhere [default: 30s].
    #[arg(long, value_parser = parse_duration)]
    lease: Option<Duration>,
    /// Stages running at once over all workers [default: no limit beyond the workers' slots].
    #[arg(long)]
    max_parallel_stages: Option<u32>,
    /// Bearer tokens with roles (YAML list of {name, role, token | sha256}); without it only
    /// loopback addresses are served.
    #[arg(long, env = "VISHWA_TOKENS", value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// Serve TLS with this PEM certificate (chain); needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Key that encrypts secrets at rest [default: secret.key in the data dir, created 0600].
    #[arg(long, value_name = "FILE")]
    secret_key_file: Option<PathBuf>,
    /// Where stage outputs are kept: file:DIR, or s3://BUCKET/PREFIX with AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION and AWS_ENDPOINT_URL (workers then upload and
    /// download through presigned URLs) [default: artifacts/ in the data dir].
    #[arg(
        long,
        env = "VISHWA_ARTIFACTS",
        value_name = "file:DIR|s3://BUCKET/PREFIX"
    )]
    artifacts: Option<vishwa_scheduler::artifacts::ArtifactsAt>,
    /// Largest stage output accepted, in bytes [default: 8 GiB].
    #[arg(long)]
    max_artifact_bytes: Option<u64>,
    /// Delete the outputs of runs that finished more than DAYS days ago [default: keep].
    #[arg(long, value_name = "DAYS")]
    artifact_retention: Option<u64>,
    /// Keep the outputs of only the newest N finished runs of each DAG [default: all].
    #[arg(long, value_name = "N")]
    artifact_retention_runs: Option<u32>,
    /// Delete finished runs (with their logs and the outputs no other run uses) that ended
    /// longer ago than AGE, e.g. 30d; checked at start and hourly [default: keep].
    #[arg(long, value_name = "AGE", value_parser = crate::parse_age)]
    keep_runs: Option<Duration>,
    /// Keep only the newest N finished runs of each DAG, deleting older ones [default: all].
    #[arg(long, value_name = "N")]
    keep_runs_per_dag: Option<u32>,
    /// Output kept per stage attempt, in bytes: its first and last halves, with a line saying
    /// what was dropped between [default: 100 MiB].
    #[arg(long, value_name = "BYTES")]
    max_log_bytes: Option<u64>,
}

/// `--http`'s value: an address, or `off` (`None`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpFlag(pub(crate) Option<SocketAddr>);

pub(crate) fn parse_http_flag(text: &str) -> Result<HttpFlag, String> {
    vishwa_scheduler::http::parse_http_addr(text).map(HttpFlag)
}

/// The HTTP port of `vishwa dev` and `vishwa run`: the address asked for (failing when it is
/// taken), `off`, or by default 127.0.0.1:7071, and when that is taken (another scheduler on
/// this host) any free loopback port, with a note.
pub(crate) async fn bind_local_http(flag: Option<HttpFlag>) -> Result<Option<TcpListener>> {
    match flag {
        Some(HttpFlag(None)) => Ok(None),
        Some(HttpFlag(Some(addr))) => Ok(Some(bind_http(addr).await?)),
        None => match TcpListener::bind(DEFAULT_HTTP_ADDR).await {
            Ok(listener) => Ok(Some(listener)),
            Err(e) => {
                let listener = bind_http(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
                eprintln!(
                    "note: the HTTP port {DEFAULT_HTTP_ADDR} is taken ({e}); using {} instead \
                     (choose one with --http ADDR)",
                    listener.local_addr()?
                );
                Ok(Some(listener))
            }
        },
    }
}

async fn bind_http(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot serve HTTP on {addr}; pass --http ADDR with a free port, or --http off")
    })
}

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e}; write e.g. 5s, 30s or 2m"))
}

#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    #[command(flatten)]
    pub(crate) log: super::LogArgs,
    /// The scheduler's URL.
    #[arg(
        long,
        env = "VISHWA_SCHEDULER",
        default_value = "http://127.0.0.1:7070"
    )]
    scheduler: String,
    /// Stages run at once [default: number of CPUs].
    #[arg(long)]
    slots: Option<u32>,
    /// A label stages can select this worker by, `key=value`; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// This worker's name [default: the host name].
    #[arg(long)]
    name: Option<String>,
    /// Run `executor: process` stages as local processes on this host.
    #[arg(long)]
    allow_process: bool,
    /// A host path stages may mount (with what lies below it); repeatable.
    #[arg(long = "allow-mount", value_name = "PATH")]
    allow_mounts: Vec<PathBuf>,
    /// On SIGTERM or SIGINT the worker takes nothing new; this is how long running stages
    /// may go on before they are stopped and reported (`--grace` is the old name).
    #[arg(long = "drain-timeout", alias = "grace", value_parser = parse_duration, default_value = "30s")]
    grace: Duration,
    /// Where fetched DAG bundles are kept [default: a folder in the system's temp dir].
    #[arg(long)]
    cache: Option<PathBuf>,
    /// CPUs offered to stages [default: this host's].
    #[arg(long)]
    cpus: Option<f64>,
    /// Memory offered to stages, e.g. 16Gi [default: this host's].
    #[arg(long, value_parser = parse_memory_flag)]
    memory: Option<u64>,
    /// GPU device ids offered to stages, e.g. 0,1; `none` for none [default: detected].
    #[arg(long, value_delimiter = ',')]
    gpus: Option<Vec<String>>,
    /// Bearer token with the worker role, sent with every call.
    #[arg(long, env = "VISHWA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) to trust for an https:// scheduler [default: the system's roots].
    #[arg(long, env = "VISHWA_TLS_CA", value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// Serve this worker's Prometheus metrics on `http://ADDR/metrics` (no token asked:
    /// bind where only your Prometheus reaches) [default: not served].
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
}

fn parse_memory_flag(text: &str) -> Result<u64, String> {
    vishwa_scheduler::dag::parse_memory(text)
        .ok_or_else(|| format!("`{text}` is not a memory size; write e.g. 16Gi, 512Mi or 8G"))
}

/// This host's capacity, with what the flags say instead.
fn capacity(cpus: Option<f64>, memory: Option<u64>, gpus: Option<Vec<String>>) -> Capacity {
    let mut capacity = Capacity::detect();
    if let Some(cpus) = cpus {
        capacity.cpus = cpus;
    }
    if let Some(memory) = memory {
        capacity.memory_bytes = memory;
    }
    if let Some(gpus) = gpus {
        capacity.gpus = gpus
            .into_iter()
            .map(|g| g.trim().to_owned())
            .filter(|g| !g.is_empty() && g != "none")
            .collect();
    }
    capacity
}

#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    #[command(flatten)]
    pub(crate) log: super::LogArgs,
    /// Folder of DAGs (YAML files, or folders holding dag.yaml); reloaded when they change.
    #[arg(long, default_value = "dags")]
    dags: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Address of the HTTP port (health probes, metrics, console), or `off` [default:
    /// 127.0.0.1:7071, or a free port when that is taken].
    #[arg(long, env = "VISHWA_HTTP", value_name = "ADDR|off", value_parser = parse_http_flag)]
    http: Option<HttpFlag>,
    /// Directory of the store [default: a temporary one].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Stages run at once [default: number of CPUs].
    #[arg(long)]
    slots: Option<u32>,
    /// A host path stages may mount (with what lies below it); repeatable.
    #[arg(long = "allow-mount", value_name = "PATH")]
    allow_mounts: Vec<PathBuf>,
}

/// SIGINT and SIGTERM, as one stream: CI systems and `timeout` send SIGTERM where a person
/// presses Ctrl-C, and both mean the same.
pub(crate) struct Interrupts {
    term: Option<tokio::signal::unix::Signal>,
}

impl Interrupts {
    /// Starts listening; without a SIGTERM handler only SIGINT is heard (and that is logged).
    pub(crate) fn listen() -> Interrupts {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| warn!(error = %e, "cannot listen for SIGTERM"))
            .ok();
        Interrupts { term }
    }

    /// Waits for the next SIGINT or SIGTERM.
    pub(crate) async fn next(&mut self) {
        match &mut self.term {
            Some(term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// Cancels the returned token on SIGINT or SIGTERM.
pub(crate) fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    let mut interrupts = Interrupts::listen();
    tokio::spawn(async move {
        interrupts.next().await;
        info!("shutting down");
        cancel.cancel();
    });
    token
}

/// How long the scheduler may take to stop once asked (a signal, a failed store): the grace
/// for in-flight calls and the engine's last turn, well within `docker stop`'s 10 s.
const HARD_STOP: Duration = Duration::from_secs(9);

/// Exits the process, whatever state it is in, if it has not stopped [`HARD_STOP`] after
/// shutdown began or at once on a second SIGINT/SIGTERM: a stop must never wait for SIGKILL.
async fn exit_if_stopping_hangs(shutdown: CancellationToken) {
    shutdown.cancelled().await;
    let second_signal = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                match term.as_mut() {
                    Some(t) => { t.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    };
    tokio::select! {
        _ = tokio::time::sleep(HARD_STOP) => {
            eprintln!("error: the scheduler did not stop within {HARD_STOP:?}; exiting without waiting");
        }
        _ = second_signal => {
            eprintln!("error: a second signal: exiting without waiting");
        }
    }
    std::process::exit(i32::from(exit::FAILED));
}

fn load_config(args: &SchedulerArgs) -> Result<SchedulerConfig> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config {}", path.display()))?;
            serde_saphyr::from_str::<SchedulerConfig>(&text).map_err(|e| {
                Invalid(format!("{}: error: {e}\n  help: the config file takes listen, http, data_dir, store, heartbeat_interval, lease, schedules, max_bundle_bytes, max_parallel_stages, tokens, tls_cert, tls_key and secret_key_file", path.display()))
            })?
        }
        None => SchedulerConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(HttpFlag(http)) = args.http {
        config.http = http;
    }
    if let Some(data) = &args.data {
        config.data_dir = data.clone();
    }
    if let Some(store) = &args.store {
        config.store = Some(store.clone());
    }
    if let Some(heartbeat) = args.heartbeat {
        config.heartbeat_interval = heartbeat;
    }
    if let Some(lease) = args.lease {
        config.lease = lease;
    }
    if let Some(max) = args.max_parallel_stages {
        config.max_parallel_stages = max;
    }
    if let Some(tokens) = &args.tokens {
        config.tokens = Some(tokens.clone());
    }
    if let Some(cert) = &args.tls_cert {
        config.tls_cert = Some(cert.clone());
    }
    if let Some(key) = &args.tls_key {
        config.tls_key = Some(key.clone());
    }
    if let Some(key) = &args.secret_key_file {
        config.secret_key_file = Some(key.clone());
    }
    if let Some(at) = &args.artifacts {
        config.artifacts = at.clone();
    }
    if let Some(max) = args.max_artifact_bytes {
        config.max_artifact_bytes = max;
    }
    if let Some(days) = args.artifact_retention {
        config.artifact_retention_days = Some(days);
    }
    if let Some(runs) = args.artifact_retention_runs {
        config.artifact_retention_runs = Some(runs);
    }
    if let Some(age) = args.keep_runs {
        config.keep_runs = Some(age);
    }
    if let Some(n) = args.keep_runs_per_dag {
        config.keep_runs_per_dag = Some(n);
    }
    if let Some(max) = args.max_log_bytes {
        if max < 1024 {
            return Err(Invalid(format!(
                "error: --max-log-bytes {max} is too small to keep anything useful\n  help: give at least 1024 (bytes); the default is 104857600 (100 MiB)"
            ))
            .into());
        }
        config.max_log_bytes = max;
    }
    if config.lease <= config.heartbeat_interval {
        return Err(Invalid(format!(
            "error: the lease ({}) must be longer than the heartbeat interval ({})\n  help: a worker heartbeats several times per lease; e.g. --heartbeat 5s --lease 30s",
            humantime::format_duration(config.lease),
            humantime::format_duration(config.heartbeat_interval)
        ))
        .into());
    }
    Ok(config)
}

async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

pub(crate) async fn scheduler(args: SchedulerArgs) -> Result<u8> {
    let config = load_config(&args)?;
    let listener = bind(config.listen).await?;
    let shutdown = shutdown_on_signals();
    tokio::spawn(exit_if_stopping_hangs(shutdown.clone()));
    info!(data = %config.data_dir.display(), "starting");
    let scheduler = Scheduler::start(&config, listener, shutdown).await?;
    let scheme = if config.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let format = args.log.log_format;
    if let Some(url) = scheduler.http_url() {
        note(
            format,
            &format!("vishwa scheduler: HTTP on {url} (the console; /healthz, /readyz, /metrics)"),
        );
    }
    if config.tokens.is_none() {
        note(
            format,
            &format!(
                "vishwa scheduler on {scheme}://{}: no tokens file, so it is open to local users \
                 only (loopback); pass --tokens FILE to serve other machines",
                config.listen
            ),
        );
    }
    scheduler.wait().await?;
    Ok(exit::OK)
}

/// A note for the operator on stderr: a plain line, or with `--log-format json` a log event
/// (so every line of the log stays one JSON object).
pub(crate) fn note(format: super::LogFormat, text: &str) {
    match format {
        super::LogFormat::Text => eprintln!("{text}"),
        super::LogFormat::Json => info!("{text}"),
    }
}

/// The executors of a worker on this host.
pub(crate) async fn local_executors(allow_process: bool, need_docker: bool) -> Executors {
    let docker: Option<Arc<dyn Executor>> = if need_docker {
        match DockerExecutor::connect().await {
            Ok(d) => Some(Arc::new(d)),
            Err(e) => {
                warn!(error = %e, "Docker is not reachable; Docker stages will fail");
                None
            }
        }
    } else {
        None
    };
    let process: Option<Arc<dyn Executor>> =
        allow_process.then(|| Arc::new(ProcessExecutor::new()) as Arc<dyn Executor>);
    Executors { docker, process }
}

pub(crate) fn default_slots() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(2)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "worker".to_owned())
}

fn parse_labels(raw: &[String]) -> Result<BTreeMap<String, String>> {
    raw.iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| {
                    Invalid(format!(
                        "error: --label `{l}` has no `=`\n  help: write labels as --label key=value"
                    ))
                    .into()
                })
        })
        .collect()
}

pub(crate) async fn worker(args: WorkerArgs) -> Result<u8> {
    let name = args.name.unwrap_or_else(host_name);
    let cache_dir = args
        .cache
        .unwrap_or_else(|| std::env::temp_dir().join(format!("vishwa-worker-{name}")));
    let config = WorkerConfig {
        scheduler: args.scheduler,
        name,
        cache_dir,
        capacity: capacity(args.cpus, args.memory, args.gpus),
        slots: args.slots.unwrap_or_else(default_slots),
        labels: parse_labels(&args.labels)?,
        allow_process: args.allow_process,
        allow_mounts: args.allow_mounts,
        grace: args.grace,
        token: args.token,
        tls_ca: args.tls_ca,
    };
    let executors = local_executors(config.allow_process, true).await;
    let shutdown = shutdown_on_signals();
    if let Some(addr) = args.metrics {
        let listener = TcpListener::bind(addr).await.with_context(|| {
            format!("cannot serve metrics on {addr}; pass --metrics ADDR with a free port")
        })?;
        note(
            args.log.log_format,
            &format!(
                "vishwa worker: metrics on http://{}/metrics",
                listener.local_addr()?
            ),
        );
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = vishwa_worker::metrics::serve(listener, stop).await {
                warn!(error = %e, "serving worker metrics failed");
            }
        });
    }
    run_worker(config, executors, shutdown).await?;
    Ok(exit::OK)
}

pub(crate) async fn dev(args: DevArgs) -> Result<u8> {
    if !args.dags.is_dir() {
        return Err(anyhow!(
            "--dags {} is not a folder; point it at a folder of DAG files",
            args.dags.display()
        ));
    }
    let temp;
    let data_dir = match args.data {
        Some(d) => d,
        None => {
            temp = tempfile::tempdir().context("cannot create a temporary data dir")?;
            temp.path().to_path_buf()
        }
    };
    let config = SchedulerConfig {
        listen: args.listen,
        data_dir,
        ..SchedulerConfig::default()
    };
    let listener = bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let http = bind_local_http(args.http).await?;
    let shutdown = shutdown_on_signals();
    let config = SchedulerConfig {
        http: None,
        ..config
    };
    let listeners = Listeners {
        grpc: listener,
        http,
    };
    let scheduler = Scheduler::start_on(&config, None, listeners, shutdown.clone()).await?;
    let url = format!("http://{addr}");
    let worker_config = WorkerConfig {
        scheduler: url.clone(),
        name: "local".to_owned(),
        slots: args.slots.unwrap_or_else(default_slots),
        labels: BTreeMap::new(),
        allow_process: true,
        allow_mounts: args.allow_mounts,
        grace: Duration::from_secs(5),
        cache_dir: config.data_dir.join("worker-cache"),
        capacity: Capacity::detect(),
        token: None,
        tls_ca: None,
    };
    let executors = local_executors(true, true).await;
    let worker = tokio::spawn(run_worker(worker_config, executors, shutdown.clone()));
    outln!(
        "vishwa dev: scheduler on {url}, one local worker, DAGs from {}",
        args.dags.display()
    );
    if let Some(http) = scheduler.http_url() {
        outln!("console on {http} (and /healthz, /readyz, /metrics)");
    }
    outln!(
        "data in {}; try `vishwa dags` and `vishwa trigger NAME --watch`",
        config.data_dir.display()
    );
    let mut client = Client::connect(&url, None).await?;
    let mut seen: BTreeMap<PathBuf, String> = BTreeMap::new();
    loop {
        load_dags_folder(&mut client, &args.dags, &mut seen).await;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
    let _ = worker.await;
    scheduler.wait().await?;
    Ok(exit::OK)
}

/// Submits every DAG in `dir` whose text changed since the last look.
async fn load_dags_folder(client: &mut Client, dir: &Path, seen: &mut BTreeMap<PathBuf, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            (p.is_dir() && p.join("dag.yaml").is_file())
                || p.extension().is_some_and(|e| e == "yaml" || e == "yml")
        })
        .collect();
    paths.sort();
    for path in paths {
        let text_path = if path.is_dir() {
            path.join("dag.yaml")
        } else {
            path.clone()
        };
        let Ok(text) = std::fs::read_to_string(&text_path) else {
            continue;
        };
        if seen.get(&path) == Some(&text) {
            continue;
        }
        seen.insert(path.clone(), text);
        match load_dag(&path) {
            Ok((_, file)) => {
                let request = pb::SubmitDagRequest {
                    file_name: file.file_name,
                    source: file.source,
                    local_dir: file
                        .dir
                        .map(|d| d.display().to_string())
                        .unwrap_or_default(),
                    bundle_digest: String::new(),
                };
                match client.submit(request).await {
                    Ok(r) => {
                        let dag = r.dag.unwrap_or_default();
                        if r.changed {
                            outln!("loaded {} from {}", dag.name, path.display());
                        }
                    }
                    Err(e) => eprintln!("error: {}: {e:#}", path.display()),
                }
            }
            Err(e) => match e.downcast_ref::<Invalid>() {
                Some(invalid) => eprintln!("{}", invalid.0.trim_end()),
                None => eprintln!("error: {e:#}"),
            },
        }
    }
}
