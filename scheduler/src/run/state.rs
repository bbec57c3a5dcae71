//! The persisted records of a run: its header and one record per stage instance, with the
//! states of product.md carrying the data that belongs to them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dag::ParamValue;
use crate::ids::{AttemptId, Millis, RunId, WorkerId};

/// State of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Accepted, waiting for a free slot under the DAG's `max_active_runs`.
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunState {
    /// Whether the run has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Cancelled
        )
    }

    /// The name used in the CLI and the protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    Manual,
    Schedule,
    Backfill,
    /// A new version of an asset the DAG is triggered by.
    Asset,
}

impl TriggerKind {
    /// The name used in the CLI and the protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Manual => "manual",
            TriggerKind::Schedule => "schedule",
            TriggerKind::Backfill => "backfill",
            TriggerKind::Asset => "asset",
        }
    }
}

/// The header of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: RunId,
    pub dag: String,
    /// The DAG version (content hash) this run is pinned to.
    pub dag_version: String,
    /// Parameters after overrides.
    pub params: BTreeMap<String, ParamValue>,
    pub state: RunState,
    pub trigger: TriggerKind,
    pub created_ms: Millis,
    pub started_ms: Option<Millis>,
    pub finished_ms: Option<Millis>,
    /// Why the run ended as it did, when that is not plain success.
    pub message: Option<String>,
    /// The schedule slot a scheduled or backfill run stands for.
    pub logical_time_ms: Option<Millis>,
    /// When the run's `timeout:` expires.
    pub deadline_ms: Option<Millis>,
    /// Set once a cancellation was requested.
    pub cancel_requested: bool,
    /// Earlier `vishwa retry` calls, oldest first.
    #[serde(default)]
    pub retries: Vec<RetryRecord>,
    /// Cache lookups are off for this run (`--no-cache`); results still fill the cache.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_cache: bool,
    /// The asset versions this run consumed (a run started by an asset trigger); its stages
    /// read them at `/vishwa/in/@asset/NAME/FILE`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assets: Vec<ConsumedAsset>,
}

/// An asset version a run consumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumedAsset {
    pub asset: String,
    pub version: u64,
    pub digest: String,
    pub file: String,
    pub size: u64,
}

/// One `vishwa retry` of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryRecord {
    pub at_ms: Millis,
    /// What was asked: every unsuccessful stage, a stage and what follows, or one stage.
    pub mode: RetryMode,
    /// The instances reset to run again.
    pub stages: Vec<String>,
}

/// Which stages a retry runs again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode", content = "stage")]
pub enum RetryMode {
    /// Stages that failed, were upstream_failed or cancelled, and everything downstream.
    Failed,
    /// The stage and everything downstream of it.
    From(String),
    /// The stage alone.
    Only(String),
}

impl RetryMode {
    /// How the CLI shows it.
    pub fn describe(&self) -> String {
        match self {
            RetryMode::Failed => "failed".to_owned(),
            RetryMode::From(s) => format!("from {s}"),
            RetryMode::Only(s) => format!("only {s}"),
        }
    }
}

/// State of one stage instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum StageState {
    /// Waiting for the stages it needs.
    Pending,
    /// Its dependencies let it run, but its `approval:` gate waits for a person. Holds no
    /// worker slot; past `deadline_ms` (the approval's timeout) it is rejected.
    WaitingApproval {
        since_ms: Millis,
        message: String,
        deadline_ms: Option<Millis>,
    },
    /// Ready to run; waits for a worker, or for `not_before_ms` after a failed attempt.
    Queued {
        since_ms: Millis,
        not_before_ms: Option<Millis>,
    },
    /// An attempt is assigned to a worker.
    Running {
        attempt: AttemptId,
        worker: WorkerId,
        started_ms: Millis,
        /// The scheduler's backstop: past it the attempt is stopped even if the worker never
        /// reports (the worker enforces the stage timeout itself, earlier).
        deadline_ms: Option<Millis>,
    },
    Succeeded {
        finished_ms: Millis,
    },
    Failed {
        finished_ms: Millis,
        error: String,
    },
    UpstreamFailed {
        finished_ms: Millis,
    },
    Skipped {
        finished_ms: Millis,
        reason: String,
    },
    Cancelled {
        finished_ms: Millis,
    },
}

impl StageState {
    /// Whether the instance has reached a final state.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            StageState::Succeeded { .. }
                | StageState::Failed { .. }
                | StageState::UpstreamFailed { .. }
                | StageState::Skipped { .. }
                | StageState::Cancelled { .. }
        )
    }

    /// The state's name as the CLI shows it.
    pub fn name(&self) -> &'static str {
        match self {
            StageState::Pending => "pending",
            StageState::WaitingApproval { .. } => "waiting_approval",
            StageState::Queued { .. } => "queued",
            StageState::Running { .. } => "running",
            StageState::Succeeded { .. } => "succeeded",
            StageState::Failed { .. } => "failed",
            StageState::UpstreamFailed { .. } => "upstream_failed",
            StageState::Skipped { .. } => "skipped",
            StageState::Cancelled { .. } => "cancelled",
        }
    }

    /// When the instance reached its final state.
    pub fn finished_ms(&self) -> Option<Millis> {
        match self {
            StageState::Succeeded { finished_ms }
            | StageState::Failed { finished_ms, .. }
            | StageState::UpstreamFailed { finished_ms }
            | StageState::Skipped { finished_ms, .. }
            | StageState::Cancelled { finished_ms } => Some(*finished_ms),
            _ => None,
        }
    }
}

/// How one attempt ended (or that it has not yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum AttemptOutcome {
    Running,
    /// Ran to its end; 0 means success.
    Exited {
        code: i64,
    },
    TimedOut,
    /// Stopped because the run was cancelled or timed out.
    Cancelled,
    /// Its worker vanished or stopped it for its own reasons; retried on the infrastructure
    /// budget, not the stage's.
    Lost {
        reason: String,
    },
    /// Could not run at all.
    Error {
        message: String,
        transient: bool,
    },
}

impl AttemptOutcome {
    /// The outcome's name as the CLI shows it.
    pub fn name(&self) -> &'static str {
        match self {
            AttemptOutcome::Running => "running",
            AttemptOutcome::Exited { code: 0 } => "succeeded",
            AttemptOutcome::Exited { .. } => "failed",
            AttemptOutcome::TimedOut => "timed_out",
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::Lost { .. } => "lost",
            AttemptOutcome::Error { .. } => "error",
        }
    }
}

/// One attempt of a stage instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub id: AttemptId,
    /// 1-based, counting every attempt of the instance.
    pub number: u32,
    pub worker: WorkerId,
    pub started_ms: Millis,
    pub finished_ms: Option<Millis>,
    pub outcome: AttemptOutcome,
    /// Container id or process id, once the worker reported the start.
    pub handle: Option<String>,
    /// GPU device ids assigned to the attempt on its worker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
}

/// The persisted record of one stage instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    /// `stage` or `stage[item]`.
    pub instance: String,
    /// Names of the DAG stages this one needs (stage names, not instances).
    #[serde(default)]
    pub needs: Vec<String>,
    pub state: StageState,
    pub attempts: Vec<AttemptRecord>,
    /// Failed attempts counted against `retries.limit`.
    pub failures: u32,
    /// Lost or transiently failed attempts, counted against the infrastructure budget.
    pub infra_failures: u32,
    /// When the instance was first queued.
    pub queued_ms: Option<Millis>,
    /// Numbers the stage reported in `/vishwa/out/metrics.json` on its successful attempt
    /// (or that a cache hit carried over); used by `when:` conditions and `vishwa compare`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// The declared outputs of the successful attempt (or of the run a cache hit reused).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<ArtifactRef>,
    /// What the cache said, for stages with `cache: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheNote>,
    /// The decision on the stage's `approval:` gate, once someone (or its timeout) made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalDecision>,
}

/// Who approved or rejected a stage's `approval:` gate, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalDecision {
    pub approved: bool,
    /// The caller's token name, or `timeout` when the approval's timeout rejected it.
    pub by: String,
    pub reason: Option<String>,
    pub at_ms: Millis,
}

/// One stored output file: its name under `/vishwa/out`, content digest and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    pub name: String,
    /// sha256 of the content, hex.
    pub digest: String,
    pub size: u64,
}

/// The cache's verdict on one stage instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheNote {
    /// The cache key (sha256, hex).
    pub key: String,
    pub outcome: CacheOutcome,
}

/// A hit names where the outputs came from; a miss says why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum CacheOutcome {
    Hit { run: RunId, stage: String },
    Miss { reason: String },
}

impl StageRecord {
    /// A fresh pending record.
    pub fn pending(instance: String, needs: Vec<String>) -> StageRecord {
        StageRecord {
            instance,
            needs,
            state: StageState::Pending,
            attempts: Vec::new(),
            failures: 0,
            infra_failures: 0,
            queued_ms: None,
            metrics: BTreeMap::new(),
            outputs: Vec::new(),
            cache: None,
            approval: None,
        }
    }
}
