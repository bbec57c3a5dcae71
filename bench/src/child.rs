//! Vishwa servers as child processes of the harness (`vishwa scheduler`, `vishwa worker`), so
//! that they can die as a crash kills them (SIGKILL) and be measured apart from the harness
//! through /proc/<pid>. A child is killed when its handle is dropped, so an error in a
//! benchmark never leaves one behind.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use tonic::transport::Channel;
use vishwa_integration_tests::process;
use vishwa_proto::v1 as pb;

pub(crate) use vishwa_integration_tests::net::free_local_addr;
pub(crate) use vishwa_integration_tests::process::{log_tail, scheduler_args};

/// The client API of a scheduler.
pub(crate) type Client = pb::vishwa_client::VishwaClient<Channel>;

/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(2);

/// A running `vishwa` server process, its stderr going to a log file.
pub(crate) struct Server {
    child: Child,
    what: String,
    log: PathBuf,
    /// When it was spawned, by the monotonic clock and by the wall clock (which the
    /// scheduler's records and log timestamps use).
    pub(crate) spawned: Instant,
    pub(crate) spawned_wall: SystemTime,
}

impl Server {
    /// Spawns `vishwa ARGS...` with its log (at info level) going to `log`, and its temporary
    /// files (a process stage's scratch folder) in the folder holding `log`, so that they go
    /// with the benchmark's temporary folder even when the server is killed.
    pub(crate) fn spawn(vishwa: &Path, args: &[String], log: &Path) -> Result<Server> {
        let what = format!("vishwa {}", args.first().map_or("", String::as_str));
        let stderr = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let spawned_wall = SystemTime::now();
        let spawned = Instant::now();
        let child = Command::new(vishwa)
            .args(args)
            .env("RUST_LOG", "info")
            .env("TMPDIR", log.parent().unwrap_or(Path::new(".")))
            .env_remove("VISHWA_SERVER")
            .env_remove("VISHWA_SCHEDULER")
            .env_remove("VISHWA_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        Ok(Server {
            child,
            what,
            log: log.to_path_buf(),
            spawned,
            spawned_wall,
        })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it with SIGKILL, as a crash or the OOM killer would, and reaps it.
    pub(crate) fn kill(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            self.child.kill()?;
        }
        self.child.wait()?;
        Ok(())
    }

    /// Asks it to stop (SIGTERM) and waits up to `grace`, then kills it.
    pub(crate) fn stop(&mut self, grace: Duration) -> Result<()> {
        if !process::stop(&mut self.child, grace) {
            eprintln!("  {} did not stop within {grace:?}; killed it", self.what);
        }
        self.child.wait()?;
        Ok(())
    }

    /// Fails, with the end of its log, if it has exited.
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}):\n{}",
                self.what,
                log_tail(&self.log, 20)
            );
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Polls `check` every few milliseconds until it gives a value, for at most `limit`.
pub(crate) async fn wait_for<T, F, Fut>(what: &str, limit: Duration, check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    vishwa_integration_tests::poll::wait_for(what, limit, POLL, check).await
}

/// Waits until something listens on `addr` (the scheduler binds before it opens its store),
/// and returns when that was first seen.
pub(crate) async fn wait_until_bound(addr: SocketAddr, limit: Duration) -> Result<Instant> {
    wait_for("the port to be bound", limit, || async {
        tokio::net::TcpStream::connect(addr)
            .await
            .ok()
            .map(|_| Instant::now())
    })
    .await
}

/// A client of the scheduler at `url`, once it answers calls.
pub(crate) async fn connect_client(url: &str, limit: Duration) -> Result<Client> {
    let url = url.to_owned();
    wait_for("the scheduler to answer", limit, || {
        let url = url.clone();
        async move {
            let mut client = Client::connect(url)
                .await
                .ok()?
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20);
            client
                .list_workers(pb::ListWorkersRequest {})
                .await
                .ok()
                .map(|_| client)
        }
    })
    .await
}

/// Milliseconds since the Unix epoch of a wall-clock time, as the scheduler records times.
pub(crate) fn epoch_ms(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// When the first line of a server's log holding every one of `needles` was written, from
/// its timestamp.
pub(crate) fn logged_at(log: &Path, needles: &[&str]) -> Option<SystemTime> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text
        .lines()
        .find(|l| needles.iter().all(|n| l.contains(n)))?;
    let stamp = line.split_whitespace().next()?;
    let time = chrono::DateTime::parse_from_rfc3339(stamp).ok()?;
    Some(SystemTime::from(time.with_timezone(&chrono::Utc)))
}
