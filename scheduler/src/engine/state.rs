//! The types the engine's state is made of, shared by the actor (`core`) and the parts that
//! act on it (`dispatch`, `schedule`, `leases`, `runs`). This file imports no other engine
//! file but the module root, so imports among the engine's files flow one way: the parts
//! import `core` and this file, `core` imports only this file.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use super::WorkerMessage;
use crate::cron::ScheduleBook;
use crate::ids::{RunId, WorkerId};

/// Where an attempt runs.
#[derive(Debug, Clone)]
pub(super) struct AttemptRoute {
    pub(super) run: RunId,
    pub(super) instance: usize,
    pub(super) worker: WorkerId,
}

/// Work to do once the turn's writes are durable.
pub(super) enum Effect {
    Reply(Box<dyn FnOnce() + Send>),
    Send(WorkerId, WorkerMessage),
}

/// A ready instance waiting for a worker.
#[derive(Debug, Clone)]
pub(super) struct Ready {
    pub(super) run: RunId,
    pub(super) instance: usize,
    pub(super) since: Instant,
}

/// Instances of one stage of one run: they all ask for the same worker and resources.
pub(super) type StageKey = (RunId, usize);

/// One DAG's ready instances, a queue per stage, served in turns.
#[derive(Debug, Default)]
pub(super) struct DagLine {
    pub(super) queues: HashMap<StageKey, VecDeque<Ready>>,
    pub(super) turns: VecDeque<StageKey>,
}

/// Ready instances, one line per DAG, served in turns.
#[derive(Debug, Default)]
pub(super) struct ReadyQueue {
    pub(super) lines: HashMap<String, DagLine>,
    pub(super) turns: VecDeque<String>,
}

impl ReadyQueue {
    /// The stages of runs that have instances waiting in line.
    /// Lazy, so that a caller taking the first few copies no key of a 10,000-stage line.
    pub(super) fn waiting_stages(&self) -> impl Iterator<Item = &StageKey> {
        self.lines
            .values()
            .flat_map(|l| l.queues.iter())
            .filter(|(_, q)| !q.is_empty())
            .map(|(k, _)| k)
    }

    /// Adds an instance of stage `stage` at the end of its queue, or at the front when
    /// `first`.
    /// An instance that ran before also moves its stage and its DAG to the front of their
    /// turns: a dead worker's stages run elsewhere about a lease after it died, however long
    /// the backlog.
    pub(super) fn push(&mut self, dag: &str, stage: usize, ready: Ready, first: bool) {
        if !self.lines.contains_key(dag) {
            self.turns.push_back(dag.to_owned());
        }
        if first {
            move_to_front(&mut self.turns, &dag.to_owned());
        }
        let line = self.lines.entry(dag.to_owned()).or_default();
        let key = (ready.run.clone(), stage);
        if !line.queues.contains_key(&key) {
            line.turns.push_back(key.clone());
        }
        if first {
            move_to_front(&mut line.turns, &key);
        }
        let queue = line.queues.entry(key).or_default();
        if first {
            queue.push_front(ready);
        } else {
            queue.push_back(ready);
        }
    }
}

fn move_to_front<T: PartialEq + Clone>(turns: &mut VecDeque<T>, item: &T) {
    if let Some(at) = turns.iter().position(|t| t == item) {
        turns.remove(at);
    }
    turns.push_front(item.clone());
}

/// The engine's schedule state.
#[derive(Debug, Default)]
pub(super) struct Schedules {
    pub(super) book: ScheduleBook,
    /// DAGs part way through a `catchup: all` catch-up larger than one turn's share: their
    /// next share continues the same catch-up and does not overlap the runs it started.
    pub(super) catching_up: HashSet<String>,
}
