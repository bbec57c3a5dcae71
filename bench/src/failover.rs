//! Benchmark 6, failover: a scheduler with a short lease and two `vishwa worker` processes
//! running process stages; one worker is killed with SIGKILL, and what is timed is how long
//! until its stages run on the other, against the lease.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use vishwa_proto::v1 as pb;

use crate::child::{
    Client, Server, connect_client, epoch_ms, free_local_addr, scheduler_args, wait_for,
};
use crate::cpu::load_average;
use crate::report::Section;
use crate::stats::{Row, Samples, load_text, ratio, verdict};

/// The scheduler's lease and heartbeat interval.
const LEASE: Duration = Duration::from_secs(2);
const LEASE_FLAG: &str = "2s";
const HEARTBEAT_FLAG: &str = "500ms";
/// Stages in the run, and slots per worker: the stages spread, so each worker runs half of
/// them and has room for the other half.
const STAGES: usize = 4;
const SLOTS: u32 = 4;
/// The target for the time past the lease.
const TARGET_PAST_LEASE: f64 = 1.0;
/// The longest any step may take before the benchmark gives up.
const LIMIT: Duration = Duration::from_secs(60);

/// One kill, in seconds from it.
#[derive(Debug, Clone, Copy)]
struct Failover {
    /// The scheduler marked the dead worker's attempts lost (its lease ran out).
    lost: f64,
    /// The last of them was dispatched to the other worker.
    dispatched: f64,
    /// The last of them was running there (its process wrote its start time).
    running: f64,
}

/// `STAGES` stages that note their start (stage, attempt, pid, time in ns) in `starts`, then
/// sleep long enough to outlast the measurement.
fn dag(starts: &Path) -> String {
    let mut yaml = "name: failover\ndefaults:\n  executor: process\nstages:\n".to_owned();
    for i in 0..STAGES {
        let _ = writeln!(
            yaml,
            "  - name: s{i}\n    command: [sh, -c, 'echo $VISHWA_STAGE $VISHWA_ATTEMPT $$ \
             $(date +%s%N) >> {}; exec sleep 120']",
            starts.display()
        );
    }
    yaml
}

/// A start noted by a stage.
#[derive(Debug, Clone, PartialEq)]
struct Start {
    stage: String,
    attempt: u32,
    pid: i32,
    at_ms: i64,
}

fn read_starts(path: &Path) -> Vec<Start> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            Some(Start {
                stage: f.next()?.to_owned(),
                attempt: f.next()?.parse().ok()?,
                pid: f.next()?.parse().ok()?,
                at_ms: f.next()?.parse::<i64>().ok()? / 1_000_000,
            })
        })
        .collect()
}

fn worker_args(url: &str, name: &str, cache: &Path) -> Vec<String> {
    [
        "worker",
        "--scheduler",
        url,
        "--name",
        name,
        "--slots",
        &SLOTS.to_string(),
        "--allow-process",
        "--grace",
        "0s",
        "--cache",
        &cache.display().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

async fn get_run(client: &mut Client, run_id: &str) -> Option<pb::Run> {
    let request = pb::GetRunRequest {
        run_id: run_id.to_owned(),
    };
    client.get_run(request).await.ok().map(|r| r.into_inner())
}

/// One repetition: a fresh scheduler and two workers, a kill, the wait, the clean-up.
async fn measure(vishwa: &Path, rep: usize) -> Result<Failover> {
    let dir = tempfile::Builder::new()
        .prefix("vishwa-bench-failover-")
        .tempdir()?;
    let addr = free_local_addr();
    let url = format!("http://{addr}");
    let flags = ["--lease", LEASE_FLAG, "--heartbeat", HEARTBEAT_FLAG];
    let args = scheduler_args(&dir.path().join("data"), addr, &flags);
    let mut scheduler = Server::spawn(vishwa, &args, &dir.path().join("scheduler.log"))?;
    let mut client = connect_client(&url, LIMIT).await?;
    let mut workers = BTreeMap::new();
    for side in ["a", "b"] {
        let name = format!("failover-{side}-{}-{rep}", std::process::id());
        let args = worker_args(&url, &name, &dir.path().join(format!("cache-{side}")));
        let log = dir.path().join(format!("worker-{side}.log"));
        workers.insert(name, Server::spawn(vishwa, &args, &log)?);
    }
    wait_for("both workers to register", LIMIT, || {
        let mut client = client.clone();
        async move {
            let listed = client.list_workers(pb::ListWorkersRequest {}).await.ok()?;
            (listed
                .into_inner()
                .workers
                .iter()
                .filter(|w| w.connected)
                .count()
                == 2)
                .then_some(())
        }
    })
    .await?;

    let starts = dir.path().join("starts");
    client
        .submit_dag(pb::SubmitDagRequest {
            file_name: "failover.yaml".to_owned(),
            source: dag(&starts),
            ..Default::default()
        })
        .await?;
    let run = client
        .trigger_run(pb::TriggerRunRequest {
            dag: "failover".to_owned(),
            params: Default::default(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .run
        .context("trigger answered no run")?;
    let run_id = run.run_id;
    let _orphans = Orphans {
        starts: starts.clone(),
        run_id: run_id.clone(),
    };
    wait_for("every stage to run", LIMIT, || async {
        (read_starts(&starts).len() == STAGES).then_some(())
    })
    .await?;
    let before = get_run(&mut client, &run_id).await.context("get run")?;
    let victim = before.stages[0].worker.clone();
    let moved: Vec<String> = before
        .stages
        .iter()
        .filter(|s| s.worker == victim)
        .map(|s| s.name.clone())
        .collect();

    let killed_at = epoch_ms(SystemTime::now());
    workers
        .get_mut(&victim)
        .with_context(|| format!("the run's stages went to unknown worker {victim}"))?
        .kill()?;

    let after = wait_for("the stages to run elsewhere", LEASE + LIMIT, || async {
        let run = get_run(&mut client.clone(), &run_id).await?;
        let again = read_starts(&starts);
        let done = moved.iter().all(|name| {
            again.iter().any(|s| &s.stage == name && s.attempt >= 2)
                && run
                    .stages
                    .iter()
                    .any(|s| &s.name == name && s.attempts.len() >= 2)
        });
        done.then_some((run, again))
    });
    let (run, again) = after.await?;
    let mut figures = Failover {
        lost: f64::MIN,
        dispatched: f64::MIN,
        running: f64::MIN,
    };
    let since_kill = |ms: i64| (ms - killed_at) as f64 / 1000.0;
    for stage in run.stages.iter().filter(|s| moved.contains(&s.name)) {
        let (first, second) = (&stage.attempts[0], &stage.attempts[1]);
        if first.outcome != "lost" || second.worker == victim {
            bail!(
                "{}: attempt 1 ended {:?}, attempt 2 went to {}",
                stage.name,
                first.outcome,
                second.worker
            );
        }
        let start = again
            .iter()
            .find(|s| s.stage == stage.name && s.attempt == 2)
            .context("a restarted stage noted no start")?;
        figures.lost = figures.lost.max(since_kill(first.finished_ms));
        figures.dispatched = figures.dispatched.max(since_kill(second.started_ms));
        figures.running = figures.running.max(since_kill(start.at_ms));
    }

    // Clean up: the survivor stops its stages, the dead worker's are killed here.
    let _ = client
        .cancel_run(pb::CancelRunRequest {
            run_id: run_id.clone(),
        })
        .await;
    for worker in workers.values_mut() {
        worker.stop(Duration::from_secs(10))?;
    }
    scheduler.stop(Duration::from_secs(10))?;
    Ok(figures)
}

/// The run's stage processes, killed when this is dropped: those of the killed worker are
/// orphans, and on an error the workers are killed too and leave theirs.
struct Orphans {
    starts: std::path::PathBuf,
    run_id: String,
}

impl Drop for Orphans {
    fn drop(&mut self) {
        let marker = format!("VISHWA_RUN_ID={}", self.run_id);
        for start in read_starts(&self.starts) {
            // Only a process that is still one of this run's stages, never a reused pid.
            let environ = std::fs::read(format!("/proc/{}/environ", start.pid)).unwrap_or_default();
            if environ
                .split(|b| *b == 0)
                .any(|var| var == marker.as_bytes())
            {
                let _ = killpg(Pid::from_raw(start.pid), Signal::SIGKILL);
            }
        }
    }
}

/// Runs the benchmark and returns its section of BENCHMARKS.md.
pub(crate) fn run(vishwa: &Path, reps: usize, date: &str) -> Result<Section> {
    let load = load_average();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut kills = Vec::new();
    for rep in 0..reps {
        let figures = runtime.block_on(measure(vishwa, rep))?;
        eprintln!(
            "  kill {}: lost after {:.3} s, re-dispatched after {:.3} s, running after {:.3} s",
            rep + 1,
            figures.lost,
            figures.dispatched,
            figures.running
        );
        kills.push(figures);
    }
    let body = render(&kills, load, date);
    println!("{body}");
    Ok(Section {
        id: "failover",
        body,
    })
}

fn render(kills: &[Failover], load: Option<f64>, date: &str) -> String {
    let lease = LEASE.as_secs_f64();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## 6. Failover: a worker killed mid-stage\n\n{ABOUT}\n\n\
         Measured {date} (load average {} at the start): {} kills, each in a fresh cluster; \
         lease {LEASE_FLAG}, heartbeat every {HEARTBEAT_FLAG}; medians over the kills.\n\n\
         | from the SIGKILL to | median | min | max | median − lease | median ÷ lease |\n\
         |---|---:|---:|---:|---:|---:|",
        load_text(load),
        kills.len()
    );
    let rows: [Row<Failover>; 3] = [
        ("the dead worker's attempts marked lost", |f| f.lost),
        ("the last of them dispatched to the other worker", |f| {
            f.dispatched
        }),
        ("**the last of them running there**", |f| f.running),
    ];
    for (label, f) in rows {
        let mut s = Samples::default();
        kills.iter().for_each(|k| s.push(f(k)));
        let max = kills.iter().map(f).fold(f64::NAN, f64::max);
        let _ = writeln!(
            out,
            "| {label} | {:.3} s | {:.3} s | {max:.3} s | {:+.3} s | {} |",
            s.median(),
            s.min(),
            s.median() - lease,
            ratio(s.median() / lease),
        );
    }
    let mut running = Samples::default();
    kills.iter().for_each(|k| running.push(k.running));
    let worst = kills.iter().map(|k| k.running).fold(f64::NAN, f64::max);
    let _ = writeln!(
        out,
        "\nTarget: the stages run elsewhere within the lease + {TARGET_PAST_LEASE:.0} s: {} \
         (median {:+.3} s past the lease, worst {:+.3} s).",
        verdict(running.median() - lease < TARGET_PAST_LEASE),
        running.median() - lease,
        worst - lease,
    );
    out
}

const ABOUT: &str = "What is measured: `vishwa scheduler` with `--lease 2s --heartbeat \
500ms` and two `vishwa worker --allow-process --slots 4` processes (release binary, real \
gRPC, real sled); one run of four `executor: process` stages, each of which notes its start \
time (stage, attempt, pid, `date +%s%N`) in a file and then sleeps, so each worker runs two. \
Once all four run, the harness kills the worker running the first stage with SIGKILL and \
times, from the kill: when the scheduler marked that worker's attempts lost (the first \
attempts' end), when it dispatched them to the other worker (the second attempts' start, from \
`GetRun`), and when their processes were running there (the time they noted). A killed \
worker's stages keep running as orphans (they are their own process groups); the harness \
kills them afterwards.\n\n\
What dominates: the lease, by design. The scheduler learns that a worker is dead only when its \
lease runs out, and checks leases every 500 ms, so the attempts are marked lost up to 0.5 s \
after the lease ends. Here the kill comes a few milliseconds after the stages' start reports, \
which renew the lease, so the lease runs almost in full: the worst case; a worker dying at a \
random moment is noticed up to a heartbeat interval sooner. The lost attempts are dispatched \
again in the same engine turn (the same millisecond), and the other worker has their processes \
running a few milliseconds later.";
