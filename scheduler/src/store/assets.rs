//! The persisted state of data assets: each asset's versions (who published which bytes),
//! and per consuming DAG the versions its asset triggers have already answered.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{Millis, RunId};

/// One asset and every version published of it, oldest first. A version is a new digest:
/// the same bytes published again add none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetRecord {
    pub name: String,
    pub versions: Vec<AssetVersion>,
}

impl AssetRecord {
    /// The newest version's number; 0 when there is none.
    pub fn latest(&self) -> u64 {
        self.versions.last().map_or(0, |v| v.version)
    }
}

/// One published version of an asset: an output of a stage instance of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetVersion {
    /// 1, 2, ... in publication order.
    pub version: u64,
    /// The output file's content digest (`sha256:...`).
    pub digest: String,
    /// The output's file name, which consumers read at `/vishwa/in/@asset/NAME/FILE`.
    pub file: String,
    pub size: u64,
    /// The run and stage instance that published it.
    pub run: RunId,
    pub stage: String,
    pub created_ms: Millis,
}

/// Where a DAG's asset triggers stand: for each asset it is triggered by, the newest version
/// already answered (consumed by a run, or there before the trigger was declared). Written in
/// the same batch as the runs it starts, so a version starts a run at most once.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AssetCursor {
    pub dag: String,
    pub seen: BTreeMap<String, u64>,
}
