//! Docker for tests without an async runtime (the process-level CLI tests): a small runtime
//! of its own and a connection to the local engine.

use std::future::Future;

use bollard::Docker;
use bollard::models::ContainerSummary;

use crate::containers::{labelled_containers, remove_labelled};
use crate::docker::connect_docker;
use crate::images::ensure_busybox_image;

/// Runs `future` to its end on a fresh current-thread runtime.
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot start a runtime")
        .block_on(future)
}

/// The local Docker engine with a runtime to call it from synchronous code.
pub struct BlockingDocker {
    runtime: tokio::runtime::Runtime,
    docker: Docker,
}

impl BlockingDocker {
    /// Connects to the local engine; fails loudly without it (these tests never skip).
    pub fn connect() -> BlockingDocker {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("cannot start a runtime");
        let docker = runtime
            .block_on(connect_docker())
            .expect("these tests need a reachable Docker engine; they never skip");
        BlockingDocker { runtime, docker }
    }

    /// Builds the busybox test image if Docker does not have it; returns its name.
    pub fn ensure_busybox_image(&self) -> String {
        self.runtime
            .block_on(ensure_busybox_image(&self.docker))
            .expect("cannot build the busybox test image")
    }

    /// Containers (running or not) carrying every label of `labels` (`key=value`).
    pub fn labelled(&self, labels: &[String]) -> Vec<ContainerSummary> {
        self.runtime
            .block_on(labelled_containers(&self.docker, labels))
            .expect("cannot list containers")
    }

    /// Force-removes the containers carrying every label of `labels`, as far as it can.
    pub fn remove_labelled(&self, labels: &[String]) {
        if let Err(error) = self.runtime.block_on(remove_labelled(&self.docker, labels)) {
            eprintln!("cleaning up containers labelled {labels:?}: {error:#}");
        }
    }

    /// Runs `f` with the engine on this runtime.
    pub fn run<'a, T, Fut>(&'a self, f: impl FnOnce(&'a Docker) -> Fut) -> T
    where
        Fut: Future<Output = T> + 'a,
    {
        self.runtime.block_on(f(&self.docker))
    }
}
