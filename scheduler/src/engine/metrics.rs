//! Figures the engine keeps about itself, read by benchmarks.

/// Time from an instance becoming ready to its dispatch, per dispatched attempt.
#[derive(Debug, Clone, Default)]
pub struct DispatchMetrics {
    /// Microseconds from ready to dispatched, in dispatch order (the most recent 1M).
    pub ready_to_dispatch_us: Vec<u64>,
    /// Attempts dispatched since the engine started.
    pub dispatched: u64,
    /// Store batches committed and synced since the engine started.
    pub commits: u64,
}

/// Keep at most this many latency samples.
const MAX_SAMPLES: usize = 1 << 20;

impl DispatchMetrics {
    pub(crate) fn record(&mut self, micros: u64) {
        self.dispatched += 1;
        if self.ready_to_dispatch_us.len() < MAX_SAMPLES {
            self.ready_to_dispatch_us.push(micros);
        }
    }

    /// The `q` quantile (0.0..=1.0) of ready-to-dispatch latency in microseconds.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        if self.ready_to_dispatch_us.is_empty() {
            return None;
        }
        let mut sorted = self.ready_to_dispatch_us.clone();
        sorted.sort_unstable();
        let rank = ((sorted.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        Some(sorted[rank])
    }
}
