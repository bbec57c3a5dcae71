//! The engine actor's state and loop. See the module above for the order of a turn.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::EngineError;
use super::assets::AssetBook;
use super::metrics::DispatchMetrics;
use super::observe::Observer;
use super::state::{AttemptRoute, Effect, Ready, ReadyQueue, Schedules};
use super::waiting::Waiting;
use super::workers::Workers;
use super::{Command, DagFiles, EngineConfig, EngineEvent, WorkerMessage};
use crate::dag::Dag;
use crate::ids::{AttemptId, Millis, RunId};
use crate::metrics::Metrics;
use crate::run::{Action, AttemptOutcome, Event, Run, StageState, TransitionError};
use crate::store::{Store, WriteBatch};

/// Commands taken per turn at most, so a flood cannot starve timers.
const MAX_COMMANDS_PER_TURN: usize = 4096;

pub(crate) struct Engine {
    pub(super) store: Arc<dyn Store>,
    pub(super) config: EngineConfig,
    pub(super) events: broadcast::Sender<Arc<EngineEvent>>,
    /// Parsed DAG versions, by (name, version).
    pub(super) dags: HashMap<(String, String), Arc<Dag>>,
    /// Local folders of DAG versions (embedded modes).
    pub(super) files: HashMap<(String, String), DagFiles>,
    /// Runs that are queued or running.
    pub(super) runs: HashMap<RunId, Run>,
    pub(super) ready: ReadyQueue,
    /// When this engine started (monotonic, on its clock): a stage no worker fits fails only
    /// once workers had a lease to reconnect.
    pub(super) started: tokio::time::Instant,
    /// Until then (one lease after recovery) no deadline of a run that had attempts running
    /// when the scheduler went down strikes: the workers come back first and report how their
    /// attempts ended.
    pub(super) reconcile_until: Millis,
    /// The runs recovered with attempts running; only their deadlines wait for reconciling.
    pub(super) reconciling: HashSet<RunId>,
    pub(super) timers: BinaryHeap<Reverse<(Millis, RunId)>>,
    /// The wake-up time last pushed per run, so an unchanged one is not pushed again.
    pub(super) scheduled: HashMap<RunId, Millis>,
    pub(super) attempts: HashMap<AttemptId, AttemptRoute>,
    pub(super) workers: Workers,
    pub(super) batch: WriteBatch,
    pub(super) effects: Vec<Effect>,
    pub(super) published: Vec<Arc<EngineEvent>>,
    pub(super) touched: HashSet<RunId>,
    pub(super) finished: Vec<RunId>,
    /// Attempts whose task could not be delivered; lost at the start of the next turn.
    pub(super) undelivered: Vec<AttemptId>,
    pub(super) metrics: DispatchMetrics,
    /// The Prometheus series the engine updates.
    pub(super) telemetry: Arc<Metrics>,
    pub(super) observer: Observer,
    pub(super) schedules: Schedules,
    /// Queued instances of `cache: true` stages, to look up before they go to a worker.
    pub(super) cache_checks: Vec<(RunId, usize)>,
    /// Content digests of the local DAG folders of active runs (embedded modes), for keys.
    pub(super) local_dir_digests: HashMap<RunId, String>,
    /// Why queued stages wait, shared with watchers.
    pub(super) waiting: Waiting,
    /// The reasons last noted per stage of a run, to publish only changes.
    pub(super) waiting_noted: HashMap<(RunId, usize), String>,
    /// Assets and asset-trigger cursors, as this engine last wrote or read them.
    pub(super) assets: AssetBook,
}

impl Engine {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        config: EngineConfig,
        events: broadcast::Sender<Arc<EngineEvent>>,
    ) -> Engine {
        let started = config.clock.instant();
        Engine {
            store,
            config,
            events,
            dags: HashMap::new(),
            files: HashMap::new(),
            runs: HashMap::new(),
            ready: ReadyQueue::default(),
            started,
            reconcile_until: 0,
            reconciling: HashSet::new(),
            timers: BinaryHeap::new(),
            scheduled: HashMap::new(),
            attempts: HashMap::new(),
            workers: Workers::default(),
            batch: WriteBatch::new(),
            effects: Vec::new(),
            published: Vec::new(),
            touched: HashSet::new(),
            finished: Vec::new(),
            undelivered: Vec::new(),
            metrics: DispatchMetrics::default(),
            telemetry: Metrics::shared(),
            observer: Observer::default(),
            schedules: Schedules::default(),
            cache_checks: Vec::new(),
            local_dir_digests: HashMap::new(),
            waiting: Waiting::default(),
            waiting_noted: HashMap::new(),
            assets: AssetBook::default(),
        }
    }

    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Command>,
        shutdown: CancellationToken,
    ) {
        loop {
            let wake = self.next_timer_instant();
            let mut stopping = false;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    // Stop taking work, but answer what was already asked: the commands
                    // queued now are handled and written in one last turn.
                    stopping = true;
                    rx.close();
                    let mut taken = 0;
                    while taken < MAX_COMMANDS_PER_TURN {
                        match rx.try_recv() {
                            Ok(command) => self.handle(command),
                            Err(_) => break,
                        }
                        taken += 1;
                    }
                }
                command = rx.recv() => {
                    let Some(command) = command else { break };
                    self.handle(command);
                    let mut taken = 1;
                    while taken < MAX_COMMANDS_PER_TURN {
                        match rx.try_recv() {
                            Ok(command) => self.handle(command),
                            Err(_) => break,
                        }
                        taken += 1;
                    }
                }
                _ = sleep_until(wake) => {}
            }
            if !stopping {
                let now = self.now();
                self.expire_leases(now);
                self.fire_timers(now);
                self.fire_schedules(now);
                self.lose_undelivered();
                self.resolve_cache_checks(now);
                self.dispatch();
                self.note_waiting();
            }
            if let Err(e) = self.end_turn().await {
                // Without a working store nothing can be promised; stop rather than act on
                // state that is not written. Callers waiting for this turn learn why from
                // the store (see `EngineHandle::call`).
                tracing::error!(error = %e, "store failed; the engine stops");
                break;
            }
            if stopping {
                break;
            }
        }
        debug!("engine stopped");
    }

    /// Wall time now, on the engine's clock.
    pub(super) fn now(&self) -> Millis {
        self.config.clock.now_ms()
    }

    /// When the engine must wake with no command: the earliest run timer (retry backoff,
    /// timeouts), schedule slot or lease expiry, and once when workers have had a lease to
    /// come back after the start.
    fn next_timer_instant(&self) -> Option<tokio::time::Instant> {
        let clock = &self.config.clock;
        if !self.undelivered.is_empty() || !self.cache_checks.is_empty() {
            return Some(clock.instant());
        }
        let run_timer = self.timers.peek().map(|Reverse((at, _))| *at);
        let wall = [
            run_timer,
            self.next_schedule_deadline(),
            self.workers.next_expiry(),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|at| clock.instant_at(at));
        let settled = self.started + self.config.lease;
        let settle = (clock.instant() < settled).then_some(settled);
        wall.into_iter().chain(settle).min()
    }

    fn handle(&mut self, command: Command) {
        let now = self.now();
        match command {
            Command::Submit {
                dag,
                file_name,
                source,
                files,
                reply,
            } => {
                let result = self.submit(dag, file_name, source, files, now);
                self.reply(reply, result);
            }
            Command::Trigger {
                dag,
                params,
                no_cache,
                reply,
            } => {
                let result = self.trigger(&dag, &params, no_cache, now);
                self.reply(reply, result);
            }
            Command::Cancel { run, reply } => {
                let result = self.cancel(&run, now);
                self.reply(reply, result);
            }
            Command::Register {
                registration,
                reply,
            } => {
                let result = self.register(registration, now);
                self.reply(reply, result);
            }
            Command::AttachInbox {
                worker,
                inbox,
                reply,
            } => {
                let result = match self.workers.entries.get_mut(&worker) {
                    Some(w) => {
                        w.inbox = Some(inbox);
                        Ok(())
                    }
                    None => Err(EngineError::WorkerNotRegistered {
                        worker: worker.0.clone(),
                    }),
                };
                // Answer at once: nothing was written.
                let _ = reply.send(result);
            }
            Command::Heartbeat {
                worker,
                running,
                draining,
                reply,
            } => {
                let result = self.heartbeat(&worker, running, draining, now);
                let _ = reply.send(Ok(result));
            }
            Command::Decide {
                run,
                stage,
                verdict,
                reply,
            } => {
                let result = self.decide(&run, &stage, verdict, now);
                self.reply(reply, result);
            }
            Command::Retry { run, mode, reply } => {
                let result = self.retry(&run, mode, now);
                self.reply(reply, result);
            }
            Command::Started {
                worker,
                attempt,
                handle,
                reply,
            } => {
                self.touch_lease(&worker, now);
                let result = self.route(&attempt).and_then(|route| {
                    self.apply(
                        &route.run,
                        Event::Started {
                            instance: route.instance,
                            attempt: attempt.clone(),
                            handle,
                        },
                        now,
                    )
                });
                self.reply(reply, result);
            }
            Command::Finished {
                worker,
                attempt,
                report,
                reply,
            } => {
                self.touch_lease(&worker, now);
                // A worker stops a current attempt on its own only when it shuts down: hand it
                // nothing more (not even this attempt's retry) until it registers again.
                let shutting_down = report.outcome == AttemptOutcome::Cancelled;
                let result = self.finish_attempt(&attempt, report, now);
                if shutting_down && result.is_ok() {
                    self.workers.close_inbox(&worker);
                }
                self.reply(reply, result);
            }
            Command::Metrics { reply } => {
                let _ = reply.send(self.metrics.clone());
            }
            Command::Snapshot { reply } => {
                let _ = reply.send(self.snapshot());
            }
            Command::Workers { reply } => {
                let _ = reply.send(self.worker_views());
            }
            Command::Drain {
                worker,
                undo,
                reply,
            } => {
                let result = self.drain(&worker, undo);
                let _ = reply.send(result);
            }
            Command::Schedule(command) => self.handle_schedule(command, now),
            Command::DeleteRuns { runs, reply } => {
                let result = self.delete_runs(&runs);
                self.reply(reply, result);
            }
            Command::PruneRuns { policy, reply } => {
                let result = self.prune_runs(policy, now);
                self.reply(reply, result);
            }
        }
    }

    /// Queues a reply to be sent once this turn's writes are durable.
    pub(super) fn reply<T: Send + 'static>(
        &mut self,
        reply: tokio::sync::oneshot::Sender<Result<T, EngineError>>,
        result: Result<T, EngineError>,
    ) {
        self.effects.push(Effect::Reply(Box::new(move || {
            let _ = reply.send(result);
        })));
    }

    /// Applies `event` to an active run and handles the resulting actions.
    pub(super) fn apply(
        &mut self,
        id: &RunId,
        event: Event,
        now: Millis,
    ) -> Result<(), EngineError> {
        let run = self
            .runs
            .get_mut(id)
            .ok_or_else(|| EngineError::RunNotFound { id: id.0.clone() })?;
        let actions = run.apply(event, now).map_err(transition_error)?;
        self.touched.insert(id.clone());
        self.handle_actions(id, actions, now);
        Ok(())
    }

    pub(super) fn handle_actions(&mut self, id: &RunId, actions: Vec<Action>, now: Millis) {
        for action in actions {
            match action {
                Action::Ready { instance } => {
                    let Some(run) = self.runs.get(id) else {
                        continue;
                    };
                    let stage = run.plan.nodes[instance].stage;
                    if run.plan.dag.stages[stage].cache {
                        // Looked up once this turn's events are applied; a hit never
                        // reaches a worker.
                        self.cache_checks.push((id.clone(), instance));
                    } else {
                        self.push_ready(id, instance);
                    }
                }
                Action::Kill {
                    attempt, worker, ..
                } => {
                    self.attempts.remove(&attempt);
                    self.workers.release(&worker, &attempt);
                    self.effects.push(Effect::Send(
                        worker,
                        WorkerMessage::Cancel {
                            attempt,
                            reason: "the run was cancelled or timed out".to_owned(),
                        },
                    ));
                }
                Action::Succeeded {
                    instance,
                    cache_key,
                } => {
                    self.index_outputs(id, instance, cache_key, now);
                    self.publish_assets(id, instance, now);
                }
                Action::RunFinished { state } => {
                    info!(run = %id, state = state.as_str(), "run finished");
                    self.finished.push(id.clone());
                }
            }
        }
    }

    /// Puts a queued instance in its DAG's line for a worker.
    pub(super) fn push_ready(&mut self, id: &RunId, instance: usize) {
        let Some(run) = self.runs.get(id) else {
            return;
        };
        // An instance that ran before (retry, lost attempt) goes first.
        let first = !run.stages[instance].attempts.is_empty();
        let ready = Ready {
            run: id.clone(),
            instance,
            since: Instant::now(),
        };
        let stage = run.plan.nodes[instance].stage;
        self.ready.push(&run.record.dag, stage, ready, first);
    }

    fn fire_timers(&mut self, now: Millis) {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, id))) = self.timers.pop() else {
                break;
            };
            if self.scheduled.get(&id) == Some(&at) {
                self.scheduled.remove(&id);
            }
            let Some(run) = self.runs.get(&id) else {
                continue;
            };
            let due = run.next_wakeup().is_some_and(|t| t <= now);
            if due
                && now < self.reconcile_until
                && self.reconciling.contains(&id)
                && deadline_passed(run, now)
            {
                // The deadline may have passed while the scheduler was down, and the attempt
                // may have ended then: its worker re-reports within a lease. Judge after.
                let at = self.reconcile_until;
                if self.scheduled.get(&id).is_none_or(|t| *t > at) {
                    self.scheduled.insert(id.clone(), at);
                    self.timers.push(Reverse((at, id)));
                }
                continue;
            }
            if due {
                let _ = self.apply(&id, Event::Tick, now);
            }
        }
    }

    /// Writes everything this turn changed, makes it durable, then acts on it.
    pub(super) async fn end_turn(&mut self) -> Result<(), EngineError> {
        let now = self.now();
        loop {
            for id in std::mem::take(&mut self.touched) {
                let Some(run) = self.runs.get_mut(&id) else {
                    continue;
                };
                let (run_changed, stages) = run.take_dirty();
                // Stages first: a watcher stops at the run's final event.
                for i in stages {
                    // One copy, shared by the published event and the store batch.
                    let record = Arc::new(run.stages[i].clone());
                    self.observer
                        .stage(&self.telemetry, &id, &run.record.dag, i, &record);
                    self.published.push(Arc::new(EngineEvent::Stage {
                        run: id.clone(),
                        record: record.clone(),
                    }));
                    self.batch.put_stage(&id, record);
                }
                if run_changed {
                    self.observer.run(&self.telemetry, &run.record);
                    self.batch.put_run(run.record.clone());
                    self.published
                        .push(Arc::new(EngineEvent::Run(run.record.clone())));
                }
                if let Some(t) = run.next_wakeup()
                    && self.scheduled.get(&id) != Some(&t)
                {
                    self.scheduled.insert(id.clone(), t);
                    self.timers.push(Reverse((t, id.clone())));
                }
            }
            if self.finished.is_empty() {
                break;
            }
            for id in std::mem::take(&mut self.finished) {
                self.scheduled.remove(&id);
                self.local_dir_digests.remove(&id);
                if let Some(run) = self.runs.remove(&id) {
                    self.observer.forget(&id, run.stages.len());
                    self.admit_queued_runs(&run.record.dag, now);
                }
            }
        }
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            let records = batch.len();
            let started = Instant::now();
            self.store.commit(batch).await?;
            self.telemetry
                .store_commit
                .observe(started.elapsed().as_secs_f64());
            self.telemetry.store_batch_records.observe(records as f64);
            self.metrics.commits += 1;
        }
        for event in self.published.drain(..) {
            let _ = self.events.send(event);
        }
        for effect in std::mem::take(&mut self.effects) {
            match effect {
                Effect::Reply(send) => send(),
                Effect::Send(worker, message) => {
                    let attempt = match &message {
                        WorkerMessage::Task(task) => Some(task.attempt.clone()),
                        WorkerMessage::Cancel { .. } => None,
                    };
                    if !self.workers.send(&worker, message)
                        && let Some(attempt) = attempt
                    {
                        self.undelivered.push(attempt);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether a run's deadline, or that of one of its running attempts, has passed by `now`.
fn deadline_passed(run: &Run, now: Millis) -> bool {
    run.record.deadline_ms.is_some_and(|d| d <= now)
        || run.stages.iter().any(|s| {
            matches!(
                s.state,
                StageState::Running {
                    deadline_ms: Some(d),
                    ..
                } if d <= now
            )
        })
}

pub(super) fn transition_error(e: TransitionError) -> EngineError {
    match e {
        TransitionError::StaleAttempt { attempt, .. } => {
            EngineError::StaleAttempt { attempt: attempt.0 }
        }
        TransitionError::RunFinished { run, state } => EngineError::RunFinished { id: run, state },
        TransitionError::UnknownStage { stage } => EngineError::InvalidRequest {
            field: "stage",
            reason: format!("the run's DAG has no stage `{stage}`"),
        },
        other => EngineError::InvalidRequest {
            field: "event",
            reason: other.to_string(),
        },
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
