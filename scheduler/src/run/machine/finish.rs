//! A stage finishes here, and only here: an attempt's report (or a cache hit) is checked
//! against the stage's declared outputs, its outputs and metrics are kept, the cache entry to
//! store is named, and the instance is settled (success, retry after backoff, or failure),
//! which makes its downstream ready.

use std::collections::BTreeMap;

use super::Run;
use super::events::{
    Action, AttemptReport, INFRA_BACKOFF_MS, INFRA_RETRY_LIMIT, ReportedOutput, TransitionError,
    exponential_backoff,
};
use crate::ids::{AttemptId, Millis};
use crate::run::state::{ArtifactRef, AttemptOutcome, CacheOutcome, StageState};

impl Run {
    /// Ends the current attempt of instance `i` as `report` says.
    pub(super) fn finished(
        &mut self,
        i: usize,
        attempt: &AttemptId,
        report: AttemptReport,
        now: Millis,
        actions: &mut Vec<Action>,
    ) -> Result<(), TransitionError> {
        self.current_attempt(i, attempt)?;
        let AttemptReport {
            mut outcome,
            outputs,
            metrics,
        } = report;
        let mut kept = Vec::new();
        if outcome == (AttemptOutcome::Exited { code: 0 }) {
            match self.declared_outputs(i, outputs) {
                Ok(outputs) => kept = outputs,
                // An exit 0 without its outputs is the stage's failure, not a success.
                Err(message) => {
                    outcome = AttemptOutcome::Error {
                        message,
                        transient: false,
                    }
                }
            }
        }
        self.close_attempt(i, outcome.clone(), now);
        self.release_slot(i, actions);
        let retries = self.plan.dag.stages[self.plan.nodes[i].stage].retries;
        let lost = matches!(outcome, AttemptOutcome::Lost { .. });
        let rec = &mut self.stages[i];
        match outcome {
            AttemptOutcome::Exited { code: 0 } => self.succeed(i, kept, metrics, now, actions),
            AttemptOutcome::Exited { .. } | AttemptOutcome::TimedOut => {
                rec.failures += 1;
                if rec.failures <= retries.limit {
                    let wait = exponential_backoff(
                        retries.backoff.as_millis() as Millis,
                        retries.max_backoff.as_millis() as Millis,
                        rec.failures,
                    );
                    self.requeue(i, now, now + wait, actions);
                } else {
                    let error = match outcome {
                        AttemptOutcome::TimedOut => "timed out".to_owned(),
                        AttemptOutcome::Exited { code } => format!("exited with code {code}"),
                        _ => unreachable!("matched above"),
                    };
                    self.fail(i, error, now, actions);
                }
            }
            AttemptOutcome::Lost { reason }
            | AttemptOutcome::Error {
                message: reason,
                transient: true,
            } => {
                rec.infra_failures += 1;
                if rec.infra_failures <= INFRA_RETRY_LIMIT {
                    // A lost attempt runs again at once (its worker is gone, another can take
                    // it); a transient error waits, as the same cause may still be there.
                    let wait = if lost {
                        0
                    } else {
                        exponential_backoff(INFRA_BACKOFF_MS, 60_000, rec.infra_failures)
                    };
                    self.requeue(i, now, now + wait, actions);
                } else {
                    let error = format!("{reason} (gave up after {INFRA_RETRY_LIMIT} retries)");
                    self.fail(i, error, now, actions);
                }
            }
            AttemptOutcome::Error {
                message,
                transient: false,
            } => self.fail(i, message, now, actions),
            AttemptOutcome::Cancelled => {
                // The worker stopped it on its own (it is shutting down): not the stage's fault.
                rec.infra_failures += 1;
                self.requeue(i, now, now, actions);
            }
            AttemptOutcome::Running => {}
        }
        Ok(())
    }

    /// Instance `i` succeeded with `outputs` and `metrics` (from its attempt, or from the run
    /// a cache hit reused): kept on its record, announced for indexing with the cache entry
    /// to store (a `cache: true` stage that ran after a miss), and settled.
    pub(super) fn succeed(
        &mut self,
        i: usize,
        outputs: Vec<ArtifactRef>,
        metrics: BTreeMap<String, f64>,
        now: Millis,
        actions: &mut Vec<Action>,
    ) {
        let cacheable = self.plan.dag.stages[self.plan.nodes[i].stage].cache;
        let rec = &mut self.stages[i];
        rec.outputs = outputs;
        rec.metrics = metrics;
        rec.state = StageState::Succeeded { finished_ms: now };
        let cache_key = match &rec.cache {
            Some(note) if cacheable && matches!(note.outcome, CacheOutcome::Miss { .. }) => {
                Some(note.key.clone())
            }
            _ => None,
        };
        actions.push(Action::Succeeded {
            instance: i,
            cache_key,
        });
        self.settle(i, now, actions);
    }

    /// The outputs of instance `i` to keep from what its attempt reported: every reported one
    /// readable and stored, every declared one among them; reported outputs the stage does
    /// not declare are dropped. `Err` says what is wrong, as the attempt's failure.
    fn declared_outputs(
        &self,
        i: usize,
        reported: Vec<ReportedOutput>,
    ) -> Result<Vec<ArtifactRef>, String> {
        let mut uploaded = Vec::with_capacity(reported.len());
        for output in reported {
            match output {
                ReportedOutput::Unreadable { name, error } => {
                    return Err(format!("output `{name}` was reported wrongly: {error}"));
                }
                ReportedOutput::Uploaded {
                    artifact,
                    stored: false,
                } => {
                    return Err(format!(
                        "output `{}` was reported, but its upload ({}) is not on the scheduler",
                        artifact.name, artifact.digest
                    ));
                }
                ReportedOutput::Uploaded { artifact, .. } => uploaded.push(artifact),
            }
        }
        let stage = &self.plan.dag.stages[self.plan.nodes[i].stage];
        let declared = &stage.outputs;
        if let Some(name) = declared.iter().find(|name| {
            !stage.optional_outputs.contains(name) && !uploaded.iter().any(|o| &o.name == *name)
        }) {
            return Err(format!(
                "declared output `{name}` was not uploaded by the worker; it must be written \
                 to /vishwa/out/{name}"
            ));
        }
        uploaded.retain(|o| declared.contains(&o.name));
        Ok(uploaded)
    }
}
