//! Schedules inside the engine: the [`ScheduleBook`] of every scheduled DAG, fired from the
//! engine's turn when its earliest fire time comes. Pause, resume and backfill are in
//! [`control`].
//!
//! Firing a slot creates the run `<dag>-<slot in UTC>` and moves the DAG's cursor past the
//! slot; both land in the turn's one store batch, so a crash leaves both or neither. The run
//! id is checked against the store before anything is created, so even a cursor that lags its
//! runs (an older store, a lost write) never gives a slot a second run.
//!
//! Overlap is judged once per firing, against the runs the DAG's schedule started earlier
//! (manual and backfill runs only count toward `max_active_runs`):
//! - `skip`: each due slot gets a run record in state `cancelled` whose message starts with
//!   `skipped:` and names the run still active, so `vishwa runs` shows every skipped slot;
//! - `allow`: the new run starts (or queues under `max_active_runs`);
//! - `cancel_previous`: the active runs are cancelled, then the new run starts.
//!
//! Slots fired together after downtime (`catchup: all`) do not skip one another; they queue
//! under `max_active_runs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tracing::{debug, info, warn};

use super::EngineError;
use super::core::Engine;
use crate::cron::{due_slots, format_utc, next_fire_ms, slot_run_id};
use crate::dag::{Dag, Overlap, Schedule};
use crate::engine::EngineEvent;
use crate::ids::{Millis, RunId};
use crate::run::{Event, Run, RunPlan, RunRecord, RunState, TriggerKind};
use crate::store::{DagRecord, ScheduleRecord};

mod control;

/// Slots one DAG fires per turn at most while catching up with `catchup: all`; the rest
/// follow in the next turns, so one long downtime cannot stall the engine.
const MAX_SLOTS_PER_TURN: usize = 1_000;

impl Engine {
    /// Loads every scheduled DAG's cursor at startup; slots missed while the scheduler was
    /// down become due at once and the catch-up policy decides about them in the next turn.
    pub(super) fn recover_schedules(&mut self, now: Millis) -> Result<(), EngineError> {
        if !self.config.schedules {
            return Ok(());
        }
        let mut cursors: HashMap<String, ScheduleRecord> = self
            .store
            .list_schedules()?
            .into_iter()
            .map(|c| (c.dag.clone(), c))
            .collect();
        for record in self.store.list_dags()? {
            let dag = match self.load_dag(&record.name, &record.version) {
                Ok(dag) => dag,
                Err(e) => {
                    warn!(dag = %record.name, error = %e, "cannot load the dag's schedule");
                    continue;
                }
            };
            let Some(schedule) = dag.schedule.clone() else {
                continue;
            };
            let stored = cursors
                .remove(&record.name)
                .filter(|c| c.cron == schedule.cron && c.timezone == schedule.timezone.name());
            let (cursor, last_slot) = match stored {
                Some(c) => (c.cursor_ms, c.last_slot_ms),
                None => {
                    let fresh = schedule_record(&record.name, &schedule, now, None);
                    self.batch.put_schedule(fresh);
                    (now, None)
                }
            };
            if let Some(slot) = last_slot {
                self.restore_lost_slot_run(&record.name, slot, now);
            }
            let book = &mut self.schedules.book;
            book.insert(&record.name, schedule, cursor, last_slot, record.paused);
        }
        if !self.schedules.book.is_empty() {
            info!(dags = self.schedules.book.len(), "schedules loaded");
        }
        Ok(())
    }

    /// The cursor says `slot` was fired; if its run record is missing anyway, creates it.
    fn restore_lost_slot_run(&mut self, dag: &str, slot: Millis, now: Millis) {
        let id = slot_run_id(dag, slot);
        if !matches!(self.slot_state(&id), Ok(None)) {
            return;
        }
        warn!(run = %id, "the schedule fired this slot but its run is missing; creating it");
        match self.create_slot_run(dag, slot, TriggerKind::Schedule, now) {
            Ok(_) => self.admit_queued_runs(dag, now),
            Err(e) => warn!(run = %id, error = %e, "cannot create the missing run"),
        }
    }

    /// Registers, updates or drops the schedule of a newly submitted DAG version. A new
    /// schedule (or a new expression or zone) starts at `now`: no history is backfilled and the
    /// first fire is the next slot after the submission. Other changes keep the cursor.
    pub(super) fn schedule_dag_submitted(&mut self, dag: &Dag, paused: bool, now: Millis) {
        if !self.config.schedules {
            return;
        }
        let name = dag.name.as_str();
        let Some(schedule) = dag.schedule.clone() else {
            if self.schedules.book.remove(name) {
                // Forget the cursor, so a schedule added back later starts afresh.
                self.batch.put_schedule(ScheduleRecord {
                    dag: name.to_owned(),
                    cron: String::new(),
                    timezone: String::new(),
                    cursor_ms: now,
                    last_slot_ms: None,
                });
                info!(dag = name, "schedule removed");
            }
            return;
        };
        let kept = self
            .schedules
            .book
            .get(name)
            .filter(|e| {
                e.schedule.cron == schedule.cron && e.schedule.timezone == schedule.timezone
            })
            .map(|e| (e.cursor, e.last_slot));
        let (cursor, last_slot) = match kept {
            Some(kept) => kept,
            None => {
                self.batch
                    .put_schedule(schedule_record(name, &schedule, now, None));
                (now, None)
            }
        };
        self.schedules
            .book
            .insert(name, schedule, cursor, last_slot, paused);
        if let Some(next) = self.schedules.book.get(name).and_then(|e| e.next_fire()) {
            info!(dag = name, next = %format_utc(next), "schedule armed");
        }
    }

    /// The earliest time a schedule may fire, for the engine's timer.
    pub(super) fn next_schedule_deadline(&self) -> Option<Millis> {
        self.schedules.book.next_deadline()
    }

    /// Fires every DAG whose next slot has come.
    pub(super) fn fire_schedules(&mut self, now: Millis) {
        if self.next_schedule_deadline().is_none_or(|at| at > now) {
            return;
        }
        let due = self.schedules.book.take_due(now);
        if due.is_empty() {
            return;
        }
        let mut active = self.active_scheduled_runs();
        for dag in due {
            let active = active.remove(&dag).unwrap_or_default();
            self.fire_due_slots(&dag, active, now);
        }
    }

    /// Runs started by each DAG's schedule that are still queued or running, oldest slot
    /// first. One pass over the active runs per turn (finished runs leave `runs` every turn);
    /// it also sees scheduled runs brought back by `vishwa retry`.
    fn active_scheduled_runs(&self) -> HashMap<String, Vec<RunId>> {
        let mut active: HashMap<String, Vec<(Option<Millis>, RunId)>> = HashMap::new();
        for run in self.runs.values() {
            let r = &run.record;
            if r.trigger == TriggerKind::Schedule && !r.state.is_final() {
                let list = active.entry(r.dag.clone()).or_default();
                list.push((r.logical_time_ms, r.id.clone()));
            }
        }
        active
            .into_iter()
            .map(|(dag, mut runs)| {
                runs.sort();
                (dag, runs.into_iter().map(|(_, id)| id).collect())
            })
            .collect()
    }

    fn fire_due_slots(&mut self, name: &str, active: Vec<RunId>, now: Millis) {
        let Some(entry) = self.schedules.book.get(name) else {
            return;
        };
        let schedule = entry.schedule.clone();
        let (cursor, fired_before) = (entry.cursor, entry.last_slot);
        let mut last_slot = fired_before;
        let due = due_slots(
            &schedule.expression,
            schedule.timezone,
            schedule.catchup,
            cursor,
            now,
            MAX_SLOTS_PER_TURN,
        );
        if let Some((first, last)) = due.passed_over {
            info!(dag = name, first = %format_utc(first), last = %format_utc(last),
                catchup = ?schedule.catchup, "missed slots passed over");
        }
        let continuing = self.schedules.catching_up.remove(name);
        if due.fire.len() >= MAX_SLOTS_PER_TURN
            && next_fire_ms(&schedule.expression, schedule.timezone, due.cursor)
                .is_some_and(|t| t <= now)
        {
            self.schedules.catching_up.insert(name.to_owned());
        }
        if let Some(&first) = due.fire.first() {
            let blocker = if continuing {
                None
            } else {
                self.settle_overlap(schedule.overlap, active, first, now)
            };
            let mut created = false;
            for &slot in &due.fire {
                last_slot = Some(slot);
                let id = slot_run_id(name, slot);
                match self.slot_state(&id) {
                    Ok(None) => {}
                    Ok(Some(state)) => {
                        debug!(run = %id, state = state.as_str(), "slot already has a run");
                        continue;
                    }
                    Err(e) => {
                        warn!(run = %id, error = %e, "cannot check the slot's run; not firing it");
                        continue;
                    }
                }
                if let Some(active) = &blocker {
                    let message = format!(
                        "skipped: run {active} of an earlier slot was still active (overlap: skip)"
                    );
                    info!(run = %id, %active, "slot skipped: the previous run is still active");
                    self.record_slot_run(name, slot, RunState::Cancelled, message, now);
                    continue;
                }
                match self.create_slot_run(name, slot, TriggerKind::Schedule, now) {
                    Ok(_) => created = true,
                    Err(e) => {
                        warn!(run = %id, error = %e, "scheduled run could not start");
                        let message = format!("could not start: {e}");
                        self.record_slot_run(name, slot, RunState::Failed, message, now);
                    }
                }
            }
            if created {
                self.admit_queued_runs(name, now);
            }
        }
        if due.cursor != cursor || last_slot != fired_before {
            let record = schedule_record(name, &schedule, due.cursor, last_slot);
            self.batch.put_schedule(record);
        }
        self.schedules.book.advance(name, due.cursor, last_slot);
    }

    /// Applies the overlap policy before `slot` fires, given the DAG's active scheduled runs;
    /// returns the active run that makes the slot be skipped, if any.
    fn settle_overlap(
        &mut self,
        overlap: Overlap,
        active: Vec<RunId>,
        slot: Millis,
        now: Millis,
    ) -> Option<RunId> {
        match overlap {
            _ if active.is_empty() => None,
            Overlap::Allow => None,
            Overlap::Skip => active.into_iter().next(),
            Overlap::CancelPrevious => {
                for id in active {
                    let reason = format!(
                        "cancelled: the schedule's slot {} started (overlap: cancel_previous)",
                        format_utc(slot)
                    );
                    match self.apply(&id, Event::Cancel { reason }, now) {
                        Ok(()) => info!(run = %id, "previous run cancelled for the next slot"),
                        Err(e) => debug!(run = %id, error = %e, "previous run already ended"),
                    }
                }
                None
            }
        }
    }

    /// The state of the run standing for a slot, if the slot has one.
    pub(super) fn slot_state(&self, id: &RunId) -> Result<Option<RunState>, EngineError> {
        if let Some(run) = self.runs.get(id) {
            return Ok(Some(run.record.state));
        }
        Ok(self.store.get_run(id)?.map(|r| r.state))
    }

    /// Creates the queued run for `slot` (the caller admits it under `max_active_runs`).
    pub(super) fn create_slot_run(
        &mut self,
        name: &str,
        slot: Millis,
        trigger: TriggerKind,
        now: Millis,
    ) -> Result<RunId, EngineError> {
        let current = self.current_dag(name)?;
        let dag = self.load_dag(name, &current.version)?;
        let params = dag.resolve_params(&BTreeMap::new())?;
        let plan = Arc::new(RunPlan::build(dag.clone(), &params)?);
        let id = slot_run_id(name, slot);
        let record = RunRecord {
            id: id.clone(),
            dag: name.to_owned(),
            dag_version: current.version,
            params,
            state: RunState::Queued,
            trigger,
            created_ms: now,
            started_ms: None,
            finished_ms: None,
            message: None,
            logical_time_ms: Some(slot),
            deadline_ms: None,
            cancel_requested: false,
            retries: Vec::new(),
            no_cache: false,
            assets: Vec::new(),
        };
        self.runs.insert(id.clone(), Run::new(record, plan));
        self.touched.insert(id.clone());
        info!(run = %id, dag = name, slot = %format_utc(slot), trigger = trigger.as_str(),
            "run created for slot");
        Ok(id)
    }

    /// Writes a run record that ended before it began (a skipped slot, or one that could not
    /// start), so the slot is visible and taken.
    fn record_slot_run(
        &mut self,
        name: &str,
        slot: Millis,
        state: RunState,
        message: String,
        now: Millis,
    ) {
        let version = self.current_dag(name).map(|d| d.version).ok();
        let params = version
            .as_ref()
            .and_then(|v| self.load_dag(name, v).ok())
            .and_then(|dag| dag.resolve_params(&BTreeMap::new()).ok())
            .unwrap_or_default();
        let record = RunRecord {
            id: slot_run_id(name, slot),
            dag: name.to_owned(),
            dag_version: version.unwrap_or_default(),
            params,
            state,
            trigger: TriggerKind::Schedule,
            created_ms: now,
            started_ms: None,
            finished_ms: Some(now),
            message: Some(message),
            logical_time_ms: Some(slot),
            deadline_ms: None,
            cancel_requested: false,
            retries: Vec::new(),
            no_cache: false,
            assets: Vec::new(),
        };
        self.batch.put_run(record.clone());
        self.published.push(Arc::new(EngineEvent::Run(record)));
    }

    pub(super) fn current_dag(&self, name: &str) -> Result<DagRecord, EngineError> {
        self.store
            .get_dag(name)?
            .ok_or_else(|| EngineError::DagNotFound {
                name: name.to_owned(),
            })
    }
}

pub(super) fn schedule_record(
    dag: &str,
    schedule: &Schedule,
    cursor_ms: Millis,
    last_slot_ms: Option<Millis>,
) -> ScheduleRecord {
    ScheduleRecord {
        dag: dag.to_owned(),
        cron: schedule.cron.clone(),
        timezone: schedule.timezone.name().to_owned(),
        cursor_ms,
        last_slot_ms,
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
