//! The schedule book: every scheduled DAG's cursor and next fire time, and one min-heap over
//! those fire times, so the engine sleeps until the earliest one across all DAGs instead of
//! polling each. Pure: the engine tells it the time.
//!
//! The heap is lazy: changing a DAG's entry pushes a new heap item and leaves the old one,
//! which is recognised as stale (its time is no longer the entry's) and dropped when it
//! surfaces.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use super::Schedule;
use super::zone::next_fire_ms;
use crate::ids::Millis;

/// One scheduled DAG.
#[derive(Debug, Clone)]
pub struct BookEntry {
    /// Shared, so firing does not copy the compiled expression.
    pub schedule: Arc<Schedule>,
    /// Every slot at or before this instant is settled.
    pub cursor: Millis,
    /// The last slot that was given a run record, if any.
    pub last_slot: Option<Millis>,
    /// Paused DAGs stay in the book but are never due.
    pub paused: bool,
    /// The fire time queued in the heap for this entry.
    next: Option<Millis>,
}

impl BookEntry {
    /// The next slot after the cursor, queued unless the DAG is paused.
    pub fn next_fire(&self) -> Option<Millis> {
        self.next
    }
}

/// Scheduled DAGs by name, with a heap of their next fire times.
#[derive(Debug, Default)]
pub struct ScheduleBook {
    entries: HashMap<String, BookEntry>,
    queue: BinaryHeap<Reverse<(Millis, String)>>,
}

impl ScheduleBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// (DAG, next fire time) of every entry that is not paused, by name.
    pub fn next_fires(&self) -> Vec<(String, Millis)> {
        let mut fires: Vec<(String, Millis)> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.paused)
            .filter_map(|(dag, e)| Some((dag.clone(), e.next_fire()?)))
            .collect();
        fires.sort();
        fires
    }

    /// Adds or replaces the entry of `dag` and queues its next fire time.
    pub fn insert(
        &mut self,
        dag: &str,
        schedule: Schedule,
        cursor: Millis,
        last_slot: Option<Millis>,
        paused: bool,
    ) {
        let entry = BookEntry {
            schedule: Arc::new(schedule),
            cursor,
            last_slot,
            paused,
            next: None,
        };
        self.entries.insert(dag.to_owned(), entry);
        self.arm(dag);
    }

    /// Drops the entry of `dag`; returns whether it had one.
    pub fn remove(&mut self, dag: &str) -> bool {
        self.entries.remove(dag).is_some()
    }

    /// The entry of `dag`.
    pub fn get(&self, dag: &str) -> Option<&BookEntry> {
        self.entries.get(dag)
    }

    /// Number of scheduled DAGs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no DAG is scheduled.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Pauses or resumes `dag`; a resumed DAG is queued again from its cursor.
    pub fn set_paused(&mut self, dag: &str, paused: bool) {
        if let Some(entry) = self.entries.get_mut(dag) {
            entry.paused = paused;
            self.arm(dag);
        }
    }

    /// Moves the cursor of `dag` (after its due slots were handled) and queues its next fire.
    pub fn advance(&mut self, dag: &str, cursor: Millis, last_slot: Option<Millis>) {
        if let Some(entry) = self.entries.get_mut(dag) {
            entry.cursor = cursor;
            entry.last_slot = last_slot;
            self.arm(dag);
        }
    }

    /// The earliest queued fire time, possibly of a stale item (waking early is harmless).
    pub fn next_deadline(&self) -> Option<Millis> {
        self.queue.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes the DAGs whose fire time is at or before `now`, each once, earliest first. They
    /// stay unqueued until [`ScheduleBook::advance`] is called for them.
    pub fn take_due(&mut self, now: Millis) -> Vec<String> {
        let mut due = Vec::new();
        while let Some(Reverse((at, _))) = self.queue.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, dag))) = self.queue.pop() else {
                break;
            };
            if let Some(entry) = self.entries.get_mut(&dag)
                && entry.next == Some(at)
            {
                entry.next = None;
                due.push(dag);
            }
        }
        due
    }

    fn arm(&mut self, dag: &str) {
        let Some(entry) = self.entries.get_mut(dag) else {
            return;
        };
        entry.next = if entry.paused {
            None
        } else {
            let s = &entry.schedule;
            next_fire_ms(&s.expression, s.timezone, entry.cursor)
        };
        if let Some(at) = entry.next {
            self.queue.push(Reverse((at, dag.to_owned())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cron::CronExpr;
    use crate::cron::{Catchup, Overlap};

    fn every(cron: &str) -> Schedule {
        Schedule {
            cron: cron.to_owned(),
            expression: CronExpr::parse(cron).expect("valid"),
            timezone: chrono_tz::UTC,
            catchup: Catchup::Latest,
            overlap: Overlap::Skip,
        }
    }

    #[test]
    fn one_heap_orders_every_dag_by_its_next_fire() {
        let mut book = ScheduleBook::new();
        book.insert("minutely", every("* * * * *"), 0, None, false);
        book.insert("secondly", every("* * * * * *"), 0, None, false);
        assert_eq!(book.next_deadline(), Some(1_000));
        assert_eq!(book.take_due(999), Vec::<String>::new());
        assert_eq!(book.take_due(1_000), ["secondly"]);
        // Taken entries are not due again until advanced.
        assert_eq!(book.take_due(60_000), ["minutely"]);
        book.advance("secondly", 1_000, Some(1_000));
        assert_eq!(book.next_deadline(), Some(2_000));
        assert_eq!(book.take_due(1_500), Vec::<String>::new());
    }

    #[test]
    fn paused_dags_are_never_due_and_resume_from_their_cursor() {
        let mut book = ScheduleBook::new();
        book.insert("a", every("* * * * * *"), 10_000, None, false);
        book.set_paused("a", true);
        assert_eq!(book.take_due(100_000), Vec::<String>::new());
        book.set_paused("a", false);
        assert_eq!(book.get("a").and_then(BookEntry::next_fire), Some(11_000));
        assert_eq!(book.take_due(100_000), ["a"]);
    }

    #[test]
    fn replaced_and_removed_entries_leave_only_stale_heap_items() {
        let mut book = ScheduleBook::new();
        book.insert("a", every("* * * * * *"), 0, None, false);
        book.insert("a", every("* * * * *"), 0, None, false);
        assert_eq!(book.take_due(1_000), Vec::<String>::new());
        assert_eq!(book.take_due(60_000), ["a"]);
        book.insert("b", every("* * * * * *"), 0, None, false);
        assert!(book.remove("b"));
        assert_eq!(book.take_due(120_000), Vec::<String>::new());
        assert_eq!(book.len(), 1);
    }
}
