//! The client API (`vishwa.v1.Vishwa`): thin handlers over the engine and the store.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use vishwa_proto::v1 as pb;

use super::artifacts::{ChunkStream, blobs, find_artifact, get_artifact, list_artifacts};
use super::convert::{backfill_response, dag_summary, run_state_from_pb, run_summary, run_view};
use super::error::ApiError;
use super::follow::{FOLLOW_BUFFER, Follower};
use crate::artifacts::BlobStore;
use crate::auth::Caller;
use crate::bundle::{BundleError, BundleStore};
use crate::dag::{Dag, parse_dag};
use crate::engine::EngineError;
use crate::engine::{DagFiles, EngineHandle};
use crate::ids::{RunId, WorkerId};
use crate::run::{RetryMode, RunRecord, StageRecord};
use crate::secrets::SecretBox;
use crate::store::Store;

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Runs listed when the request gives no limit.
const DEFAULT_RUN_LIMIT: usize = 50;

/// The client API.
pub struct ClientApi {
    engine: EngineHandle,
    bundles: Arc<BundleStore>,
    artifacts: Option<Arc<BlobStore>>,
    dags: Mutex<HashMap<(String, String), Arc<Dag>>>,
    /// Ends open watches when the scheduler shuts down, so shutdown never waits on them.
    shutdown: CancellationToken,
    /// Seals secrets before they are stored; without it `SetSecret` is refused.
    pub(super) secrets: Option<Arc<SecretBox>>,
}

impl ClientApi {
    /// Handlers over `engine`; open watches end when `shutdown` fires.
    pub fn new(
        engine: EngineHandle,
        bundles: Arc<BundleStore>,
        shutdown: CancellationToken,
    ) -> Self {
        ClientApi {
            engine,
            bundles,
            artifacts: None,
            dags: Mutex::new(HashMap::new()),
            shutdown,
            secrets: None,
        }
    }

    /// Handlers that can store secrets sealed with `key`.
    pub fn with_secrets(mut self, key: Arc<SecretBox>) -> Self {
        self.secrets = Some(key);
        self
    }

    /// Serves run outputs from `blobs`.
    pub fn with_artifacts(mut self, blobs: Arc<BlobStore>) -> Self {
        self.artifacts = Some(blobs);
        self
    }

    pub(super) fn store(&self) -> &Arc<dyn Store> {
        self.engine.store()
    }

    pub(crate) fn engine(&self) -> &EngineHandle {
        &self.engine
    }

    /// Fires when the scheduler shuts down; open streams end with it.
    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    pub(crate) fn blob_store(&self) -> Option<&BlobStore> {
        self.artifacts.as_deref()
    }

    /// A registered DAG version, parsed (and cached: versions never change).
    pub(crate) fn dag(&self, name: &str, version: &str) -> Result<Arc<Dag>, ApiError> {
        let key = (name.to_owned(), version.to_owned());
        if let Some(dag) = self.lock_dags().get(&key) {
            return Ok(dag.clone());
        }
        let stored = self
            .store()
            .get_dag_version(name, version)?
            .ok_or_else(|| EngineError::DagNotFound {
                name: name.to_owned(),
            })?;
        let dag = Arc::new(parse_dag(&stored.source, &stored.file_name)?);
        self.lock_dags().insert(key, dag.clone());
        Ok(dag)
    }

    fn lock_dags(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<Dag>>> {
        self.dags.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dag_summary(
        &self,
        name: &str,
        last_runs: &BTreeMap<String, RunRecord>,
    ) -> Result<pb::DagSummary, ApiError> {
        let record = self
            .store()
            .get_dag(name)?
            .ok_or_else(|| EngineError::DagNotFound {
                name: name.to_owned(),
            })?;
        let dag = self.dag(name, &record.version)?;
        // The next slot after the schedule's cursor is the one the engine fires next; one
        // after the clock read here could skip a slot that fell due since the submission.
        let cursor = match &dag.schedule {
            Some(s) => self
                .store()
                .get_schedule(name)?
                .filter(|c| c.cron == s.cron && c.timezone == s.timezone.name())
                .map(|c| c.cursor_ms),
            None => None,
        };
        let after = cursor.unwrap_or_else(|| self.engine.clock().now_ms());
        Ok(dag_summary(&dag, &record, last_runs.get(name), after))
    }

    fn last_runs(&self) -> Result<BTreeMap<String, RunRecord>, ApiError> {
        let mut last: BTreeMap<String, RunRecord> = BTreeMap::new();
        for run in self.store().list_runs()? {
            let newer = last
                .get(&run.dag)
                .is_none_or(|r| r.created_ms <= run.created_ms);
            if newer {
                last.insert(run.dag.clone(), run);
            }
        }
        Ok(last)
    }

    /// Stage records of a run in the DAG's topological order.
    fn ordered_stages(&self, run: &RunRecord) -> Result<Vec<StageRecord>, ApiError> {
        let mut stages = self.store().run_stages(&run.id)?;
        if let Ok(dag) = self.dag(&run.dag, &run.dag_version) {
            let mut position = HashMap::new();
            for (pos, &i) in dag.topo_order.iter().enumerate() {
                position.insert(dag.stages[i].name.0.as_str(), pos);
            }
            stages.sort_by_cached_key(|s| {
                let base = s.instance.split('[').next().unwrap_or(&s.instance);
                position.get(base).copied().unwrap_or(usize::MAX)
            });
        }
        Ok(stages)
    }

    fn get_run_record(&self, id: &str) -> Result<RunRecord, ApiError> {
        let run = self.store().get_run(&RunId::from(id))?;
        Ok(run.ok_or_else(|| EngineError::RunNotFound { id: id.to_owned() })?)
    }
}

#[tonic::async_trait]
impl pb::vishwa_server::Vishwa for ClientApi {
    async fn submit_dag(
        &self,
        request: Request<pb::SubmitDagRequest>,
    ) -> Result<Response<pb::SubmitDagResponse>, Status> {
        let caller = Caller::of(&request);
        let r = request.into_inner();
        let target = r.file_name.clone();
        let result: Result<Response<pb::SubmitDagResponse>, Status> = async {
            let dag = Arc::new(parse_dag(&r.source, &r.file_name)?);
            let bundle = (!r.bundle_digest.is_empty()).then_some(r.bundle_digest);
            if let Some(digest) = &bundle
                && !self.bundles.has(digest)?
            {
                return Err(BundleError::Missing {
                    digest: digest.clone(),
                }
                .into());
            }
            let files = DagFiles {
                local_dir: (!r.local_dir.is_empty()).then_some(r.local_dir),
                bundle,
            };
            let submitted = self
                .engine
                .submit(dag, r.file_name, r.source, files)
                .await?;
            let summary = self.dag_summary(&submitted.name, &self.last_runs()?)?;
            Ok(Response::new(pb::SubmitDagResponse {
                dag: Some(summary),
                changed: submitted.changed,
            }))
        }
        .await;
        // The DAG's name once it parsed; the file's name if it did not.
        let target = match &result {
            Ok(response) => response
                .get_ref()
                .dag
                .as_ref()
                .map_or(target, |d| d.name.clone()),
            Err(_) => target,
        };
        self.audited(&caller, "SubmitDag", &target, result).await
    }

    async fn list_dags(
        &self,
        _request: Request<pb::ListDagsRequest>,
    ) -> Result<Response<pb::ListDagsResponse>, Status> {
        let last = self.last_runs()?;
        let dags = self
            .store()
            .list_dags()?
            .iter()
            .map(|d| self.dag_summary(&d.name, &last))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(pb::ListDagsResponse { dags }))
    }

    async fn get_dag(
        &self,
        request: Request<pb::GetDagRequest>,
    ) -> Result<Response<pb::GetDagResponse>, Status> {
        let name = request.into_inner().name;
        let summary = self.dag_summary(&name, &self.last_runs()?)?;
        let version = self
            .store()
            .get_dag_version(&name, &summary.version)?
            .ok_or_else(|| EngineError::DagNotFound { name: name.clone() })?;
        Ok(Response::new(pb::GetDagResponse {
            dag: Some(summary),
            file_name: version.file_name,
            source: version.source,
        }))
    }

    async fn trigger_run(
        &self,
        request: Request<pb::TriggerRunRequest>,
    ) -> Result<Response<pb::TriggerRunResponse>, Status> {
        let caller = Caller::of(&request);
        let r = request.into_inner();
        let target = r.dag.clone();
        let result = async {
            super::limits::check_trigger(
                &r.dag,
                r.params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .map_err(|reason| EngineError::invalid("trigger", reason))?;
            let params = r.params.into_iter().collect();
            let asked = std::time::Instant::now();
            let run = self.engine.trigger_with(r.dag, params, r.no_cache).await?;
            self.engine
                .telemetry()
                .trigger_latency
                .observe(asked.elapsed().as_secs_f64());
            let stages = self.store().run_stages(&run.id)?;
            Ok(Response::new(pb::TriggerRunResponse {
                run: Some(run_summary(&run, Some(&stages))),
            }))
        }
        .await;
        self.audited(&caller, "TriggerRun", &target, result).await
    }

    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let r = request.into_inner();
        let state = pb::RunState::try_from(r.state)
            .ok()
            .and_then(run_state_from_pb);
        let mut runs: Vec<RunRecord> = self
            .store()
            .list_runs()?
            .into_iter()
            .filter(|run| r.dag.is_empty() || run.dag == r.dag)
            .filter(|run| state.is_none_or(|s| run.state == s))
            .collect();
        runs.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(b.id.cmp(&a.id)));
        let limit = if r.limit == 0 {
            DEFAULT_RUN_LIMIT
        } else {
            r.limit as usize
        };
        runs.truncate(limit);
        let runs = runs
            .iter()
            .map(|run| {
                let stages = self.store().run_stages(&run.id)?;
                Ok(run_summary(run, Some(&stages)))
            })
            .collect::<Result<_, ApiError>>()?;
        Ok(Response::new(pb::ListRunsResponse { runs }))
    }

    async fn get_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        let run = self.get_run_record(&request.into_inner().run_id)?;
        let stages = self.ordered_stages(&run)?;
        let views = stages
            .iter()
            .map(|s| {
                let mut stage = pb::StageRun::from(s);
                self.engine
                    .waiting()
                    .explain(&run.id, s, &mut stage.message);
                stage
            })
            .collect();
        Ok(Response::new(run_view(&run, &stages, views)))
    }

    async fn list_artifacts(
        &self,
        request: Request<pb::ListArtifactsRequest>,
    ) -> Result<Response<pb::ListArtifactsResponse>, Status> {
        let r = request.into_inner();
        Ok(Response::new(list_artifacts(&**self.store(), &r.run_id)?))
    }

    async fn list_assets(
        &self,
        request: Request<pb::ListAssetsRequest>,
    ) -> Result<Response<pb::ListAssetsResponse>, Status> {
        let r = request.into_inner();
        Ok(Response::new(super::assets::list_assets(
            &**self.store(),
            &r.name,
        )?))
    }

    type GetArtifactStream = ChunkStream;

    async fn get_artifact(
        &self,
        request: Request<pb::GetArtifactRequest>,
    ) -> Result<Response<Self::GetArtifactStream>, Status> {
        let r = request.into_inner();
        let blobs = blobs(&self.artifacts)?;
        Ok(Response::new(get_artifact(
            &**self.store(),
            blobs,
            &r.run_id,
            &r.path,
        )?))
    }

    async fn find_artifact(
        &self,
        request: Request<pb::FindArtifactRequest>,
    ) -> Result<Response<pb::FindArtifactResponse>, Status> {
        let r = request.into_inner();
        Ok(Response::new(find_artifact(&**self.store(), &r.digest)?))
    }

    type WatchRunStream = EventStream<pb::RunEvent>;

    async fn watch_run(
        &self,
        request: Request<pb::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        let r = request.into_inner();
        // Subscribe before reading, so nothing falls between the snapshot and the events.
        let events = self.engine.subscribe();
        let run = self.get_run_record(&r.run_id)?;
        let (tx, rx) = mpsc::channel(FOLLOW_BUFFER);
        let follower = Follower {
            store: self.store().clone(),
            run: run.id.clone(),
            stage: None,
            logs: r.include_logs,
            states: true,
            tx,
            next_seq: HashMap::new(),
            waiting: self.engine.waiting().clone(),
        };
        tokio::spawn(follower.follow(events, run, self.shutdown.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type StreamLogsStream = EventStream<pb::LogLine>;

    async fn stream_logs(
        &self,
        request: Request<pb::StreamLogsRequest>,
    ) -> Result<Response<Self::StreamLogsStream>, Status> {
        let r = request.into_inner();
        let events = self.engine.subscribe();
        let run = self.get_run_record(&r.run_id)?;
        let stage = (!r.stage.is_empty()).then_some(r.stage);
        if let Some(stage) = &stage {
            let known = self.store().run_stages(&run.id)?;
            if !known.iter().any(|s| &s.instance == stage) {
                let names: Vec<_> = known.iter().map(|s| s.instance.as_str()).collect();
                return Err(EngineError::invalid(
                    "stage",
                    format!(
                        "run {} has no stage `{stage}`; its stages are: {}",
                        run.id,
                        names.join(", ")
                    ),
                )
                .into());
            }
        }
        let (tx, rx) = mpsc::channel(FOLLOW_BUFFER);
        let (event_tx, mut event_rx) = mpsc::channel::<Result<pb::RunEvent, Status>>(1);
        let follower = Follower {
            store: self.store().clone(),
            run: run.id.clone(),
            stage,
            logs: true,
            states: false,
            tx: event_tx,
            next_seq: HashMap::new(),
            waiting: self.engine.waiting().clone(),
        };
        if r.follow {
            tokio::spawn(follower.follow(events, run, self.shutdown.clone()));
        } else {
            drop(events);
            tokio::spawn(async move {
                let mut follower = follower;
                let _ = follower.send_stored_logs().await;
            });
        }
        tokio::spawn(async move {
            while let Some(event) = event_rx.recv().await {
                let line = match event {
                    Ok(pb::RunEvent {
                        event: Some(pb::run_event::Event::Log(line)),
                    }) => Ok(line),
                    Ok(_) => continue,
                    Err(status) => Err(status),
                };
                if tx.send(line).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn retry_run(
        &self,
        request: Request<pb::RetryRunRequest>,
    ) -> Result<Response<pb::RetryRunResponse>, Status> {
        let caller = Caller::of(&request);
        let r = request.into_inner();
        let target = r.run_id.clone();
        let result: Result<Response<pb::RetryRunResponse>, Status> = async {
            let mode = RetryMode::try_from(&r)?;
            let id = RunId(r.run_id);
            let (run, stages) = self.engine.retry(id.clone(), mode).await?;
            let records = self.store().run_stages(&id)?;
            Ok(Response::new(pb::RetryRunResponse {
                run: Some(run_summary(&run, Some(&records))),
                stages,
            }))
        }
        .await;
        self.audited(&caller, "RetryRun", &target, result).await
    }

    async fn has_bundle(
        &self,
        request: Request<pb::HasBundleRequest>,
    ) -> Result<Response<pb::HasBundleResponse>, Status> {
        let present = self.bundles.has(&request.into_inner().digest)?;
        Ok(Response::new(pb::HasBundleResponse { present }))
    }

    async fn upload_bundle(
        &self,
        request: Request<tonic::Streaming<pb::BundleChunk>>,
    ) -> Result<Response<pb::UploadBundleResponse>, Status> {
        let caller = Caller::of(&request);
        let received = self.bundles.receive(request.into_inner()).await;
        let target = received
            .as_ref()
            .map(|(d, _)| d.clone())
            .unwrap_or_default();
        let result = received.map_err(Status::from).map(|(digest, size)| {
            tracing::info!(%digest, size, "bundle received");
            Response::new(pb::UploadBundleResponse { digest, size })
        });
        self.audited(&caller, "UploadBundle", &target, result).await
    }

    async fn list_workers(
        &self,
        _request: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        let workers = self.engine.workers().await?;
        Ok(Response::new(pb::ListWorkersResponse {
            workers: workers.iter().map(pb::WorkerInfo::from).collect(),
        }))
    }

    async fn drain_worker(
        &self,
        request: Request<pb::DrainWorkerRequest>,
    ) -> Result<Response<pb::DrainWorkerResponse>, Status> {
        let caller = Caller::of(&request);
        let r = request.into_inner();
        let target = r.name.clone();
        let method = if r.undo {
            "UndrainWorker"
        } else {
            "DrainWorker"
        };
        let result = async {
            let view = self.engine.drain(WorkerId(r.name), r.undo).await?;
            Ok(Response::new(pb::DrainWorkerResponse {
                worker: Some(pb::WorkerInfo::from(&view)),
            }))
        }
        .await;
        self.audited(&caller, method, &target, result).await
    }

    async fn cancel_run(
        &self,
        request: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::CancelRunResponse>, Status> {
        let caller = Caller::of(&request);
        let id = RunId(request.into_inner().run_id);
        let result = async {
            let run = self.engine.cancel(id.clone()).await?;
            let stages = self.store().run_stages(&id)?;
            Ok(Response::new(pb::CancelRunResponse {
                run: Some(run_summary(&run, Some(&stages))),
            }))
        }
        .await;
        self.audited(&caller, "CancelRun", id.as_str(), result)
            .await
    }

    async fn pause_dag(
        &self,
        request: Request<pb::PauseDagRequest>,
    ) -> Result<Response<pb::PauseDagResponse>, Status> {
        let caller = Caller::of(&request);
        let name = request.into_inner().name;
        let result = async {
            let change = self.engine.pause(name.clone()).await?;
            let dag = self.dag_summary(&name, &self.last_runs()?)?;
            Ok(Response::new(pb::PauseDagResponse {
                dag: Some(dag),
                changed: change.changed,
            }))
        }
        .await;
        self.audited(&caller, "PauseDag", &name, result).await
    }

    async fn resume_dag(
        &self,
        request: Request<pb::ResumeDagRequest>,
    ) -> Result<Response<pb::ResumeDagResponse>, Status> {
        let caller = Caller::of(&request);
        let r = request.into_inner();
        let result = async {
            let change = self.engine.resume(r.name.clone(), r.skip_missed).await?;
            let dag = self.dag_summary(&r.name, &self.last_runs()?)?;
            Ok(Response::new(pb::ResumeDagResponse {
                dag: Some(dag),
                changed: change.changed,
            }))
        }
        .await;
        self.audited(&caller, "ResumeDag", &r.name, result).await
    }

    async fn backfill(
        &self,
        request: Request<pb::BackfillRequest>,
    ) -> Result<Response<pb::BackfillResponse>, Status> {
        let caller = Caller::of(&request);
        let r = request.into_inner();
        let target = r.dag.clone();
        let result: Result<Response<pb::BackfillResponse>, Status> = async {
            let slots = self.engine.backfill((&r).into()).await?;
            let version = self
                .store()
                .get_dag(&r.dag)?
                .ok_or_else(|| EngineError::DagNotFound {
                    name: r.dag.clone(),
                })?
                .version;
            let dag = self.dag(&r.dag, &version)?;
            Ok(Response::new(backfill_response(&slots, &dag)))
        }
        .await;
        self.audited(&caller, "Backfill", &target, result).await
    }

    async fn set_secret(
        &self,
        request: Request<pb::SetSecretRequest>,
    ) -> Result<Response<pb::SetSecretResponse>, Status> {
        let caller = Caller::of(&request);
        let r = request.into_inner();
        let target = r.name.clone();
        let result = self.set_secret_value(r).await;
        self.audited(&caller, "SetSecret", &target, result).await
    }

    async fn list_secrets(
        &self,
        _request: Request<pb::ListSecretsRequest>,
    ) -> Result<Response<pb::ListSecretsResponse>, Status> {
        Ok(Response::new(self.secret_infos()?))
    }

    async fn delete_secret(
        &self,
        request: Request<pb::DeleteSecretRequest>,
    ) -> Result<Response<pb::DeleteSecretResponse>, Status> {
        let caller = Caller::of(&request);
        let name = request.into_inner().name;
        let result = self.delete_secret_named(&name).await;
        self.audited(&caller, "DeleteSecret", &name, result).await
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        Ok(Response::new(
            self.audit_entries(request.into_inner().limit)?,
        ))
    }

    async fn delete_runs(
        &self,
        request: Request<pb::DeleteRunsRequest>,
    ) -> Result<Response<pb::DeleteRunsResponse>, Status> {
        self.delete_runs_call(request).await
    }

    async fn approve_stage(
        &self,
        request: Request<pb::ApproveStageRequest>,
    ) -> Result<Response<pb::ApproveStageResponse>, Status> {
        self.approve_stage_call(request).await
    }

    async fn prune_runs(
        &self,
        request: Request<pb::PruneRunsRequest>,
    ) -> Result<Response<pb::DeleteRunsResponse>, Status> {
        self.prune_runs_call(request).await
    }
}
