//! Benchmark 5, recovery: `vishwa scheduler` as a child process with 1,000 runs in flight is
//! killed with SIGKILL and started again on the same data dir; what is timed is the restarted
//! process's way from spawn to its first new dispatch. A series with one run in flight is the
//! baseline, restarted in turn with it.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Result, ensure};
use tokio::task::JoinSet;
use vishwa_proto::v1 as pb;
use vishwa_scheduler::server::store_dir;

use crate::child::{
    Client, Server, connect_client, free_local_addr, logged_at, scheduler_args, wait_for,
    wait_until_bound,
};
use crate::cpu::load_average;
use crate::inproc::{BenchExecutor, Hold, InProcessWorker};
use crate::report::Section;

mod render;
mod replay;

use replay::Replay;

/// Runs in flight at each crash.
const RUNS: usize = 1_000;
/// The baseline's runs in flight.
const BASELINE_RUNS: usize = 1;
/// Slots of the worker holding stages when the scheduler dies.
const HELD_SLOTS: u32 = 64;
/// Slots of the worker that watches for the first dispatch after a restart.
const PROBE_SLOTS: u32 = 4;
/// Triggers in flight at once while the runs are created.
const TRIGGER_CONCURRENCY: usize = 16;
/// The longest any step may take before the benchmark gives up.
const LIMIT: Duration = Duration::from_secs(120);

/// Every run: `a`, then `b` and `c`, then `d`. The runs are triggered before any worker is
/// connected, so every `a` is ahead of every `b` and `c` in the ready line; the worker then
/// finishes each `a` at once and holds the rest running until its slots are full. At the
/// crash each run has one stage succeeded, two running or queued, and one pending.
const DAG: &str = "name: recovery\ndefaults:\n  image: noop\nstages:\n  \
- {name: a, command: [\"true\"]}\n  \
- {name: b, command: [\"true\"], needs: [a]}\n  \
- {name: c, command: [\"true\"], needs: [a]}\n  \
- {name: d, command: [\"true\"], needs: [b, c]}\n";

/// One restart, in seconds from the restarted process's spawn.
#[derive(Debug, Clone)]
pub(crate) struct Restart {
    /// It logged `opening store`.
    opening: f64,
    /// It logged `resumed unfinished runs`.
    resumed: f64,
    /// It logged `scheduler listening`: gRPC is served.
    listening: f64,
    /// A worker that connected once the port was bound received its first task.
    first_dispatch: f64,
    /// The worker connected before the crash registered again.
    held_back: f64,
    /// The recovery's steps replayed on a copy of the crashed store.
    replay: Replay,
}

/// A scheduler with runs in flight, its data dir, and the workers around it.
struct Series {
    runs: usize,
    dir: tempfile::TempDir,
    url: String,
    addr: std::net::SocketAddr,
    server: Server,
    held: InProcessWorker,
    held_name: String,
    probe: Option<InProcessWorker>,
    restarts: usize,
    /// Triggers whose run took the id of another (see [`trigger`]).
    collided: usize,
}

impl Series {
    /// Starts a scheduler, a worker holding up to [`HELD_SLOTS`] stages, and `runs` runs.
    async fn start(vishwa: &Path, runs: usize) -> Result<Series> {
        let dir = tempfile::Builder::new()
            .prefix("vishwa-bench-recovery-")
            .tempdir()?;
        let addr = free_local_addr();
        let url = format!("http://{addr}");
        let args = scheduler_args(&dir.path().join("data"), addr, &[]);
        let mut server = Server::spawn(vishwa, &args, &dir.path().join("scheduler-0.log"))?;
        let mut client = connect_client(&url, LIMIT).await?;
        server.check_alive()?;
        client
            .submit_dag(pb::SubmitDagRequest {
                file_name: "recovery.yaml".to_owned(),
                source: DAG.to_owned(),
                ..Default::default()
            })
            .await?;
        let collided = trigger(&mut client, runs).await?;
        let held_slots = (runs as u32).min(HELD_SLOTS);
        let held_name = format!("bench-held-{}-{runs}", std::process::id());
        let held = InProcessWorker::spawn(
            &url,
            &held_name,
            held_slots,
            &[],
            dir.path().join("cache-held"),
            BenchExecutor::new(Hold::AllBut("a")),
        );
        // In flight: every `a` succeeded, the holding worker full, the rest queued or pending.
        wait_for("the runs to settle", LIMIT, || {
            let mut client = client.clone();
            async move {
                let listed = client
                    .list_runs(pb::ListRunsRequest {
                        dag: "recovery".to_owned(),
                        limit: runs as u32,
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner();
                let sum =
                    |f: fn(&pb::RunSummary) -> u32| -> u32 { listed.runs.iter().map(f).sum() };
                let settled = listed.runs.len() == runs
                    && sum(|r| r.stages_succeeded) == runs as u32
                    && sum(|r| r.stages_running) == held_slots;
                settled.then_some(())
            }
        })
        .await?;
        Ok(Series {
            runs,
            dir,
            url,
            addr,
            server,
            held,
            held_name,
            probe: None,
            restarts: 0,
            collided,
        })
    }

    /// Kills the scheduler with SIGKILL, starts it again, and times its way back.
    async fn crash_and_restart(&mut self, vishwa: &Path) -> Result<Restart> {
        // The last probe's stages go back to the queue, so every crash finds the same work.
        if let Some(probe) = self.probe.take() {
            probe.stop().await?;
        }
        self.server.check_alive()?;
        self.server.kill()?;
        self.restarts += 1;
        let k = self.restarts;
        let data = self.dir.path().join("data");
        let copy = self.dir.path().join(format!("replay-{k}"));
        replay::copy_dir(&store_dir(&data), &copy)?;

        let log = self.dir.path().join(format!("scheduler-{k}.log"));
        let args = scheduler_args(&data, self.addr, &[]);
        self.server = Server::spawn(vishwa, &args, &log)?;
        let spawned = self.server.spawned;
        // The port is bound before the store opens: a worker connecting now waits in the
        // listen queue and is served as soon as gRPC is.
        wait_until_bound(self.addr, LIMIT).await?;
        let probe_name = format!("bench-probe-{}-{}-{k}", std::process::id(), self.runs);
        let probe = InProcessWorker::spawn(
            &self.url,
            &probe_name,
            PROBE_SLOTS,
            &[],
            self.dir.path().join(format!("cache-probe-{k}")),
            BenchExecutor::new(Hold::Everything),
        );
        let executor = probe.executor.clone();
        self.probe = Some(probe);
        let first = wait_for("the first dispatch", LIMIT, || async {
            executor.first_task()
        });
        let first_dispatch = first.await? - spawned;
        let held = format!("worker={} ", self.held_name);
        let held_back = wait_for("the holding worker to register again", LIMIT, || async {
            logged_at(&log, &["worker registered", &held])
        })
        .await?;
        self.server.check_alive()?;
        let since = |message: &str| -> Result<f64> {
            let at = logged_at(&log, &[message])
                .ok_or_else(|| anyhow::anyhow!("the scheduler never logged `{message}`"))?;
            Ok(seconds_between(self.server.spawned_wall, at))
        };
        let replayed = tokio::task::spawn_blocking(move || {
            let replayed = replay::replay(&copy);
            let _ = std::fs::remove_dir_all(&copy);
            replayed
        })
        .await??;
        ensure!(
            replayed.runs == self.runs,
            "the crashed store held {} unfinished runs, not {}",
            replayed.runs,
            self.runs
        );
        Ok(Restart {
            opening: since("opening store")?,
            resumed: since("resumed unfinished runs")?,
            listening: since("scheduler listening")?,
            first_dispatch: first_dispatch.as_secs_f64(),
            held_back: seconds_between(self.server.spawned_wall, held_back),
            replay: replayed,
        })
    }

    /// Stops the workers (while the scheduler is up to hear them), then the scheduler.
    async fn finish(mut self) -> Result<()> {
        if let Some(probe) = self.probe.take() {
            probe.stop().await?;
        }
        self.held.stop().await?;
        self.server.stop(Duration::from_secs(10))?;
        Ok(())
    }
}

/// Triggers runs of the DAG, a few calls at a time, until the store holds `runs` of them;
/// returns how many triggers more than `runs` that took. Run ids hold the second and 16
/// random bits, and (until the engine draws again on a clash) a run triggered in the same
/// second as another may take its id and replace it; no worker is connected yet, so a
/// replaced run leaves nothing behind.
async fn trigger(client: &mut Client, runs: usize) -> Result<usize> {
    let mut sent = 0;
    loop {
        let held = client
            .list_runs(pb::ListRunsRequest {
                dag: "recovery".to_owned(),
                limit: (runs + 1) as u32,
                ..Default::default()
            })
            .await?
            .into_inner()
            .runs
            .len();
        ensure!(held <= runs, "the store holds more runs than triggered");
        if held == runs {
            return Ok(sent - runs);
        }
        let mut calls = JoinSet::new();
        for i in 0..runs - held {
            if i >= TRIGGER_CONCURRENCY
                && let Some(done) = calls.join_next().await
            {
                done??;
            }
            let mut client = client.clone();
            calls.spawn(async move {
                client
                    .trigger_run(pb::TriggerRunRequest {
                        dag: "recovery".to_owned(),
                        params: Default::default(),
                        ..Default::default()
                    })
                    .await
                    .map(|_| ())
            });
            sent += 1;
        }
        while let Some(done) = calls.join_next().await {
            done??;
        }
    }
}

fn seconds_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Runs the benchmark and returns its section of BENCHMARKS.md.
pub(crate) fn run(vishwa: &Path, reps: usize, date: &str) -> Result<Section> {
    let load = load_average();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (full, baseline, collided) = runtime.block_on(async {
        let mut full = Series::start(vishwa, RUNS).await?;
        let mut baseline = Series::start(vishwa, BASELINE_RUNS).await?;
        let (mut full_restarts, mut baseline_restarts) = (Vec::new(), Vec::new());
        for rep in 0..reps {
            // Alternate which goes first, so neither always restarts on a warmer machine.
            for which in [rep.is_multiple_of(2), !rep.is_multiple_of(2)] {
                let (series, into) = if which {
                    (&mut full, &mut full_restarts)
                } else {
                    (&mut baseline, &mut baseline_restarts)
                };
                let restart = series.crash_and_restart(vishwa).await?;
                eprintln!(
                    "  {} run(s): restart {}: first dispatch {:.3} s, held worker back {:.3} s",
                    series.runs,
                    rep + 1,
                    restart.first_dispatch,
                    restart.held_back
                );
                into.push(restart);
            }
        }
        let collided = full.collided;
        full.finish().await?;
        baseline.finish().await?;
        anyhow::Ok((full_restarts, baseline_restarts, collided))
    })?;
    let body = render::render(&full, &baseline, collided, load, date);
    println!("{body}");
    Ok(Section {
        id: "recovery",
        body,
    })
}
