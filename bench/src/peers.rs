//! Benchmark 2, against the peers: `vishwa run` of process stages running `true`, typed as a
//! user would, against GNU `make -j2` over the same targets in the same run. W1 is a chain of
//! 50; W2 is one stage, 200 independent ones, and one more, with `--slots 2`.

use std::fmt::Write;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::command::{is_available, time_command};
use crate::cpu::load_average;
use crate::dags::{self, StageKind};
use crate::report::Section;
use crate::stats::{Samples, load_text, ratio, secs, verdict};

const PROCESS_TRUE: StageKind = StageKind {
    executor: "process",
    image: None,
    program: "true",
};

/// One workload, as a DAG and as a Makefile.
struct Workload {
    name: &'static str,
    label: &'static str,
    yaml: String,
    makefile: String,
    /// Flags after `vishwa run`.
    run_flags: &'static [&'static str],
    /// The target for the median, in seconds.
    target: f64,
    /// Earlier figures for other tools on this machine (not re-measured): make, Luigi, Prefect.
    earlier: [f64; 3],
}

fn workloads() -> Vec<Workload> {
    vec![
        Workload {
            name: "w1",
            label: "W1: chain of 50",
            yaml: dags::chain("w1", 50, PROCESS_TRUE),
            makefile: chain_makefile(50),
            run_flags: &[],
            target: 0.25,
            earlier: [0.11, 0.8, 10.6],
        },
        Workload {
            name: "w2",
            label: "W2: 1 → 200 → 1, `--slots 2`",
            yaml: dags::fan("w2", 200, PROCESS_TRUE),
            makefile: fan_makefile(200),
            run_flags: &["--slots", "2"],
            target: 0.8,
            earlier: [0.44, 1.6, 11.9],
        },
    ]
}

/// Targets named like the DAG's stages (`c0-s0` … `c0-s{len-1}`), each running `true`.
fn chain_makefile(len: usize) -> String {
    let names: Vec<String> = (0..len).map(|s| format!("c0-s{s}")).collect();
    let mut out = format!(".PHONY: all {}\nall: {}\n", names.join(" "), names[len - 1]);
    for (i, name) in names.iter().enumerate() {
        let needs = if i == 0 { "" } else { &names[i - 1] };
        let _ = writeln!(out, "{name}: {needs}\n\ttrue");
    }
    out
}

/// `first`, `m0` … `m{width-1}` needing it, and `last` needing them all.
fn fan_makefile(width: usize) -> String {
    let middle: Vec<String> = (0..width).map(|i| format!("m{i}")).collect();
    let mut out = format!(
        ".PHONY: all first last {0}\nall: last\nfirst:\n\ttrue\nlast: {0}\n\ttrue\n",
        middle.join(" ")
    );
    for m in &middle {
        let _ = writeln!(out, "{m}: first\n\ttrue");
    }
    out
}

/// Runs the benchmark with `vishwa` as the binary and returns its section.
pub(crate) fn run(vishwa: &Path, reps: usize, date: &str) -> Result<Section> {
    let load = load_text(load_average());
    let dir = tempfile::Builder::new()
        .prefix("vishwa-bench-peers-")
        .tempdir()?;
    let have_make = is_available("make");
    let mut rows = Vec::new();
    for w in workloads() {
        let dag = dir.path().join(format!("{}.yaml", w.name));
        std::fs::write(&dag, &w.yaml)?;
        let makefile = dir.path().join(format!("Makefile.{}", w.name));
        std::fs::write(&makefile, &w.makefile)?;
        let mut ours = Samples::default();
        let mut make = Samples::default();
        for rep in 0..reps {
            let mut run_vishwa = || -> Result<()> {
                let mut cmd = Command::new(vishwa);
                cmd.arg("run").args(w.run_flags).arg(&dag);
                ours.push_duration(time_command(&mut cmd)?);
                Ok(())
            };
            let mut run_make = || -> Result<()> {
                if have_make {
                    let mut cmd = Command::new("make");
                    cmd.arg("-j2")
                        .arg("-f")
                        .arg(&makefile)
                        .current_dir(dir.path());
                    make.push_duration(time_command(&mut cmd)?);
                }
                Ok(())
            };
            // Alternate which goes first, so neither always follows the other's cache effects.
            if rep % 2 == 0 {
                run_vishwa().with_context(|| format!("{} with vishwa", w.label))?;
                run_make().with_context(|| format!("{} with make", w.label))?;
            } else {
                run_make().with_context(|| format!("{} with make", w.label))?;
                run_vishwa().with_context(|| format!("{} with vishwa", w.label))?;
            }
        }
        eprintln!(
            "  {}: vishwa median {}, make -j2 median {}",
            w.label,
            secs(ours.median()),
            secs(make.median())
        );
        rows.push((w, ours, make));
    }
    let when = format!("{date} (load average {load} at the start)");
    let body = render(&rows, reps, have_make, &when);
    println!("{body}");
    Ok(Section { id: "peers", body })
}

fn render(
    rows: &[(Workload, Samples, Samples)],
    reps: usize,
    have_make: bool,
    date: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## 2. Against the peers: the whole command\n\n{ABOUT}\n\n\
         Measured {date}: {reps} repetitions each, `vishwa run` and `make -j2` interleaved.\n"
    );
    if !have_make {
        out.push_str(
            "GNU make is not installed on this machine: the make baseline is missing.\n\n",
        );
    }
    out.push_str(
        "| workload | `vishwa run` median | min | `make -j2` median | min | vishwa / make | \
         target | |\n|---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for (w, ours, make) in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | ≤ {} | {} |",
            w.label,
            secs(ours.median()),
            secs(ours.min()),
            secs(make.median()),
            secs(make.min()),
            ratio(ours.median() / make.median()),
            secs(w.target),
            verdict(ours.median() <= w.target),
        );
    }
    out.push_str(
        "\nEarlier figures for other tools on this machine, quoted as measured then (not \
         re-measured by this harness):\n\n\
         | workload | make -j2 | Luigi | Prefect |\n|---|---:|---:|---:|\n",
    );
    for (w, _, _) in rows {
        let [make, luigi, prefect] = w.earlier;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            w.label,
            secs(make),
            secs(luigi),
            secs(prefect)
        );
    }
    out
}

const ABOUT: &str = "What is measured: the wall time of the whole command as a user \
types it, `vishwa run w1.yaml` and `vishwa run --slots 2 w2.yaml` with the release binary, every \
stage `executor: process` running `true`, against GNU `make -j2` over a Makefile with the same \
targets, each running `true`. `vishwa run` starts a scheduler (sled in a fresh temporary \
directory) and a worker in its own process, submits the DAG over loopback gRPC, watches the run \
to its end, printing a line per state change, and shuts both down; every state change is synced \
to sled before it is acted on.\n\n\
What dominates: the stages themselves. Start-up (sled open, listener, worker registration, \
submit, trigger) takes 5–10 ms and shutdown 5–25 ms; the rest is per stage, about 1.2 ms on an \
idle machine: two synced commits on a chain's critical path (the start, then the result with \
the next dispatch; sled syncs with `sync_file_range`, about 0.1 ms here), three gRPC messages, \
and the fork and exec of `true`. make only forks and execs, which is why it stays several \
times faster on stages that do nothing.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makefiles_name_every_target_and_run_true() {
        let chain = chain_makefile(3);
        assert!(chain.contains("c0-s2: c0-s1\n\ttrue"));
        assert!(chain.contains("all: c0-s2"));
        let fan = fan_makefile(2);
        assert!(fan.contains("last: m0 m1\n\ttrue"));
        assert!(fan.contains("m1: first\n\ttrue"));
    }
}
