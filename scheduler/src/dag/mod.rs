//! DAG files: YAML text → validated [`Dag`] on a petgraph graph. Pure: no IO here.
//!
//! [`parse_dag`] reads and checks a file once; nothing downstream re-checks it. The rest of
//! this module serves runs of a validated DAG: params ([`Dag::resolve_params`],
//! [`Dag::for_each_items`], [`instance_name`]), templates ([`render_template`]) and the
//! graph ([`Dag::upstream`], [`render_graph_text`], [`render_graph_dot`]).
//!
//! `defaults:` sets any stage field but `name`, `needs`, `for_each` and `max_parallel`; a
//! value on the stage wins. `env:`, `worker:` and `resources:` merge key by key (the stage's
//! keys win); `outputs`, `mounts` and `retries` given on a stage replace the defaults whole.

mod basic;
mod condition;
mod error;
mod fields;
mod graph;
mod help;
mod load;
mod model;
mod params;
mod raw;
mod render;
mod shell;
mod template;
mod validate;
mod validate_when;
mod validator;
mod values;

/// A schedule is cron's concept; a DAG file only declares one.
pub use crate::cron::{Catchup, Overlap, Schedule};
pub use basic::{DagName, Location, ParamValue, StageName};
pub use condition::{
    Condition, ConditionError, ConditionInput, InstanceView, MAX_CONDITION_CHARS, STAGE_FIELDS,
    StageView,
};
pub use error::{DagError, DagErrors, MountProblem, OutputProblem, Scope};
pub use load::MAX_DAG_FILE_BYTES;
pub use model::*;
pub use params::{ParamError, ParamType, instance_name, param_text};
pub use render::{render_graph_dot, render_graph_text};
pub use shell::render_shell_command;
pub(crate) use template::template_references;
pub use template::{TemplateContext, TemplateError, render_template};
pub(crate) use values::is_secret_name;
pub use values::parse_memory;

/// Reads and validates a DAG file. `file_name` is only used in error messages.
///
/// Returns every mistake found in the file's meaning (unknown dependencies, bad durations,
/// cycles, ...); a YAML syntax or shape error stops reading, so it comes alone.
pub fn parse_dag(source: &str, file_name: &str) -> Result<Dag, DagErrors> {
    let raw = load::read_raw(source).map_err(|e| DagErrors::single(file_name, e))?;
    validate::validate(raw, source).map_err(|errors| DagErrors {
        file: file_name.to_owned(),
        errors,
    })
}

#[cfg(test)]
mod tests;
