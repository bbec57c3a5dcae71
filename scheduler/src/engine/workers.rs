//! The worker registry: who is connected, what each offers (slots, labels, executors, CPUs,
//! memory, GPUs), what is claimed by running attempts, whose lease has run out, and where a
//! stage fits.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Instant;

use tokio::sync::mpsc;

use super::WorkerMessage;
use crate::dag::{ExecutorKind, Stage};
use crate::ids::{AttemptId, Millis, WorkerId};

/// Resources one attempt holds on its worker.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Claim {
    pub(crate) cpus: f64,
    pub(crate) memory: u64,
    pub(crate) gpus: Vec<String>,
}

impl Claim {
    /// What `stage` asks for, GPUs not yet chosen.
    fn of(stage: &Stage) -> Claim {
        Claim {
            cpus: stage.resources.cpus.unwrap_or(0.0),
            memory: stage.resources.memory_bytes.unwrap_or(0),
            gpus: Vec::new(),
        }
    }

    /// The claim of a stage whose GPUs were already assigned (a recovered attempt).
    pub(crate) fn assigned(stage: &Stage, gpus: Vec<String>) -> Claim {
        Claim {
            gpus,
            ..Claim::of(stage)
        }
    }
}

/// What a worker offers.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Offer {
    pub(crate) slots: u32,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) allow_process: bool,
    /// 0: not accounted (stages asking for CPUs do not fit).
    pub(crate) cpus: f64,
    /// 0: not accounted.
    pub(crate) memory: u64,
    pub(crate) gpus: Vec<String>,
}

/// One registered worker.
#[derive(Debug)]
pub(crate) struct WorkerEntry {
    pub(crate) offer: Offer,
    pub(crate) running: HashMap<AttemptId, Claim>,
    pub(crate) inbox: Option<mpsc::UnboundedSender<WorkerMessage>>,
    pub(crate) lease_until: Millis,
    pub(crate) last_seen_ms: Millis,
    /// Shutting down: finishes what it runs, takes nothing new.
    pub(crate) draining: bool,
    /// The process that registered it; None for a placeholder (after a scheduler restart).
    pub(crate) instance: Option<String>,
    /// When each currently free slot was freed, oldest first (at most `offer.slots`): the
    /// next dispatch here takes the oldest, so the engine can tell how long a stage that
    /// waited for a slot waited after one was free.
    pub(crate) freed: VecDeque<Instant>,
}

impl WorkerEntry {
    /// A worker known only from the attempts stored as running on it (after a restart),
    /// until it registers again.
    pub(crate) fn placeholder(lease_until: Millis, now: Millis) -> WorkerEntry {
        WorkerEntry {
            offer: Offer::default(),
            running: HashMap::new(),
            inbox: None,
            lease_until,
            last_seen_ms: now,
            draining: false,
            instance: None,
            freed: VecDeque::new(),
        }
    }

    fn connected(&self) -> bool {
        self.inbox.as_ref().is_some_and(|inbox| !inbox.is_closed())
    }

    fn free_slots(&self) -> u32 {
        if self.draining || !self.connected() {
            return 0;
        }
        self.offer.slots.saturating_sub(self.running.len() as u32)
    }

    /// Resources claimed by what runs here.
    pub(crate) fn used(&self) -> Claim {
        let mut used = Claim::default();
        for claim in self.running.values() {
            used.cpus += claim.cpus;
            used.memory += claim.memory;
            used.gpus.extend(claim.gpus.iter().cloned());
        }
        used
    }

    /// Why this worker could never run `stage` (labels, executor, total capacity), if so.
    pub(crate) fn never_fits(&self, stage: &Stage) -> Option<String> {
        let o = &self.offer;
        if stage.executor == ExecutorKind::Process && !o.allow_process {
            return Some("does not run process stages".to_owned());
        }
        for (k, v) in &stage.worker {
            if o.labels.get(k) != Some(v) {
                return Some(format!("lacks label {k}={v}"));
            }
        }
        let want = Claim::of(stage);
        if want.cpus > o.cpus {
            return Some(format!("has {} cpus", o.cpus));
        }
        if want.memory > o.memory {
            return Some(format!("has {} bytes of memory", o.memory));
        }
        let gpus = stage.resources.gpus.unwrap_or(0) as usize;
        if gpus > o.gpus.len() {
            return Some(format!("has {} gpus", o.gpus.len()));
        }
        None
    }

    /// The claim `stage` would take here now, with its GPUs chosen, if it fits.
    fn claim_now(&self, stage: &Stage) -> Option<Claim> {
        if self.free_slots() == 0 || self.never_fits(stage).is_some() {
            return None;
        }
        let used = self.used();
        let mut claim = Claim::of(stage);
        // Small tolerance: fractional CPUs add up with rounding.
        if used.cpus + claim.cpus > self.offer.cpus + 1e-9
            || used.memory + claim.memory > self.offer.memory
        {
            return None;
        }
        let want = stage.resources.gpus.unwrap_or(0) as usize;
        if want > 0 {
            let taken: HashSet<&String> = used.gpus.iter().collect();
            claim.gpus = self
                .offer
                .gpus
                .iter()
                .filter(|g| !taken.contains(g))
                .take(want)
                .cloned()
                .collect();
            if claim.gpus.len() < want {
                return None;
            }
        }
        Some(claim)
    }
}

/// Every known worker, by id.
#[derive(Debug, Default)]
pub(crate) struct Workers {
    pub(crate) entries: HashMap<WorkerId, WorkerEntry>,
    /// Workers an operator drained (`vishwa workers drain`); kept across re-registration.
    pub(crate) drained: HashSet<WorkerId>,
}

impl Workers {
    /// Free slots over every connected worker.
    pub(crate) fn total_free(&self) -> u32 {
        self.entries
            .iter()
            .filter(|(id, _)| !self.drained.contains(*id))
            .map(|(_, w)| w.free_slots())
            .sum()
    }

    /// Attempts running anywhere.
    pub(crate) fn total_running(&self) -> usize {
        self.entries.values().map(|w| w.running.len()).sum()
    }

    /// The worker where `stage` fits now, and what it would claim there: among those that
    /// fit, the one with the most free slots (stages spread out), then the most free CPUs.
    pub(crate) fn pick_for(&self, stage: &Stage) -> Option<(WorkerId, Claim)> {
        self.entries
            .iter()
            .filter(|(id, _)| !self.drained.contains(*id))
            .filter_map(|(id, w)| w.claim_now(stage).map(|c| (id, w, c)))
            .max_by(|(a_id, a, _), (b_id, b, _)| {
                let a_cpus = a.offer.cpus - a.used().cpus;
                let b_cpus = b.offer.cpus - b.used().cpus;
                a.free_slots()
                    .cmp(&b.free_slots())
                    .then(a_cpus.total_cmp(&b_cpus))
                    .then(b_id.cmp(a_id))
            })
            .map(|(id, _, claim)| (id.clone(), claim))
    }

    /// Why no registered worker could ever run `stage`; None when one could, or when no
    /// worker is registered at all (then it waits for one).
    pub(crate) fn why_nowhere(&self, stage: &Stage) -> Option<String> {
        let registered: Vec<(&WorkerId, &WorkerEntry)> = self
            .entries
            .iter()
            .filter(|(_, w)| w.offer.slots > 0)
            .collect();
        if registered.is_empty() {
            return None;
        }
        let mut reasons = Vec::new();
        for (id, w) in registered {
            match w.never_fits(stage) {
                None => return None,
                Some(why) => reasons.push(format!("{id} {why}")),
            }
        }
        reasons.sort();
        Some(reasons.join("; "))
    }

    /// Why `stage` is still queued after a dispatch round, for people watching the run: what
    /// it asks of a worker, then why none takes it now (none connected, none fits, the ones
    /// that fit are busy or draining).
    pub(crate) fn why_waiting(&self, stage: &Stage) -> String {
        let live: Vec<(&WorkerId, &WorkerEntry)> = self
            .entries
            .iter()
            .filter(|(_, w)| w.connected() && w.offer.slots > 0)
            .collect();
        let situation = if live.is_empty() {
            "no worker connected".to_owned()
        } else {
            let mut misfits = Vec::new();
            let mut fit = 0;
            let mut off = 0;
            for (id, w) in &live {
                match w.never_fits(stage) {
                    Some(why) => misfits.push(format!("{id} {why}")),
                    None if w.draining || self.drained.contains(*id) => off += 1,
                    None => fit += 1,
                }
            }
            misfits.sort();
            if fit + off == 0 {
                let more = misfits.len().saturating_sub(3);
                misfits.truncate(3);
                let mut text = misfits.join("; ");
                if more > 0 {
                    text.push_str(&format!("; {more} more"));
                }
                text
            } else if fit == 0 {
                format!("the {off} that fit are draining")
            } else {
                format!("the {fit} that fit are busy")
            }
        };
        format!("waiting for {}: {situation}", needs(stage))
    }

    /// Records that `attempt` runs on `worker` holding `claim`; returns when the slot it
    /// takes was freed, if it was freed while the engine watched.
    pub(crate) fn assign(
        &mut self,
        worker: &WorkerId,
        attempt: AttemptId,
        claim: Claim,
    ) -> Option<Instant> {
        let w = self.entries.get_mut(worker)?;
        w.running.insert(attempt, claim);
        w.freed.pop_front()
    }

    /// Frees what `attempt` held on `worker`.
    pub(crate) fn release(&mut self, worker: &WorkerId, attempt: &AttemptId) {
        if let Some(w) = self.entries.get_mut(worker)
            && w.running.remove(attempt).is_some()
        {
            w.freed.push_back(Instant::now());
            let free = w.offer.slots.saturating_sub(w.running.len() as u32) as usize;
            while w.freed.len() > free {
                w.freed.pop_front();
            }
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

    /// When the first lease runs out, if any worker is registered.
    pub(crate) fn next_expiry(&self) -> Option<Millis> {
        self.entries.values().map(|w| w.lease_until).min()
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
                Some((id, w.running.into_keys().collect()))
            })
            .collect()
    }
}

/// What `stage` asks of a worker, in words: `a worker with label gpu=true and 2 cpus`.
fn needs(stage: &Stage) -> String {
    let mut parts: Vec<String> = stage
        .worker
        .iter()
        .map(|(k, v)| format!("label {k}={v}"))
        .collect();
    let r = &stage.resources;
    if let Some(cpus) = r.cpus.filter(|c| *c > 0.0) {
        parts.push(format!("{cpus} free cpus"));
    }
    if let Some(bytes) = r.memory_bytes.filter(|m| *m > 0) {
        parts.push(format!("{} MiB free memory", bytes.div_ceil(1 << 20)));
    }
    if let Some(gpus) = r.gpus.filter(|g| *g > 0) {
        parts.push(format!("{gpus} free gpus"));
    }
    let mut text = "a worker".to_owned();
    if !parts.is_empty() {
        let last = parts.pop().unwrap_or_default();
        text.push_str(" with ");
        if !parts.is_empty() {
            text.push_str(&parts.join(", "));
            text.push_str(" and ");
        }
        text.push_str(&last);
    }
    if stage.executor == ExecutorKind::Process {
        text.push_str(" that allows process stages");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::parse_dag;

    fn stage(yaml_stage: &str) -> Stage {
        let yaml = format!("name: t\nstages:\n  - {yaml_stage}\n");
        parse_dag(&yaml, "t.yaml").unwrap().stages.remove(0)
    }

    fn worker(
        slots: u32,
        cpus: f64,
        memory: u64,
        gpus: &[&str],
        labels: &[(&str, &str)],
    ) -> WorkerEntry {
        let (tx, rx) = mpsc::unbounded_channel();
        std::mem::forget(rx);
        WorkerEntry {
            offer: Offer {
                slots,
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                allow_process: false,
                cpus,
                memory,
                gpus: gpus.iter().map(|g| g.to_string()).collect(),
            },
            running: HashMap::new(),
            instance: None,
            inbox: Some(tx),
            lease_until: i64::MAX,
            last_seen_ms: 0,
            draining: false,
            freed: VecDeque::new(),
        }
    }

    #[test]
    fn a_dispatch_learns_when_the_slot_it_takes_was_freed() {
        let mut w = registry(vec![("w", worker(2, 0.0, 0, &[], &[]))]);
        let id = WorkerId::from("w");
        assert_eq!(w.assign(&id, AttemptId::from("a"), Claim::default()), None);
        assert_eq!(w.assign(&id, AttemptId::from("b"), Claim::default()), None);
        w.release(&id, &AttemptId::from("a"));
        let freed_a = w.entries[&id].freed[0];
        w.release(&id, &AttemptId::from("b"));
        // A release of an attempt that does not run here frees nothing.
        w.release(&id, &AttemptId::from("zz"));
        assert_eq!(w.entries[&id].freed.len(), 2);
        // The oldest free slot goes first.
        assert_eq!(
            w.assign(&id, AttemptId::from("c"), Claim::default()),
            Some(freed_a)
        );
        assert_eq!(w.entries[&id].freed.len(), 1);
    }

    fn registry(entries: Vec<(&str, WorkerEntry)>) -> Workers {
        Workers {
            entries: entries
                .into_iter()
                .map(|(n, w)| (WorkerId::from(n), w))
                .collect(),
            drained: HashSet::new(),
        }
    }

    #[test]
    fn a_stage_goes_where_its_labels_and_resources_fit() {
        let s = stage(
            "{name: train, image: i, resources: {cpus: 2, memory: 4Gi}, worker: {pool: cpu}}",
        );
        let w = registry(vec![
            ("small", worker(4, 1.0, 8 << 30, &[], &[("pool", "cpu")])),
            ("gpu", worker(4, 8.0, 64 << 30, &["0"], &[("pool", "gpu")])),
            ("big", worker(4, 4.0, 8 << 30, &[], &[("pool", "cpu")])),
        ]);
        let (id, claim) = w.pick_for(&s).unwrap();
        assert_eq!(id.as_str(), "big");
        assert_eq!(
            claim,
            Claim {
                cpus: 2.0,
                memory: 4 << 30,
                gpus: vec![]
            }
        );
    }

    #[test]
    fn claims_use_up_capacity_until_released() {
        let s = stage("{name: s, image: i, resources: {cpus: 2}}");
        let mut w = registry(vec![("w", worker(8, 3.0, 1 << 30, &[], &[]))]);
        let (id, claim) = w.pick_for(&s).unwrap();
        w.assign(&id, AttemptId::from("a1"), claim);
        assert!(w.pick_for(&s).is_none(), "only 1 of 3 cpus left");
        w.release(&id, &AttemptId::from("a1"));
        assert!(w.pick_for(&s).is_some());
    }

    #[test]
    fn gpus_are_assigned_by_device_id_and_not_shared() {
        let s = stage("{name: s, image: i, resources: {gpus: 1}}");
        let mut w = registry(vec![("g", worker(8, 8.0, 1 << 30, &["0", "1"], &[]))]);
        let (id, first) = w.pick_for(&s).unwrap();
        assert_eq!(first.gpus, ["0"]);
        w.assign(&id, AttemptId::from("a1"), first);
        let (_, second) = w.pick_for(&s).unwrap();
        assert_eq!(second.gpus, ["1"]);
        w.assign(&id, AttemptId::from("a2"), second);
        assert!(w.pick_for(&s).is_none());
    }

    #[test]
    fn a_stage_no_worker_could_ever_run_says_why() {
        let s = stage("{name: s, image: i, resources: {cpus: 64}}");
        let w = registry(vec![
            ("a", worker(2, 4.0, 1 << 30, &[], &[])),
            ("b", worker(2, 8.0, 1 << 30, &[], &[])),
        ]);
        let why = w.why_nowhere(&s).unwrap();
        assert_eq!(why, "a has 4 cpus; b has 8 cpus");
        assert!(
            registry(vec![]).why_nowhere(&s).is_none(),
            "no worker yet: wait"
        );
        let fits = stage("{name: s, image: i, resources: {cpus: 2}}");
        assert!(w.why_nowhere(&fits).is_none());
    }

    #[test]
    fn busy_is_not_never() {
        let s = stage("{name: s, image: i, resources: {cpus: 4}}");
        let mut w = registry(vec![("a", worker(1, 4.0, 1 << 30, &[], &[]))]);
        let (id, claim) = w.pick_for(&s).unwrap();
        w.assign(&id, AttemptId::from("a1"), claim);
        assert!(w.pick_for(&s).is_none());
        assert!(
            w.why_nowhere(&s).is_none(),
            "it fits once capacity frees up"
        );
    }

    #[test]
    fn a_waiting_stage_says_what_it_needs_and_why_it_waits() {
        let s = stage(
            "{name: train, image: i, resources: {cpus: 2, memory: 1Gi}, worker: {gpu: 'true'}}",
        );
        let mut w = registry(vec![]);
        assert_eq!(
            w.why_waiting(&s),
            "waiting for a worker with label gpu=true, 2 free cpus and 1024 MiB free memory: \
             no worker connected"
        );
        w = registry(vec![("cpu1", worker(2, 8.0, 8 << 30, &[], &[]))]);
        assert_eq!(
            w.why_waiting(&s),
            "waiting for a worker with label gpu=true, 2 free cpus and 1024 MiB free memory: \
             cpu1 lacks label gpu=true"
        );
        w.entries.insert(
            WorkerId::from("g"),
            worker(1, 2.0, 2 << 30, &[], &[("gpu", "true")]),
        );
        let (id, claim) = w.pick_for(&s).unwrap();
        w.assign(&id, AttemptId::from("a1"), claim);
        assert!(w.why_waiting(&s).ends_with(": the 1 that fit are busy"));
        w.drained.insert(WorkerId::from("g"));
        assert!(w.why_waiting(&s).ends_with(": the 1 that fit are draining"));
        let p = stage("{name: p, executor: process, command: 'true'}");
        assert_eq!(
            registry(vec![]).why_waiting(&p),
            "waiting for a worker that allows process stages: no worker connected"
        );
    }

    #[test]
    fn drained_and_draining_workers_take_nothing() {
        let s = stage("{name: s, image: i}");
        let mut w = registry(vec![("a", worker(2, 1.0, 1 << 30, &[], &[]))]);
        w.drained.insert(WorkerId::from("a"));
        assert!(w.pick_for(&s).is_none());
        assert_eq!(w.total_free(), 0);
        w.drained.clear();
        w.entries.get_mut(&WorkerId::from("a")).unwrap().draining = true;
        assert!(w.pick_for(&s).is_none());
    }
}
