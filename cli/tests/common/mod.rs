//! Helpers for the CLI's process-level tests: running `vishwa` with a deadline, the example
//! DAGs, the busybox test image, and a scheduler and worker as child processes.

#![allow(dead_code, unreachable_pub)] // each test binary uses a different part

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use nix::sys::signal::Signal;
use tempfile::TempDir;
use vishwa_integration_tests::blocking::{BlockingDocker, block_on};
use vishwa_integration_tests::containers;
use vishwa_integration_tests::docker::connect_docker;
pub use vishwa_integration_tests::process::{Outcome, run_to_end};
use vishwa_integration_tests::procs::{Cluster, ClusterConfig};
use vishwa_integration_tests::{names, poll, process};
use vishwa_scheduler::SchedulerConfig;

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
    names::unique_name(prefix)
}

/// A `vishwa` command with no server or token from the environment.
pub fn vishwa_command(args: &[&str]) -> Command {
    process::vishwa_command(Path::new(VISHWA), args)
}

/// Runs `vishwa args...` to its end; fails the test if it takes longer than [`COMMAND_LIMIT`].
pub fn vishwa(args: &[&str]) -> Outcome {
    run_to_end(vishwa_command(args), COMMAND_LIMIT)
}

/// Checks `condition` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, condition: impl FnMut() -> bool) -> bool {
    poll::wait_until_blocking(timeout, Duration::from_millis(50), condition)
}

/// Builds the busybox test image if Docker does not have it (fails loudly without Docker).
pub fn ensure_busybox_image() -> String {
    BlockingDocker::connect().ensure_busybox_image()
}

/// Panics if any container labelled with `run_id` exists.
pub fn assert_no_containers_of_run(run_id: &str) {
    block_on(async {
        let docker = connect_docker().await.expect("Docker must be reachable");
        containers::assert_no_containers_of_run(&docker, run_id).await;
    });
}

/// Waits up to `timeout` until no container labelled with `run_id` exists.
pub fn wait_until_no_containers_of_run(run_id: &str, timeout: Duration) -> bool {
    block_on(async {
        let docker = connect_docker().await.expect("Docker must be reachable");
        containers::wait_until_no_containers_of_run(&docker, run_id, timeout).await
    })
}

/// Writes `text` to `dir/file` and returns the path as a string.
pub fn write_file(dir: &Path, file: &str, text: &str) -> String {
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// `vishwa scheduler` and `vishwa worker` as child processes: the shared harness's process
/// cluster ([`vishwa_integration_tests::procs::Cluster`]) with the scheduler's default
/// heartbeat and lease and one worker `w1`. Its logs are kept for failure messages.
pub struct Servers {
    pub url: String,
    cluster: Cluster,
}

impl Servers {
    /// Starts a scheduler on a free loopback port over a temporary store, waits until it
    /// answers, then starts a worker `w1` with 2 slots that may run process stages and waits
    /// until it registered.
    pub fn start() -> Servers {
        let defaults = SchedulerConfig::default();
        let cluster = Cluster::with_config(ClusterConfig {
            vishwa: PathBuf::from(VISHWA),
            heartbeat: defaults.heartbeat_interval,
            lease: defaults.lease,
            ..ClusterConfig::default()
        });
        cluster.start_scheduler();
        let mut servers = Servers {
            url: cluster.url.clone(),
            cluster,
        };
        servers.start_worker("w1");
        servers
    }

    /// The cluster underneath, for what these helpers do not cover.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Kills the scheduler with SIGKILL (no chance to clean up) and waits until it is gone.
    pub fn kill_scheduler(&mut self) {
        if self.cluster.scheduler_running() {
            self.cluster.kill_scheduler();
        }
    }

    /// Starts a new scheduler on the same address over the same store.
    pub fn restart_scheduler(&mut self) {
        self.restart_scheduler_with(&[]);
    }

    /// Stops the scheduler (SIGTERM) if it runs and starts it again with `extra` flags, on the
    /// same address over the same store.
    pub fn restart_scheduler_with(&mut self, extra: &[&str]) {
        if self.cluster.scheduler_running() {
            self.cluster.term_scheduler(Duration::from_secs(15));
        }
        self.cluster.start_scheduler_with(extra);
    }

    /// Starts another worker with 2 slots that may run process stages; on SIGTERM, running
    /// stages get 2 s to finish before they are stopped.
    pub fn start_worker(&mut self, name: &str) {
        self.cluster
            .start_worker(name, 2, &["--allow-process", "--grace", "2s"]);
    }

    /// Stops a worker the way a service manager does (SIGTERM) and waits until it exited.
    pub fn stop_worker(&mut self, name: &str) -> ExitStatus {
        self.cluster.signal_worker(name, Signal::SIGTERM);
        match self.cluster.wait_worker_exit(name, Duration::from_secs(10)) {
            Some(status) => status,
            None => {
                self.cluster.kill_worker(name);
                self.cluster
                    .wait_worker_exit(name, Duration::from_secs(1))
                    .expect("a killed worker has exited")
            }
        }
    }

    /// The scheduler's data dir (its store, bundles and artifact blobs).
    pub fn data_dir(&self) -> PathBuf {
        self.cluster.data.clone()
    }

    /// The process id of the scheduler.
    pub fn scheduler_pid(&self) -> u32 {
        self.cluster.scheduler_pid()
    }

    /// The process id of a worker.
    pub fn worker_pid(&self, name: &str) -> u32 {
        self.cluster.worker_pid(name)
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
        let mut text = format!("--- scheduler log ---\n{}\n", self.cluster.scheduler_log());
        for name in self.cluster.worker_names() {
            text.push_str(&format!(
                "\n--- {name} log ---\n{}",
                self.cluster.worker_log(&name)
            ));
        }
        text
    }
}

/// Asks a child to stop with SIGTERM and kills it if it is still there after 10 s.
fn stop(child: &mut Child) {
    process::stop(child, Duration::from_secs(10));
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
        process::signal(&self.child, signal).expect("cannot signal vishwa");
    }

    /// Whether it has exited.
    pub fn has_exited(&mut self) -> bool {
        process::has_exited(&mut self.child)
    }

    /// Waits for it to exit; fails the test (and kills it) after `limit`.
    pub fn finish(mut self, limit: Duration) -> Outcome {
        let exited = wait_until(limit, || self.has_exited());
        if !exited {
            let _ = self.child.kill();
        }
        let status = self.child.wait().unwrap();
        let outcome = Outcome::new(
            status,
            std::fs::read(&self.stdout).unwrap_or_default(),
            &std::fs::read(&self.stderr).unwrap_or_default(),
        );
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
        let docker = connect_docker().await.expect("Docker must be reachable");
        containers::running_containers_of_run(&docker, run_id)
            .await
            .map_or(0, |c| c.len())
    })
}
