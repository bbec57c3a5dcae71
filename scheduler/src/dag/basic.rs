//! The leaf types of a DAG: names, places in the file and param values. Every other `dag`
//! module may use them; this one imports nothing from the crate.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Name of a DAG: `[a-z][a-z0-9-]*`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DagName(pub String);

/// Name of a stage as written in the DAG file (a fan-out instance adds `[item]` to it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StageName(pub String);

impl fmt::Display for DagName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for StageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl DagName {
    /// Returns the name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl StageName {
    /// Returns the name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A place in a DAG file, 1-based, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// A parameter value: a YAML scalar (string, number, bool) or a list of them.
pub type ParamValue = serde_json::Value;
