//! What the connection sessions and the attempts share: the attempts running here and
//! whether the worker is draining; and the drain itself once shutdown fires.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (attempt, token) in shared.running().iter() {
        info!(%attempt, "grace period over; stopping attempt");
        token.cancel();
    }
    hard_stop.cancel();
}
