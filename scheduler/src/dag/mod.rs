//! DAG files: YAML text → validated [`Dag`] on a petgraph graph. Pure: no IO here.

mod model;

pub use model::*;

// Placeholders until the DAG reader lands; signatures are the contract.
use std::collections::BTreeMap;

/// Errors found in a DAG file.
#[derive(Debug, thiserror::Error)]
#[error("invalid DAG")]
pub struct DagErrors(pub Vec<String>);

/// A bad parameter override or fan-out value.
#[derive(Debug, thiserror::Error)]
#[error("bad param")]
pub struct ParamError;

/// A template that could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("bad template")]
pub struct TemplateError;

/// What templates may refer to.
pub struct TemplateContext<'a> {
    pub params: &'a BTreeMap<String, ParamValue>,
    pub run_id: &'a str,
    pub logical_time: Option<&'a str>,
    pub item: Option<&'a ParamValue>,
}

/// Parses and validates a DAG file.
pub fn parse_dag(_source: &str, _file_name: &str) -> Result<Dag, DagErrors> {
    unimplemented!()
}

/// Renders one template.
pub fn render_template(_t: &str, _ctx: &TemplateContext<'_>) -> Result<String, TemplateError> {
    unimplemented!()
}

/// `stage[item]`.
pub fn instance_name(_stage: &StageName, _item: &ParamValue) -> String {
    unimplemented!()
}

impl Dag {
    /// Applies `-p` overrides.
    pub fn resolve_params(
        &self,
        _o: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, ParamValue>, ParamError> {
        unimplemented!()
    }
    /// Fan-out items.
    pub fn for_each_items(
        &self,
        _s: usize,
        _p: &BTreeMap<String, ParamValue>,
    ) -> Result<Option<Vec<ParamValue>>, ParamError> {
        unimplemented!()
    }
    /// Stage index by name.
    pub fn stage_index(&self, _n: &str) -> Option<usize> {
        unimplemented!()
    }
    /// Upstream stage indices.
    pub fn upstream(&self, _i: usize) -> Vec<usize> {
        unimplemented!()
    }
}

/// Graph as text.
pub fn render_graph_text(_dag: &Dag) -> String {
    unimplemented!()
}

/// Graph as DOT.
pub fn render_graph_dot(_dag: &Dag) -> String {
    unimplemented!()
}
