//! The cluster's worker processes: started (optionally in a network namespace), killed,
//! signalled, restarted with the same command line, and their logs.

use std::fs::{File, OpenOptions};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{Cluster, WorkerProc, lock, wait_until};
use crate::auth::WORKER_TOKEN;
use crate::names::now_ms;
use crate::process;

impl Cluster {
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
        command.push(self.config.vishwa.display().to_string());
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

    pub(super) fn launch_worker(&self, name: &str, command: Vec<String>) {
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

    /// The process id of a running worker.
    pub fn worker_pid(&self, name: &str) -> u32 {
        lock(&self.workers)
            .get(name)
            .expect("no such worker")
            .child
            .id()
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
        process::signal(&worker.child, signal).expect("cannot signal the worker");
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

    /// Every worker name started so far, in order of name.
    pub fn worker_names(&self) -> Vec<String> {
        lock(&self.worker_names).iter().cloned().collect()
    }

    /// What worker `name` logged so far.
    pub fn worker_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir().join(format!("worker-{name}.log"))).unwrap_or_default()
    }

    /// What the scheduler logged so far.
    pub fn scheduler_log(&self) -> String {
        std::fs::read_to_string(self.dir().join("scheduler.log")).unwrap_or_default()
    }

    pub(super) fn log_file(&self, name: &str) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join(format!("{name}.log")))
            .expect("cannot open a log file")
    }
}
