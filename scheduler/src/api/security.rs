//! The client API's secrets and audit log: secrets sealed before they are stored and never
//! sent back, and one audit entry per mutating call.

use tonic::{Response, Status};
use tracing::info;
use vishwa_proto::v1 as pb;

use super::client::ClientApi;
use super::error::ApiError;
use crate::auth::Caller;
use crate::dag::is_secret_name;
use crate::engine::EngineError;
use crate::secrets::MAX_SECRET_BYTES;
use crate::store::AuditEntry;

/// Audit entries listed when the request gives no limit.
const DEFAULT_AUDIT_LIMIT: usize = 100;

impl ClientApi {
    /// Records a mutating call of `caller` in the audit log (and the tracing log), then
    /// hands its result back. A failing audit write is logged, not turned into a failure of
    /// a call that already took effect.
    pub(super) async fn audited<T>(
        &self,
        caller: &Caller,
        method: &str,
        target: &str,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        let outcome = match &result {
            Ok(_) => "ok".to_owned(),
            Err(status) => format!("{:?}: {}", status.code(), status.message()),
        };
        info!(
            target: "vishwa::audit",
            caller = %caller.name,
            method,
            target = target,
            outcome = %outcome,
            "audit"
        );
        let entry = AuditEntry {
            at_ms: self.engine().clock().now_ms(),
            caller: caller.name.clone(),
            method: method.to_owned(),
            target: target.to_owned(),
            outcome,
        };
        if let Err(e) = self.store().append_audit(&entry).await {
            tracing::warn!(error = %e, method, "cannot write the audit log");
        }
        result
    }

    pub(super) async fn set_secret_value(
        &self,
        r: pb::SetSecretRequest,
    ) -> Result<Response<pb::SetSecretResponse>, Status> {
        if !is_secret_name(&r.name) {
            return Err(EngineError::invalid(
                "name",
                format!(
                    "`{}` is not a secret name; use letters, digits, `_`, `-` and `.`",
                    r.name
                ),
            )
            .into());
        }
        if r.value.len() > MAX_SECRET_BYTES {
            return Err(EngineError::invalid(
                "value",
                format!(
                    "the value has {} bytes; secrets hold at most {MAX_SECRET_BYTES}",
                    r.value.len()
                ),
            )
            .into());
        }
        let value = std::str::from_utf8(&r.value).map_err(|_| {
            EngineError::invalid(
                "value",
                "the value is not UTF-8 text; stages receive secrets as environment \
                     variables, which hold text (base64-encode binary values)"
                    .into(),
            )
        })?;
        // A trailing newline from `echo value | vishwa secret set` is not part of the value.
        let value = value.strip_suffix('\n').unwrap_or(value);
        let value = value.strip_suffix('\r').unwrap_or(value);
        if value.is_empty() {
            return Err(EngineError::invalid(
                "value",
                "the value is empty; pass it on stdin".into(),
            )
            .into());
        }
        let key = self.secrets.as_ref().ok_or_else(|| {
            EngineError::invalid("secret", "this scheduler has no secret key".into())
        })?;
        let replaced = self.store().get_secret(&r.name)?.is_some();
        let record = key
            .seal(&r.name, value.as_bytes(), self.engine().clock().now_ms())
            .map_err(ApiError::from)?;
        self.store().put_secret(&record).await?;
        Ok(Response::new(pb::SetSecretResponse {
            secret: Some(pb::SecretInfo::from(&record)),
            replaced,
        }))
    }

    pub(super) fn secret_infos(&self) -> Result<pb::ListSecretsResponse, ApiError> {
        let secrets = self
            .store()
            .list_secrets()?
            .iter()
            .map(pb::SecretInfo::from)
            .collect();
        Ok(pb::ListSecretsResponse { secrets })
    }

    pub(super) async fn delete_secret_named(
        &self,
        name: &str,
    ) -> Result<Response<pb::DeleteSecretResponse>, Status> {
        if self.store().delete_secret(name).await? {
            Ok(Response::new(pb::DeleteSecretResponse {}))
        } else {
            Err(ApiError::SecretNotFound {
                name: name.to_owned(),
            }
            .into())
        }
    }

    pub(super) fn audit_entries(&self, limit: u32) -> Result<pb::ListAuditResponse, ApiError> {
        let limit = if limit == 0 {
            DEFAULT_AUDIT_LIMIT
        } else {
            limit as usize
        };
        let entries = self
            .store()
            .list_audit(limit)?
            .into_iter()
            .map(pb::AuditEntry::from)
            .collect();
        Ok(pb::ListAuditResponse { entries })
    }
}
