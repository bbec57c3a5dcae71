//! `vishwa approve RUN STAGE` and `vishwa reject RUN STAGE --reason TEXT`: a decision on a
//! stage waiting on its `approval:` gate.

use anyhow::Result;
use serde_json::json;
use vishwa_proto::v1 as pb;

use crate::client::Client;
use crate::output::{self, Format};
use crate::{Global, Verb, exit};

pub(crate) async fn dispatch(verb: Verb, global: &Global) -> Result<u8> {
    let (run_id, stage, approve, reason) = match verb {
        Verb::Approve { run, stage } => (run, stage, true, String::new()),
        Verb::Reject { run, stage, reason } => (run, stage, false, reason),
        _ => unreachable!("dispatch routes only approve and reject here"),
    };
    let mut client = Client::from_global(global).await?;
    let response = client
        .approve_stage(pb::ApproveStageRequest {
            run_id: run_id.clone(),
            stage,
            approve,
            reason,
        })
        .await?;
    let verdict = if approve { "approved" } else { "rejected" };
    match global.format {
        Format::Json => output::print_json(&json!({
            "run": run_id,
            "decision": verdict,
            "instances": response.instances,
        })),
        Format::Table => {
            for instance in &response.instances {
                outln!("{run_id} {instance} {verdict}");
            }
        }
    }
    Ok(exit::OK)
}
