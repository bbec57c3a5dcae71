//! Dispatch: ready stage instances handed to workers where they fit. Each DAG has its own
//! line of ready instances and the DAGs take turns, so a 10,000-stage fan-out does not
//! starve a nightly retrain that became ready after it. Within a DAG, every stage of every
//! run has its own queue (its instances ask for the same labels and resources), and those
//! take turns too: a stage waiting for a busy GPU worker never holds back a stage that fits
//! an idle CPU worker, however many instances are queued ahead of it. Instances that already
//! ran (a retry, a lost attempt) go to the front of their queue.

use tracing::warn;

use super::WorkerMessage;
use super::core::Engine;
use super::state::{AttemptRoute, Effect, Ready, StageKey};
use super::task::{SecretSource, build_task};
use super::workers::Claim;
use crate::ids::{AttemptId, Millis, WorkerId};
use crate::run::{AttemptOutcome, Event};

impl Engine {
    /// Hands ready instances to workers where they fit, DAG by DAG in turns.
    pub(super) fn dispatch(&mut self) {
        let now = self.now();
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
                Some((ready, worker, claim)) => self.dispatch_one(ready, worker, claim, now),
                None => false,
            };
            if self
                .ready
                .lines
                .get(&dag)
                .is_some_and(|l| !l.queues.is_empty())
            {
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

    /// Takes the first instance of `dag` that fits a worker now, trying each stage's queue
    /// once, in turn; drops what is no longer ready and fails what no worker could ever run.
    fn pick_in_line(&mut self, dag: &str, now: Millis) -> Option<(Ready, WorkerId, Claim)> {
        let stages = self.ready.lines.get(dag)?.turns.len();
        for _ in 0..stages {
            let line = self.ready.lines.get_mut(dag)?;
            let key = line.turns.pop_front()?;
            let picked = self.pick_in_queue(dag, &key, now);
            let line = self.ready.lines.get_mut(dag)?;
            if line.queues.get(&key).is_some_and(|q| !q.is_empty()) {
                line.turns.push_back(key);
            } else {
                line.queues.remove(&key);
            }
            if picked.is_some() {
                return picked;
            }
        }
        None
    }

    /// The head of one stage's queue, if it fits a worker now.
    fn pick_in_queue(
        &mut self,
        dag: &str,
        key: &StageKey,
        now: Millis,
    ) -> Option<(Ready, WorkerId, Claim)> {
        loop {
            let queue = self.ready.lines.get_mut(dag)?.queues.get_mut(key)?;
            let ready = queue.front()?.clone();
            let Some(run) = self
                .runs
                .get(&ready.run)
                .filter(|r| r.is_dispatchable(ready.instance))
            else {
                queue.pop_front();
                continue;
            };
            let stage = &run.plan.dag.stages[run.plan.nodes[ready.instance].stage];
            if let Some((worker, claim)) = self.workers.pick_for(stage) {
                queue.pop_front();
                return Some((ready, worker, claim));
            }
            let settled = self.started.elapsed() >= self.config.lease;
            let why = self.workers.why_nowhere(stage).filter(|_| settled)?;
            // No worker could ever run it: every instance of this stage fails the same way.
            let reason = format!("no worker can run stage {}: {why}", stage.name);
            warn!(run = %ready.run, instance = ready.instance, %reason, "stage refused");
            queue.pop_front();
            let event = Event::Refused {
                instance: ready.instance,
                reason,
            };
            let _ = self.apply(&ready.run, event, now);
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
        let secrets = SecretSource {
            key: self.config.secrets.as_deref(),
            store: Some(self.store.as_ref()),
        };
        let task = build_task(run, i, &attempt, number, &files, &secrets).map(|mut task| {
            task.gpus = claim.gpus.clone();
            task.max_log_bytes = self.config.max_log_bytes;
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
        let freed = self.workers.assign(&worker, attempt.clone(), claim);
        // A stage that became ready while every fitting slot was busy could not go before one
        // was freed: from then on, the wait is the engine's.
        let eligible = freed.map_or(since, |freed| freed.max(since));
        self.metrics.record(since.elapsed(), eligible.elapsed());
        self.telemetry
            .dispatch_latency
            .observe(since.elapsed().as_secs_f64());
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
                self.effects
                    .push(Effect::Send(worker, WorkerMessage::Task(Box::new(task))));
            }
            Err(message) => {
                let outcome = AttemptOutcome::Error {
                    message,
                    transient: false,
                };
                let _ = self.finish_attempt(&attempt, outcome.into(), now);
            }
        }
        true
    }
}
