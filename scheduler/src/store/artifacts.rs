//! The persisted artifact index: which stage instance of which run produced which file (by
//! digest), which stages consumed a digest (lineage), and the cache's entries. Blobs live on
//! disk beside the store (see [`crate::artifacts`]); only these small records are in it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{Millis, RunId};
use crate::run::ArtifactRef;

/// One output file of one stage instance of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub run: RunId,
    /// `stage` or `stage[item]`.
    pub stage: String,
    pub name: String,
    /// sha256 of the content, hex.
    pub digest: String,
    pub size: u64,
    pub created_ms: Millis,
    /// The run whose output a cache hit reused, when it was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_from: Option<RunId>,
}

/// A stage instance that took a digest as one of its inputs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConsumerRecord {
    pub digest: String,
    pub run: RunId,
    pub stage: String,
}

/// What a cache key stands for: a successful stage instance, its outputs and its metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    pub key: String,
    pub run: RunId,
    pub stage: String,
    pub outputs: Vec<ArtifactRef>,
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    pub created_ms: Millis,
}

/// Everything a cache key is computed from, kept per DAG and stage instance for the last
/// lookup, so a miss can say what changed since.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheComponents {
    /// The image reference as the DAG names it.
    pub image: String,
    /// The rendered command, JSON-encoded.
    pub command: String,
    /// The stage's own environment, rendered; secrets by name, never by value.
    pub env: BTreeMap<String, String>,
    /// The params (and `item`) the stage's templates refer to, rendered.
    pub params: BTreeMap<String, String>,
    /// `stage/file` of each input, with its digest.
    pub inputs: BTreeMap<String, String>,
    /// The bundle digest, or `local:DIR` for a DAG read from a folder on the scheduler.
    pub bundle: String,
    /// Executor and declared outputs: a stage that writes other files is another stage.
    #[serde(default)]
    pub shape: String,
}

/// The last cache components seen for one stage instance of a DAG.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastLookup {
    pub dag: String,
    pub stage: String,
    pub key: String,
    pub run: RunId,
    pub components: CacheComponents,
}
