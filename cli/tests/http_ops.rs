//! The scheduler's HTTP port over real sockets: `--http` on `vishwa scheduler`, the probes,
//! bearer tokens, a taken address, and `vishwa run`'s fallback when 7071 is taken.

mod cluster;

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use cluster::{Cluster, ClusterConfig, VISHWA};
use vishwa_integration_tests::http::http_get;
use vishwa_integration_tests::process::vishwa_command;

#[test]
fn the_probes_answer_without_a_token_on_a_scheduler_that_requires_one() {
    let cluster = Cluster::with_config(ClusterConfig {
        tokens: true,
        ..ClusterConfig::default()
    });
    cluster.start_scheduler();
    let http = cluster.http_url();
    assert!(http.starts_with("http://127.0.0.1:"), "{http}");
    assert_ne!(
        http, "http://127.0.0.1:7071",
        "the harness asks for any free port"
    );
    let health = http_get(&format!("{http}/healthz"), None, None).unwrap();
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let ready = http_get(&format!("{http}/readyz"), None, None).unwrap();
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    let missing = http_get(&format!("{http}/no-such-page"), None, None).unwrap();
    assert_eq!(missing.status, 404);
}

#[test]
fn a_taken_http_address_stops_the_scheduler_with_the_fix() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let grpc = vishwa_integration_tests::net::free_local_addr().to_string();
    let data = dir.path().join("data");
    let out = vishwa_command(
        Path::new(VISHWA),
        &[
            "scheduler",
            "--listen",
            &grpc,
            "--http",
            &taken_addr,
            "--data",
            data.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot serve HTTP on {taken_addr}"))
            && stderr.contains("--http off"),
        "{stderr}"
    );

    let bad = vishwa_command(Path::new(VISHWA), &["scheduler", "--http", "nowhere"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("HOST:PORT"), "{stderr}");
}

#[test]
fn an_open_scheduler_refuses_a_non_loopback_http_port() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = vishwa_command(
        Path::new(VISHWA),
        &[
            "scheduler",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "0.0.0.0:0",
            "--data",
            data.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("refusing to listen on 0.0.0.0"), "{stderr}");
}

/// A one-stage process DAG in `dir`.
fn one_stage_dag(dir: &Path) -> String {
    let path = dir.join("one.yaml");
    std::fs::write(
        &path,
        "name: one\nstages:\n  - name: s\n    executor: process\n    command: echo hi\n",
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn vishwa_run_serves_http_on_7071_or_a_free_port_with_a_note_and_fails_on_a_taken_explicit_one() {
    let dir = tempfile::tempdir().unwrap();
    let dag = one_stage_dag(dir.path());
    // Hold the default port (or find it held already): `run` must fall back, with a note.
    let _held = TcpListener::bind("127.0.0.1:7071");
    let out = vishwa_command(Path::new(VISHWA), &["run", &dag])
        .env_remove("VISHWA_HTTP")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("note: the HTTP port 127.0.0.1:7071 is taken"),
        "{stderr}"
    );
    assert!(
        stderr.contains("vishwa run: console on http://127.0.0.1:")
            && !stderr.contains("on http://127.0.0.1:7071"),
        "{stderr}"
    );

    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let out = vishwa_command(Path::new(VISHWA), &["run", &dag, "--http", &taken_addr])
        .env_remove("VISHWA_HTTP")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "an explicit taken port must fail: {stderr}"
    );
    assert!(
        stderr.contains(&format!("cannot serve HTTP on {taken_addr}")),
        "{stderr}"
    );

    let out = vishwa_command(Path::new(VISHWA), &["run", &dag, "--http", "off"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("HTTP"), "{stderr}");
}

/// A DAG of four independent process stages: three succeed, `bad` fails.
fn three_good_one_bad(name: &str) -> String {
    let mut yaml = format!("name: {name}\nstages:\n");
    for (stage, command) in [
        ("a", "echo a"),
        ("b", "echo b"),
        ("c", "echo c"),
        ("bad", "echo failing; exit 3"),
    ] {
        yaml.push_str(&format!(
            "  - name: {stage}\n    executor: process\n    command: '{command}'\n"
        ));
    }
    yaml
}

/// The value of the sample `name{labels}` in Prometheus text, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A cluster requiring tokens, with a viewer token `viewer-token-0123456789` besides the
/// harness's admin and worker ones, a scheduler and a worker `w1` that runs process stages.
fn cluster_with_viewer() -> Cluster {
    let cluster = Cluster::with_config(ClusterConfig {
        tokens: true,
        ..ClusterConfig::default()
    });
    vishwa_integration_tests::auth::write_tokens_file(
        &cluster.dir().join("tokens.yaml"),
        &[
            ("admin", "admin", cluster::ADMIN_TOKEN),
            ("workers", "worker", cluster::WORKER_TOKEN),
            ("grafana", "viewer", VIEWER),
        ],
    );
    cluster.start_scheduler();
    cluster.start_worker("w1", 2, &["--allow-process"]);
    cluster
}

const VIEWER: &str = "viewer-token-0123456789";

#[test]
fn metrics_need_a_viewer_token_pass_promtool_and_count_what_a_run_did() {
    let cluster = cluster_with_viewer();
    let dag = cluster.name("metered");
    cluster.submit("metered.yaml", &three_good_one_bad(&dag));
    let run = cluster.trigger(&dag, &[]);
    let done = cluster.wait_run_final(&run, Duration::from_secs(60));
    assert_eq!(done.state, "failed", "{}", done.summary());
    let url = format!("{}/metrics", cluster.http_url());

    let refused = http_get(&url, None, None).unwrap();
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(
        refused.body.contains("/metrics needs a token"),
        "{}",
        refused.body
    );
    let worker = http_get(&url, Some(cluster::WORKER_TOKEN), None).unwrap();
    assert_eq!(worker.status, 403, "{}", worker.body);

    let reply = http_get(&url, Some(VIEWER), None).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        reply.headers
    );
    let text = &reply.body;
    let dag_label = format!("dag=\"{dag}\"");
    let expect = [
        (
            format!("vishwa_stages_finished_total{{{dag_label},state=\"succeeded\"}}"),
            3.0,
        ),
        (
            format!("vishwa_stages_finished_total{{{dag_label},state=\"failed\"}}"),
            1.0,
        ),
        (format!("vishwa_runs_started_total{{{dag_label}}}"), 1.0),
        (
            format!("vishwa_runs_finished_total{{{dag_label},state=\"failed\"}}"),
            1.0,
        ),
        (
            format!("vishwa_stage_duration_seconds_count{{{dag_label}}}"),
            4.0,
        ),
        (
            format!("vishwa_stage_queue_wait_seconds_count{{{dag_label}}}"),
            4.0,
        ),
        ("vishwa_worker_slots{worker=\"w1\"}".to_owned(), 2.0),
        ("vishwa_worker_slots_free{worker=\"w1\"}".to_owned(), 2.0),
        ("vishwa_stages_running".to_owned(), 0.0),
        ("vishwa_up".to_owned(), 1.0),
        ("vishwa_leader".to_owned(), 1.0),
        ("vishwa_trigger_latency_seconds_count".to_owned(), 1.0),
        ("vishwa_dispatch_latency_seconds_count".to_owned(), 4.0),
    ];
    for (series, value) in expect {
        assert_eq!(sample(text, &series), Some(value), "{series} in\n{text}");
    }
    assert!(
        sample(text, "vishwa_log_bytes_total").is_some_and(|b| b > 0.0),
        "{text}"
    );
    assert!(
        sample(text, "vishwa_store_commit_seconds_count").is_some_and(|n| n > 0.0),
        "{text}"
    );

    let checked = promtool_check(text);
    assert!(checked.0, "promtool check metrics:\n{}\n{text}", checked.1);
}

/// `promtool check metrics` over `text`: (passed, what it said).
fn promtool_check(text: &str) -> (bool, String) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is missing: run scripts/ensure-ops-tools.sh (Debian's prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// Runs the Python client (Debian's grpcio, no Vishwa protos) against `addr` with `token`.
fn grpc_probe(addr: &str, token: Option<&str>) -> serde_json::Value {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../integration-tests/python/grpc_probe.py");
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(&script)
        .args([addr, token.unwrap_or("-")])
        .output()
        .expect("Debian's python3 is missing: run scripts/ensure-ops-tools.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "grpc_probe.py failed: {stdout}{}\n(scripts/ensure-ops-tools.sh installs grpcio)",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn health_and_reflection_answer_a_client_without_the_protos() {
    let cluster = cluster_with_viewer();
    let addr = cluster.addr.to_string();
    let probe = grpc_probe(&addr, Some(VIEWER));
    let services = probe["services"].as_array().expect("services");
    for expected in [
        "grpc.health.v1.Health",
        "vishwa.v1.Vishwa",
        "vishwa.v1.WorkerApi",
    ] {
        assert!(services.iter().any(|s| s == expected), "{probe}");
    }
    let methods = probe["vishwa_methods"].as_array().expect("methods");
    assert!(methods.iter().any(|m| m == "TriggerRun"), "{probe}");
    for service in ["", "vishwa.v1.Vishwa", "vishwa.v1.WorkerApi"] {
        assert_eq!(probe["health"][service], "SERVING", "{probe}");
    }
    // Health takes no token; reflection does.
    let anonymous = grpc_probe(&addr, None);
    assert_eq!(
        anonymous["reflection_error"], "UNAUTHENTICATED",
        "{anonymous}"
    );
    assert_eq!(anonymous["health"][""], "SERVING", "{anonymous}");
}

/// Every line of `log` as JSON; panics naming the first line that is not.
fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

#[test]
fn json_logs_are_one_object_per_line_with_run_stage_and_worker() {
    let cluster = Cluster::new();
    cluster.start_scheduler_with(&["--log-format", "json"]);
    cluster.start_worker("w1", 1, &["--allow-process", "--log-format", "json"]);
    let dag = cluster.name("logged");
    cluster.submit(
        "logged.yaml",
        &format!(
            "name: {dag}\nstages:\n  - name: only\n    executor: process\n    command: echo hi\n"
        ),
    );
    let run = cluster.trigger(&dag, &[]);
    let done = cluster.wait_run_final(&run, Duration::from_secs(60));
    assert_eq!(done.state, "succeeded", "{}", done.summary());
    // The HTTP note is a log event too, still found by the harness.
    assert!(cluster.http_url().starts_with("http://127.0.0.1:"));

    let has = |lines: &[serde_json::Value], message: &str| {
        lines.iter().any(|l| {
            l["message"] == message
                && l["run"] == run.as_str()
                && l["stage"] == "only"
                && l["worker"] == "w1"
        })
    };
    let scheduler = json_lines(&cluster.scheduler_log());
    assert!(
        scheduler
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string()),
        "{scheduler:?}"
    );
    assert!(has(&scheduler, "stage running"), "{scheduler:#?}");
    assert!(has(&scheduler, "stage finished"), "{scheduler:#?}");
    let worker = json_lines(&cluster.worker_log("w1"));
    assert!(has(&worker, "attempt ended"), "{worker:#?}");

    let bad = vishwa_command(Path::new(VISHWA), &["scheduler", "--log-format", "xml"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("json"));
}

/// A Prometheus server (Debian's `prometheus`) scraping `target` every second with `token`,
/// killed on drop.
struct Prometheus {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str, token: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: vishwa\n    \
                 scrape_interval: 1s\n    authorization:\n      type: Bearer\n      \
                 credentials: {token}\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = vishwa_integration_tests::net::free_local_addr();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus is missing: run scripts/ensure-ops-tools.sh (Debian's prometheus)");
        Prometheus {
            child,
            url: format!("http://{addr}"),
            _dir: dir,
        }
    }

    /// The value of the first series `query` returns, if any yet.
    fn query(&self, query: &str) -> Option<f64> {
        let encoded: String = query
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let reply = http_get(
            &format!("{}/api/v1/query?query={encoded}", self.url),
            None,
            None,
        )
        .ok()?;
        let body: serde_json::Value = serde_json::from_str(&reply.body).ok()?;
        body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_the_scheduler_with_a_viewer_token() {
    let cluster = cluster_with_viewer();
    let dag = cluster.name("scraped");
    cluster.submit("scraped.yaml", &three_good_one_bad(&dag));
    let run = cluster.trigger(&dag, &[]);
    cluster.wait_run_final(&run, Duration::from_secs(60));
    let target = cluster.http_url().trim_start_matches("http://").to_owned();
    let prometheus = Prometheus::start(&target, VIEWER);
    let succeeded = format!("vishwa_stages_finished_total{{dag=\"{dag}\",state=\"succeeded\"}}");
    let mut seen = None;
    let scraped = cluster::wait_until(Duration::from_secs(60), || {
        seen = prometheus.query(&succeeded);
        seen.is_some()
    });
    assert!(
        scraped,
        "Prometheus never got {succeeded}:\n{}",
        prometheus.log()
    );
    assert_eq!(seen, Some(3.0));
    assert_eq!(prometheus.query("up{job=\"vishwa\"}"), Some(1.0));
    assert_eq!(prometheus.query("vishwa_up"), Some(1.0));
    assert_eq!(
        prometheus.query(&format!(
            "vishwa_stage_duration_seconds_count{{dag=\"{dag}\"}}"
        )),
        Some(4.0)
    );
}

#[test]
fn a_worker_serves_its_own_metrics_counting_containers_exit_codes_and_uploads() {
    let cluster = Cluster::new();
    cluster.start_scheduler();
    let metrics_addr = vishwa_integration_tests::net::free_local_addr().to_string();
    cluster.start_worker("w1", 2, &["--metrics", &metrics_addr]);
    let dag = cluster.name("contained");
    cluster.submit(
        "contained.yaml",
        &format!(
            "name: {dag}\nstages:\n  - name: good\n    image: {image}\n    outputs: [out.txt]\n    \
             command: 'echo twelve bytes > /vishwa/out/out.txt'\n  - name: bad\n    image: {image}\n    \
             command: 'exit 3'\n",
            image = cluster::IMAGE
        ),
    );
    let run = cluster.trigger(&dag, &[]);
    let done = cluster.wait_run_final(&run, Duration::from_secs(90));
    assert_eq!(done.state, "failed", "{}", done.summary());
    let log = cluster.worker_log("w1");
    assert!(
        log.contains(&format!(
            "vishwa worker: metrics on http://{metrics_addr}/metrics"
        )),
        "{log}"
    );
    let reply = http_get(&format!("http://{metrics_addr}/metrics"), None, None).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let text = &reply.body;
    for (series, value) in [
        ("vishwa_worker_containers_started_total", 2.0),
        (
            "vishwa_worker_attempts_ended_total{outcome=\"exit\",code=\"0\"}",
            1.0,
        ),
        (
            "vishwa_worker_attempts_ended_total{outcome=\"exit\",code=\"3\"}",
            1.0,
        ),
        ("vishwa_worker_container_create_seconds_count", 2.0),
        ("vishwa_worker_container_start_seconds_count", 2.0),
        ("vishwa_worker_upload_bytes_total", 13.0),
    ] {
        assert_eq!(sample(text, series), Some(value), "{series} in\n{text}");
    }
}

#[test]
fn vishwa_dev_prints_its_http_url_and_serves_the_probes() {
    let dir = tempfile::tempdir().unwrap();
    let dags = dir.path().join("dags");
    std::fs::create_dir(&dags).unwrap();
    let out_path = dir.path().join("dev.out");
    let listen = vishwa_integration_tests::net::free_local_addr().to_string();
    let mut child = vishwa_command(
        Path::new(VISHWA),
        &["dev", "--dags", dags.to_str().unwrap(), "--listen", &listen],
    )
    .stdout(std::fs::File::create(&out_path).unwrap())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let mut ready = None;
    cluster::wait_until(Duration::from_secs(30), || {
        let out = std::fs::read_to_string(&out_path).unwrap_or_default();
        ready = out
            .lines()
            .find_map(|l| {
                l.strip_prefix("console on ")
                    .and_then(|rest| rest.split_whitespace().next())
            })
            .and_then(|url| http_get(&format!("{url}/readyz"), None, None).ok());
        ready.is_some()
    });
    let _ = child.kill();
    let _ = child.wait();
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let ready = ready.unwrap_or_else(|| panic!("vishwa dev's /readyz did not answer:\n{out}"));
    assert_eq!(
        (ready.status, ready.body.as_str()),
        (200, "ready\n"),
        "{out}"
    );
    assert!(out.contains("console on http://127.0.0.1:"), "{out}");
}
