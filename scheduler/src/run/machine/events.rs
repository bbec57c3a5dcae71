//! What goes in and out of the state machine: events, actions, refusals, and the retry waits.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::{AttemptId, Millis, WorkerId};
use crate::run::state::{ArtifactRef, AttemptOutcome, CacheNote, RunState};

/// Lost or transiently failed attempts an instance may have before it fails for good.
pub const INFRA_RETRY_LIMIT: u32 = 3;
/// First wait after a lost or transiently failed attempt; doubles each time.
pub const INFRA_BACKOFF_MS: Millis = 1_000;
/// How long past its timeout the scheduler waits for a worker's report before stopping an
/// attempt itself.
pub const DEADLINE_GRACE_MS: Millis = 30_000;

/// Something that happened to a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The run may start: its root instances are queued.
    Start,
    /// A queued instance was handed to a worker as a new attempt.
    Dispatched {
        instance: usize,
        attempt: AttemptId,
        worker: WorkerId,
        /// GPU device ids assigned on the worker.
        gpus: Vec<String>,
    },
    /// No worker could ever run this queued instance: it fails with `reason`.
    Refused { instance: usize, reason: String },
    /// The worker started the attempt (container id or pid in `handle`).
    Started {
        instance: usize,
        attempt: AttemptId,
        handle: String,
    },
    /// An attempt ended: the one fact about a finished stage. Applying it checks the
    /// reported outputs against the declared ones, keeps outputs and metrics on success,
    /// notes the cache entry to store, and settles the instance and what waits on it.
    Finished {
        instance: usize,
        attempt: AttemptId,
        report: AttemptReport,
    },
    /// The cache holds this queued instance's result: it succeeds without running, with the
    /// outputs and metrics of the run that made them.
    CacheHit {
        instance: usize,
        note: CacheNote,
        outputs: Vec<ArtifactRef>,
        metrics: BTreeMap<String, f64>,
    },
    /// The cache holds no result for this queued instance under `key`: it goes to a worker,
    /// and `reason` says why it missed.
    CacheMiss {
        instance: usize,
        key: String,
        reason: String,
    },
    /// A person approved an instance waiting on its `approval:` gate: it is queued.
    Approved { instance: usize, by: String },
    /// A person rejected an instance waiting on its `approval:` gate: it fails (no retry),
    /// and what needs it follows its trigger rule.
    Rejected {
        instance: usize,
        by: String,
        reason: String,
    },
    /// Time passed: backoffs expire, deadlines strike, approvals time out.
    Tick,
    /// A person asked to stop the run.
    Cancel { reason: String },
}

/// What the driver must do after storing the new state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The instance may be dispatched to a worker now.
    Ready { instance: usize },
    /// Stop this attempt on its worker.
    Kill {
        instance: usize,
        attempt: AttemptId,
        worker: WorkerId,
    },
    /// The instance succeeded (ran, or hit the cache): index the outputs on its record and,
    /// with `cache_key`, store them with its metrics as the cache entry under that key.
    Succeeded {
        instance: usize,
        cache_key: Option<String>,
    },
    /// The run reached its final state.
    RunFinished { state: RunState },
}

/// How an attempt ended, as its worker reported it, with the facts the scheduler gathered
/// about its outputs (whether each upload is in the blob store) before the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptReport {
    pub outcome: AttemptOutcome,
    /// Outputs the worker uploaded (after exit 0; ignored otherwise).
    pub outputs: Vec<ReportedOutput>,
    pub metrics: BTreeMap<String, f64>,
}

impl From<AttemptOutcome> for AttemptReport {
    /// An ending with nothing produced (lost, timed out, failed, or a test's success).
    fn from(outcome: AttemptOutcome) -> AttemptReport {
        AttemptReport {
            outcome,
            outputs: Vec::new(),
            metrics: BTreeMap::new(),
        }
    }
}

/// One output a worker reported for an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReportedOutput {
    /// Reported in a form the scheduler cannot keep (a bad name or digest).
    Unreadable { name: String, error: String },
    /// An uploaded output; `stored` says whether its blob is on the scheduler.
    Uploaded { artifact: ArtifactRef, stored: bool },
}

/// Why an event could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransitionError {
    #[error("attempt {attempt} is not the current attempt of {instance}")]
    StaleAttempt {
        instance: String,
        attempt: AttemptId,
    },
    #[error("stage instance {instance} is {state}, not queued")]
    NotQueued {
        instance: String,
        state: &'static str,
    },
    #[error("stage instance {instance} is {state}, not waiting for approval")]
    NotWaitingApproval {
        instance: String,
        state: &'static str,
    },
    #[error("no stage instance number {0} in this run")]
    UnknownInstance(usize),
    #[error("run {run} is already {state}")]
    RunFinished { run: String, state: &'static str },
    #[error("run {run} was already started")]
    AlreadyStarted { run: String },
    #[error("stored stage {instance} is not part of the run's plan")]
    UnknownStoredInstance { instance: String },
    #[error("run {run} is still {state}; only a finished run can be retried")]
    NotFinished { run: String, state: &'static str },
    #[error("the run's DAG has no stage `{stage}`")]
    UnknownStage { stage: String },
}

/// `base * 2^(n-1)`, capped at `max`.
pub fn exponential_backoff(base: Millis, max: Millis, n: u32) -> Millis {
    let factor = 1i64
        .checked_shl(n.saturating_sub(1).min(40))
        .unwrap_or(i64::MAX);
    base.saturating_mul(factor).min(max)
}
