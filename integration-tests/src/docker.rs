//! A Docker connection for tests: the local engine, at the API version it speaks.

use anyhow::Context;
use bollard::Docker;

/// Connects to the local Docker engine and negotiates the API version (the engine may be older
/// than bollard's default). Fails loudly: tests that need Docker must run, never skip.
pub async fn connect_docker() -> anyhow::Result<Docker> {
    let docker = Docker::connect_with_local_defaults()
        .context("cannot set up a client for the local docker engine")?;
    docker.negotiate_version().await.context(
        "cannot reach the local docker engine (is dockerd running and /var/run/docker.sock writable?); \
         these tests need real Docker and never skip",
    )
}
