//! Issue 10, the scheduler under bursts of concurrent triggers: it keeps answering (no
//! deadlock between the store's writes and flushes), a trigger that returned a run id is
//! durable (kill -9 right after loses nothing), SIGTERM stops it within its bound even under
//! load, and a full disk stops it with a clear error instead of inventing stage outcomes.
//! Real processes: a scheduler on a real socket over a real sled store, a real worker
//! running process stages, clients speaking gRPC.

mod cluster;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::invariants::{check_progress, check_store};
use cluster::{Cluster, RunView};
use tonic::transport::Channel;
use vishwa_proto::v1 as pb;
use vishwa_proto::v1::vishwa_client::VishwaClient;
use vishwa_scheduler::ids::RunId;

/// How long any one call may take before the test calls the scheduler wedged.
const RPC_DEADLINE: Duration = Duration::from_secs(20);
/// Concurrent clients of a burst.
const CLIENTS: usize = 50;

/// Two quick process stages, the second after the first, each printing a line.
fn quick_dag(name: &str) -> String {
    format!(
        "name: {name}\ndefaults:\n  executor: process\nstages:\n  - name: a\n    command: \"echo a\"\n  - name: b\n    needs: [a]\n    command: \"echo b\"\n"
    )
}

/// A process stage that runs for `seconds`, so attempts are running when the scheduler dies.
fn slow_dag(name: &str, seconds: &str) -> String {
    format!(
        "name: {name}\ndefaults:\n  executor: process\nstages:\n  - name: a\n    command: \"echo a\"\n  - name: slow\n    needs: [a]\n    command: \"sleep {seconds}; echo done\"\n    timeout: 10s\n"
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot start a runtime")
}

async fn connect(url: &str) -> Result<VishwaClient<Channel>, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    Ok(VishwaClient::new(channel))
}

/// What happened to one trigger call.
#[derive(Debug)]
#[allow(dead_code)] // the fields are shown in failure messages
enum Triggered {
    /// The scheduler acknowledged the run.
    Run(String),
    /// It said no (the reason).
    Refused(tonic::Status),
    /// The connection failed (the scheduler is down).
    Unreachable(String),
    /// No answer within [`RPC_DEADLINE`].
    Hung,
}

/// One trigger over a connection of its own, as a separate `vishwa trigger` would.
async fn trigger(url: String, dag: String) -> Triggered {
    let call = async {
        let mut client = match connect(&url).await {
            Ok(c) => c,
            Err(e) => return Triggered::Unreachable(e),
        };
        let request = pb::TriggerRunRequest {
            dag,
            ..Default::default()
        };
        match client.trigger_run(request).await {
            Ok(r) => Triggered::Run(r.into_inner().run.expect("a run").run_id),
            Err(status) => Triggered::Refused(status),
        }
    };
    tokio::time::timeout(RPC_DEADLINE, call)
        .await
        .unwrap_or(Triggered::Hung)
}

/// [`CLIENTS`] triggers at once.
async fn burst(url: &str, dag: &str) -> Vec<Triggered> {
    let calls: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(trigger(url.to_owned(), dag.to_owned())))
        .collect();
    let mut out = Vec::new();
    for call in calls {
        out.push(call.await.expect("trigger task"));
    }
    out
}

/// Runs `call` with the RPC deadline; panics naming `what` if it hangs or fails.
async fn answered<T>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> T {
    match tokio::time::timeout(RPC_DEADLINE, call).await {
        Ok(Ok(v)) => v,
        Ok(Err(status)) => panic!("{what} failed: {status}"),
        Err(_) => panic!("{what} did not answer within {RPC_DEADLINE:?}: the scheduler is wedged"),
    }
}

/// Waits until every run in `runs` is final; returns them as `vishwa get` shows them.
fn wait_all_final(cluster: &Cluster, runs: &BTreeSet<String>, limit: Duration) -> Vec<RunView> {
    let deadline = Instant::now() + limit;
    runs.iter()
        .map(|run| {
            let left = deadline.saturating_duration_since(Instant::now());
            cluster.wait_run_final(run, left.max(Duration::from_secs(1)))
        })
        .collect()
}

/// Every stage succeeded with exactly one recorded completion and nothing timed out.
fn assert_succeeded_once(view: &RunView) {
    assert_eq!(view.state, "succeeded", "{}", view.summary());
    for stage in &view.stages {
        assert_eq!(stage.state, "succeeded", "{}", view.summary());
        assert_eq!(stage.completions(), 1, "{}", view.summary());
        for attempt in &stage.attempts {
            assert_ne!(attempt.outcome, "timed_out", "{}", view.summary());
        }
    }
}

#[test]
fn fifty_concurrent_triggers_for_twenty_rounds_are_all_answered_and_all_finish() {
    let cluster = Cluster::new();
    cluster.start_scheduler();
    cluster.start_worker(&cluster.name("w"), 8, &["--allow-process"]);
    let dag = cluster.name("burst");
    cluster.submit("burst.yaml", &quick_dag(&dag));
    let rt = runtime();
    let started = Instant::now();
    let runs: BTreeSet<String> = rt.block_on(async {
        let mut client = connect(&cluster.url).await.expect("the scheduler serves");
        let mut runs = BTreeSet::new();
        for round in 1..=20 {
            for outcome in burst(&cluster.url, &dag).await {
                match outcome {
                    Triggered::Run(id) => {
                        runs.insert(id);
                    }
                    other => panic!("round {round}: a trigger was not acknowledged: {other:?}"),
                }
            }
            // Readers between the bursts, as users watching would.
            let listed = answered(
                "ListRuns",
                client.list_runs(pb::ListRunsRequest {
                    dag: dag.clone(),
                    ..Default::default()
                }),
            )
            .await;
            assert!(!listed.into_inner().runs.is_empty());
            let some = runs.iter().next_back().unwrap().clone();
            answered(
                "GetRun",
                client.get_run(pb::GetRunRequest {
                    run_id: some.clone(),
                }),
            )
            .await;
            let first = runs.iter().next().unwrap().clone();
            let mut logs = answered(
                "StreamLogs",
                client.stream_logs(pb::StreamLogsRequest {
                    run_id: first,
                    ..Default::default()
                }),
            )
            .await
            .into_inner();
            while let Some(line) = answered("StreamLogs stream", logs.message()).await {
                assert!(!line.data.is_empty());
            }
        }
        runs
    });
    eprintln!(
        "{} runs acknowledged in {:?}",
        runs.len(),
        started.elapsed()
    );
    assert_eq!(runs.len(), 20 * CLIENTS);
    for view in wait_all_final(&cluster, &runs, Duration::from_secs(180)) {
        assert_succeeded_once(&view);
    }
}

#[test]
fn every_run_a_trigger_acknowledged_survives_a_kill_during_a_burst_and_nothing_is_restated() {
    let cluster = Cluster::new();
    cluster.start_scheduler();
    let worker = cluster.name("w");
    cluster.start_worker(&worker, 8, &["--allow-process"]);
    let dag = cluster.name("kill");
    cluster.submit("kill.yaml", &slow_dag(&dag, "0.3"));
    let rt = runtime();
    let acknowledged: Arc<std::sync::Mutex<BTreeSet<String>>> = Arc::default();
    for kill in 1..=3 {
        // Bursts in the background; the kill lands while calls are in flight.
        let bursts = {
            let url = cluster.url.clone();
            let dag = dag.clone();
            let acknowledged = acknowledged.clone();
            rt.spawn(async move {
                for _ in 0..4 {
                    for outcome in burst(&url, &dag).await {
                        match outcome {
                            Triggered::Run(id) => {
                                acknowledged.lock().unwrap().insert(id);
                            }
                            Triggered::Hung => panic!("a trigger hung"),
                            Triggered::Refused(_) | Triggered::Unreachable(_) => {}
                        }
                    }
                }
            })
        };
        let before = acknowledged.lock().unwrap().len();
        let reached = cluster::wait_until(Duration::from_secs(30), || {
            acknowledged.lock().unwrap().len() >= before + 20
        });
        assert!(reached, "kill {kill}: the burst got no answers");
        cluster.kill_scheduler();
        rt.block_on(bursts).expect("the burst task");
        let known = acknowledged.lock().unwrap().clone();
        // Straight from disk: every acknowledged run is there.
        let (snapshot, mut problems) = cluster.with_store(check_store);
        for run in &known {
            if !snapshot.runs.contains_key(&RunId::from(run.as_str())) {
                problems.push(format!("{run}: acknowledged, but not in the store"));
            }
        }
        assert!(
            problems.is_empty(),
            "kill {kill}: {} acknowledged runs; the store broke an invariant:\n{}",
            known.len(),
            problems.join("\n")
        );
        eprintln!(
            "kill {kill}: {} acknowledged, {} in the store",
            known.len(),
            snapshot.runs.len()
        );
        cluster.start_scheduler();
        // What had finished at the kill stays as it was once every run ends.
        let runs = acknowledged.lock().unwrap().clone();
        let views = wait_all_final(&cluster, &runs, Duration::from_secs(120));
        for view in &views {
            assert_succeeded_once(view);
        }
        let (status, _) = cluster.term_scheduler(Duration::from_secs(15));
        assert!(status.success(), "{status}");
        let (after, problems) = cluster.with_store(check_store);
        let mut problems = problems;
        problems.extend(check_progress(&snapshot, &after));
        assert!(
            problems.is_empty(),
            "kill {kill}: finished stages were re-stated:\n{}",
            problems.join("\n")
        );
        cluster.start_scheduler();
    }
}

#[test]
fn sigterm_under_a_burst_of_triggers_stops_the_scheduler_promptly_and_keeps_every_run() {
    let cluster = Cluster::new();
    cluster.start_scheduler();
    cluster.start_worker(&cluster.name("w"), 4, &["--allow-process"]);
    let dag = cluster.name("term");
    cluster.submit("term.yaml", &slow_dag(&dag, "0.5"));
    let rt = runtime();
    let acknowledged: Arc<std::sync::Mutex<BTreeSet<String>>> = Arc::default();
    let bursts = {
        let url = cluster.url.clone();
        let dag = dag.clone();
        let acknowledged = acknowledged.clone();
        rt.spawn(async move {
            for _ in 0..6 {
                for outcome in burst(&url, &dag).await {
                    match outcome {
                        Triggered::Run(id) => {
                            acknowledged.lock().unwrap().insert(id);
                        }
                        Triggered::Hung => panic!("a trigger hung"),
                        Triggered::Refused(_) | Triggered::Unreachable(_) => {}
                    }
                }
            }
        })
    };
    let loaded = cluster::wait_until(Duration::from_secs(30), || {
        acknowledged.lock().unwrap().len() >= 60
    });
    assert!(loaded, "the burst got no answers");
    let (status, took) = cluster.term_scheduler(Duration::from_secs(20));
    assert!(status.success(), "SIGTERM under load: {status}");
    assert!(
        took < Duration::from_secs(10),
        "the scheduler took {took:?} to stop under load"
    );
    rt.block_on(bursts).expect("the burst task");
    let known = acknowledged.lock().unwrap().clone();
    let (snapshot, problems) = cluster.with_store(check_store);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    for run in &known {
        assert!(
            snapshot.runs.contains_key(&RunId::from(run.as_str())),
            "{run}: acknowledged before SIGTERM, but not in the store"
        );
    }
    cluster.start_scheduler();
    for view in wait_all_final(&cluster, &known, Duration::from_secs(120)) {
        assert_succeeded_once(&view);
    }
}

/// A small tmpfs mounted on a directory, unmounted (lazily) when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("the disk-full test needs `mount` (it runs as root in CI)");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs on {} (the disk-full test needs root): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }

    /// Writes a file until the filesystem is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write as _;
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 << 10];
        while file.write_all(&block).is_ok() {}
        let small = [0u8; 512];
        while file.write_all(&small).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_stops_the_scheduler_with_a_clear_error_and_a_restart_invents_no_outcome() {
    let cluster = Cluster::new();
    let disk = Tmpfs::mount(&cluster.data, "24m");
    cluster.start_scheduler();
    let worker = cluster.name("w");
    cluster.start_worker(&worker, 4, &["--allow-process"]);
    let dag = cluster.name("full");
    // Runs for 3 s: running when the disk fills, ending while the scheduler is down.
    cluster.submit("full.yaml", &slow_dag(&dag, "3"));
    let mut runs = BTreeSet::new();
    for _ in 0..3 {
        runs.insert(cluster.trigger(&dag, &[]));
    }
    cluster::wait_until(Duration::from_secs(30), || {
        runs.iter()
            .all(|r| cluster.get(r).stage("slow").state == "running")
    });
    let filler = disk.fill();

    // Every write now fails: the CLI says why, and the scheduler exits non-zero.
    let mut refused = None;
    let exited = cluster::wait_until(Duration::from_secs(30), || {
        let out = cluster.try_vishwa(&["trigger", &dag, "-o", "json"]);
        if out.ok() {
            runs.insert(cluster::run_id_of(&out.stdout));
        } else if refused.is_none() && out.stderr.contains("store write failed") {
            refused = Some(out.stderr);
        }
        !cluster.scheduler_running()
    });
    assert!(exited, "the scheduler kept running on a full disk");
    let status = cluster
        .wait_scheduler_exit(Duration::from_secs(5))
        .expect("the scheduler exited");
    assert!(
        !status.success(),
        "a full disk must exit non-zero: {status}"
    );
    let log = cluster.scheduler_log();
    assert!(
        log.contains("store write failed: No space left on device"),
        "the scheduler's log says why it stopped:\n{log}"
    );
    if let Some(stderr) = &refused {
        assert!(
            stderr.contains("No space left on device")
                && !stderr.contains("TLS")
                && !stderr.contains("https"),
            "the CLI's error names the full disk, not TLS:\n{stderr}"
        );
    }

    // Room again: a restart keeps every run and states only outcomes that happened.
    std::fs::remove_file(filler).unwrap();
    let (before, problems) = cluster.with_store(check_store);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    for run in &runs {
        assert!(
            before.runs.contains_key(&RunId::from(run.as_str())),
            "{run}: acknowledged, but not in the store"
        );
    }
    cluster.start_scheduler();
    for view in wait_all_final(&cluster, &runs, Duration::from_secs(120)) {
        assert_succeeded_once(&view);
    }
}
