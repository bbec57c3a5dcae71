//! The engine's side of workers: registration, heartbeats and leases, lost attempts, and
//! routing each report to its attempt (refusing those no longer current).

use std::collections::{HashMap, HashSet};

use tracing::{debug, info, warn};

use super::EngineError;
use super::core::Engine;
use super::state::AttemptRoute;
use super::workers::{Offer, WorkerEntry};
use super::{HeartbeatReply, Registered, WorkerRegistration, WorkerView};
use crate::ids::{AttemptId, Millis, RunId, WorkerId};
use crate::run::{AttemptOutcome, AttemptReport, Event};

impl Engine {
    pub(super) fn register(
        &mut self,
        r: WorkerRegistration,
        now: Millis,
    ) -> Result<Registered, EngineError> {
        let id = WorkerId(r.name.clone());
        let lease = self.config.lease.as_millis() as Millis;
        if let Some(held) = self.workers.entries.get(&id)
            && held.instance.as_ref().is_some_and(|i| *i != r.instance)
            && held.lease_until > now
            && held.inbox.as_ref().is_none_or(|inbox| !inbox.is_closed())
        {
            warn!(worker = %id, "refused a second worker under a live worker's name");
            return Err(EngineError::WorkerNameTaken {
                worker: r.name,
                lease: self.config.lease,
            });
        }
        let reported: HashSet<AttemptId> = r.running.into_iter().collect();
        let previous = self.workers.entries.remove(&id);
        let mut running = HashMap::new();
        // Attempts we believe run there but the worker no longer has are lost.
        for (attempt, claim) in previous.map(|w| w.running).unwrap_or_default() {
            if reported.contains(&attempt) {
                running.insert(attempt, claim);
            } else {
                self.lose_attempt(&attempt, format!("worker {id} came back without it"), now);
            }
        }
        // Attempts it still runs that are no longer current (lost while it was away,
        // cancelled, superseded) must stop: their reports would be refused anyway.
        let cancel: Vec<AttemptId> = reported
            .into_iter()
            .filter(|a| !running.contains_key(a))
            .collect();
        if !cancel.is_empty() {
            warn!(worker = %id, attempts = cancel.len(), "worker runs attempts that are no longer current; stopping them");
        }
        self.workers.entries.insert(
            id.clone(),
            WorkerEntry {
                offer: Offer {
                    slots: r.slots.max(1),
                    labels: r.labels,
                    allow_process: r.allow_process,
                    cpus: r.cpus,
                    memory: r.memory_bytes,
                    gpus: r.gpus,
                },
                running,
                inbox: None,
                lease_until: now + lease,
                last_seen_ms: now,
                draining: r.draining,
                instance: Some(r.instance),
                freed: Default::default(),
            },
        );
        info!(worker = %id, slots = r.slots, "worker registered");
        Ok(Registered {
            worker: id,
            heartbeat_interval: self.config.heartbeat_interval,
            lease: self.config.lease,
            cancel,
        })
    }

    pub(super) fn heartbeat(
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
        entry.last_seen_ms = now;
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

    pub(super) fn touch_lease(&mut self, worker: &WorkerId, now: Millis) {
        let lease = self.config.lease.as_millis() as Millis;
        if let Some(w) = self.workers.entries.get_mut(worker) {
            w.lease_until = now + lease;
        }
    }

    pub(super) fn expire_leases(&mut self, now: Millis) {
        for (worker, attempts) in self.workers.remove_expired(now) {
            warn!(%worker, attempts = attempts.len(), "worker lease expired");
            for attempt in attempts {
                let reason = format!("worker {worker} stopped heartbeating");
                self.lose_attempt(&attempt, reason, now);
            }
        }
    }

    pub(super) fn lose_attempt(&mut self, attempt: &AttemptId, reason: String, now: Millis) {
        if let Err(e) = self.finish_attempt(attempt, AttemptOutcome::Lost { reason }.into(), now) {
            debug!(%attempt, error = %e, "lost attempt was already settled");
        }
    }

    pub(super) fn lose_undelivered(&mut self) {
        let now = self.now();
        for attempt in std::mem::take(&mut self.undelivered) {
            self.lose_attempt(&attempt, "its worker disconnected".to_owned(), now);
        }
    }

    pub(super) fn route(&self, attempt: &AttemptId) -> Result<AttemptRoute, EngineError> {
        self.attempts
            .get(attempt)
            .cloned()
            .ok_or_else(|| EngineError::StaleAttempt {
                attempt: attempt.0.clone(),
            })
    }

    /// Applies how an attempt ended to its run (the one place a stage finishes) and frees
    /// its worker slot.
    pub(super) fn finish_attempt(
        &mut self,
        attempt: &AttemptId,
        report: AttemptReport,
        now: Millis,
    ) -> Result<(), EngineError> {
        let route = self.route(attempt)?;
        self.apply(
            &route.run,
            Event::Finished {
                instance: route.instance,
                attempt: attempt.clone(),
                report,
            },
            now,
        )?;
        self.attempts.remove(attempt);
        self.workers.release(&route.worker, attempt);
        Ok(())
    }

    /// Every registered worker as `vishwa workers` shows it, by name.
    pub(super) fn worker_views(&self) -> Vec<WorkerView> {
        let mut views: Vec<WorkerView> = self
            .workers
            .entries
            .keys()
            .filter_map(|id| self.worker_view(id))
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        views
    }

    fn worker_view(&self, id: &WorkerId) -> Option<WorkerView> {
        let w = self.workers.entries.get(id)?;
        let used = w.used();
        let mut running: Vec<(RunId, String, u32)> = w
            .running
            .keys()
            .filter_map(|attempt| {
                let route = self.attempts.get(attempt)?;
                let run = self.runs.get(&route.run)?;
                let stage = &run.stages[route.instance];
                Some((
                    route.run.clone(),
                    stage.instance.clone(),
                    stage.attempts.len() as u32,
                ))
            })
            .collect();
        running.sort();
        Some(WorkerView {
            name: id.0.clone(),
            labels: w.offer.labels.clone(),
            slots: w.offer.slots,
            cpus: w.offer.cpus,
            memory_bytes: w.offer.memory,
            gpus: w.offer.gpus.clone(),
            used_cpus: used.cpus,
            used_memory_bytes: used.memory,
            used_gpus: used.gpus,
            running,
            last_seen_ms: w.last_seen_ms,
            draining: w.draining,
            drained: self.workers.drained.contains(id),
            connected: w.inbox.as_ref().is_some_and(|i| !i.is_closed()),
        })
    }

    /// Stops (or, with `undo`, resumes) handing stages to a worker; what it runs finishes.
    pub(super) fn drain(
        &mut self,
        worker: &WorkerId,
        undo: bool,
    ) -> Result<WorkerView, EngineError> {
        if !self.workers.entries.contains_key(worker) {
            return Err(EngineError::WorkerNotRegistered {
                worker: worker.0.clone(),
            });
        }
        if undo {
            self.workers.drained.remove(worker);
            info!(%worker, "worker takes stages again");
        } else {
            self.workers.drained.insert(worker.clone());
            info!(%worker, "worker drained: it finishes what it runs and takes nothing new");
        }
        Ok(self.worker_view(worker).expect("checked above"))
    }
}
