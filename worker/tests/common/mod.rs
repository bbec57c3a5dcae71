//! Helpers shared by the executor tests: unique tasks and a run that collects every event.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vishwa_integration_tests::names::unique_name;
use vishwa_worker::executor::{
    CommandSpec, ExecEvent, Executor, ExecutorError, ExitReport, OutputStream, TaskSpec,
};

/// Room in the event channel: small, so that the executors' back-pressure is exercised.
const EVENT_BUFFER: usize = 16;

/// An attempt id no other test (in this or a concurrent test process) uses.
pub(crate) fn unique_attempt_id(test: &str) -> String {
    unique_name(test)
}

/// A task for `test` with a fresh attempt id; the image is filled in by Docker tests.
pub(crate) fn task(test: &str, command: Option<CommandSpec>) -> TaskSpec {
    TaskSpec {
        run_id: format!("run-{test}"),
        dag: "executor-tests".to_string(),
        stage: test.to_string(),
        attempt_id: unique_attempt_id(test),
        attempt: 1,
        worker: "w-test".into(),
        image: String::new(),
        command,
        env: BTreeMap::new(),
        local_dir: None,
        timeout: None,
        mounts: Vec::new(),
        cpus: None,
        memory_bytes: None,
        gpus: Vec::new(),
    }
}

pub(crate) fn shell(script: &str) -> Option<CommandSpec> {
    Some(CommandSpec::Shell(script.to_string()))
}

pub(crate) fn exec(argv: &[&str]) -> Option<CommandSpec> {
    Some(CommandSpec::Exec(
        argv.iter().map(|arg| arg.to_string()).collect(),
    ))
}

/// Everything an attempt reported, in order.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub(crate) started: Vec<String>,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    pub(crate) system: Vec<u8>,
    /// Whether `Started` came before every output chunk of the stage itself.
    pub(crate) started_before_output: bool,
}

impl Collected {
    pub(crate) fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub(crate) fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    fn record(&mut self, event: ExecEvent) {
        match event {
            ExecEvent::Started { handle } => {
                self.started_before_output = self.stdout.is_empty() && self.stderr.is_empty();
                self.started.push(handle);
            }
            ExecEvent::Output(chunk) => match chunk.stream {
                OutputStream::Stdout => self.stdout.extend_from_slice(&chunk.data),
                OutputStream::Stderr => self.stderr.extend_from_slice(&chunk.data),
                OutputStream::System => self.system.extend_from_slice(&chunk.data),
            },
        }
    }
}

/// Runs one attempt to its end, collecting its events; the result comes only once the executor
/// dropped every sender, which also checks that nothing of the attempt keeps running.
pub(crate) async fn run_collecting(
    executor: &dyn Executor,
    task: &TaskSpec,
    cancel: CancellationToken,
) -> (Result<ExitReport, ExecutorError>, Collected) {
    let (events, mut receiver) = mpsc::channel(EVENT_BUFFER);
    let collect = async {
        let mut collected = Collected::default();
        while let Some(event) = receiver.recv().await {
            collected.record(event);
        }
        collected
    };
    tokio::join!(executor.run(task, events, cancel), collect)
}

/// An attempt running in the background, for tests that act while it runs.
pub(crate) struct RunningAttempt {
    receiver: mpsc::Receiver<ExecEvent>,
    run: JoinHandle<Result<ExitReport, ExecutorError>>,
    pub(crate) cancel: CancellationToken,
    pub(crate) collected: Collected,
}

pub(crate) fn start_attempt(executor: Arc<dyn Executor>, task: TaskSpec) -> RunningAttempt {
    let (events, receiver) = mpsc::channel(EVENT_BUFFER);
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let cancel = cancel.clone();
        async move { executor.run(&task, events, cancel).await }
    });
    RunningAttempt {
        receiver,
        run,
        cancel,
        collected: Collected::default(),
    }
}

impl RunningAttempt {
    /// Reads events until `condition` holds; panics if the attempt ends or `limit` passes first.
    pub(crate) async fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        condition: impl Fn(&Collected) -> bool,
    ) {
        let reading = async {
            while !condition(&self.collected) {
                match self.receiver.recv().await {
                    Some(event) => self.collected.record(event),
                    None => panic!("the attempt ended before {what}: {:?}", self.collected),
                }
            }
        };
        if tokio::time::timeout(limit, reading).await.is_err() {
            panic!("no {what} within {limit:?}: {:?}", self.collected);
        }
    }

    /// Reads the remaining events and returns the attempt's result.
    pub(crate) async fn finish(mut self) -> (Result<ExitReport, ExecutorError>, Collected) {
        while let Some(event) = self.receiver.recv().await {
            self.collected.record(event);
        }
        let result = self.run.await.expect("the executor's run panicked");
        (result, self.collected)
    }
}
