//! `vishwa runs delete RUN...` and `vishwa runs prune --older-than AGE --keep N`.

use anyhow::Result;
use serde_json::json;
use vishwa_proto::v1 as pb;

use crate::client::Client;
use crate::output::{self, Format};
use crate::{Global, RunsAction, exit};

pub(crate) async fn dispatch(action: RunsAction, global: &Global) -> Result<u8> {
    let mut client = Client::from_global(global).await?;
    let response = match action {
        RunsAction::Delete { runs } => {
            client
                .delete_runs(pb::DeleteRunsRequest { run_ids: runs })
                .await?
        }
        RunsAction::Prune { older_than, keep } => {
            client
                .prune_runs(pb::PruneRunsRequest {
                    older_than_ms: older_than.map_or(0, |d| d.as_millis() as u64),
                    keep_per_dag: keep,
                })
                .await?
        }
    };
    match global.format {
        Format::Json => output::print_json(&json!({
            "deleted": response.run_ids,
            "blobs_deleted": response.blobs_deleted,
            "blob_bytes_deleted": response.blob_bytes_deleted,
        })),
        Format::Table if response.run_ids.is_empty() => outln!("no runs to delete"),
        Format::Table => {
            for id in &response.run_ids {
                outln!("deleted {id}");
            }
            outln!(
                "{} run(s) deleted; {} output file(s) no other run used were freed ({})",
                response.run_ids.len(),
                response.blobs_deleted,
                output::bytes(response.blob_bytes_deleted)
            );
        }
    }
    Ok(exit::OK)
}
