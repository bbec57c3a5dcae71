//! Artifact requests of both services: listing a run's outputs with their consumers,
//! lineage by digest, and streaming a blob (to a person by run and path, to a worker by
//! digest).

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use vishwa_proto::v1 as pb;

use super::convert::{artifact, artifact_use};
use super::error::ApiError;
use crate::artifacts::{ArtifactError, BlobStore};
use crate::engine::EngineError;
use crate::ids::RunId;
use crate::store::Store;

/// A stream of artifact chunks.
pub(crate) type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::ArtifactChunk, Status>> + Send>>;

/// Shortest digest prefix `vishwa artifacts which` accepts.
const MIN_DIGEST_PREFIX: usize = 8;

/// The blob store, or the error saying this scheduler has none.
pub(crate) fn blobs(blobs: &Option<Arc<BlobStore>>) -> Result<Arc<BlobStore>, ApiError> {
    blobs.clone().ok_or_else(|| {
        EngineError::invalid(
            "artifacts",
            "this scheduler was started without an artifact store".to_owned(),
        )
        .into()
    })
}

/// A run's outputs, each with the stages that consumed its content.
pub(crate) fn list_artifacts(
    store: &dyn Store,
    run_id: &str,
) -> Result<pb::ListArtifactsResponse, ApiError> {
    let run = RunId(run_id.to_owned());
    if store.get_run(&run)?.is_none() {
        return Err(EngineError::RunNotFound { id: run.0 }.into());
    }
    let artifacts = store
        .run_artifacts(&run)?
        .iter()
        .map(|a| Ok(artifact(a, &store.consumers_of(&a.digest)?)))
        .collect::<Result<_, ApiError>>()?;
    Ok(pb::ListArtifactsResponse { artifacts })
}

/// Which runs and stages made content with this digest (or digest prefix), and which used it.
pub(crate) fn find_artifact(
    store: &dyn Store,
    digest: &str,
) -> Result<pb::FindArtifactResponse, ApiError> {
    let prefix = digest.trim().to_ascii_lowercase();
    let hex = prefix.bytes().all(|b| b.is_ascii_hexdigit());
    if prefix.len() < MIN_DIGEST_PREFIX || prefix.len() > 64 || !hex {
        return Err(EngineError::invalid(
            "digest",
            format!(
                "`{digest}` is not a digest; give at least {MIN_DIGEST_PREFIX} hex characters \
                 of a sha256 as `vishwa artifacts RUN` shows it"
            ),
        )
        .into());
    }
    let producers = store.artifacts_by_digest(&prefix)?;
    let digests: BTreeSet<&str> = producers.iter().map(|a| a.digest.as_str()).collect();
    let mut consumers = Vec::new();
    for d in digests {
        consumers.extend(store.consumers_of(d)?.iter().map(artifact_use));
    }
    Ok(pb::FindArtifactResponse {
        producers: producers.iter().map(|a| artifact(a, &[])).collect(),
        consumers,
    })
}

/// Streams the output `stage/file` of a run.
pub(crate) fn get_artifact(
    store: &dyn Store,
    blobs: Arc<BlobStore>,
    run_id: &str,
    path: &str,
) -> Result<ChunkStream, ApiError> {
    let Some((stage, name)) = path.rsplit_once('/') else {
        return Err(EngineError::invalid(
            "path",
            format!("`{path}` must be STAGE/FILE, e.g. train/model.pkl"),
        )
        .into());
    };
    let run = RunId(run_id.to_owned());
    if store.get_run(&run)?.is_none() {
        return Err(EngineError::RunNotFound { id: run.0 }.into());
    }
    let artifacts = store.run_artifacts(&run)?;
    let Some(found) = artifacts
        .iter()
        .find(|a| a.stage == stage && a.name == name)
    else {
        let known: Vec<String> = artifacts
            .iter()
            .map(|a| format!("{}/{}", a.stage, a.name))
            .collect();
        return Err(EngineError::invalid(
            "path",
            format!(
                "run {run_id} has no output {path}; it has: {}",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        )
        .into());
    };
    Ok(stream_blob(blobs, found.digest.clone(), found.name.clone()))
}

/// Streams the blob `digest` (checked to exist first, so a missing one is a clear error).
pub(crate) async fn fetch_blob(
    blobs: Arc<BlobStore>,
    digest: &str,
) -> Result<ChunkStream, ApiError> {
    if !blobs.has(digest).await? {
        return Err(ArtifactError::Missing {
            digest: digest.to_owned(),
        }
        .into());
    }
    Ok(stream_blob(blobs, digest.to_owned(), String::new()))
}

fn stream_blob(blobs: Arc<BlobStore>, digest: String, name: String) -> ChunkStream {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        if let Err(e) = blobs.send(&digest, &name, tx.clone()).await {
            let _ = tx.send(Err(e.into())).await;
        }
    });
    Box::pin(ReceiverStream::new(rx))
}
