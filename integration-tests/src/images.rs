//! Test images built locally from the host's files, so tests run without a registry.
//!
//! `vishwa-test/busybox:1` is Debian's static busybox (`/bin/busybox` from `busybox-static`)
//! FROM scratch, with applet symlinks in `/bin` and `PATH=/bin`. `dags/images/build-busybox.sh`
//! builds the same image with `docker build`.

use std::collections::HashMap;

use anyhow::{Context, bail};
use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures::StreamExt;
use tokio::sync::OnceCell;

/// The busybox test image's tag.
pub const BUSYBOX_IMAGE: &str = "vishwa-test/busybox:1";

/// What the busybox image's default command (`CMD`) prints on stdout.
pub const BUSYBOX_DEFAULT_OUTPUT: &str = "hello from vishwa-test/busybox\n";

/// The static busybox copied into the image.
const HOST_BUSYBOX: &str = "/bin/busybox";

/// Applets reachable by name in the image (symlinks to `/bin/busybox`).
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh",
    "echo",
    "sleep",
    "cat",
    "true",
    "false",
    "printf",
    "env",
    "pwd",
    "ls",
    "id",
    "test",
    "[",
    "mkdir",
    "rm",
    "touch",
    "head",
    "tail",
    "wc",
    "grep",
    "sed",
    "tr",
    "od",
    "kill",
    "ps",
    "uname",
    "date",
    "expr",
    "seq",
    "yes",
    "tee",
    "basename",
    "dirname",
    "readlink",
    "stat",
    "sort",
    "cut",
    "awk",
    "uniq",
    "xargs",
    "sha256sum",
    "md5sum",
    "wget",
    "nc",
];

const DOCKERFILE: &str = "FROM scratch\n\
COPY bin/ /bin/\n\
ENV PATH=/bin\n\
CMD [\"/bin/echo\", \"hello from vishwa-test/busybox\"]\n";

/// Set once this process knows the image is present, so concurrent tests build it at most once.
static BUSYBOX_READY: OnceCell<String> = OnceCell::const_new();

/// Returns the busybox test image's tag, building the image first when Docker does not have it.
/// Safe to call from many tests at once: within a process the check-then-build runs once;
/// across processes a concurrent build only re-tags an identical image.
pub async fn ensure_busybox_image(docker: &Docker) -> anyhow::Result<String> {
    BUSYBOX_READY
        .get_or_try_init(|| async {
            if docker.inspect_image(BUSYBOX_IMAGE).await.is_err() {
                build_busybox_image(docker, BUSYBOX_IMAGE).await?;
            }
            Ok::<_, anyhow::Error>(BUSYBOX_IMAGE.to_string())
        })
        .await
        .cloned()
}

/// Builds the busybox image under `tag` from an in-memory build context, present or not.
pub async fn build_busybox_image(docker: &Docker, tag: &str) -> anyhow::Result<()> {
    let context = busybox_build_context()?;
    let labels = HashMap::from([("vishwa.test-image", "busybox")]);
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .labels(&labels)
        .rm(true)
        .forcerm(true)
        .build();
    let mut progress = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(step) = progress.next().await {
        step.with_context(|| format!("building test image {tag}"))?;
    }
    if let Err(error) = docker.inspect_image(tag).await {
        bail!("built test image {tag} but docker does not know it: {error}");
    }
    Ok(())
}

/// The build context as a tar archive: the Dockerfile, `bin/busybox` and its applet symlinks.
fn busybox_build_context() -> anyhow::Result<Vec<u8>> {
    let busybox = std::fs::read(HOST_BUSYBOX).with_context(|| {
        format!("reading {HOST_BUSYBOX}; install Debian's busybox-static (apt-get install busybox-static)")
    })?;
    let mut archive = tar::Builder::new(Vec::new());

    let mut add_file = |path: &str, mode: u32, data: &[u8]| -> std::io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        archive.append_data(&mut header, path, data)
    };
    add_file("Dockerfile", 0o644, DOCKERFILE.as_bytes())?;
    add_file("bin/busybox", 0o755, &busybox)?;

    for applet in BUSYBOX_APPLETS {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        archive.append_link(&mut header, format!("bin/{applet}"), "busybox")?;
    }
    Ok(archive.into_inner()?)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::process::Command;

    use bollard::query_parameters::RemoveImageOptionsBuilder;
    use futures::future::join_all;
    use tokio_util::sync::CancellationToken;
    use vishwa_worker::executor::docker::DockerExecutor;
    use vishwa_worker::executor::{
        CommandSpec, ExecEvent, Executor, ExitReport, OutputStream, TaskSpec,
    };

    use super::*;
    use crate::docker::connect_docker;

    #[test]
    fn build_context_holds_the_dockerfile_busybox_and_applet_links() {
        let context = busybox_build_context().unwrap();
        let mut archive = tar::Archive::new(context.as_slice());
        let mut names = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            names.push(entry.path().unwrap().display().to_string());
            if entry.header().entry_type() == tar::EntryType::Symlink {
                assert_eq!(
                    entry.link_name().unwrap().unwrap().to_str(),
                    Some("busybox")
                );
            }
        }
        assert!(names.contains(&"Dockerfile".to_string()));
        assert!(names.contains(&"bin/busybox".to_string()));
        assert!(names.contains(&"bin/sh".to_string()));
        assert_eq!(names.len(), 2 + BUSYBOX_APPLETS.len());
    }

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
            worker: "w-test".into(),
            image: image.to_string(),
            command,
            env: Default::default(),
            local_dir: None,
            timeout: None,
            mounts: Vec::new(),
            cpus: None,
            memory_bytes: None,
            gpus: Vec::new(),
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
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dags/images/build-busybox.sh");
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
}
