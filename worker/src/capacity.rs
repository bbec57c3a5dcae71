//! What a worker offers to stages: CPUs, memory and GPUs, from flags or detected on the host.

/// A worker's capacity.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Capacity {
    /// CPUs (0 means not accounted: stages asking for CPUs are refused).
    pub cpus: f64,
    /// Memory in bytes (0 means not accounted).
    pub memory_bytes: u64,
    /// GPU device ids, as Docker's device requests name them.
    pub gpus: Vec<String>,
}

impl Capacity {
    /// What this host has: its CPUs, its memory, and the NVIDIA GPUs its driver lists.
    pub fn detect() -> Capacity {
        Capacity {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get() as f64)
                .unwrap_or(1.0),
            memory_bytes: std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|text| mem_total_bytes(&text))
                .unwrap_or(0),
            gpus: detect_gpus(),
        }
    }
}

/// `MemTotal` from /proc/meminfo, in bytes.
fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// GPUs the NVIDIA driver exposes (one folder per GPU), numbered from 0 as Docker does.
fn detect_gpus() -> Vec<String> {
    std::fs::read_dir("/proc/driver/nvidia/gpus")
        .map(|entries| entries.count())
        .map(|n| (0..n).map(|i| i.to_string()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_read_from_meminfo() {
        let text = "MemTotal:       24576000 kB\nMemFree:  100 kB\n";
        assert_eq!(mem_total_bytes(text), Some(24_576_000 * 1024));
        assert_eq!(mem_total_bytes("nothing"), None);
    }

    #[test]
    fn this_host_has_cpus_and_memory() {
        let c = Capacity::detect();
        assert!(c.cpus >= 1.0);
        assert!(c.memory_bytes > 0);
    }
}
