//! `vishwa`: the one binary. Client verbs that speak gRPC to a scheduler, the scheduler and
//! worker servers, `vishwa dev` (both in one process) and `vishwa run` (one DAG, embedded).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// `println!` that does not panic when stdout is closed (`vishwa run ... | head`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `print!` that does not panic when stdout is closed.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod bundle;
mod client;
mod commands;
mod load;
mod loglines;
mod output;
mod reconnect;
mod watch;

use output::Format;

/// Workflow orchestration for ML pipelines: DAGs of stages in Docker containers.
#[derive(Debug, Parser)]
#[command(name = "vishwa", version, about, max_term_width = 100)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Verb,
}

/// Options every client verb takes.
#[derive(Debug, Clone, Args)]
pub(crate) struct Global {
    /// The scheduler's URL.
    #[arg(
        long,
        global = true,
        env = "VISHWA_SERVER",
        default_value = "http://127.0.0.1:7070"
    )]
    server: String,
    /// Bearer token sent with every call.
    #[arg(long, global = true, env = "VISHWA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) to trust for an https:// scheduler [default: the system's roots].
    #[arg(long, global = true, env = "VISHWA_TLS_CA", value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// How long a call may wait for the scheduler's answer (a stream like --watch or
    /// `logs -f`: for its start, not its whole life).
    #[arg(
        long,
        global = true,
        env = "VISHWA_TIMEOUT",
        value_parser = commands::serve::parse_duration,
        default_value = "30s"
    )]
    timeout: std::time::Duration,
    /// Output: tables for people, JSON for scripts.
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        value_enum,
        default_value = "table"
    )]
    format: Format,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Verb {
    /// Run one DAG to completion here, scheduler and worker embedded; exit code = outcome.
    Run(commands::run::RunArgs),
    /// A scheduler and one local worker in one process, DAGs loaded from a folder.
    Dev(commands::serve::DevArgs),
    /// Serve the scheduler.
    Scheduler(commands::serve::SchedulerArgs),
    /// Run a worker that takes stages from a scheduler.
    Worker(commands::serve::WorkerArgs),
    /// Copy a scheduler's state into another store (stop the scheduler first).
    Migrate(commands::migrate::MigrateArgs),
    /// Check DAG files; errors name file:line:col.
    Validate {
        /// DAG files or folders holding dag.yaml.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Show a DAG's graph as text, or as Graphviz with --dot.
    Graph {
        /// A DAG file or folder, or the name of a registered DAG.
        target: String,
        /// Print Graphviz DOT.
        #[arg(long)]
        dot: bool,
    },
    /// Register or update a DAG (a file, or a folder holding dag.yaml).
    Submit { path: PathBuf },
    /// List registered DAGs with their schedule and last run.
    Dags,
    /// Start a run of a registered DAG.
    Trigger {
        dag: String,
        /// Parameter override, `name=value`; repeatable.
        #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Follow the run to its end; the exit code is its outcome.
        #[arg(long)]
        watch: bool,
        /// Run every stage, even those whose result is in the cache (results still fill it).
        #[arg(long)]
        no_cache: bool,
    },
    /// List runs, newest first; `runs delete` and `runs prune` delete finished runs.
    #[command(args_conflicts_with_subcommands = true)]
    Runs {
        #[command(subcommand)]
        action: Option<RunsAction>,
        /// Only runs of this DAG.
        #[arg(long)]
        dag: Option<String>,
        /// Only runs in this state.
        #[arg(long, value_parser = ["queued", "running", "succeeded", "failed", "cancelled"])]
        state: Option<String>,
        /// How many runs to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// A run's stages: states, attempts, durations, workers.
    Get { run: String },
    /// A run's logs, or one stage's; -f follows until the run ends.
    Logs {
        run: String,
        stage: Option<String>,
        /// Keep following new output until the run ends.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Cancel a run: running stages are stopped, the rest will not start.
    Cancel { run: String },
    /// Approve a stage waiting for approval (`approval:` in the DAG): it runs. Operator role.
    Approve {
        run: String,
        /// The stage (every waiting instance of it) or one instance, `stage[item]`.
        stage: String,
    },
    /// Reject a stage waiting for approval: it fails with the reason, and what needs it
    /// follows its trigger rule. Operator role.
    Reject {
        run: String,
        stage: String,
        /// Why; kept on the stage and in the audit log.
        #[arg(long)]
        reason: String,
    },
    /// Workers: labels, capacity, what they use and run, last heartbeat.
    Workers {
        #[command(subcommand)]
        action: Option<WorkersAction>,
    },
    /// Run a failed or cancelled run again: its failed stages and what follows them, or
    /// STAGE and what follows it (--from), or STAGE alone (--from STAGE --only).
    Retry {
        run: String,
        /// Run this stage and everything downstream of it again.
        #[arg(long, value_name = "STAGE")]
        from: Option<String>,
        /// With --from: only that stage, not what follows it.
        #[arg(long, requires = "from")]
        only: bool,
        /// Follow the run to its end; the exit code is its outcome.
        #[arg(long)]
        watch: bool,
    },
    /// Stop a DAG's schedule from starting runs (kept across restarts).
    Pause(commands::schedule_verbs::PauseArgs),
    /// Let a paused DAG's schedule start runs again.
    Resume(commands::schedule_verbs::ResumeArgs),
    /// Create one run per schedule slot in a range; slots that have a run are left alone.
    Backfill(commands::schedule_verbs::BackfillArgs),
    /// The next fire times of a DAG's schedule, in its zone and in UTC.
    Next(commands::schedule_verbs::NextArgs),
    /// A run's outputs with digests and consumers; `get` downloads one, `which` tells
    /// where a digest came from and where it went.
    Artifacts(commands::artifacts::ArtifactsArgs),
    /// Data assets: versions, the runs that published them and the runs that consumed them.
    Assets(commands::assets::AssetsArgs),
    /// Params and metrics of runs side by side, one column per run.
    Compare {
        /// Run ids.
        #[arg(required = true, num_args = 1..)]
        runs: Vec<String>,
    },
    /// Secrets stored (encrypted) in the scheduler, for stages' `env: {KEY: {secret: NAME}}`.
    Secret {
        #[command(subcommand)]
        action: SecretAction,
    },
    /// The audit log: who changed what, when, and how it went (admin only).
    Audit {
        /// How many of the newest entries to show.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RunsAction {
    /// Delete finished runs with their logs, stage records and the outputs no other run uses
    /// (admin only). A run still queued or running is refused: cancel it first.
    Delete {
        #[arg(required = true, num_args = 1.., value_name = "RUN")]
        runs: Vec<String>,
    },
    /// Delete the finished runs that ended longer ago than AGE and/or are past the newest N
    /// of their DAG (admin only).
    #[command(group(clap::ArgGroup::new("rule").required(true).multiple(true).args(["older_than", "keep"])))]
    Prune {
        /// e.g. 7d, 12h.
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        older_than: Option<std::time::Duration>,
        /// Keep the newest N finished runs of each DAG.
        #[arg(long, value_name = "N")]
        keep: Option<u32>,
    },
}

/// An age or retention period such as `7d` or `12h`.
pub(crate) fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e}; write e.g. 7d, 12h or 30d"))
}

#[derive(Debug, Subcommand)]
pub(crate) enum SecretAction {
    /// Store a secret; the value is read from stdin (nothing is echoed).
    Set { name: String },
    /// Secret names and when they were set; never values.
    List,
    /// Remove a secret.
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum WorkersAction {
    /// Stop handing stages to a worker; what it runs finishes.
    Drain { name: String },
    /// Hand stages to a drained worker again.
    Undrain { name: String },
}

/// Exit codes, documented in the README.
pub(crate) mod exit {
    /// The command or run succeeded.
    pub(crate) const OK: u8 = 0;
    /// The run failed, or the command could not be carried out.
    pub(crate) const FAILED: u8 = 1;
    /// Invalid input: a bad DAG file, parameter or flag.
    pub(crate) const INVALID: u8 = 2;
    /// The run was cancelled.
    pub(crate) const CANCELLED: u8 = 3;
}

fn main() -> ExitCode {
    vishwa_scheduler::tls::install_crypto_provider();
    let args = commands::artifacts::artifacts_get_output_flag(std::env::args_os().collect());
    let cli = Cli::parse_from(args);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let result = runtime.block_on(commands::dispatch(cli.command, cli.global));
    // Do not wait on blocking tasks still reading a terminal or a socket.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if let Some(invalid) = e.downcast_ref::<load::Invalid>() {
                eprintln!("{}", invalid.0.trim_end());
                return ExitCode::from(exit::INVALID);
            }
            eprintln!("error: {e:#}");
            ExitCode::from(exit::FAILED)
        }
    }
}
