//! Log chunks of one attempt gathered into batches: numbered in the order they are
//! forwarded, shipped when a batch holds enough bytes or its delay ran out.

use bytes::Bytes;
use tokio::sync::mpsc;
use vishwa_proto::v1 as pb;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Bytes a batch holds before it is shipped without waiting for its delay.
const LOG_BATCH_BYTES: usize = 64 << 10;

/// The batch being filled for one attempt.
pub(crate) struct Batcher<'a> {
    task: &'a pb::Task,
    ship: mpsc::Sender<Vec<pb::LogChunk>>,
    batch: Vec<pb::LogChunk>,
    bytes: usize,
    seq: u64,
}

impl<'a> Batcher<'a> {
    pub(crate) fn new(task: &'a pb::Task, ship: mpsc::Sender<Vec<pb::LogChunk>>) -> Self {
        Batcher {
            task,
            ship,
            batch: Vec::new(),
            bytes: 0,
            seq: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Adds a chunk with the next seq; ships the batch (waiting while the queue is full)
    /// once it is big enough.
    pub(crate) async fn add(&mut self, stream: i32, data: Bytes) {
        if data.is_empty() {
            return;
        }
        self.bytes += data.len();
        self.batch.push(pb::LogChunk {
            attempt_id: self.task.attempt_id.clone(),
            stream,
            data,
            seq: self.seq,
            time_ms: now_ms(),
            run_id: self.task.run_id.clone(),
            stage: self.task.stage.clone(),
            attempt: self.task.attempt,
        });
        self.seq += 1;
        if self.bytes >= LOG_BATCH_BYTES {
            self.flush().await;
        }
    }

    /// Ships what the batch holds.
    pub(crate) async fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        self.bytes = 0;
        let _ = self.ship.send(std::mem::take(&mut self.batch)).await;
    }
}
