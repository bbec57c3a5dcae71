//! Worker agents inside the harness process (the real `run_worker`, real gRPC) whose executor
//! runs nothing: it finishes a stage at once, or holds it running until it is cancelled. It
//! counts what it was given and notes when its first task arrived, so a benchmark can watch
//! dispatch from the worker's side.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio_util::sync::CancellationToken;
use vishwa_integration_tests::inproc::{self, worker_config};
use vishwa_worker::Executors;
use vishwa_worker::executor::{
    EventSink, ExecEvent, Executor, ExecutorError, ExitReport, TaskSpec,
};

/// How long stopping a worker may take before it is abandoned (it only takes that long when
/// the scheduler is gone and its last reports cannot be delivered).
const STOP_LIMIT: Duration = Duration::from_secs(15);

/// Which stages an executor holds instead of finishing at once.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Hold {
    /// None: every stage reports its start, then exit code 0.
    Nothing,
    /// Every stage: it reports its start and runs until cancelled.
    Everything,
    /// Every stage except the one named.
    AllBut(&'static str),
}

/// An executor that runs nothing, as [`Hold`] says, and counts.
pub(crate) struct BenchExecutor {
    hold: Hold,
    first_task: OnceLock<Instant>,
    finished: AtomicUsize,
}

impl BenchExecutor {
    pub(crate) fn new(hold: Hold) -> Arc<BenchExecutor> {
        Arc::new(BenchExecutor {
            hold,
            first_task: OnceLock::new(),
            finished: AtomicUsize::new(0),
        })
    }

    /// When the first task reached this executor.
    pub(crate) fn first_task(&self) -> Option<Instant> {
        self.first_task.get().copied()
    }

    /// Stages finished at once so far.
    pub(crate) fn finished(&self) -> usize {
        self.finished.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl Executor for BenchExecutor {
    async fn run(
        &self,
        task: &TaskSpec,
        events: EventSink,
        cancel: CancellationToken,
    ) -> Result<ExitReport, ExecutorError> {
        let _ = self.first_task.set(Instant::now());
        let _ = events
            .send(ExecEvent::Started {
                handle: "bench".to_owned(),
            })
            .await;
        let hold = match self.hold {
            Hold::Nothing => false,
            Hold::Everything => true,
            Hold::AllBut(stage) => task.stage != stage,
        };
        if !hold {
            self.finished.fetch_add(1, Ordering::SeqCst);
            return Ok(ExitReport::Exited { code: 0 });
        }
        cancel.cancelled().await;
        Ok(ExitReport::Cancelled)
    }
}

/// A worker agent running on the harness's runtime.
pub(crate) struct InProcessWorker {
    pub(crate) executor: Arc<BenchExecutor>,
    worker: inproc::InProcessWorker,
}

impl InProcessWorker {
    /// Starts worker `name` with `slots` slots and `labels` against the scheduler at `url`;
    /// its stages run on `executor` (plugged in as the Docker executor, so DAGs use Docker
    /// stages).
    pub(crate) fn spawn(
        url: &str,
        name: &str,
        slots: u32,
        labels: &[(&str, &str)],
        cache_dir: PathBuf,
        executor: Arc<BenchExecutor>,
    ) -> InProcessWorker {
        let mut config = worker_config(url, name, slots, cache_dir);
        config.labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let executors = Executors {
            docker: Some(executor.clone() as Arc<dyn Executor>),
            process: None,
        };
        InProcessWorker {
            executor,
            worker: inproc::InProcessWorker::spawn(config, executors),
        }
    }

    /// Stops it: held stages are cancelled and reported; call it while the scheduler is up.
    pub(crate) async fn stop(self) -> Result<()> {
        if !self.worker.stop_within(STOP_LIMIT).await? {
            eprintln!("  an in-process worker did not stop in {STOP_LIMIT:?}; abandoning it");
        }
        Ok(())
    }
}
