//! `ApproveStage`: approving or rejecting a stage waiting on its `approval:` gate. Operator
//! role; audited with who decided, on what, and why.

use tonic::{Request, Response, Status};
use vishwa_proto::v1 as pb;

use super::client::ClientApi;
use crate::auth::Caller;
use crate::engine::{EngineError, Verdict};
use crate::ids::RunId;

/// The longest rejection reason kept.
const MAX_REASON_CHARS: usize = 2_000;

impl ClientApi {
    pub(super) async fn approve_stage_call(
        &self,
        request: Request<pb::ApproveStageRequest>,
    ) -> Result<Response<pb::ApproveStageResponse>, Status> {
        let caller = Caller::of(&request);
        let r = request.into_inner();
        let reason = r.reason.trim().to_owned();
        let (method, target) = if r.approve {
            ("ApproveStage", format!("{}/{}", r.run_id, r.stage))
        } else {
            (
                "RejectStage",
                format!("{}/{} reason: {reason}", r.run_id, r.stage),
            )
        };
        let result = async {
            if r.stage.trim().is_empty() {
                return Err(EngineError::invalid(
                    "stage",
                    "name the stage to decide on, e.g. `vishwa approve RUN deploy`".to_owned(),
                )
                .into());
            }
            if reason.chars().count() > MAX_REASON_CHARS {
                return Err(EngineError::invalid(
                    "reason",
                    format!("the reason is longer than {MAX_REASON_CHARS} characters; shorten it"),
                )
                .into());
            }
            let verdict = if r.approve {
                Verdict::Approve {
                    by: caller.name.clone(),
                }
            } else {
                if reason.is_empty() {
                    return Err(EngineError::invalid(
                        "reason",
                        "say why the stage is rejected: `--reason TEXT`".to_owned(),
                    )
                    .into());
                }
                Verdict::Reject {
                    by: caller.name.clone(),
                    reason: reason.clone(),
                }
            };
            let instances = self
                .engine()
                .decide(RunId(r.run_id.clone()), r.stage.clone(), verdict)
                .await?;
            Ok(Response::new(pb::ApproveStageResponse { instances }))
        }
        .await;
        self.audited(&caller, method, &target, result).await
    }
}
