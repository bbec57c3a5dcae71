//! Polling for readiness: tests wait for a condition with a deadline instead of sleeping.

use std::future::Future;
use std::time::Duration;

use anyhow::bail;
use tokio::time::Instant;

/// How often [`wait_until`] and [`wait_for`] check their condition.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Checks `condition` until it holds or `timeout` passes; returns whether it held.
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls `check` every `interval` until it gives a value; fails naming `what` after `limit`.
pub async fn wait_for<T, F, Fut>(
    what: &str,
    limit: Duration,
    interval: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("gave up waiting for {what} after {limit:?}");
        }
        tokio::time::sleep(interval).await;
    }
}

/// Checks `condition` every `interval` until it holds or `timeout` passes, blocking the
/// thread (for tests without a runtime); returns whether it held.
pub fn wait_until_blocking(
    timeout: Duration,
    interval: Duration,
    mut condition: impl FnMut() -> bool,
) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_wait_reports_whether_the_condition_held() {
        let mut calls = 0;
        assert!(wait_until_blocking(
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                calls += 1;
                calls == 3
            }
        ));
        assert_eq!(calls, 3);
        assert!(!wait_until_blocking(
            Duration::from_millis(5),
            Duration::from_millis(1),
            || false
        ));
    }

    #[tokio::test]
    async fn wait_for_names_what_it_waited_for() {
        let error = wait_for::<(), _, _>(
            "the moon",
            Duration::from_millis(5),
            Duration::from_millis(1),
            || async { None },
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("the moon"), "{error}");
        let value = wait_for("a value", Duration::from_secs(5), POLL_INTERVAL, || async {
            Some(7)
        })
        .await
        .unwrap();
        assert_eq!(value, 7);
    }
}
