//! Issue 4's security, end to end with real processes: a run over TLS with tokens (scheduler,
//! worker and CLI, a real Docker stage), clients that must be refused (a CA they do not
//! trust, an expired certificate, plain HTTP to a TLS port), secrets that reach the stage but
//! nothing else (logs masked, `vishwa get`, the raw store files), a missing secret failing
//! its stage clearly, and an open scheduler refusing a non-loopback address.

mod cluster;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cluster::{ADMIN_TOKEN, Cluster, ClusterConfig, ClusterTls, IMAGE, VISHWA, wait_until};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, date_time_ymd};
use vishwa_integration_tests::net::free_local_addr;
use vishwa_integration_tests::process::vishwa_command;

/// A CA and what it signed, written as PEM files.
struct Pki {
    ca_params: CertificateParams,
    ca_key: KeyPair,
    ca_pem: String,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
        Pki {
            ca_params,
            ca_key,
            ca_pem,
        }
    }

    /// A server certificate for 127.0.0.1 and localhost; `expired` makes it a year-old one.
    fn server_cert(&self, dir: &Path, name: &str, expired: bool) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "vishwa scheduler");
        if expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let cert_path = dir.join(format!("{name}.crt"));
        let key_path = dir.join(format!("{name}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    fn write_ca(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}-ca.crt"));
        std::fs::write(&path, &self.ca_pem).unwrap();
        path
    }
}

/// A TLS cluster with tokens, its certificates in a directory of their own.
fn tls_cluster(pki: &Pki, certs: &Path) -> Cluster {
    let (cert, key) = pki.server_cert(certs, "server", false);
    let ca = pki.write_ca(certs, "good");
    Cluster::with_config(ClusterConfig {
        tokens: true,
        tls: Some(ClusterTls { cert, key, ca }),
        ..ClusterConfig::default()
    })
}

/// `vishwa ARGS...` with nothing from the environment, to its end: (success, stdout+stderr).
fn bare_vishwa(args: &[&str]) -> (bool, String) {
    let out = vishwa_command(Path::new(VISHWA), args)
        .output()
        .expect("cannot run vishwa");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A scheduler process started by hand, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a TLS scheduler with `cert`/`key` and waits until its port accepts connections.
fn start_tls_scheduler(dir: &Path, cert: &Path, key: &Path) -> (Proc, SocketAddr) {
    let addr = free_local_addr();
    let child = Command::new(VISHWA)
        .args(["scheduler", "--listen", &addr.to_string(), "--http", "off"])
        .arg("--data")
        .arg(dir.join("data"))
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start vishwa scheduler");
    let proc = Proc(child);
    assert!(
        wait_until(Duration::from_secs(30), || TcpStream::connect(addr).is_ok()),
        "the TLS scheduler did not listen on {addr}"
    );
    (proc, addr)
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_run_over_tls_with_tokens_gets_its_secret_and_no_log_record_or_listing_shows_it() {
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new("good");
    let cluster = tls_cluster(&pki, certs.path());
    assert!(cluster.url.starts_with("https://"), "{}", cluster.url);
    cluster.start_scheduler();
    let worker = cluster.name("tls-worker");
    cluster.start_worker(&worker, 2, &[]);

    let value = format!("s3cr3t-{}-value", cluster.suffix);
    let set = cluster.vishwa_with_stdin(
        &["secret", "set", "api-key"],
        format!("{value}\n").as_bytes(),
    );
    assert!(set.ok(), "{set}");
    let listed = cluster.vishwa(&["secret", "list", "-o", "json"]);
    assert!(listed.stdout.contains("api-key"), "{}", listed.stdout);
    assert!(
        !listed.stdout.contains(&value),
        "secret list showed the value"
    );

    // The value is printed whole, then split over two writes a moment apart (two output
    // chunks), then used in a way that shows the stage really received it.
    let dag = cluster.name("secretive");
    cluster.submit(
        "secretive.yaml",
        &format!(
            "name: {dag}\nstages:\n  - name: use\n    image: {IMAGE}\n    env:\n      API_KEY: {{secret: api-key}}\n      PLAIN: visible\n    command: |\n      echo \"whole=$API_KEY plain=$PLAIN\"\n      head=\"${{API_KEY%??????}}\"\n      printf 'split=%s' \"$head\"\n      sleep 1\n      printf '%s\\n' \"${{API_KEY#$head}}\"\n      case \"$API_KEY\" in s3cr3t-*-value) echo received-intact;; esac\n"
        ),
    );
    let run = cluster.trigger(&dag, &[]);
    let view = cluster.wait_run_final(&run, Duration::from_secs(120));
    assert_eq!(view.state, "succeeded", "{}", view.summary());

    let logs = cluster.vishwa(&["logs", &run]).stdout;
    assert!(logs.contains("whole=*** plain=visible"), "{logs}");
    // `vishwa logs` shows each output chunk on its own line; joined, the split value is one
    // masked value. Everything checked here is on stdout: lines of stdout and stderr written
    // a moment apart may be stored in either order.
    let joined: String = logs
        .lines()
        .map(|l| l.trim_start_matches("use | "))
        .collect();
    assert!(joined.contains("split=***received-intact"), "{logs}");
    assert!(logs.contains("received-intact"), "{logs}");
    assert!(!logs.contains(&value), "the logs show the secret:\n{logs}");
    for format in ["table", "json"] {
        let got = cluster.vishwa(&["get", &run, "-o", format]).stdout;
        assert!(
            !got.contains(&value),
            "vishwa get -o {format} shows the secret"
        );
    }
    let source = cluster.vishwa(&["graph", &dag]).stdout;
    assert!(!source.contains(&value));
    assert!(!cluster.worker_log(&worker).contains(&value));
    assert!(!cluster.scheduler_log().contains(&value));

    let audit = cluster.vishwa(&["audit", "-o", "json"]).stdout;
    assert!(
        audit.contains("\"SetSecret\"") && audit.contains("\"TriggerRun\""),
        "{audit}"
    );
    assert!(audit.contains("\"caller\": \"admin\""), "{audit}");

    // With the scheduler stopped (sled flushed and closed), no store file holds the value.
    let (status, _) = cluster.term_scheduler(Duration::from_secs(30));
    assert!(
        status.success(),
        "the scheduler did not stop cleanly: {status}"
    );
    let files = files_under(&cluster.data);
    assert!(files.len() > 2, "the data dir is nearly empty: {files:?}");
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !contains(&bytes, value.as_bytes()),
            "{} holds the secret's value in clear",
            file.display()
        );
    }
}

#[test]
fn a_stage_asking_for_a_missing_secret_fails_naming_it_and_how_to_set_it() {
    let cluster = Cluster::new();
    cluster.start_scheduler();
    let worker = cluster.name("w");
    cluster.start_worker(&worker, 1, &[]);
    let dag = cluster.name("needs-secret");
    cluster.submit(
        "needs.yaml",
        &format!(
            "name: {dag}\nstages:\n  - name: use\n    image: {IMAGE}\n    env:\n      TOKEN: {{secret: never-set}}\n    command: [echo, hi]\n"
        ),
    );
    let run = cluster.trigger(&dag, &[]);
    let view = cluster.wait_run_final(&run, Duration::from_secs(60));
    assert_eq!(view.state, "failed", "{}", view.summary());
    let text = format!("{view:?}");
    assert!(text.contains("never-set"), "{}", view.summary());
    assert!(
        text.contains("vishwa secret set never-set"),
        "{}",
        view.summary()
    );
}

#[test]
fn clients_that_cannot_trust_the_scheduler_or_speak_plain_http_to_it_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("good");
    let stranger = Pki::new("stranger");
    let good_ca = pki.write_ca(dir.path(), "good");
    let other_ca = stranger.write_ca(dir.path(), "other");
    let (cert, key) = pki.server_cert(dir.path(), "server", false);
    let (_scheduler, addr) = start_tls_scheduler(dir.path(), &cert, &key);
    let https = format!("https://{addr}");

    let (ok, out) = bare_vishwa(&[
        "--server",
        &https,
        "--tls-ca",
        good_ca.to_str().unwrap(),
        "dags",
    ]);
    assert!(ok, "the trusted client was refused: {out}");

    let (ok, out) = bare_vishwa(&[
        "--server",
        &https,
        "--tls-ca",
        other_ca.to_str().unwrap(),
        "dags",
    ]);
    assert!(!ok, "a client trusting another CA got in: {out}");
    assert!(
        out.contains("not trusted") && out.contains("--tls-ca"),
        "{out}"
    );

    let (ok, out) = bare_vishwa(&["--server", &format!("http://{addr}"), "dags"]);
    assert!(!ok, "plain HTTP to a TLS port worked: {out}");
    assert!(out.contains("use an https:// URL"), "{out}");

    let (ok, out) = bare_vishwa(&[
        "--server",
        &format!("http://{addr}"),
        "--tls-ca",
        good_ca.to_str().unwrap(),
        "dags",
    ]);
    assert!(!ok);
    assert!(out.contains("is not https://"), "{out}");

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let (ok, out) = bare_vishwa(&[
        "--server",
        &https,
        "--tls-ca",
        garbage.to_str().unwrap(),
        "dags",
    ]);
    assert!(!ok);
    assert!(
        out.contains("garbage.pem") && out.contains("BEGIN CERTIFICATE"),
        "{out}"
    );
}

#[test]
fn an_expired_scheduler_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("good");
    let ca = pki.write_ca(dir.path(), "good");
    let (cert, key) = pki.server_cert(dir.path(), "expired", true);
    let (_scheduler, addr) = start_tls_scheduler(dir.path(), &cert, &key);
    let (ok, out) = bare_vishwa(&[
        "--server",
        &format!("https://{addr}"),
        "--tls-ca",
        ca.to_str().unwrap(),
        "dags",
    ]);
    assert!(!ok, "a client accepted an expired certificate: {out}");
    assert!(out.contains("expired"), "{out}");
}

#[test]
fn bad_tls_files_and_an_open_non_loopback_listen_stop_the_scheduler_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (ok, out) = bare_vishwa(&[
        "scheduler",
        "--listen",
        "0.0.0.0:0",
        "--data",
        data.to_str().unwrap(),
    ]);
    assert!(!ok, "an open scheduler listened on 0.0.0.0: {out}");
    assert!(out.contains("refusing to listen on 0.0.0.0"), "{out}");
    assert!(out.contains("--tokens FILE"), "{out}");

    let missing = dir.path().join("missing.pem");
    let (ok, out) = bare_vishwa(&[
        "scheduler",
        "--listen",
        "127.0.0.1:0",
        "--data",
        data.to_str().unwrap(),
        "--tls-cert",
        missing.to_str().unwrap(),
        "--tls-key",
        missing.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        out.contains("missing.pem") && out.contains("cannot read"),
        "{out}"
    );

    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(
        &tokens,
        "- {name: a, role: superuser, token: aaaaaaaaaaaaaaaaaaaa}\n",
    )
    .unwrap();
    let (ok, out) = bare_vishwa(&[
        "scheduler",
        "--listen",
        "127.0.0.1:0",
        "--data",
        data.to_str().unwrap(),
        "--tokens",
        tokens.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        out.contains("tokens.yaml") && out.contains("roles are admin"),
        "{out}"
    );
}

#[test]
fn a_cli_without_a_token_is_told_how_to_pass_one() {
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new("good");
    let cluster = tls_cluster(&pki, certs.path());
    cluster.start_scheduler();
    let ca = cluster.config.tls.as_ref().unwrap().ca.clone();
    let (ok, out) = bare_vishwa(&[
        "--server",
        &cluster.url,
        "--tls-ca",
        ca.to_str().unwrap(),
        "runs",
    ]);
    assert!(!ok);
    assert!(
        out.contains("--token") && out.contains("VISHWA_TOKEN"),
        "{out}"
    );
    let (ok, out) = bare_vishwa(&[
        "--server",
        &cluster.url,
        "--tls-ca",
        ca.to_str().unwrap(),
        "--token",
        ADMIN_TOKEN,
        "runs",
    ]);
    assert!(ok, "{out}");
}

/// Runs `vishwa ARGS...` for at most `limit` (killed after it): whether it exited, and how,
/// and what it printed.
fn vishwa_within(args: &[&str], limit: Duration) -> (Option<bool>, String) {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out");
    let err_path = dir.path().join("err");
    let mut child = vishwa_command(Path::new(VISHWA), args)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("cannot run vishwa");
    let mut status = None;
    wait_until(limit, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let text = std::fs::read_to_string(&out_path).unwrap_or_default()
        + &std::fs::read_to_string(&err_path).unwrap_or_default();
    (status.map(|s| s.success()), text)
}

#[test]
fn a_worker_with_a_wrong_or_missing_token_stops_and_says_why() {
    let cluster = Cluster::with_config(ClusterConfig {
        tokens: true,
        ..ClusterConfig::default()
    });
    cluster.start_scheduler();
    for token in [Some("not-the-worker-token-at-all"), None] {
        let name = cluster.name("refused");
        let mut args = vec!["worker", "--scheduler", &cluster.url, "--name", &name];
        if let Some(token) = token {
            args.extend(["--token", token]);
        }
        let (exited, out) = vishwa_within(&args, Duration::from_secs(30));
        assert_eq!(exited, Some(false), "worker with token {token:?}: {out}");
        assert!(out.contains("refused this worker"), "{out}");
        assert!(out.contains("VISHWA_TOKEN"), "{out}");
    }
}

#[test]
fn an_open_scheduler_says_it_serves_local_users_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let addr = free_local_addr().to_string();
    let (exited, out) = vishwa_within(
        &[
            "scheduler",
            "--listen",
            &addr,
            "--data",
            data.to_str().unwrap(),
        ],
        Duration::from_secs(3),
    );
    assert_eq!(exited, None, "the open scheduler exited: {out}");
    assert!(out.contains("open to local users only (loopback)"), "{out}");
}

#[test]
fn the_http_port_serves_tls_with_the_grpc_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new("good");
    let cluster = tls_cluster(&pki, certs.path());
    cluster.start_scheduler();
    let http = cluster.http_url();
    assert!(http.starts_with("https://127.0.0.1:"), "{http}");
    let ca = cluster.config.tls.as_ref().unwrap().ca.clone();
    let health =
        vishwa_integration_tests::http::http_get(&format!("{http}/healthz"), None, Some(&ca))
            .unwrap();
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let plain = http.replacen("https://", "http://", 1);
    assert!(
        vishwa_integration_tests::http::http_get(&format!("{plain}/healthz"), None, None)
            .map_or(true, |reply| reply.status != 200),
        "the TLS port answered plain HTTP"
    );
}
