//! Benchmark 13, S3 artifacts: a 1 GiB stage output handed from one worker to another
//! through an S3 bucket (`--artifacts s3://`, s3s-fs on loopback): the producer PUTs it
//! (multipart, presigned part URLs) and the consumer GETs it (presigned, re-hashed), the
//! scheduler only signing; against a plain copy of the same file over a loopback TCP socket in
//! the same repetition.

use std::fmt::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use tonic::transport::Endpoint;
use vishwa_integration_tests::inproc::InProcessScheduler;
use vishwa_integration_tests::s3::S3Server;
use vishwa_proto::v1 as pb;
use vishwa_scheduler::SchedulerConfig;
use vishwa_scheduler::artifacts::ArtifactsAt;
use vishwa_scheduler::blobs::s3::S3Location;
use vishwa_worker::artifacts::{AttemptDirs, fetch_inputs, upload_outputs};

use crate::artifacts::write_output;
use crate::bundle::tcp_copy;
use crate::cpu::load_average;
use crate::report::Section;
use crate::stats::{Samples, load_text, ratio};

/// The output's size.
const BYTES: u64 = 1 << 30;

#[derive(Debug, Clone, Copy, Default)]
struct Timings {
    upload: f64,
    download: f64,
    tcp: f64,
    scheduler_bytes: u64,
}

async fn measure(output: &Path, rep: usize) -> Result<Timings> {
    let dir = tempfile::Builder::new()
        .prefix("vishwa-bench-s3-")
        .tempdir()?;
    let s3 = S3Server::start("vishwa-bench").await?;
    let scheduler = InProcessScheduler::start(SchedulerConfig {
        data_dir: dir.path().join("data"),
        http: None,
        artifacts: ArtifactsAt::S3(
            S3Location::parse("s3://vishwa-bench/artifacts").map_err(anyhow::Error::msg)?,
        ),
        s3: Some(s3.settings()),
        ..SchedulerConfig::default()
    })
    .await?;
    let channel = Endpoint::from_shared(scheduler.url.clone())?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let worker_api = pb::worker_api_client::WorkerApiClient::with_interceptor(
        channel,
        vishwa_worker::connect::BearerToken::default(),
    );
    let producer = AttemptDirs::create(&dir.path().join("worker-a"), "produce")?;
    let consumer = AttemptDirs::create(&dir.path().join("worker-b"), "consume")?;
    std::fs::hard_link(output, producer.output.join("big.bin"))
        .or_else(|_| std::fs::copy(output, producer.output.join("big.bin")).map(|_| ()))?;
    let copied = dir.path().join("copied.bin");
    let mut t = Timings::default();
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
            fetch_inputs(&worker_api, ("bench-b", "attempt-b"), &consumer, &[input]).await?;
            t.download = start.elapsed().as_secs_f64();
            let fetched = consumer.input.join("produce/big.bin");
            ensure!(
                std::fs::metadata(&fetched)?.len() == BYTES,
                "the download lost bytes"
            );
            let _ = std::fs::remove_file(fetched);
        } else {
            let (took, bytes) = tcp_copy(output, &copied).await?;
            ensure!(bytes == BYTES, "the TCP copy lost bytes");
            t.tcp = took.as_secs_f64();
            let _ = std::fs::remove_file(&copied);
        }
    }
    let counters = scheduler.scheduler().artifact_counters();
    t.scheduler_bytes = counters.read() + counters.written();
    producer.remove();
    consumer.remove();
    scheduler.stop().await?;
    drop(s3);
    Ok(t)
}

/// Runs the benchmark and returns its section of BENCHMARKS.md.
pub(crate) fn run(reps: usize, date: &str) -> Result<Section> {
    let load = load_average();
    let source = tempfile::Builder::new()
        .prefix("vishwa-bench-s3-src-")
        .tempdir()?;
    let output = source.path().join("big.bin");
    write_output(&output, BYTES)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut all = Vec::new();
    for rep in 0..reps {
        let t = runtime.block_on(measure(&output, rep))?;
        eprintln!(
            "  rep {}: upload {:.2} s, download {:.2} s, tcp {:.2} s, scheduler bytes {}",
            rep + 1,
            t.upload,
            t.download,
            t.tcp,
            t.scheduler_bytes
        );
        ensure!(
            t.scheduler_bytes == 0,
            "the scheduler moved {} artifact bytes itself",
            t.scheduler_bytes
        );
        all.push(t);
    }
    let body = render(&all, load, date);
    println!("{body}");
    Ok(Section { id: "s3", body })
}

fn median(all: &[Timings], f: impl Fn(&Timings) -> f64) -> f64 {
    let mut s = Samples::default();
    all.iter().for_each(|t| s.push(f(t)));
    s.median()
}

const ABOUT: &str = "Rerun: `cargo run --release -p vishwa-bench -- s3` (needs `s3s-fs`: \
`scripts/ensure-s3s.sh`). A scheduler with `--artifacts s3://` over s3s-fs on loopback; the \
producer's worker code hashes the 1 GiB output and PUTs it in 64 MiB parts to presigned URLs; \
the consumer's worker code GETs it from a presigned URL, hashing while it writes to disk. The \
scheduler only signs URLs and checks sizes (its artifact byte counters stay at 0). The TCP copy \
streams the same file through a loopback socket into a file.";

fn render(all: &[Timings], load: Option<f64>, date: &str) -> String {
    let gb = BYTES as f64 / 1e9;
    let upload = median(all, |t| t.upload);
    let download = median(all, |t| t.download);
    let handed = median(all, |t| t.upload + t.download);
    let tcp = median(all, |t| t.tcp);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## 13. S3 artifacts: a 1 GiB output to another worker through the bucket\n\n{ABOUT}\n\n\
         Measured {date} (load average {} at the start): {} repetitions, each on a fresh \
         scheduler and bucket, the S3 path and the TCP copy interleaved; medians.\n\n\
         | step | median | throughput | TCP copy ÷ step (≥ 0.5× wanted) |\n|---|---:|---:|---:|",
        load_text(load),
        all.len()
    );
    for (label, at) in [
        ("upload: hash, then multipart PUT to the bucket", upload),
        ("download: GET from the bucket, verified", download),
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
            ratio(tcp / at)
        );
    }
    let _ = writeln!(
        out,
        "\nHanding a 1 GiB output to the next stage through S3 runs at {} the TCP copy's \
         throughput; the scheduler read and wrote 0 artifact bytes.",
        ratio(tcp / handed)
    );
    out
}
