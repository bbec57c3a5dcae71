//! What an attempt's container is made of, derived from its [`TaskSpec`]: name, command,
//! environment, labels, mounts and resource limits.

use std::collections::HashMap;
use std::path::Path;

use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig, Mount, MountType};

use super::{LABEL_ATTEMPT, LABEL_DAG, LABEL_MANAGED, LABEL_RUN, LABEL_STAGE, LABEL_WORKER};
use crate::executor::{CONTAINER_WORKDIR, CommandSpec, ExecutorError, TaskSpec};

/// Longest run id or stage name kept in a container name.
const NAME_PART_MAX: usize = 48;

/// The container Docker is asked to create for `task`: command, env, labels, working
/// directory, mounts, resource limits and GPU device requests.
pub fn container_body(task: &TaskSpec) -> Result<ContainerCreateBody, ExecutorError> {
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
        (LABEL_WORKER.to_string(), task.worker.clone()),
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
        // GPUs the scheduler assigned, pinned by device id (the NVIDIA runtime's device
        // request; with no GPU assigned, none is asked for).
        device_requests: (!task.gpus.is_empty()).then(|| {
            vec![DeviceRequest {
                driver: Some("nvidia".to_string()),
                device_ids: Some(task.gpus.clone()),
                capabilities: Some(vec![vec!["gpu".to_string()]]),
                ..Default::default()
            }]
        }),
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
pub(super) fn split_image_reference(image: &str) -> (&str, Option<&str>) {
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

pub(super) fn program_name(task: &TaskSpec) -> String {
    match &task.command {
        Some(CommandSpec::Exec(argv)) if !argv.is_empty() => argv[0].clone(),
        Some(CommandSpec::Shell(_)) => "/bin/sh".to_string(),
        _ => format!("the default command of {}", task.image),
    }
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
            worker: "w-test".into(),
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
            gpus: vec!["1".into(), "3".into()],
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
        assert_eq!(labels[super::super::LABEL_WORKER], "w-test");
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
        let gpus = host.device_requests.unwrap();
        assert_eq!(gpus.len(), 1);
        assert_eq!(
            gpus[0].device_ids.as_deref(),
            Some(&["1".to_string(), "3".to_string()][..])
        );
        assert_eq!(gpus[0].capabilities, Some(vec![vec!["gpu".to_string()]]));
    }

    #[test]
    fn no_gpu_means_no_device_request() {
        let mut task = task();
        task.gpus.clear();
        let body = container_body(&task).unwrap();
        assert_eq!(body.host_config.unwrap().device_requests, None);
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
