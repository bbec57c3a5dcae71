//! The web console under load, against a real in-process scheduler serving its HTTP port:
//! the server's render time of a 10,000-instance run page and of `/runs` over 10,000 runs,
//! engine throughput on a 1,000-instance run with 100 run pages open on its event stream
//! against none, and how long headless Chromium takes until the 10,000-instance page is
//! usable.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast::error::RecvError;
use vishwa_integration_tests::browser::Browser;
use vishwa_integration_tests::inproc::{InProcessScheduler, connect_client};
use vishwa_proto::v1 as pb;
use vishwa_scheduler::SchedulerConfig;
use vishwa_scheduler::engine::{EngineEvent, EngineHandle};
use vishwa_scheduler::ids::RunId;
use vishwa_scheduler::run::{RunRecord, RunState, StageRecord, StageState, TriggerKind};
use vishwa_scheduler::store::WriteBatch;

use crate::cpu::load_average;
use crate::dags::{StageKind, fan_for_each};
use crate::inproc::{BenchExecutor, Hold, InProcessWorker};
use crate::report::Section;
use crate::stats::{Samples, load_text, thousands};

/// Stages run by the bench executor, which finishes them at once.
const NOOP: StageKind = StageKind {
    executor: "docker",
    image: Some("noop"),
    program: "true",
};
/// Instances of the big run page.
const BIG_RUN: usize = 10_000;
/// Runs listed by `/runs`.
const MANY_RUNS: usize = 10_000;
/// Instances of the fan-out run, and pages open on it.
const FAN_RUN: usize = 1_000;
const PAGES: usize = 100;
/// Worker slots.
const SLOTS: u32 = 256;
/// How long one run may take.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// `GET path` over a fresh connection; returns the status, the body's size and the time to
/// the last byte.
async fn get(addr: &str, path: &str) -> Result<(u16, usize, Duration)> {
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut body = Vec::new();
    stream.read_to_end(&mut body).await?;
    let elapsed = start.elapsed();
    let head = String::from_utf8_lossy(&body[..body.len().min(16)]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.len(), elapsed))
}

/// Opens `/runs/ID/events` and counts the messages that arrive until the connection ends.
async fn open_page(
    addr: String,
    run: String,
    messages: Arc<AtomicUsize>,
    reloads: Arc<AtomicUsize>,
) -> Result<()> {
    let mut stream = TcpStream::connect(&addr).await?;
    stream
        .write_all(format!("GET /runs/{run}/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n").as_bytes())
        .await?;
    let mut buf = vec![0u8; 64 << 10];
    let mut carry = String::new();
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        carry.push_str(&String::from_utf8_lossy(&buf[..n]));
        while let Some(end) = carry.find("\n\n") {
            let message: String = carry.drain(..end + 2).collect();
            if message.contains("event: stages") {
                messages.fetch_add(1, Ordering::Relaxed);
            } else if message.contains("event: reload") {
                reloads.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Waits until `run` ends; it must succeed.
async fn wait_for_end(
    engine: &EngineHandle,
    mut events: tokio::sync::broadcast::Receiver<Arc<EngineEvent>>,
    run: &RunId,
) -> Result<()> {
    let state = tokio::time::timeout(RUN_LIMIT, async {
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let EngineEvent::Run(r) = &*e
                        && r.id == *run
                        && r.state.is_final()
                    {
                        return Ok(r.state);
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    if let Some(r) = engine.store().get_run(run)?
                        && r.state.is_final()
                    {
                        return Ok(r.state);
                    }
                }
                Err(RecvError::Closed) => bail!("the engine stopped"),
            }
        }
    })
    .await
    .context("the run did not end in time")??;
    ensure!(state == RunState::Succeeded, "run {run} ended {state:?}");
    Ok(())
}

struct Bench {
    scheduler: InProcessScheduler,
    http: String,
    client: pb::vishwa_client::VishwaClient<tonic::transport::Channel>,
    data: tempfile::TempDir,
    workers: usize,
}

impl Bench {
    async fn start() -> Result<Bench> {
        let data = tempfile::Builder::new()
            .prefix("vishwa-bench-console-")
            .tempdir()?;
        let scheduler = InProcessScheduler::start(SchedulerConfig {
            data_dir: data.path().join("scheduler"),
            ..SchedulerConfig::default()
        })
        .await?;
        let http = scheduler
            .http_url
            .clone()
            .context("the scheduler serves no HTTP port")?
            .trim_start_matches("http://")
            .to_owned();
        let client = connect_client(&scheduler.url).await?;
        Ok(Bench {
            scheduler,
            http,
            client,
            data,
            workers: 0,
        })
    }

    fn engine(&self) -> &EngineHandle {
        &self.scheduler.scheduler().engine
    }

    fn spawn_worker(&mut self) -> InProcessWorker {
        self.workers += 1;
        InProcessWorker::spawn(
            &self.scheduler.url,
            &format!("console-bench-{}", self.workers),
            SLOTS,
            &[],
            self.data.path().join(format!("cache-{}", self.workers)),
            BenchExecutor::new(Hold::Nothing),
        )
    }

    async fn submit(&mut self, yaml: String) -> Result<String> {
        let dag = self
            .client
            .submit_dag(pb::SubmitDagRequest {
                file_name: "bench.yaml".into(),
                source: yaml,
                ..Default::default()
            })
            .await?
            .into_inner()
            .dag
            .context("no DAG")?;
        Ok(dag.name)
    }

    async fn trigger(&mut self, dag: &str) -> Result<RunId> {
        let run = self
            .client
            .trigger_run(pb::TriggerRunRequest {
                dag: dag.to_owned(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .run
            .context("no run")?;
        Ok(RunId(run.run_id))
    }

    /// Runs `dag` once with `pages` run pages open from before a worker connects; returns
    /// the wall time from the worker's start to the run's end, and the page messages.
    async fn fan_out(&mut self, dag: &str, pages: usize) -> Result<(Duration, usize, usize)> {
        let run = self.trigger(dag).await?;
        let (messages, reloads) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let readers: Vec<_> = (0..pages)
            .map(|_| {
                tokio::spawn(open_page(
                    self.http.clone(),
                    run.0.clone(),
                    messages.clone(),
                    reloads.clone(),
                ))
            })
            .collect();
        // Every page is subscribed before the run moves.
        let (status, _, _) = get(&self.http, &format!("/runs/{run}")).await?;
        ensure!(status == 200, "the run page answered {status}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let events = self.engine().subscribe();
        let start = Instant::now();
        let worker = self.spawn_worker();
        wait_for_end(self.engine(), events, &run).await?;
        let wall = start.elapsed();
        // Let the pages take the last events, then close them.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for r in readers {
            r.abort();
        }
        worker.stop().await?;
        Ok((
            wall,
            messages.load(Ordering::Relaxed),
            reloads.load(Ordering::Relaxed),
        ))
    }
}

/// Writes `count` finished runs of `dag` (one stage each) straight into the store.
async fn seed_runs(engine: &EngineHandle, dag: &str, version: &str, count: usize) -> Result<()> {
    let now = engine.clock().now_ms();
    for chunk in (0..count).collect::<Vec<_>>().chunks(1000) {
        let mut batch = WriteBatch::new();
        for &i in chunk {
            let created = now - (count - i) as i64 * 60_000;
            let state = if i % 7 == 0 {
                RunState::Failed
            } else {
                RunState::Succeeded
            };
            let run = RunRecord {
                id: RunId(format!("{dag}-seed-{i:05}")),
                dag: dag.to_owned(),
                dag_version: version.to_owned(),
                params: Default::default(),
                state,
                trigger: TriggerKind::Schedule,
                created_ms: created,
                started_ms: Some(created),
                finished_ms: Some(created + 30_000),
                message: None,
                logical_time_ms: Some(created),
                deadline_ms: None,
                cancel_requested: false,
                retries: Vec::new(),
                no_cache: false,
                assets: Vec::new(),
            };
            let mut stage = StageRecord::pending("only".to_owned(), Vec::new());
            stage.state = StageState::Succeeded {
                finished_ms: created + 30_000,
            };
            batch.put_stage(&run.id, stage);
            batch.put_run(run);
        }
        engine.store().commit(batch).await?;
    }
    Ok(())
}

struct Figures {
    big_page: Samples,
    big_bytes: usize,
    runs_page: Samples,
    runs_filtered: Samples,
    runs_bytes: usize,
    without: Samples,
    with: Samples,
    messages: usize,
    reloads: usize,
    chromium_load: Samples,
    chromium_interactive: Samples,
}

async fn measure(reps: usize) -> Result<Figures> {
    let mut bench = Bench::start().await?;
    let mut f = Figures {
        big_page: Samples::default(),
        big_bytes: 0,
        runs_page: Samples::default(),
        runs_filtered: Samples::default(),
        runs_bytes: 0,
        without: Samples::default(),
        with: Samples::default(),
        messages: 0,
        reloads: 0,
        chromium_load: Samples::default(),
        chromium_interactive: Samples::default(),
    };

    // The 10,000-instance run, finished.
    let big = bench
        .submit(fan_for_each("console-big", BIG_RUN, NOOP))
        .await?;
    let events = bench.engine().subscribe();
    let run = bench.trigger(&big).await?;
    let worker = bench.spawn_worker();
    wait_for_end(bench.engine(), events, &run).await?;
    worker.stop().await?;
    let stages = bench.engine().store().run_stages(&run)?.len();
    eprintln!("  big run {run}: {stages} instances");
    get(&bench.http, &format!("/runs/{run}")).await?;
    for _ in 0..reps {
        let (status, bytes, took) = get(&bench.http, &format!("/runs/{run}")).await?;
        ensure!(status == 200, "the run page answered {status}");
        f.big_page.push_duration(took);
        f.big_bytes = bytes;
    }
    eprintln!(
        "  run page: {:.0} ms, {} KB",
        f.big_page.median() * 1e3,
        f.big_bytes / 1024
    );

    // Chromium: navigation to the load event (scripts run, the event stream opened).
    let browser = Browser::start().await?;
    for _ in 0..reps {
        let start = Instant::now();
        browser
            .client
            .goto(&format!("http://{}/runs/{run}", bench.http))
            .await?;
        let took = start.elapsed();
        let timing = browser
            .client
            .execute("var n = performance.getEntriesByType('navigation')[0]; return [n.domInteractive, n.loadEventEnd];", vec![])
            .await?;
        let interactive = timing[0].as_f64().unwrap_or(f64::NAN) / 1e3;
        f.chromium_load.push_duration(took);
        f.chromium_interactive.push(interactive);
        browser.client.goto("about:blank").await?;
    }
    browser.close().await;
    eprintln!("  chromium: load {:.0} ms", f.chromium_load.median() * 1e3);

    // `/runs` over 10,000 runs.
    let record = bench.engine().store().get_dag(&big)?.context("the DAG")?;
    seed_runs(bench.engine(), &big, &record.version, MANY_RUNS).await?;
    get(&bench.http, "/runs").await?;
    for _ in 0..reps {
        let (status, bytes, took) = get(&bench.http, "/runs").await?;
        ensure!(status == 200, "/runs answered {status}");
        f.runs_page.push_duration(took);
        f.runs_bytes = bytes;
        let (status, _, took) =
            get(&bench.http, &format!("/runs?dag={big}&state=failed&page=3")).await?;
        ensure!(status == 200, "/runs?state=failed answered {status}");
        f.runs_filtered.push_duration(took);
    }
    eprintln!("  /runs: {:.0} ms", f.runs_page.median() * 1e3);

    // SSE fan-out: 1,000 instances with 0 and 100 pages open, alternating.
    let fan = bench
        .submit(fan_for_each("console-fan", FAN_RUN, NOOP))
        .await?;
    bench.fan_out(&fan, 0).await?;
    for rep in 0..reps {
        let order = if rep % 2 == 0 { [0, PAGES] } else { [PAGES, 0] };
        for pages in order {
            let (wall, messages, reloads) = bench.fan_out(&fan, pages).await?;
            eprintln!(
                "  {pages} pages: {:.3} s, {messages} messages, {reloads} reloads",
                wall.as_secs_f64()
            );
            if pages == 0 {
                f.without.push_duration(wall);
            } else {
                f.with.push_duration(wall);
                f.messages = messages;
                f.reloads += reloads;
            }
        }
    }
    bench.scheduler.stop().await?;
    Ok(f)
}

/// Runs the benchmark and renders its section.
pub(crate) fn run(reps: usize, date: &str) -> Result<Section> {
    let load = load_average();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let f = runtime.block_on(measure(reps))?;
    let ms = |s: &Samples| format!("{:.0} ms", s.median() * 1e3);
    let secs = |s: &Samples| format!("{:.3} s", s.median());
    let rate = |s: &Samples| (FAN_RUN + 2) as f64 / s.median();
    let body = format!(
        "## 12. The web console\n\n\
         `vishwa-bench console` ({date}, {reps} repetitions, medians; load {load}). A scheduler \
         in the bench process serves its HTTP port on loopback; one worker with {SLOTS} slots \
         whose executor finishes each stage at once. Server times are from the request's first \
         byte sent to the response's last byte received, over a fresh connection.\n\n\
         | what | figure | target |\n|---|---|---|\n\
         | `/runs/ID` of a finished run of {big} instances (`first` → {big_n}-item `for_each` → `last`) | {big_page} ({big_kb} KB) | < 300 ms |\n\
         | the same page in headless Chromium, navigation to the load event (scripts run, the event stream open) | {chrome} (DOM interactive at {interactive}) | < 2 s |\n\
         | `/runs` with {runs} runs (first page of 50) | {runs_page} ({runs_kb} KB) | < 300 ms |\n\
         | `/runs?dag=…&state=failed&page=3` over the same | {runs_filtered} | |\n\
         | a {fan}-instance run, no page open | {without} ({rate0:.0} stages/s) | |\n\
         | the same run with {pages} run pages on its event stream | {with} ({rate1:.0} stages/s, {ratio:.2}× the time) | |\n\n\
         With {pages} pages open each page got {messages} `stages` messages in the last repetition \
         (the console folds the changes of one engine turn into one message), {reloads} were told \
         to reload. The big run page shows one graph node and one timeline bar per stage (its \
         {big_n} instances are counted by state in the node) and the first 500 instances of the \
         table, with the rest a page away.\n\n\
         Rerun: `cargo run --release -p vishwa-bench -- console` (needs Debian's chromium and \
         chromium-driver: `scripts/ensure-chromium.sh`).",
        load = load_text(load),
        big = thousands(BIG_RUN + 2),
        big_n = thousands(BIG_RUN),
        big_page = ms(&f.big_page),
        big_kb = f.big_bytes / 1024,
        chrome = ms(&f.chromium_load),
        interactive = ms(&f.chromium_interactive),
        runs = thousands(MANY_RUNS),
        runs_page = ms(&f.runs_page),
        runs_kb = f.runs_bytes / 1024,
        runs_filtered = ms(&f.runs_filtered),
        fan = thousands(FAN_RUN + 2),
        without = secs(&f.without),
        rate0 = rate(&f.without),
        pages = PAGES,
        with = secs(&f.with),
        rate1 = rate(&f.with),
        ratio = f.with.median() / f.without.median(),
        messages = f.messages,
        reloads = f.reloads,
    );
    Ok(Section {
        id: "console",
        body,
    })
}
