//! What a successful attempt leaves behind: its outputs and metrics on the stage record,
//! the artifact index (outputs, and the inputs it consumed for lineage), and, for a
//! `cache: true` stage, a cache entry under the key looked up before it ran.

use tracing::warn;

use super::EngineError;
use super::Produced;
use super::core::{Engine, transition_error};
use super::task::task_inputs;
use crate::ids::{AttemptId, Millis, RunId};
use crate::run::{AttemptOutcome, CacheOutcome};
use crate::store::{ArtifactRecord, CacheEntry, ConsumerRecord};

impl Engine {
    /// Ends an attempt; on success first checks that every declared output was uploaded and
    /// keeps the outputs and metrics, then indexes them.
    pub(super) fn finish_attempt_with_outputs(
        &mut self,
        attempt: &AttemptId,
        outcome: AttemptOutcome,
        produced: Produced,
        now: Millis,
    ) -> Result<(), EngineError> {
        let route = self.route(attempt)?;
        let mut outcome = outcome;
        if outcome == (AttemptOutcome::Exited { code: 0 }) {
            let run = self
                .runs
                .get_mut(&route.run)
                .ok_or_else(|| EngineError::RunNotFound {
                    id: route.run.0.clone(),
                })?;
            let stage = &run.plan.dag.stages[run.plan.nodes[route.instance].stage];
            let missing = stage
                .outputs
                .iter()
                .find(|name| !produced.outputs.iter().any(|o| &o.name == *name));
            match missing {
                Some(name) => {
                    outcome = AttemptOutcome::Error {
                        message: format!(
                            "declared output `{name}` was not uploaded by the worker; it \
                             must be written to /vishwa/out/{name}"
                        ),
                        transient: false,
                    };
                }
                None => {
                    let outputs = produced
                        .outputs
                        .into_iter()
                        .filter(|o| stage.outputs.contains(&o.name))
                        .collect();
                    run.record_outputs(route.instance, attempt, outputs, produced.metrics)
                        .map_err(transition_error)?;
                }
            }
        }
        let succeeded = outcome == (AttemptOutcome::Exited { code: 0 });
        self.finish_attempt(attempt, outcome, now)?;
        if succeeded {
            self.index_outputs(&route.run, route.instance, now);
        }
        Ok(())
    }

    /// Writes the index records of instance `i`'s outputs and inputs, and its cache entry.
    fn index_outputs(&mut self, id: &RunId, i: usize, now: Millis) {
        let Some(run) = self.runs.get(id) else {
            warn!(run = %id, "run gone before its outputs were indexed");
            return;
        };
        let record = &run.stages[i];
        for output in &record.outputs {
            self.batch.put_artifact(ArtifactRecord {
                run: id.clone(),
                stage: record.instance.clone(),
                name: output.name.clone(),
                digest: output.digest.clone(),
                size: output.size,
                created_ms: now,
                cached_from: None,
            });
        }
        for input in task_inputs(run, i) {
            self.batch.put_consumer(ConsumerRecord {
                digest: input.digest,
                run: id.clone(),
                stage: record.instance.clone(),
            });
        }
        let cacheable = run.plan.dag.stages[run.plan.nodes[i].stage].cache;
        if let Some(note) = record.cache.as_ref().filter(|_| cacheable)
            && matches!(note.outcome, CacheOutcome::Miss { .. })
        {
            self.batch.put_cache(CacheEntry {
                key: note.key.clone(),
                run: id.clone(),
                stage: record.instance.clone(),
                outputs: record.outputs.clone(),
                metrics: record.metrics.clone(),
                created_ms: now,
            });
        }
    }
}
