//! The engine's runs: DAG versions, triggering, admission under `max_active_runs`,
//! cancellation, retries, and recovery of unfinished runs after a restart.

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::EngineError;
use super::core::{Engine, transition_error};
use super::state::AttemptRoute;
use super::workers::{Claim, WorkerEntry};
use super::{DagFiles, Submitted};
use crate::dag::{Dag, parse_dag};
use crate::ids::{Millis, RunId};
use crate::run::{Event, RetryMode, Run, RunPlan, RunRecord, RunState, StageState, TriggerKind};
use crate::store::{DagRecord, DagVersion};

impl Engine {
    /// Loads every unfinished run from the store and resumes it. Attempts that were running
    /// stay running; their workers get one lease to come back and claim them.
    pub(crate) async fn recover(&mut self) -> Result<(), EngineError> {
        let now = self.now();
        let lease = self.config.lease.as_millis() as Millis;
        self.reconcile_until = now + lease;
        let mut runs = self.store.list_runs()?;
        runs.retain(|r| !r.state.is_final());
        runs.sort_by_key(|r| r.created_ms);
        let count = runs.len();
        for record in runs {
            let id = record.id.clone();
            let stored = self.store.run_stages(&id)?;
            let dag = match self.load_dag(&record.dag, &record.dag_version) {
                Ok(dag) => dag,
                Err(e) => {
                    warn!(run = %id, error = %e, "cannot resume run: its DAG version is unreadable");
                    continue;
                }
            };
            let plan = match RunPlan::build(dag, &record.params) {
                Ok(plan) => Arc::new(plan),
                Err(e) => {
                    warn!(run = %id, error = %e, "cannot resume run: its plan does not build");
                    continue;
                }
            };
            let mut run = match Run::restore(record, plan, stored) {
                Ok(run) => run,
                Err(e) => {
                    warn!(run = %id, error = %e, "cannot resume run");
                    continue;
                }
            };
            for (i, stage) in run.stages.iter().enumerate() {
                if let StageState::Running {
                    attempt, worker, ..
                } = &stage.state
                {
                    self.reconciling.insert(id.clone());
                    self.attempts.insert(
                        attempt.clone(),
                        AttemptRoute {
                            run: id.clone(),
                            instance: i,
                            worker: worker.clone(),
                        },
                    );
                    let entry = self
                        .workers
                        .entries
                        .entry(worker.clone())
                        .or_insert_with(|| WorkerEntry::placeholder(now + lease, now));
                    let stage_def = &run.plan.dag.stages[run.plan.nodes[i].stage];
                    let gpus = stage
                        .attempts
                        .last()
                        .map(|a| a.gpus.clone())
                        .unwrap_or_default();
                    entry
                        .running
                        .insert(attempt.clone(), Claim::assigned(stage_def, gpus));
                }
            }
            let actions = run.resume(now);
            self.runs.insert(id.clone(), run);
            self.touched.insert(id.clone());
            self.handle_actions(&id, actions, now);
        }
        if count > 0 {
            info!(runs = count, "resumed unfinished runs");
        }
        self.recover_schedules(now)?;
        // Versions are published in the batch of the runs they start; this only answers
        // DAGs that were paused, or whose run could not be created, when a version arrived.
        self.fire_asset_triggers(now);
        self.resolve_cache_checks(now);
        self.end_turn().await
    }

    pub(super) fn submit(
        &mut self,
        dag: Arc<Dag>,
        file_name: String,
        source: String,
        files: DagFiles,
        now: Millis,
    ) -> Result<Submitted, EngineError> {
        let name = dag.name.0.clone();
        let mut hasher = Sha256::new();
        hasher.update(source.as_bytes());
        hasher.update([0]);
        hasher.update(files.local_dir.as_deref().unwrap_or("").as_bytes());
        hasher.update([0]);
        hasher.update(files.bundle.as_deref().unwrap_or("").as_bytes());
        let version = hex::encode(hasher.finalize());
        let current = self.store.get_dag(&name)?;
        if current.as_ref().is_some_and(|d| d.version == version) {
            self.assets_dag_submitted(&dag)?;
            return Ok(Submitted {
                name,
                version,
                changed: false,
            });
        }
        self.check_asset_cycles(&dag, &file_name)?;
        self.assets_dag_submitted(&dag)?;
        self.batch.put_dag_version(DagVersion {
            name: name.clone(),
            version: version.clone(),
            file_name,
            source,
            local_dir: files.local_dir.clone(),
            bundle: files.bundle.clone(),
            submitted_ms: now,
        });
        let paused = current.is_some_and(|d| d.paused);
        self.batch.put_dag(DagRecord {
            name: name.clone(),
            version: version.clone(),
            submitted_ms: now,
            paused,
        });
        self.schedule_dag_submitted(&dag, paused, now);
        self.dags.insert((name.clone(), version.clone()), dag);
        self.files.insert((name.clone(), version.clone()), files);
        info!(dag = %name, %version, "dag registered");
        Ok(Submitted {
            name,
            version,
            changed: true,
        })
    }

    pub(super) fn load_dag(&mut self, name: &str, version: &str) -> Result<Arc<Dag>, EngineError> {
        let key = (name.to_owned(), version.to_owned());
        if let Some(dag) = self.dags.get(&key) {
            return Ok(dag.clone());
        }
        let stored =
            self.store
                .get_dag_version(name, version)?
                .ok_or_else(|| EngineError::DagNotFound {
                    name: name.to_owned(),
                })?;
        let dag = Arc::new(parse_dag(&stored.source, &stored.file_name)?);
        self.dags.insert(key.clone(), dag.clone());
        self.files.insert(
            key,
            DagFiles {
                local_dir: stored.local_dir,
                bundle: stored.bundle,
            },
        );
        Ok(dag)
    }

    pub(super) fn trigger(
        &mut self,
        name: &str,
        overrides: &BTreeMap<String, String>,
        no_cache: bool,
        now: Millis,
    ) -> Result<RunRecord, EngineError> {
        let current = self
            .store
            .get_dag(name)?
            .ok_or_else(|| EngineError::DagNotFound {
                name: name.to_owned(),
            })?;
        let dag = self.load_dag(name, &current.version)?;
        let params = dag.resolve_params(overrides)?;
        let plan = Arc::new(RunPlan::build(dag.clone(), &params)?);
        let record = RunRecord {
            id: self.unused_run_id(name, now)?,
            dag: name.to_owned(),
            dag_version: current.version,
            params,
            state: RunState::Queued,
            trigger: TriggerKind::Manual,
            created_ms: now,
            started_ms: None,
            finished_ms: None,
            message: None,
            logical_time_ms: None,
            deadline_ms: None,
            cancel_requested: false,
            retries: Vec::new(),
            no_cache,
            assets: Vec::new(),
        };
        let id = record.id.clone();
        self.runs.insert(id.clone(), Run::new(record, plan));
        self.touched.insert(id.clone());
        self.admit_queued_runs(name, now);
        info!(run = %id, dag = %name, "run created");
        Ok(self.runs[&id].record.clone())
    }

    /// A new manual run id no run has: ids carry the second and 16 random bits, so runs
    /// triggered in the same second can draw the same one, and a run must never replace
    /// another.
    pub(super) fn unused_run_id(&self, dag: &str, now: Millis) -> Result<RunId, EngineError> {
        loop {
            let id = RunId::new_manual(dag, now);
            if !self.runs.contains_key(&id) && self.store.get_run(&id)?.is_none() {
                return Ok(id);
            }
        }
    }

    /// Starts queued runs of `dag` while it is under its `max_active_runs`.
    pub(super) fn admit_queued_runs(&mut self, dag: &str, now: Millis) {
        let mut queued: Vec<(Millis, RunId)> = Vec::new();
        let mut active = 0u32;
        let mut limit = u32::MAX;
        for run in self.runs.values() {
            if run.record.dag != dag {
                continue;
            }
            match run.record.state {
                RunState::Running => active += 1,
                RunState::Queued => queued.push((run.record.created_ms, run.record.id.clone())),
                _ => {}
            }
            if let Some(max) = run.plan.dag.max_active_runs {
                limit = max;
            }
        }
        queued.sort();
        for (_, id) in queued {
            if active >= limit {
                break;
            }
            if self.apply(&id, Event::Start, now).is_ok() {
                active += 1;
            }
        }
    }

    pub(super) fn cancel(&mut self, id: &RunId, now: Millis) -> Result<RunRecord, EngineError> {
        if !self.runs.contains_key(id) {
            let stored = self
                .store
                .get_run(id)?
                .ok_or_else(|| EngineError::RunNotFound { id: id.0.clone() })?;
            return Err(EngineError::RunFinished {
                id: id.0.clone(),
                state: stored.state.as_str(),
            });
        }
        self.apply(
            id,
            Event::Cancel {
                reason: "cancelled by request".to_owned(),
            },
            now,
        )?;
        info!(run = %id, "run cancelled");
        Ok(self.runs[id].record.clone())
    }

    /// Loads a finished run, resets the stages `mode` selects and starts it again.
    pub(super) fn retry(
        &mut self,
        id: &RunId,
        mode: RetryMode,
        now: Millis,
    ) -> Result<(RunRecord, Vec<String>), EngineError> {
        if let Some(run) = self.runs.get(id) {
            return Err(EngineError::InvalidRequest {
                field: "run_id",
                reason: format!(
                    "run {id} is still {}; only a finished run can be retried",
                    run.record.state.as_str()
                ),
            });
        }
        let record = self
            .store
            .get_run(id)?
            .ok_or_else(|| EngineError::RunNotFound { id: id.0.clone() })?;
        let stored = self.store.run_stages(id)?;
        let dag = self.load_dag(&record.dag, &record.dag_version)?;
        let plan = Arc::new(RunPlan::build(dag, &record.params)?);
        let mut run = Run::restore(record, plan, stored).map_err(transition_error)?;
        let selected = run.retry_selection(&mode).map_err(transition_error)?;
        if selected.is_empty() {
            return Err(EngineError::InvalidRequest {
                field: "run_id",
                reason: format!(
                    "run {id} has no failed, upstream_failed or cancelled stage to retry; \
                     use --from STAGE to run stages again"
                ),
            });
        }
        let names: Vec<String> = selected
            .iter()
            .map(|&i| run.stages[i].instance.clone())
            .collect();
        let actions = run.retry(&selected, mode, now).map_err(transition_error)?;
        let record = run.record.clone();
        self.runs.insert(id.clone(), run);
        self.touched.insert(id.clone());
        self.handle_actions(id, actions, now);
        info!(run = %id, stages = names.len(), "run retried");
        Ok((record, names))
    }
}
