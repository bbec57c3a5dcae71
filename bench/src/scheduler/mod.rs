//! Benchmark 1, scheduler overhead: 10,000 no-op stages through the real scheduler, gRPC and
//! sled, in two shapes (a `for_each` fan-out and 100 chains of 100). The same runs on the
//! in-memory store are the baseline that shows what durability costs.

use std::fmt::Write;

use anyhow::Result;

use crate::cpu::load_average;
use crate::dags::{self, StageKind};
use crate::report::Section;
use crate::stats::{Samples, load_text, ratio, thousands, verdict};

mod harness;

use harness::{Cluster, Layout, RunFigures, StoreKind};

/// Stages per second the issue asks for.
const TARGET_STAGES_PER_SEC: f64 = 2_000.0;
/// Ready-to-dispatch p99 the issue asks for, in microseconds.
const TARGET_P99_US: u64 = 10_000;

/// Every stage: a Docker stage, so it goes to the no-op executor plugged in as `docker`.
const NOOP: StageKind = StageKind {
    executor: "docker",
    image: Some("noop"),
    program: "true",
};

/// Settings of this benchmark.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    pub(crate) reps: usize,
    pub(crate) workers: usize,
    pub(crate) slots: u32,
    /// Only this shape (one of [`SHAPE_IDS`]); every shape when None.
    pub(crate) shape: Option<&'static str>,
}

/// One workload.
struct Shape {
    /// What `--shape` selects it by.
    id: &'static str,
    label: &'static str,
    yaml: String,
}

fn shapes() -> Vec<Shape> {
    vec![
        Shape {
            id: "fan-out",
            label: "fan-out 1 → 10,000 (for_each) → 1",
            yaml: dags::fan_for_each("fan-out", 10_000, NOOP),
        },
        Shape {
            id: "fan-out-explicit",
            label: "fan-out 1 → 10,000 (explicit stages) → 1",
            yaml: dags::fan("fan-out-explicit", 10_000, NOOP),
        },
        Shape {
            id: "chains",
            label: "100 chains × 100",
            yaml: dags::chains("chains", 100, 100, NOOP),
        },
    ]
}

/// The ids `--shape` accepts.
pub(crate) const SHAPE_IDS: &[&str] = &["fan-out", "fan-out-explicit", "chains"];

/// Figures of one shape on one store over the repetitions.
#[derive(Default)]
struct Summary {
    stages: usize,
    wall: Samples,
    rate: Samples,
    p50_us: Samples,
    p99_us: Samples,
    eligible_p50_us: Samples,
    eligible_p99_us: Samples,
    commits: Samples,
    cpu_us_per_stage: Samples,
}

impl Summary {
    fn add(&mut self, run: &RunFigures) {
        let secs = run.wall.as_secs_f64();
        self.stages = run.stages;
        self.wall.push(secs);
        self.rate.push(run.stages as f64 / secs);
        let q = |q| run.metrics.quantile_us(q).map_or(f64::NAN, |v| v as f64);
        self.p50_us.push(q(0.5));
        self.p99_us.push(q(0.99));
        let e = |q| {
            run.metrics
                .eligible_quantile_us(q)
                .map_or(f64::NAN, |v| v as f64)
        };
        self.eligible_p50_us.push(e(0.5));
        self.eligible_p99_us.push(e(0.99));
        self.commits.push(run.metrics.commits as f64);
        self.cpu_us_per_stage
            .push(run.cpu.as_secs_f64() * 1e6 / run.stages as f64);
    }

    fn meets_rate(&self) -> bool {
        self.rate.median() >= TARGET_STAGES_PER_SEC
    }

    fn meets_p99(&self) -> bool {
        self.p99_us.median() < TARGET_P99_US as f64
    }
}

/// Runs the benchmark, prints the figures and returns its section of BENCHMARKS.md.
pub(crate) fn run(options: Options, date: &str) -> Result<Section> {
    let load = load_average();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for shape in shapes() {
        if options.shape.is_some_and(|only| only != shape.id) {
            continue;
        }
        let mut sled = Summary::default();
        let mut memory = Summary::default();
        for rep in 0..options.reps {
            // Alternate the order so neither store always runs on a warmer machine.
            let order = if rep % 2 == 0 {
                [StoreKind::Sled, StoreKind::Memory]
            } else {
                [StoreKind::Memory, StoreKind::Sled]
            };
            for store in order {
                let layout = Layout {
                    store,
                    workers: options.workers,
                    slots: options.slots,
                };
                let figures = runtime.block_on(measure(layout, &shape.yaml))?;
                eprintln!(
                    "  {} on {store:?}: {} stages in {:.3} s ({:.0}/s), {:.2} CPU-s, \
                     p99 {:?} us, {} commits",
                    shape.label,
                    figures.stages,
                    figures.wall.as_secs_f64(),
                    figures.stages as f64 / figures.wall.as_secs_f64(),
                    figures.cpu.as_secs_f64(),
                    figures.metrics.quantile_us(0.99),
                    figures.metrics.commits,
                );
                match store {
                    StoreKind::Sled => sled.add(&figures),
                    StoreKind::Memory => memory.add(&figures),
                }
            }
        }
        rows.push((shape.label, sled, memory));
    }
    let body = render(&rows, options, date, load);
    println!("{body}");
    Ok(Section {
        id: "scheduler",
        body,
    })
}

async fn measure(layout: Layout, yaml: &str) -> Result<RunFigures> {
    let mut cluster = Cluster::start(layout).await?;
    let figures = cluster.run_dag(yaml).await;
    cluster.stop().await?;
    figures
}

/// "**met** for every shape", or which shapes met and which missed.
fn per_shape(rows: &[(&str, Summary, Summary)], met: fn(&Summary) -> bool) -> String {
    let shapes = |want: bool| -> Vec<&str> {
        rows.iter()
            .filter(|(_, sled, _)| met(sled) == want)
            .map(|(label, _, _)| *label)
            .collect()
    };
    let (hit, miss) = (shapes(true), shapes(false));
    match (hit.is_empty(), miss.is_empty()) {
        (_, true) => format!("{} for every shape", verdict(true)),
        (true, false) => format!("{} for every shape", verdict(false)),
        (false, false) => format!(
            "{} for {}, {} for {}",
            verdict(true),
            hit.join("; "),
            verdict(false),
            miss.join("; ")
        ),
    }
}

fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}

fn render(
    rows: &[(&str, Summary, Summary)],
    options: Options,
    date: &str,
    load: Option<f64>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## 1. Scheduler overhead\n\n{ABOUT}\n\n\
         Measured {date} (load average {} at the start): {} repetitions per row (a fresh \
         scheduler each), {} worker(s) × {} slots; medians over the repetitions.\n",
        load_text(load),
        options.reps,
        options.workers,
        options.slots
    );
    out.push_str(
        "| shape | store | stages | wall | stages/s | CPU per stage | ready→dispatch p50 | \
         p99 | slot free→dispatch p50 | p99 | store commits | stages/commit | ≥ 2,000/s | \
         p99 < 10 ms |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n",
    );
    for (label, sled, memory) in rows {
        for (store, s, judged) in [
            ("sled, synced", sled, true),
            ("memory (baseline)", memory, false),
        ] {
            let judge = |met: bool| if judged { verdict(met) } else { "–" };
            let _ = writeln!(
                out,
                "| {label} | {store} | {} | {:.3} s | {:.0} | {:.0} µs | {} | {} | {} | {} | {:.0} \
                 | {:.1} | {} | {} |",
                thousands(s.stages),
                s.wall.median(),
                s.rate.median(),
                s.cpu_us_per_stage.median(),
                ms(s.p50_us.median()),
                ms(s.p99_us.median()),
                ms(s.eligible_p50_us.median()),
                ms(s.eligible_p99_us.median()),
                s.commits.median(),
                s.stages as f64 / s.commits.median(),
                judge(s.meets_rate()),
                judge(s.meets_p99()),
            );
        }
    }
    out.push('\n');
    for (label, sled, memory) in rows {
        let _ = writeln!(
            out,
            "- {label}: on sled the run takes {} the in-memory store's wall time and {} its CPU \
             time.",
            ratio(sled.wall.median() / memory.wall.median()),
            ratio(sled.cpu_us_per_stage.median() / memory.cpu_us_per_stage.median()),
        );
    }
    let _ = writeln!(
        out,
        "\nTargets on sled: ≥ {} stages/s {}; ready→dispatch p99 < {} ms {}.",
        thousands(TARGET_STAGES_PER_SEC as usize),
        per_shape(rows, Summary::meets_rate),
        TARGET_P99_US / 1000,
        per_shape(rows, Summary::meets_p99),
    );
    out
}

const ABOUT: &str = "What is measured: wall time from the `TriggerRun` call to the \
run's final event for about 10,000 stages whose executor does nothing (it reports the start, \
then exit code 0, as a real executor does for an instant command), so every stage costs what \
the scheduler costs: the state machine, a task over the worker's stream, `ReportStarted` and \
`ReportResult` over gRPC, and each state change written to sled and synced before it is acted \
on. CPU per stage is the CPU time of the whole process (scheduler, worker, harness) over the \
same span, divided by the stages: on a shared machine it is the steadier figure. Ready→dispatch \
latency and store commits come from the engine's own metrics (`EngineHandle::metrics`).\n\n\
What dominates: HTTP/2 and the socket calls behind gRPC, about half of the CPU (three messages \
and their replies per stage); the engine actor about a fifth, a third of which is sled's batch \
apply and sync; the worker agent under a tenth. Group commit keeps sled cheap: one sync covers \
10–30 stages, and sled 0.34 syncs its log with `sync_file_range` (about 0.1 ms here) rather \
than `fdatasync` (about 4 ms on this disk), which survives a killed process but does not flush \
the disk's write cache. In the fan-outs, 10,000 stages become ready at once for 256 slots, so their \
ready→dispatch latency is the wait for a free slot (position in the queue ÷ throughput), not \
scheduler work; the chains (at most 100 ready at a time) show the engine's own latency. \
Slot free→dispatch separates the two: it is timed from the later of the stage becoming ready \
and the slot it takes being freed (the engine keeps, per worker, when each free slot was freed \
and hands out the oldest first), so it is the engine's reaction time whatever the queue. The \
`for_each` fan-out costs more CPU than the explicit one because every instance carries the \
whole 10,000-item list param as `VISHWA_PARAM_ITEMS` (≈ 49 KB) to its worker, as the container \
contract asks.";
