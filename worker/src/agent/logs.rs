//! Log forwarding: an attempt's events go to the scheduler, its start as a report and its
//! output (with secrets masked) in batches shipped in order, each retried until stored.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tracing::{debug, info, warn};
use vishwa_proto::v1 as pb;

use super::retry::{Delivery, with_patience};
use crate::api::convert::log_stream;
use crate::connect::WorkerClient as Client;
use crate::executor::{ExecEvent, OutputChunk, OutputStream};
use crate::mask::Masker;

/// Output buffered per attempt before a batch is shipped, and how long a chunk may wait.
const LOG_BATCH_BYTES: usize = 64 << 10;
const LOG_BATCH_DELAY: Duration = Duration::from_millis(50);

/// A line about the attempt in its log (the system stream).
pub(super) async fn system_line(events: &mpsc::Sender<ExecEvent>, line: String) {
    let chunk = OutputChunk {
        stream: OutputStream::System,
        data: format!("{line}\n").into(),
    };
    let _ = events.send(ExecEvent::Output(chunk)).await;
}

/// Sends the executor's events to the scheduler: the start as a report (a refused start
/// stops the attempt: it is no longer current), output in batches shipped in order by a
/// separate task, so a slow or restarting scheduler never blocks the stage's output. Returns
/// once every batch is stored.
pub(super) async fn forward_events(
    client: Client,
    worker_id: String,
    task: pb::Task,
    mut events: mpsc::Receiver<ExecEvent>,
    cancel: CancellationToken,
) {
    let (ship, batches) = mpsc::unbounded_channel::<Vec<pb::LogChunk>>();
    let shipper = tokio::spawn(ship_batches(
        client.clone(),
        task.attempt_id.clone(),
        batches,
    ));
    let mut batch: Vec<pb::LogChunk> = Vec::new();
    let mut batch_bytes = 0;
    let mut seq = 0u64;
    // One masker per stream: a value split across chunks is only split within one stream.
    let secret_values: Vec<&String> = task
        .secret_env
        .iter()
        .filter_map(|name| task.env.get(name))
        .collect();
    let mut maskers: BTreeMap<i32, Masker> = BTreeMap::new();
    let mut chunk_of = |stream: i32, data: Bytes, seq: &mut u64| -> Option<pb::LogChunk> {
        let data = if secret_values.is_empty() {
            data
        } else {
            let masker = maskers
                .entry(stream)
                .or_insert_with(|| Masker::new(secret_values.iter().map(|v| v.as_bytes())));
            Bytes::from(masker.push(&data))
        };
        if data.is_empty() {
            return None;
        }
        let chunk = pb::LogChunk {
            attempt_id: task.attempt_id.clone(),
            stream,
            data,
            seq: *seq,
            time_ms: now_ms(),
            run_id: task.run_id.clone(),
            stage: task.stage.clone(),
            attempt: task.attempt,
        };
        *seq += 1;
        Some(chunk)
    };
    let flush_timer = tokio::time::sleep(LOG_BATCH_DELAY);
    tokio::pin!(flush_timer);
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                match event {
                    ExecEvent::Started { handle } => {
                        report_started(&client, &worker_id, &task.attempt_id, handle, &cancel).await;
                    }
                    ExecEvent::Output(chunk) => {
                        let stream = log_stream(chunk.stream) as i32;
                        let Some(chunk) = chunk_of(stream, chunk.data, &mut seq) else {
                            continue;
                        };
                        if batch.is_empty() {
                            flush_timer.as_mut().reset(tokio::time::Instant::now() + LOG_BATCH_DELAY);
                        }
                        batch_bytes += chunk.data.len();
                        batch.push(chunk);
                        if batch_bytes >= LOG_BATCH_BYTES {
                            let _ = ship.send(std::mem::take(&mut batch));
                            batch_bytes = 0;
                        }
                    }
                }
            }
            _ = &mut flush_timer, if !batch.is_empty() => {
                let _ = ship.send(std::mem::take(&mut batch));
                batch_bytes = 0;
            }
        }
    }
    // What the maskers held back was no secret after all.
    let held: Vec<(i32, Vec<u8>)> = maskers
        .iter_mut()
        .map(|(stream, masker)| (*stream, masker.finish()))
        .filter(|(_, rest)| !rest.is_empty())
        .collect();
    for (stream, rest) in held {
        let chunk = pb::LogChunk {
            attempt_id: task.attempt_id.clone(),
            stream,
            data: Bytes::from(rest),
            seq,
            time_ms: now_ms(),
            run_id: task.run_id.clone(),
            stage: task.stage.clone(),
            attempt: task.attempt,
        };
        seq += 1;
        batch.push(chunk);
    }
    if !batch.is_empty() {
        let _ = ship.send(batch);
    }
    drop(ship);
    let _ = shipper.await;
}

async fn report_started(
    client: &Client,
    worker_id: &str,
    attempt: &str,
    handle: String,
    cancel: &CancellationToken,
) {
    let request = pb::ReportStartedRequest {
        worker_id: worker_id.to_owned(),
        attempt_id: attempt.to_owned(),
        handle,
    };
    // A start report is worth a few tries, not the full patience: the result matters more.
    let mut backoff = Duration::from_millis(100);
    for _ in 0..5 {
        match client.clone().report_started(request.clone()).await {
            Ok(_) => return,
            Err(status) if status.code() == Code::FailedPrecondition => {
                info!(%attempt, "the scheduler refused the start: the attempt is no longer current");
                cancel.cancel();
                return;
            }
            Err(status) => {
                debug!(%attempt, error = %status.message(), "start report failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
    }
}

/// Ships log batches in order, each retried until stored.
async fn ship_batches(
    client: Client,
    attempt: String,
    mut batches: mpsc::UnboundedReceiver<Vec<pb::LogChunk>>,
) {
    while let Some(chunks) = batches.recv().await {
        let batch = pb::LogBatch { chunks };
        let delivered = with_patience(&attempt, "shipping logs", || {
            let mut client = client.clone();
            let batch = batch.clone();
            async move { client.push_logs(batch).await.map(|_| ()) }
        })
        .await;
        if let Delivery::GaveUp = delivered {
            warn!(%attempt, "gave up shipping logs");
        }
    }
}
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
