//! Child processes under test: a command run to its end with a deadline (its output in files,
//! so no pipe can fill up), what it printed, and stopping a child the way a service manager
//! does (SIGTERM, then SIGKILL after a grace period).

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::poll::wait_until_blocking;

/// How often a child is checked for having exited.
const EXIT_POLL: Duration = Duration::from_millis(10);

/// The `vishwa` binary of this build, next to the test executable (`target/<profile>/vishwa`);
/// `VISHWA_BIN` overrides it. Cargo builds it for the CLI crate's tests, which also know it
/// as `env!("CARGO_BIN_EXE_vishwa")`.
pub fn vishwa_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("VISHWA_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable has no path");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/vishwa
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable is not in target/<profile>/deps");
    profile_dir.join("vishwa")
}

/// A `vishwa` command that takes no server, token, CA or log level from the environment,
/// and whose HTTP port (a scheduler's, `dev`'s, `run`'s) is any free loopback port, so tests
/// in parallel never fight over 7071.
pub fn vishwa_command(binary: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(binary);
    command
        .args(args)
        .env("VISHWA_HTTP", "127.0.0.1:0")
        .env_remove("VISHWA_SERVER")
        .env_remove("VISHWA_SCHEDULER")
        .env_remove("VISHWA_TOKEN")
        .env_remove("VISHWA_TOKENS")
        .env_remove("VISHWA_TLS_CA")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    command
}

/// Arguments of `vishwa scheduler` listening on `addr` (HTTP on any free loopback port) with
/// its store in `data`, then `extra`. The scheduler prints its HTTP port's URL on a line
/// [`http_url_in`] finds.
pub fn scheduler_args(data: &Path, addr: SocketAddr, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "scheduler".to_owned(),
        "--listen".to_owned(),
        addr.to_string(),
        "--http".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--data".to_owned(),
        data.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// The HTTP port's URL a `vishwa scheduler` printed in `output` (its stderr): the last one,
/// as a restarted scheduler appends to the same log.
pub fn http_url_in(output: &str) -> Option<String> {
    const MARK: &str = "vishwa scheduler: HTTP on ";
    output.lines().rev().find_map(|line| {
        let rest = &line[line.find(MARK)? + MARK.len()..];
        rest.split_whitespace().next().map(str::to_owned)
    })
}

/// What a finished command printed and how it exited.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// The raw stdout, for output that need not be UTF-8.
    pub stdout_bytes: Vec<u8>,
}

impl Outcome {
    /// An outcome from the raw streams.
    pub fn new(status: ExitStatus, stdout: Vec<u8>, stderr: &[u8]) -> Outcome {
        Outcome {
            status,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(stderr).into_owned(),
            stdout_bytes: stdout,
        }
    }

    /// Whether it exited with 0.
    pub fn ok(&self) -> bool {
        self.status.success()
    }

    /// The exit code; panics if the process was killed by a signal.
    #[track_caller]
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("the process was killed by a signal: {self}"))
    }

    /// Panics, showing both streams, unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.status.code(),
            Some(code),
            "unexpected exit code: {self}"
        );
        self
    }

    /// Panics, showing both streams, unless the command succeeded.
    #[track_caller]
    pub fn expect_ok(self, what: &str) -> Outcome {
        assert!(self.ok(), "{what} failed: {self}");
        self
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `command` with its output in files (no pipe can fill up) and a deadline; panics,
/// showing what it printed, if it takes longer than `limit`.
pub fn run_to_end(mut command: Command, limit: Duration) -> Outcome {
    let dir = tempfile::tempdir().expect("cannot create a temporary directory");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut child = command
        .stdout(File::create(&out_path).expect("cannot create a stdout file"))
        .stderr(File::create(&err_path).expect("cannot create a stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("cannot poll a child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} did not finish within {limit:?}; stdout:\n{}\nstderr:\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default(),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(EXIT_POLL);
    };
    let stdout = std::fs::read(&out_path).unwrap_or_default();
    let stderr = std::fs::read(&err_path).unwrap_or_default();
    Outcome::new(status, stdout, &stderr)
}

/// Whether `child` has exited.
pub fn has_exited(child: &mut Child) -> bool {
    matches!(child.try_wait(), Ok(Some(_)))
}

/// Sends `signal` to `child`.
pub fn signal(child: &Child, signal: Signal) -> nix::Result<()> {
    let pid = i32::try_from(child.id()).expect("pids fit in i32");
    kill(Pid::from_raw(pid), signal)
}

/// Asks `child` to stop with SIGTERM and kills it if it is still there after `grace`; returns
/// whether it stopped on its own. Does nothing to a child that already exited.
pub fn stop(child: &mut Child, grace: Duration) -> bool {
    if has_exited(child) {
        return true;
    }
    let _ = signal(child, Signal::SIGTERM);
    let stopped = wait_until_blocking(grace, EXIT_POLL, || has_exited(child));
    if !stopped {
        let _ = child.kill();
        let _ = child.wait();
    }
    stopped
}

/// Sends SIGTERM to `child` and waits up to `limit`; returns its exit status and how long it
/// took. Past `limit` it is killed and the test fails, naming `what`.
pub fn terminate(child: &mut Child, what: &str, limit: Duration) -> (ExitStatus, Duration) {
    let started = Instant::now();
    signal(child, Signal::SIGTERM).expect("cannot send SIGTERM");
    loop {
        if let Some(status) = child.try_wait().expect("cannot poll a child") {
            return (status, started.elapsed());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {limit:?} of SIGTERM");
        }
        std::thread::sleep(EXIT_POLL);
    }
}

/// The last `lines` lines of a log file (empty when it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_to_end_keeps_both_streams_and_the_exit_code() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo out; echo err >&2; exit 3"]);
        let outcome = run_to_end(command, Duration::from_secs(30));
        assert_eq!(outcome.code(), 3);
        assert_eq!(outcome.stdout, "out\n");
        assert_eq!(outcome.stderr, "err\n");
        assert!(!outcome.ok());
    }

    #[test]
    fn stop_ends_a_child_that_ignores_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        let script = format!("trap '' TERM; touch {}; exec sleep 30", ready.display());
        let mut child = Command::new("sh").args(["-c", &script]).spawn().unwrap();
        assert!(wait_until_blocking(
            Duration::from_secs(30),
            EXIT_POLL,
            || ready.exists()
        ));
        let stopped = stop(&mut child, Duration::from_millis(300));
        assert!(!stopped, "the child ignored SIGTERM yet stopped on its own");
        assert!(has_exited(&mut child));
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        assert_eq!(log_tail(&path, 2), "b\nc");
        assert_eq!(log_tail(&dir.path().join("none"), 2), "");
    }
}
