//! Patience with the scheduler: results and log batches are retried while it is
//! unreachable (a restart, say) until it takes them, refuses them as stale, or patience runs
//! out; and the backoff every retry of the agent waits by.
//!
//! Like the rest of the agent, it reads time only from tokio's clock, so tests drive it with
//! paused time.

use std::time::Duration;

use tokio::time::Instant;
use tonic::{Code, Status};
use tracing::debug;

/// First wait before reconnecting to the scheduler, doubled after each failure.
pub(super) const FIRST_RECONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between reconnection attempts (shorter once the heartbeat interval is known:
/// never longer than it).
pub(super) const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(5);
/// How long results and log batches are retried while the scheduler is unreachable.
pub(super) const REPORT_PATIENCE: Duration = Duration::from_secs(600);

/// Waits that start short and double after each failure, up to a cap.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    first: Duration,
    next: Duration,
    cap: Duration,
}

impl Backoff {
    pub(super) fn new(first: Duration, cap: Duration) -> Backoff {
        Backoff {
            first,
            next: first,
            cap,
        }
    }

    /// How long to wait before the next try; the wait after it is twice as long, up to the
    /// cap.
    pub(super) fn next_wait(&mut self) -> Duration {
        let wait = self.next.min(self.cap);
        self.next = (wait * 2).min(self.cap);
        wait
    }

    /// Starts again from the first wait, under a new cap.
    pub(super) fn restart(&mut self, cap: Duration) {
        self.next = self.first;
        self.cap = cap;
    }
}

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
    let mut backoff = Backoff::new(FIRST_RECONNECT_BACKOFF, MAX_RECONNECT_BACKOFF);
    loop {
        match send().await {
            Ok(()) => return Delivery::Done,
            Err(status) if status.code() == Code::FailedPrecondition => return Delivery::Refused,
            Err(status) if started.elapsed() < REPORT_PATIENCE => {
                debug!(%attempt, error = %status.message(), "{what} failed; retrying");
                tokio::time::sleep(backoff.next_wait()).await;
            }
            Err(_) => return Delivery::GaveUp,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_start_again_under_a_new_one() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let waits: Vec<u128> = (0..6).map(|_| backoff.next_wait().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        backoff.restart(Duration::from_millis(300));
        let waits: Vec<u128> = (0..3).map(|_| backoff.next_wait().as_millis()).collect();
        assert_eq!(waits, [100, 200, 300]);
    }

    /// Calls `with_patience` with a `send` that fails `failures` times with `code` (forever
    /// when None), and returns how it ended and when each call was made, from the start.
    async fn deliver(failures: Option<usize>, code: Code) -> (Delivery, Vec<Duration>) {
        let start = Instant::now();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = calls.clone();
        let delivery = with_patience("a1", "reporting", move || {
            let calls = seen.clone();
            async move {
                let mut calls = calls.lock().unwrap();
                calls.push(start.elapsed());
                if failures.is_none_or(|n| calls.len() <= n) {
                    Err(Status::new(code, "the scheduler is away"))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        let calls = calls.lock().unwrap().clone();
        (delivery, calls)
    }

    #[tokio::test(start_paused = true)]
    async fn a_report_is_retried_after_waits_that_double_until_it_is_taken() {
        let (delivery, calls) = deliver(Some(4), Code::Unavailable).await;
        assert!(matches!(delivery, Delivery::Done));
        let ms: Vec<u128> = calls.iter().map(Duration::as_millis).collect();
        // Waits of 100, 200, 400 and 800 ms between the five calls.
        assert_eq!(ms, [0, 100, 300, 700, 1_500]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_report_refused_as_stale_is_not_retried() {
        let (delivery, calls) = deliver(None, Code::FailedPrecondition).await;
        assert!(matches!(delivery, Delivery::Refused));
        assert_eq!(calls, [Duration::ZERO]);
    }

    #[tokio::test(start_paused = true)]
    async fn patience_runs_out_after_exactly_its_limit_with_waits_capped() {
        let (delivery, calls) = deliver(None, Code::Unavailable).await;
        assert!(matches!(delivery, Delivery::GaveUp));
        let last = *calls.last().unwrap();
        let before = calls[calls.len() - 2];
        assert!(before < REPORT_PATIENCE, "{before:?}");
        assert!(last >= REPORT_PATIENCE, "{last:?}");
        assert!(last - before <= MAX_RECONNECT_BACKOFF);
        // Once at the cap, the calls are exactly one cap apart.
        let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| *g <= MAX_RECONNECT_BACKOFF));
        assert_eq!(gaps.last(), Some(&MAX_RECONNECT_BACKOFF));
        // 100 ms doubled to 5 s: 100+200+...+3200 = 6.3 s, then every 5 s until 600 s.
        assert_eq!(calls.len(), 7 + ((600_000 - 6_300) / 5_000 + 1) as usize);
    }
}
