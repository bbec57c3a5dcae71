//! `vishwa run PATH`: one DAG to completion in this process. A scheduler (sled in a temporary
//! or given directory) and one worker are started here and talk real gRPC over loopback; the
//! run is watched like `trigger --watch` and its outcome is the exit code.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vishwa_proto::v1 as pb;
use vishwa_scheduler::dag::ExecutorKind;
use vishwa_scheduler::{Listeners, Scheduler, SchedulerConfig};
use vishwa_worker::{WorkerConfig, run_worker};

use super::client_verbs::print_outcome;
use super::serve::{bind_local_http, default_slots, local_executors};
use super::{exit_code_of, parse_params};
use crate::client::Client;
use crate::load::load_dag;
use crate::output::Format;
use crate::watch::{Style, watch_run};
use crate::{Global, exit};

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) log: super::LogArgs,
    /// A DAG file, or a folder holding dag.yaml and the files its stages use.
    path: PathBuf,
    /// Parameter override, `name=value`; repeatable.
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Keep the store in this directory [default: a temporary one, removed afterwards].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Stages run at once [default: number of CPUs].
    #[arg(long)]
    slots: Option<u32>,
    /// Show state changes only, not the stages' output.
    #[arg(long)]
    quiet: bool,
    /// A host path stages may mount (with what lies below it); repeatable.
    #[arg(long = "allow-mount", value_name = "PATH")]
    allow_mounts: Vec<PathBuf>,
    /// Run every stage, even those whose result is in the cache (with --data).
    #[arg(long)]
    no_cache: bool,
    /// Address of the HTTP port (health probes, metrics, console), or `off` [default:
    /// 127.0.0.1:7071, or a free port when that is taken].
    #[arg(
        long,
        env = "VISHWA_HTTP",
        value_name = "ADDR|off",
        value_parser = super::serve::parse_http_flag
    )]
    http: Option<super::serve::HttpFlag>,
}

pub(crate) async fn run(args: RunArgs, global: &Global) -> Result<u8> {
    let (dag, file) = load_dag(&args.path)?;
    let params = parse_params(&args.params)?;
    // Bad overrides are input errors: report them before starting anything.
    dag.resolve_params(&params)
        .map_err(|e| crate::load::Invalid(format!("error: {e}")))?;
    let temp;
    let data_dir = match args.data {
        Some(d) => d,
        None => {
            temp = tempfile::tempdir().context("cannot create a temporary data dir")?;
            temp.path().to_path_buf()
        }
    };
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot listen on loopback")?;
    let url = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let config = SchedulerConfig {
        data_dir,
        // One run of the DAG, now: its schedule, if any, does not start others.
        schedules: false,
        // One worker in this very process: no need to wait long for it to come back.
        heartbeat_interval: Duration::from_secs(1),
        lease: Duration::from_secs(5),
        http: None,
        ..SchedulerConfig::default()
    };
    let listeners = Listeners {
        grpc: listener,
        http: bind_local_http(args.http).await?,
    };
    let scheduler = Scheduler::start_on(&config, None, listeners, shutdown.clone()).await?;
    if let Some(http) = scheduler.http_url() {
        super::serve::note(
            args.log.log_format,
            &format!("vishwa run: console on {http} (and /healthz, /readyz, /metrics)"),
        );
    }
    let need_docker = dag
        .stages
        .iter()
        .any(|s| s.executor == ExecutorKind::Docker);
    let executors = local_executors(true, need_docker).await;
    if need_docker && executors.docker.is_none() {
        shutdown.cancel();
        anyhow::bail!(
            "{} has Docker stages but no Docker engine is reachable; start Docker or mark light stages `executor: process`",
            file.file_name
        );
    }
    let worker_shutdown = CancellationToken::new();
    let worker = tokio::spawn(run_worker(
        WorkerConfig {
            scheduler: url.clone(),
            name: "local".to_owned(),
            slots: args.slots.unwrap_or_else(default_slots),
            labels: Default::default(),
            allow_process: true,
            allow_mounts: args.allow_mounts,
            // Only reached with nothing left running, or on an error: stop at once.
            grace: Duration::ZERO,
            cache_dir: config.data_dir.join("worker-cache"),
            capacity: vishwa_worker::Capacity::detect(),
            token: None,
            tls_ca: None,
        },
        executors,
        worker_shutdown.clone(),
    ));

    let outcome = drive(
        &url,
        file,
        params,
        global.format,
        !args.quiet,
        args.no_cache,
    )
    .await;
    // The worker goes first, so it does not see its scheduler vanish.
    worker_shutdown.cancel();
    let _ = worker.await;
    shutdown.cancel();
    let _ = scheduler.wait().await;
    outcome
}

async fn drive(
    url: &str,
    file: crate::load::DagFile,
    params: std::collections::BTreeMap<String, String>,
    format: Format,
    with_logs: bool,
    no_cache: bool,
) -> Result<u8> {
    let mut client = Client::connect(url, None).await?;
    let submitted = client
        .submit(pb::SubmitDagRequest {
            file_name: file.file_name,
            source: file.source,
            local_dir: file
                .dir
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
            bundle_digest: String::new(),
        })
        .await?;
    let dag = submitted.dag.unwrap_or_default();
    let run = client
        .trigger(pb::TriggerRunRequest {
            dag: dag.name.clone(),
            params: params.into_iter().collect(),
            no_cache,
        })
        .await?;
    if format == Format::Table {
        outln!(
            "run {} of {} ({} stages)",
            run.run_id,
            dag.name,
            run.stages_total
        );
    }
    // Ctrl-C or SIGTERM cancels the run (its containers are stopped) and waits for it to end.
    let mut cancel_client = client.clone();
    let run_id = run.run_id.clone();
    let mut interrupts = super::serve::Interrupts::listen();
    let interrupt = tokio::spawn(async move {
        interrupts.next().await;
        eprintln!("cancelling run {run_id} (press Ctrl-C again to quit at once)");
        let _ = cancel_client.cancel(&run_id).await;
        interrupts.next().await;
        std::process::exit(i32::from(exit::CANCELLED));
    });
    let last = watch_run(
        &mut client,
        &run.run_id,
        with_logs,
        Style::choose(format, with_logs),
    )
    .await;
    interrupt.abort();
    let last = last?;
    if format == Format::Table {
        print_outcome(&last);
    }
    Ok(exit_code_of(last.state))
}
