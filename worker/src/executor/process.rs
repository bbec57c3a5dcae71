//! The process executor: one local process group per attempt, on the worker's host.

use tokio_util::sync::CancellationToken;

use super::{EventSink, ExecutorError, ExitReport, TaskSpec};

/// Placeholder until the executor lands.
#[derive(Default)]
pub struct ProcessExecutor;

impl ProcessExecutor {
    /// A process executor.
    pub fn new() -> Self {
        ProcessExecutor
    }
}

#[async_trait::async_trait]
impl super::Executor for ProcessExecutor {
    async fn run(
        &self,
        _task: &TaskSpec,
        _events: EventSink,
        _cancel: CancellationToken,
    ) -> Result<ExitReport, ExecutorError> {
        unimplemented!()
    }
}
