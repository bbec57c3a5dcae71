//! Benchmark 4, `vishwa validate` on a 10,000-stage DAG: the release binary reading, parsing and
//! validating a generated file, against the same command on a one-stage DAG (the process's
//! start-up floor) in the same run.

use std::fmt::Write;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::command::time_command;
use crate::cpu::load_average;
use crate::report::Section;
use crate::stats::{Samples, load_text, ratio, secs, verdict};

const LAYERS: usize = 100;
const WIDTH: usize = 100;
const TARGET_SECS: f64 = 1.0;

/// A DAG of `layers` × `width` stages in the shape of a real pipeline file: params, defaults,
/// templated commands, env, and two upstream stages per stage from the layer before.
pub(crate) fn layered_dag(layers: usize, width: usize) -> String {
    let mut out = String::from(
        "name: big-pipeline\n\
         description: Generated for the validation benchmark\n\
         params:\n  rows: 1000\n  region: eu-west\n  min_accuracy: 0.8\n\
         defaults:\n  image: vishwa-test/busybox:1\n  timeout: 30m\n  \
         retries: {limit: 2, backoff: 10s, max_backoff: 5m}\n\
         stages:\n",
    );
    for l in 0..layers {
        for s in 0..width {
            let _ = write!(
                out,
                "  - name: l{l}-s{s}\n    command: [sh, -c, \"echo {{{{ params.rows }}}} \
                 {{{{ params.region }}}} l{l}-s{s}\"]\n    env:\n      LAYER: \"{l}\"\n"
            );
            if l > 0 {
                let _ = writeln!(
                    out,
                    "    needs: [l{}-s{s}, l{}-s{}]",
                    l - 1,
                    l - 1,
                    (s + 1) % width
                );
            }
        }
    }
    out
}

/// Runs the benchmark and returns its section.
pub(crate) fn run(vishwa: &Path, reps: usize, date: &str) -> Result<Section> {
    let load = load_text(load_average());
    let dir = tempfile::Builder::new()
        .prefix("vishwa-bench-validate-")
        .tempdir()?;
    let big = dir.path().join("big.yaml");
    let text = layered_dag(LAYERS, WIDTH);
    std::fs::write(&big, &text)?;
    let small = dir.path().join("small.yaml");
    std::fs::write(
        &small,
        "name: small\nstages:\n  - name: only\n    executor: process\n    command: [\"true\"]\n",
    )?;
    let mut big_times = Samples::default();
    let mut small_times = Samples::default();
    for _ in 0..reps {
        for (path, samples) in [(&big, &mut big_times), (&small, &mut small_times)] {
            let mut cmd = Command::new(vishwa);
            cmd.arg("validate").arg(path);
            samples.push_duration(time_command(&mut cmd).context("vishwa validate")?);
        }
    }
    eprintln!(
        "  10,000 stages: median {}, one stage: median {}",
        secs(big_times.median()),
        secs(small_times.median())
    );
    let when = format!("{date} (load average {load} at the start)");
    let body = render(&big_times, &small_times, text.len(), reps, &when);
    println!("{body}");
    Ok(Section {
        id: "validate",
        body,
    })
}

fn render(big: &Samples, small: &Samples, bytes: usize, reps: usize, date: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## 4. `vishwa validate` on a 10,000-stage DAG\n\n{ABOUT}\n\n\
         Measured {date}: {reps} repetitions each, interleaved. The generated file is {:.1} MB.\n\n\
         | DAG | median | min | ratio to one stage | target | |\n|---|---:|---:|---:|---:|---|",
        bytes as f64 / 1e6
    );
    let _ = writeln!(
        out,
        "| {} layers × {} stages | {} | {} | {} | < {} | {} |",
        LAYERS,
        WIDTH,
        secs(big.median()),
        secs(big.min()),
        ratio(big.median() / small.median()),
        secs(TARGET_SECS),
        verdict(big.median() < TARGET_SECS),
    );
    let _ = writeln!(
        out,
        "| one stage (start-up floor) | {} | {} | 1.00× | | |",
        secs(small.median()),
        secs(small.min())
    );
    out
}

const ABOUT: &str = "What is measured: the release `vishwa validate big.yaml` from \
spawn to exit on a generated DAG of 100 layers × 100 stages, each with a templated command, an \
env entry and two upstream stages from the layer before, under defaults for image, timeout and \
retries: the YAML is parsed with positions, every field checked, templates checked against the \
params, the graph built and searched for cycles.\n\n\
What dominates: reading the YAML with source positions kept for error messages (serde-saphyr), \
about 60 % of the time; validation (template syntax and references, names, needs, the graph) \
most of the rest.";

#[cfg(test)]
mod tests {
    use vishwa_scheduler::dag::parse_dag;

    use super::*;

    #[test]
    fn the_layered_dag_is_valid() {
        let dag = parse_dag(&layered_dag(3, 4), "big.yaml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(dag.stages.len(), 12);
    }
}
