//! Benchmark 3, Docker overhead: a chain of 20 stages running `true` in the busybox test image
//! through `vishwa run`, against a shell loop of 20 `docker run --rm` of the same image and
//! command in the same run.

use std::fmt::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::command::{time_command, workspace_root};
use crate::cpu::load_average;
use crate::dags::{self, StageKind};
use crate::report::Section;
use crate::stats::{Samples, load_text, ratio, secs, verdict};

const IMAGE: &str = "vishwa-test/busybox:1";
const CHAIN: usize = 20;
/// The DAG's name, which labels its containers (`vishwa.dag`) for the clean-up sweep.
const DAG_NAME: &str = "bench-docker-chain";
const TARGET_RATIO: f64 = 1.0;

const BUSYBOX_TRUE: StageKind = StageKind {
    executor: "docker",
    image: Some(IMAGE),
    program: "true",
};

/// Runs the benchmark and returns its section.
pub(crate) fn run(vishwa: &Path, reps: usize, date: &str) -> Result<Section> {
    ensure_image()?;
    let load = load_text(load_average());
    let dir = tempfile::Builder::new()
        .prefix("vishwa-bench-docker-")
        .tempdir()?;
    let dag = dir.path().join("chain.yaml");
    std::fs::write(&dag, dags::chain(DAG_NAME, CHAIN, BUSYBOX_TRUE))?;
    let script = format!("for i in $(seq {CHAIN}); do docker run --rm {IMAGE} true; done");
    let mut ours = Samples::default();
    let mut loop_ = Samples::default();
    let result = (|| -> Result<()> {
        for rep in 0..reps {
            let mut run_vishwa = || -> Result<()> {
                let mut cmd = Command::new(vishwa);
                cmd.arg("run").arg(&dag);
                ours.push_duration(time_command(&mut cmd).context("vishwa run")?);
                Ok(())
            };
            let mut run_loop = || -> Result<()> {
                let mut cmd = Command::new("sh");
                cmd.arg("-c").arg(&script);
                loop_.push_duration(time_command(&mut cmd).context("docker run loop")?);
                Ok(())
            };
            if rep % 2 == 0 {
                run_vishwa()?;
                run_loop()?;
            } else {
                run_loop()?;
                run_vishwa()?;
            }
            eprintln!(
                "  rep {}: vishwa {}, docker run loop {}",
                rep + 1,
                secs(ours.last()),
                secs(loop_.last())
            );
        }
        Ok(())
    })();
    let leftovers = remove_leftover_containers();
    result?;
    leftovers?;
    let when = format!("{date} (load average {load} at the start)");
    let body = render(&ours, &loop_, reps, &when);
    println!("{body}");
    Ok(Section { id: "docker", body })
}

/// Builds the busybox test image with the repository's script when Docker lacks it.
fn ensure_image() -> Result<()> {
    let present = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run docker")?
        .success();
    if present {
        return Ok(());
    }
    eprintln!("building {IMAGE} with dags/images/build-busybox.sh");
    let status = Command::new("sh")
        .arg(workspace_root().join("dags/images/build-busybox.sh"))
        .status()
        .context("cannot run build-busybox.sh")?;
    if !status.success() {
        bail!("dags/images/build-busybox.sh failed");
    }
    Ok(())
}

/// Removes any container the benchmark's runs left behind (there should be none: the executor
/// removes each one) and fails if there was one.
fn remove_leftover_containers() -> Result<()> {
    let output = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=vishwa.dag={DAG_NAME}"))
        .output()
        .context("cannot list containers")?;
    let ids: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let _ = Command::new("docker")
        .args(["rm", "-f"])
        .args(&ids)
        .stdout(Stdio::null())
        .status();
    bail!(
        "{} container(s) of the benchmark were left behind",
        ids.len()
    )
}

fn render(ours: &Samples, loop_: &Samples, reps: usize, date: &str) -> String {
    let r = ours.median() / loop_.median();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## 3. Docker overhead\n\n{ABOUT}\n\n\
         Measured {date}: {reps} repetitions each, interleaved.\n\n\
         | command | median | min | per stage (median) |\n|---|---:|---:|---:|"
    );
    for (label, s) in [
        (format!("`vishwa run` chain of {CHAIN} in `{IMAGE}`"), ours),
        (
            format!("`sh` loop of {CHAIN} × `docker run --rm {IMAGE} true`"),
            loop_,
        ),
    ] {
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} |",
            secs(s.median()),
            secs(s.min()),
            secs(s.median() / CHAIN as f64)
        );
    }
    let _ = writeln!(
        out,
        "\nRatio vishwa / docker run loop (medians): {}. Target ≤ {}: {}.",
        ratio(r),
        ratio(TARGET_RATIO),
        verdict(r <= TARGET_RATIO)
    );
    out
}

const ABOUT: &str = "What is measured: `vishwa run` of a chain of 20 Docker stages, \
each running `true` in the busybox test image (one container per stage, created, attached, \
started, waited for and removed through the Docker API), against a shell loop of 20 \
`docker run --rm` of the same image and command, in the same run.\n\n\
What dominates: the Docker daemon. Per stage (about 0.3 s) starting the \
container takes about 70 % (namespaces, the bridge network, the fuse-overlayfs mount), waiting \
for the daemon to process the exit about 25 %, create and remove the rest; Vishwa's own share \
(dispatch, reports, commits) is 1–2 ms per stage. The loop pays the same daemon work plus a \
docker CLI start per container, so the two are close; the daemon is shared with other work on \
this machine, which makes this the noisiest benchmark.";
