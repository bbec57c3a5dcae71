//! Containers of a run, found through the labels the Docker executor puts on them, so tests can
//! check what runs while a run is in progress and that nothing is left behind after it.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use bollard::Docker;
use bollard::models::ContainerSummary;
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use vishwa_worker::executor::docker::{
    LABEL_ATTEMPT, LABEL_MANAGED, LABEL_RUN, LABEL_STAGE, LABEL_WORKER,
};

use crate::poll::wait_until;

/// A container of a run as Docker lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunContainer {
    pub id: String,
    pub name: String,
    pub stage: Option<String>,
    /// Docker's state: `created`, `running`, `exited`, ...
    pub state: String,
}

/// Every container carrying all of `labels` (`key=value`), whatever its state (`all=true`).
pub async fn labelled_containers(
    docker: &Docker,
    labels: &[String],
) -> anyhow::Result<Vec<ContainerSummary>> {
    let filters = HashMap::from([("label", labels.to_vec())]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .with_context(|| format!("listing the containers labelled {labels:?}"))
}

/// The labels that pick a run's containers out of every Vishwa-managed one.
pub fn run_labels(run_id: &str) -> Vec<String> {
    vec![
        format!("{LABEL_MANAGED}=true"),
        format!("{LABEL_RUN}={run_id}"),
    ]
}

/// The labels of one attempt's containers.
pub fn attempt_labels(attempt: &str) -> Vec<String> {
    vec![
        format!("{LABEL_MANAGED}=true"),
        format!("{LABEL_ATTEMPT}={attempt}"),
    ]
}

/// The labels of containers a worker started (workers label them `name@scheduler`).
pub fn worker_labels(worker: &str) -> Vec<String> {
    vec![
        format!("{LABEL_MANAGED}=true"),
        format!("{LABEL_WORKER}={worker}"),
    ]
}

/// Every container labelled with `run_id`, whatever its state (`all=true`).
pub async fn containers_of_run(docker: &Docker, run_id: &str) -> anyhow::Result<Vec<RunContainer>> {
    let summaries = labelled_containers(docker, &[format!("{LABEL_RUN}={run_id}")])
        .await
        .with_context(|| format!("listing the containers of run {run_id}"))?;
    Ok(summaries
        .into_iter()
        .map(|summary| {
            let labels = summary.labels.unwrap_or_default();
            RunContainer {
                id: summary.id.unwrap_or_default(),
                name: summary
                    .names
                    .and_then(|names| names.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_owned(),
                stage: labels.get(LABEL_STAGE).cloned(),
                state: summary.state.map(|s| s.to_string()).unwrap_or_default(),
            }
        })
        .collect())
}

/// The containers of `run_id` that Docker reports as running.
pub async fn running_containers_of_run(
    docker: &Docker,
    run_id: &str,
) -> anyhow::Result<Vec<RunContainer>> {
    let mut containers = containers_of_run(docker, run_id).await?;
    containers.retain(|c| c.state == "running");
    Ok(containers)
}

/// Panics, naming them, if any container of `run_id` exists (running or not).
pub async fn assert_no_containers_of_run(docker: &Docker, run_id: &str) {
    let left = containers_of_run(docker, run_id)
        .await
        .expect("cannot list containers");
    assert!(
        left.is_empty(),
        "run {run_id} left containers behind: {left:#?}"
    );
}

/// Waits until no container of `run_id` exists; returns whether that happened within `timeout`.
pub async fn wait_until_no_containers_of_run(
    docker: &Docker,
    run_id: &str,
    timeout: Duration,
) -> bool {
    wait_until(timeout, || async {
        containers_of_run(docker, run_id)
            .await
            .is_ok_and(|c| c.is_empty())
    })
    .await
}

/// Force-removes every container of `run_id`; for cleaning up after a test that failed midway.
pub async fn remove_containers_of_run(docker: &Docker, run_id: &str) -> anyhow::Result<()> {
    remove_labelled(docker, &[format!("{LABEL_RUN}={run_id}")]).await
}

/// Force-removes every container carrying all of `labels`.
pub async fn remove_labelled(docker: &Docker, labels: &[String]) -> anyhow::Result<()> {
    for container in labelled_containers(docker, labels).await? {
        if let Some(id) = &container.id {
            force_remove(docker, id).await?;
        }
    }
    Ok(())
}

/// Force-removes container `id`; one already gone is fine.
pub async fn force_remove(docker: &Docker, id: &str) -> anyhow::Result<()> {
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    match docker.remove_container(id, Some(options)).await {
        // Gone already: its worker removed it meanwhile.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        result => result.with_context(|| format!("removing container {id}")),
    }
}
