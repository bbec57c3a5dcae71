//! Deleting finished runs, on request (`vishwa runs delete`, `vishwa runs prune`) and by the
//! scheduler's retention policy. Runs are deleted by the engine actor, so a run cannot start
//! again (a retry) while it is being deleted; a run that is queued or running is refused.

use std::collections::{BTreeSet, HashSet};

use super::EngineError;
use super::core::Engine;
use super::{Command, EngineHandle};
use crate::artifacts::retention::{RetentionPolicy, expired_runs};
use crate::ids::{Millis, RunId};
use crate::run::RunRecord;

/// A run that was deleted, with the digests its outputs had: blobs no other run refers to
/// can go now.
#[derive(Debug, Clone)]
pub struct DeletedRun {
    pub record: RunRecord,
    pub digests: BTreeSet<String>,
}

impl EngineHandle {
    /// Deletes finished runs with their stage records, logs and output index entries. All
    /// or nothing: an unknown run or one still queued or running fails the whole call.
    pub async fn delete_runs(&self, runs: Vec<RunId>) -> Result<Vec<DeletedRun>, EngineError> {
        self.call(|reply| Command::DeleteRuns { runs, reply }).await
    }

    /// Deletes the finished runs `policy` no longer keeps (none when it is not active).
    pub async fn prune_runs(
        &self,
        policy: RetentionPolicy,
    ) -> Result<Vec<DeletedRun>, EngineError> {
        self.call(|reply| Command::PruneRuns { policy, reply })
            .await
    }
}

impl Engine {
    pub(super) fn delete_runs(&mut self, ids: &[RunId]) -> Result<Vec<DeletedRun>, EngineError> {
        let mut records = Vec::new();
        let mut seen = HashSet::new();
        for id in ids {
            if !seen.insert(id) {
                continue;
            }
            if let Some(run) = self.runs.get(id) {
                return Err(EngineError::InvalidRequest {
                    field: "run_ids",
                    reason: format!(
                        "run {id} is still {}; only finished runs can be deleted (cancel it \
                         first: vishwa cancel {id})",
                        run.record.state.as_str()
                    ),
                });
            }
            let record = self
                .store
                .get_run(id)?
                .ok_or_else(|| EngineError::RunNotFound { id: id.0.clone() })?;
            if !record.state.is_final() {
                return Err(EngineError::InvalidRequest {
                    field: "run_ids",
                    reason: format!(
                        "run {id} is still {}; only finished runs can be deleted",
                        record.state.as_str()
                    ),
                });
            }
            records.push(record);
        }
        let mut deleted = Vec::new();
        for record in records {
            let digests = self
                .store
                .run_artifacts(&record.id)?
                .into_iter()
                .map(|a| a.digest)
                .collect();
            self.batch.delete_run(record.id.clone());
            deleted.push(DeletedRun { record, digests });
        }
        Ok(deleted)
    }

    pub(super) fn prune_runs(
        &mut self,
        policy: RetentionPolicy,
        now: Millis,
    ) -> Result<Vec<DeletedRun>, EngineError> {
        let mut expired: Vec<RunId> = expired_runs(&*self.store, policy, now)?
            .into_iter()
            .filter(|id| !self.runs.contains_key(id))
            .collect();
        expired.sort();
        self.delete_runs(&expired)
    }
}
