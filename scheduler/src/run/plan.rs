//! A run's plan: the DAG's stages expanded into instances (one per `for_each` item) with their
//! edges. Derived from the DAG and the run's parameters alone, so it is rebuilt, not stored.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::dag::{Dag, ParamError, ParamValue, instance_name, param_text};

/// Largest param exported as a `VISHWA_PARAM_<NAME>` environment variable.
pub(super) const MAX_PARAM_ENV_BYTES: usize = 8 << 10;

/// One instance of a stage in a run.
#[derive(Debug, Clone)]
pub struct PlanNode {
    /// `stage` or `stage[item]`.
    pub name: String,
    /// Index of the stage in `Dag::stages`.
    pub stage: usize,
    /// The fan-out item, for `for_each` instances.
    pub item: Option<ParamValue>,
    /// Set for the single placeholder of a fan-out over an empty list (it is skipped).
    pub empty_fan_out: bool,
    /// Instances this one needs.
    pub upstream: Vec<usize>,
    /// Instances that need this one.
    pub downstream: Vec<usize>,
}

/// A DAG expanded for one run.
#[derive(Debug, Clone)]
pub struct RunPlan {
    pub dag: Arc<Dag>,
    pub nodes: Vec<PlanNode>,
    /// Instances of each stage, by stage index.
    pub instances_of_stage: Vec<Vec<usize>>,
    /// Each param as its `VISHWA_PARAM_*` variable shows it, by name. Written once per run:
    /// every instance of a fan-out over a long list param carries it.
    pub param_texts: Vec<(String, String)>,
    index: BTreeMap<String, usize>,
}

impl RunPlan {
    /// Expands `dag` with the run's resolved `params`.
    pub fn build(
        dag: Arc<Dag>,
        params: &BTreeMap<String, ParamValue>,
    ) -> Result<RunPlan, ParamError> {
        let mut nodes = Vec::with_capacity(dag.stages.len());
        let mut instances_of_stage = vec![Vec::new(); dag.stages.len()];
        for &stage in &dag.topo_order {
            let name = &dag.stages[stage].name;
            match dag.for_each_items(stage, params)? {
                None => {
                    instances_of_stage[stage].push(nodes.len());
                    nodes.push(PlanNode::new(name.0.clone(), stage, None, false));
                }
                Some(items) if items.is_empty() => {
                    instances_of_stage[stage].push(nodes.len());
                    nodes.push(PlanNode::new(name.0.clone(), stage, None, true));
                }
                Some(items) => {
                    for item in items {
                        instances_of_stage[stage].push(nodes.len());
                        let instance = instance_name(name, &item);
                        nodes.push(PlanNode::new(instance, stage, Some(item), false));
                    }
                }
            }
        }
        for (stage, instances) in instances_of_stage.iter().enumerate() {
            for &needed in &dag.upstream(stage) {
                for &from in &instances_of_stage[needed] {
                    for &to in instances {
                        nodes[to].upstream.push(from);
                        nodes[from].downstream.push(to);
                    }
                }
            }
        }
        let index = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        // A param too large for the environment (the kernel caps a process's arguments and
        // environment together) is not exported; templates and `for_each` still see it.
        let param_texts = params
            .iter()
            .map(|(name, value)| (name.clone(), param_text(value)))
            .filter(|(_, text)| text.len() <= MAX_PARAM_ENV_BYTES)
            .collect();
        Ok(RunPlan {
            dag,
            nodes,
            instances_of_stage,
            param_texts,
            index,
        })
    }

    /// The index of the instance named `name`.
    pub fn instance(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Names of the stages stage `stage` needs.
    pub fn needs_of(&self, stage: usize) -> Vec<String> {
        self.dag.stages[stage]
            .needs
            .iter()
            .map(|n| n.0.clone())
            .collect()
    }

    /// Number of instances.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the plan has no instances (never true for a validated DAG).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

impl PlanNode {
    fn new(name: String, stage: usize, item: Option<ParamValue>, empty_fan_out: bool) -> Self {
        PlanNode {
            name,
            stage,
            item,
            empty_fan_out,
            upstream: Vec::new(),
            downstream: Vec::new(),
        }
    }
}
