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

use super::retry::{
    Backoff, Delivery, FIRST_RECONNECT_BACKOFF, MAX_RECONNECT_BACKOFF, with_patience,
};
use crate::api::convert::log_stream;
use crate::connect::WorkerClient as Client;
use crate::executor::{ExecEvent, OutputChunk, OutputStream};
use crate::logcap::LogCap;
use crate::logship::Batcher;
use crate::mask::Masker;

/// How long a chunk of output may wait before its batch is shipped.
const LOG_BATCH_DELAY: Duration = Duration::from_millis(50);
/// Log batches waiting to be shipped at most, per attempt.
const SHIP_QUEUE: usize = 4;

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
    // Bounded: when the scheduler is slow, the stage's output waits (its pipe fills) instead
    // of piling up in the worker's memory.
    let (ship, batches) = mpsc::channel::<Vec<pb::LogChunk>>(SHIP_QUEUE);
    let shipper = tokio::spawn(ship_batches(
        client.clone(),
        task.attempt_id.clone(),
        batches,
    ));
    let mut batcher = Batcher::new(&task, ship);
    let mut cap = LogCap::new(task.max_log_bytes);
    let system = pb::LogStream::System as i32;
    // One masker per stream: a value split across chunks is only split within one stream.
    let secret_values: Vec<&String> = task
        .secret_env
        .iter()
        .filter_map(|name| task.env.get(name))
        .collect();
    let mut maskers: BTreeMap<i32, Masker> = BTreeMap::new();
    let mut mask = |stream: i32, data: Bytes| -> Bytes {
        if secret_values.is_empty() {
            return data;
        }
        let masker = maskers
            .entry(stream)
            .or_insert_with(|| Masker::new(secret_values.iter().map(|v| v.as_bytes())));
        Bytes::from(masker.push(&data))
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
                        let data = mask(stream, chunk.data);
                        if data.is_empty() {
                            continue;
                        }
                        if batcher.is_empty() {
                            flush_timer.as_mut().reset(tokio::time::Instant::now() + LOG_BATCH_DELAY);
                        }
                        for (stream, data) in cap.push(stream, data, system) {
                            batcher.add(stream, data).await;
                        }
                    }
                }
            }
            _ = &mut flush_timer, if !batcher.is_empty() => batcher.flush().await,
        }
    }
    // What the maskers held back was no secret after all.
    let held: Vec<(i32, Vec<u8>)> = maskers
        .iter_mut()
        .map(|(stream, masker)| (*stream, masker.finish()))
        .filter(|(_, rest)| !rest.is_empty())
        .collect();
    for (stream, rest) in held {
        for (stream, data) in cap.push(stream, Bytes::from(rest), system) {
            batcher.add(stream, data).await;
        }
    }
    for (stream, data) in cap.finish(system) {
        batcher.add(stream, data).await;
    }
    batcher.flush().await;
    drop(batcher);
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
    let mut backoff = Backoff::new(FIRST_RECONNECT_BACKOFF, MAX_RECONNECT_BACKOFF);
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
                tokio::time::sleep(backoff.next_wait()).await;
            }
        }
    }
}

/// Ships log batches in order, each retried until stored.
async fn ship_batches(
    client: Client,
    attempt: String,
    mut batches: mpsc::Receiver<Vec<pb::LogChunk>>,
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
