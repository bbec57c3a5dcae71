//! Deciding a stage's `when:` condition from the run's state: what an upstream stage looks
//! like to the expression (its state, metrics and instances).

use std::collections::BTreeMap;

use super::plan::RunPlan;
use super::state::{StageRecord, StageState};
use crate::dag::{Condition, ConditionError, ConditionInput, InstanceView, StageView};

/// Evaluates the condition of instance `i` against the run's params and the current records
/// of the stages it reads.
pub(super) fn evaluate_condition(
    condition: &Condition,
    plan: &RunPlan,
    stages: &[StageRecord],
    params: &BTreeMap<String, crate::dag::ParamValue>,
    i: usize,
) -> Result<bool, ConditionError> {
    let mut views = BTreeMap::new();
    for name in condition.stages_read() {
        // Validation let the condition read only stages of the DAG.
        let Some(stage) = plan.dag.stage_index(name) else {
            continue;
        };
        let fan_out = plan.dag.stages[stage].for_each.is_some();
        let instances: Vec<usize> = plan.instances_of_stage[stage].clone();
        views.insert(
            name.clone(),
            stage_view(
                plan,
                stages,
                &instances,
                fan_out,
                condition.reads_instances(),
            ),
        );
    }
    let input = ConditionInput {
        params,
        item: plan.nodes[i].item.as_ref(),
    };
    condition.evaluate(&input, &views)
}

/// One upstream stage as its downstream conditions see it. A plain stage shows its one
/// instance. A fan-out shows a summary: `failed` if any instance failed (then
/// `upstream_failed`, `cancelled`), `running` while any is unfinished, `succeeded` once
/// every one that ran succeeded, `skipped` if all were skipped; its metrics are the keys
/// every succeeded instance reported, each at its lowest value.
fn stage_view(
    plan: &RunPlan,
    stages: &[StageRecord],
    instances: &[usize],
    fan_out: bool,
    with_instances: bool,
) -> StageView {
    let instance_views = || {
        instances
            .iter()
            .map(|&n| InstanceView {
                item: plan.nodes[n].item.clone(),
                state: stages[n].state.name().to_owned(),
                metrics: stages[n].metrics.clone(),
            })
            .collect()
    };
    if !fan_out && let [only] = instances {
        return StageView {
            state: stages[*only].state.name().to_owned(),
            metrics: stages[*only].metrics.clone(),
            instances: if with_instances {
                instance_views()
            } else {
                Vec::new()
            },
        };
    }
    let states: Vec<&StageState> = instances.iter().map(|&n| &stages[n].state).collect();
    let any = |f: fn(&StageState) -> bool| states.iter().any(|s| f(s));
    let state = if any(|s| matches!(s, StageState::Failed { .. })) {
        "failed"
    } else if any(|s| matches!(s, StageState::UpstreamFailed { .. })) {
        "upstream_failed"
    } else if any(|s| matches!(s, StageState::Cancelled { .. })) {
        "cancelled"
    } else if any(|s| !s.is_final()) {
        "running"
    } else if any(|s| matches!(s, StageState::Succeeded { .. })) {
        "succeeded"
    } else {
        "skipped"
    };
    let mut metrics: Option<BTreeMap<String, f64>> = None;
    for &n in instances {
        if !matches!(stages[n].state, StageState::Succeeded { .. }) {
            continue;
        }
        let own = &stages[n].metrics;
        metrics = Some(match metrics {
            None => own.clone(),
            Some(so_far) => so_far
                .into_iter()
                .filter_map(|(k, v)| own.get(&k).map(|o| (k, v.min(*o))))
                .collect(),
        });
    }
    StageView {
        state: state.to_owned(),
        metrics: metrics.unwrap_or_default(),
        instances: if with_instances {
            instance_views()
        } else {
            Vec::new()
        },
    }
}

#[cfg(test)]
#[path = "when_tests.rs"]
mod tests;
