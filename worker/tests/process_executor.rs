//! The process executor against real processes: exit codes, streams, environment, working
//! directory, timeout and cancellation of the whole process group.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use vishwa_integration_tests::poll::wait_until;
use vishwa_worker::executor::process::ProcessExecutor;
use vishwa_worker::executor::{ExecutorError, ExitReport};

use common::{exec, run_collecting, shell, start_attempt, task};

/// Longer than any stop may take here (SIGTERM, the kill grace, SIGKILL, reaping).
const STOP_LIMIT: Duration = Duration::from_secs(4);

/// Whether `pid` is gone: no such process, or only a zombie left for its new parent to reap.
fn process_is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state is the field after the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

fn first_line_as_pid(output: &[u8]) -> u32 {
    let text = String::from_utf8_lossy(output);
    let line = text.lines().next().unwrap_or_default();
    line.trim()
        .parse()
        .unwrap_or_else(|_| panic!("expected a pid on the first line of {text:?}"))
}

async fn assert_process_gone(pid: u32) {
    assert!(
        wait_until(
            Duration::from_secs(3),
            || async move { process_is_gone(pid) }
        )
        .await,
        "process {pid} outlived its attempt"
    );
}

#[tokio::test]
async fn exit_zero_is_reported_with_the_pid_as_handle() {
    let task = task("exit-zero", exec(&["true"]));
    let (result, collected) =
        run_collecting(&ProcessExecutor::new(), &task, CancellationToken::new()).await;
    assert_eq!(result.unwrap(), ExitReport::Exited { code: 0 });
    assert_eq!(collected.started.len(), 1);
    let pid: u32 = collected.started[0].parse().expect("the handle is a pid");
    assert!(process_is_gone(pid));
}

#[tokio::test]
async fn non_zero_exit_code_is_reported() {
    let task = task("exit-three", shell("exit 3"));
    let (result, _) =
        run_collecting(&ProcessExecutor::new(), &task, CancellationToken::new()).await;
    assert_eq!(result.unwrap(), ExitReport::Exited { code: 3 });
}

#[tokio::test]
async fn death_by_signal_is_reported_as_128_plus_the_signal() {
    let task = task("killed-by-signal", shell("kill -9 $$"));
    let (result, _) =
        run_collecting(&ProcessExecutor::new(), &task, CancellationToken::new()).await;
    assert_eq!(result.unwrap(), ExitReport::Exited { code: 137 });
}

#[tokio::test]
async fn stdout_and_stderr_are_captured_separately_and_in_order() {
    let script = "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done";
    let task = task("streams", shell(script));
    let (result, collected) =
        run_collecting(&ProcessExecutor::new(), &task, CancellationToken::new()).await;
    assert_eq!(result.unwrap(), ExitReport::Exited { code: 0 });
    assert!(collected.started_before_output);
    assert_eq!(collected.stdout_text(), "out1\nout2\nout3\nout4\nout5\n");
    assert_eq!(collected.stderr_text(), "err1\nerr2\nerr3\nerr4\nerr5\n");
}

#[tokio::test]
async fn large_output_arrives_whole() {
    let task = task("large-output", shell("seq 1 200000"));
    let (result, collected) =
        run_collecting(&ProcessExecutor::new(), &task, CancellationToken::new()).await;
    assert_eq!(result.unwrap(), ExitReport::Exited { code: 0 });
    let expected: String = (1..=200_000).map(|n| format!("{n}\n")).collect();
    assert_eq!(collected.stdout_text(), expected);
}

#[tokio::test]
async fn bytes_that_are_not_utf8_arrive_intact() {
    let task = task("not-utf8", exec(&["printf", r"\377\376ok\200"]));
    let (result, collected) =
        run_collecting(&ProcessExecutor::new(), &task, CancellationToken::new()).await;
    assert_eq!(result.unwrap(), ExitReport::Exited { code: 0 });
    assert_eq!(collected.stdout, b"\xff\xfeok\x80");
}

#[tokio::test]
async fn task_env_is_added_to_the_workers_environment() {
    // `env` itself is found through the worker's PATH.
    let mut task = task("env", exec(&["env"]));
    task.env = BTreeMap::from([("GREETING".to_string(), "hello world".to_string())]);
    let (result, collected) =
        run_collecting(&ProcessExecutor::new(), &task, CancellationToken::new()).await;
    assert_eq!(result.unwrap(), ExitReport::Exited { code: 0 });
    let stdout = collected.stdout_text();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.contains(&"GREETING=hello world"), "{stdout}");
    let path = format!("PATH={}", std::env::var("PATH").unwrap());
    assert!(lines.contains(&path.as_str()), "{stdout}");
}

#[tokio::test]
async fn working_directory_is_the_dags_folder() {
    let dag_dir = tempfile::tempdir().unwrap();
    std::fs::write(dag_dir.path().join("data.txt"), "payload\n").unwrap();
    let mut task = task("local-dir", shell("pwd; cat data.txt"));
    task.local_dir = Some(dag_dir.path().to_path_buf());
    let (result, collected) =
        run_collecting(&ProcessExecutor::new(), &task, CancellationToken::new()).await;
    assert_eq!(result.unwrap(), ExitReport::Exited { code: 0 });
    let canonical = dag_dir.path().canonicalize().unwrap();
    assert_eq!(
        collected.stdout_text(),
        format!("{}\npayload\n", canonical.display())
    );
}

#[tokio::test]
async fn without_a_dag_folder_the_attempt_gets_a_scratch_directory_removed_afterwards() {
    let task = task("scratch-dir", shell("pwd; touch made-here"));
    let (result, collected) =
        run_collecting(&ProcessExecutor::new(), &task, CancellationToken::new()).await;
    assert_eq!(result.unwrap(), ExitReport::Exited { code: 0 });
    let scratch = collected.stdout_text().trim().to_string();
    assert!(scratch.contains("vishwa-attempt-"), "{scratch}");
    assert!(!std::path::Path::new(&scratch).exists());
}

#[tokio::test]
async fn missing_working_directory_is_a_spawn_error() {
    let mut task = task("missing-dir", exec(&["true"]));
    task.local_dir = Some("/nonexistent/vishwa/dag".into());
    let (result, _) =
        run_collecting(&ProcessExecutor::new(), &task, CancellationToken::new()).await;
    let error = result.unwrap_err();
    assert!(matches!(error, ExecutorError::Spawn { .. }), "{error:?}");
    assert!(
        error.to_string().contains("/nonexistent/vishwa/dag"),
        "{error}"
    );
}

#[tokio::test]
async fn program_not_found_is_a_spawn_error_that_is_not_transient() {
    let task = task("not-found", exec(&["vishwa-no-such-program", "--flag"]));
    let (result, collected) =
        run_collecting(&ProcessExecutor::new(), &task, CancellationToken::new()).await;
    let error = result.unwrap_err();
    match &error {
        ExecutorError::Spawn { program, .. } => assert_eq!(program, "vishwa-no-such-program"),
        other => panic!("expected a spawn error, got {other:?}"),
    }
    assert!(!error.is_transient());
    assert!(collected.started.is_empty());
}

#[tokio::test]
async fn a_stage_without_command_is_refused() {
    let task = task("no-command", None);
    let (result, _) =
        run_collecting(&ProcessExecutor::new(), &task, CancellationToken::new()).await;
    assert!(matches!(result, Err(ExecutorError::MissingCommand)));
}

#[tokio::test]
async fn output_is_streamed_before_a_newline_or_the_exit() {
    let executor = Arc::new(ProcessExecutor::new());
    let mut attempt = start_attempt(
        executor,
        task("unbuffered", shell("printf partial; sleep 30")),
    );
    attempt
        .wait_for("the partial line", Duration::from_secs(5), |seen| {
            seen.stdout == b"partial"
        })
        .await;
    attempt.cancel.cancel();
    let (result, _) = attempt.finish().await;
    assert_eq!(result.unwrap(), ExitReport::Cancelled);
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let mut task = task("timeout", shell("sleep 100 & echo $!; sleep 100"));
    task.timeout = Some(Duration::from_millis(300));
    let started = Instant::now();
    let (result, collected) =
        run_collecting(&ProcessExecutor::new(), &task, CancellationToken::new()).await;
    assert_eq!(result.unwrap(), ExitReport::TimedOut);
    assert!(started.elapsed() < Duration::from_millis(300) + STOP_LIMIT);
    assert_eq!(
        String::from_utf8_lossy(&collected.system),
        "timed out after 300ms; stopping the process group\n"
    );
    let grandchild = first_line_as_pid(&collected.stdout);
    assert_process_gone(grandchild).await;
    assert_process_gone(collected.started[0].parse().unwrap()).await;
}

#[tokio::test]
async fn cancellation_kills_the_whole_process_group() {
    let executor = Arc::new(ProcessExecutor::new());
    let mut attempt = start_attempt(
        executor,
        task("cancel", shell("sleep 100 & echo $!; sleep 100")),
    );
    attempt
        .wait_for("the grandchild's pid", Duration::from_secs(5), |seen| {
            seen.stdout.ends_with(b"\n")
        })
        .await;
    let grandchild = first_line_as_pid(&attempt.collected.stdout);
    let cancelled_at = Instant::now();
    attempt.cancel.cancel();
    let (result, collected) = attempt.finish().await;
    assert_eq!(result.unwrap(), ExitReport::Cancelled);
    assert!(cancelled_at.elapsed() < STOP_LIMIT);
    assert_process_gone(grandchild).await;
    assert_process_gone(collected.started[0].parse().unwrap()).await;
}

#[tokio::test]
async fn a_stage_ignoring_sigterm_is_killed_after_the_grace() {
    let executor = ProcessExecutor::new().with_kill_grace(Duration::from_millis(200));
    let mut task = task("ignores-term", shell("trap '' TERM; sleep 100"));
    task.timeout = Some(Duration::from_millis(200));
    let started = Instant::now();
    let (result, _) = run_collecting(&executor, &task, CancellationToken::new()).await;
    assert_eq!(result.unwrap(), ExitReport::TimedOut);
    assert!(started.elapsed() < Duration::from_millis(400) + STOP_LIMIT);
}

#[tokio::test]
async fn background_jobs_left_behind_are_killed_when_the_command_ends() {
    let task = task("leftover", shell("sleep 100 & echo $!"));
    let started = Instant::now();
    let (result, collected) =
        run_collecting(&ProcessExecutor::new(), &task, CancellationToken::new()).await;
    assert_eq!(result.unwrap(), ExitReport::Exited { code: 0 });
    // Not held up by the background job keeping stdout open.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_process_gone(first_line_as_pid(&collected.stdout)).await;
}

#[tokio::test]
async fn a_closed_event_sink_does_not_stop_the_attempt() {
    let task = task("closed-sink", shell("seq 1 100000; exit 4"));
    let (events, receiver) = tokio::sync::mpsc::channel(1);
    drop(receiver);
    let result = vishwa_worker::executor::Executor::run(
        &ProcessExecutor::new(),
        &task,
        events,
        CancellationToken::new(),
    )
    .await;
    assert_eq!(result.unwrap(), ExitReport::Exited { code: 4 });
}

#[tokio::test]
async fn a_chain_of_true_processes_costs_a_few_milliseconds_each() {
    let executor = ProcessExecutor::new();
    const CHAIN: u32 = 50;
    let started = Instant::now();
    for _ in 0..CHAIN {
        let task = task("chain", exec(&["true"]));
        let (result, _) = run_collecting(&executor, &task, CancellationToken::new()).await;
        assert_eq!(result.unwrap(), ExitReport::Exited { code: 0 });
    }
    let per_attempt = started.elapsed() / CHAIN;
    println!("process executor: {per_attempt:?} per `true` attempt");
    // Generous for loaded CI machines; a sleep or poll on the happy path would blow it.
    assert!(per_attempt < Duration::from_millis(50), "{per_attempt:?}");
}
