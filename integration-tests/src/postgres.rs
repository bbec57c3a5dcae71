//! A real PostgreSQL server for tests: Debian's `postgresql` binaries, a cluster made by
//! `initdb` in a temp dir and the server on a free port (no container, no registry). We run
//! as root and PostgreSQL refuses to, so the server runs as the `postgres` system user the
//! Debian package creates (`runuser`); as another user, as that user.
//!
//! The server's parent is a small shell that holds our end of a pipe: when this process ends
//! (even by SIGKILL) the pipe closes, and the shell stops the server and removes its folder.
//! So a test binary can share one server ([`shared`]) that outlives every test in it and
//! still leaves nothing behind.
//!
//! These tests never skip: without `initdb` [`shared`] fails and says to run
//! `scripts/ensure-postgres.sh` (which `.ci/run` runs).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The role tests connect as (the cluster trusts local connections).
pub const USER: &str = "vishwa";

const WATCHDOG: &str = r#"
set -u
bin="$1"; dir="$2"; port="$3"
if ! "$bin/initdb" -D "$dir/data" -A trust -U vishwa -E UTF8 >"$dir/initdb.log" 2>&1; then
    cat "$dir/initdb.log" >&2
    rm -rf "$dir"
    exit 1
fi
"$bin/postgres" -D "$dir/data" -p "$port" -k "$dir" -c listen_addresses=127.0.0.1 \
    -c max_connections=300 >"$dir/server.log" 2>&1 &
pid=$!
# Our stdin is the test process's pipe: end of file means it is gone.
read -r _ || true
kill -INT "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rm -rf "$dir"
"#;

/// A PostgreSQL server of this test process.
pub struct Postgres {
    port: u16,
    bin: PathBuf,
    dir: String,
    watchdog: Mutex<Option<(Child, ChildStdin)>>,
    databases: AtomicU32,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let taken = self
            .watchdog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((mut child, stdin)) = taken {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// The server shared by every test of this binary, started on first use. Panics, saying
/// how to install it, when PostgreSQL is not installed: its tests never skip.
pub fn shared() -> &'static Postgres {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER.get_or_init(|| {
        if bin_dir().is_none() {
            panic!(
                "PostgreSQL's initdb is not installed; the PostgreSQL tests need it \
                 (Debian's postgresql package): run sh scripts/ensure-postgres.sh"
            );
        }
        Postgres::start().unwrap_or_else(|e| panic!("{e:#}"))
    })
}

/// Where Debian puts the server's programs (newest version), or `initdb` on the PATH.
fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("VISHWA_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let out = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let resolved = std::fs::canonicalize(&path).ok()?;
    resolved.parent().map(PathBuf::from)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `program args...`, as the `postgres` user when we are root.
fn as_server_user(program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        Command::new(program)
    }
}

impl Postgres {
    /// Makes a cluster in a new temp dir and starts the server; returns once it accepts
    /// connections.
    pub fn start() -> anyhow::Result<Postgres> {
        let bin = bin_dir().context("PostgreSQL's initdb is not installed")?;
        let made = as_server_user("mktemp")
            .args(["-d", "/tmp/vishwa-pg.XXXXXX"])
            .output()
            .context("making the server's temp dir (is there a `postgres` user?)")?;
        if !made.status.success() {
            bail!(
                "making the server's temp dir as user postgres failed: {}",
                String::from_utf8_lossy(&made.stderr)
            );
        }
        let dir = String::from_utf8_lossy(&made.stdout).trim().to_owned();
        let port = crate::net::free_local_addr().port();
        let mut child = as_server_user("sh")
            .args(["-c", WATCHDOG, "watchdog"])
            .arg(&bin)
            .arg(&dir)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting PostgreSQL")?;
        let stdin = child.stdin.take().expect("piped");
        let server = Postgres {
            port,
            bin,
            dir,
            watchdog: Mutex::new(Some((child, stdin))),
            databases: AtomicU32::new(0),
        };
        server.wait_ready(Duration::from_secs(60))?;
        Ok(server)
    }

    fn wait_ready(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .context("running pg_isready")?;
            if ready.success() {
                return Ok(());
            }
            let mut guard = self.watchdog.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((child, _)) = guard.as_mut()
                && let Some(status) = child.try_wait()?
            {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                bail!("PostgreSQL did not start ({status}): {err}");
            }
            drop(guard);
            if Instant::now() > deadline {
                bail!(
                    "PostgreSQL did not accept connections on port {} within {limit:?}; see \
                     {}/server.log",
                    self.port,
                    self.dir
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a new empty database and returns its URL.
    pub fn fresh_database(&self) -> anyhow::Result<String> {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}_{n}", std::process::id());
        self.sql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(&name))
    }

    /// Runs `sql` in database `db` with psql; returns what it printed (unaligned, tuples
    /// only).
    pub fn sql(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        let mut child = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-d",
                db,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running psql")?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(sql.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "psql in {db} failed: {}\n{sql}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}
