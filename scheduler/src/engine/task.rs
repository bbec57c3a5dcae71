//! Turning a ready stage instance into a worker task: templates rendered, the container
//! contract's `VISHWA_*` variables added.

use std::collections::BTreeMap;

use super::TaskAssignment;
use crate::dag::{Command, EnvValue, TemplateContext, param_text, render_template};
use crate::ids::AttemptId;
use crate::run::Run;

/// Renders instance `i` of `run` as attempt `attempt`, or says why it cannot run.
pub(crate) fn build_task(
    run: &Run,
    i: usize,
    attempt: &AttemptId,
    attempt_number: u32,
    local_dir: Option<&str>,
) -> Result<TaskAssignment, String> {
    let node = &run.plan.nodes[i];
    let stage = &run.plan.dag.stages[node.stage];
    let logical_time = run
        .record
        .logical_time_ms
        .and_then(|ms| chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339()));
    let ctx = TemplateContext {
        params: &run.record.params,
        run_id: run.record.id.as_str(),
        logical_time: logical_time.as_deref(),
        item: node.item.as_ref(),
    };
    let render = |field: &str, text: &str| {
        render_template(text, &ctx).map_err(|e| format!("rendering {field}: {e}"))
    };
    let command = match &stage.command {
        None => None,
        Some(Command::Shell(s)) => Some(Command::Shell(render("command", s)?)),
        Some(Command::Exec(args)) => Some(Command::Exec(
            args.iter()
                .map(|a| render("command", a))
                .collect::<Result<_, _>>()?,
        )),
    };
    let mut env = BTreeMap::new();
    for (name, value) in &stage.env {
        match value {
            EnvValue::Literal(text) => {
                env.insert(name.clone(), render(&format!("env.{name}"), text)?);
            }
            EnvValue::Secret(secret) => {
                return Err(format!(
                    "env.{name} asks for secret `{secret}`, but this scheduler has no secret \
                     store yet; pass the value as a param instead"
                ));
            }
        }
    }
    for (name, text) in &run.plan.param_texts {
        env.insert(format!("VISHWA_PARAM_{}", env_suffix(name)), text.clone());
    }
    env.insert("VISHWA_RUN_ID".into(), run.record.id.0.clone());
    env.insert("VISHWA_DAG".into(), run.record.dag.clone());
    env.insert("VISHWA_STAGE".into(), node.name.clone());
    env.insert("VISHWA_ATTEMPT".into(), attempt_number.to_string());
    if let Some(t) = &logical_time {
        env.insert("VISHWA_LOGICAL_TIME".into(), t.clone());
    }
    if let Some(item) = &node.item {
        env.insert("VISHWA_ITEM".into(), param_text(item));
    }
    Ok(TaskAssignment {
        attempt: attempt.clone(),
        attempt_number,
        run: run.record.id.clone(),
        dag: run.record.dag.clone(),
        stage: node.name.clone(),
        executor: stage.executor,
        image: stage.image.clone(),
        command,
        env,
        local_dir: local_dir.map(str::to_owned),
        timeout: stage.timeout,
        mounts: stage.mounts.clone(),
        resources: stage.resources,
    })
}

/// A param name as an environment variable suffix: upper case, anything else than letters
/// and digits becomes `_`.
fn env_suffix(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_names_become_upper_case_env_suffixes() {
        assert_eq!(env_suffix("min_accuracy"), "MIN_ACCURACY");
        assert_eq!(env_suffix("rows"), "ROWS");
    }
}
