//! The worker agent: registers with the scheduler, keeps its lease with heartbeats, takes
//! tasks from its inbox, runs each through an executor, ships the output back in batches and
//! reports the outcome.
//!
//! It rides through a scheduler restart: it reconnects with backoff, registers again naming
//! the attempts it still runs (they carry on), and keeps retrying log batches and results
//! until the scheduler takes them. On start it removes containers an earlier process of the
//! same name left behind. On shutdown it drains: takes nothing new, lets running attempts
//! finish within the grace period, then stops them and reports.
//!
//! One file per job, importing downward only:
//! - [`connection`]: the reconnect loop, registration and the session with the scheduler;
//! - [`tasks`]: the task stream's commands (start an attempt, cancel one);
//! - [`heartbeat`]: the heartbeats that keep the worker's lease;
//! - [`attempt`]: one attempt's lifecycle through an executor, and its reported result;
//! - [`logs`]: forwarding an attempt's output to the scheduler in batches;
//! - [`transfer`]: an attempt's bundle and inputs in, its metrics and declared outputs out;
//! - [`shared`] (running attempts, draining), [`retry`] (patience while the scheduler is
//!   away) and [`config`] (settings and errors) are used by the others.
//!
//! The agent's clock is tokio's: heartbeats, reconnect and report backoff, the drain's grace
//! and stage timeouts use `tokio::time` only (never `std::time::Instant` or `SystemTime`), so
//! tests drive them with paused time and assert exact instants.

mod attempt;
mod config;
mod connection;
mod heartbeat;
mod logs;
mod retry;
mod shared;
mod tasks;
mod transfer;

pub use config::{Executors, WorkerConfig, WorkerError};
pub use connection::run_worker;
