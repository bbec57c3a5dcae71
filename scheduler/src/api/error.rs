//! The scheduler's service errors and the one place they become gRPC statuses.

use thiserror::Error;
use tonic::Status;

use crate::artifacts::ArtifactError;
use crate::bundle::BundleError;
use crate::dag::{DagErrors, ParamError};
use crate::engine::EngineError;
use crate::secrets::SecretError;
use crate::store::StoreError;

/// Why a request to the scheduler failed.
#[derive(Debug, Error)]
pub enum ApiError {
    /// The engine refused or failed the request.
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("no secret `{name}`; `vishwa secret list` lists the secrets")]
    SecretNotFound { name: String },
    #[error("no asset `{name}`; `vishwa assets` lists the assets")]
    AssetNotFound { name: String },
    /// The secret key file could not be created or read (the first `secret set`).
    #[error(transparent)]
    SecretKey(#[from] SecretError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::Engine(e.into())
    }
}

impl From<DagErrors> for ApiError {
    fn from(e: DagErrors) -> ApiError {
        ApiError::Engine(e.into())
    }
}

impl From<ParamError> for ApiError {
    fn from(e: ParamError) -> ApiError {
        ApiError::Engine(e.into())
    }
}

/// Lets a handler answering with a `Status` use `?` on every error the API knows.
macro_rules! status_from {
    ($($error:ty),*) => {
        $(impl From<$error> for Status {
            fn from(e: $error) -> Status {
                ApiError::from(e).into()
            }
        })*
    };
}

status_from!(
    EngineError,
    StoreError,
    DagErrors,
    ParamError,
    BundleError,
    ArtifactError
);

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let message = e.to_string();
        match e {
            ApiError::Engine(e) => match e {
                EngineError::InvalidDag(_)
                | EngineError::InvalidParams(_)
                | EngineError::InvalidRequest { .. }
                | EngineError::BackwardsRange { .. }
                | EngineError::BackfillTooLarge { .. } => Status::invalid_argument(message),
                EngineError::NoSchedule { .. } => Status::failed_precondition(message),
                EngineError::DagNotFound { .. }
                | EngineError::RunNotFound { .. }
                | EngineError::WorkerNotRegistered { .. } => Status::not_found(message),
                EngineError::RunFinished { .. }
                | EngineError::StaleAttempt { .. }
                | EngineError::NotWaitingApproval { .. } => Status::failed_precondition(message),
                EngineError::ShuttingDown | EngineError::Store(StoreError::WriteFailed { .. }) => {
                    Status::unavailable(message)
                }
                EngineError::WorkerNameTaken { .. } => Status::already_exists(message),
                EngineError::Store(_) => Status::internal(message),
            },
            ApiError::SecretNotFound { .. } | ApiError::AssetNotFound { .. } => {
                Status::not_found(message)
            }
            ApiError::SecretKey(_) => Status::failed_precondition(message),
            ApiError::Bundle(BundleError::Io(_)) => Status::internal(message),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic::Code;

    use super::*;

    #[test]
    fn a_taken_worker_name_is_already_exists_and_says_how_to_fix_it() {
        let status = Status::from(EngineError::WorkerNameTaken {
            worker: "w1".into(),
            lease: Duration::from_secs(30),
        });
        assert_eq!(status.code(), Code::AlreadyExists);
        assert!(status.message().contains("`w1`"), "{}", status.message());
        assert!(status.message().contains("--name"), "{}", status.message());
    }

    #[test]
    fn engine_errors_keep_their_codes() {
        let cases = [
            (EngineError::ShuttingDown, Code::Unavailable),
            (EngineError::RunNotFound { id: "r".into() }, Code::NotFound),
            (
                EngineError::StaleAttempt {
                    attempt: "a".into(),
                },
                Code::FailedPrecondition,
            ),
            (
                EngineError::InvalidRequest {
                    field: "f",
                    reason: "bad".into(),
                },
                Code::InvalidArgument,
            ),
        ];
        for (error, code) in cases {
            let message = error.to_string();
            let status = Status::from(error);
            assert_eq!(status.code(), code, "{message}");
            assert_eq!(status.message(), message);
        }
    }
}
