//! Dispatch: ready stage instances handed to workers with free slots.

use tracing::warn;

use super::WorkerMessage;
use super::core::{AttemptRoute, Effect, Engine};
use super::task::build_task;
use crate::ids::{AttemptId, now_ms};
use crate::run::{AttemptOutcome, Event};

impl Engine {
    /// Hands ready instances to workers with free slots.
    pub(super) fn dispatch(&mut self) {
        let now = now_ms();
        let mut free = self.workers.total_free();
        let mut passes = self.ready.len();
        while free > 0 && passes > 0 {
            passes -= 1;
            let Some((id, i, since)) = self.ready.pop_front() else {
                break;
            };
            let Some(run) = self.runs.get(&id) else {
                continue;
            };
            if !run.is_dispatchable(i) {
                continue;
            }
            let stage = &run.plan.dag.stages[run.plan.nodes[i].stage];
            let Some(worker) = self.workers.pick_for(stage) else {
                self.ready.push_back((id, i, since));
                continue;
            };
            let attempt = AttemptId::random();
            let number = run.stages[i].attempts.len() as u32 + 1;
            let key = (run.record.dag.clone(), run.record.dag_version.clone());
            let files = self.files.get(&key).cloned().unwrap_or_default();
            let task = build_task(run, i, &attempt, number, &files);
            let dispatched = Event::Dispatched {
                instance: i,
                attempt: attempt.clone(),
                worker: worker.clone(),
            };
            if let Err(e) = self.apply(&id, dispatched, now) {
                warn!(run = %id, instance = i, error = %e, "dispatch refused");
                continue;
            }
            self.metrics.record(since.elapsed().as_micros() as u64);
            self.attempts.insert(
                attempt.clone(),
                AttemptRoute {
                    run: id.clone(),
                    instance: i,
                    worker: worker.clone(),
                },
            );
            match task {
                Ok(task) => {
                    self.workers.assign(&worker, attempt);
                    self.effects
                        .push(Effect::Send(worker, WorkerMessage::Task(Box::new(task))));
                    free -= 1;
                }
                Err(message) => {
                    let outcome = AttemptOutcome::Error {
                        message,
                        transient: false,
                    };
                    let _ = self.finish_attempt(&attempt, outcome, now);
                }
            }
        }
    }
}
