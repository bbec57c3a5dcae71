//! A cluster of real `vishwa` processes for the crash tests: a scheduler and workers as child
//! processes that can be killed (SIGKILL), stopped (SIGTERM) and restarted, the CLI to drive
//! them, Docker to look at their containers and the sled store to look at what they wrote.
//!
//! Every name a cluster creates (DAGs, workers, network namespaces) carries a suffix unique to
//! it, so tests running in parallel never touch each other's containers. Dropping the cluster
//! kills every child it started, removes every container of its runs and workers, and, when
//! the test failed, prints the tail of every process's log.

#![allow(dead_code, unreachable_pub)] // each test binary uses a different part

pub mod dags;
pub mod invariants;
pub mod netns;
pub mod view;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::models::ContainerSummary;
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;
use vishwa_scheduler::store::SledStore;

pub use view::RunView;

/// Admin token of clusters that use tokens (see [`ClusterConfig::tokens`]).
pub const ADMIN_TOKEN: &str = "cluster-admin-token-0123456789";
/// Worker token of clusters that use tokens.
pub const WORKER_TOKEN: &str = "cluster-worker-token-0123456789";

/// The `vishwa` binary under test.
pub const VISHWA: &str = env!("CARGO_BIN_EXE_vishwa");
/// The busybox test image (built locally by the integration-tests crate).
pub const IMAGE: &str = vishwa_integration_tests::images::BUSYBOX_IMAGE;
/// How long one CLI command may take.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);
/// How long a scheduler may take to start serving.
const START_LIMIT: Duration = Duration::from_secs(30);
/// Log lines of each process shown when a test fails.
const LOG_TAIL_LINES: usize = 120;

/// A name no other cluster (in this or a concurrent test process) uses.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!(
        "{:x}{:x}{}",
        std::process::id() & 0xffff,
        nanos & 0xfffff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

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

/// Wall-clock time in milliseconds since the epoch, the unit of the scheduler's timestamps.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Checks `condition` every 100 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a finished CLI command printed and how it exited.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.status.success()
    }

    /// Panics, showing both streams, unless the command succeeded.
    pub fn expect_ok(self, what: &str) -> Outcome {
        assert!(self.ok(), "{what} failed: {self}");
        self
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Settings of a cluster's scheduler.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
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
    runtime: tokio::runtime::Runtime,
    docker: Docker,
}

impl Cluster {
    /// A cluster with the default settings (scheduler on 127.0.0.1, heartbeat 500 ms, lease
    /// 3 s). Fails loudly when Docker or the test image is missing: these tests never skip.
    pub fn new() -> Cluster {
        Cluster::with_config(ClusterConfig::default())
    }

    pub fn with_config(config: ClusterConfig) -> Cluster {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("cannot start a runtime");
        let docker = runtime.block_on(async {
            let docker = vishwa_integration_tests::docker::connect_docker()
                .await
                .expect("these tests need a reachable Docker engine; they never skip");
            vishwa_integration_tests::images::ensure_busybox_image(&docker)
                .await
                .expect("cannot build the busybox test image");
            docker
        });
        let dir = tempfile::Builder::new()
            .prefix("vishwa-crash-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let data = dir.path().join("data");
        let addr = free_address(config.listen_ip);
        let mut config = config;
        if !config.listen_ip.is_loopback() {
            config.tokens = true;
        }
        if config.tokens {
            std::fs::write(
                dir.path().join("tokens.yaml"),
                format!(
                    "- {{name: admin, role: admin, token: {ADMIN_TOKEN}}}\n\
                     - {{name: workers, role: worker, token: {WORKER_TOKEN}}}\n"
                ),
            )
            .expect("cannot write the tokens file");
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
            runtime,
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

    // ---- the scheduler ----

    /// Starts the scheduler on the cluster's address and data dir and waits until it serves.
    pub fn start_scheduler(&self) {
        self.spawn_scheduler();
        self.wait_scheduler_serving();
    }

    /// Starts the scheduler and returns at once (it may still be opening its store).
    pub fn spawn_scheduler(&self) {
        let mut slot = lock(&self.scheduler);
        assert!(slot.is_none(), "the scheduler is already running");
        let log = self.log_file("scheduler");
        let child = Command::new(VISHWA)
            .args(self.scheduler_args())
            .env_remove("VISHWA_TOKENS")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start vishwa scheduler");
        *slot = Some(child);
    }

    /// The arguments every scheduler of a cluster starts with: its address, store and
    /// timings. The one place to add what a scheduler needs to listen beyond loopback.
    pub fn scheduler_args(&self) -> Vec<String> {
        let mut args = vec![
            "scheduler".to_owned(),
            "--listen".to_owned(),
            self.addr.to_string(),
            "--data".to_owned(),
            self.data.display().to_string(),
            "--heartbeat".to_owned(),
            humantime(self.config.heartbeat),
            "--lease".to_owned(),
            humantime(self.config.lease),
        ];
        if self.config.tokens {
            args.push("--tokens".to_owned());
            args.push(self.dir().join("tokens.yaml").display().to_string());
        }
        if let Some(tls) = &self.config.tls {
            args.push("--tls-cert".to_owned());
            args.push(tls.cert.display().to_string());
            args.push("--tls-key".to_owned());
            args.push(tls.key.display().to_string());
        }
        args
    }

    /// Waits until the scheduler answers a client call.
    pub fn wait_scheduler_serving(&self) {
        let started = Instant::now();
        loop {
            if self.try_vishwa(&["dags", "-o", "json"]).ok() {
                return;
            }
            if let Some(status) = lock(&self.scheduler)
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("the scheduler exited while starting: {status}");
            }
            assert!(
                started.elapsed() < START_LIMIT,
                "the scheduler did not serve within {START_LIMIT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the scheduler with SIGKILL and reaps it; returns the time of the kill.
    pub fn kill_scheduler(&self) -> i64 {
        let mut child = lock(&self.scheduler)
            .take()
            .expect("the scheduler is not running");
        if let Some(status) = child.try_wait().expect("cannot poll the scheduler") {
            panic!("the scheduler exited on its own ({status}) before it was killed");
        }
        let at = now_ms();
        child.kill().expect("cannot kill the scheduler");
        child.wait().expect("cannot reap the scheduler");
        at
    }

    /// Whether the scheduler process is up (it may have exited on its own).
    pub fn scheduler_running(&self) -> bool {
        let mut slot = lock(&self.scheduler);
        match slot.as_mut() {
            Some(child) => child.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    /// Waits up to `limit` for the scheduler to exit on its own; reaps it and returns its
    /// exit status, or None (still running) after `limit`.
    pub fn wait_scheduler_exit(&self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            {
                let mut slot = lock(&self.scheduler);
                let child = slot.as_mut().expect("the scheduler is not running");
                if let Some(status) = child.try_wait().expect("cannot poll the scheduler") {
                    slot.take();
                    return Some(status);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM to the scheduler and waits up to `limit` for it to exit; returns its
    /// exit status and how long it took.
    pub fn term_scheduler(&self, limit: Duration) -> (ExitStatus, Duration) {
        let mut child = lock(&self.scheduler)
            .take()
            .expect("the scheduler is not running");
        terminate(&mut child, "the scheduler", limit)
    }

    // ---- workers ----

    /// Starts `vishwa worker --name NAME --slots N ARGS...` and waits until it registered.
    /// `name` is used as given (make it unique with [`Cluster::name`]).
    pub fn start_worker(&self, name: &str, slots: u32, args: &[&str]) {
        self.start_worker_in(None, name, slots, args);
    }

    /// Like [`Cluster::start_worker`], inside network namespace `netns` when given.
    pub fn start_worker_in(&self, netns: Option<&str>, name: &str, slots: u32, args: &[&str]) {
        let mut command: Vec<String> = Vec::new();
        if let Some(ns) = netns {
            command.extend(["ip", "netns", "exec", ns].map(str::to_owned));
        }
        command.push(VISHWA.to_owned());
        command.extend(
            [
                "worker",
                "--scheduler",
                &self.url,
                "--name",
                name,
                "--slots",
                &slots.to_string(),
            ]
            .map(str::to_owned),
        );
        if self.config.tokens {
            command.extend(["--token".to_owned(), WORKER_TOKEN.to_owned()]);
        }
        if let Some(tls) = &self.config.tls {
            command.push("--tls-ca".to_owned());
            command.push(tls.ca.display().to_string());
        }
        command.extend(args.iter().map(|a| (*a).to_owned()));
        self.launch_worker(name, command);
    }

    /// Starts a worker that was killed or stopped again, with the same command line.
    pub fn restart_worker(&self, name: &str) {
        let command = {
            let workers = lock(&self.workers);
            let worker = workers.get(name).expect("no such worker");
            worker.command.clone()
        };
        self.launch_worker(name, command);
    }

    fn launch_worker(&self, name: &str, command: Vec<String>) {
        let before = self.registrations(name);
        let log = self.log_file(&format!("worker-{name}"));
        let child = Command::new(&command[0])
            .args(&command[1..])
            .env_remove("VISHWA_TOKEN")
            .env_remove("VISHWA_TLS_CA")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start worker {name}: {e}"));
        lock(&self.worker_names).insert(name.to_owned());
        let previous = lock(&self.workers).insert(
            name.to_owned(),
            WorkerProc {
                child,
                command: command.clone(),
            },
        );
        if let Some(mut old) = previous {
            assert!(
                old.child.try_wait().ok().flatten().is_some(),
                "worker {name} was started twice"
            );
        }
        self.wait_worker_registered(name, before);
    }

    /// Waits until worker `name` registered more often than `before` times.
    pub fn wait_worker_registered(&self, name: &str, before: usize) {
        let registered = wait_until(Duration::from_secs(30), || {
            self.registrations(name) > before
        });
        assert!(registered, "worker {name} did not register within 30s");
    }

    /// How often worker `name` registered with a scheduler, from its log.
    pub fn registrations(&self, name: &str) -> usize {
        self.worker_log(name)
            .matches("registered with the scheduler")
            .count()
    }

    /// Kills worker `name` with SIGKILL and reaps it; returns the time of the kill.
    pub fn kill_worker(&self, name: &str) -> i64 {
        let mut workers = lock(&self.workers);
        let worker = workers.get_mut(name).expect("no such worker");
        let at = now_ms();
        worker.child.kill().expect("cannot kill the worker");
        worker.child.wait().expect("cannot reap the worker");
        at
    }

    /// Sends SIGTERM to worker `name` (returns at once).
    pub fn signal_worker(&self, name: &str, signal: Signal) {
        let workers = lock(&self.workers);
        let worker = workers.get(name).expect("no such worker");
        kill(Pid::from_raw(worker.child.id() as i32), signal).expect("cannot signal the worker");
    }

    /// Waits up to `limit` for worker `name` to exit; None if it is still running.
    pub fn wait_worker_exit(&self, name: &str, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            {
                let mut workers = lock(&self.workers);
                let worker = workers.get_mut(name).expect("no such worker");
                if let Some(status) = worker.child.try_wait().expect("cannot poll the worker") {
                    return Some(status);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What worker `name` logged so far.
    pub fn worker_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir().join(format!("worker-{name}.log"))).unwrap_or_default()
    }

    /// What the scheduler logged so far.
    pub fn scheduler_log(&self) -> String {
        std::fs::read_to_string(self.dir().join("scheduler.log")).unwrap_or_default()
    }

    fn log_file(&self, name: &str) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join(format!("{name}.log")))
            .expect("cannot open a log file")
    }

    // ---- the CLI ----

    /// Runs `vishwa --server URL ARGS...` to its end.
    pub fn try_vishwa(&self, args: &[&str]) -> Outcome {
        let out = self.dir().join(format!("cli-{}.out", unique_suffix()));
        let err = out.with_extension("err");
        let mut child = self
            .cli_command(args)
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .expect("cannot start vishwa");
        let deadline = Instant::now() + COMMAND_LIMIT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("vishwa {args:?} did not finish within {COMMAND_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let outcome = Outcome {
            status,
            stdout: std::fs::read_to_string(&out).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err).unwrap_or_default(),
        };
        let _ = std::fs::remove_file(out);
        let _ = std::fs::remove_file(err);
        outcome
    }

    /// Runs `vishwa ARGS...` and panics unless it succeeds.
    pub fn vishwa(&self, args: &[&str]) -> Outcome {
        self.try_vishwa(args)
            .expect_ok(&format!("vishwa {}", args.join(" ")))
    }

    /// Starts `vishwa ARGS...` in the background with its output in `DIR/NAME.out` and
    /// `DIR/NAME.err`; it is killed when the cluster is dropped.
    pub fn spawn_cli(&self, name: &str, args: &[&str]) -> usize {
        let out = self.dir().join(format!("{name}.out"));
        let err = self.dir().join(format!("{name}.err"));
        let child = self
            .cli_command(args)
            .stdout(File::create(out).unwrap())
            .stderr(File::create(err).unwrap())
            .spawn()
            .expect("cannot start vishwa");
        let mut clients = lock(&self.clients);
        clients.push(child);
        clients.len() - 1
    }

    /// Waits up to `limit` for background client `index` to exit.
    pub fn wait_cli(&self, index: usize, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = lock(&self.clients)[index].try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What background client `name` printed on stdout and stderr so far.
    pub fn cli_output(&self, name: &str) -> (String, String) {
        let read = |ext: &str| {
            std::fs::read_to_string(self.dir().join(format!("{name}.{ext}"))).unwrap_or_default()
        };
        (read("out"), read("err"))
    }

    fn cli_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(VISHWA);
        command.args(["--server", &self.url]);
        if self.config.tokens {
            command.args(["--token", ADMIN_TOKEN]);
        }
        if let Some(tls) = &self.config.tls {
            command.arg("--tls-ca").arg(&tls.ca);
        }
        command
            .args(args)
            .env_remove("VISHWA_SERVER")
            .env_remove("VISHWA_TOKEN")
            .env_remove("VISHWA_TLS_CA")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        command
    }

    /// Runs `vishwa ARGS...` (as the cluster's admin) with `input` on stdin, to its end.
    pub fn vishwa_with_stdin(&self, args: &[&str], input: &[u8]) -> Outcome {
        use std::io::Write as _;
        let mut child = self
            .cli_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start vishwa");
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(input)
            .expect("cannot write to vishwa's stdin");
        let out = child.wait_with_output().expect("cannot wait for vishwa");
        Outcome {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Writes `yaml` to a file and submits it.
    pub fn submit(&self, file: &str, yaml: &str) {
        let path = self.dir().join(file);
        std::fs::write(&path, yaml).unwrap();
        self.vishwa(&["submit", path.to_str().unwrap()]);
    }

    /// Triggers a run of `dag` with `-p` overrides and returns its id.
    pub fn trigger(&self, dag: &str, params: &[&str]) -> String {
        let mut args = vec!["trigger", dag, "-o", "json"];
        for p in params {
            args.extend(["-p", p]);
        }
        let out = self.vishwa(&args);
        let run = run_id_of(&out.stdout);
        self.track_run(&run);
        run
    }

    /// Remembers a run whose containers must be removed when the cluster is dropped.
    pub fn track_run(&self, run: &str) {
        lock(&self.runs).insert(run.to_owned());
    }

    /// The run as `vishwa get RUN -o json` shows it, or None if the scheduler did not answer.
    pub fn try_get(&self, run: &str) -> Option<RunView> {
        let out = self.try_vishwa(&["get", run, "-o", "json"]);
        if !out.ok() {
            return None;
        }
        Some(
            serde_json::from_str(&out.stdout)
                .unwrap_or_else(|e| panic!("vishwa get printed bad JSON ({e}):\n{}", out.stdout)),
        )
    }

    /// The run as `vishwa get RUN -o json` shows it.
    pub fn get(&self, run: &str) -> RunView {
        self.try_get(run)
            .unwrap_or_else(|| panic!("vishwa get {run} failed"))
    }

    /// Polls the run until `condition` holds on it; panics after `limit`.
    pub fn wait_run(
        &self,
        run: &str,
        limit: Duration,
        what: &str,
        mut condition: impl FnMut(&RunView) -> bool,
    ) -> RunView {
        let deadline = Instant::now() + limit;
        let mut last = None;
        loop {
            if let Some(view) = self.try_get(run) {
                if condition(&view) {
                    return view;
                }
                last = Some(view);
            }
            if Instant::now() >= deadline {
                panic!(
                    "run {run}: {what} did not happen within {limit:?}; last seen:\n{}",
                    last.map(|v| v.summary()).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Polls the run until it ended; panics after `limit`.
    pub fn wait_run_final(&self, run: &str, limit: Duration) -> RunView {
        self.wait_run(run, limit, "the end of the run", RunView::is_final)
    }

    // ---- Docker ----

    /// Containers (running or not) carrying every label of `labels` (`key=value`).
    pub fn containers(&self, labels: &[String]) -> Vec<ContainerSummary> {
        let filters = HashMap::from([("label", labels.to_vec())]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        self.runtime
            .block_on(self.docker.list_containers(Some(options)))
            .expect("cannot list containers")
    }

    /// Containers of run `run`.
    pub fn containers_of_run(&self, run: &str) -> Vec<ContainerSummary> {
        self.containers(&["vishwa.managed=true".into(), format!("vishwa.run={run}")])
    }

    /// Containers of attempt `attempt`.
    pub fn containers_of_attempt(&self, attempt: &str) -> Vec<ContainerSummary> {
        self.containers(&[
            "vishwa.managed=true".into(),
            format!("vishwa.attempt={attempt}"),
        ])
    }

    /// Containers started by worker `worker`.
    pub fn containers_of_worker(&self, worker: &str) -> Vec<ContainerSummary> {
        self.containers(&[
            "vishwa.managed=true".into(),
            format!("vishwa.worker={worker}"),
        ])
    }

    /// Waits up to `limit` until no container of run `run` exists; returns whether none does.
    pub fn wait_no_containers_of_run(&self, run: &str, limit: Duration) -> bool {
        wait_until(limit, || self.containers_of_run(run).is_empty())
    }

    fn remove_containers(&self, containers: Vec<ContainerSummary>) {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        for c in containers {
            if let Some(id) = c.id {
                let _ = self
                    .runtime
                    .block_on(self.docker.remove_container(&id, Some(options.clone())));
            }
        }
    }

    // ---- the store ----

    /// Opens the scheduler's sled store (only while the scheduler is down), lets `read` look
    /// at it, and closes it again, waiting until sled let go of its lock: sled closes its
    /// files from background threads a moment after the store is dropped, and a scheduler
    /// started before that cannot open the store.
    pub fn with_store<T>(&self, read: impl FnOnce(&SledStore) -> T) -> T {
        assert!(
            !self.scheduler_running(),
            "the store can only be opened while the scheduler is down"
        );
        let store_dir = vishwa_scheduler::server::store_dir(&self.data);
        let store = SledStore::open(&store_dir)
            .unwrap_or_else(|e| panic!("the store does not open after a crash: {e}"));
        let result = read(&store);
        drop(store);
        let lock = store_dir.join("db");
        let released = wait_until(Duration::from_secs(10), || {
            File::open(&lock)
                .is_ok_and(|file| Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok())
        });
        assert!(
            released,
            "sled did not release {} when closed",
            lock.display()
        );
        result
    }

    fn print_logs(&self) {
        let mut names = vec!["scheduler".to_owned()];
        names.extend(
            lock(&self.worker_names)
                .iter()
                .map(|n| format!("worker-{n}")),
        );
        for name in names {
            let text =
                std::fs::read_to_string(self.dir().join(format!("{name}.log"))).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            eprintln!(
                "===== {name}.log (last {} of {} lines) =====\n{}",
                tail.len(),
                lines.len(),
                tail.join("\n")
            );
        }
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
            let containers = self.containers_of_run(&run);
            self.remove_containers(containers);
        }
        let workers: Vec<String> = lock(&self.worker_names).iter().cloned().collect();
        for worker in workers {
            let containers = self.containers_of_worker(&worker);
            self.remove_containers(containers);
        }
        if std::thread::panicking() {
            // Keep the logs and the store for a post-mortem.
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            let _ = dir.keep();
        }
    }
}

/// Sends SIGTERM to `child` and waits up to `limit` for it; SIGKILL and panic past it.
fn terminate(child: &mut Child, what: &str, limit: Duration) -> (ExitStatus, Duration) {
    let started = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("cannot send SIGTERM");
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, started.elapsed());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A port free right now on `ip`.
fn free_address(ip: IpAddr) -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0))
        .unwrap_or_else(|e| panic!("cannot bind a port on {ip}: {e}"));
    listener.local_addr().unwrap()
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

/// Fails loudly unless `ip` can manage network namespaces here (root, iproute2).
pub fn require_ip_tool() {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap_or_else(|e| {
            panic!("the partition test needs iproute2's `ip` (apt-get install iproute2): {e}")
        });
    assert!(
        out.status.success(),
        "`ip netns list` failed (the partition test needs root or CAP_NET_ADMIN): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
