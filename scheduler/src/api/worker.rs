//! The worker API (`vishwa.v1.WorkerApi`): registration, heartbeats, the task inbox, and
//! attempt reports, each refused when its attempt is no longer current.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};
use vishwa_proto::v1 as pb;

use super::artifacts::{ChunkStream, blobs, fetch_blob};
use super::convert::{artifact_ref_from_pb, log_stream_from_pb, outcome_from_pb};
use super::error::ApiError;
use crate::artifacts::BlobStore;
use crate::bundle::{BundleError, BundleStore};
use crate::engine::EngineError;
use crate::engine::{EngineHandle, Produced, WorkerMessage, WorkerRegistration};
use crate::ids::{AttemptId, RunId, WorkerId};
use crate::run::AttemptOutcome;
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

    /// What a successful attempt reports, checked: every output must be a stored blob, or the
    /// attempt fails naming it.
    fn produced(
        &self,
        outputs: Vec<pb::ArtifactRef>,
        metrics: std::collections::HashMap<String, f64>,
    ) -> Result<Produced, String> {
        let mut checked = Vec::with_capacity(outputs.len());
        for output in outputs {
            let name = output.name.clone();
            let output = artifact_ref_from_pb(output)
                .map_err(|e| format!("output `{name}` was reported wrongly: {e}"))?;
            let stored = match &self.artifacts {
                Some(blobs) => blobs.has(&output.digest).unwrap_or(false),
                None => false,
            };
            if !stored {
                return Err(format!(
                    "output `{name}` was reported, but its upload ({}) is not on the scheduler",
                    output.digest
                ));
            }
            checked.push(output);
        }
        Ok(Produced {
            outputs: checked,
            metrics: metrics.into_iter().collect(),
        })
    }
}

fn required<'a>(field: &'static str, value: &'a str) -> Result<&'a str, Status> {
    if value.is_empty() {
        return Err(ApiError::Engine(EngineError::InvalidRequest {
            field,
            reason: "must not be empty".to_owned(),
        })
        .into());
    }
    Ok(value)
}

fn log_record(chunk: pb::LogChunk) -> LogRecord {
    LogRecord {
        stage: chunk.stage,
        attempt: chunk.attempt,
        seq: chunk.seq,
        stream: log_stream_from_pb(chunk.stream),
        time_ms: chunk.time_ms,
        data: chunk.data.to_vec(),
    }
}

#[tonic::async_trait]
impl pb::worker_api_server::WorkerApi for WorkerApi {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let r = request.into_inner();
        required("name", &r.name)?;
        let registered = self
            .engine
            .register(WorkerRegistration {
                name: r.name,
                slots: r.slots,
                labels: r.labels.into_iter().collect(),
                allow_process: r.allow_process,
                running: r.running_attempts.into_iter().map(AttemptId).collect(),
                cpus: r.cpus,
                memory_bytes: r.memory_bytes,
                gpus: r.gpus,
                draining: r.draining,
                instance: r.instance,
            })
            .await?;
        Ok(Response::new(pb::RegisterResponse {
            worker_id: registered.worker.0,
            heartbeat_interval_ms: registered.heartbeat_interval.as_millis() as u64,
            lease_ms: registered.lease.as_millis() as u64,
            cancel_attempts: registered.cancel.into_iter().map(|a| a.0).collect(),
        }))
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
        Ok(Response::new(pb::HeartbeatResponse {
            cancel_attempts: reply.cancel.into_iter().map(|a| a.0).collect(),
            reregister: reply.reregister,
        }))
    }

    type TasksStream = Pin<Box<dyn Stream<Item = Result<pb::WorkerCommand, Status>> + Send>>;

    async fn tasks(
        &self,
        request: Request<pb::TasksRequest>,
    ) -> Result<Response<Self::TasksStream>, Status> {
        let worker = WorkerId(request.into_inner().worker_id);
        let (tx, rx) = mpsc::unbounded_channel();
        self.engine.attach_inbox(worker, tx).await?;
        let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(|message| {
            let command = match message {
                WorkerMessage::Task(task) => pb::worker_command::Command::Task((&*task).into()),
                WorkerMessage::Cancel { attempt, reason } => {
                    pb::worker_command::Command::Cancel(pb::CancelAttempt {
                        attempt_id: attempt.0,
                        reason,
                    })
                }
            };
            Ok(pb::WorkerCommand {
                command: Some(command),
            })
        });
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
            required("run_id", &chunk.run_id)?;
            required("stage", &chunk.stage)?;
            let run = RunId(chunk.run_id.clone());
            match by_run.last_mut() {
                Some((r, records)) if *r == run => records.push(log_record(chunk)),
                _ => by_run.push((run, vec![log_record(chunk)])),
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
        if !self.bundles.has(&digest).map_err(ApiError::from)? {
            return Err(ApiError::from(BundleError::Missing { digest }).into());
        }
        let (tx, rx) = mpsc::channel(4);
        let bundles = self.bundles.clone();
        tokio::spawn(async move {
            if let Err(e) = bundles.send(&digest, tx.clone()).await {
                let _ = tx.send(Err(ApiError::from(e).into())).await;
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
        let r = request.into_inner();
        let outcome = outcome_from_pb(r.outcome).ok_or_else(|| {
            ApiError::Engine(EngineError::InvalidRequest {
                field: "outcome",
                reason: "a result must say how the attempt ended".to_owned(),
            })
        })?;
        let (outcome, produced) = if outcome == (AttemptOutcome::Exited { code: 0 }) {
            match self.produced(r.outputs, r.metrics) {
                Ok(produced) => (outcome, produced),
                Err(message) => (
                    AttemptOutcome::Error {
                        message,
                        transient: false,
                    },
                    Produced::default(),
                ),
            }
        } else {
            (outcome, Produced::default())
        };
        self.engine
            .finished_with(
                WorkerId(r.worker_id),
                AttemptId(r.attempt_id),
                outcome,
                produced,
            )
            .await?;
        Ok(Response::new(pb::ReportAck {}))
    }

    async fn upload_artifact(
        &self,
        request: Request<tonic::Streaming<pb::ArtifactChunk>>,
    ) -> Result<Response<pb::ArtifactRef>, Status> {
        let blobs = blobs(&self.artifacts)?;
        let (header, digest, size) = blobs
            .receive(request.into_inner())
            .await
            .map_err(ApiError::from)?;
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
        Ok(Response::new(fetch_blob(
            blobs,
            &request.into_inner().digest,
        )?))
    }
}
