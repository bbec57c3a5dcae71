//! An S3-compatible server for the tests: `s3s-fs` (installed by `scripts/ensure-s3s.sh`),
//! started on a free loopback port over a temp dir, with one bucket; stopped on drop. Objects
//! are plain files under the bucket's folder, so a test can look at them or tamper with them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use vishwa_scheduler::blobs::s3::S3Settings;

use crate::net::free_local_addr;
use crate::process::{log_tail, stop};

/// The test credentials s3s-fs checks.
pub const ACCESS_KEY: &str = "vishwa-test-access";
pub const SECRET_KEY: &str = "vishwa-test-secret-key";

/// Where `s3s-fs` is: on `PATH`, or in cargo's bin folder.
pub fn s3s_binary() -> anyhow::Result<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("s3s-fs"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(home) = cargo_home {
        candidates.push(home.join("bin").join("s3s-fs"));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .context("s3s-fs is not installed; run scripts/ensure-s3s.sh (cargo install s3s-fs --version 0.14.1 --features binary)")
}

/// A running s3s-fs with one bucket.
pub struct S3Server {
    pub addr: SocketAddr,
    pub bucket: String,
    root: tempfile::TempDir,
    child: Child,
}

impl S3Server {
    /// Starts s3s-fs with the bucket `bucket` and waits until it accepts connections.
    pub async fn start(bucket: &str) -> anyhow::Result<S3Server> {
        let binary = s3s_binary()?;
        let root = tempfile::Builder::new().prefix("vishwa-s3-").tempdir()?;
        std::fs::create_dir_all(root.path().join("data").join(bucket))?;
        let addr = free_local_addr();
        let log = std::fs::File::create(root.path().join("s3s.log"))?;
        let child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &addr.port().to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path().join("data"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut server = S3Server {
            addr,
            bucket: bucket.to_owned(),
            root,
            child,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(server);
            }
            if crate::process::has_exited(&mut server.child) {
                bail!(
                    "s3s-fs exited at start:\n{}",
                    log_tail(&server.root.path().join("s3s.log"), 20)
                );
            }
            if tokio::time::Instant::now() > deadline {
                bail!("s3s-fs did not listen on {addr} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How a scheduler reaches this server.
    pub fn settings(&self) -> S3Settings {
        S3Settings {
            access_key_id: Some(ACCESS_KEY.to_owned()),
            secret_access_key: Some(SECRET_KEY.to_owned()),
            session_token: None,
            region: "us-east-1".to_owned(),
            endpoint: Some(self.endpoint()),
        }
    }

    /// The `AWS_*` variables of [`S3Server::settings`], for a `vishwa` child process.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
        ]
    }

    /// The bucket's folder: its objects are files under it, by key.
    pub fn bucket_dir(&self) -> PathBuf {
        self.root.path().join("data").join(&self.bucket)
    }

    /// The file holding the object `key`.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.bucket_dir().join(key)
    }

    /// Every object key in the bucket (files under its folder), sorted.
    pub fn keys(&self) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(base, &path, out);
                } else if let Ok(rel) = path.strip_prefix(base) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.bucket_dir(), &self.bucket_dir(), &mut out);
        out.sort();
        out
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(2));
    }
}
