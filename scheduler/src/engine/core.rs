//! The engine actor's state and loop. See the module above for the order of a turn.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::metrics::DispatchMetrics;
use super::task::build_task;
use super::workers::{WorkerEntry, Workers};
use super::{
    Command, EngineConfig, EngineEvent, HeartbeatReply, Registered, Submitted, WorkerMessage,
    WorkerRegistration,
};
use crate::api::ApiError;
use crate::dag::{Dag, parse_dag};
use crate::ids::{AttemptId, Millis, RunId, WorkerId, now_ms};
use crate::run::{
    Action, AttemptOutcome, Event, RetryMode, Run, RunPlan, RunRecord, RunState, StageState,
    TransitionError, TriggerKind,
};
use crate::store::{DagRecord, DagVersion, Store, WriteBatch};

/// Commands taken per turn at most, so a flood cannot starve timers.
const MAX_COMMANDS_PER_TURN: usize = 4096;
/// How often leases are checked.
const LEASE_CHECK: Duration = Duration::from_millis(500);

/// Where an attempt runs.
#[derive(Debug, Clone)]
struct AttemptRoute {
    run: RunId,
    instance: usize,
    worker: WorkerId,
}

/// Work to do once the turn's writes are durable.
enum Effect {
    Reply(Box<dyn FnOnce() + Send>),
    Send(WorkerId, WorkerMessage),
}

pub(crate) struct Engine {
    store: Arc<dyn Store>,
    config: EngineConfig,
    events: broadcast::Sender<Arc<EngineEvent>>,
    /// Parsed DAG versions, by (name, version).
    dags: HashMap<(String, String), Arc<Dag>>,
    /// Local folders of DAG versions (embedded modes).
    local_dirs: HashMap<(String, String), Option<String>>,
    /// Runs that are queued or running.
    runs: HashMap<RunId, Run>,
    ready: VecDeque<(RunId, usize, Instant)>,
    timers: BinaryHeap<Reverse<(Millis, RunId)>>,
    /// The wake-up time last pushed per run, so an unchanged one is not pushed again.
    scheduled: HashMap<RunId, Millis>,
    attempts: HashMap<AttemptId, AttemptRoute>,
    workers: Workers,
    batch: WriteBatch,
    effects: Vec<Effect>,
    published: Vec<Arc<EngineEvent>>,
    touched: HashSet<RunId>,
    finished: Vec<RunId>,
    /// Attempts whose task could not be delivered; lost at the start of the next turn.
    undelivered: Vec<AttemptId>,
    metrics: DispatchMetrics,
}

impl Engine {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        config: EngineConfig,
        events: broadcast::Sender<Arc<EngineEvent>>,
    ) -> Engine {
        Engine {
            store,
            config,
            events,
            dags: HashMap::new(),
            local_dirs: HashMap::new(),
            runs: HashMap::new(),
            ready: VecDeque::new(),
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
        }
    }

    /// Loads every unfinished run from the store and resumes it. Attempts that were running
    /// stay running; their workers get one lease to come back and claim them.
    pub(crate) async fn recover(&mut self) -> Result<(), ApiError> {
        let now = now_ms();
        let lease = self.config.lease.as_millis() as Millis;
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
                        .or_insert_with(|| WorkerEntry {
                            slots: 0,
                            labels: BTreeMap::new(),
                            allow_process: false,
                            running: HashSet::new(),
                            inbox: None,
                            lease_until: now + lease,
                            draining: false,
                        });
                    entry.running.insert(attempt.clone());
                }
            }
            let actions = run.resume(now);
            self.runs.insert(id.clone(), run);
            self.touched.insert(id.clone());
            self.handle_actions(&id, actions);
        }
        if count > 0 {
            info!(runs = count, "resumed unfinished runs");
        }
        self.end_turn().await
    }

    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Command>,
        shutdown: CancellationToken,
    ) {
        let mut lease_check = tokio::time::interval(LEASE_CHECK);
        lease_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = self.next_timer_instant();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
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
                _ = lease_check.tick() => self.expire_leases(now_ms()),
            }
            self.fire_timers(now_ms());
            self.lose_undelivered();
            self.dispatch();
            if let Err(e) = self.end_turn().await {
                // Without a working store nothing can be promised; stop rather than act on
                // state that is not written.
                tracing::error!(error = %e, "store failed; the engine stops");
                break;
            }
        }
        if let Err(e) = self.store.sync().await {
            warn!(error = %e, "final store sync failed");
        }
        debug!("engine stopped");
    }

    fn next_timer_instant(&self) -> Option<tokio::time::Instant> {
        if !self.undelivered.is_empty() {
            return Some(tokio::time::Instant::now());
        }
        let Reverse((at, _)) = self.timers.peek()?;
        let wait = (*at - now_ms()).max(0) as u64;
        Some(tokio::time::Instant::now() + Duration::from_millis(wait))
    }

    fn handle(&mut self, command: Command) {
        let now = now_ms();
        match command {
            Command::Submit {
                dag,
                file_name,
                source,
                local_dir,
                reply,
            } => {
                let result = self.submit(dag, file_name, source, local_dir, now);
                self.reply(reply, result);
            }
            Command::Trigger { dag, params, reply } => {
                let result = self.trigger(&dag, &params, now);
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
                self.reply(reply, Ok(result));
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
                    None => Err(ApiError::WorkerNotRegistered {
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
                outcome,
                reply,
            } => {
                self.touch_lease(&worker, now);
                let result = self.finish_attempt(&attempt, outcome, now);
                self.reply(reply, result);
            }
            Command::Metrics { reply } => {
                let _ = reply.send(self.metrics.clone());
            }
        }
    }

    /// Queues a reply to be sent once this turn's writes are durable.
    fn reply<T: Send + 'static>(
        &mut self,
        reply: tokio::sync::oneshot::Sender<Result<T, ApiError>>,
        result: Result<T, ApiError>,
    ) {
        self.effects.push(Effect::Reply(Box::new(move || {
            let _ = reply.send(result);
        })));
    }

    fn submit(
        &mut self,
        dag: Arc<Dag>,
        file_name: String,
        source: String,
        local_dir: Option<String>,
        now: Millis,
    ) -> Result<Submitted, ApiError> {
        let name = dag.name.0.clone();
        let mut hasher = Sha256::new();
        hasher.update(source.as_bytes());
        hasher.update([0]);
        hasher.update(local_dir.as_deref().unwrap_or("").as_bytes());
        let version = hex::encode(hasher.finalize());
        let current = self.store.get_dag(&name)?;
        if current.as_ref().is_some_and(|d| d.version == version) {
            return Ok(Submitted {
                name,
                version,
                changed: false,
            });
        }
        self.batch.put_dag_version(DagVersion {
            name: name.clone(),
            version: version.clone(),
            file_name,
            source,
            local_dir: local_dir.clone(),
            submitted_ms: now,
        });
        self.batch.put_dag(DagRecord {
            name: name.clone(),
            version: version.clone(),
            submitted_ms: now,
            paused: current.is_some_and(|d| d.paused),
        });
        self.dags.insert((name.clone(), version.clone()), dag);
        self.local_dirs
            .insert((name.clone(), version.clone()), local_dir);
        info!(dag = %name, %version, "dag registered");
        Ok(Submitted {
            name,
            version,
            changed: true,
        })
    }

    fn load_dag(&mut self, name: &str, version: &str) -> Result<Arc<Dag>, ApiError> {
        let key = (name.to_owned(), version.to_owned());
        if let Some(dag) = self.dags.get(&key) {
            return Ok(dag.clone());
        }
        let stored =
            self.store
                .get_dag_version(name, version)?
                .ok_or_else(|| ApiError::DagNotFound {
                    name: name.to_owned(),
                })?;
        let dag = Arc::new(parse_dag(&stored.source, &stored.file_name)?);
        self.dags.insert(key.clone(), dag.clone());
        self.local_dirs.insert(key, stored.local_dir);
        Ok(dag)
    }

    fn trigger(
        &mut self,
        name: &str,
        overrides: &BTreeMap<String, String>,
        now: Millis,
    ) -> Result<RunRecord, ApiError> {
        let current = self
            .store
            .get_dag(name)?
            .ok_or_else(|| ApiError::DagNotFound {
                name: name.to_owned(),
            })?;
        let dag = self.load_dag(name, &current.version)?;
        if let Some(stage) = dag.stages.iter().find(|s| s.when.is_some()) {
            // Running the stage regardless of its condition would do what the DAG forbids.
            return Err(ApiError::InvalidRequest {
                field: "when",
                reason: format!(
                    "stage `{}` has a `when:` condition; conditions are checked but not yet \
                     evaluated by this version of Vishwa, so the DAG cannot run safely; remove \
                     the condition to run it",
                    stage.name
                ),
            });
        }
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
    fn unused_run_id(&self, dag: &str, now: Millis) -> Result<RunId, ApiError> {
        loop {
            let id = RunId::new_manual(dag, now);
            if !self.runs.contains_key(&id) && self.store.get_run(&id)?.is_none() {
                return Ok(id);
            }
        }
    }

    /// Starts queued runs of `dag` while it is under its `max_active_runs`.
    fn admit_queued_runs(&mut self, dag: &str, now: Millis) {
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

    fn cancel(&mut self, id: &RunId, now: Millis) -> Result<RunRecord, ApiError> {
        if !self.runs.contains_key(id) {
            let stored = self
                .store
                .get_run(id)?
                .ok_or_else(|| ApiError::RunNotFound { id: id.0.clone() })?;
            return Err(ApiError::RunFinished {
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

    fn register(&mut self, r: WorkerRegistration, now: Millis) -> Registered {
        let id = WorkerId(r.name.clone());
        let lease = self.config.lease.as_millis() as Millis;
        let reported: HashSet<AttemptId> = r.running.into_iter().collect();
        let previous = self.workers.entries.remove(&id);
        let mut running = HashSet::new();
        // Attempts we believe run there but the worker no longer has are lost.
        for attempt in previous.map(|w| w.running).unwrap_or_default() {
            if reported.contains(&attempt) {
                running.insert(attempt);
            } else {
                self.lose_attempt(&attempt, format!("worker {id} came back without it"), now);
            }
        }
        // Attempts it still runs that are no longer current (lost while it was away,
        // cancelled, superseded) must stop: their reports would be refused anyway.
        let cancel: Vec<AttemptId> = reported
            .into_iter()
            .filter(|a| !running.contains(a))
            .collect();
        if !cancel.is_empty() {
            warn!(worker = %id, attempts = cancel.len(), "worker runs attempts that are no longer current; stopping them");
        }
        self.workers.entries.insert(
            id.clone(),
            WorkerEntry {
                slots: r.slots.max(1),
                labels: r.labels,
                allow_process: r.allow_process,
                running,
                inbox: None,
                lease_until: now + lease,
                draining: false,
            },
        );
        info!(worker = %id, slots = r.slots, "worker registered");
        Registered {
            worker: id,
            heartbeat_interval: self.config.heartbeat_interval,
            lease: self.config.lease,
            cancel,
        }
    }

    fn heartbeat(
        &mut self,
        worker: &WorkerId,
        running: Vec<AttemptId>,
        draining: bool,
        now: Millis,
    ) -> HeartbeatReply {
        let Some(entry) = self.workers.entries.get_mut(worker) else {
            // Unknown (its lease ran out, or this scheduler restarted and never saw it): it
            // registers again, and registration says which attempts it must stop.
            return HeartbeatReply {
                cancel: Vec::new(),
                reregister: true,
            };
        };
        if draining && !entry.draining {
            info!(%worker, "worker is draining; it gets no new tasks");
        }
        entry.draining = draining;
        self.touch_lease(worker, now);
        let cancel = running
            .into_iter()
            .filter(|a| self.attempts.get(a).is_none_or(|r| &r.worker != worker))
            .collect();
        HeartbeatReply {
            cancel,
            reregister: false,
        }
    }

    /// Loads a finished run, resets the stages `mode` selects and starts it again.
    fn retry(
        &mut self,
        id: &RunId,
        mode: RetryMode,
        now: Millis,
    ) -> Result<(RunRecord, Vec<String>), ApiError> {
        if let Some(run) = self.runs.get(id) {
            return Err(ApiError::InvalidRequest {
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
            .ok_or_else(|| ApiError::RunNotFound { id: id.0.clone() })?;
        let stored = self.store.run_stages(id)?;
        let dag = self.load_dag(&record.dag, &record.dag_version)?;
        let plan = Arc::new(RunPlan::build(dag, &record.params)?);
        let mut run = Run::restore(record, plan, stored).map_err(transition_error)?;
        let selected = run.retry_selection(&mode).map_err(transition_error)?;
        if selected.is_empty() {
            return Err(ApiError::InvalidRequest {
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
        self.handle_actions(id, actions);
        info!(run = %id, stages = names.len(), "run retried");
        Ok((record, names))
    }

    fn touch_lease(&mut self, worker: &WorkerId, now: Millis) {
        let lease = self.config.lease.as_millis() as Millis;
        if let Some(w) = self.workers.entries.get_mut(worker) {
            w.lease_until = now + lease;
        }
    }

    fn expire_leases(&mut self, now: Millis) {
        for (worker, attempts) in self.workers.remove_expired(now) {
            warn!(%worker, attempts = attempts.len(), "worker lease expired");
            for attempt in attempts {
                let reason = format!("worker {worker} stopped heartbeating");
                self.lose_attempt(&attempt, reason, now);
            }
        }
    }

    fn lose_attempt(&mut self, attempt: &AttemptId, reason: String, now: Millis) {
        if let Err(e) = self.finish_attempt(attempt, AttemptOutcome::Lost { reason }, now) {
            debug!(%attempt, error = %e, "lost attempt was already settled");
        }
    }

    fn lose_undelivered(&mut self) {
        let now = now_ms();
        for attempt in std::mem::take(&mut self.undelivered) {
            self.lose_attempt(&attempt, "its worker disconnected".to_owned(), now);
        }
    }

    fn route(&self, attempt: &AttemptId) -> Result<AttemptRoute, ApiError> {
        self.attempts
            .get(attempt)
            .cloned()
            .ok_or_else(|| ApiError::StaleAttempt {
                attempt: attempt.0.clone(),
            })
    }

    fn finish_attempt(
        &mut self,
        attempt: &AttemptId,
        outcome: AttemptOutcome,
        now: Millis,
    ) -> Result<(), ApiError> {
        let route = self.route(attempt)?;
        self.apply(
            &route.run,
            Event::Finished {
                instance: route.instance,
                attempt: attempt.clone(),
                outcome,
            },
            now,
        )?;
        self.attempts.remove(attempt);
        self.workers.release(&route.worker, attempt);
        Ok(())
    }

    /// Applies `event` to an active run and handles the resulting actions.
    fn apply(&mut self, id: &RunId, event: Event, now: Millis) -> Result<(), ApiError> {
        let run = self
            .runs
            .get_mut(id)
            .ok_or_else(|| ApiError::RunNotFound { id: id.0.clone() })?;
        let actions = run.apply(event, now).map_err(transition_error)?;
        self.touched.insert(id.clone());
        self.handle_actions(id, actions);
        Ok(())
    }

    fn handle_actions(&mut self, id: &RunId, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Ready { instance } => {
                    // An instance that ran before (its attempt was lost, or it failed and its
                    // backoff is over) goes ahead of work not yet started: a lost attempt must
                    // run again within about a lease, not after the whole backlog.
                    let ran_before = self
                        .runs
                        .get(id)
                        .is_some_and(|run| !run.stages[instance].attempts.is_empty());
                    let entry = (id.clone(), instance, Instant::now());
                    if ran_before {
                        self.ready.push_front(entry);
                    } else {
                        self.ready.push_back(entry);
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
                Action::RunFinished { state } => {
                    info!(run = %id, state = state.as_str(), "run finished");
                    self.finished.push(id.clone());
                }
            }
        }
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
            let due = self
                .runs
                .get(&id)
                .and_then(Run::next_wakeup)
                .is_some_and(|t| t <= now);
            if due {
                let _ = self.apply(&id, Event::Tick, now);
            }
        }
    }

    /// Hands ready instances to workers with free slots.
    fn dispatch(&mut self) {
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
            let local_dir = self.local_dirs.get(&key).cloned().flatten();
            let task = build_task(run, i, &attempt, number, local_dir.as_deref());
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

    /// Writes everything this turn changed, makes it durable, then acts on it.
    async fn end_turn(&mut self) -> Result<(), ApiError> {
        let now = now_ms();
        loop {
            for id in std::mem::take(&mut self.touched) {
                let Some(run) = self.runs.get_mut(&id) else {
                    continue;
                };
                let (run_changed, stages) = run.take_dirty();
                // Stages first: a watcher stops at the run's final event.
                for i in stages {
                    let record = run.stages[i].clone();
                    self.published.push(Arc::new(EngineEvent::Stage {
                        run: id.clone(),
                        record: record.clone(),
                    }));
                    self.batch.put_stage(&id, record);
                }
                if run_changed {
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
                if let Some(run) = self.runs.remove(&id) {
                    self.admit_queued_runs(&run.record.dag, now);
                }
            }
        }
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            self.store.commit(batch)?;
            self.store.sync().await?;
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

fn transition_error(e: TransitionError) -> ApiError {
    match e {
        TransitionError::StaleAttempt { attempt, .. } => {
            ApiError::StaleAttempt { attempt: attempt.0 }
        }
        TransitionError::RunFinished { run, state } => ApiError::RunFinished { id: run, state },
        TransitionError::UnknownStage { stage } => ApiError::InvalidRequest {
            field: "stage",
            reason: format!("the run's DAG has no stage `{stage}`"),
        },
        other => ApiError::InvalidRequest {
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
