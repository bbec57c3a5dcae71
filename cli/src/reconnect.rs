//! Riding through a scheduler restart: a follow (`--watch`, `logs -f`) whose stream breaks
//! waits with backoff and opens it again, as long as the scheduler comes back in time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tonic::{Code, Status};
use vishwa_proto::v1 as pb;

/// How long a follow keeps trying to reach a scheduler that went away.
const PATIENCE: Duration = Duration::from_secs(300);
const MAX_BACKOFF: Duration = Duration::from_secs(3);

/// Reconnection state of one follow.
pub(crate) struct Reconnect {
    down_since: Option<Instant>,
    backoff: Duration,
}

impl Reconnect {
    pub(crate) fn new() -> Self {
        Reconnect {
            down_since: None,
            backoff: Duration::from_millis(200),
        }
    }

    /// The stream is (back) up.
    pub(crate) fn connected(&mut self) {
        if self.down_since.take().is_some() {
            eprintln!("reconnected to the scheduler");
        }
        self.backoff = Duration::from_millis(200);
    }

    /// After the stream failed with `status`: waits and returns true when it is worth opening
    /// it again (the scheduler is restarting), false when the error is final.
    pub(crate) async fn should_retry(&mut self, status: &Status, server: &str) -> bool {
        if !is_transient(status) {
            return false;
        }
        let since = *self.down_since.get_or_insert_with(|| {
            eprintln!(
                "lost the scheduler at {server} ({}); reconnecting",
                status.message()
            );
            Instant::now()
        });
        if since.elapsed() > PATIENCE {
            return false;
        }
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        true
    }
}

/// Whether a failed call may work once the scheduler is back.
fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Aborted
    )
}

/// Log chunks already shown, per stage and attempt: a reopened stream sends the stored ones
/// again, and they are not shown twice.
#[derive(Default)]
pub(crate) struct LogDedup {
    next_seq: HashMap<(String, u32), u64>,
}

impl LogDedup {
    /// Whether `line` is new (and records it as seen).
    pub(crate) fn first_time(&mut self, line: &pb::LogLine) -> bool {
        let next = self
            .next_seq
            .entry((line.stage.clone(), line.attempt))
            .or_insert(0);
        if line.seq < *next {
            return false;
        }
        *next = line.seq + 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(stage: &str, attempt: u32, seq: u64) -> pb::LogLine {
        pb::LogLine {
            stage: stage.into(),
            attempt,
            seq,
            ..Default::default()
        }
    }

    #[test]
    fn log_lines_sent_again_after_a_reconnect_are_shown_once() {
        let mut seen = LogDedup::default();
        assert!(seen.first_time(&line("a", 1, 0)));
        assert!(seen.first_time(&line("a", 1, 1)));
        assert!(seen.first_time(&line("a", 2, 0)), "another attempt");
        assert!(seen.first_time(&line("b", 1, 0)), "another stage");
        assert!(!seen.first_time(&line("a", 1, 0)));
        assert!(!seen.first_time(&line("a", 1, 1)));
        assert!(seen.first_time(&line("a", 1, 2)));
    }

    #[test]
    fn only_a_restarting_scheduler_is_worth_reconnecting_to() {
        assert!(is_transient(&Status::unavailable("down")));
        assert!(is_transient(&Status::unknown("h2 protocol error")));
        assert!(!is_transient(&Status::not_found("no run")));
        assert!(!is_transient(&Status::invalid_argument("bad")));
    }
}
