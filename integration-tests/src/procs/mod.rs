//! A cluster of real `vishwa` processes, for the process-level tests: a scheduler and workers
//! as child processes that can be killed (SIGKILL), stopped (SIGTERM) and restarted, the CLI
//! to drive them, Docker to look at their containers and the sled store to look at what they
//! wrote.
//!
//! Every name a cluster creates (DAGs, workers) carries a suffix unique to it, so tests
//! running in parallel never touch each other's containers. Dropping the cluster kills every
//! child it started, removes every container of its runs and workers, and, when the test
//! failed, prints the tail of every process's log and keeps its folder.
//!
//! The methods are split by what they drive: [`scheduler`](self::scheduler) and
//! [`workers`](self::workers) the processes, [`client`](self::client) the CLI and runs,
//! [`inspect`](self::inspect) Docker and the store.

mod client;
mod inspect;
mod scheduler;
mod view;
mod workers;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tempfile::TempDir;

pub use self::view::{AttemptView, RetryView, RunView, StageView};
use crate::auth::write_cluster_tokens;
use crate::blocking::BlockingDocker;
use crate::containers::{run_labels, worker_labels};
use crate::names::{now_ms, unique_suffix};
use crate::net::free_addr;
use crate::poll::wait_until_blocking;
use crate::process::{self, vishwa_binary};

/// How long one CLI command may take.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);
/// How long a scheduler may take to start serving.
const START_LIMIT: Duration = Duration::from_secs(30);
/// Log lines of each process shown when a test fails.
const LOG_TAIL_LINES: usize = 120;

/// The seed of a test's random choices: `VISHWA_CRASH_SEED` when set, else from the clock.
/// Printed, so a failure can be replayed.
pub fn seed() -> u64 {
    let seed = std::env::var("VISHWA_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ms() as u64);
    eprintln!("random seed {seed} (replay with VISHWA_CRASH_SEED={seed})");
    seed
}

/// Checks `condition` every 100 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, condition: impl FnMut() -> bool) -> bool {
    wait_until_blocking(timeout, Duration::from_millis(100), condition)
}

/// Settings of a cluster's scheduler.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The `vishwa` binary the cluster runs [default: the one beside the test executable].
    pub vishwa: PathBuf,
    /// Address the scheduler listens on (port chosen free).
    pub listen_ip: IpAddr,
    pub heartbeat: Duration,
    pub lease: Duration,
    /// Require bearer tokens: the scheduler gets a tokens file, the CLI the admin token and
    /// workers the worker token. Always on for a non-loopback address, which the scheduler
    /// refuses to serve without tokens.
    pub tokens: bool,
    /// Serve TLS with these files; clients use `https://` and trust the CA.
    pub tls: Option<ClusterTls>,
}

/// PEM files of a TLS cluster.
#[derive(Debug, Clone)]
pub struct ClusterTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            vishwa: vishwa_binary(),
            listen_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            heartbeat: Duration::from_millis(500),
            lease: Duration::from_secs(3),
            tokens: false,
            tls: None,
        }
    }
}

/// A worker process and how it was started.
struct WorkerProc {
    child: Child,
    /// The command line, to start it again the same way.
    command: Vec<String>,
}

/// A scheduler, workers, and everything needed to clean up after them.
pub struct Cluster {
    /// Appended to every name this cluster creates.
    pub suffix: String,
    pub config: ClusterConfig,
    dir: TempDir,
    pub data: PathBuf,
    pub addr: SocketAddr,
    pub url: String,
    scheduler: Mutex<Option<Child>>,
    workers: Mutex<BTreeMap<String, WorkerProc>>,
    /// Every worker name ever started, for container clean-up.
    worker_names: Mutex<BTreeSet<String>>,
    runs: Mutex<BTreeSet<String>>,
    /// Children started with [`Cluster::spawn_cli`], killed on drop.
    clients: Mutex<Vec<Child>>,
    docker: BlockingDocker,
}

impl Cluster {
    /// A cluster with the default settings (scheduler on 127.0.0.1, heartbeat 500 ms, lease
    /// 3 s). Fails loudly when Docker or the test image is missing: these tests never skip.
    // Not `Default`: it connects to Docker and builds the test image.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Cluster {
        Cluster::with_config(ClusterConfig::default())
    }

    pub fn with_config(config: ClusterConfig) -> Cluster {
        let docker = BlockingDocker::connect();
        docker.ensure_busybox_image();
        let dir = tempfile::Builder::new()
            .prefix("vishwa-crash-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let data = dir.path().join("data");
        let addr = free_addr(config.listen_ip);
        let mut config = config;
        if !config.listen_ip.is_loopback() {
            config.tokens = true;
        }
        if config.tokens {
            write_cluster_tokens(&dir.path().join("tokens.yaml"));
        }
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        Cluster {
            suffix: unique_suffix(),
            url: format!("{scheme}://{addr}"),
            config,
            data,
            addr,
            dir,
            scheduler: Mutex::new(None),
            workers: Mutex::new(BTreeMap::new()),
            worker_names: Mutex::new(BTreeSet::new()),
            runs: Mutex::new(BTreeSet::new()),
            clients: Mutex::new(Vec::new()),
            docker,
        }
    }

    /// The cluster's temporary directory (logs, DAG files, the store).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `base` made unique to this cluster: for DAG and worker names.
    pub fn name(&self, base: &str) -> String {
        format!("{base}-{}", self.suffix)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
            eprintln!("(logs kept in {})", self.dir().display());
        }
        for child in lock(&self.clients).iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut child) = lock(&self.scheduler).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for worker in lock(&self.workers).values_mut() {
            let _ = worker.child.kill();
            let _ = worker.child.wait();
        }
        let runs: Vec<String> = lock(&self.runs).iter().cloned().collect();
        for run in runs {
            self.docker.remove_labelled(&run_labels(&run));
        }
        let workers: Vec<String> = lock(&self.worker_names).iter().cloned().collect();
        for worker in workers {
            self.docker
                .remove_labelled(&worker_labels(&self.worker_owner(&worker)));
        }
        if std::thread::panicking() {
            // Keep the logs and the store for a post-mortem.
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            let _ = dir.keep();
        }
    }
}

fn terminate(child: &mut Child, what: &str, limit: Duration) -> (ExitStatus, Duration) {
    process::terminate(child, what, limit)
}

fn humantime(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The run id in `vishwa trigger -o json`'s output.
pub fn run_id_of(json: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("vishwa trigger printed bad JSON ({e}):\n{json}"));
    value["run_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no run_id in {json}"))
        .to_owned()
}
