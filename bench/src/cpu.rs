//! CPU time and memory of this process or a child, and the machine's load, read from /proc:
//! on a shared machine the CPU a run used says more about its cost than its wall time does.

use std::time::Duration;

/// Clock ticks per second of /proc's CPU times (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
const TICKS_PER_SECOND: u64 = 100;

/// User plus system CPU time this process has used so far; zero if /proc cannot be read.
pub(crate) fn process_cpu_time() -> Duration {
    cpu_time_in("/proc/self/stat")
}

/// User plus system CPU time process `pid` has used so far (threads that ended included);
/// zero if /proc cannot be read, e.g. once it has been reaped.
pub(crate) fn cpu_time_of(pid: u32) -> Duration {
    cpu_time_in(&format!("/proc/{pid}/stat"))
}

fn cpu_time_in(path: &str) -> Duration {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / TICKS_PER_SECOND)
}

/// Resident memory of process `pid` in bytes, now (`VmRSS`) and at its peak (`VmHWM`), from
/// /proc/<pid>/status; None if it cannot be read.
pub(crate) fn memory_of(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |field: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some(Memory {
        rss: kib("VmRSS:")? * 1024,
        peak_rss: kib("VmHWM:")? * 1024,
    })
}

/// Resident memory of a process, in bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Memory {
    pub(crate) rss: u64,
    pub(crate) peak_rss: u64,
}

/// The one-minute load average, if /proc has it.
pub(crate) fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work() {
        let before = process_cpu_time();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut x = 0u64;
        while process_cpu_time() <= before {
            assert!(std::time::Instant::now() < deadline, "cpu time never grew");
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
    }

    #[test]
    fn memory_and_cpu_of_this_process_are_read_by_pid() {
        let memory = memory_of(std::process::id()).expect("own status is readable");
        assert!(memory.rss > 0 && memory.peak_rss >= memory.rss);
        assert!(cpu_time_of(std::process::id()) >= Duration::ZERO);
        assert!(memory_of(u32::MAX).is_none());
    }

    #[test]
    fn load_average_is_read() {
        assert!(load_average().is_some_and(|l| l >= 0.0));
    }
}
