//! Where a restart's time goes: the steps the engine takes to resume unfinished runs
//! (`Engine::recover`), replayed one at a time in this process on a copy of the store taken
//! right after the crash, each timed on its own.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use vishwa_scheduler::clock::Clock;
use vishwa_scheduler::dag::{Dag, parse_dag};
use vishwa_scheduler::run::{Run, RunPlan, StageRecord};
use vishwa_scheduler::store::{SledStore, Store};

/// The replay's steps, in the engine's order.
pub(super) const STEPS: &[&str] = &[
    "open sled (replaying its log after the crash)",
    "list the runs",
    "read the runs' stage records",
    "parse the DAG versions the runs pin",
    "build the runs' plans",
    "restore and resume the runs",
];

/// What one replay found and how long each step took.
#[derive(Debug, Clone, Default)]
pub(super) struct Replay {
    /// Seconds per step, in [`STEPS`] order.
    pub(super) steps: Vec<f64>,
    /// Unfinished runs resumed.
    pub(super) runs: usize,
    /// Stage records of those runs by state (`pending`, `queued`, ...).
    pub(super) stages: BTreeMap<&'static str, usize>,
    /// Bytes in the store's folder.
    pub(super) store_bytes: u64,
}

/// Replays the recovery of the sled store in `dir`.
pub(super) fn replay(dir: &Path) -> Result<Replay> {
    let store_bytes = dir_size(dir)?;
    let mut steps = Vec::with_capacity(STEPS.len());
    let mut timed = |start: Instant| steps.push(start.elapsed().as_secs_f64());

    let start = Instant::now();
    let store = SledStore::open(dir)?;
    timed(start);

    let start = Instant::now();
    let mut runs = store.list_runs()?;
    runs.retain(|r| !r.state.is_final());
    timed(start);

    let start = Instant::now();
    let stored: Vec<Vec<StageRecord>> = runs
        .iter()
        .map(|r| store.run_stages(&r.id))
        .collect::<Result<_, _>>()?;
    timed(start);

    let start = Instant::now();
    let mut dags: HashMap<(String, String), Arc<Dag>> = HashMap::new();
    for run in &runs {
        let key = (run.dag.clone(), run.dag_version.clone());
        if dags.contains_key(&key) {
            continue;
        }
        let version = store
            .get_dag_version(&run.dag, &run.dag_version)?
            .with_context(|| format!("run {} pins a missing DAG version", run.id))?;
        let dag = parse_dag(&version.source, &version.file_name)
            .map_err(|e| anyhow!("stored DAG {} does not parse: {e}", run.dag))?;
        dags.insert(key, Arc::new(dag));
    }
    timed(start);

    let start = Instant::now();
    let plans: Vec<Arc<RunPlan>> = runs
        .iter()
        .map(|r| {
            let dag = dags[&(r.dag.clone(), r.dag_version.clone())].clone();
            RunPlan::build(dag, &r.params).map(Arc::new)
        })
        .collect::<Result<_, _>>()?;
    timed(start);

    let mut stages = BTreeMap::new();
    for record in stored.iter().flatten() {
        *stages.entry(record.state.name()).or_insert(0) += 1;
    }
    let count = runs.len();
    let start = Instant::now();
    let now = now_ms();
    for ((record, plan), stored) in runs.into_iter().zip(plans).zip(stored) {
        let mut run = Run::restore(record, plan, stored)?;
        std::hint::black_box(run.resume(now));
    }
    timed(start);

    Ok(Replay {
        steps,
        runs: count,
        stages,
        store_bytes,
    })
}

/// Copies a folder tree (a crashed sled store, so it can be replayed while the original is
/// opened by the restarted scheduler).
pub(super) fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut size = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        size += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(size)
}

/// The sum of a replay's steps.
pub(super) fn total(replay: &Replay) -> Duration {
    Duration::from_secs_f64(replay.steps.iter().sum())
}

/// Wall time now on the scheduler's clock (the system's).
fn now_ms() -> i64 {
    Clock::system().now_ms()
}
