//! What a succeeded instance leaves in the index, as its run's state machine announced it
//! ([`Action::Succeeded`](crate::run::Action)): its outputs (marked as reused for a cache
//! hit), the inputs it consumed (lineage, for an instance that ran), and, when the machine
//! names a key, the cache entry holding its outputs and metrics.

use tracing::warn;

use super::core::Engine;
use super::task::task_inputs;
use crate::ids::{Millis, RunId};
use crate::run::CacheOutcome;
use crate::store::{ArtifactRecord, CacheEntry, ConsumerRecord};

impl Engine {
    /// Writes the index records of instance `i`'s outputs and inputs, and its cache entry
    /// under `cache_key`.
    pub(super) fn index_outputs(
        &mut self,
        id: &RunId,
        i: usize,
        cache_key: Option<String>,
        now: Millis,
    ) {
        let Some(run) = self.runs.get(id) else {
            warn!(run = %id, "run gone before its outputs were indexed");
            return;
        };
        let record = &run.stages[i];
        let cached_from = match &record.cache {
            Some(note) => match &note.outcome {
                CacheOutcome::Hit { run, .. } => Some(run.clone()),
                CacheOutcome::Miss { .. } => None,
            },
            None => None,
        };
        for output in &record.outputs {
            self.batch.put_artifact(ArtifactRecord {
                run: id.clone(),
                stage: record.instance.clone(),
                name: output.name.clone(),
                digest: output.digest.clone(),
                size: output.size,
                created_ms: now,
                cached_from: cached_from.clone(),
            });
        }
        if cached_from.is_some() {
            // A hit consumed nothing: the run it reused did.
            return;
        }
        for input in task_inputs(run, i) {
            self.batch.put_consumer(ConsumerRecord {
                digest: input.digest,
                run: id.clone(),
                stage: record.instance.clone(),
            });
        }
        if let Some(key) = cache_key {
            self.batch.put_cache(CacheEntry {
                key,
                run: id.clone(),
                stage: record.instance.clone(),
                outputs: record.outputs.clone(),
                metrics: record.metrics.clone(),
                created_ms: now,
            });
        }
    }
}
