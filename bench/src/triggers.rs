//! Trigger throughput: 50 concurrent clients each triggering runs back to back against a
//! `vishwa scheduler` with one `vishwa worker` running the runs' process stages. Timed per
//! call: how many triggers a second the scheduler acknowledges (durably), the p99 latency, and
//! how many calls got no answer within the deadline (a wedged store). Run against the binary
//! under test and, with `--baseline`, an older one in the same session.

use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use vishwa_proto::v1 as pb;

use crate::child::{Client, Server, connect_client, free_local_addr, scheduler_args, wait_for};
use crate::cpu::load_average;
use crate::report::Section;
use crate::stats::{Samples, load_text, ratio};

/// Concurrent clients, each with a connection of its own.
const CLIENTS: usize = 50;
/// Triggers per client per repetition.
const PER_CLIENT: usize = 20;
/// A call unanswered this long counts as hung.
const DEADLINE: Duration = Duration::from_secs(10);
/// Hung calls after which a repetition stops: the scheduler is wedged.
const WEDGED_AFTER: usize = CLIENTS;
const LIMIT: Duration = Duration::from_secs(60);

const DAG: &str =
    "name: triggers\ndefaults:\n  executor: process\nstages:\n  - name: a\n    command: \"true\"\n";

/// One repetition's figures.
#[derive(Debug, Clone, Default)]
struct Burst {
    acknowledged: usize,
    refused: usize,
    hung: usize,
    wall: Duration,
    /// Latency of every acknowledged call, in seconds.
    latencies: Vec<f64>,
}

impl Burst {
    fn per_second(&self) -> f64 {
        self.acknowledged as f64 / self.wall.as_secs_f64()
    }

    fn quantile(&self, q: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort_by(f64::total_cmp);
        if sorted.is_empty() {
            return f64::NAN;
        }
        let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[i]
    }
}

async fn client_loop(mut client: Client) -> Burst {
    let mut burst = Burst::default();
    for _ in 0..PER_CLIENT {
        let started = Instant::now();
        let call = client.trigger_run(pb::TriggerRunRequest {
            dag: "triggers".to_owned(),
            ..Default::default()
        });
        match tokio::time::timeout(DEADLINE, call).await {
            Ok(Ok(_)) => {
                burst.acknowledged += 1;
                burst.latencies.push(started.elapsed().as_secs_f64());
            }
            Ok(Err(_)) => burst.refused += 1,
            Err(_) => {
                burst.hung += 1;
                if burst.hung >= 3 {
                    break;
                }
            }
        }
    }
    burst
}

async fn measure(vishwa: &Path, rep: usize) -> Result<Burst> {
    let dir = tempfile::Builder::new()
        .prefix("vishwa-bench-triggers-")
        .tempdir()?;
    let addr = free_local_addr();
    let url = format!("http://{addr}");
    let args = scheduler_args(&dir.path().join("data"), addr, &[]);
    let mut scheduler = Server::spawn(vishwa, &args, &dir.path().join("scheduler.log"))?;
    let mut client = connect_client(&url, LIMIT).await?;
    let name = format!("triggers-{}-{rep}", std::process::id());
    let worker_args: Vec<String> = [
        "worker",
        "--scheduler",
        &url,
        "--name",
        &name,
        "--slots",
        "8",
        "--allow-process",
        "--cache",
        &dir.path().join("cache").display().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut worker = Server::spawn(vishwa, &worker_args, &dir.path().join("worker.log"))?;
    wait_for("the worker to register", LIMIT, || {
        let mut client = client.clone();
        async move {
            let listed = client.list_workers(pb::ListWorkersRequest {}).await.ok()?;
            listed
                .into_inner()
                .workers
                .iter()
                .any(|w| w.connected)
                .then_some(())
        }
    })
    .await?;
    client
        .submit_dag(pb::SubmitDagRequest {
            file_name: "triggers.yaml".to_owned(),
            source: DAG.to_owned(),
            ..Default::default()
        })
        .await
        .context("submitting the DAG")?;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(Client::connect(url.clone()).await?);
    }
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(client_loop(c)))
        .collect();
    let mut total = Burst::default();
    for task in tasks {
        let b = task.await?;
        total.acknowledged += b.acknowledged;
        total.refused += b.refused;
        total.hung += b.hung;
        total.latencies.extend(b.latencies);
    }
    total.wall = started.elapsed();
    if total.hung >= WEDGED_AFTER {
        eprintln!("    the scheduler is wedged: {} calls hung", total.hung);
    }
    // A wedged scheduler may not stop on SIGTERM: `stop` kills it after the grace.
    worker.stop(Duration::from_secs(10))?;
    scheduler.stop(Duration::from_secs(10))?;
    Ok(total)
}

/// Median figures of one binary over its repetitions.
struct Summary {
    per_second: f64,
    p50: f64,
    p99: f64,
    hung: usize,
    refused: usize,
    acknowledged: usize,
}

fn summarize(bursts: &[Burst]) -> Summary {
    let median = |f: fn(&Burst) -> f64| {
        let mut s = Samples::default();
        bursts.iter().for_each(|b| s.push(f(b)));
        s.median()
    };
    Summary {
        per_second: median(Burst::per_second),
        p50: median(|b| b.quantile(0.5)),
        p99: median(|b| b.quantile(0.99)),
        hung: bursts.iter().map(|b| b.hung).sum(),
        refused: bursts.iter().map(|b| b.refused).sum(),
        acknowledged: bursts.iter().map(|b| b.acknowledged).sum(),
    }
}

/// Runs the benchmark on `vishwa` (and `baseline`, first, when given).
pub(crate) fn run(
    vishwa: &Path,
    baseline: Option<&Path>,
    reps: usize,
    date: &str,
) -> Result<Section> {
    let load = load_average();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut measured = Vec::new();
    let binaries: Vec<(&str, &Path)> = baseline
        .map(|b| ("before (baseline binary)", b))
        .into_iter()
        .chain([("after (this build)", vishwa)])
        .collect();
    for (label, binary) in binaries {
        eprintln!("  {label}: {}", binary.display());
        let mut bursts = Vec::new();
        for rep in 0..reps {
            let b = runtime.block_on(measure(binary, rep))?;
            eprintln!(
                "    rep {}: {} acknowledged in {:.2} s ({:.0}/s), p99 {:.1} ms, {} refused, {} hung",
                rep + 1,
                b.acknowledged,
                b.wall.as_secs_f64(),
                b.per_second(),
                b.quantile(0.99) * 1000.0,
                b.refused,
                b.hung
            );
            bursts.push(b);
        }
        measured.push((label, summarize(&bursts)));
    }
    let body = render(&measured, reps, load, date);
    println!("{body}");
    Ok(Section {
        id: "triggers",
        body,
    })
}

fn render(measured: &[(&str, Summary)], reps: usize, load: Option<f64>, date: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Trigger throughput: {CLIENTS} concurrent clients\n\n{ABOUT}\n\n\
         Measured {date} (load average {} at the start): {reps} repetitions per binary, each \
         in a fresh scheduler; {CLIENTS} clients × {PER_CLIENT} triggers; medians over the \
         repetitions, hung and refused calls summed.\n\n\
         | binary | triggers/s | p50 | p99 | acknowledged | refused | hung (> {}s) |\n\
         |---|---:|---:|---:|---:|---:|---:|",
        load_text(load),
        DEADLINE.as_secs()
    );
    for (label, s) in measured {
        let _ = writeln!(
            out,
            "| {label} | {:.0} | {:.1} ms | {:.1} ms | {} | {} | {} |",
            s.per_second,
            s.p50 * 1000.0,
            s.p99 * 1000.0,
            s.acknowledged,
            s.refused,
            s.hung
        );
    }
    match measured {
        [(_, before), (_, after)] if before.hung > 0 => {
            let _ = writeln!(
                out,
                "\nBefore, the scheduler wedged in every repetition: {} calls got no answer \
                 and it stopped answering any call (its latencies cover only the {} calls \
                 answered before that), so there is no meaningful ratio. After: {} hung.",
                before.hung, before.acknowledged, after.hung
            );
        }
        [(_, before), (_, after)] => {
            let _ = writeln!(
                out,
                "\nAfter ÷ before: throughput {}, p99 latency {}.",
                ratio(after.per_second / before.per_second),
                ratio(after.p99 / before.p99)
            );
        }
        _ => {}
    }
    out
}

const ABOUT: &str = "What is measured: `vishwa scheduler` (real gRPC, real sled) with one \
`vishwa worker --allow-process --slots 8` running each run's single `true` stage. 50 clients, \
each on its own connection, call `TriggerRun` back to back; a call counts when the scheduler \
acknowledged it, which it does only once the run is durable. A call unanswered within 10 s \
counts as hung (a client stops after 3 hung calls). Every trigger is also audited, so each \
one is two durable writes besides the engine's turns.\n\n\
What changed (issue 10): before, every audit entry and log batch flushed sled on its own \
(`flush_async`) beside the engine's per-turn flush, and sled 0.34 can deadlock `apply_batch` \
against a concurrent flush. After, one writer thread takes every queued write, applies it, \
flushes once and then acknowledges every caller (group commit).";
