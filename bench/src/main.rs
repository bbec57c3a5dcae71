//! `vishwa-bench`: the benchmark harness. Each subcommand runs one benchmark against the real
//! components, prints its figures and rewrites its section of BENCHMARKS.md; `all` runs them
//! all.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod artifacts;
mod biglog;
mod bundle;
mod cache;
mod child;
mod command;
mod console;
mod cpu;
mod dags;
mod docker;
mod failover;
mod inproc;
mod peers;
mod recovery;
mod report;
mod s3;
mod scheduler;
mod spread;
mod stats;
mod triggers;
mod validate;

/// Vishwa's benchmarks: scheduler overhead, whole commands against make, Docker overhead,
/// validation of a large DAG, recovery after a crash, failover from a dead worker, spread over
/// workers, bundle fetch.
#[derive(Debug, Parser)]
#[command(name = "vishwa-bench", max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    benchmark: Benchmark,
    /// Repetitions per measurement [default: 5 for `scheduler`, `docker`, `recovery`,
    /// `failover`, `spread` and `bundle`, 7 for `peers` and `validate`].
    #[arg(long, global = true)]
    reps: Option<usize>,
    /// Only print the figures; leave BENCHMARKS.md alone.
    #[arg(long, global = true)]
    no_write: bool,
    /// The file to rewrite [default: BENCHMARKS.md at the workspace root].
    #[arg(long, global = true)]
    file: Option<PathBuf>,
    /// The `vishwa` binary to time [default: target/release/vishwa, built first].
    #[arg(long, global = true)]
    vishwa: Option<PathBuf>,
    /// An older `vishwa` binary the `triggers` benchmark also measures, as the baseline.
    #[arg(long, global = true)]
    baseline: Option<PathBuf>,
    /// Workers in the scheduler benchmark.
    #[arg(long, global = true, default_value_t = 1)]
    workers: usize,
    /// Slots per worker in the scheduler benchmark.
    #[arg(long, global = true, default_value_t = 256)]
    slots: u32,
    /// Only this shape in the scheduler benchmark, for profiling; implies --no-write, since
    /// the section would then lack the other shapes.
    #[arg(
        long,
        global = true,
        value_parser = clap::builder::PossibleValuesParser::new(scheduler::SHAPE_IDS)
    )]
    shape: Option<String>,
    /// The scheduler benchmark also on PostgreSQL: `local` (a server started here with
    /// Debian's initdb) or postgres://USER@HOST:PORT/DB (an empty database).
    #[arg(long, global = true, value_name = "local|URL")]
    postgres: Option<scheduler::PostgresTarget>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
enum Benchmark {
    /// Every benchmark below, in order.
    All,
    /// 10,000 no-op stages through the scheduler, gRPC and sled.
    Scheduler,
    /// `vishwa run` of 50- and 202-stage DAGs against `make -j2`.
    Peers,
    /// A chain of 20 busybox stages against a `docker run` loop.
    Docker,
    /// `vishwa validate` on a 10,000-stage DAG.
    Validate,
    /// SIGKILL and restart of a scheduler with 1,000 runs in flight.
    Recovery,
    /// SIGKILL of a worker: how long until its stages run on another.
    Failover,
    /// A 2,000-stage fan-out over 3 workers: throughput, spread, the scheduler's CPU and memory.
    Spread,
    /// A 50 MB bundle: upload, and fetch by a worker against a plain loopback TCP copy.
    Bundle,
    /// A 1 GB output handed to another worker against a loopback TCP copy; a 1,000-item
    /// fan-out of no-op stages.
    Artifacts,
    /// A 1 GiB output handed to another worker through an S3 bucket (s3s-fs) against a
    /// loopback TCP copy.
    S3,
    /// `vishwa run dags/cake-popularity` twice on one data dir: the fully cached rerun
    /// against the first run (real Docker; builds the python-ml image if missing).
    Cache,
    /// 50 concurrent clients triggering runs: throughput, p99 latency, hung calls (against
    /// `--baseline` too when given).
    Triggers,
    /// A stage printing 1 GiB: scheduler and worker peak memory, cap off and at 100 MiB.
    Biglog,
    /// The web console: render time of a 10,000-instance run page and of `/runs` over 10,000
    /// runs, 100 open run pages during a 1,000-instance run, Chromium time to usable.
    Console,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // Quiet unless asked: RUST_LOG=debug shows what the scheduler and workers do.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let wants = |b: Benchmark| cli.benchmark == Benchmark::All || cli.benchmark == b;
    let reps = |default: usize| cli.reps.unwrap_or(default).max(1);
    let in_process_only = matches!(cli.benchmark, Benchmark::Scheduler | Benchmark::Console);
    let vishwa = if in_process_only {
        None
    } else {
        Some(command::vishwa_binary(
            cli.vishwa.as_deref(),
            cli.vishwa.is_none(),
        )?)
    };
    let machine = report::Machine::probe();
    eprintln!("machine: {}", machine.describe());
    let mut sections = vec![report::header_section(&machine, &date)];
    if wants(Benchmark::Scheduler) {
        eprintln!("scheduler overhead");
        let options = scheduler::Options {
            reps: reps(5),
            workers: cli.workers.max(1),
            slots: cli.slots.max(1),
            shape: scheduler::SHAPE_IDS
                .iter()
                .copied()
                .find(|id| cli.shape.as_deref() == Some(*id)),
            postgres: cli.postgres.clone(),
        };
        sections.push(scheduler::run(options, &date)?);
    }
    if wants(Benchmark::Console) {
        eprintln!("console");
        sections.push(console::run(reps(3), &date)?);
    }
    if let Some(vishwa) = &vishwa {
        if wants(Benchmark::Peers) {
            eprintln!("against the peers");
            sections.push(peers::run(vishwa, reps(7), &date)?);
        }
        if wants(Benchmark::Docker) {
            eprintln!("docker overhead");
            sections.push(docker::run(vishwa, reps(5), &date)?);
        }
        if wants(Benchmark::Validate) {
            eprintln!("validate");
            sections.push(validate::run(vishwa, reps(7), &date)?);
        }
        if wants(Benchmark::Recovery) {
            eprintln!("recovery");
            sections.push(recovery::run(vishwa, reps(5), &date)?);
        }
        if wants(Benchmark::Failover) {
            eprintln!("failover");
            sections.push(failover::run(vishwa, reps(5), &date)?);
        }
        if wants(Benchmark::Spread) {
            eprintln!("spread");
            sections.push(spread::run(vishwa, reps(5), &date)?);
        }
        if wants(Benchmark::Bundle) {
            eprintln!("bundle");
            sections.push(bundle::run(vishwa, reps(5), &date)?);
        }
        if wants(Benchmark::Artifacts) {
            eprintln!("artifacts");
            sections.push(artifacts::run(vishwa, reps(3), &date)?);
        }
        if wants(Benchmark::S3) {
            eprintln!("s3 artifacts");
            sections.push(s3::run(reps(3), &date)?);
        }
        if wants(Benchmark::Cache) {
            eprintln!("cache");
            sections.push(cache::run(vishwa, reps(3), &date)?);
        }
        if wants(Benchmark::Triggers) {
            eprintln!("triggers");
            sections.push(triggers::run(
                vishwa,
                cli.baseline.as_deref(),
                reps(3),
                &date,
            )?);
        }
        if wants(Benchmark::Biglog) {
            eprintln!("big log");
            sections.push(biglog::run(vishwa, reps(1), &date)?);
        }
    }
    if !cli.no_write && cli.shape.is_none() {
        let path = cli
            .file
            .unwrap_or_else(|| command::workspace_root().join("BENCHMARKS.md"));
        report::write_sections(&path, &sections)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
