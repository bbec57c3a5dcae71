//! Benchmark 9, artifacts: a 1 GB stage output handed to a stage on another worker through
//! the scheduler (`vishwa scheduler`, a child process), against a plain copy of the same file
//! over a loopback TCP socket in the same repetition; and a 1,000-item fan-out of no-op
//! stages: total time and the scheduler's memory.

use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use rand::RngCore;
use tonic::transport::Endpoint;
use vishwa_proto::v1 as pb;
use vishwa_worker::artifacts::{AttemptDirs, fetch_inputs, upload_outputs};

use crate::bundle::tcp_copy;
use crate::child::{Server, connect_client, free_local_addr, scheduler_args, wait_for};
use crate::cpu::{load_average, memory_of};
use crate::dags;
use crate::inproc::{BenchExecutor, Hold, InProcessWorker};
use crate::report::Section;
use crate::spread::{NOOP, run_dag};
use crate::stats::{Samples, load_text, ratio};

/// The output's size.
const BYTES: u64 = 1 << 30;
/// Items of the fan-out.
const FAN_OUT: usize = 1_000;
const LIMIT: Duration = Duration::from_secs(600);

/// The timings of one repetition, in seconds, and the fan-out's memory in bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Timings {
    upload: f64,
    download: f64,
    tcp: f64,
    fan_out: f64,
    rss_before: u64,
    peak_rss: u64,
}

/// Writes `bytes` of random data (a random 1 MiB block, repeated) to `path`.
pub(crate) fn write_output(path: &Path, bytes: u64) -> Result<()> {
    use std::io::Write as _;
    let mut block = vec![0u8; 1 << 20];
    rand::rng().fill_bytes(&mut block);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        block[0] = block[0].wrapping_add(1);
        file.write_all(&block[..n])?;
        left -= n as u64;
    }
    file.flush()?;
    Ok(())
}

async fn measure(vishwa: &Path, output: &Path, rep: usize) -> Result<Timings> {
    let dir = tempfile::Builder::new()
        .prefix("vishwa-bench-artifacts-")
        .tempdir()?;
    let addr = free_local_addr();
    let url = format!("http://{addr}");
    let args = scheduler_args(&dir.path().join("data"), addr, &[]);
    let mut scheduler = Server::spawn(vishwa, &args, &dir.path().join("scheduler.log"))?;
    let mut client = connect_client(&url, LIMIT).await?;
    let channel = Endpoint::from_shared(url.clone())?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let worker_api = pb::worker_api_client::WorkerApiClient::with_interceptor(
        channel,
        vishwa_worker::connect::BearerToken::default(),
    )
    .max_decoding_message_size(64 << 20)
    .max_encoding_message_size(64 << 20);
    // The producing worker's attempt folders, with the output in `out/`, and the consuming
    // worker's, on their own.
    let producer = AttemptDirs::create(&dir.path().join("worker-a"), "produce")?;
    let consumer = AttemptDirs::create(&dir.path().join("worker-b"), "consume")?;
    std::fs::hard_link(output, producer.output.join("big.bin"))
        .or_else(|_| std::fs::copy(output, producer.output.join("big.bin")).map(|_| ()))?;
    let copied = dir.path().join("copied.bin");
    let mut t = Timings::default();
    // Alternate which goes first, so neither always finds the page cache warmer.
    for artifact_first in [rep.is_multiple_of(2), !rep.is_multiple_of(2)] {
        if artifact_first {
            let start = Instant::now();
            let stored = upload_outputs(
                &worker_api,
                "bench-a",
                "attempt-a",
                &producer,
                &["big.bin".to_owned()],
                &[],
            )
            .await?;
            t.upload = start.elapsed().as_secs_f64();
            let stored = stored.into_iter().next().context("nothing uploaded")?;
            ensure!(stored.size == BYTES, "the upload lost bytes");
            let input = pb::ArtifactInput {
                stage: "produce".to_owned(),
                name: stored.name,
                digest: stored.digest,
                size: stored.size,
            };
            let start = Instant::now();
            fetch_inputs(
                &worker_api,
                ("bench-worker", "bench-attempt"),
                &consumer,
                &[input],
            )
            .await?;
            t.download = start.elapsed().as_secs_f64();
            let fetched = consumer.input.join("produce/big.bin");
            ensure!(
                std::fs::metadata(&fetched)?.len() == BYTES,
                "the download lost bytes"
            );
        } else {
            let (took, bytes) = tcp_copy(output, &copied).await?;
            ensure!(bytes == BYTES, "the TCP copy lost bytes");
            t.tcp = took.as_secs_f64();
        }
    }
    producer.remove();
    consumer.remove();
    let _ = std::fs::remove_file(&copied);

    // The fan-out: no-op stages on an in-process worker whose executor does nothing, so the
    // time is the scheduler's and the protocol's.
    let worker = InProcessWorker::spawn(
        &url,
        &format!("artifacts-{}-{rep}", std::process::id()),
        256,
        &[],
        dir.path().join("cache"),
        BenchExecutor::new(Hold::Nothing),
    );
    wait_for("the worker to register", LIMIT, || {
        let mut client = client.clone();
        async move {
            let workers = client
                .list_workers(pb::ListWorkersRequest {})
                .await
                .ok()?
                .into_inner()
                .workers;
            workers.iter().any(|w| w.connected).then_some(())
        }
    })
    .await?;
    let pid = scheduler.pid();
    let workers = [worker];
    t.rss_before = memory_of(pid)
        .context("the scheduler's memory is unreadable")?
        .rss;
    let yaml = dags::fan_for_each("fan", FAN_OUT, NOOP);
    let (run, _, _) = run_dag(&mut client, &yaml, &workers, pid).await?;
    t.peak_rss = memory_of(pid)
        .context("the scheduler's memory is unreadable")?
        .peak_rss;
    let summary = run.summary.context("the run has no summary")?;
    ensure!(run.stages.len() == FAN_OUT + 2, "the fan-out lost stages");
    t.fan_out = (summary.finished_ms - summary.started_ms) as f64 / 1000.0;
    for worker in workers {
        worker.stop().await?;
    }
    scheduler.check_alive()?;
    scheduler.stop(Duration::from_secs(10))?;
    Ok(t)
}

/// Runs the benchmark and returns its section of BENCHMARKS.md.
pub(crate) fn run(vishwa: &Path, reps: usize, date: &str) -> Result<Section> {
    let load = load_average();
    let source = tempfile::Builder::new()
        .prefix("vishwa-bench-artifacts-src-")
        .tempdir()?;
    let output = source.path().join("big.bin");
    write_output(&output, BYTES)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut all = Vec::new();
    for rep in 0..reps {
        let t = runtime.block_on(measure(vishwa, &output, rep))?;
        eprintln!(
            "  rep {}: upload {:.2} s, download {:.2} s, tcp {:.2} s, fan-out {:.2} s, peak {:.0} MB",
            rep + 1,
            t.upload,
            t.download,
            t.tcp,
            t.fan_out,
            t.peak_rss as f64 / 1e6
        );
        all.push(t);
    }
    let body = render(&all, load, date);
    println!("{body}");
    Ok(Section {
        id: "artifacts",
        body,
    })
}

fn median(all: &[Timings], f: impl Fn(&Timings) -> f64) -> f64 {
    let mut s = Samples::default();
    all.iter().for_each(|t| s.push(f(t)));
    s.median()
}

fn render(all: &[Timings], load: Option<f64>, date: &str) -> String {
    let gb = BYTES as f64 / 1e9;
    let upload = median(all, |t| t.upload);
    let download = median(all, |t| t.download);
    let handed = median(all, |t| t.upload + t.download);
    let tcp = median(all, |t| t.tcp);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## 9. Artifacts: a 1 GB output to another worker, and a 1,000-item fan-out\n\n{ABOUT}\n\n\
         Measured {date} (load average {} at the start): {} repetitions, each on a fresh \
         scheduler, the artifact path and the TCP copy interleaved; medians.\n\n\
         | step | median | throughput | vs the TCP copy |\n|---|---:|---:|---:|",
        load_text(load),
        all.len()
    );
    for (label, at) in [
        (
            "upload: worker → scheduler (`UploadArtifact`, hashed on both ends, fsync)",
            upload,
        ),
        (
            "download: scheduler → other worker (`FetchArtifact`, verified)",
            download,
        ),
        (
            "**output handed to the next stage** (upload + download)",
            handed,
        ),
        ("**plain TCP copy**, file → loopback socket → file", tcp),
    ] {
        let _ = writeln!(
            out,
            "| {label} | {at:.2} s | {:.0} MB/s | {} |",
            gb * 1e3 / at,
            ratio(at / tcp)
        );
    }
    let _ = writeln!(
        out,
        "\n| fan-out of {FAN_OUT} no-op stages | median |\n|---|---:|\n\
         | total time (run started → run finished) | {:.2} s |\n\
         | scheduler resident memory before the run | {:.0} MB |\n\
         | scheduler peak resident memory | {:.0} MB |",
        median(all, |t| t.fan_out),
        median(all, |t| t.rss_before as f64) / 1e6,
        median(all, |t| t.peak_rss as f64) / 1e6,
    );
    let _ = writeln!(
        out,
        "\nHanding a 1 GB output to the next stage takes {} the TCP copy's time.",
        ratio(handed / tcp)
    );
    out
}

const ABOUT: &str = "What is measured: a 1 GiB file of random data in a producing \
attempt's `out/` folder is uploaded by the worker code that runs after a stage exits 0 \
(`vishwa_worker::artifacts::upload_outputs`: it reads the file in 1 MiB chunks, hashes it as it \
streams, and sends the digest last) to `vishwa scheduler` (release build, a child process), which \
hashes it as it arrives, writes it to a temporary file, syncs it and renames it into \
`artifacts/sha256/`. A second attempt's folders, as on another worker (same host, no shared \
folder), then fetch it with the code a worker runs before a stage starts \
(`fetch_inputs`: `FetchArtifact` streamed into `in/produce/big.bin`, hashed and checked against \
the digest). The baseline copies the same file over a plain tokio `TcpStream` on loopback into a \
file, in the same repetition. The fan-out is `first` → 1,000 `for_each` instances → `last`, \
no-op stages on an in-process worker whose executor returns at once, so it measures the \
scheduler, the store and the protocol, not Docker.";
