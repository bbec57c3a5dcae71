//! Running whole commands as a user types them: finding (and building) the release `vishwa`
//! binary, and timing a command from spawn to exit.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The release `vishwa` binary: `explicit` if given, else the one beside this harness in the
/// same target directory, built first with `cargo build --release -p vishwa-cli` so the figures
/// are for the current source.
pub(crate) fn vishwa_binary(explicit: Option<&Path>, build: bool) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    let exe = std::env::current_exe().context("cannot locate the harness binary")?;
    let dir = exe
        .parent()
        .context("the harness binary has no parent directory")?;
    let binary = dir.join("vishwa");
    if build {
        eprintln!("building the release vishwa binary (cargo build --release -p vishwa-cli)");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--quiet",
                "-p",
                "vishwa-cli",
                "--bin",
                "vishwa",
            ])
            .current_dir(workspace_root())
            .status()
            .context("cannot run cargo to build vishwa")?;
        if !status.success() {
            bail!("cargo build --release -p vishwa-cli failed");
        }
    }
    if !binary.is_file() {
        bail!(
            "{} does not exist; build it with `cargo build --release -p vishwa-cli` or pass \
             --vishwa",
            binary.display()
        );
    }
    Ok(binary)
}

/// The workspace's root folder (where BENCHMARKS.md lives).
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs `command` to its end with output captured (as a pipe, like a user's `| less` would)
/// and returns its wall time; fails when it exits non-zero.
pub(crate) fn time_command(command: &mut Command) -> Result<Duration> {
    let shown = format!("{command:?}");
    command.stdin(Stdio::null());
    let start = Instant::now();
    let output = command
        .output()
        .with_context(|| format!("cannot start {shown}"))?;
    let elapsed = start.elapsed();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let tail: Vec<&str> = stdout.lines().rev().take(5).collect();
        bail!(
            "{shown} failed ({}):\n{}\n{}",
            output.status,
            stderr.trim_end(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(elapsed)
}

/// Whether `program` can be started at all (`program --version` runs).
pub(crate) fn is_available(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
