//! The Docker executor: one container per attempt, through bollard.
//!
//! Each attempt gets a container named after its run, stage and attempt, labelled `vishwa.*` so
//! that a restarted worker can find it again, with the DAG's files bind-mounted read-only at
//! [`CONTAINER_WORKDIR`]. The executor attaches to the container before starting it, so output
//! is streamed from the first byte on and exactly as written: the `logs` endpoint is not used
//! because the default json-file log driver replaces bytes that are not UTF-8. The container is
//! removed whatever happens: by the run itself on every path it returns through, and by a drop
//! guard when the run's future is dropped halfway.

use std::collections::HashMap;
use std::path::Path;
use std::pin::pin;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, ContainerWaitResponse, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures::{Stream, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, warn};

use super::support::{offer_system_line, send_system_line, sleep_until_deadline};
use super::{
    CONTAINER_WORKDIR, CommandSpec, EventSink, ExecEvent, Executor, ExecutorError, ExitReport,
    OutputChunk, OutputStream, TaskSpec,
};

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

/// Default time between SIGTERM and SIGKILL when an attempt is stopped.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(1);

/// How long to wait for a killed container to be reported as exited.
const EXIT_AFTER_KILL_LIMIT: Duration = Duration::from_secs(5);
/// How long output may keep arriving after the container exited (it is normally at most a few
/// frames; the limit only protects against a connection that never closes).
const OUTPUT_DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// Attempts at removing a container before giving up (and leaving it to orphan cleanup).
const REMOVE_TRIES: u32 = 3;
/// Longest run id or stage name kept in a container name.
const NAME_PART_MAX: usize = 48;

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
        for warning in created.warnings {
            send_system_line(events, &format!("docker: {warning}")).await;
        }
        debug!(attempt_id = %task.attempt_id, container = %name, "container created");
        Ok(ContainerGuard {
            docker: self.docker.clone(),
            id: Some(created.id),
        })
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
}

/// Owns a created container: removes it when dropped unless [`ContainerGuard::remove`] ran.
struct ContainerGuard {
    docker: Docker,
    /// `None` once removed.
    id: Option<String>,
}

impl ContainerGuard {
    fn id(&self) -> &str {
        self.id.as_deref().unwrap_or_default()
    }

    async fn remove(&mut self) {
        if let Some(id) = self.id.take() {
            remove_container_by_force(&self.docker, &id).await;
        }
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else {
            return;
        };
        // The run's future was dropped halfway: remove the container in the background.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let docker = self.docker.clone();
                runtime.spawn(async move { remove_container_by_force(&docker, &id).await });
            }
            Err(_) => {
                warn!(container = %id, "no runtime left to remove the container; orphan cleanup will")
            }
        }
    }
}

async fn remove_container_by_force(docker: &Docker, id: &str) {
    for try_number in 1..=REMOVE_TRIES {
        match docker.remove_container(id, Some(force_remove())).await {
            Ok(()) => return,
            // Gone already, or Docker is removing it right now.
            Err(error) if is_status(&error, 404) => return,
            Err(error)
                if is_status(&error, 409) && error.to_string().contains("already in progress") =>
            {
                return;
            }
            Err(error) => {
                warn!(container = id, try_number, %error, "cannot remove container");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(try_number))).await;
            }
        }
    }
}

fn force_remove() -> bollard::query_parameters::RemoveContainerOptions {
    RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build()
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

fn container_body(task: &TaskSpec) -> Result<ContainerCreateBody, ExecutorError> {
    let cmd = match &task.command {
        Some(CommandSpec::Exec(argv)) if !argv.is_empty() => Some(argv.clone()),
        Some(CommandSpec::Shell(script)) => Some(vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            script.clone(),
        ]),
        // No command (or an empty argv): the image's own CMD.
        Some(CommandSpec::Exec(_)) | None => None,
    };
    let env = task
        .env
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    let labels = HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_RUN.to_string(), task.run_id.clone()),
        (LABEL_DAG.to_string(), task.dag.clone()),
        (LABEL_STAGE.to_string(), task.stage.clone()),
        (LABEL_ATTEMPT.to_string(), task.attempt_id.clone()),
    ]);

    let mut mounts = Vec::new();
    if let Some(local_dir) = &task.local_dir {
        mounts.push(bind_mount(local_dir, CONTAINER_WORKDIR, true)?);
    }
    for mount in &task.mounts {
        mounts.push(bind_mount(&mount.host, &mount.container, mount.read_only)?);
    }
    let host_config = HostConfig {
        mounts: Some(mounts),
        nano_cpus: task
            .cpus
            .filter(|cpus| *cpus > 0.0)
            .map(|cpus| (cpus * 1e9).round() as i64),
        memory: task
            .memory_bytes
            .filter(|bytes| *bytes > 0)
            .map(|bytes| i64::try_from(bytes).unwrap_or(i64::MAX)),
        auto_remove: Some(false),
        ..Default::default()
    };
    Ok(ContainerCreateBody {
        image: Some(task.image.clone()),
        cmd,
        env: Some(env),
        working_dir: Some(CONTAINER_WORKDIR.to_string()),
        labels: Some(labels),
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(false),
        tty: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    })
}

/// A bind mount through the `Mounts` API rather than `Binds`: Docker then refuses a host path
/// that does not exist instead of creating an empty directory there.
fn bind_mount(host: &Path, container: &str, read_only: bool) -> Result<Mount, ExecutorError> {
    let host = std::path::absolute(host).map_err(|error| ExecutorError::ContainerRejected {
        reason: format!("bad mount source {}: {error}", host.display()),
    })?;
    let Some(source) = host.to_str() else {
        return Err(ExecutorError::ContainerRejected {
            reason: format!("mount source {} is not valid UTF-8", host.display()),
        });
    };
    Ok(Mount {
        source: Some(source.to_string()),
        target: Some(container.to_string()),
        typ: Some(MountType::BIND),
        read_only: Some(read_only),
        ..Default::default()
    })
}

/// `vishwa-<run>-<stage>-<attempt number>-<12 hex digits of a hash of the attempt id>`, within
/// Docker's name rules `[a-zA-Z0-9][a-zA-Z0-9_.-]*`. The hash keeps names of different attempts
/// apart whatever the attempt ids look like, and is stable across worker restarts.
pub fn container_name(task: &TaskSpec) -> String {
    format!(
        "vishwa-{}-{}-{}-{:012x}",
        sanitize_name_part(&task.run_id),
        sanitize_name_part(&task.stage),
        task.attempt,
        fnv1a_64(task.attempt_id.as_bytes()) & 0xffff_ffff_ffff
    )
}

fn sanitize_name_part(part: &str) -> String {
    let sanitized: String = part
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(NAME_PART_MAX)
        .collect();
    if sanitized.is_empty() {
        "x".to_string()
    } else {
        sanitized
    }
}

/// FNV-1a: tiny, and unlike std's hasher guaranteed the same in every build.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Splits `repo[:tag]` for the pull API, which pulls every tag of a repository given no tag.
/// A digest reference is passed whole.
fn split_image_reference(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    let name_start = image.rfind('/').map_or(0, |slash| slash + 1);
    match image[name_start..].rfind(':') {
        Some(colon) => {
            let colon = name_start + colon;
            (&image[..colon], Some(&image[colon + 1..]))
        }
        None => (image, Some("latest")),
    }
}

fn program_name(task: &TaskSpec) -> String {
    match &task.command {
        Some(CommandSpec::Exec(argv)) if !argv.is_empty() => argv[0].clone(),
        Some(CommandSpec::Shell(_)) => "/bin/sh".to_string(),
        _ => format!("the default command of {}", task.image),
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::executor::MountSpec;

    fn task() -> TaskSpec {
        TaskSpec {
            run_id: "cake-popularity/2024-01-01T02:00".to_string(),
            dag: "cake-popularity".to_string(),
            stage: "train[chocolate]".to_string(),
            attempt_id: "0190f3a2-7c1e-7d4b-9a55-3f1e2d4c5b6a".to_string(),
            attempt: 2,
            image: "vishwa-test/busybox:1".to_string(),
            command: Some(CommandSpec::Shell("echo hi".to_string())),
            env: BTreeMap::from([("TARGET".to_string(), "staging".to_string())]),
            local_dir: Some(PathBuf::from("/srv/dags/cake")),
            timeout: None,
            mounts: vec![MountSpec {
                host: PathBuf::from("/var/run/docker.sock"),
                container: "/var/run/docker.sock".to_string(),
                read_only: false,
            }],
            cpus: Some(1.5),
            memory_bytes: Some(512 << 20),
        }
    }

    #[test]
    fn container_names_follow_docker_rules_and_tell_attempts_apart() {
        let first = task();
        let name = container_name(&first);
        assert!(name.starts_with("vishwa-cake-popularity-2024-01-01T02-00-train-chocolate--2-"));
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        );
        assert_eq!(name, container_name(&first), "stable for one attempt");

        let mut second = task();
        second.attempt_id.push('x');
        assert_ne!(name, container_name(&second));
    }

    #[test]
    fn container_names_stay_short_for_long_ids() {
        let mut long = task();
        long.run_id = "r".repeat(500);
        long.stage = "s".repeat(500);
        assert!(container_name(&long).len() < 2 * NAME_PART_MAX + 40);
    }

    #[test]
    fn shell_form_runs_with_bin_sh_and_exec_form_as_argv() {
        let body = container_body(&task()).unwrap();
        assert_eq!(body.cmd.unwrap(), ["/bin/sh", "-c", "echo hi"]);

        let mut exec = task();
        exec.command = Some(CommandSpec::Exec(vec!["python3".into(), "train.py".into()]));
        assert_eq!(
            container_body(&exec).unwrap().cmd.unwrap(),
            ["python3", "train.py"]
        );

        let mut default = task();
        default.command = None;
        assert_eq!(container_body(&default).unwrap().cmd, None);
    }

    #[test]
    fn container_body_carries_env_labels_workdir_mounts_and_limits() {
        let body = container_body(&task()).unwrap();
        assert_eq!(body.env.unwrap(), ["TARGET=staging"]);
        assert_eq!(body.working_dir.as_deref(), Some(CONTAINER_WORKDIR));
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_MANAGED], "true");
        assert_eq!(labels[LABEL_ATTEMPT], task().attempt_id);
        assert_eq!(labels[LABEL_STAGE], "train[chocolate]");

        let host = body.host_config.unwrap();
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        assert_eq!(host.memory, Some(512 << 20));
        assert_eq!(host.auto_remove, Some(false));
        let mounts = host.mounts.unwrap();
        assert_eq!(mounts[0].source.as_deref(), Some("/srv/dags/cake"));
        assert_eq!(mounts[0].target.as_deref(), Some(CONTAINER_WORKDIR));
        assert_eq!(mounts[0].read_only, Some(true));
        assert_eq!(mounts[1].target.as_deref(), Some("/var/run/docker.sock"));
        assert_eq!(mounts[1].read_only, Some(false));
    }

    #[test]
    fn image_references_split_into_repository_and_tag() {
        assert_eq!(
            split_image_reference("busybox"),
            ("busybox", Some("latest"))
        );
        assert_eq!(
            split_image_reference("vishwa-test/busybox:1"),
            ("vishwa-test/busybox", Some("1"))
        );
        assert_eq!(
            split_image_reference("localhost:5000/team/app"),
            ("localhost:5000/team/app", Some("latest"))
        );
        assert_eq!(
            split_image_reference("localhost:5000/team/app:2.1"),
            ("localhost:5000/team/app", Some("2.1"))
        );
        assert_eq!(
            split_image_reference("app@sha256:abcd"),
            ("app@sha256:abcd", None)
        );
    }
}
