//! The validated DAG: what the rest of the scheduler works with once a file has been read.
//!
//! Everything here has passed validation; nothing downstream re-checks it. Defaults have been
//! merged into each stage, durations and sizes parsed, the schedule translated and the graph
//! built.

use std::collections::BTreeMap;
use std::time::Duration;

use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};

use crate::cron::Schedule;
use crate::dag::basic::{DagName, Location, ParamValue, StageName};
use crate::dag::condition::Condition;

/// A validated DAG.
#[derive(Debug, Clone)]
pub struct Dag {
    pub name: DagName,
    pub description: Option<String>,
    /// Parameter defaults in file order of their names (sorted).
    pub params: BTreeMap<String, ParamValue>,
    pub schedule: Option<Schedule>,
    pub max_active_runs: Option<u32>,
    /// Limit on the whole run.
    pub timeout: Option<Duration>,
    /// What starts a run besides a person and the schedule (`triggers:`).
    pub triggers: Vec<Trigger>,
    /// Stages in file order, defaults merged in.
    pub stages: Vec<Stage>,
    /// Edges point from a stage to the stages that need it; node weights index `stages`.
    pub graph: DiGraph<usize, ()>,
    /// Node of each stage in `graph`, by index in `stages`.
    pub nodes: Vec<NodeIndex>,
    /// Indices into `stages` in a topological order (file order among independent stages).
    pub topo_order: Vec<usize>,
}

/// How a stage's command is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// List form: run directly, no shell.
    Exec(Vec<String>),
    /// String form: run with `/bin/sh -c`.
    Shell(String),
}

/// Where a stage runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    /// In a Docker container (the default).
    #[default]
    Docker,
    /// As a local process on the worker's host, where the worker allows it.
    Process,
}

/// A value of a stage's `env:` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnvValue {
    /// A literal, possibly templated (`{{ params.x }}`).
    Literal(String),
    /// The value of a secret stored in the scheduler.
    Secret(String),
}

/// When a stage runs, given the final states of the stages it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerRule {
    /// Every upstream stage succeeded.
    #[default]
    AllSuccess,
    /// Every upstream stage finished, whatever its outcome.
    AllDone,
    /// At least one upstream stage failed (runs as soon as one has).
    OneFailed,
    /// At least one upstream stage succeeded (runs as soon as one has).
    OneSuccess,
    /// No upstream stage failed (skipped ones are fine).
    NoneFailed,
}

/// Retry policy: `retries: 3` or `retries: {limit: 3, backoff: 10s, max_backoff: 5m}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 means the first failure is final.
    pub limit: u32,
    /// Wait before the first retry; doubles with each further retry.
    pub backoff: Duration,
    /// Upper bound on the wait.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// Backoff used when a DAG gives only a retry count.
    pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(5);
    /// Upper bound used when a DAG gives none.
    pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(300);
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            limit: 0,
            backoff: Self::DEFAULT_BACKOFF,
            max_backoff: Self::DEFAULT_MAX_BACKOFF,
        }
    }
}

/// What a stage asks of the worker that runs it.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Resources {
    pub cpus: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub gpus: Option<u32>,
}

/// A host path bind-mounted into a stage's container (`host:container[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub host: String,
    pub container: String,
    pub read_only: bool,
}

/// What a fan-out stage iterates over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ForEach {
    /// A literal list in the file.
    List(Vec<ParamValue>),
    /// A template that names a list param: `"{{ params.flavours }}"`.
    Param(String),
}

/// One validated stage, with the DAG's `defaults:` merged in.
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: StageName,
    pub description: Option<String>,
    pub needs: Vec<StageName>,
    pub executor: ExecutorKind,
    /// Required for Docker stages.
    pub image: Option<String>,
    /// None: the image's default command (Docker only; process stages must have one).
    pub command: Option<Command>,
    pub env: BTreeMap<String, EnvValue>,
    pub timeout: Option<Duration>,
    pub retries: RetryPolicy,
    pub resources: Resources,
    /// Label selector: the worker must carry every one of these labels.
    pub worker: BTreeMap<String, String>,
    /// Output file names under `/vishwa/out` (plain names, no path separators).
    pub outputs: Vec<String>,
    /// Outputs among `outputs` that may be absent (`optional: true`).
    pub optional_outputs: Vec<String>,
    /// Output file name → the asset it publishes (`asset: NAME`).
    pub assets: BTreeMap<String, String>,
    pub cache: bool,
    /// Condition (CEL), evaluated when the trigger rule would let the stage run.
    pub when: Option<Condition>,
    pub trigger: TriggerRule,
    pub for_each: Option<ForEach>,
    pub max_parallel: Option<u32>,
    pub mounts: Vec<Mount>,
    /// A person must approve before the stage runs (`approval:`).
    pub approval: Option<Approval>,
    /// Where the stage starts in the file.
    pub location: Location,
}

/// An `outputs:` entry after its checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    pub name: String,
    /// The asset this output publishes a version of.
    pub asset: Option<String>,
    /// The stage may succeed without writing it.
    pub optional: bool,
}

/// One `triggers:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A run per new version of the assets (`{asset: NAME}` or `{asset: [A, B], mode: all}`).
    Assets {
        names: Vec<String>,
        mode: AssetMode,
        /// Where the entry starts in the file.
        at: Location,
    },
}

/// How several assets of one trigger combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssetMode {
    /// A new version of any of them starts a run.
    #[default]
    Any,
    /// A run starts once every one has a new version since this DAG's last asset run.
    All,
}

impl AssetMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AssetMode::Any => "any",
            AssetMode::All => "all",
        }
    }
}

impl Dag {
    /// The assets this DAG's stages publish, each once, sorted.
    pub fn published_assets(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .stages
            .iter()
            .flat_map(|s| s.assets.values().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The asset triggers of this DAG.
    pub fn asset_triggers(&self) -> impl Iterator<Item = (&[String], AssetMode, Location)> {
        self.triggers.iter().map(|t| match t {
            Trigger::Assets { names, mode, at } => (names.as_slice(), *mode, *at),
        })
    }
}

/// A stage's `approval:` gate: once its dependencies let it run, the stage waits in
/// `waiting_approval` (holding no worker slot) until approved or rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// Shown to whoever approves.
    pub message: String,
    /// Past it the stage is rejected. None: it waits until someone decides.
    pub timeout: Option<Duration>,
}
