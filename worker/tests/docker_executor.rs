//! The Docker executor against the real local engine, with the locally built busybox image.
//! These tests never skip: without a reachable Docker engine they fail.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use tokio_util::sync::CancellationToken;
use vishwa_integration_tests::images::{BUSYBOX_DEFAULT_OUTPUT, ensure_busybox_image};
use vishwa_integration_tests::poll::wait_until;
use vishwa_worker::executor::docker::{
    DockerExecutor, LABEL_ATTEMPT, LABEL_DAG, LABEL_MANAGED, LABEL_RUN, LABEL_STAGE, container_name,
};
use vishwa_worker::executor::{
    CONTAINER_WORKDIR, Executor, ExecutorError, ExitReport, MountSpec, TaskSpec,
};

use common::{exec, run_collecting, shell, start_attempt, task};

/// Longer than any stop may take here (SIGTERM, the kill grace, SIGKILL, removal).
const STOP_LIMIT: Duration = Duration::from_secs(5);
/// Long enough for a container to start on a loaded machine.
const START_LIMIT: Duration = Duration::from_secs(30);

/// The executor and the test image; panics (never skips) when Docker cannot be used.
async fn executor() -> (Arc<DockerExecutor>, String) {
    let executor = DockerExecutor::connect()
        .await
        .expect("these tests need the local docker engine and never skip");
    let image = ensure_busybox_image(executor.client())
        .await
        .expect("cannot build the busybox test image");
    (Arc::new(executor), image)
}

fn docker_task(
    test: &str,
    image: &str,
    command: Option<vishwa_worker::executor::CommandSpec>,
) -> TaskSpec {
    let mut task = task(test, command);
    task.image = image.to_string();
    task
}

async fn containers_of_attempt(docker: &Docker, attempt_id: &str) -> Vec<String> {
    let filters = HashMap::from([("label", vec![format!("{LABEL_ATTEMPT}={attempt_id}")])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .expect("cannot list containers")
        .into_iter()
        .filter_map(|container| container.id)
        .collect()
}

async fn assert_no_container_left(docker: &Docker, attempt_id: &str) {
    let left = containers_of_attempt(docker, attempt_id).await;
    assert!(
        left.is_empty(),
        "containers of {attempt_id} left behind: {left:?}"
    );
}

#[tokio::test]
async fn exit_zero_is_reported_with_the_container_id_as_handle() {
    let (executor, image) = executor().await;
    let task = docker_task("exit-zero", &image, exec(&["true"]));
    let (result, collected) = run_collecting(&*executor, &task, CancellationToken::new()).await;
    assert_eq!(result.unwrap(), ExitReport::Exited { code: 0 });
    assert_eq!(collected.started.len(), 1);
    assert_eq!(collected.started[0].len(), 64, "a container id");
    assert_no_container_left(executor.client(), &task.attempt_id).await;
}

#[tokio::test]
async fn non_zero_exit_code_is_reported() {
    let (executor, image) = executor().await;
    let task = docker_task("exit-three", &image, shell("exit 3"));
    let (result, _) = run_collecting(&*executor, &task, CancellationToken::new()).await;
    assert_eq!(result.unwrap(), ExitReport::Exited { code: 3 });
    assert_no_container_left(executor.client(), &task.attempt_id).await;
}

#[tokio::test]
async fn stdout_and_stderr_are_captured_separately_and_in_order() {
    let (executor, image) = executor().await;
    let script = "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done";
    let task = docker_task("streams", &image, shell(script));
    let (result, collected) = run_collecting(&*executor, &task, CancellationToken::new()).await;
    assert_eq!(result.unwrap(), ExitReport::Exited { code: 0 });
    assert!(collected.started_before_output);
    assert_eq!(collected.stdout_text(), "out1\nout2\nout3\nout4\nout5\n");
    assert_eq!(collected.stderr_text(), "err1\nerr2\nerr3\nerr4\nerr5\n");
    assert_no_container_left(executor.client(), &task.attempt_id).await;
}

#[tokio::test]
async fn all_output_is_forwarded_before_the_result() {
    let (executor, image) = executor().await;
    let task = docker_task("large-output", &image, shell("seq 1 100000; echo done >&2"));
    let (result, collected) = run_collecting(&*executor, &task, CancellationToken::new()).await;
    assert_eq!(result.unwrap(), ExitReport::Exited { code: 0 });
    let expected: String = (1..=100_000).map(|n| format!("{n}\n")).collect();
    assert_eq!(collected.stdout_text(), expected);
    assert_eq!(collected.stderr_text(), "done\n");
    assert_no_container_left(executor.client(), &task.attempt_id).await;
}

#[tokio::test]
async fn bytes_that_are_not_utf8_arrive_intact() {
    let (executor, image) = executor().await;
    let task = docker_task("not-utf8", &image, exec(&["printf", r"\377\376ok\200"]));
    let (result, collected) = run_collecting(&*executor, &task, CancellationToken::new()).await;
    assert_eq!(result.unwrap(), ExitReport::Exited { code: 0 });
    assert_eq!(collected.stdout, b"\xff\xfeok\x80");
    assert_no_container_left(executor.client(), &task.attempt_id).await;
}

#[tokio::test]
async fn env_reaches_the_container() {
    let (executor, image) = executor().await;
    let mut task = docker_task("env", &image, exec(&["env"]));
    task.env = BTreeMap::from([
        ("GREETING".to_string(), "hello world".to_string()),
        ("VISHWA_STAGE".to_string(), "env".to_string()),
    ]);
    let (result, collected) = run_collecting(&*executor, &task, CancellationToken::new()).await;
    assert_eq!(result.unwrap(), ExitReport::Exited { code: 0 });
    let stdout = collected.stdout_text();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.contains(&"GREETING=hello world"), "{stdout}");
    assert!(lines.contains(&"VISHWA_STAGE=env"), "{stdout}");
    assert!(
        lines.contains(&"PATH=/bin"),
        "the image's env is kept: {stdout}"
    );
    assert_no_container_left(executor.client(), &task.attempt_id).await;
}

#[tokio::test]
async fn the_dags_folder_is_the_read_only_working_directory() {
    let (executor, image) = executor().await;
    let dag_dir = tempfile::tempdir().unwrap();
    std::fs::write(dag_dir.path().join("data.txt"), "payload\n").unwrap();
    let script =
        "pwd; cat data.txt; if echo x > written.txt; then echo writable; else echo read-only; fi";
    let mut task = docker_task("local-dir", &image, shell(script));
    task.local_dir = Some(dag_dir.path().to_path_buf());
    let (result, collected) = run_collecting(&*executor, &task, CancellationToken::new()).await;
    assert_eq!(result.unwrap(), ExitReport::Exited { code: 0 });
    assert_eq!(
        collected.stdout_text(),
        format!("{CONTAINER_WORKDIR}\npayload\nread-only\n")
    );
    assert!(collected.stderr_text().contains("Read-only file system"));
    assert!(!dag_dir.path().join("written.txt").exists());
    assert_no_container_left(executor.client(), &task.attempt_id).await;
}

#[tokio::test]
async fn the_working_directory_is_the_dags_path_without_a_folder_too() {
    let (executor, image) = executor().await;
    let task = docker_task("no-local-dir", &image, exec(&["pwd"]));
    let (result, collected) = run_collecting(&*executor, &task, CancellationToken::new()).await;
    assert_eq!(result.unwrap(), ExitReport::Exited { code: 0 });
    assert_eq!(collected.stdout_text(), format!("{CONTAINER_WORKDIR}\n"));
    assert_no_container_left(executor.client(), &task.attempt_id).await;
}

#[tokio::test]
async fn extra_mounts_are_bound_read_write_or_read_only() {
    let (executor, image) = executor().await;
    let shared = tempfile::tempdir().unwrap();
    let inputs = tempfile::tempdir().unwrap();
    std::fs::write(inputs.path().join("in.txt"), "input\n").unwrap();
    let script = "cat /in/in.txt; echo result > /out/out.txt; touch /in/nope 2>/dev/null || echo in-is-read-only";
    let mut task = docker_task("mounts", &image, shell(script));
    task.mounts = vec![
        MountSpec {
            host: shared.path().to_path_buf(),
            container: "/out".to_string(),
            read_only: false,
        },
        MountSpec {
            host: inputs.path().to_path_buf(),
            container: "/in".to_string(),
            read_only: true,
        },
    ];
    let (result, collected) = run_collecting(&*executor, &task, CancellationToken::new()).await;
    assert_eq!(result.unwrap(), ExitReport::Exited { code: 0 });
    assert_eq!(collected.stdout_text(), "input\nin-is-read-only\n");
    assert_eq!(
        std::fs::read_to_string(shared.path().join("out.txt")).unwrap(),
        "result\n"
    );
    assert_no_container_left(executor.client(), &task.attempt_id).await;
}

#[tokio::test]
async fn a_mount_source_that_does_not_exist_is_a_clear_error() {
    let (executor, image) = executor().await;
    let mut task = docker_task("bad-mount", &image, exec(&["true"]));
    task.mounts = vec![MountSpec {
        host: "/nonexistent/vishwa-mount-source".into(),
        container: "/data".to_string(),
        read_only: true,
    }];
    let (result, collected) = run_collecting(&*executor, &task, CancellationToken::new()).await;
    let error = result.unwrap_err();
    assert!(
        matches!(error, ExecutorError::ContainerRejected { .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("/nonexistent/vishwa-mount-source"),
        "{error}"
    );
    assert!(!error.is_transient());
    assert!(collected.started.is_empty());
    assert_no_container_left(executor.client(), &task.attempt_id).await;
}

#[tokio::test]
async fn shell_form_runs_through_sh_and_exec_form_passes_argv_verbatim() {
    let (executor, image) = executor().await;
    let shell_task = docker_task("shell-form", &image, shell("echo $((1 + 2)) \"$0\""));
    let (result, collected) =
        run_collecting(&*executor, &shell_task, CancellationToken::new()).await;
    assert_eq!(result.unwrap(), ExitReport::Exited { code: 0 });
    assert_eq!(collected.stdout_text(), "3 /bin/sh\n");

    let exec_task = docker_task("exec-form", &image, exec(&["echo", "a  b", "$HOME", "*"]));
    let (result, collected) =
        run_collecting(&*executor, &exec_task, CancellationToken::new()).await;
    assert_eq!(result.unwrap(), ExitReport::Exited { code: 0 });
    assert_eq!(collected.stdout_text(), "a  b $HOME *\n");
    assert_no_container_left(executor.client(), &shell_task.attempt_id).await;
    assert_no_container_left(executor.client(), &exec_task.attempt_id).await;
}

#[tokio::test]
async fn without_a_command_the_image_default_runs() {
    let (executor, image) = executor().await;
    let task = docker_task("default-command", &image, None);
    let (result, collected) = run_collecting(&*executor, &task, CancellationToken::new()).await;
    assert_eq!(result.unwrap(), ExitReport::Exited { code: 0 });
    assert_eq!(collected.stdout_text(), BUSYBOX_DEFAULT_OUTPUT);
    assert_no_container_left(executor.client(), &task.attempt_id).await;
}

#[tokio::test]
async fn a_program_missing_from_the_image_is_a_spawn_error() {
    let (executor, image) = executor().await;
    let task = docker_task("missing-program", &image, exec(&["vishwa-no-such-program"]));
    let (result, collected) = run_collecting(&*executor, &task, CancellationToken::new()).await;
    let error = result.unwrap_err();
    match &error {
        ExecutorError::Spawn { program, reason } => {
            assert_eq!(program, "vishwa-no-such-program");
            assert!(reason.contains("not found"), "{reason}");
        }
        other => panic!("expected a spawn error, got {other:?}"),
    }
    assert!(!error.is_transient());
    assert!(collected.started.is_empty());
    assert_no_container_left(executor.client(), &task.attempt_id).await;
}

#[tokio::test]
async fn the_running_container_carries_labels_name_and_limits() {
    let (executor, image) = executor().await;
    let mut task = docker_task("labels", &image, exec(&["sleep", "60"]));
    task.cpus = Some(0.5);
    task.memory_bytes = Some(64 << 20);
    let mut attempt = start_attempt(executor.clone(), task.clone());
    attempt
        .wait_for("the start", START_LIMIT, |seen| !seen.started.is_empty())
        .await;
    let id = attempt.collected.started[0].clone();

    let inspected = executor
        .client()
        .inspect_container(&id, None)
        .await
        .unwrap();
    let running = inspected.state.as_ref().and_then(|state| state.running);
    let config = inspected.config.clone().unwrap();
    let host = inspected.host_config.clone().unwrap();
    attempt.cancel.cancel();
    let (result, _) = attempt.finish().await;

    assert_eq!(running, Some(true));
    assert_eq!(
        inspected.name.unwrap(),
        format!("/{}", container_name(&task))
    );
    let labels = config.labels.unwrap();
    assert_eq!(labels[LABEL_MANAGED], "true");
    assert_eq!(labels[LABEL_RUN], task.run_id);
    assert_eq!(labels[LABEL_DAG], task.dag);
    assert_eq!(labels[LABEL_STAGE], task.stage);
    assert_eq!(labels[LABEL_ATTEMPT], task.attempt_id);
    assert_eq!(config.working_dir.as_deref(), Some(CONTAINER_WORKDIR));
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.memory, Some(64 << 20));
    assert_eq!(result.unwrap(), ExitReport::Cancelled);
    assert_no_container_left(executor.client(), &task.attempt_id).await;
}

#[tokio::test]
async fn timeout_kills_the_container_and_reports_timed_out() {
    let (executor, image) = executor().await;
    let mut task = docker_task(
        "timeout",
        &image,
        shell("echo before; sleep 60; echo after"),
    );
    task.timeout = Some(Duration::from_millis(500));
    let mut attempt = start_attempt(executor.clone(), task.clone());
    attempt
        .wait_for("the start", START_LIMIT, |seen| !seen.started.is_empty())
        .await;
    let started = Instant::now();
    let (result, collected) = attempt.finish().await;
    assert_eq!(result.unwrap(), ExitReport::TimedOut);
    assert!(
        started.elapsed() < Duration::from_millis(500) + STOP_LIMIT,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(collected.stdout_text(), "before\n");
    assert_eq!(
        String::from_utf8_lossy(&collected.system),
        "timed out after 500ms; stopping the container\n"
    );
    assert_no_container_left(executor.client(), &task.attempt_id).await;
}

#[tokio::test]
async fn cancellation_kills_the_container_and_reports_cancelled() {
    let (executor, image) = executor().await;
    let task = docker_task("cancel", &image, shell("echo ready; sleep 60"));
    let mut attempt = start_attempt(executor.clone(), task.clone());
    attempt
        .wait_for("the ready line", START_LIMIT, |seen| {
            seen.stdout == b"ready\n"
        })
        .await;
    let cancelled_at = Instant::now();
    attempt.cancel.cancel();
    let (result, _) = attempt.finish().await;
    assert_eq!(result.unwrap(), ExitReport::Cancelled);
    assert!(
        cancelled_at.elapsed() < STOP_LIMIT,
        "{:?}",
        cancelled_at.elapsed()
    );
    assert_no_container_left(executor.client(), &task.attempt_id).await;
}

#[tokio::test]
async fn a_missing_image_is_unavailable_and_transient() {
    let (executor, _) = executor().await;
    let missing = "vishwa-test/does-not-exist:1";
    let task = docker_task("missing-image", missing, exec(&["true"]));
    let (result, collected) = run_collecting(&*executor, &task, CancellationToken::new()).await;
    let error = result.unwrap_err();
    match &error {
        ExecutorError::ImageUnavailable { image, .. } => assert_eq!(image, missing),
        other => panic!("expected an unavailable image, got {other:?}"),
    }
    assert!(error.is_transient());
    assert!(error.to_string().contains(missing));
    assert_eq!(
        String::from_utf8_lossy(&collected.system),
        format!("pulling image {missing}\n")
    );
    assert_no_container_left(executor.client(), &task.attempt_id).await;
}

#[tokio::test]
async fn a_stage_without_image_is_refused() {
    let (executor, _) = executor().await;
    let task = docker_task("no-image", "", exec(&["true"]));
    let (result, _) = run_collecting(&*executor, &task, CancellationToken::new()).await;
    assert!(matches!(result, Err(ExecutorError::MissingImage)));
}

#[tokio::test]
async fn a_closed_event_sink_leaks_no_container() {
    let (executor, image) = executor().await;
    let task = docker_task("closed-sink", &image, shell("seq 1 50000; exit 5"));
    let (events, receiver) = tokio::sync::mpsc::channel(1);
    drop(receiver);
    let result = executor.run(&task, events, CancellationToken::new()).await;
    assert_eq!(result.unwrap(), ExitReport::Exited { code: 5 });
    assert_no_container_left(executor.client(), &task.attempt_id).await;
}

#[tokio::test]
async fn dropping_the_run_halfway_still_removes_the_container() {
    let (executor, image) = executor().await;
    let task = docker_task("dropped-run", &image, shell("echo ready; sleep 60"));
    let (events, mut receiver) = tokio::sync::mpsc::channel(16);
    let cancel = CancellationToken::new();
    let run = executor.run(&task, events, cancel);
    let ready = async {
        while let Some(event) = receiver.recv().await {
            if let vishwa_worker::executor::ExecEvent::Output(chunk) = event
                && chunk.data.as_ref() == b"ready\n"
            {
                return;
            }
        }
    };
    tokio::select! {
        _ = run => panic!("the attempt ended on its own"),
        () = ready => {}
    }
    // `run` is dropped here, halfway through the attempt.
    let docker = executor.client().clone();
    let attempt_id = task.attempt_id.clone();
    let removed = wait_until(Duration::from_secs(15), || {
        let docker = docker.clone();
        let attempt_id = attempt_id.clone();
        async move { containers_of_attempt(&docker, &attempt_id).await.is_empty() }
    })
    .await;
    assert!(removed, "the dropped attempt's container was not removed");
}

#[tokio::test]
async fn a_container_left_by_an_earlier_run_of_the_attempt_is_replaced() {
    let (executor, image) = executor().await;
    let task = docker_task("stale", &image, exec(&["echo", "fresh"]));
    let name = container_name(&task);
    let labels = HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_ATTEMPT.to_string(), task.attempt_id.clone()),
    ]);
    let stale = ContainerCreateBody {
        image: Some(image.clone()),
        cmd: Some(vec!["echo".to_string(), "stale".to_string()]),
        labels: Some(labels),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::default().name(&name).build();
    executor
        .client()
        .create_container(Some(options), stale)
        .await
        .unwrap();

    let (result, collected) = run_collecting(&*executor, &task, CancellationToken::new()).await;
    assert_eq!(result.unwrap(), ExitReport::Exited { code: 0 });
    assert_eq!(collected.stdout_text(), "fresh\n");
    assert_no_container_left(executor.client(), &task.attempt_id).await;
}

#[tokio::test]
async fn a_name_taken_by_another_attempt_is_left_alone() {
    let (executor, image) = executor().await;
    let task = docker_task("taken-name", &image, exec(&["true"]));
    let name = container_name(&task);
    let other = ContainerCreateBody {
        image: Some(image.clone()),
        labels: Some(HashMap::from([(
            LABEL_ATTEMPT.to_string(),
            format!("{}-other", task.attempt_id),
        )])),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::default().name(&name).build();
    let created = executor
        .client()
        .create_container(Some(options), other)
        .await
        .unwrap();

    let (result, _) = run_collecting(&*executor, &task, CancellationToken::new()).await;
    let still_there = executor
        .client()
        .inspect_container(&created.id, None)
        .await
        .is_ok();
    let remove = RemoveContainerOptionsBuilder::default().force(true).build();
    executor
        .client()
        .remove_container(&created.id, Some(remove))
        .await
        .unwrap();

    let error = result.unwrap_err();
    assert!(error.to_string().contains(&name), "{error}");
    assert!(still_there, "another attempt's container was removed");
}

#[tokio::test]
async fn managed_containers_are_listed_and_removed_by_attempt() {
    let (executor, image) = executor().await;
    let task = docker_task("orphans", &image, exec(&["sleep", "60"]));
    let mut attempt = start_attempt(executor.clone(), task.clone());
    attempt
        .wait_for("the start", START_LIMIT, |seen| !seen.started.is_empty())
        .await;

    let managed = executor.list_managed_containers().await.unwrap();
    let ours = managed
        .iter()
        .find(|container| container.attempt_id.as_deref() == Some(task.attempt_id.as_str()))
        .expect("the running attempt is listed");
    assert_eq!(ours.id, attempt.collected.started[0]);
    assert_eq!(ours.name, container_name(&task));
    assert_eq!(ours.stage.as_deref(), Some("orphans"));
    assert_eq!(ours.state.as_deref(), Some("running"));

    assert_eq!(
        executor
            .remove_containers_of_attempt(&task.attempt_id)
            .await
            .unwrap(),
        1
    );
    assert_no_container_left(executor.client(), &task.attempt_id).await;
    let finished = tokio::time::timeout(STOP_LIMIT, attempt.finish()).await;
    assert!(
        finished.is_ok(),
        "the attempt did not end after its container was removed"
    );
    assert_eq!(
        executor
            .remove_containers_of_attempt(&task.attempt_id)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn overhead_of_a_true_container() {
    let (executor, image) = executor().await;
    const CHAIN: u32 = 5;
    let started = Instant::now();
    for _ in 0..CHAIN {
        let task = docker_task("overhead", &image, exec(&["true"]));
        let (result, _) = run_collecting(&*executor, &task, CancellationToken::new()).await;
        assert_eq!(result.unwrap(), ExitReport::Exited { code: 0 });
    }
    println!(
        "docker executor: {:?} per `true` attempt",
        started.elapsed() / CHAIN
    );
}

#[tokio::test]
async fn gpus_assigned_by_the_scheduler_become_a_pinned_device_request() {
    let (executor, image) = executor().await;
    let docker = executor.client();
    let mut task = docker_task("gpu-request", &image, exec(&["true"]));
    task.gpus = vec!["2".to_string(), "5".to_string()];
    // This machine has no GPU: create the container (the engine accepts the request) and
    // read back what it recorded, without starting it.
    let body = vishwa_worker::executor::docker::container_body(&task).unwrap();
    let name = container_name(&task);
    let options = CreateContainerOptionsBuilder::default().name(&name).build();
    let created = docker.create_container(Some(options), body).await.unwrap();
    let inspected = docker
        .inspect_container(
            &created.id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await;
    let remove = RemoveContainerOptionsBuilder::default().force(true).build();
    docker
        .remove_container(&created.id, Some(remove))
        .await
        .unwrap();
    let requests = inspected
        .unwrap()
        .host_config
        .and_then(|h| h.device_requests)
        .expect("the created container carries a device request");
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].driver.as_deref(), Some("nvidia"));
    assert_eq!(
        requests[0].device_ids.as_deref(),
        Some(&["2".to_string(), "5".to_string()][..])
    );
    assert_eq!(
        requests[0].capabilities,
        Some(vec![vec!["gpu".to_string()]])
    );

    // Run through the executor, the engine refuses to start it here (no GPU runtime), and the
    // failure says so; nothing is left behind.
    let (events, _rx) = tokio::sync::mpsc::channel(64);
    let err = executor
        .run(&task, events, CancellationToken::new())
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("device") || message.contains("gpu"),
        "{message}"
    );
    assert!(
        containers_of_attempt(docker, &task.attempt_id)
            .await
            .is_empty()
    );
}
