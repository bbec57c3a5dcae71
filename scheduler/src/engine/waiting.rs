//! Why queued stages wait: after each dispatch round the engine notes, per stage of a run
//! that still has ready instances, why no worker took them, and tells watchers when that
//! changes. The reasons live in memory only (they are recomputed after a restart); watchers
//! read them through [`Waiting`] to fill the message of a queued stage.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::EngineEvent;
use super::core::Engine;
use crate::ids::RunId;
use crate::run::{StageRecord, StageState};

/// Stages whose reasons are worked out per turn, at most.
const MAX_NOTED_STAGES: usize = 256;

/// The current waiting reason per run and stage name, shared with the API.
#[derive(Debug, Clone, Default)]
pub struct Waiting(Arc<Mutex<HashMap<RunId, BTreeMap<String, String>>>>);

impl Waiting {
    /// Why the queued instance `instance` (`stage` or `stage[item]`) of `run` waits, if known.
    pub fn reason(&self, run: &RunId, instance: &str) -> Option<String> {
        let stage = instance.split('[').next().unwrap_or(instance);
        let board = self.0.lock().ok()?;
        board.get(run)?.get(stage).cloned()
    }

    /// Fills in why a stage queued for a worker waits, unless its message says something else.
    pub fn explain(&self, run: &RunId, record: &StageRecord, message: &mut String) {
        let for_worker = matches!(
            record.state,
            StageState::Queued {
                not_before_ms: None,
                ..
            }
        );
        if for_worker
            && message.is_empty()
            && let Some(reason) = self.reason(run, &record.instance)
        {
            *message = reason;
        }
    }

    fn forget(&self, run: &RunId) {
        if let Ok(mut board) = self.0.lock() {
            board.remove(run);
        }
    }

    fn set(&self, run: &RunId, stage: &str, reason: Option<&str>) {
        let Ok(mut board) = self.0.lock() else {
            return;
        };
        match reason {
            Some(r) => {
                board
                    .entry(run.clone())
                    .or_default()
                    .insert(stage.to_owned(), r.to_owned());
            }
            None => {
                if let Some(stages) = board.get_mut(run) {
                    stages.remove(stage);
                    if stages.is_empty() {
                        board.remove(run);
                    }
                }
            }
        }
    }
}

impl Engine {
    /// Notes why each stage with instances still in the ready queue waits, and publishes the
    /// queued instances of a stage whose reason changed. Costs one look over the workers per
    /// waiting stage (not per instance); nothing is written to the store.
    pub(super) fn note_waiting(&mut self) {
        let limit = self.config.max_running as usize;
        let capped = limit > 0 && self.workers.total_running() >= limit;
        let mut now: HashMap<(RunId, usize), String> = HashMap::new();
        // The first stages in line only: a 10,000-stage fan-out does not pay for a reason per
        // stage on every turn, and people watch the front of the line.
        for (run_id, stage) in self.ready.waiting_stages().take(MAX_NOTED_STAGES) {
            let Some(run) = self.runs.get(run_id) else {
                continue;
            };
            let reason = if capped {
                format!("waiting: {limit} stages already run at once (the scheduler's limit)")
            } else {
                self.workers.why_waiting(&run.plan.dag.stages[*stage])
            };
            now.insert((run_id.clone(), *stage), reason);
        }
        let before = std::mem::take(&mut self.waiting_noted);
        for (key, _) in before.iter().filter(|(k, _)| !now.contains_key(*k)) {
            if let Some(run) = self.runs.get(&key.0) {
                let name = run.plan.dag.stages[key.1].name.to_string();
                self.waiting.set(&key.0, &name, None);
            } else {
                self.waiting.forget(&key.0);
            }
        }
        let mut changed: HashMap<RunId, HashSet<usize>> = HashMap::new();
        for (key, reason) in &now {
            if before.get(key) == Some(reason) {
                continue;
            }
            let Some(run) = self.runs.get(&key.0) else {
                continue;
            };
            let name = run.plan.dag.stages[key.1].name.to_string();
            self.waiting.set(&key.0, &name, Some(reason));
            changed.entry(key.0.clone()).or_default().insert(key.1);
        }
        // The instances of the stages that changed only (a turn of a 10,000-stage fan-out
        // looks at a few stages, not at every instance of the run), in plan order.
        for (run_id, stages) in changed {
            let Some(run) = self.runs.get(&run_id) else {
                continue;
            };
            let mut instances: Vec<usize> = stages
                .iter()
                .flat_map(|&s| run.plan.instances_of_stage[s].iter().copied())
                .collect();
            instances.sort_unstable();
            for i in instances {
                // Instances that changed this turn are published at its end anyway.
                if !run.is_dirty(i)
                    && matches!(
                        run.stages[i].state,
                        StageState::Queued {
                            not_before_ms: None,
                            ..
                        }
                    )
                {
                    self.published.push(Arc::new(EngineEvent::Stage {
                        run: run_id.clone(),
                        record: Arc::new(run.stages[i].clone()),
                    }));
                }
            }
        }
        self.waiting_noted = now;
    }
}
