//! Patience with the scheduler: results and log batches are retried while it is
//! unreachable (a restart, say) until it takes them, refuses them as stale, or patience runs
//! out.

use std::time::{Duration, Instant};

use tonic::{Code, Status};
use tracing::debug;

/// First wait before reconnecting to the scheduler, doubled after each failure.
pub(super) const FIRST_RECONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between reconnection attempts (shorter once the heartbeat interval is known:
/// never longer than it).
pub(super) const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(5);
/// How long results and log batches are retried while the scheduler is unreachable.
pub(super) const REPORT_PATIENCE: Duration = Duration::from_secs(600);

/// How a report to the scheduler ended.
pub(super) enum Delivery {
    Done,
    /// The scheduler said the attempt is no longer current.
    Refused,
    GaveUp,
}

/// Calls `send` until it succeeds, is refused as stale, or [`REPORT_PATIENCE`] runs out.
pub(super) async fn with_patience<F, Fut>(attempt: &str, what: &str, mut send: F) -> Delivery
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Status>>,
{
    let started = Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        match send().await {
            Ok(()) => return Delivery::Done,
            Err(status) if status.code() == Code::FailedPrecondition => return Delivery::Refused,
            Err(status) if started.elapsed() < REPORT_PATIENCE => {
                debug!(%attempt, error = %status.message(), "{what} failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
            }
            Err(_) => return Delivery::GaveUp,
        }
    }
}
