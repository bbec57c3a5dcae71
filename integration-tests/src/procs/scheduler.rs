//! The cluster's scheduler process: started, killed, stopped, and its arguments.

use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{Cluster, START_LIMIT, humantime, lock, terminate};
use crate::names::now_ms;
use crate::process::{http_url_in, scheduler_args};

impl Cluster {
    // ---- the scheduler ----

    /// Starts the scheduler on the cluster's address and data dir and waits until it serves.
    pub fn start_scheduler(&self) {
        self.start_scheduler_with(&[]);
    }

    /// Starts the scheduler with `extra` flags after the usual ones and waits until it serves.
    pub fn start_scheduler_with(&self, extra: &[&str]) {
        self.spawn_scheduler_with(extra);
        self.wait_scheduler_serving();
    }

    /// Starts the scheduler and returns at once (it may still be opening its store).
    pub fn spawn_scheduler(&self) {
        self.spawn_scheduler_with(&[]);
    }

    /// Starts the scheduler with `extra` flags and returns at once.
    pub fn spawn_scheduler_with(&self, extra: &[&str]) {
        let mut slot = lock(&self.scheduler);
        assert!(slot.is_none(), "the scheduler is already running");
        let log = self.log_file("scheduler");
        let child = Command::new(&self.config.vishwa)
            .args(self.scheduler_args())
            .args(extra)
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
        let heartbeat = humantime(self.config.heartbeat);
        let lease = humantime(self.config.lease);
        let mut args = scheduler_args(
            &self.data,
            self.addr,
            &["--heartbeat", &heartbeat, "--lease", &lease],
        );
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

    /// The URL of the running scheduler's HTTP port (`http://127.0.0.1:PORT`), from the line
    /// it printed once serving; waits for that line up to the start limit.
    pub fn http_url(&self) -> String {
        let started = Instant::now();
        loop {
            if let Some(url) = http_url_in(&self.scheduler_log()) {
                return url;
            }
            assert!(
                started.elapsed() < START_LIMIT && self.scheduler_running(),
                "the scheduler printed no HTTP URL:\n{}",
                self.scheduler_log()
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

    /// The process id of the running scheduler.
    pub fn scheduler_pid(&self) -> u32 {
        lock(&self.scheduler)
            .as_ref()
            .expect("the scheduler is not running")
            .id()
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
}
