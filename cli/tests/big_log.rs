//! A stage printing 1 GiB: the scheduler and the worker keep their memory bounded (read from
//! /proc while it runs and after), `vishwa logs` streams what was kept, and the log cap
//! (default 100 MiB) keeps the head and the tail and says what it dropped.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Servers, unique_name, wait_until, write_file};
use serde_json::Value;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// A field of /proc/PID/status in bytes (`RssAnon`, `VmRSS`).
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

#[test]
fn a_stage_printing_a_gibibyte_keeps_memory_bounded_and_its_capped_log_streams() {
    let servers = Servers::start();
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("big-log");
    let dag = format!(
        r#"name: {name}
stages:
  - name: shout
    executor: process
    command: 'yes 0123456789abcdef | head -c {GIB}; echo; echo the-very-end'
"#
    );
    let path = write_file(dir.path(), "dag.yaml", &dag);
    servers.vishwa_ok(&["submit", &path]);
    let run = servers
        .vishwa_ok(&["trigger", &name])
        .stdout
        .trim()
        .to_owned();

    // Sample the memory each process holds (anonymous resident pages: its heap and stacks)
    // while the stage prints and while two clients read its log, every 20 ms. The mapped
    // executable is left out: it is file-backed, shared and reclaimable, and an unoptimized
    // test build maps several times the code of a release one.
    let (scheduler, worker) = (servers.scheduler_pid(), servers.worker_pid("w1"));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                peak.0 = peak.0.max(status_bytes(scheduler, "RssAnon"));
                peak.1 = peak.1.max(status_bytes(worker, "RssAnon"));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let finished = wait_until(Duration::from_secs(600), || {
        let get = servers.vishwa(&["-o", "json", "get", &run]);
        let get: Value = serde_json::from_str(&get.stdout).unwrap_or(Value::Null);
        get["finished"] != Value::Null
    });
    assert!(finished, "the run did not finish\n{}", servers.logs());

    let readers: Vec<_> = (0..2)
        .map(|_| {
            let url = servers.url.clone();
            let run = run.clone();
            std::thread::spawn(move || common::vishwa(&["--server", &url, "logs", &run, "shout"]))
        })
        .collect();
    let outcomes: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    let (sampled_scheduler, sampled_worker) = sampler.join().unwrap();
    let (scheduler_peak, worker_peak) = (sampled_scheduler, sampled_worker);
    println!(
        "peak anonymous resident memory: scheduler {} MiB, worker {} MiB (whole peaks with the \
         mapped executable: {} MiB, {} MiB)",
        scheduler_peak / MIB,
        worker_peak / MIB,
        status_bytes(scheduler, "VmHWM") / MIB,
        status_bytes(worker, "VmHWM") / MIB,
    );
    assert!(
        scheduler_peak > 0 && scheduler_peak < 200 * MIB,
        "scheduler peak {scheduler_peak}"
    );
    // The worker holds the last half of the cap (50 MiB) until the stage ends.
    assert!(
        worker_peak > 0 && worker_peak < 250 * MIB,
        "worker peak {worker_peak}"
    );

    for logs in &outcomes {
        assert_eq!(logs.code(), 0, "{}", logs.stderr);
        let out = &logs.stdout;
        assert!(out.starts_with("0123456789abcdef\n0123456789abcdef\n"));
        assert!(
            out.ends_with("\nthe-very-end\n"),
            "{}",
            &out[out.len() - 200..]
        );
        // 1 GiB + 14 bytes printed; 100 MiB kept.
        let dropped = "... 924.0 MiB dropped (log cap 100 MiB) ...\n";
        let marker = out.find(dropped).unwrap_or_else(|| {
            panic!("no drop marker in {} bytes of log", out.len());
        });
        assert!(marker > (50 * MIB) as usize && out.len() - marker < (51 * MIB) as usize);
        let notice = "output past the first 50 MiB is held back";
        assert!(out.contains(notice));
        let overhead = 300;
        assert!(
            out.len() as u64 <= 100 * MIB + overhead && out.len() as u64 >= 100 * MIB,
            "{} bytes",
            out.len()
        );
    }
}
