//! Dispatch: ready stage instances handed to workers where they fit. Each DAG has its own
//! line of ready instances and the DAGs take turns, so a 10,000-stage fan-out does not
//! starve a nightly retrain that became ready after it. Within a DAG, instances that already
//! ran (a retry, a lost attempt) go first.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use tracing::warn;

use super::WorkerMessage;
use super::core::{AttemptRoute, Effect, Engine};
use super::task::build_task;
use super::workers::Claim;
use crate::ids::{AttemptId, Millis, RunId, WorkerId, now_ms};
use crate::run::{AttemptOutcome, Event};

/// How deep into one DAG's line a turn looks for an instance that fits somewhere now.
const SCAN_DEPTH: usize = 256;

/// A ready instance waiting for a worker.
#[derive(Debug, Clone)]
pub(super) struct Ready {
    pub(super) run: RunId,
    pub(super) instance: usize,
    pub(super) since: Instant,
}

/// Ready instances, one line per DAG, served in turns.
#[derive(Debug, Default)]
pub(super) struct ReadyQueue {
    lines: HashMap<String, VecDeque<Ready>>,
    turns: VecDeque<String>,
}

impl ReadyQueue {
    /// Adds an instance at the end of its DAG's line, or at the front when `first`.
    pub(super) fn push(&mut self, dag: &str, ready: Ready, first: bool) {
        let line = match self.lines.get_mut(dag) {
            Some(line) => line,
            None => {
                self.turns.push_back(dag.to_owned());
                self.lines.entry(dag.to_owned()).or_default()
            }
        };
        if first {
            line.push_front(ready);
        } else {
            line.push_back(ready);
        }
    }
}

/// What a look at one DAG's line found.
enum Pick {
    /// Dispatch the instance at this position of the line to this worker.
    Place(usize, WorkerId, Claim),
    /// Nothing in the scanned part fits anywhere now.
    Nothing,
}

impl Engine {
    /// Hands ready instances to workers where they fit, DAG by DAG in turns.
    pub(super) fn dispatch(&mut self) {
        let now = now_ms();
        let limit = match self.config.max_running {
            0 => usize::MAX,
            n => n as usize,
        };
        let mut free = self.workers.total_free();
        let mut running = self.workers.total_running();
        let mut stalled = 0;
        while free > 0 && running < limit && stalled < self.ready.turns.len() {
            let Some(dag) = self.ready.turns.pop_front() else {
                break;
            };
            let placed = match self.pick_in_line(&dag, now) {
                Pick::Place(position, worker, claim) => {
                    let line = self.ready.lines.get_mut(&dag).expect("picked from it");
                    let ready = line.remove(position).expect("position is in the line");
                    self.dispatch_one(ready, worker, claim, now)
                }
                Pick::Nothing => false,
            };
            if self.ready.lines.get(&dag).is_some_and(|l| !l.is_empty()) {
                self.ready.turns.push_back(dag);
            } else {
                self.ready.lines.remove(&dag);
            }
            if placed {
                stalled = 0;
                free -= 1;
                running += 1;
            } else {
                stalled += 1;
            }
        }
    }

    /// Finds the first instance in `dag`'s line that fits a worker now, dropping what is no
    /// longer ready and failing what no worker could ever run.
    fn pick_in_line(&mut self, dag: &str, now: Millis) -> Pick {
        let mut position = 0;
        let mut scanned = 0;
        loop {
            let Some(ready) = self.ready.lines.get(dag).and_then(|l| l.get(position)) else {
                return Pick::Nothing;
            };
            if scanned == SCAN_DEPTH {
                return Pick::Nothing;
            }
            scanned += 1;
            let (run_id, instance) = (ready.run.clone(), ready.instance);
            let Some(run) = self
                .runs
                .get(&run_id)
                .filter(|r| r.is_dispatchable(instance))
            else {
                self.ready.lines.get_mut(dag).map(|l| l.remove(position));
                continue;
            };
            let stage = &run.plan.dag.stages[run.plan.nodes[instance].stage];
            if let Some((worker, claim)) = self.workers.pick_for(stage) {
                return Pick::Place(position, worker, claim);
            }
            let settled = self.started.elapsed() >= self.config.lease;
            match self.workers.why_nowhere(stage).filter(|_| settled) {
                Some(why) => {
                    let reason = format!("no worker can run stage {}: {why}", stage.name);
                    warn!(run = %run_id, instance, %reason, "stage refused");
                    self.ready.lines.get_mut(dag).map(|l| l.remove(position));
                    let _ = self.apply(&run_id, Event::Refused { instance, reason }, now);
                }
                None => position += 1,
            }
        }
    }

    /// Starts one attempt of `ready` on `worker`; false if it could not be dispatched.
    fn dispatch_one(&mut self, ready: Ready, worker: WorkerId, claim: Claim, now: Millis) -> bool {
        let Ready {
            run: id,
            instance: i,
            since,
        } = ready;
        let Some(run) = self.runs.get(&id) else {
            return false;
        };
        let attempt = AttemptId::random();
        let number = run.stages[i].attempts.len() as u32 + 1;
        let key = (run.record.dag.clone(), run.record.dag_version.clone());
        let files = self.files.get(&key).cloned().unwrap_or_default();
        let task = build_task(run, i, &attempt, number, &files).map(|mut task| {
            task.gpus = claim.gpus.clone();
            task
        });
        let dispatched = Event::Dispatched {
            instance: i,
            attempt: attempt.clone(),
            worker: worker.clone(),
            gpus: claim.gpus.clone(),
        };
        if let Err(e) = self.apply(&id, dispatched, now) {
            warn!(run = %id, instance = i, error = %e, "dispatch refused");
            return false;
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
        self.workers.assign(&worker, attempt.clone(), claim);
        match task {
            Ok(task) => {
                self.effects
                    .push(Effect::Send(worker, WorkerMessage::Task(Box::new(task))));
            }
            Err(message) => {
                let outcome = AttemptOutcome::Error {
                    message,
                    transient: false,
                };
                let _ = self.finish_attempt(&attempt, outcome, now);
            }
        }
        true
    }
}
