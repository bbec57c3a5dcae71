//! What the connection sessions and the attempts share: the attempts running here and
//! whether the worker is draining; and the drain itself once shutdown fires.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// What the connection sessions and the attempts share.
#[derive(Default)]
pub(super) struct Shared {
    /// Attempts running here, with the tokens that stop them.
    pub(super) running: Mutex<HashMap<String, CancellationToken>>,
    /// Shutting down: take nothing new.
    pub(super) draining: AtomicBool,
    /// This process, to the scheduler: a registration from another process under the same
    /// name is refused while this one is alive.
    pub(super) instance: String,
    /// Whether an earlier process's leftovers were cleaned up (after the first registration).
    pub(super) cleaned: AtomicBool,
}

impl Shared {
    pub(super) fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn running_ids(&self) -> Vec<String> {
        self.running().keys().cloned().collect()
    }

    pub(super) fn cancel(&self, attempt: &str, reason: &str) {
        if let Some(token) = self.running().get(attempt) {
            info!(%attempt, %reason, "stopping attempt");
            token.cancel();
        }
    }

    pub(super) fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// How often a drain looks whether anything still runs.
const DRAIN_CHECK: Duration = Duration::from_millis(100);

/// Once `shutdown` fires, marks the worker draining; after `grace` (or once nothing runs),
/// stops whatever still runs.
pub(super) async fn stop_after_grace(
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
    shared: Arc<Shared>,
    grace: Duration,
) {
    shutdown.cancelled().await;
    shared.draining.store(true, Ordering::SeqCst);
    let running = shared.running().len();
    if running > 0 {
        info!(running, grace = ?grace, "draining: letting running attempts finish");
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && !shared.running().is_empty() {
        tokio::time::sleep_until(deadline.min(Instant::now() + DRAIN_CHECK)).await;
    }
    for (attempt, token) in shared.running().iter() {
        info!(%attempt, "grace period over; stopping attempt");
        token.cancel();
    }
    hard_stop.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker running `attempts`, draining with `grace` from the moment this returns.
    fn draining(
        attempts: &[&str],
        grace: Duration,
    ) -> (Arc<Shared>, CancellationToken, Vec<CancellationToken>) {
        let shared = Arc::new(Shared::default());
        let tokens: Vec<CancellationToken> = attempts
            .iter()
            .map(|a| {
                let token = CancellationToken::new();
                shared.running().insert((*a).to_owned(), token.clone());
                token
            })
            .collect();
        let shutdown = CancellationToken::new();
        let hard_stop = CancellationToken::new();
        tokio::spawn(stop_after_grace(
            shutdown.clone(),
            hard_stop.clone(),
            shared.clone(),
            grace,
        ));
        shutdown.cancel();
        (shared, hard_stop, tokens)
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_still_running_are_stopped_exactly_when_the_grace_ends() {
        let start = Instant::now();
        let grace = Duration::from_millis(30_050);
        let (shared, hard_stop, tokens) = draining(&["a1"], grace);
        tokio::time::sleep(grace - Duration::from_millis(1)).await;
        assert!(shared.draining());
        assert!(!tokens[0].is_cancelled(), "not before the grace ends");
        assert!(!hard_stop.is_cancelled());
        hard_stop.cancelled().await;
        assert_eq!(start.elapsed(), grace);
        assert!(tokens[0].is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_ends_soon_after_the_last_attempt_finishes() {
        let start = Instant::now();
        let (shared, hard_stop, tokens) = draining(&["a1"], Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(2_050)).await;
        shared.running().remove("a1");
        hard_stop.cancelled().await;
        // Noticed at the next check, one DRAIN_CHECK at most after it finished.
        assert_eq!(start.elapsed(), Duration::from_millis(2_100));
        assert!(
            !tokens[0].is_cancelled(),
            "a finished attempt is not stopped"
        );
    }
}
