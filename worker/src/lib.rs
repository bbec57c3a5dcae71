//! Vishwa's worker: registers with the scheduler, pulls tasks and runs them through an
//! [`executor::Executor`].

mod agent;
pub mod api;
pub mod artifacts;
pub mod bundle;
mod capacity;
pub mod connect;
pub mod direct;
pub mod executor;
pub mod logcap;
mod logship;
pub mod mask;
pub mod metrics;

pub use agent::{Executors, WorkerConfig, WorkerError, run_worker};
pub use capacity::Capacity;
