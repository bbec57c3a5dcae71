//! An attempt's files: its DAG bundle and inputs brought in before it runs, and after exit 0
//! its metrics read and its declared outputs uploaded (before the success is reported).

use std::collections::BTreeMap;

use tokio::sync::mpsc;
use vishwa_proto::v1 as pb;

use super::logs::system_line;
use crate::artifacts::{AttemptDirs, fetch_inputs, read_metrics, upload_outputs};
use crate::bundle::BundleCache;
use crate::connect::WorkerClient as Client;
use crate::executor::{ExecEvent, ExecutorError, TaskSpec};

/// What a successful attempt produced, reported with its result.
#[derive(Default)]
pub(super) struct Produced {
    pub(super) outputs: Vec<pb::ArtifactRef>,
    pub(super) metrics: BTreeMap<String, f64>,
}

/// Fetches the attempt's bundle (pointing `spec` at it) and its inputs into `dirs`.
pub(super) async fn bring_in(
    client: &Client,
    worker_id: &str,
    bundles: &BundleCache,
    task: &pb::Task,
    spec: &mut TaskSpec,
    dirs: &AttemptDirs,
    events: &mpsc::Sender<ExecEvent>,
) -> Result<(), ExecutorError> {
    if !task.bundle_digest.is_empty() {
        spec.local_dir = Some(bundles.ensure(client, &task.bundle_digest).await?);
    }
    if !task.inputs.is_empty() {
        fetch_inputs(client, (worker_id, &task.attempt_id), dirs, &task.inputs).await?;
        let total: u64 = task.inputs.iter().map(|i| i.size).sum();
        system_line(
            events,
            format!(
                "fetched {} input(s), {total} bytes, digests verified",
                task.inputs.len()
            ),
        )
        .await;
    }
    Ok(())
}

/// After exit 0: reads the attempt's metrics and uploads its declared outputs.
pub(super) async fn send_out(
    client: &Client,
    worker_id: &str,
    task: &pb::Task,
    dirs: &AttemptDirs,
    events: &mpsc::Sender<ExecEvent>,
) -> Result<Produced, ExecutorError> {
    let metrics = read_metrics(dirs)?;
    let outputs = upload_outputs(
        client,
        worker_id,
        &task.attempt_id,
        dirs,
        &task.outputs,
        &task.optional_outputs,
    )
    .await?;
    let uploaded: u64 = outputs.iter().map(|o| o.size).sum();
    crate::metrics::metrics().upload_bytes.inc_by(uploaded);
    for o in &outputs {
        let short: String = o.digest.chars().take(12).collect();
        system_line(
            events,
            format!(
                "stored output {} ({} bytes, sha256 {short})",
                o.name, o.size
            ),
        )
        .await;
    }
    Ok(Produced { outputs, metrics })
}
