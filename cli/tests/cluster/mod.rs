//! The process-level cluster of the crash, security and artifact tests lives in the shared
//! harness ([`vishwa_integration_tests::procs`]); this module re-exports it under its old
//! names and adds what only these tests use: DAG builders, store invariants and network
//! namespaces.

#![allow(dead_code, unreachable_pub, unused_imports)] // each test binary uses a different part

pub mod dags;
pub mod invariants;
pub mod netns;

use std::process::Command;

pub use vishwa_integration_tests::auth::{ADMIN_TOKEN, WORKER_TOKEN};
pub use vishwa_integration_tests::names::{now_ms, unique_suffix};
pub use vishwa_integration_tests::process::Outcome;
pub use vishwa_integration_tests::procs::{
    AttemptView, Cluster, ClusterConfig, ClusterTls, RetryView, RunView, StageView, run_id_of,
    seed, wait_until,
};

/// The `vishwa` binary under test.
pub const VISHWA: &str = env!("CARGO_BIN_EXE_vishwa");
/// The busybox test image (built locally by the integration-tests crate).
pub const IMAGE: &str = vishwa_integration_tests::images::BUSYBOX_IMAGE;

/// Fails loudly unless `ip` can manage network namespaces here (root, iproute2).
pub fn require_ip_tool() {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap_or_else(|e| {
            panic!("the partition test needs iproute2's `ip` (apt-get install iproute2): {e}")
        });
    assert!(
        out.status.success(),
        "`ip netns list` failed (the partition test needs root or CAP_NET_ADMIN): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
