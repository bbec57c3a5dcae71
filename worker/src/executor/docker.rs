//! The Docker executor: one container per attempt, through bollard.

use tokio_util::sync::CancellationToken;

use super::{EventSink, ExecutorError, ExitReport, TaskSpec};

/// Placeholder until the executor lands.
pub struct DockerExecutor;

impl DockerExecutor {
    /// Connects to the local engine.
    pub async fn connect() -> Result<Self, ExecutorError> {
        Ok(DockerExecutor)
    }
}

#[async_trait::async_trait]
impl super::Executor for DockerExecutor {
    async fn run(
        &self,
        _task: &TaskSpec,
        _events: EventSink,
        _cancel: CancellationToken,
    ) -> Result<ExitReport, ExecutorError> {
        unimplemented!()
    }
}
