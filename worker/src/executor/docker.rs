//! The Docker executor: one container per attempt, through bollard.
//!
//! Each attempt gets a container named after its run, stage and attempt, labelled `vishwa.*` so
//! that a restarted worker can find it again, with the DAG's files bind-mounted read-only at
//! [`CONTAINER_WORKDIR`](super::CONTAINER_WORKDIR). The executor attaches to the container
//! before starting it, so output is streamed from the first byte on and exactly as written: the
//! `logs` endpoint is not used because the default json-file log driver replaces bytes that are
//! not UTF-8. The container is removed whatever happens: by the run on every path it returns
//! through, and by a drop guard when the run's future is dropped halfway.

use std::collections::HashMap;
use std::pin::pin;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::ContainerWaitResponse;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder,
};
use futures::{Stream, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, warn};

use super::support::{offer_system_line, send_system_line, sleep_until_deadline};
use super::{
    EventSink, ExecEvent, Executor, ExecutorError, ExitReport, OutputChunk, OutputStream, TaskSpec,
};
use guard::{ContainerGuard, force_remove};
use spec::{program_name, split_image_reference};

mod guard;
mod spec;

pub use spec::{container_body, container_name};

/// Label set to `true` on every container Vishwa creates.
pub const LABEL_MANAGED: &str = "vishwa.managed";
/// Label holding the run id.
pub const LABEL_RUN: &str = "vishwa.run";
/// Label holding the DAG's name.
pub const LABEL_DAG: &str = "vishwa.dag";
/// Label holding the stage's name.
pub const LABEL_STAGE: &str = "vishwa.stage";
/// Label holding the attempt id.
pub const LABEL_ATTEMPT: &str = "vishwa.attempt";
/// Label naming the worker that started a container, so it can clean up after a crash.
pub const LABEL_WORKER: &str = "vishwa.worker";

/// Default time between SIGTERM and SIGKILL when an attempt is stopped.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(1);

/// How long to wait for a killed container to be reported as exited.
const EXIT_AFTER_KILL_LIMIT: Duration = Duration::from_secs(5);
/// How long output may keep arriving after the container exited (it is normally at most a few
/// frames; the limit only protects against a connection that never closes).
const OUTPUT_DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Runs each attempt in its own Docker container.
///
/// On timeout or cancellation the container gets SIGTERM, then SIGKILL after the kill grace
/// ([`DEFAULT_KILL_GRACE`] unless set with [`DockerExecutor::with_kill_grace`]). The timeout
/// counts from the container's start: pulling the image is not the stage's time.
#[derive(Debug, Clone)]
pub struct DockerExecutor {
    docker: Docker,
    kill_grace: Duration,
}

/// A container created by Vishwa, as found through its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedContainer {
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    pub run_id: Option<String>,
    pub dag: Option<String>,
    pub stage: Option<String>,
    pub attempt_id: Option<String>,
    /// Docker's state: `created`, `running`, `exited`, ...
    pub state: Option<String>,
}

impl DockerExecutor {
    /// Connects to the local Docker engine (`DOCKER_HOST` or the default socket) and negotiates
    /// the API version, so that engines older than bollard's default version are understood.
    pub async fn connect() -> Result<Self, ExecutorError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|error| docker_error("cannot set up the docker client", error))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|error| docker_error("cannot reach the docker engine", error))?;
        Ok(Self::from_client(docker))
    }

    /// Uses an existing client as it is (no version negotiation).
    pub fn from_client(docker: Docker) -> Self {
        Self {
            docker,
            kill_grace: DEFAULT_KILL_GRACE,
        }
    }

    /// Sets the time between SIGTERM and SIGKILL when an attempt is stopped; zero sends SIGKILL
    /// straight away.
    pub fn with_kill_grace(mut self, kill_grace: Duration) -> Self {
        self.kill_grace = kill_grace;
        self
    }

    /// The Docker client this executor uses.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Lists every container labelled `vishwa.managed=true`, running or not.
    pub async fn list_managed_containers(&self) -> Result<Vec<ManagedContainer>, ExecutorError> {
        self.list_containers_labelled(&[format!("{LABEL_MANAGED}=true")])
            .await
    }

    /// Force-removes every container of one attempt (after a worker restart, or for an attempt
    /// whose lease is gone) and returns how many were removed.
    pub async fn remove_containers_of_attempt(
        &self,
        attempt_id: &str,
    ) -> Result<usize, ExecutorError> {
        let containers = self
            .list_containers_labelled(&[
                format!("{LABEL_MANAGED}=true"),
                format!("{LABEL_ATTEMPT}={attempt_id}"),
            ])
            .await?;
        let mut removed = 0;
        for container in &containers {
            match self
                .docker
                .remove_container(&container.id, Some(force_remove()))
                .await
            {
                Ok(()) => removed += 1,
                Err(error) if is_status(&error, 404) => {}
                Err(error) => {
                    return Err(docker_error(
                        &format!("cannot remove container {}", container.name),
                        error,
                    ));
                }
            }
        }
        Ok(removed)
    }

    /// Force-removes every container a worker of this name left behind (it crashed, or was
    /// killed, while they ran) and returns how many were removed.
    pub async fn remove_containers_of_worker(&self, worker: &str) -> Result<usize, ExecutorError> {
        let containers = self
            .list_containers_labelled(&[
                format!("{LABEL_MANAGED}=true"),
                format!("{LABEL_WORKER}={worker}"),
            ])
            .await?;
        let mut removed = 0;
        for container in &containers {
            match self
                .docker
                .remove_container(&container.id, Some(force_remove()))
                .await
            {
                Ok(()) => removed += 1,
                Err(error) if is_status(&error, 404) => {}
                Err(error) => {
                    return Err(docker_error(
                        &format!("cannot remove container {}", container.name),
                        error,
                    ));
                }
            }
        }
        Ok(removed)
    }

    async fn list_containers_labelled(
        &self,
        labels: &[String],
    ) -> Result<Vec<ManagedContainer>, ExecutorError> {
        let filters = HashMap::from([("label", labels.to_vec())]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|error| docker_error("cannot list containers", error))?;
        Ok(summaries
            .into_iter()
            .map(|summary| {
                let labels = summary.labels.unwrap_or_default();
                let name = summary
                    .names
                    .and_then(|names| names.into_iter().next())
                    .unwrap_or_default();
                ManagedContainer {
                    id: summary.id.unwrap_or_default(),
                    name: name.trim_start_matches('/').to_string(),
                    run_id: labels.get(LABEL_RUN).cloned(),
                    dag: labels.get(LABEL_DAG).cloned(),
                    stage: labels.get(LABEL_STAGE).cloned(),
                    attempt_id: labels.get(LABEL_ATTEMPT).cloned(),
                    state: summary.state.map(|state| state.to_string()),
                }
            })
            .collect())
    }

    /// Makes sure the image is present: if-not-present pull policy.
    async fn ensure_image(&self, task: &TaskSpec, events: &EventSink) -> Result<(), ExecutorError> {
        let image = &task.image;
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(error) if is_status(&error, 404) => {}
            Err(error) => {
                return Err(docker_error(
                    &format!("cannot inspect image {image}"),
                    error,
                ));
            }
        }

        send_system_line(events, &format!("pulling image {image}")).await;
        let (repository, tag) = split_image_reference(image);
        let mut options = CreateImageOptionsBuilder::default().from_image(repository);
        if let Some(tag) = tag {
            options = options.tag(tag);
        }
        let pulling = Instant::now();
        let mut progress = self.docker.create_image(Some(options.build()), None, None);
        while let Some(step) = progress.next().await {
            if let Err(error) = step {
                return Err(ExecutorError::ImageUnavailable {
                    image: image.clone(),
                    reason: error_message(&error),
                });
            }
        }
        if let Err(error) = self.docker.inspect_image(image).await {
            return Err(ExecutorError::ImageUnavailable {
                image: image.clone(),
                reason: format!(
                    "the pull ended but the image is still missing: {}",
                    error_message(&error)
                ),
            });
        }
        crate::metrics::observe(&crate::metrics::metrics().image_pull, pulling.elapsed());
        send_system_line(events, &format!("pulled image {image}")).await;
        Ok(())
    }

    /// Creates the attempt's container; a container of the same attempt left by an earlier
    /// crash of the worker is removed first.
    async fn create_container(
        &self,
        task: &TaskSpec,
        events: &EventSink,
    ) -> Result<ContainerGuard, ExecutorError> {
        let name = container_name(task);
        let body = container_body(task)?;
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let creating = Instant::now();
        let created = match self
            .docker
            .create_container(Some(options.clone()), body.clone())
            .await
        {
            Err(error) if is_status(&error, 409) => {
                self.remove_stale_container(&name, task).await?;
                self.docker.create_container(Some(options), body).await
            }
            other => other,
        };
        let created = created.map_err(|error| match error {
            BollardError::DockerResponseServerError {
                status_code: 404,
                message,
            } => ExecutorError::ImageUnavailable {
                image: task.image.clone(),
                reason: message,
            },
            BollardError::DockerResponseServerError {
                status_code: 400..=499,
                message,
            } => ExecutorError::ContainerRejected { reason: message },
            error => docker_error(&format!("cannot create container {name}"), error),
        })?;
        crate::metrics::observe(
            &crate::metrics::metrics().container_create,
            creating.elapsed(),
        );
        for warning in created.warnings {
            send_system_line(events, &format!("docker: {warning}")).await;
        }
        debug!(attempt_id = %task.attempt_id, container = %name, "container created");
        Ok(ContainerGuard::new(self.docker.clone(), created.id))
    }

    /// Removes a container holding this attempt's name, but only if it belongs to this attempt.
    async fn remove_stale_container(
        &self,
        name: &str,
        task: &TaskSpec,
    ) -> Result<(), ExecutorError> {
        let stale = self
            .docker
            .inspect_container(name, None)
            .await
            .map_err(|error| docker_error(&format!("cannot inspect container {name}"), error))?;
        let owner = stale
            .config
            .and_then(|config| config.labels)
            .and_then(|labels| labels.get(LABEL_ATTEMPT).cloned());
        if owner.as_deref() != Some(task.attempt_id.as_str()) {
            return Err(ExecutorError::Docker(format!(
                "container name {name} is taken by a container that is not attempt {}'s",
                task.attempt_id
            )));
        }
        warn!(attempt_id = %task.attempt_id, container = %name, "removing a container left by an earlier run of this attempt");
        match self
            .docker
            .remove_container(name, Some(force_remove()))
            .await
        {
            Ok(()) => Ok(()),
            Err(error) if is_status(&error, 404) => Ok(()),
            Err(error) => Err(docker_error(
                &format!("cannot remove stale container {name}"),
                error,
            )),
        }
    }

    /// Attaches, starts, streams and waits: everything between create and remove.
    async fn run_container(
        &self,
        id: &str,
        task: &TaskSpec,
        events: &EventSink,
        cancel: &CancellationToken,
    ) -> Result<ExitReport, ExecutorError> {
        if cancel.is_cancelled() {
            return Ok(ExitReport::Cancelled);
        }
        // Attached before the start, so that no output is written before anyone listens.
        let attach_options = AttachContainerOptionsBuilder::default()
            .stream(true)
            .stdout(true)
            .stderr(true)
            .build();
        let attached = self
            .docker
            .attach_container(id, Some(attach_options))
            .await
            .map_err(|error| docker_error("cannot attach to the container", error))?;

        let starting = Instant::now();
        if let Err(error) = self.docker.start_container(id, None).await {
            return Err(match error {
                BollardError::DockerResponseServerError {
                    status_code: 400..=499,
                    message,
                } => ExecutorError::Spawn {
                    program: program_name(task),
                    reason: message,
                },
                error => docker_error("cannot start the container", error),
            });
        }
        let metrics = crate::metrics::metrics();
        crate::metrics::observe(&metrics.container_start, starting.elapsed());
        metrics.containers_started.inc();
        let deadline = task.timeout.map(|timeout| Instant::now() + timeout);
        let _ = events
            .send(ExecEvent::Started {
                handle: id.to_string(),
            })
            .await;
        // Read only after `Started` went out, so that it comes first; until then the output
        // waits in the attach connection.
        let forwarder = AbortOnDropHandle::new(tokio::spawn(forward_output(
            attached.output,
            events.clone(),
        )));

        let mut wait = pin!(self.docker.wait_container(id, None));
        let report = tokio::select! {
            exit = wait.next() => exit_report(exit)?,
            () = cancel.cancelled() => {
                offer_system_line(events, "cancelled; stopping the container");
                self.stop_container(id, &mut wait).await;
                ExitReport::Cancelled
            }
            () = sleep_until_deadline(deadline) => {
                let timeout = task.timeout.unwrap_or_default();
                offer_system_line(events, &format!("timed out after {timeout:?}; stopping the container"));
                self.stop_container(id, &mut wait).await;
                ExitReport::TimedOut
            }
        };

        // The attach stream ends once the container is gone and every byte has been sent.
        if tokio::time::timeout(OUTPUT_DRAIN_LIMIT, forwarder)
            .await
            .is_err()
        {
            warn!(attempt_id = %task.attempt_id, "container output did not end after its exit; the rest is dropped");
        }
        Ok(report)
    }

    /// Sends SIGTERM, then SIGKILL after the kill grace, and waits until the container exited.
    async fn stop_container<S>(&self, id: &str, wait: &mut S)
    where
        S: Stream<Item = Result<ContainerWaitResponse, BollardError>> + Unpin,
    {
        if !self.kill_grace.is_zero() {
            self.signal_container(id, "SIGTERM").await;
            if tokio::time::timeout(self.kill_grace, wait.next())
                .await
                .is_ok()
            {
                return;
            }
        }
        self.signal_container(id, "SIGKILL").await;
        if tokio::time::timeout(EXIT_AFTER_KILL_LIMIT, wait.next())
            .await
            .is_err()
        {
            warn!(
                container = id,
                "container still running after SIGKILL; removing it by force"
            );
        }
    }

    async fn signal_container(&self, id: &str, signal: &str) {
        let options = KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        match self.docker.kill_container(id, Some(options)).await {
            Ok(()) => {}
            // Not running any more (409) or already gone (404): nothing to stop.
            Err(error) if is_status(&error, 409) || is_status(&error, 404) => {}
            Err(error) => warn!(container = id, signal, %error, "cannot signal container"),
        }
    }
}

#[async_trait::async_trait]
impl Executor for DockerExecutor {
    async fn run(
        &self,
        task: &TaskSpec,
        events: EventSink,
        cancel: CancellationToken,
    ) -> Result<ExitReport, ExecutorError> {
        if task.image.trim().is_empty() {
            return Err(ExecutorError::MissingImage);
        }
        tokio::select! {
            ready = self.ensure_image(task, &events) => ready?,
            () = cancel.cancelled() => return Ok(ExitReport::Cancelled),
        }
        if cancel.is_cancelled() {
            return Ok(ExitReport::Cancelled);
        }
        let mut container = self.create_container(task, &events).await?;
        let id = container.id().to_string();
        let report = self.run_container(&id, task, &events, &cancel).await;
        container.remove().await;
        debug!(attempt_id = %task.attempt_id, ?report, "container attempt finished");
        report
    }

    async fn remove_leftovers(&self, worker: &str) -> Result<usize, ExecutorError> {
        self.remove_containers_of_worker(worker).await
    }
}

/// Forwards the container's output frames as they come; keeps reading after the sink closed so
/// that the container never blocks on a full pipe.
async fn forward_output<S>(output: S, events: EventSink)
where
    S: Stream<Item = Result<LogOutput, BollardError>>,
{
    let mut output = pin!(output);
    let mut sink_open = true;
    while let Some(frame) = output.next().await {
        let (stream, data) = match frame {
            Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                (OutputStream::Stdout, message)
            }
            Ok(LogOutput::StdErr { message }) => (OutputStream::Stderr, message),
            Ok(LogOutput::StdIn { .. }) => continue,
            Err(error) => {
                warn!(%error, "reading container output failed");
                break;
            }
        };
        if sink_open && !data.is_empty() {
            let chunk = OutputChunk { stream, data };
            sink_open = events.send(ExecEvent::Output(chunk)).await.is_ok();
        }
    }
}

/// Reads the exit code from the wait endpoint's answer: bollard reports a non-zero exit code as
/// an error.
fn exit_report(
    exit: Option<Result<ContainerWaitResponse, BollardError>>,
) -> Result<ExitReport, ExecutorError> {
    match exit {
        Some(Ok(response)) => Ok(ExitReport::Exited {
            code: response.status_code,
        }),
        Some(Err(BollardError::DockerContainerWaitError { code, .. })) => {
            Ok(ExitReport::Exited { code })
        }
        Some(Err(error)) => Err(docker_error("cannot wait for the container", error)),
        None => Err(ExecutorError::Docker(
            "the container's wait stream ended without an exit code".to_string(),
        )),
    }
}

fn is_status(error: &BollardError, status: u16) -> bool {
    matches!(error, BollardError::DockerResponseServerError { status_code, .. } if *status_code == status)
}

/// Docker's own message for a refused request, bollard's description otherwise.
fn error_message(error: &BollardError) -> String {
    match error {
        BollardError::DockerResponseServerError { message, .. } => message.clone(),
        BollardError::DockerStreamError { error } => error.clone(),
        error => error.to_string(),
    }
}

fn docker_error(context: &str, error: BollardError) -> ExecutorError {
    ExecutorError::Docker(format!("{context}: {}", error_message(&error)))
}
