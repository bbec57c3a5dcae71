//! A scheduler and a worker in the test process, talking real gRPC over loopback, with the
//! store in a real sled directory and stages in real Docker containers (and local processes).
//!
//! Each test starts its own [`TestCluster`]: the scheduler listens on port 0, its store lives in
//! a temporary directory that is removed with the cluster (or in one the test owns, to restart
//! a scheduler over it), and the client is connected before `start` returns.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use bollard::Docker;
use futures::StreamExt;
use tempfile::TempDir;
use tokio::time::Instant;
use tonic::transport::Channel;
use vishwa_proto::v1 as pb;
use vishwa_proto::v1::vishwa_client::VishwaClient;
use vishwa_scheduler::SchedulerConfig;

use crate::containers::remove_containers_of_run;
use crate::docker::connect_docker;
use crate::images::ensure_busybox_image;
use crate::inproc::{
    InProcessScheduler, InProcessWorker, docker_and_process_executors, worker_config,
};
use crate::names::unique_name;

/// How often [`TestCluster::wait_for_run_end`] asks for the run.
const RUN_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The worker's name in every test cluster.
pub const WORKER_NAME: &str = "it-worker";

/// A DAG name no other test (in this or a concurrent test process) uses: `prefix-<suffix>`.
/// Run ids start with the DAG's name, so container labels never mix runs of different tests.
pub fn unique_dag_name(prefix: &str) -> String {
    unique_name(prefix)
}

/// How to start a [`TestCluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The worker's slots.
    pub slots: u32,
    /// Keep the store here instead of in a temporary directory owned by the cluster.
    pub data_dir: Option<PathBuf>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            slots: 4,
            data_dir: None,
        }
    }
}

/// A running scheduler with one worker (Docker and process executors) and a connected client.
pub struct TestCluster {
    pub client: VishwaClient<Channel>,
    pub docker: Docker,
    /// The busybox test image, present in Docker.
    pub image: String,
    url: String,
    data_dir: PathBuf,
    _temp: Option<TempDir>,
    worker: Option<InProcessWorker>,
    scheduler: Option<InProcessScheduler>,
    /// Runs triggered through this cluster, whose containers a failed test removes.
    runs: Vec<String>,
}

impl TestCluster {
    /// Starts a scheduler over a fresh temporary store and a worker with 4 slots.
    pub async fn start() -> anyhow::Result<TestCluster> {
        Self::start_with(ClusterOptions::default()).await
    }

    /// Starts a scheduler and a worker as `options` say.
    pub async fn start_with(options: ClusterOptions) -> anyhow::Result<TestCluster> {
        let docker = connect_docker().await?;
        let image = ensure_busybox_image(&docker).await?;
        let (temp, data_dir) = match options.data_dir {
            Some(dir) => (None, dir),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("vishwa-it-")
                    .tempdir()
                    .context("creating the store's temporary directory")?;
                let dir = temp.path().to_path_buf();
                (Some(temp), dir)
            }
        };

        let scheduler = InProcessScheduler::start(SchedulerConfig {
            data_dir: data_dir.clone(),
            ..SchedulerConfig::default()
        })
        .await?;
        let url = scheduler.url.clone();

        let mut config = worker_config(
            &url,
            WORKER_NAME,
            options.slots,
            data_dir.join("worker-cache"),
        );
        config.allow_process = true;
        let worker = InProcessWorker::spawn(config, docker_and_process_executors().await?);

        let client = VishwaClient::connect(url.clone())
            .await
            .with_context(|| format!("connecting a client to {url}"))?;
        Ok(TestCluster {
            client,
            docker,
            image,
            url,
            data_dir,
            _temp: temp,
            worker: Some(worker),
            scheduler: Some(scheduler),
            runs: Vec::new(),
        })
    }

    /// The scheduler's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The directory of the scheduler's store.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Submits a DAG given as YAML text.
    pub async fn submit(&mut self, yaml: &str) -> anyhow::Result<pb::DagSummary> {
        let response = self
            .client
            .submit_dag(pb::SubmitDagRequest {
                file_name: "test-dag.yaml".to_owned(),
                source: yaml.to_owned(),
                local_dir: String::new(),
                bundle_digest: String::new(),
            })
            .await
            .context("SubmitDag")?
            .into_inner();
        response.dag.context("SubmitDag answered without the DAG")
    }

    /// Starts a run of `dag` with parameter overrides.
    pub async fn trigger(
        &mut self,
        dag: &str,
        params: &[(&str, &str)],
    ) -> anyhow::Result<pb::RunSummary> {
        let response = self
            .client
            .trigger_run(pb::TriggerRunRequest {
                dag: dag.to_owned(),
                params: params
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..Default::default()
            })
            .await
            .with_context(|| format!("TriggerRun {dag}"))?
            .into_inner();
        let run = response.run.context("TriggerRun answered without a run")?;
        self.runs.push(run.run_id.clone());
        Ok(run)
    }

    /// Submits `yaml` and starts a run of it with parameter overrides.
    pub async fn submit_and_trigger(
        &mut self,
        yaml: &str,
        params: &[(&str, &str)],
    ) -> anyhow::Result<pb::RunSummary> {
        let dag = self.submit(yaml).await?;
        self.trigger(&dag.name, params).await
    }

    /// The run as GetRun shows it now.
    pub async fn get_run(&mut self, run_id: &str) -> anyhow::Result<pb::Run> {
        Ok(self
            .client
            .get_run(pb::GetRunRequest {
                run_id: run_id.to_owned(),
            })
            .await
            .with_context(|| format!("GetRun {run_id}"))?
            .into_inner())
    }

    /// Polls GetRun until the run is in a final state; fails with the last snapshot otherwise.
    pub async fn wait_for_run_end(
        &mut self,
        run_id: &str,
        timeout: Duration,
    ) -> anyhow::Result<pb::Run> {
        self.wait_for_run(run_id, timeout, "its end", |run| {
            run_state(run).is_some_and(is_final)
        })
        .await
    }

    /// Polls GetRun until `condition` holds; fails with the last snapshot after `timeout`.
    pub async fn wait_for_run(
        &mut self,
        run_id: &str,
        timeout: Duration,
        what: &str,
        condition: impl Fn(&pb::Run) -> bool,
    ) -> anyhow::Result<pb::Run> {
        let deadline = Instant::now() + timeout;
        loop {
            let run = self.get_run(run_id).await?;
            if condition(&run) {
                return Ok(run);
            }
            if Instant::now() >= deadline {
                bail!(
                    "run {run_id} did not reach {what} within {timeout:?}; last seen:\n{}",
                    describe_run(&run)
                );
            }
            tokio::time::sleep(RUN_POLL_INTERVAL).await;
        }
    }

    /// Polls GetRun until `stage` is in `state`.
    pub async fn wait_for_stage_state(
        &mut self,
        run_id: &str,
        stage_name: &str,
        state: pb::StageState,
        timeout: Duration,
    ) -> anyhow::Result<pb::Run> {
        let what = format!("stage {stage_name} {}", state.as_str_name());
        self.wait_for_run(run_id, timeout, &what, |run| {
            run.stages
                .iter()
                .any(|s| s.name == stage_name && s.state == state as i32)
        })
        .await
    }

    /// Every stored log line of the run (or of one stage), as StreamLogs returns them without
    /// following.
    pub async fn logs(
        &mut self,
        run_id: &str,
        stage: Option<&str>,
    ) -> anyhow::Result<Vec<pb::LogLine>> {
        let mut stream = self
            .client
            .stream_logs(pb::StreamLogsRequest {
                run_id: run_id.to_owned(),
                stage: stage.unwrap_or_default().to_owned(),
                follow: false,
            })
            .await
            .with_context(|| format!("StreamLogs {run_id}"))?
            .into_inner();
        let mut lines = Vec::new();
        while let Some(line) = stream.next().await {
            lines.push(line.context("StreamLogs stream")?);
        }
        Ok(lines)
    }

    /// Stops the worker, then the scheduler, and waits until both are gone (the store is
    /// closed afterwards, so a new scheduler may open it).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(worker) = self.worker.take() {
            worker.stop().await?;
        }
        if let Some(scheduler) = self.scheduler.take() {
            scheduler.stop().await?;
        }
        Ok(())
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // A test that failed midway still stops its worker (which kills its containers) and
        // its scheduler.
        drop(self.worker.take());
        drop(self.scheduler.take());
        // The test's runtime ends with the test, taking the worker's own cleanup with it: remove
        // what a failed test left running from a runtime of our own. A passing test stopped
        // the cluster and checked that nothing was left, so there is nothing to hide.
        if std::thread::panicking() && !self.runs.is_empty() {
            let runs = std::mem::take(&mut self.runs);
            let cleanup = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async {
                    let docker = connect_docker().await?;
                    for run in &runs {
                        remove_containers_of_run(&docker, run).await?;
                    }
                    Ok::<_, anyhow::Error>(())
                })
            });
            if let Ok(Err(error)) = cleanup.join() {
                eprintln!("cleaning up the containers of a failed test: {error:#}");
            }
        }
    }
}

/// The run's state, if it is a known one.
pub fn run_state(run: &pb::Run) -> Option<pb::RunState> {
    let summary = run.summary.as_ref()?;
    pb::RunState::try_from(summary.state).ok()
}

/// Whether a run state is final.
pub fn is_final(state: pb::RunState) -> bool {
    matches!(
        state,
        pb::RunState::Succeeded | pb::RunState::Failed | pb::RunState::Cancelled
    )
}

/// The run id of a run.
pub fn run_id(run: &pb::Run) -> &str {
    run.summary.as_ref().map_or("", |s| s.run_id.as_str())
}

/// One stage instance of a run; panics naming the instances there are.
pub fn stage<'a>(run: &'a pb::Run, name: &str) -> &'a pb::StageRun {
    run.stages
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("run has no stage {name}:\n{}", describe_run(run)))
}

/// A stage's state.
pub fn stage_state(run: &pb::Run, name: &str) -> pb::StageState {
    pb::StageState::try_from(stage(run, name).state).unwrap_or(pb::StageState::Unspecified)
}

/// The bytes one stage wrote to `stream`, in order (attempt, then sequence number).
pub fn output_of(lines: &[pb::LogLine], stage: &str, stream: pb::LogStream) -> Vec<u8> {
    let mut chunks: Vec<&pb::LogLine> = lines
        .iter()
        .filter(|l| l.stage == stage && l.stream == stream as i32)
        .collect();
    chunks.sort_by_key(|l| (l.attempt, l.seq));
    chunks.iter().flat_map(|l| l.data.iter().copied()).collect()
}

/// What one stage wrote to stdout, as text.
pub fn stdout_text(lines: &[pb::LogLine], stage: &str) -> String {
    String::from_utf8_lossy(&output_of(lines, stage, pb::LogStream::Stdout)).into_owned()
}

/// A run in a few lines, for failure messages.
pub fn describe_run(run: &pb::Run) -> String {
    let mut text = match &run.summary {
        Some(s) => format!(
            "run {} {} {}\n",
            s.run_id,
            pb::RunState::try_from(s.state).map_or("?", |s| s.as_str_name()),
            s.message
        ),
        None => "run without summary\n".to_owned(),
    };
    for s in &run.stages {
        let state = pb::StageState::try_from(s.state).map_or("?", |s| s.as_str_name());
        text.push_str(&format!("  {} {state} {}\n", s.name, s.message));
        for a in &s.attempts {
            text.push_str(&format!(
                "    attempt {} {} exit={} {}\n",
                a.number,
                a.outcome,
                if a.has_exit_code {
                    a.exit_code.to_string()
                } else {
                    "-".to_owned()
                },
                a.message
            ));
        }
    }
    text
}

/// A DAG file: `name: <name>` followed by `body`, with `@IMAGE@` in it replaced by `image`.
pub fn dag_yaml(name: &str, image: &str, body: &str) -> String {
    format!("name: {name}\n{}", body.replace("@IMAGE@", image))
}
