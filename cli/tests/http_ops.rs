//! The scheduler's HTTP port over real sockets: `--http` on `vishwa scheduler`, the probes,
//! bearer tokens, a taken address, and `vishwa run`'s fallback when 7071 is taken.

mod cluster;

use std::net::TcpListener;
use std::path::Path;

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
        stderr.contains("vishwa run: HTTP (health, metrics) on http://127.0.0.1:")
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
