//! The worker registry: who is connected, what each may run, how many slots are free, and
//! whose lease has run out.

use std::collections::{BTreeMap, HashMap, HashSet};

use tokio::sync::mpsc;

use super::WorkerMessage;
use crate::dag::{ExecutorKind, Stage};
use crate::ids::{AttemptId, Millis, WorkerId};

/// One registered worker.
#[derive(Debug)]
pub(crate) struct WorkerEntry {
    pub(crate) slots: u32,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) allow_process: bool,
    pub(crate) running: HashSet<AttemptId>,
    pub(crate) inbox: Option<mpsc::UnboundedSender<WorkerMessage>>,
    pub(crate) lease_until: Millis,
    /// Shutting down: finishes what it runs, takes nothing new.
    pub(crate) draining: bool,
}

impl WorkerEntry {
    fn free(&self) -> u32 {
        if self.draining || self.inbox.as_ref().is_none_or(|inbox| inbox.is_closed()) {
            return 0;
        }
        self.slots.saturating_sub(self.running.len() as u32)
    }

    /// Whether this worker may ever run `stage` (labels and executor; not capacity).
    pub(crate) fn accepts(&self, stage: &Stage) -> bool {
        let executor_ok = match stage.executor {
            ExecutorKind::Docker => true,
            ExecutorKind::Process => self.allow_process,
        };
        executor_ok
            && stage
                .worker
                .iter()
                .all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

/// Every known worker, by id.
#[derive(Debug, Default)]
pub(crate) struct Workers {
    pub(crate) entries: HashMap<WorkerId, WorkerEntry>,
}

impl Workers {
    /// Free slots over every connected worker.
    pub(crate) fn total_free(&self) -> u32 {
        self.entries.values().map(WorkerEntry::free).sum()
    }

    /// The connected worker with the most free slots that accepts `stage`.
    pub(crate) fn pick_for(&self, stage: &Stage) -> Option<WorkerId> {
        self.entries
            .iter()
            .filter(|(_, w)| w.free() > 0 && w.accepts(stage))
            .max_by(|(a_id, a), (b_id, b)| a.free().cmp(&b.free()).then(b_id.cmp(a_id)))
            .map(|(id, _)| id.clone())
    }

    /// Records that `attempt` runs on `worker`.
    pub(crate) fn assign(&mut self, worker: &WorkerId, attempt: AttemptId) {
        if let Some(w) = self.entries.get_mut(worker) {
            w.running.insert(attempt);
        }
    }

    /// Frees the slot `attempt` held on `worker`.
    pub(crate) fn release(&mut self, worker: &WorkerId, attempt: &AttemptId) {
        if let Some(w) = self.entries.get_mut(worker) {
            w.running.remove(attempt);
        }
    }

    /// Sends a message to a worker; false if it has no open inbox. An inbox found closed (the
    /// worker's task stream ended) is dropped, so the worker gets no more tasks until it
    /// attaches a new one.
    pub(crate) fn send(&mut self, worker: &WorkerId, message: WorkerMessage) -> bool {
        let Some(w) = self.entries.get_mut(worker) else {
            return false;
        };
        let sent = w
            .inbox
            .as_ref()
            .is_some_and(|inbox| inbox.send(message).is_ok());
        if !sent {
            w.inbox = None;
        }
        sent
    }

    /// Stops handing tasks to a worker until it attaches its inbox again.
    pub(crate) fn close_inbox(&mut self, worker: &WorkerId) {
        if let Some(w) = self.entries.get_mut(worker) {
            w.inbox = None;
        }
    }

    /// Removes workers whose lease ran out by `now` and returns them with the attempts they
    /// were running.
    pub(crate) fn remove_expired(&mut self, now: Millis) -> Vec<(WorkerId, Vec<AttemptId>)> {
        let expired: Vec<WorkerId> = self
            .entries
            .iter()
            .filter(|(_, w)| w.lease_until <= now)
            .map(|(id, _)| id.clone())
            .collect();
        expired
            .into_iter()
            .filter_map(|id| {
                let w = self.entries.remove(&id)?;
                Some((id, w.running.into_iter().collect()))
            })
            .collect()
    }
}
