//! Pause, resume and backfill: the schedule commands people send.

use tracing::info;

use super::schedule_record;
use crate::cron::{format_utc, slot_run_id, slots_between};
use crate::engine::EngineError;
use crate::engine::core::Engine;
use crate::engine::{BackfillOutcome, BackfillRequest, BackfillSlot, PauseChange, ScheduleCommand};
use crate::ids::Millis;
use crate::run::TriggerKind;
use crate::store::DagRecord;

/// Slots one backfill may cover at most.
const MAX_BACKFILL_SLOTS: usize = 10_000;

impl Engine {
    /// Handles pause, resume and backfill.
    pub(in crate::engine) fn handle_schedule(&mut self, command: ScheduleCommand, now: Millis) {
        match command {
            ScheduleCommand::Pause { dag, reply } => {
                let result = self.set_paused(&dag, true, false, now);
                self.reply(reply, result);
            }
            ScheduleCommand::Resume {
                dag,
                skip_missed,
                reply,
            } => {
                let result = self.set_paused(&dag, false, skip_missed, now);
                self.reply(reply, result);
            }
            ScheduleCommand::Backfill { request, reply } => {
                let result = self.backfill(request, now);
                self.reply(reply, result);
            }
        }
    }

    pub(super) fn set_paused(
        &mut self,
        name: &str,
        paused: bool,
        skip_missed: bool,
        now: Millis,
    ) -> Result<PauseChange, EngineError> {
        let current = self.current_dag(name)?;
        // The book knows a change made earlier in this turn, before the store does.
        let was_paused = self
            .schedules
            .book
            .get(name)
            .map_or(current.paused, |e| e.paused);
        let changed = was_paused != paused;
        if !changed {
            return Ok(PauseChange { changed });
        }
        self.batch.put_dag(DagRecord { paused, ..current });
        if !paused
            && skip_missed
            && let Some(entry) = self.schedules.book.get(name)
        {
            let record = schedule_record(name, &entry.schedule, now, entry.last_slot);
            let last_slot = entry.last_slot;
            self.batch.put_schedule(record);
            self.schedules.book.advance(name, now, last_slot);
        }
        self.schedules.book.set_paused(name, paused);
        info!(dag = name, paused, skip_missed, "schedule pause changed");
        Ok(PauseChange { changed })
    }

    pub(super) fn backfill(
        &mut self,
        request: BackfillRequest,
        now: Millis,
    ) -> Result<Vec<BackfillSlot>, EngineError> {
        let name = request.dag.as_str();
        let current = self.current_dag(name)?;
        let dag = self.load_dag(name, &current.version)?;
        let schedule = dag
            .schedule
            .as_ref()
            .ok_or_else(|| EngineError::NoSchedule {
                dag: name.to_owned(),
            })?;
        if request.from_ms > request.to_ms {
            return Err(EngineError::BackwardsRange {
                from: format_utc(request.from_ms),
                to: format_utc(request.to_ms),
            });
        }
        let slots = slots_between(
            &schedule.expression,
            schedule.timezone,
            request.from_ms.saturating_sub(1),
            request.to_ms.min(now),
            MAX_BACKFILL_SLOTS + 1,
        );
        if slots.len() > MAX_BACKFILL_SLOTS {
            return Err(EngineError::BackfillTooLarge {
                dag: name.to_owned(),
                max: MAX_BACKFILL_SLOTS,
            });
        }
        let mut answer = Vec::with_capacity(slots.len());
        let mut created = false;
        for slot in slots {
            let run = slot_run_id(name, slot);
            let outcome = match self.slot_state(&run)? {
                Some(state) => BackfillOutcome::Exists { state },
                None if request.dry_run => BackfillOutcome::WouldCreate,
                None => {
                    self.create_slot_run(name, slot, TriggerKind::Backfill, now)?;
                    created = true;
                    BackfillOutcome::Created
                }
            };
            answer.push(BackfillSlot {
                logical_time_ms: slot,
                run,
                outcome,
            });
        }
        if created {
            self.admit_queued_runs(name, now);
        }
        Ok(answer)
    }
}
