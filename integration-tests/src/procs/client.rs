//! The CLI against the cluster (as its admin when it uses tokens), and runs watched through
//! `vishwa get`.

use std::fs::File;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{COMMAND_LIMIT, Cluster, RunView, lock, run_id_of};
use crate::auth::ADMIN_TOKEN;
use crate::names::unique_suffix;
use crate::process::Outcome;

impl Cluster {
    // ---- the CLI ----

    /// Runs `vishwa --server URL ARGS...` to its end.
    pub fn try_vishwa(&self, args: &[&str]) -> Outcome {
        let out = self.dir().join(format!("cli-{}.out", unique_suffix()));
        let err = out.with_extension("err");
        let mut child = self
            .cli_command(args)
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .expect("cannot start vishwa");
        let deadline = Instant::now() + COMMAND_LIMIT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("vishwa {args:?} did not finish within {COMMAND_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let outcome = Outcome::new(
            status,
            std::fs::read(&out).unwrap_or_default(),
            &std::fs::read(&err).unwrap_or_default(),
        );
        let _ = std::fs::remove_file(out);
        let _ = std::fs::remove_file(err);
        outcome
    }

    /// Runs `vishwa ARGS...` and panics unless it succeeds.
    pub fn vishwa(&self, args: &[&str]) -> Outcome {
        self.try_vishwa(args)
            .expect_ok(&format!("vishwa {}", args.join(" ")))
    }

    /// Starts `vishwa ARGS...` in the background with its output in `DIR/NAME.out` and
    /// `DIR/NAME.err`; it is killed when the cluster is dropped.
    pub fn spawn_cli(&self, name: &str, args: &[&str]) -> usize {
        let out = self.dir().join(format!("{name}.out"));
        let err = self.dir().join(format!("{name}.err"));
        let child = self
            .cli_command(args)
            .stdout(File::create(out).unwrap())
            .stderr(File::create(err).unwrap())
            .spawn()
            .expect("cannot start vishwa");
        let mut clients = lock(&self.clients);
        clients.push(child);
        clients.len() - 1
    }

    /// Waits up to `limit` for background client `index` to exit.
    pub fn wait_cli(&self, index: usize, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = lock(&self.clients)[index].try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What background client `name` printed on stdout and stderr so far.
    pub fn cli_output(&self, name: &str) -> (String, String) {
        let read = |ext: &str| {
            std::fs::read_to_string(self.dir().join(format!("{name}.{ext}"))).unwrap_or_default()
        };
        (read("out"), read("err"))
    }

    pub(super) fn cli_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.config.vishwa);
        command.args(["--server", &self.url]);
        if self.config.tokens {
            command.args(["--token", ADMIN_TOKEN]);
        }
        if let Some(tls) = &self.config.tls {
            command.arg("--tls-ca").arg(&tls.ca);
        }
        command
            .args(args)
            .env_remove("VISHWA_SERVER")
            .env_remove("VISHWA_TOKEN")
            .env_remove("VISHWA_TLS_CA")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        command
    }

    /// Runs `vishwa ARGS...` (as the cluster's admin) with `input` on stdin, to its end.
    pub fn vishwa_with_stdin(&self, args: &[&str], input: &[u8]) -> Outcome {
        use std::io::Write as _;
        let mut child = self
            .cli_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start vishwa");
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(input)
            .expect("cannot write to vishwa's stdin");
        let out = child.wait_with_output().expect("cannot wait for vishwa");
        Outcome::new(out.status, out.stdout, &out.stderr)
    }

    /// Writes `yaml` to a file and submits it.
    pub fn submit(&self, file: &str, yaml: &str) {
        let path = self.dir().join(file);
        std::fs::write(&path, yaml).unwrap();
        self.vishwa(&["submit", path.to_str().unwrap()]);
    }

    /// Triggers a run of `dag` with `-p` overrides and returns its id.
    pub fn trigger(&self, dag: &str, params: &[&str]) -> String {
        let mut args = vec!["trigger", dag, "-o", "json"];
        for p in params {
            args.extend(["-p", p]);
        }
        let out = self.vishwa(&args);
        let run = run_id_of(&out.stdout);
        self.track_run(&run);
        run
    }

    /// Remembers a run whose containers must be removed when the cluster is dropped.
    pub fn track_run(&self, run: &str) {
        lock(&self.runs).insert(run.to_owned());
    }

    /// The run as `vishwa get RUN -o json` shows it, or None if the scheduler did not answer.
    pub fn try_get(&self, run: &str) -> Option<RunView> {
        let out = self.try_vishwa(&["get", run, "-o", "json"]);
        if !out.ok() {
            return None;
        }
        Some(
            serde_json::from_str(&out.stdout)
                .unwrap_or_else(|e| panic!("vishwa get printed bad JSON ({e}):\n{}", out.stdout)),
        )
    }

    /// The run as `vishwa get RUN -o json` shows it.
    pub fn get(&self, run: &str) -> RunView {
        self.try_get(run)
            .unwrap_or_else(|| panic!("vishwa get {run} failed"))
    }

    /// Polls the run until `condition` holds on it; panics after `limit`.
    pub fn wait_run(
        &self,
        run: &str,
        limit: Duration,
        what: &str,
        mut condition: impl FnMut(&RunView) -> bool,
    ) -> RunView {
        let deadline = Instant::now() + limit;
        let mut last = None;
        loop {
            if let Some(view) = self.try_get(run) {
                if condition(&view) {
                    return view;
                }
                last = Some(view);
            }
            if Instant::now() >= deadline {
                panic!(
                    "run {run}: {what} did not happen within {limit:?}; last seen:\n{}",
                    last.map(|v| v.summary()).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Polls the run until it ended; panics after `limit`.
    pub fn wait_run_final(&self, run: &str, limit: Duration) -> RunView {
        self.wait_run(run, limit, "the end of the run", RunView::is_final)
    }
}
