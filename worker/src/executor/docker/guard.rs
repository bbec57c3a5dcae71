//! Removal of an attempt's container, guaranteed: explicitly on every path the run returns
//! through, and by a drop guard when the run's future is dropped halfway.

use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{RemoveContainerOptions, RemoveContainerOptionsBuilder};
use tracing::warn;

use super::is_status;

/// Attempts at removing a container before giving up (and leaving it to orphan cleanup).
const REMOVE_TRIES: u32 = 3;

/// Owns a created container: removes it when dropped unless [`ContainerGuard::remove`] ran.
pub(super) struct ContainerGuard {
    docker: Docker,
    /// `None` once removed.
    id: Option<String>,
}

impl ContainerGuard {
    pub(super) fn new(docker: Docker, id: String) -> Self {
        Self {
            docker,
            id: Some(id),
        }
    }

    pub(super) fn id(&self) -> &str {
        self.id.as_deref().unwrap_or_default()
    }

    pub(super) async fn remove(&mut self) {
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

pub(super) fn force_remove() -> RemoveContainerOptions {
    RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build()
}
