//! The scheduler's one clock. The engine, leases, retry backoff, stage and run timeouts,
//! schedules and retention sweeps read the time and sleep only through a [`Clock`], so
//! tests can drive all of them with tokio's paused time instead of waiting for real time.
//!
//! A clock gives two kinds of time:
//! - wall time ([`Clock::now_ms`], [`Clock::now`]): what cron slots, deadlines and the
//!   stored records are in;
//! - monotonic time ([`Clock::instant`], [`Clock::sleep_until_ms`], [`Clock::sleep`]): what
//!   the engine sleeps on. It is always tokio's clock, so `tokio::time::pause()` and
//!   `tokio::time::advance()` drive it.
//!
//! Not through it: file times (the blob store's grace compares a file's modification time
//! with the system clock that set it), measurements (dispatch latency, benchmarks) and log
//! timestamps.
//!
//! [`Clock::system`] reads the system's wall clock: the scheduler's. [`Clock::starting_at`]
//! is the test clock: its wall time starts at a chosen instant and then moves with tokio's
//! clock, so under paused time it stands still until tokio advances it (by hand, or on its
//! own when every task waits), and a sleep until a wall time ends exactly at that time.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::ids::Millis;

/// A cheap, cloneable handle on the time; every clone reads the same clock.
#[derive(Clone)]
pub struct Clock {
    source: Arc<Source>,
}

enum Source {
    System,
    /// Wall time = `wall_at` + (tokio now − `instant_at`) + `jumped`.
    Following {
        wall_at: Millis,
        instant_at: Instant,
        jumped: AtomicI64,
    },
}

impl Clock {
    /// The system clock: wall time from the operating system, sleeps on tokio's timer.
    pub fn system() -> Clock {
        Clock {
            source: Arc::new(Source::System),
        }
    }

    /// A clock whose wall time reads `start` now and then moves with tokio's clock (for
    /// tests under `tokio::time::pause()` or `#[tokio::test(start_paused = true)]`). Must be
    /// called inside a tokio runtime.
    pub fn starting_at(start: DateTime<Utc>) -> Clock {
        Clock {
            source: Arc::new(Source::Following {
                wall_at: start.timestamp_millis(),
                instant_at: Instant::now(),
                jumped: AtomicI64::new(0),
            }),
        }
    }

    /// Moves this clock's wall time by `by_ms` without any monotonic time passing, as when an
    /// operator or NTP steps the system clock. Only the test clock can be moved; on the system
    /// clock this does nothing.
    pub fn jump(&self, by_ms: Millis) {
        if let Source::Following { jumped, .. } = &*self.source {
            jumped.fetch_add(by_ms, Ordering::SeqCst);
        }
    }

    /// Wall time now, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> Millis {
        match &*self.source {
            Source::System => Utc::now().timestamp_millis(),
            Source::Following {
                wall_at,
                instant_at,
                jumped,
            } => {
                let passed = Instant::now().duration_since(*instant_at).as_millis() as Millis;
                wall_at + passed + jumped.load(Ordering::SeqCst)
            }
        }
    }

    /// Wall time now.
    pub fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.now_ms()).unwrap_or_default()
    }

    /// Monotonic time now (tokio's clock).
    pub fn instant(&self) -> Instant {
        Instant::now()
    }

    /// The monotonic instant at which this clock's wall time reads `at` (now, if it already
    /// has).
    pub fn instant_at(&self, at: Millis) -> Instant {
        let now = Instant::now();
        let wait = at.saturating_sub(self.now_ms()).max(0) as u64;
        now + Duration::from_millis(wait)
    }

    /// Sleeps until the wall time reads `at`.
    pub async fn sleep_until_ms(&self, at: Millis) {
        tokio::time::sleep_until(self.instant_at(at)).await;
    }

    /// Sleeps for `duration` of monotonic time.
    pub async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.source {
            Source::System => f.write_str("Clock::system"),
            Source::Following { .. } => write!(f, "Clock::starting_at(.. now {})", self.now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().expect("valid test instant")
    }

    #[tokio::test(start_paused = true)]
    async fn the_test_clock_moves_only_with_tokios_clock() {
        let clock = Clock::starting_at(at("2026-03-29T00:30:00Z"));
        let start = clock.now_ms();
        assert_eq!(clock.now(), at("2026-03-29T00:30:00Z"));
        tokio::task::yield_now().await;
        assert_eq!(clock.now_ms(), start, "paused: no time passes on its own");
        tokio::time::advance(Duration::from_millis(2_500)).await;
        assert_eq!(clock.now_ms(), start + 2_500);
        let copy = clock.clone();
        copy.jump(-1_000);
        assert_eq!(clock.now_ms(), start + 1_500, "clones read one clock");
    }

    #[tokio::test(start_paused = true)]
    async fn a_sleep_until_a_wall_time_ends_exactly_then() {
        let clock = Clock::starting_at(at("2026-11-01T05:00:00Z"));
        let target = clock.now_ms() + 3_600_000;
        let begun = clock.instant();
        clock.sleep_until_ms(target).await;
        assert_eq!(clock.now_ms(), target);
        assert_eq!(begun.elapsed(), Duration::from_secs(3_600));
        // A time already passed does not wait.
        clock.sleep_until_ms(target - 10).await;
        assert_eq!(clock.now_ms(), target);
    }

    #[tokio::test]
    async fn the_system_clock_reads_the_system_time() {
        let clock = Clock::system();
        let before = Utc::now().timestamp_millis();
        let now = clock.now_ms();
        assert!(now >= before && now - before < 60_000, "{now} vs {before}");
        clock.jump(-1_000_000);
        assert!(clock.now_ms() >= now, "the system clock cannot be moved");
    }
}
