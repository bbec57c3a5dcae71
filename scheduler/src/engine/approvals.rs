//! `vishwa approve` / `vishwa reject`: a person's decision on a stage's `approval:` gate,
//! applied to the run's state machine as `Approved`/`Rejected` events. A timeout's rejection
//! is the state machine's own deadline (`Event::Tick`).

use tracing::info;

use super::EngineError;
use super::core::Engine;
use crate::ids::{Millis, RunId};
use crate::run::{Event, StageState};

/// A person's decision on an `approval:` gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Approve { by: String },
    Reject { by: String, reason: String },
}

impl Engine {
    pub(super) fn decide(
        &mut self,
        id: &RunId,
        stage: &str,
        verdict: Verdict,
        now: Millis,
    ) -> Result<Vec<String>, EngineError> {
        let Some(run) = self.runs.get(id) else {
            let stored = self
                .store
                .get_run(id)?
                .ok_or_else(|| EngineError::RunNotFound { id: id.0.clone() })?;
            return Err(EngineError::RunFinished {
                id: id.0.clone(),
                state: stored.state.as_str(),
            });
        };
        let instances: Vec<usize> = match run.plan.instance(stage) {
            Some(i) => vec![i],
            None => {
                let Some(s) = run.plan.dag.stages.iter().position(|s| s.name.0 == stage) else {
                    return Err(EngineError::invalid(
                        "stage",
                        format!(
                            "run `{id}` has no stage `{stage}`; `vishwa get {id}` lists its stages"
                        ),
                    ));
                };
                run.plan.instances_of_stage[s].clone()
            }
        };
        let waiting: Vec<usize> = instances
            .iter()
            .copied()
            .filter(|&i| matches!(run.stages[i].state, StageState::WaitingApproval { .. }))
            .collect();
        if waiting.is_empty() {
            let state = instances
                .first()
                .map(|&i| run.stages[i].state.name())
                .unwrap_or("pending");
            return Err(EngineError::NotWaitingApproval {
                run: id.0.clone(),
                stage: stage.to_owned(),
                state,
            });
        }
        let names: Vec<String> = waiting
            .iter()
            .map(|&i| run.stages[i].instance.clone())
            .collect();
        for i in waiting {
            let event = match &verdict {
                Verdict::Approve { by } => Event::Approved {
                    instance: i,
                    by: by.clone(),
                },
                Verdict::Reject { by, reason } => Event::Rejected {
                    instance: i,
                    by: by.clone(),
                    reason: reason.clone(),
                },
            };
            self.apply(id, event, now)?;
        }
        info!(run = %id, stage, ?verdict, "approval decided");
        Ok(names)
    }
}
