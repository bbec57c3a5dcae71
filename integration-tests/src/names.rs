//! Names no other test uses, in this or a concurrent test process: DAGs, workers, attempts
//! and network namespaces carry them, so parallel tests never touch each other's containers.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A short suffix unique to this call: the process id, the clock's nanoseconds and a counter.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!(
        "{:x}{:x}{}",
        std::process::id() & 0xffff,
        nanos & 0xfffff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `prefix-<unique suffix>`.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", unique_suffix())
}

/// Wall-clock time in milliseconds since the epoch, the unit of the scheduler's timestamps.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_differ_between_calls() {
        let a = unique_name("dag");
        let b = unique_name("dag");
        assert_ne!(a, b);
        assert!(a.starts_with("dag-"), "{a}");
    }
}
