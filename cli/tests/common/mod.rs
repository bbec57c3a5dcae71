//! Helpers for the CLI's process-level tests: running `vishwa` with a deadline, the example
//! DAGs, the busybox test image, and a scheduler and worker as child processes.

#![allow(dead_code, unreachable_pub)] // each test binary uses a different part

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

/// How long one `vishwa` command may take before the test fails.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(90);

/// The `vishwa` binary under test.
pub const VISHWA: &str = env!("CARGO_BIN_EXE_vishwa");

/// The workspace's `dags/` folder.
pub fn dags_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dags")
}

/// A name no other test (in this or a concurrent test process) uses: `prefix-<suffix>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!(
        "{prefix}-{:x}{:x}{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// What a finished `vishwa` command printed and how it exited.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// The raw stdout, for output that need not be UTF-8.
    pub stdout_bytes: Vec<u8>,
}

impl Outcome {
    /// The exit code; panics if the process was killed by a signal.
    #[track_caller]
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("vishwa was killed by a signal: {self}"))
    }

    /// Panics, showing both streams, unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.status.code(),
            Some(code),
            "unexpected exit code: {self}"
        );
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

/// A `vishwa` command with no server or token from the environment.
pub fn vishwa_command(args: &[&str]) -> Command {
    let mut command = Command::new(VISHWA);
    command
        .args(args)
        .env_remove("VISHWA_SERVER")
        .env_remove("VISHWA_TOKEN")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    command
}

/// Runs `vishwa args...` to its end; fails the test if it takes longer than [`COMMAND_LIMIT`].
pub fn vishwa(args: &[&str]) -> Outcome {
    run_to_end(vishwa_command(args), COMMAND_LIMIT)
}

/// Runs `command` with its output in files (no pipe can fill up) and a deadline.
pub fn run_to_end(mut command: Command, limit: Duration) -> Outcome {
    let dir = tempfile::tempdir().expect("cannot create a temporary directory");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut child = command
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} did not finish within {limit:?}; stdout:\n{}\nstderr:\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default(),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout_bytes = std::fs::read(&out_path).unwrap();
    Outcome {
        status,
        stdout: String::from_utf8_lossy(&stdout_bytes).into_owned(),
        stderr: std::fs::read_to_string(&err_path).unwrap(),
        stdout_bytes,
    }
}

/// Checks `condition` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Builds the busybox test image if Docker does not have it (fails loudly without Docker).
pub fn ensure_busybox_image() -> String {
    block_on(async {
        let docker = vishwa_integration_tests::docker::connect_docker().await?;
        vishwa_integration_tests::images::ensure_busybox_image(&docker).await
    })
    .expect("the busybox test image is needed and Docker must be reachable")
}

/// Panics if any container labelled with `run_id` exists.
pub fn assert_no_containers_of_run(run_id: &str) {
    block_on(async {
        let docker = vishwa_integration_tests::docker::connect_docker()
            .await
            .expect("Docker must be reachable");
        vishwa_integration_tests::containers::assert_no_containers_of_run(&docker, run_id).await;
    });
}

/// Waits up to `timeout` until no container labelled with `run_id` exists.
pub fn wait_until_no_containers_of_run(run_id: &str, timeout: Duration) -> bool {
    block_on(async {
        let docker = vishwa_integration_tests::docker::connect_docker()
            .await
            .expect("Docker must be reachable");
        vishwa_integration_tests::containers::wait_until_no_containers_of_run(
            &docker, run_id, timeout,
        )
        .await
    })
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot start a runtime")
        .block_on(future)
}

/// Writes `text` to `dir/file` and returns the path as a string.
pub fn write_file(dir: &Path, file: &str, text: &str) -> String {
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// `vishwa scheduler` and `vishwa worker` as child processes, stopped (SIGTERM, then SIGKILL)
/// when dropped. Their logs are kept in the temporary directory for failure messages.
pub struct Servers {
    pub url: String,
    addr: SocketAddr,
    scheduler: Child,
    /// Schedulers started so far, to name their logs.
    schedulers_started: u32,
    /// Workers by name, oldest first.
    workers: Vec<(String, Child)>,
    dir: TempDir,
}

/// How long the servers get to come up.
const STARTUP_LIMIT: Duration = Duration::from_secs(20);

impl Servers {
    /// Starts a scheduler on a loopback port of its choosing (it binds port 0 and logs the
    /// address, so no other server can take the port first) over a temporary store, waits
    /// until it answers, then starts a worker `w1` with 2 slots that may run process stages.
    pub fn start() -> Servers {
        let dir = tempfile::Builder::new()
            .prefix("vishwa-cli-test-")
            .tempdir()
            .unwrap();
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        let (scheduler, addr) = start_scheduler(dir.path(), any_port, 1, &[])
            .unwrap_or_else(|log| panic!("vishwa scheduler did not start; its log:\n{log}"));
        let mut servers = Servers {
            url: format!("http://{addr}"),
            addr,
            scheduler,
            schedulers_started: 1,
            workers: Vec::new(),
            dir,
        };
        servers.start_worker("w1");
        servers
    }

    /// Kills the scheduler with SIGKILL (no chance to clean up) and waits until it is gone.
    pub fn kill_scheduler(&mut self) {
        let _ = self.scheduler.kill();
        let _ = self.scheduler.wait();
    }

    /// Starts a new scheduler on the same address over the same store.
    pub fn restart_scheduler(&mut self) {
        self.restart_scheduler_with(&[]);
    }

    /// Stops the scheduler (SIGTERM) and starts it again with `extra` flags, on the same
    /// address over the same store.
    pub fn restart_scheduler_with(&mut self, extra: &[&str]) {
        stop(&mut self.scheduler);
        self.schedulers_started += 1;
        match start_scheduler(self.dir.path(), self.addr, self.schedulers_started, extra) {
            Ok((scheduler, _)) => self.scheduler = scheduler,
            Err(log) => panic!("the scheduler did not start again; its log:\n{log}"),
        }
    }

    /// Starts another worker with 2 slots that may run process stages.
    pub fn start_worker(&mut self, name: &str) {
        let log = |suffix: &str| File::create(self.dir.path().join(format!("{name}.{suffix}")));
        let worker = vishwa_command(&[
            "worker",
            "--scheduler",
            &self.url,
            "--name",
            name,
            "--slots",
            "2",
            "--allow-process",
            // On SIGTERM, running stages get 2 s to finish before they are stopped.
            "--grace",
            "2s",
        ])
        .stdout(log("out").unwrap())
        .stderr(log("log").unwrap())
        .spawn()
        .expect("cannot start vishwa worker");
        self.workers.push((name.to_owned(), worker));
    }

    /// Stops a worker the way a service manager does (SIGTERM) and waits until it exited.
    pub fn stop_worker(&mut self, name: &str) -> ExitStatus {
        let index = self
            .workers
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no worker {name}"));
        let (_, mut worker) = self.workers.remove(index);
        stop(&mut worker);
        worker.wait().unwrap()
    }

    /// The scheduler's data dir (its store, bundles and artifact blobs).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The process id of the scheduler.
    pub fn scheduler_pid(&self) -> u32 {
        self.scheduler.id()
    }

    /// The process id of a worker.
    pub fn worker_pid(&self, name: &str) -> u32 {
        let (_, worker) = self
            .workers
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no worker {name}"));
        worker.id()
    }

    /// Runs a client verb against these servers.
    pub fn vishwa(&self, args: &[&str]) -> Outcome {
        let mut all = vec!["--server", self.url.as_str()];
        all.extend_from_slice(args);
        vishwa(&all)
    }

    /// Runs a client verb that must succeed; panics with the servers' logs otherwise.
    #[track_caller]
    pub fn vishwa_ok(&self, args: &[&str]) -> Outcome {
        let outcome = self.vishwa(args);
        assert_eq!(
            outcome.status.code(),
            Some(0),
            "vishwa {args:?} failed: {outcome}\n{}",
            self.logs()
        );
        outcome
    }

    /// The scheduler's and the workers' logs, for failure messages.
    pub fn logs(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let mut text = String::new();
        for n in 1..=self.schedulers_started {
            text.push_str(&format!(
                "--- scheduler {n} log ---\n{}\n",
                read(&format!("scheduler-{n}.log"))
            ));
        }
        for (name, _) in &self.workers {
            text.push_str(&format!(
                "\n--- {name} log ---\n{}",
                read(&format!("{name}.log"))
            ));
        }
        text
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        // The worker first, so it stops its containers while the scheduler still listens.
        for (_, worker) in &mut self.workers {
            stop(worker);
        }
        stop(&mut self.scheduler);
    }
}

/// Starts `vishwa scheduler` on `listen` over `dir/data` and waits until it says where it
/// listens and answers there; returns it with that address, or its log if it did not start.
fn start_scheduler(
    dir: &Path,
    listen: SocketAddr,
    n: u32,
    extra: &[&str],
) -> Result<(Child, SocketAddr), String> {
    let data = dir.join("data");
    let log = dir.join(format!("scheduler-{n}.log"));
    let listen = listen.to_string();
    let mut args = vec![
        "scheduler",
        "--listen",
        &listen,
        "--data",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut scheduler = vishwa_command(&args)
        .stdout(File::create(dir.join(format!("scheduler-{n}.out"))).unwrap())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .expect("cannot start vishwa scheduler");
    let mut exited = false;
    let mut addr = None;
    let answers = wait_until(STARTUP_LIMIT, || {
        exited = matches!(scheduler.try_wait(), Ok(Some(_)));
        addr = addr.or_else(|| listening_addr(&std::fs::read_to_string(&log).unwrap_or_default()));
        exited
            || addr.is_some_and(|addr| {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })
    });
    match addr {
        Some(addr) if answers && !exited => Ok((scheduler, addr)),
        _ => {
            stop(&mut scheduler);
            Err(std::fs::read_to_string(&log).unwrap_or_default())
        }
    }
}

/// The address in the scheduler's `scheduler listening addr=...` log line.
fn listening_addr(log: &str) -> Option<SocketAddr> {
    let (_, rest) = log.split_once("scheduler listening addr=")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Asks a child to stop with SIGTERM and kills it if it is still there after 10 s.
fn stop(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let stopped = wait_until(Duration::from_secs(10), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !stopped {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A `vishwa` command running in the background, its output in files.
pub struct Background {
    child: Child,
    _dir: TempDir,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Background {
    /// Starts `vishwa args...` without waiting for it.
    pub fn start(args: &[&str]) -> Background {
        let dir = tempfile::tempdir().unwrap();
        let stdout = dir.path().join("stdout");
        let stderr = dir.path().join("stderr");
        let child = vishwa_command(args)
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .expect("cannot start vishwa");
        Background {
            child,
            _dir: dir,
            stdout,
            stderr,
        }
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Sends it a signal (SIGINT for Ctrl-C).
    pub fn signal(&self, signal: Signal) {
        let pid = i32::try_from(self.child.id()).expect("pids fit in i32");
        kill(Pid::from_raw(pid), signal).expect("cannot signal vishwa");
    }

    /// Whether it has exited.
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits for it to exit; fails the test (and kills it) after `limit`.
    pub fn finish(mut self, limit: Duration) -> Outcome {
        let exited = wait_until(limit, || self.has_exited());
        if !exited {
            let _ = self.child.kill();
        }
        let status = self.child.wait().unwrap();
        let stdout_bytes = std::fs::read(&self.stdout).unwrap_or_default();
        let outcome = Outcome {
            status,
            stdout: String::from_utf8_lossy(&stdout_bytes).into_owned(),
            stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
            stdout_bytes,
        };
        assert!(exited, "vishwa did not exit within {limit:?}: {outcome}");
        outcome
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if !self.has_exited() {
            stop(&mut self.child);
        }
    }
}

/// How many containers labelled with `run_id` Docker reports as running.
pub fn running_containers_of_run(run_id: &str) -> usize {
    block_on(async {
        let docker = vishwa_integration_tests::docker::connect_docker()
            .await
            .expect("Docker must be reachable");
        vishwa_integration_tests::containers::running_containers_of_run(&docker, run_id)
            .await
            .map_or(0, |c| c.len())
    })
}
