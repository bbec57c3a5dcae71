//! Small pieces both executors share: deadlines and the lines Vishwa writes about an attempt.

use bytes::Bytes;
use tokio::time::Instant;

use super::{EventSink, ExecEvent, OutputChunk, OutputStream};

/// Sleeps until `deadline`, or forever without one.
pub(super) async fn sleep_until_deadline(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn system_line(line: &str) -> ExecEvent {
    let mut data = Vec::with_capacity(line.len() + 1);
    data.extend_from_slice(line.as_bytes());
    data.push(b'\n');
    ExecEvent::Output(OutputChunk {
        stream: OutputStream::System,
        data: Bytes::from(data),
    })
}

/// Sends a line on the system stream (a closed sink is fine).
pub(super) async fn send_system_line(events: &EventSink, line: &str) {
    let _ = events.send(system_line(line)).await;
}

/// Sends a line on the system stream if there is room right now: used just before stopping an
/// attempt, which a slow reader must not hold up.
pub(super) fn offer_system_line(events: &EventSink, line: &str) {
    let _ = events.try_send(system_line(line));
}
