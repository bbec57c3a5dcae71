//! The worker API (`vishwa.v1.WorkerApi`): registration, heartbeats, the task inbox, and
//! attempt reports, each refused when its attempt is no longer current.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};
use vishwa_proto::v1 as pb;

use super::artifacts::{ChunkStream, blobs, fetch_blob};
use super::convert::ResultReport;
use crate::artifacts::BlobStore;
use crate::artifacts::transfer::{CompletedUpload, TransferRequest};
use crate::bundle::{BundleError, BundleStore};
use crate::engine::{EngineHandle, WorkerRegistration};
use crate::ids::{AttemptId, RunId, WorkerId};
use crate::run::ReportedOutput;
use crate::store::LogRecord;

/// The worker API.
pub struct WorkerApi {
    engine: EngineHandle,
    bundles: Arc<BundleStore>,
    artifacts: Option<Arc<BlobStore>>,
}

impl WorkerApi {
    /// Handlers over `engine`, serving bundles from `bundles`.
    pub fn new(engine: EngineHandle, bundles: Arc<BundleStore>) -> Self {
        WorkerApi {
            engine,
            bundles,
            artifacts: None,
        }
    }

    /// Keeps and serves stage outputs in `blobs`.
    pub fn with_artifacts(mut self, blobs: Arc<BlobStore>) -> Self {
        self.artifacts = Some(blobs);
        self
    }
}

#[tonic::async_trait]
impl pb::worker_api_server::WorkerApi for WorkerApi {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let registration = WorkerRegistration::try_from(request.into_inner())?;
        let registered = self.engine.register(registration).await?;
        Ok(Response::new(registered.into()))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let r = request.into_inner();
        let running = r.running_attempts.into_iter().map(AttemptId).collect();
        let reply = self
            .engine
            .heartbeat(WorkerId(r.worker_id), running, r.draining)
            .await?;
        Ok(Response::new(reply.into()))
    }

    type TasksStream = Pin<Box<dyn Stream<Item = Result<pb::WorkerCommand, Status>> + Send>>;

    async fn tasks(
        &self,
        request: Request<pb::TasksRequest>,
    ) -> Result<Response<Self::TasksStream>, Status> {
        let worker = WorkerId(request.into_inner().worker_id);
        let (tx, rx) = mpsc::unbounded_channel();
        self.engine.attach_inbox(worker, tx).await?;
        let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
            .map(|message| Ok(pb::WorkerCommand::from(message)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn report_started(
        &self,
        request: Request<pb::ReportStartedRequest>,
    ) -> Result<Response<pb::ReportAck>, Status> {
        let r = request.into_inner();
        self.engine
            .started(WorkerId(r.worker_id), AttemptId(r.attempt_id), r.handle)
            .await?;
        Ok(Response::new(pb::ReportAck {}))
    }

    async fn push_logs(
        &self,
        request: Request<pb::LogBatch>,
    ) -> Result<Response<pb::ReportAck>, Status> {
        let mut by_run: Vec<(RunId, Vec<LogRecord>)> = Vec::new();
        for chunk in request.into_inner().chunks {
            let run = RunId(chunk.run_id.clone());
            let record = LogRecord::try_from(chunk)?;
            match by_run.last_mut() {
                Some((r, records)) if *r == run => records.push(record),
                _ => by_run.push((run, vec![record])),
            }
        }
        self.engine.append_logs(by_run).await?;
        Ok(Response::new(pb::ReportAck {}))
    }

    type FetchBundleStream = Pin<Box<dyn Stream<Item = Result<pb::BundleChunk, Status>> + Send>>;

    async fn fetch_bundle(
        &self,
        request: Request<pb::FetchBundleRequest>,
    ) -> Result<Response<Self::FetchBundleStream>, Status> {
        let digest = request.into_inner().digest;
        if !self.bundles.has(&digest)? {
            return Err(BundleError::Missing { digest }.into());
        }
        let (tx, rx) = mpsc::channel(4);
        let bundles = self.bundles.clone();
        tokio::spawn(async move {
            if let Err(e) = bundles.send(&digest, tx.clone()).await {
                let _ = tx.send(Err(e.into())).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn report_result(
        &self,
        request: Request<pb::ReportResultRequest>,
    ) -> Result<Response<pb::ReportAck>, Status> {
        let ResultReport {
            worker,
            attempt,
            mut report,
        } = request.into_inner().try_into()?;
        // The one fact only this side can gather: whether each upload is on the scheduler.
        // The engine's state machine judges the outputs against the declared ones.
        // With S3 that is a HEAD: the object must be there with the reported size.
        for output in &mut report.outputs {
            if let ReportedOutput::Uploaded { artifact, stored } = output {
                *stored = match &self.artifacts {
                    Some(blobs) => {
                        let size = blobs.size(&artifact.digest).await.unwrap_or(None);
                        size == Some(artifact.size)
                    }
                    None => false,
                };
            }
        }
        self.engine.finished(worker, attempt, report).await?;
        Ok(Response::new(pb::ReportAck {}))
    }

    async fn upload_artifact(
        &self,
        request: Request<tonic::Streaming<pb::ArtifactChunk>>,
    ) -> Result<Response<pb::ArtifactRef>, Status> {
        let blobs = blobs(&self.artifacts)?;
        let (header, digest, size) = blobs.receive(request.into_inner()).await?;
        tracing::debug!(attempt = %header.attempt, name = %header.name, %digest, size, "artifact stored");
        self.engine.telemetry().artifact_bytes.inc_by(size);
        Ok(Response::new(pb::ArtifactRef {
            name: header.name,
            digest,
            size,
        }))
    }

    type FetchArtifactStream = ChunkStream;

    async fn fetch_artifact(
        &self,
        request: Request<pb::FetchArtifactRequest>,
    ) -> Result<Response<Self::FetchArtifactStream>, Status> {
        let blobs = blobs(&self.artifacts)?;
        Ok(Response::new(
            fetch_blob(blobs, &request.into_inner().digest).await?,
        ))
    }

    async fn artifact_transfer(
        &self,
        request: Request<pb::ArtifactTransferRequest>,
    ) -> Result<Response<pb::ArtifactTransferResponse>, Status> {
        let blobs = blobs(&self.artifacts)?;
        let request = TransferRequest::try_from(request.into_inner())?;
        let transfer = blobs.plan_transfer(&request).await?;
        Ok(Response::new(transfer.into()))
    }

    async fn complete_artifact_upload(
        &self,
        request: Request<pb::CompleteArtifactUploadRequest>,
    ) -> Result<Response<pb::ArtifactRef>, Status> {
        let blobs = blobs(&self.artifacts)?;
        let done = CompletedUpload::try_from(request.into_inner())?;
        let (name, digest, size) = (done.name.clone(), done.digest.clone(), done.size);
        blobs.complete_upload(done).await?;
        tracing::debug!(%name, %digest, size, "artifact uploaded to the bucket");
        Ok(Response::new(pb::ArtifactRef { name, digest, size }))
    }
}
