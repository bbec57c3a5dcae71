//! Figures the engine keeps about itself, read by benchmarks.

use std::time::Duration;

/// Time from an instance becoming ready to its dispatch, per dispatched attempt.
#[derive(Debug, Clone, Default)]
pub struct DispatchMetrics {
    /// Microseconds from ready to dispatched, in dispatch order (the most recent 1M).
    pub ready_to_dispatch_us: Vec<u64>,
    /// Microseconds from the moment an instance could go (ready, and a slot that fits it
    /// free) to its dispatch: the engine's own reaction time, without the wait for a slot.
    pub eligible_to_dispatch_us: Vec<u64>,
    /// Attempts dispatched since the engine started.
    pub dispatched: u64,
    /// Store batches committed and synced since the engine started.
    pub commits: u64,
}

/// Keep at most this many latency samples.
const MAX_SAMPLES: usize = 1 << 20;

impl DispatchMetrics {
    pub(crate) fn record(&mut self, since_ready: Duration, since_eligible: Duration) {
        self.dispatched += 1;
        if self.ready_to_dispatch_us.len() < MAX_SAMPLES {
            self.ready_to_dispatch_us
                .push(since_ready.as_micros() as u64);
            self.eligible_to_dispatch_us
                .push(since_eligible.as_micros() as u64);
        }
    }

    /// The `q` quantile (0.0..=1.0) of ready-to-dispatch latency in microseconds.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        quantile(&self.ready_to_dispatch_us, q)
    }

    /// The `q` quantile (0.0..=1.0) of eligible-to-dispatch latency in microseconds.
    pub fn eligible_quantile_us(&self, q: f64) -> Option<u64> {
        quantile(&self.eligible_to_dispatch_us, q)
    }
}

fn quantile(samples: &[u64], q: f64) -> Option<u64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((sorted.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    Some(sorted[rank])
}
