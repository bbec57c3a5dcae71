//! The process executor: one local process group per attempt, on the worker's host.
//!
//! The command runs in a process group of its own, with the task's environment on top of the
//! worker's, stdin from `/dev/null` and stdout/stderr streamed as raw chunks as they are read.
//! Its working directory is the DAG's folder, or a scratch directory made for the attempt and
//! removed afterwards.
//!
//! Stopping (timeout or cancellation) sends SIGTERM to the whole group, then SIGKILL after the
//! kill grace ([`DEFAULT_KILL_GRACE`]), so a stage may flush and clean up but cannot outstay
//! its welcome. Whatever is left in the group when the command ends (background jobs it did not
//! wait for) is killed too: nothing outlives the attempt, and the output pipes reach their end.

use std::io::ErrorKind;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, warn};

use super::support::{offer_system_line, sleep_until_deadline};
use super::{
    CommandSpec, EventSink, ExecEvent, Executor, ExecutorError, ExitReport, OutputChunk,
    OutputStream, TaskSpec,
};

/// Default time between SIGTERM and SIGKILL when an attempt is stopped.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(1);

/// How much is read from a pipe at once at most.
const READ_CHUNK: usize = 16 * 1024;
/// How long output may keep arriving once the process group is dead. Only a process that left
/// the group (`setsid`) while holding the pipes can make it last; the rest is then dropped.
const OUTPUT_DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Runs each attempt as a local process (in its own process group).
#[derive(Debug, Clone)]
pub struct ProcessExecutor {
    kill_grace: Duration,
}

impl Default for ProcessExecutor {
    fn default() -> Self {
        Self {
            kill_grace: DEFAULT_KILL_GRACE,
        }
    }
}

impl ProcessExecutor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the time between SIGTERM and SIGKILL when an attempt is stopped; zero sends SIGKILL
    /// straight away.
    pub fn with_kill_grace(mut self, kill_grace: Duration) -> Self {
        self.kill_grace = kill_grace;
        self
    }

    /// Stops the group: SIGTERM, then SIGKILL once the grace is over; returns once the leader is
    /// reaped.
    async fn stop(&self, child: &mut Child, group: &ProcessGroup) {
        if !self.kill_grace.is_zero() {
            group.signal(Signal::SIGTERM);
            if tokio::time::timeout(self.kill_grace, child.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        group.signal(Signal::SIGKILL);
        if let Err(error) = child.wait().await {
            warn!(pid = group.leader, %error, "cannot reap a killed process");
        }
    }
}

#[async_trait::async_trait]
impl Executor for ProcessExecutor {
    async fn run(
        &self,
        task: &TaskSpec,
        events: EventSink,
        cancel: CancellationToken,
    ) -> Result<ExitReport, ExecutorError> {
        let argv = match &task.command {
            Some(CommandSpec::Exec(argv)) if !argv.is_empty() => argv.clone(),
            Some(CommandSpec::Shell(script)) => {
                vec!["/bin/sh".to_string(), "-c".to_string(), script.clone()]
            }
            Some(CommandSpec::Exec(_)) | None => return Err(ExecutorError::MissingCommand),
        };
        let program = &argv[0];
        if cancel.is_cancelled() {
            return Ok(ExitReport::Cancelled);
        }

        // Kept until the function returns: the scratch directory is removed on drop.
        let scratch;
        let workdir: PathBuf = match &task.local_dir {
            Some(dir) => dir.clone(),
            None => {
                scratch = tempfile::Builder::new()
                    .prefix("vishwa-attempt-")
                    .tempdir()
                    .map_err(|error| {
                        ExecutorError::Io(format!("cannot create a working directory: {error}"))
                    })?;
                scratch.path().to_path_buf()
            }
        };
        if !workdir.is_dir() {
            return Err(ExecutorError::Spawn {
                program: program.clone(),
                reason: format!("working directory {} does not exist", workdir.display()),
            });
        }

        let mut child = Command::new(program)
            .args(&argv[1..])
            .envs(&task.env)
            .current_dir(&workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| ExecutorError::Spawn {
                program: program.clone(),
                reason: spawn_failure_reason(program, &error),
            })?;
        let Some(pid) = child.id() else {
            return Err(ExecutorError::Io(
                "the process vanished as it started".to_string(),
            ));
        };
        // From here on the group is killed whatever happens, even if this future is dropped.
        let group = ProcessGroup {
            leader: pid,
            armed: true,
        };
        let deadline = task.timeout.map(|timeout| Instant::now() + timeout);
        let _ = events
            .send(ExecEvent::Started {
                handle: pid.to_string(),
            })
            .await;
        // Read only after `Started` went out, so that it comes first.
        let stdout = child.stdout.take().map(|pipe| {
            AbortOnDropHandle::new(tokio::spawn(pump(
                pipe,
                OutputStream::Stdout,
                events.clone(),
            )))
        });
        let stderr = child.stderr.take().map(|pipe| {
            AbortOnDropHandle::new(tokio::spawn(pump(
                pipe,
                OutputStream::Stderr,
                events.clone(),
            )))
        });

        let report = tokio::select! {
            status = child.wait() => match status {
                Ok(status) => ExitReport::Exited { code: exit_code(status) },
                Err(error) => {
                    self.stop(&mut child, &group).await;
                    return Err(ExecutorError::Io(format!("cannot wait for {program}: {error}")));
                }
            },
            () = cancel.cancelled() => {
                offer_system_line(&events, "cancelled; stopping the process group");
                self.stop(&mut child, &group).await;
                ExitReport::Cancelled
            }
            () = sleep_until_deadline(deadline) => {
                let timeout = task.timeout.unwrap_or_default();
                offer_system_line(&events, &format!("timed out after {timeout:?}; stopping the process group"));
                self.stop(&mut child, &group).await;
                ExitReport::TimedOut
            }
        };
        // Background jobs the command left behind would hold the pipes open.
        group.kill_leftovers();

        let drained = tokio::time::timeout(OUTPUT_DRAIN_LIMIT, async {
            for pump in [stdout, stderr].into_iter().flatten() {
                let _ = pump.await;
            }
        })
        .await;
        if drained.is_err() {
            warn!(attempt_id = %task.attempt_id, pid, "output pipes still open after the process group died; the rest is dropped");
        }
        debug!(attempt_id = %task.attempt_id, pid, ?report, "process attempt finished");
        Ok(report)
    }
}

/// The attempt's process group, killed (SIGKILL) when dropped while still armed.
struct ProcessGroup {
    /// The leader's pid, which is the group id.
    leader: u32,
    armed: bool,
}

impl ProcessGroup {
    fn signal(&self, signal: Signal) {
        let Ok(pgid) = i32::try_from(self.leader) else {
            return;
        };
        match killpg(Pid::from_raw(pgid), signal) {
            // Everyone in the group is gone already.
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(error) => warn!(pgid, %signal, %error, "cannot signal process group"),
        }
    }

    /// Kills what remains of the group after its leader ended, and disarms the guard. The group
    /// id cannot be handed to anyone else while a member lives; only if the group emptied and
    /// its id was reused as a new group's within the microseconds since the reap could this hit
    /// a stranger, the same narrow window every process supervisor has.
    fn kill_leftovers(mut self) {
        self.signal(Signal::SIGKILL);
        self.armed = false;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.armed {
            self.signal(Signal::SIGKILL);
        }
    }
}

/// Forwards what the pipe gives as soon as it gives it (no waiting for whole lines); keeps
/// reading after the sink closed so the process never blocks on a full pipe.
async fn pump<R>(mut pipe: R, stream: OutputStream, events: EventSink)
where
    R: AsyncRead + Unpin,
{
    let mut buffer = BytesMut::with_capacity(READ_CHUNK);
    let mut sink_open = true;
    loop {
        buffer.reserve(READ_CHUNK);
        match pipe.read_buf(&mut buffer).await {
            Ok(0) => return,
            Ok(_) => {
                let data = buffer.split().freeze();
                if sink_open {
                    let chunk = OutputChunk { stream, data };
                    sink_open = events.send(ExecEvent::Output(chunk)).await.is_ok();
                }
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => {
                warn!(?stream, %error, "reading process output failed");
                return;
            }
        }
    }
}

/// The exit code, or 128 + the signal's number for a process killed by a signal (as shells do).
fn exit_code(status: ExitStatus) -> i64 {
    match (status.code(), status.signal()) {
        (Some(code), _) => i64::from(code),
        (None, Some(signal)) => 128 + i64::from(signal),
        (None, None) => -1,
    }
}

fn spawn_failure_reason(program: &str, error: &std::io::Error) -> String {
    match error.kind() {
        ErrorKind::NotFound if program.contains('/') => format!("no such file ({error})"),
        ErrorKind::NotFound => format!("not found on PATH ({error})"),
        ErrorKind::PermissionDenied => format!("not executable ({error})"),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn exit_by_signal_is_reported_as_128_plus_the_signal() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
    }

    #[test]
    fn spawn_failures_say_where_the_program_was_looked_for() {
        let missing = std::io::Error::from(ErrorKind::NotFound);
        assert!(spawn_failure_reason("nope", &missing).starts_with("not found on PATH"));
        assert!(spawn_failure_reason("./nope", &missing).starts_with("no such file"));
    }
}
