//! Deleting runs on request: `DeleteRuns` (named runs) and `PruneRuns` (by age and/or a
//! count per DAG). Both are admin calls, audited; the engine refuses runs still queued or
//! running.

use std::time::Duration;

use tonic::{Request, Response, Status};
use vishwa_proto::v1 as pb;

use super::client::ClientApi;
use crate::artifacts::BlobStore;
use crate::artifacts::retention::{RetentionPolicy, free_blobs};
use crate::auth::Caller;
use crate::engine::DeletedRun;
use crate::engine::EngineError;
use crate::ids::RunId;
use crate::store::Store;

impl ClientApi {
    pub(super) async fn delete_runs_call(
        &self,
        request: Request<pb::DeleteRunsRequest>,
    ) -> Result<Response<pb::DeleteRunsResponse>, Status> {
        let caller = Caller::of(&request);
        let r = request.into_inner();
        let target = r.run_ids.join(",");
        let result = async {
            if r.run_ids.is_empty() {
                return Err(EngineError::invalid(
                    "run_ids",
                    "name at least one run: vishwa runs delete RUN...".to_owned(),
                )
                .into());
            }
            let ids = r
                .run_ids
                .iter()
                .map(|id| RunId::from(id.as_str()))
                .collect();
            let deleted = self.engine().delete_runs(ids).await?;
            Ok(Response::new(
                deleted_response(&**self.store(), self.blob_store(), deleted).await,
            ))
        }
        .await;
        self.audited(&caller, "DeleteRuns", &target, result).await
    }

    pub(super) async fn prune_runs_call(
        &self,
        request: Request<pb::PruneRunsRequest>,
    ) -> Result<Response<pb::DeleteRunsResponse>, Status> {
        let caller = Caller::of(&request);
        let r = request.into_inner();
        let policy = RetentionPolicy {
            max_age: (r.older_than_ms > 0).then(|| Duration::from_millis(r.older_than_ms)),
            keep_runs: r.keep_per_dag,
        };
        let target = format!(
            "older_than_ms={} keep_per_dag={}",
            r.older_than_ms,
            r.keep_per_dag
                .map_or_else(|| "-".to_owned(), |n| n.to_string())
        );
        let result = async {
            if !policy.is_active() {
                return Err(EngineError::invalid(
                    "older_than_ms",
                    "say what to prune: --older-than AGE (e.g. 7d) and/or --keep N".to_owned(),
                )
                .into());
            }
            let deleted = self.engine().prune_runs(policy).await?;
            Ok(Response::new(
                deleted_response(&**self.store(), self.blob_store(), deleted).await,
            ))
        }
        .await;
        self.audited(&caller, "PruneRuns", &target, result).await
    }
}

/// What a deletion did, after the blobs only the deleted runs used are gone.
pub(crate) async fn deleted_response(
    store: &dyn Store,
    blobs: Option<&BlobStore>,
    deleted: Vec<DeletedRun>,
) -> pb::DeleteRunsResponse {
    let (blobs_deleted, bytes) = match blobs {
        Some(blobs) => {
            let digests = deleted.iter().flat_map(|d| d.digests.clone()).collect();
            match free_blobs(store, blobs, digests).await {
                Ok((count, bytes)) => (count as u64, bytes),
                Err(e) => {
                    // The runs are gone; the blobs are collected by the periodic pass.
                    tracing::warn!(error = %e, "deleting the outputs of deleted runs failed");
                    (0, 0)
                }
            }
        }
        None => (0, 0),
    };
    let mut runs: Vec<_> = deleted.into_iter().map(|d| d.record).collect();
    runs.sort_by_key(|r| (r.created_ms, r.id.clone()));
    pb::DeleteRunsResponse {
        run_ids: runs.into_iter().map(|r| r.id.0).collect(),
        blobs_deleted,
        blob_bytes_deleted: bytes,
    }
}
