//! The locally built test images: the bollard builder, its idempotence under concurrent callers
//! and the shell script that builds the same image for people and CI.

use std::path::PathBuf;
use std::process::Command;

use bollard::Docker;
use bollard::query_parameters::RemoveImageOptionsBuilder;
use futures::future::join_all;
use tokio_util::sync::CancellationToken;
use vishwa_integration_tests::docker::connect_docker;
use vishwa_integration_tests::images::{
    BUSYBOX_APPLETS, BUSYBOX_DEFAULT_OUTPUT, BUSYBOX_IMAGE, build_busybox_image,
    ensure_busybox_image,
};
use vishwa_worker::executor::docker::DockerExecutor;
use vishwa_worker::executor::{
    CommandSpec, ExecEvent, Executor, ExitReport, OutputStream, TaskSpec,
};

/// Runs `command` in `image` and returns its exit report and stdout.
async fn run_in(
    docker: &Docker,
    image: &str,
    command: Option<CommandSpec>,
) -> (ExitReport, String) {
    let executor = DockerExecutor::from_client(docker.clone());
    let task = TaskSpec {
        run_id: "images".to_string(),
        dag: "images".to_string(),
        stage: "check".to_string(),
        attempt_id: format!(
            "images-{}-{}",
            std::process::id(),
            image.replace([':', '/'], "-")
        ),
        attempt: 1,
        image: image.to_string(),
        command,
        env: Default::default(),
        local_dir: None,
        timeout: None,
        mounts: Vec::new(),
        cpus: None,
        memory_bytes: None,
    };
    let (events, mut receiver) = tokio::sync::mpsc::channel(16);
    let collect = async {
        let mut stdout = Vec::new();
        while let Some(event) = receiver.recv().await {
            if let ExecEvent::Output(chunk) = event
                && chunk.stream == OutputStream::Stdout
            {
                stdout.extend_from_slice(&chunk.data);
            }
        }
        String::from_utf8_lossy(&stdout).into_owned()
    };
    let (report, stdout) = tokio::join!(
        executor.run(&task, events, CancellationToken::new()),
        collect
    );
    (report.expect("the check container could not run"), stdout)
}

async fn remove_tag(docker: &Docker, tag: &str) {
    let options = RemoveImageOptionsBuilder::default().build();
    docker
        .remove_image(tag, Some(options), None)
        .await
        .unwrap_or_else(|error| panic!("cannot remove test tag {tag}: {error}"));
}

#[tokio::test]
async fn concurrent_callers_all_get_the_busybox_image() {
    let docker = connect_docker().await.unwrap();
    let results = join_all((0..8).map(|_| ensure_busybox_image(&docker))).await;
    for result in results {
        assert_eq!(result.unwrap(), BUSYBOX_IMAGE);
    }
    let (report, stdout) = run_in(&docker, BUSYBOX_IMAGE, None).await;
    assert_eq!(report, ExitReport::Exited { code: 0 });
    assert_eq!(stdout, BUSYBOX_DEFAULT_OUTPUT);
}

#[tokio::test]
async fn the_built_image_has_busybox_and_its_applets_on_path() {
    let docker = connect_docker().await.unwrap();
    let tag = format!("vishwa-test/busybox:build-test-{}", std::process::id());
    build_busybox_image(&docker, &tag).await.unwrap();
    let script = format!(
        "echo $PATH; for applet in {}; do test -e \"/bin/$applet\" || echo missing $applet; done",
        BUSYBOX_APPLETS.join(" ")
    );
    let (report, stdout) = run_in(&docker, &tag, Some(CommandSpec::Shell(script))).await;
    remove_tag(&docker, &tag).await;
    assert_eq!(report, ExitReport::Exited { code: 0 });
    assert_eq!(stdout, "/bin\n");
}

#[tokio::test]
async fn the_build_script_works_from_any_directory_and_is_idempotent() {
    let docker = connect_docker().await.unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dags/images/build-busybox.sh");
    let elsewhere = tempfile::tempdir().unwrap();
    let tag = format!("vishwa-test/busybox:script-test-{}", std::process::id());
    let run_script = || {
        Command::new(&script)
            .current_dir(elsewhere.path())
            .env("IMAGE", &tag)
            .output()
            .expect("cannot run dags/images/build-busybox.sh")
    };

    let first = run_script();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&first.stdout),
        format!("built {tag}\n")
    );
    let second = run_script();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&second.stdout),
        format!("{tag} is already present\n")
    );

    let (report, stdout) = run_in(&docker, &tag, None).await;
    remove_tag(&docker, &tag).await;
    assert_eq!(report, ExitReport::Exited { code: 0 });
    assert_eq!(stdout, BUSYBOX_DEFAULT_OUTPUT);
}
