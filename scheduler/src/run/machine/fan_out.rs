//! Fan-out slots: a stage's `max_parallel` limits how many of its instances are ready or
//! running at once; the rest wait in line for a slot.

use super::Run;
use super::events::Action;
use crate::run::state::StageState;

impl Run {
    /// Emits `Ready` for a queued instance if its stage has a free `max_parallel` slot;
    /// otherwise it waits in line for one.
    pub(super) fn make_ready(&mut self, i: usize, actions: &mut Vec<Action>) {
        let stage = self.plan.nodes[i].stage;
        let limit = self.plan.dag.stages[stage].max_parallel.unwrap_or(u32::MAX);
        if self.in_flight[stage] < limit {
            self.in_flight[stage] += 1;
            self.holds_slot[i] = true;
            actions.push(Action::Ready { instance: i });
        } else {
            self.blocked[stage].push_back(i);
        }
    }

    pub(super) fn release_slot(&mut self, i: usize, actions: &mut Vec<Action>) {
        if !std::mem::take(&mut self.holds_slot[i]) {
            return;
        }
        let stage = self.plan.nodes[i].stage;
        self.in_flight[stage] -= 1;
        while let Some(next) = self.blocked[stage].pop_front() {
            if matches!(self.stages[next].state, StageState::Queued { .. })
                && !self.holds_slot[next]
            {
                self.make_ready(next, actions);
                break;
            }
        }
    }
}
