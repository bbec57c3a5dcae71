//! What the cluster left behind: its containers in Docker, and its sled store (read while
//! the scheduler is down).

use std::fs::File;
use std::time::Duration;

use bollard::models::ContainerSummary;
use nix::fcntl::{Flock, FlockArg};
use vishwa_scheduler::store::SledStore;

use super::{Cluster, LOG_TAIL_LINES, lock, wait_until};
use crate::containers::{attempt_labels, run_labels, worker_labels};
use crate::process::log_tail;

impl Cluster {
    // ---- Docker ----

    /// Containers (running or not) carrying every label of `labels` (`key=value`).
    pub fn containers(&self, labels: &[String]) -> Vec<ContainerSummary> {
        self.docker.labelled(labels)
    }

    /// Containers of run `run`.
    pub fn containers_of_run(&self, run: &str) -> Vec<ContainerSummary> {
        self.containers(&run_labels(run))
    }

    /// Containers of attempt `attempt`.
    pub fn containers_of_attempt(&self, attempt: &str) -> Vec<ContainerSummary> {
        self.containers(&attempt_labels(attempt))
    }

    /// Containers started by worker `worker` of this cluster.
    pub fn containers_of_worker(&self, worker: &str) -> Vec<ContainerSummary> {
        self.containers(&worker_labels(&self.worker_owner(worker)))
    }

    /// What worker `worker` labels its containers with: `name@scheduler`.
    pub(super) fn worker_owner(&self, worker: &str) -> String {
        format!("{worker}@{}", self.url)
    }

    /// Waits up to `limit` until no container of run `run` exists; returns whether none does.
    pub fn wait_no_containers_of_run(&self, run: &str, limit: Duration) -> bool {
        wait_until(limit, || self.containers_of_run(run).is_empty())
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

    pub(super) fn print_logs(&self) {
        let mut names = vec!["scheduler".to_owned()];
        names.extend(
            lock(&self.worker_names)
                .iter()
                .map(|n| format!("worker-{n}")),
        );
        for name in names {
            let path = self.dir().join(format!("{name}.log"));
            eprintln!(
                "===== {name}.log (last {LOG_TAIL_LINES} lines) =====\n{}",
                log_tail(&path, LOG_TAIL_LINES)
            );
        }
    }
}
