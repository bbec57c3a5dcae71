//! The scheduler's service errors and the one place they become gRPC statuses.

use thiserror::Error;
use tonic::Status;

use crate::artifacts::ArtifactError;
use crate::bundle::BundleError;
use crate::dag::{DagErrors, ParamError};
use crate::store::StoreError;

/// Why a request to the scheduler failed.
#[derive(Debug, Error)]
pub enum ApiError {
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
    #[error("no secret `{name}`; `vishwa secret list` lists the secrets")]
    SecretNotFound { name: String },
    #[error("the scheduler is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let message = e.to_string();
        match e {
            ApiError::InvalidDag(_)
            | ApiError::InvalidParams(_)
            | ApiError::InvalidRequest { .. }
            | ApiError::BackwardsRange { .. }
            | ApiError::BackfillTooLarge { .. } => Status::invalid_argument(message),
            ApiError::NoSchedule { .. } => Status::failed_precondition(message),
            ApiError::DagNotFound { .. }
            | ApiError::RunNotFound { .. }
            | ApiError::WorkerNotRegistered { .. }
            | ApiError::SecretNotFound { .. } => Status::not_found(message),
            ApiError::RunFinished { .. } | ApiError::StaleAttempt { .. } => {
                Status::failed_precondition(message)
            }
            ApiError::ShuttingDown | ApiError::Store(StoreError::WriteFailed { .. }) => {
                Status::unavailable(message)
            }
            ApiError::WorkerNameTaken { .. } => Status::already_exists(message),
            ApiError::Store(_) | ApiError::Bundle(BundleError::Io(_)) => Status::internal(message),
            ApiError::Bundle(BundleError::Missing { .. }) => Status::not_found(message),
            ApiError::Bundle(_) => Status::invalid_argument(message),
            ApiError::Artifact(ArtifactError::Io(_)) => Status::internal(message),
            ApiError::Artifact(ArtifactError::Missing { .. }) => Status::not_found(message),
            ApiError::Artifact(ArtifactError::TooLarge { .. }) => {
                Status::resource_exhausted(message)
            }
            ApiError::Artifact(_) => Status::invalid_argument(message),
        }
    }
}
