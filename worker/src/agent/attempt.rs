//! One attempt's lifecycle: take a folder pair, bring in its files, run it through the
//! right executor (checking what it may mount), send out its outputs, wait for its log, and
//! report its result, retried until the scheduler takes it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use vishwa_proto::v1 as pb;

use super::config::Executors;
use super::logs::forward_events;
use super::retry::{Delivery, with_patience};
use super::shared::Shared;
use super::transfer::{Produced, bring_in, send_out};
use crate::api::convert::{ExecutorChoice, result_request, task_spec};
use crate::artifacts::{AttemptDirPool, AttemptDirs, CONTAINER_IN, CONTAINER_OUT};
use crate::bundle::BundleCache;
use crate::connect::WorkerClient as Client;
use crate::executor::{ExecEvent, ExecutorError, ExitReport, MountSpec, TaskSpec};

/// Events buffered per attempt before the executor waits.
const EVENT_BUFFER: usize = 256;

/// One attempt on this worker.
pub(super) struct Attempt {
    pub(super) client: Client,
    pub(super) worker_id: String,
    /// Labels what this attempt starts, so a restart of this worker can find it.
    pub(super) owner: String,
    pub(super) executors: Executors,
    pub(super) bundles: Arc<BundleCache>,
    /// Where each attempt gets its `in/` and `out/` folders.
    pub(super) attempt_dirs: Arc<AttemptDirPool>,
    pub(super) allow_process: bool,
    pub(super) allow_mounts: Vec<PathBuf>,
    pub(super) shared: Arc<Shared>,
}

impl Attempt {
    pub(super) async fn run(self, task: pb::Task, cancel: CancellationToken) {
        // Every event of the attempt carries its run, stage and worker (JSON logs).
        let span = tracing::info_span!(
            "attempt",
            run = %task.run_id,
            stage = %task.stage,
            worker = %self.worker_id,
            attempt = %task.attempt_id,
        );
        tracing::Instrument::instrument(self.run_in_span(task, cancel), span).await;
    }

    async fn run_in_span(mut self, task: pb::Task, cancel: CancellationToken) {
        let (choice, mut spec) = task_spec(&task, &self.owner);
        tracing::info!(
            run = %task.run_id,
            stage = %task.stage,
            worker = %self.worker_id,
            attempt = %spec.attempt_id,
            "attempt starting"
        );
        let (events_tx, events_rx) = mpsc::channel(EVENT_BUFFER);
        let forwarder = tokio::spawn(forward_events(
            self.client.clone(),
            self.worker_id.clone(),
            task.clone(),
            events_rx,
            cancel.clone(),
        ));
        let mut produced = Produced::default();
        let dirs = self.attempt_dirs.acquire();
        let result = if cancel.is_cancelled() {
            Ok(ExitReport::Cancelled)
        } else {
            match &dirs {
                Ok(dirs) => {
                    self.prepare_and_execute(
                        choice,
                        &mut spec,
                        &task,
                        dirs,
                        events_tx,
                        cancel,
                        &mut produced,
                    )
                    .await
                }
                Err(e) => Err(ExecutorError::Io(e.to_string())),
            }
        };
        // Every output chunk is stored before the result is reported.
        if let Err(e) = forwarder.await {
            warn!(attempt = %spec.attempt_id, error = %e, "log forwarding failed");
        }
        tracing::info!(
            run = %task.run_id,
            stage = %task.stage,
            worker = %self.worker_id,
            attempt = %spec.attempt_id,
            outcome = match &result {
                Ok(report) => format!("{report:?}"),
                Err(e) => format!("error: {e}"),
            },
            "attempt ended"
        );
        let metrics = crate::metrics::metrics();
        match &result {
            Ok(ExitReport::Exited { code }) => metrics.ended("exit", Some(*code)),
            Ok(ExitReport::TimedOut) => metrics.ended("timed_out", None),
            Ok(ExitReport::Cancelled) => metrics.ended("cancelled", None),
            Err(_) => metrics.ended("error", None),
        }
        self.report(&spec, &result, produced).await;
        if let Ok(dirs) = dirs {
            self.attempt_dirs.release(dirs);
        }
        self.shared.running().remove(&spec.attempt_id);
    }

    /// Fetches the bundle and the inputs, runs the attempt, and after exit 0 reads its
    /// metrics and uploads its declared outputs (before the success is reported).
    #[allow(clippy::too_many_arguments)]
    async fn prepare_and_execute(
        &self,
        choice: ExecutorChoice,
        spec: &mut TaskSpec,
        task: &pb::Task,
        dirs: &AttemptDirs,
        events: mpsc::Sender<ExecEvent>,
        cancel: CancellationToken,
        produced: &mut Produced,
    ) -> Result<ExitReport, ExecutorError> {
        bring_in(
            &self.client,
            &self.worker_id,
            &self.bundles,
            task,
            spec,
            dirs,
            &events,
        )
        .await?;
        let report = self
            .execute(choice, spec, Some(dirs), events.clone(), cancel)
            .await?;
        if report != (ExitReport::Exited { code: 0 }) {
            return Ok(report);
        }
        *produced = send_out(&self.client, &self.worker_id, task, dirs, &events).await?;
        Ok(report)
    }

    async fn execute(
        &self,
        choice: ExecutorChoice,
        spec: &TaskSpec,
        io: Option<&AttemptDirs>,
        events: mpsc::Sender<ExecEvent>,
        cancel: CancellationToken,
    ) -> Result<ExitReport, ExecutorError> {
        for mount in &spec.mounts {
            check_mount_allowed(&mount.host, &self.allow_mounts, &self.worker_id)?;
        }
        let executor = match choice {
            ExecutorChoice::Process if !self.allow_process => {
                return Err(ExecutorError::Spawn {
                    program: "process stage".to_owned(),
                    reason: format!(
                        "worker {} does not run `executor: process` stages; start it with \
                         --allow-process or run the stage in Docker",
                        self.worker_id
                    ),
                });
            }
            ExecutorChoice::Process => self.executors.process.clone(),
            ExecutorChoice::Docker => self.executors.docker.clone(),
        };
        let Some(executor) = executor else {
            return Err(ExecutorError::Docker(format!(
                "worker {} cannot reach a Docker engine",
                self.worker_id
            )));
        };
        match io {
            // The attempt's own folders are the worker's, not the stage's: no allow-list.
            Some(dirs) => {
                let spec = with_io_dirs(choice, spec, dirs);
                executor.run(&spec, events, cancel).await
            }
            None => executor.run(spec, events, cancel).await,
        }
    }

    async fn report(
        &mut self,
        spec: &TaskSpec,
        result: &Result<ExitReport, ExecutorError>,
        produced: Produced,
    ) {
        let request = result_request(
            &self.worker_id,
            spec,
            result,
            produced.outputs,
            produced.metrics,
        );
        let client = &mut self.client;
        let delivered = with_patience(&spec.attempt_id, "reporting the result", || {
            let mut client = client.clone();
            let request = request.clone();
            async move { client.report_result(request).await.map(|_| ()) }
        })
        .await;
        match delivered {
            Delivery::Refused => {
                debug!(attempt = %spec.attempt_id, "result refused: the attempt is no longer current")
            }
            Delivery::GaveUp => warn!(attempt = %spec.attempt_id, "gave up reporting the result"),
            Delivery::Done => {}
        }
    }
}

/// The task as the executor takes it, with the attempt's folders at `/vishwa/in` (read-only)
/// and `/vishwa/out`; a process stage finds them through `VISHWA_IN` and `VISHWA_OUT`, and
/// one without a DAG folder runs in the attempt's emptied `work/` folder (reused like `in/`
/// and `out/`, so a chain of short stages makes no directory per attempt).
fn with_io_dirs(choice: ExecutorChoice, spec: &TaskSpec, dirs: &AttemptDirs) -> TaskSpec {
    let mut spec = spec.clone();
    match choice {
        ExecutorChoice::Docker => {
            spec.mounts.push(MountSpec {
                host: dirs.input.clone(),
                container: CONTAINER_IN.to_owned(),
                read_only: true,
            });
            spec.mounts.push(MountSpec {
                host: dirs.output.clone(),
                container: CONTAINER_OUT.to_owned(),
                read_only: false,
            });
            spec.env.insert("VISHWA_IN".into(), CONTAINER_IN.into());
            spec.env.insert("VISHWA_OUT".into(), CONTAINER_OUT.into());
        }
        ExecutorChoice::Process => {
            spec.env.insert(
                "VISHWA_IN".into(),
                dirs.input.to_string_lossy().into_owned(),
            );
            spec.env.insert(
                "VISHWA_OUT".into(),
                dirs.output.to_string_lossy().into_owned(),
            );
            // Without it, the executor makes a scratch directory of its own.
            if spec.local_dir.is_none()
                && let Ok(work) = dirs.work_dir()
            {
                spec.local_dir = Some(work.to_path_buf());
            }
        }
    }
    spec
}

/// Refuses a host path that is not at or below one of the worker's allowed paths. Paths are
/// resolved first, so a symlink cannot lead out of an allowed folder.
fn check_mount_allowed(
    host: &Path,
    allowed: &[PathBuf],
    worker: &str,
) -> Result<(), ExecutorError> {
    let refuse = |reason: String| ExecutorError::MountRefused {
        host: host.display().to_string(),
        reason,
    };
    let resolved = host
        .canonicalize()
        .map_err(|e| refuse(format!("it cannot be resolved on worker {worker}: {e}")))?;
    let permitted = allowed
        .iter()
        .filter_map(|a| a.canonicalize().ok())
        .any(|a| resolved.starts_with(&a));
    if permitted {
        Ok(())
    } else {
        Err(refuse(format!(
            "worker {worker} does not allow it; start the worker with --allow-mount {}",
            host.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_are_refused_unless_under_an_allowed_path() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("data");
        std::fs::create_dir_all(allowed.join("sub")).unwrap();
        let outside = dir.path().join("secret");
        std::fs::create_dir_all(&outside).unwrap();
        let list = vec![allowed.clone()];
        assert!(check_mount_allowed(&allowed, &list, "w").is_ok());
        assert!(check_mount_allowed(&allowed.join("sub"), &list, "w").is_ok());
        let err = check_mount_allowed(&outside, &list, "w").unwrap_err();
        assert!(err.to_string().contains("--allow-mount"), "{err}");
        assert!(!err.is_transient());
        assert!(check_mount_allowed(&outside, &[], "w").is_err());
    }

    #[test]
    fn a_symlink_cannot_lead_out_of_an_allowed_path() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("data");
        let outside = dir.path().join("secret");
        std::fs::create_dir_all(&allowed).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, allowed.join("escape")).unwrap();
        let err = check_mount_allowed(&allowed.join("escape"), &[allowed], "w").unwrap_err();
        assert!(matches!(err, ExecutorError::MountRefused { .. }));
    }

    #[test]
    fn a_missing_host_path_is_refused_clearly() {
        let err = check_mount_allowed(Path::new("/no/such/path"), &[PathBuf::from("/")], "w")
            .unwrap_err();
        assert!(err.to_string().contains("cannot be resolved"), "{err}");
    }
}
