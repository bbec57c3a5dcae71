//! Cron benchmark: 1,000 scheduled DAGs, fire-time lateness and idle CPU.
//!
//! Two phases, each on a fresh engine over a sled store in a temporary directory:
//!
//! 1. **idle**: 1,000 DAGs whose schedules do not fire during the window (`0 0 1 1 *`); the
//!    process's CPU time (utime + stime from `/proc/self/stat`) over the window, as a share of
//!    one core. With one timer for the earliest fire across all DAGs the engine sleeps.
//! 2. **load**: 500 DAGs every second (`* * * * * *`) and 500 every minute (`* * * * *`, all at
//!    second 0, so each minute 1,000 slots fall due together), with an in-process worker that
//!    finishes every task at once. Lateness of each scheduled run: its `created_ms` minus its
//!    slot, and the time its first event is published (after the run is durable in sled)
//!    minus its slot.
//!
//! ```sh
//! cargo run --release -p vishwa-scheduler --example cron_bench -- --write BENCHMARKS.md
//! ```
//! `--idle-secs N` and `--load-secs N` change the windows (defaults 30 and 65).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vishwa_scheduler::clock::Clock;
use vishwa_scheduler::dag::parse_dag;
use vishwa_scheduler::engine::{
    DagFiles, EngineConfig, EngineEvent, EngineHandle, WorkerMessage, WorkerRegistration,
};
use vishwa_scheduler::run::{AttemptOutcome, RunState, TriggerKind};
use vishwa_scheduler::store::{SledStore, Store};

const DAGS: usize = 1_000;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn dag_yaml(name: &str, cron: &str) -> String {
    format!(
        "name: {name}\nschedule:\n  cron: \"{cron}\"\nstages:\n  - name: work\n    \
         executor: process\n    command: \"true\"\n"
    )
}

/// Seconds of CPU this process used so far (user + system, every thread).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the file; the part after the name starts at field 3.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
        .sum();
    ticks / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

struct Engine {
    handle: EngineHandle,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    _dir: tempfile::TempDir,
}

async fn start_engine() -> BenchResult<Engine> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path())?);
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let handle =
        EngineHandle::start(store, EngineConfig::default(), &tracker, shutdown.clone()).await?;
    Ok(Engine {
        handle,
        shutdown,
        tracker,
        _dir: dir,
    })
}

impl Engine {
    async fn submit_all(&self, cron_of: impl Fn(usize) -> &'static str) -> BenchResult<()> {
        for i in 0..DAGS {
            let name = format!("bench-{i:04}");
            let yaml = dag_yaml(&name, cron_of(i));
            let dag = Arc::new(parse_dag(&yaml, &name)?);
            self.handle
                .submit(dag, name, yaml, DagFiles::default())
                .await?;
        }
        Ok(())
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// A worker inside this process that finishes every task at once.
async fn instant_worker(engine: &EngineHandle) -> BenchResult<()> {
    let registered = engine
        .register(WorkerRegistration {
            name: "bench-worker".into(),
            slots: 100_000,
            labels: BTreeMap::new(),
            allow_process: true,
            running: Vec::new(),
            cpus: 0.0,
            memory_bytes: 0,
            gpus: Vec::new(),
            draining: false,
            instance: String::new(),
        })
        .await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    engine.attach_inbox(registered.worker.clone(), tx).await?;
    let worker = registered.worker.clone();
    let finisher = engine.clone();
    tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if let WorkerMessage::Task(task) = message {
                let (engine, worker) = (finisher.clone(), worker.clone());
                tokio::spawn(async move {
                    let done = AttemptOutcome::Exited { code: 0 };
                    let _ = engine.finished(worker, task.attempt, done).await;
                });
            }
        }
    });
    let heartbeats = engine.clone();
    let worker = registered.worker;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(registered.heartbeat_interval).await;
            if heartbeats
                .heartbeat(worker.clone(), Vec::new(), false)
                .await
                .is_err()
            {
                return;
            }
        }
    });
    Ok(())
}

struct Idle {
    seconds: u64,
    cpu_percent: f64,
}

async fn idle_phase(seconds: u64) -> BenchResult<Idle> {
    let engine = start_engine().await?;
    engine.submit_all(|_| "0 0 1 1 *").await?;
    // Let sled settle after the submissions.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let cpu = cpu_seconds() - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    engine.stop().await;
    Ok(Idle {
        seconds,
        cpu_percent: 100.0 * cpu / wall,
    })
}

struct Load {
    seconds: u64,
    runs: usize,
    per_minute_runs: usize,
    succeeded: usize,
    skipped: usize,
    created: Vec<i64>,
    published: Vec<i64>,
    lagged: u64,
    cpu_percent: f64,
}

async fn load_phase(seconds: u64) -> BenchResult<Load> {
    let engine = start_engine().await?;
    instant_worker(&engine.handle).await?;
    let mut events = engine.handle.subscribe();
    let first_seen: Arc<std::sync::Mutex<HashMap<String, (i64, i64)>>> = Default::default();
    let seen = first_seen.clone();
    let stop = CancellationToken::new();
    let stop_watch = stop.clone();
    let watcher = tokio::spawn(async move {
        let mut lagged = 0;
        loop {
            let event = tokio::select! {
                _ = stop_watch.cancelled() => break,
                event = events.recv() => event,
            };
            match event {
                Ok(event) => {
                    if let EngineEvent::Run(record) = &*event
                        && record.trigger == TriggerKind::Schedule
                        && let Some(slot) = record.logical_time_ms
                    {
                        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                        seen.entry(record.id.0.clone()).or_insert((slot, now_ms()));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => lagged += n,
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
        lagged
    });
    let started = now_ms();
    engine
        .submit_all(|i| {
            if i % 2 == 0 {
                "* * * * * *"
            } else {
                "* * * * *"
            }
        })
        .await?;
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let cpu = cpu_seconds() - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    stop.cancel();
    let lagged = watcher.await?;
    let runs = engine.handle.store().list_runs()?;
    engine.stop().await;

    let mut created = Vec::new();
    let (mut per_minute_runs, mut succeeded, mut skipped) = (0, 0, 0);
    for run in &runs {
        let Some(slot) = run.logical_time_ms else {
            continue;
        };
        if slot < started {
            continue;
        }
        match run.state {
            RunState::Cancelled => skipped += 1,
            RunState::Succeeded => succeeded += 1,
            _ => {}
        }
        if run
            .dag
            .ends_with(|c: char| c.to_digit(10).is_some_and(|d| d % 2 == 1))
        {
            per_minute_runs += 1;
        }
        created.push(run.created_ms - slot);
    }
    let seen = first_seen.lock().unwrap_or_else(|e| e.into_inner());
    let published = seen.values().map(|(slot, at)| at - slot).collect();
    Ok(Load {
        seconds,
        runs: created.len(),
        per_minute_runs,
        succeeded,
        skipped,
        created,
        published,
        lagged,
        cpu_percent: 100.0 * cpu / wall,
    })
}

fn percentiles(mut values: Vec<i64>) -> (i64, i64, i64) {
    if values.is_empty() {
        return (0, 0, 0);
    }
    values.sort_unstable();
    let at = |p: usize| values[(values.len() * p / 100).min(values.len() - 1)];
    (at(50), at(99), values[values.len() - 1])
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} CPUs ({model})")
}

/// The 1-minute load average: other work on the machine skews the figures.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

fn section(idle: &Idle, load: &Load, load_average: &str) -> String {
    let (c50, c99, cmax) = percentiles(load.created.clone());
    let (p50, p99, pmax) = percentiles(load.published.clone());
    format!(
        "## Cron\n\n\
         `cargo run --release -p vishwa-scheduler --example cron_bench -- --write BENCHMARKS.md` \
         on {machine}, load average {load_average} when it started. One engine over sled in a temporary directory, 1,000 scheduled DAGs; one \
         timer for the earliest fire time across all of them (a heap), no per-DAG polling.\n\n\
         | measure | result | target |\n|---|---|---|\n\
         | idle CPU, 1,000 scheduled DAGs, nothing due ({idle_s} s window) | {idle:.2}% of one core | < 1% |\n\
         | lateness p50 / p99 / max, run created − slot | {c50} / {c99} / {cmax} ms | p99 < 100 ms |\n\
         | lateness p50 / p99 / max, run durable in sled and published − slot | {p50} / {p99} / {pmax} ms | p99 < 100 ms |\n\
         | load CPU (500 per-second + 500 per-minute DAGs, runs finished by an in-process worker) | {load_cpu:.0}% of one core | |\n\n\
         Load window {load_s} s: {runs} scheduled runs ({per_minute} from per-minute schedules, \
         whose 500 slots fall due together with 500 per-second ones at each minute), \
         {succeeded} of them succeeded by the window's end, {skipped} slots skipped by `overlap: skip`, {lagged} events missed by the observer.\n",
        machine = machine(),
        idle_s = idle.seconds,
        idle = idle.cpu_percent,
        load_cpu = load.cpu_percent,
        load_s = load.seconds,
        runs = load.runs,
        per_minute = load.per_minute_runs,
        succeeded = load.succeeded,
        skipped = load.skipped,
        lagged = load.lagged,
    )
}

/// Replaces the `## Cron` section of `path` (up to the next `## ` heading), or appends it.
fn write_section(path: &str, section: &str) -> std::io::Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let updated = match text.find("## Cron\n") {
        Some(start) => {
            let rest = &text[start + 1..];
            let end = rest.find("\n## ").map_or(text.len(), |i| start + 1 + i + 1);
            format!("{}{section}{}", &text[..start], &text[end..])
        }
        None => format!(
            "{}\n{section}",
            text.trim_end_matches('\n').to_owned() + "\n"
        ),
    };
    std::fs::write(path, updated)
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let idle_secs = flag(&args, "--idle-secs").map_or(Ok(30), |s| s.parse())?;
    let load_secs = flag(&args, "--load-secs").map_or(Ok(65), |s| s.parse())?;
    let load_average = load_average();
    eprintln!("idle phase: {idle_secs} s");
    let idle = idle_phase(idle_secs).await?;
    eprintln!("load phase: {load_secs} s");
    let load = load_phase(load_secs).await?;
    let section = section(&idle, &load, &load_average);
    print!("{section}");
    if let Some(path) = flag(&args, "--write") {
        write_section(&path, &section)?;
        eprintln!("wrote the Cron section of {path}");
    }
    Ok(())
}

/// Wall time now on the scheduler's clock (the system's).
fn now_ms() -> i64 {
    Clock::system().now_ms()
}
