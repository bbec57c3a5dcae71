//! Benchmark 10, the cache: `vishwa run dags/cake-popularity` twice on one data directory.
//! The second run's cacheable stages reuse the first run's outputs without a container; the
//! rest (gate, package, deploy, smoke, monitor: they act on the world, so they are not
//! cacheable) run again. Both runs are the whole command as a user types it.

use std::fmt::Write;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use vishwa_scheduler::run::CacheOutcome;
use vishwa_scheduler::store::{SledStore, Store};

use crate::command::{time_command, workspace_root};
use crate::cpu::load_average;
use crate::report::Section;
use crate::stats::{Samples, load_text, ratio, secs};

const DAG: &str = "dags/cake-popularity";
const IMAGE: &str = "vishwa-examples/python-ml:1";
const SOCKET: &str = "/var/run/docker.sock";

/// Cache verdicts on the stages of the newest run in one data directory.
struct Counted {
    stages: usize,
    hits: usize,
    misses: usize,
}

/// Runs the benchmark and returns its section.
pub(crate) fn run(vishwa: &Path, reps: usize, date: &str) -> Result<Section> {
    ensure_image()?;
    let load = load_text(load_average());
    let root = workspace_root();
    let mut first = Samples::default();
    let mut second = Samples::default();
    let mut counted = None;
    for rep in 0..reps {
        let dir = tempfile::Builder::new()
            .prefix("vishwa-bench-cache-")
            .tempdir()?;
        let data = dir.path().join("data");
        let run = || {
            let mut cmd = Command::new(vishwa);
            cmd.arg("run")
                .arg(root.join(DAG))
                .arg("--data")
                .arg(&data)
                .args(["--allow-mount", SOCKET, "--quiet"])
                .current_dir(&root);
            time_command(&mut cmd)
        };
        let cold = run().with_context(|| format!("first run, repetition {}", rep + 1))?;
        let warm = run().with_context(|| format!("second run, repetition {}", rep + 1))?;
        eprintln!(
            "  repetition {}: first {}, second {}",
            rep + 1,
            secs(cold.as_secs_f64()),
            secs(warm.as_secs_f64())
        );
        first.push_duration(cold);
        second.push_duration(warm);
        counted = Some(count_second_run(&data.join("store"))?);
    }
    let counted = counted.context("no repetition ran")?;
    let body = render(&first, &second, &counted, reps, date, &load);
    println!("{body}");
    Ok(Section { id: "cache", body })
}

/// Cache hits and misses of the newest run in the store at `dir`.
fn count_second_run(dir: &Path) -> Result<Counted> {
    let store = SledStore::open(dir)?;
    let mut runs = store.list_runs()?;
    runs.sort_by_key(|r| r.created_ms);
    let Some(last) = runs.last() else {
        bail!("the store at {} holds no run", dir.display());
    };
    let stages = store.run_stages(&last.id)?;
    let mut counted = Counted {
        stages: stages.len(),
        hits: 0,
        misses: 0,
    };
    for stage in &stages {
        match stage.cache.as_ref().map(|c| &c.outcome) {
            Some(CacheOutcome::Hit { .. }) => counted.hits += 1,
            Some(CacheOutcome::Miss { .. }) => counted.misses += 1,
            None => {}
        }
    }
    Ok(counted)
}

/// Brings the image up to date with the repository's script: a no-op when its `vishwa_ml`
/// layer matches dags/images/python, seconds when only that package changed.
fn ensure_image() -> Result<()> {
    let script = workspace_root().join("dags/images/build-python-ml.sh");
    let status = Command::new("sh").arg(&script).status()?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    Ok(())
}

fn render(
    first: &Samples,
    second: &Samples,
    counted: &Counted,
    reps: usize,
    date: &str,
    load: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## 10. Cache: a fully cached rerun of cake-popularity\n\n\
         What is measured: the release `vishwa run {DAG} --data DIR --allow-mount {SOCKET}` \
         (scheduler and worker embedded, real Docker, the `{IMAGE}` image), twice on the same \
         data directory. The first run computes every stage; in the second, every stage with \
         `cache: true` (collect, validate, features, train, evaluate) finds its key (image, \
         command, env, the params it uses, input digests, the DAG folder's digest) and \
         succeeds with the first run's outputs and metrics, starting no container. The gate, \
         package, deploy, smoke and monitor stages act on the world (an image, a running \
         model) and run every time by design.\n\n\
         What dominates: the first run spends most of its time in Python (scikit-learn \
         imports and training) and in building the model's image; the second run only in \
         the stages that are not cacheable, above all building and deploying the image.\n\n\
         Measured {date} (load average {load} at the start): {reps} repetition(s), each on a \
         fresh data directory; medians.\n"
    );
    out.push_str("| run | median | min |\n|---|---:|---:|\n");
    let _ = writeln!(
        out,
        "| first run (nothing cached) | {} | {} |",
        secs(first.median()),
        secs(first.min())
    );
    let _ = writeln!(
        out,
        "| **second run** (cacheable stages hit) | {} | {} |",
        secs(second.median()),
        secs(second.min())
    );
    let _ = writeln!(
        out,
        "\nThe second run took {} the first's time (medians). In it, {} of {} stages were \
         cache hits and {} missed (the store's records of the last repetition's second run).",
        ratio(second.median() / first.median()),
        counted.hits,
        counted.stages,
        counted.misses
    );
    out
}
