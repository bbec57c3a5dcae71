//! Conversions of the client service's administrative calls: retries, backfills, secrets
//! (by name, never the value) and the audit log.

use vishwa_proto::v1 as pb;

use crate::dag::Dag;
use crate::engine::{BackfillOutcome, BackfillRequest, BackfillSlot, EngineError};
use crate::run::RetryMode;
use crate::store::{AssetRecord, AuditEntry, SecretRecord};

impl TryFrom<&pb::RetryRunRequest> for RetryMode {
    type Error = EngineError;

    fn try_from(r: &pb::RetryRunRequest) -> Result<Self, EngineError> {
        let stage = r.from_stage.clone();
        match (stage.is_empty(), r.only) {
            (true, false) => Ok(RetryMode::Failed),
            (true, true) => Err(EngineError::invalid(
                "only",
                "--only needs a stage: vishwa retry RUN --from STAGE --only".into(),
            )),
            (false, false) => Ok(RetryMode::From(stage)),
            (false, true) => Ok(RetryMode::Only(stage)),
        }
    }
}

impl From<&pb::BackfillRequest> for BackfillRequest {
    fn from(r: &pb::BackfillRequest) -> Self {
        BackfillRequest {
            dag: r.dag.clone(),
            from_ms: r.from_ms,
            to_ms: r.to_ms,
            dry_run: r.dry_run,
        }
    }
}

impl From<&BackfillSlot> for pb::BackfillSlot {
    fn from(s: &BackfillSlot) -> Self {
        pb::BackfillSlot {
            logical_time_ms: s.logical_time_ms,
            run_id: s.run.0.clone(),
            outcome: s.outcome.as_str().to_owned(),
            state: match s.outcome {
                BackfillOutcome::Exists { state } => pb::RunState::from(state) as i32,
                _ => pb::RunState::Unspecified as i32,
            },
        }
    }
}

/// What a backfill did, as sent to clients.
pub(crate) fn backfill_response(slots: &[BackfillSlot], dag: &Dag) -> pb::BackfillResponse {
    pb::BackfillResponse {
        slots: slots.iter().map(pb::BackfillSlot::from).collect(),
        timezone: dag
            .schedule
            .as_ref()
            .map(|s| s.timezone.name().to_owned())
            .unwrap_or_default(),
    }
}

impl From<&SecretRecord> for pb::SecretInfo {
    fn from(s: &SecretRecord) -> Self {
        pb::SecretInfo {
            name: s.name.clone(),
            set_ms: s.set_ms,
        }
    }
}

impl From<AuditEntry> for pb::AuditEntry {
    fn from(e: AuditEntry) -> Self {
        pb::AuditEntry {
            at_ms: e.at_ms,
            caller: e.caller,
            method: e.method,
            target: e.target,
            outcome: e.outcome,
        }
    }
}

impl From<&AssetRecord> for pb::Asset {
    /// The asset and its versions; consumers and triggers are filled in by the caller.
    fn from(a: &AssetRecord) -> Self {
        pb::Asset {
            name: a.name.clone(),
            versions: a
                .versions
                .iter()
                .map(|v| pb::AssetVersion {
                    version: v.version,
                    digest: v.digest.clone(),
                    file: v.file.clone(),
                    size: v.size,
                    run_id: v.run.0.clone(),
                    stage: v.stage.clone(),
                    created_ms: v.created_ms,
                    consumer_runs: Vec::new(),
                })
                .collect(),
            triggers: Vec::new(),
        }
    }
}
