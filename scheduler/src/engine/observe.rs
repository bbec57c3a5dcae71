//! What the engine's turns tell the metrics: stage and run transitions, seen as their
//! records are written (the one place every change passes), and the snapshot of current
//! state `/metrics` asks for at scrape time.

use std::collections::HashMap;
use std::time::Duration;

use tracing::info;

use crate::ids::{Millis, RunId};
use crate::metrics::{DagLabel, DagStateLabels, Metrics};
use crate::run::{RunRecord, RunState, StageRecord, StageState};

/// The last state written per stage instance and run of the active runs.
#[derive(Debug, Default)]
pub(super) struct Observer {
    stages: HashMap<(RunId, usize), Seen>,
    runs: HashMap<RunId, RunState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Waiting,
    Queued { since_ms: Millis },
    Running { started_ms: Millis },
    Done,
}

fn ms(from: Millis, to: Millis) -> Duration {
    Duration::from_millis(u64::try_from(to - from).unwrap_or(0))
}

impl Observer {
    /// Stage `index` of `run` (of `dag`) was written as `record`.
    pub(super) fn stage(
        &mut self,
        metrics: &Metrics,
        run: &RunId,
        dag: &str,
        index: usize,
        record: &StageRecord,
    ) {
        let before = self
            .stages
            .get(&(run.clone(), index))
            .copied()
            .unwrap_or(Seen::Waiting);
        let now = match &record.state {
            // A stage waiting for approval holds no slot: not queued for a worker yet.
            StageState::Pending | StageState::WaitingApproval { .. } => Seen::Waiting,
            StageState::Queued { since_ms, .. } => Seen::Queued {
                since_ms: *since_ms,
            },
            StageState::Running { started_ms, .. } => Seen::Running {
                started_ms: *started_ms,
            },
            _ => Seen::Done,
        };
        if before == now {
            return;
        }
        let worker = record.attempts.last().map(|a| a.worker.to_string());
        let worker = worker.as_deref().unwrap_or("");
        match (before, now) {
            (_, Seen::Running { started_ms }) => {
                info!(run = %run, stage = %record.instance, worker, dag, "stage running");
                let queued = match before {
                    Seen::Queued { since_ms } => Some(since_ms),
                    _ => record.queued_ms,
                };
                if let Some(queued) = queued {
                    metrics
                        .queue_wait
                        .get_or_create(&DagLabel {
                            dag: dag.to_owned(),
                        })
                        .observe(ms(queued, started_ms).as_secs_f64());
                }
            }
            (Seen::Done, _) => {}
            (_, Seen::Done) => {
                let ran = match (before, record.state.finished_ms()) {
                    (Seen::Running { started_ms }, Some(end)) => Some(ms(started_ms, end)),
                    _ => None,
                };
                info!(run = %run, stage = %record.instance, worker, dag,
                      state = record.state.name(), "stage finished");
                metrics.observe_stage(dag, record.state.name(), ran);
            }
            _ => {}
        }
        self.stages.insert((run.clone(), index), now);
    }

    /// The run record `record` was written.
    pub(super) fn run(&mut self, metrics: &Metrics, record: &RunRecord) {
        let before = self.runs.insert(record.id.clone(), record.state);
        if before == Some(record.state) {
            return;
        }
        let started =
            !matches!(before, Some(RunState::Running)) && matches!(record.state, RunState::Running);
        if started {
            metrics
                .runs_started
                .get_or_create(&DagLabel {
                    dag: record.dag.clone(),
                })
                .inc();
        }
        if record.state.is_final() {
            metrics
                .runs_finished
                .get_or_create(&DagStateLabels {
                    dag: record.dag.clone(),
                    state: record.state.as_str().to_owned(),
                })
                .inc();
        }
    }

    /// `run` (with `stages` instances) left the engine.
    pub(super) fn forget(&mut self, run: &RunId, stages: usize) {
        self.runs.remove(run);
        for index in 0..stages {
            self.stages.remove(&(run.clone(), index));
        }
    }
}

/// The engine's current state as gauges show it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// (worker, slots, free slots) of connected workers.
    pub workers: Vec<(String, u32, u32)>,
    /// Attempts running on workers.
    pub running: usize,
    /// (DAG, next fire time) of scheduled DAGs that are not paused.
    pub next_fires: Vec<(String, Millis)>,
}

impl super::core::Engine {
    /// The gauges' view of the engine now.
    pub(super) fn snapshot(&self) -> Snapshot {
        let workers = self
            .worker_views()
            .into_iter()
            .filter(|w| w.connected)
            .map(|w| {
                let busy = u32::try_from(w.running.len()).unwrap_or(u32::MAX);
                (w.name, w.slots, w.slots.saturating_sub(busy))
            })
            .collect();
        Snapshot {
            workers,
            running: self.attempts.len(),
            next_fires: self.schedules.book.next_fires(),
        }
    }
}
