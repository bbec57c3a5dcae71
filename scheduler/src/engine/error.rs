//! What can go wrong inside the engine, in the engine's own words. The gRPC layer wraps it
//! (`ApiError::Engine`) and turns each kind into a status code in one place.

use thiserror::Error;

use crate::dag::{DagErrors, ParamError};
use crate::store::StoreError;

/// Why the engine refused or failed a request.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error("{0}")]
    InvalidDag(#[from] DagErrors),
    #[error("{0}")]
    InvalidParams(#[from] ParamError),
    #[error("no DAG named `{name}`; `vishwa dags` lists the registered ones")]
    DagNotFound { name: String },
    #[error("no run `{id}`; `vishwa runs` lists the runs")]
    RunNotFound { id: String },
    #[error("run `{id}` is already {state}")]
    RunFinished { id: String, state: &'static str },
    #[error("worker `{worker}` is not registered; it must register first")]
    WorkerNotRegistered { worker: String },
    #[error(
        "worker name `{worker}` is taken: a live worker holds it (it heartbeats within its \
         {lease:?} lease); start this worker with another --name, or stop the other one and \
         retry once its lease has expired"
    )]
    WorkerNameTaken {
        worker: String,
        lease: std::time::Duration,
    },
    #[error("attempt {attempt} is no longer current (lost, cancelled or superseded); stop it")]
    StaleAttempt { attempt: String },
    #[error("{field}: {reason}")]
    InvalidRequest { field: &'static str, reason: String },
    #[error("`{dag}` has no schedule; add `schedule:` with a `cron:` expression to backfill it")]
    NoSchedule { dag: String },
    #[error("the range ends ({to}) before it starts ({from})")]
    BackwardsRange { from: String, to: String },
    #[error(
        "the range holds more than {max} slots of `{dag}`'s schedule; backfill it in smaller ranges"
    )]
    BackfillTooLarge { dag: String, max: usize },
    #[error(
        "stage `{stage}` of run `{run}` is {state}, not waiting for approval; only a stage \
         with `approval:` whose dependencies let it run can be approved or rejected"
    )]
    NotWaitingApproval {
        run: String,
        stage: String,
        state: &'static str,
    },
    #[error("the scheduler is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EngineError {
    /// A request the engine refuses: `field` is wrong, `reason` says how and how to fix it.
    pub fn invalid(field: &'static str, reason: String) -> EngineError {
        EngineError::InvalidRequest { field, reason }
    }
}
