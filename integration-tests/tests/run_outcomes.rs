//! How runs end: success through a diamond, failure with trigger rules, a retry that succeeds,
//! a stage killed at its timeout, and a cancelled run. Every test runs its DAG through a real
//! scheduler, worker and Docker, and checks that no container of its run is left behind.

use std::time::{Duration, Instant};

use vishwa_integration_tests::cluster::{
    TestCluster, dag_yaml, describe_run, output_of, run_id, run_state, stage, stage_state,
    stdout_text, unique_dag_name,
};
use vishwa_integration_tests::containers::{
    assert_no_containers_of_run, running_containers_of_run, wait_until_no_containers_of_run,
};
use vishwa_integration_tests::poll::wait_until;
use vishwa_proto::v1 as pb;

/// Generous bound for a short run on a loaded 2-core CI machine.
const RUN_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diamond_succeeds_and_its_logs_outlive_the_containers() {
    let mut cluster = TestCluster::start().await.unwrap();
    let name = unique_dag_name("diamond");
    let yaml = dag_yaml(
        &name,
        &cluster.image,
        r#"
defaults:
  image: "@IMAGE@"
stages:
  - name: top
    command: echo "top says hello from $VISHWA_STAGE"
  - name: left
    needs: [top]
    command: echo "left to stdout"; echo "left to stderr" >&2
  - name: right
    needs: [top]
    command: [echo, right says hello]
  - name: bottom
    needs: [left, right]
    command: echo "bottom joins left and right"
"#,
    );
    let run = cluster.submit_and_trigger(&yaml, &[]).await.unwrap();
    let run = cluster
        .wait_for_run_end(&run.run_id, RUN_LIMIT)
        .await
        .unwrap();
    let id = run_id(&run).to_owned();

    assert_eq!(
        run_state(&run),
        Some(pb::RunState::Succeeded),
        "{}",
        describe_run(&run)
    );
    for name in ["top", "left", "right", "bottom"] {
        assert_eq!(stage_state(&run, name), pb::StageState::Succeeded);
        let attempts = &stage(&run, name).attempts;
        assert_eq!(attempts.len(), 1, "{name}: {attempts:?}");
        assert!(attempts[0].has_exit_code && attempts[0].exit_code == 0);
    }
    let bottom_started = stage(&run, "bottom").started_ms;
    for upstream in ["left", "right"] {
        assert!(
            bottom_started >= stage(&run, upstream).finished_ms,
            "bottom started before {upstream} finished:\n{}",
            describe_run(&run)
        );
    }

    // The containers are gone; the logs are not.
    assert_no_containers_of_run(&cluster.docker, &id).await;
    let expected = [
        ("top", "top says hello from top\n"),
        ("left", "left to stdout\n"),
        ("right", "right says hello\n"),
        ("bottom", "bottom joins left and right\n"),
    ];
    for (name, text) in expected {
        let lines = cluster.logs(&id, Some(name)).await.unwrap();
        assert!(lines.iter().all(|l| l.stage == name && l.run_id == id));
        assert_eq!(stdout_text(&lines, name), text, "stdout of {name}");
    }
    let left = cluster.logs(&id, Some("left")).await.unwrap();
    assert_eq!(
        output_of(&left, "left", pb::LogStream::Stderr),
        b"left to stderr\n"
    );
    let everything = cluster.logs(&id, None).await.unwrap();
    for (name, text) in expected {
        assert_eq!(
            stdout_text(&everything, name),
            text,
            "whole-run stdout of {name}"
        );
    }
    cluster.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_stage_fails_the_run_marks_downstream_upstream_failed_and_all_done_still_runs() {
    let mut cluster = TestCluster::start().await.unwrap();
    let name = unique_dag_name("failing");
    let yaml = dag_yaml(
        &name,
        &cluster.image,
        r#"
defaults:
  image: "@IMAGE@"
stages:
  - name: breaks
    command: echo "about to fail"; exit 3
  - name: after-break
    needs: [breaks]
    command: echo "must not run"
  - name: cleanup
    needs: [breaks]
    trigger: all_done
    command: echo "cleaning up after $VISHWA_DAG"
  - name: independent
    command: echo "unaffected"
"#,
    );
    let run = cluster.submit_and_trigger(&yaml, &[]).await.unwrap();
    let run = cluster
        .wait_for_run_end(&run.run_id, RUN_LIMIT)
        .await
        .unwrap();
    let id = run_id(&run).to_owned();

    assert_eq!(
        run_state(&run),
        Some(pb::RunState::Failed),
        "{}",
        describe_run(&run)
    );
    assert!(
        run.summary.as_ref().unwrap().message.contains("breaks"),
        "the run's message names the failed stage:\n{}",
        describe_run(&run)
    );
    assert_eq!(stage_state(&run, "breaks"), pb::StageState::Failed);
    let breaks = &stage(&run, "breaks").attempts;
    assert_eq!(breaks.len(), 1);
    assert_eq!(breaks[0].outcome, "failed");
    assert!(breaks[0].has_exit_code);
    assert_eq!(breaks[0].exit_code, 3);

    assert_eq!(
        stage_state(&run, "after-break"),
        pb::StageState::UpstreamFailed
    );
    assert!(stage(&run, "after-break").attempts.is_empty());
    assert_eq!(stage_state(&run, "cleanup"), pb::StageState::Succeeded);
    assert_eq!(stage_state(&run, "independent"), pb::StageState::Succeeded);

    assert_no_containers_of_run(&cluster.docker, &id).await;
    let logs = cluster.logs(&id, None).await.unwrap();
    assert_eq!(stdout_text(&logs, "breaks"), "about to fail\n");
    assert_eq!(
        stdout_text(&logs, "cleanup"),
        format!("cleaning up after {name}\n")
    );
    assert_eq!(stdout_text(&logs, "after-break"), "");
    cluster.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_failing_its_first_attempt_succeeds_on_retry_after_the_backoff() {
    let mut cluster = TestCluster::start().await.unwrap();
    let name = unique_dag_name("retry");
    let yaml = dag_yaml(
        &name,
        &cluster.image,
        r#"
stages:
  - name: flaky
    image: "@IMAGE@"
    command: echo "attempt $VISHWA_ATTEMPT"; test "$VISHWA_ATTEMPT" -ge 2
    retries: {limit: 2, backoff: 1s}
"#,
    );
    let run = cluster.submit_and_trigger(&yaml, &[]).await.unwrap();
    let run = cluster
        .wait_for_run_end(&run.run_id, RUN_LIMIT)
        .await
        .unwrap();
    let id = run_id(&run).to_owned();

    assert_eq!(
        run_state(&run),
        Some(pb::RunState::Succeeded),
        "{}",
        describe_run(&run)
    );
    let flaky = stage(&run, "flaky");
    assert_eq!(flaky.state, pb::StageState::Succeeded as i32);
    assert_eq!(flaky.attempt, 2);
    let [first, second] = flaky.attempts.as_slice() else {
        panic!("expected two attempts:\n{}", describe_run(&run));
    };
    assert_eq!((first.number, second.number), (1, 2));
    assert_eq!(first.outcome, "failed");
    assert!(first.has_exit_code);
    assert_eq!(first.exit_code, 1);
    assert_eq!(second.outcome, "succeeded");
    assert_ne!(first.id, second.id, "each attempt has its own id");
    assert!(
        second.started_ms - first.finished_ms >= 900,
        "the second attempt waited out the 1s backoff:\n{}",
        describe_run(&run)
    );

    assert_no_containers_of_run(&cluster.docker, &id).await;
    // Both attempts' output is kept, each under its attempt number.
    let logs = cluster.logs(&id, Some("flaky")).await.unwrap();
    let by_attempt = |n: u32| -> String {
        let lines: Vec<_> = logs.iter().filter(|l| l.attempt == n).cloned().collect();
        stdout_text(&lines, "flaky")
    };
    assert_eq!(by_attempt(1), "attempt 1\n");
    assert_eq!(by_attempt(2), "attempt 2\n");
    cluster.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_over_its_timeout_is_killed_within_seconds_and_counts_as_failed() {
    let mut cluster = TestCluster::start().await.unwrap();
    let name = unique_dag_name("timeout");
    let yaml = dag_yaml(
        &name,
        &cluster.image,
        r#"
defaults:
  image: "@IMAGE@"
stages:
  - name: sleepy
    command: [sleep, "300"]
    timeout: 2s
  - name: after-sleepy
    needs: [sleepy]
    command: echo "must not run"
  - name: sleepy-on-host
    executor: process
    command: sleep 300
    timeout: 2s
"#,
    );
    let started = Instant::now();
    let run = cluster.submit_and_trigger(&yaml, &[]).await.unwrap();
    let run = cluster
        .wait_for_run_end(&run.run_id, Duration::from_secs(15))
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let id = run_id(&run).to_owned();

    assert!(
        elapsed < Duration::from_secs(15),
        "the timed-out run took {elapsed:?}"
    );
    assert_eq!(
        run_state(&run),
        Some(pb::RunState::Failed),
        "{}",
        describe_run(&run)
    );
    let sleepy = stage(&run, "sleepy");
    assert_eq!(sleepy.state, pb::StageState::Failed as i32);
    assert!(
        sleepy.message.contains("timed out"),
        "stage message: {}",
        sleepy.message
    );
    for name in ["sleepy", "sleepy-on-host"] {
        let stage = stage(&run, name);
        assert_eq!(stage.state, pb::StageState::Failed as i32, "{name}");
        let [attempt] = stage.attempts.as_slice() else {
            panic!("expected one attempt of {name}:\n{}", describe_run(&run));
        };
        assert_eq!(attempt.outcome, "timed_out", "{name}");
        let ran_ms = attempt.finished_ms - attempt.started_ms;
        assert!(
            (1_900..12_000).contains(&ran_ms),
            "{name} was stopped {ran_ms} ms after it started, not at its 2s timeout"
        );
    }
    assert_eq!(
        stage_state(&run, "after-sleepy"),
        pb::StageState::UpstreamFailed
    );
    assert_no_containers_of_run(&cluster.docker, &id).await;
    cluster.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_run_stops_the_running_container_and_process_within_five_seconds() {
    let mut cluster = TestCluster::start().await.unwrap();
    let name = unique_dag_name("cancel");
    // A sleep on the worker's host, told apart from any other by its duration.
    let host_sleep = format!(
        "300.{}{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let yaml = dag_yaml(
        &name,
        &cluster.image,
        &r#"
defaults:
  image: "@IMAGE@"
stages:
  - name: long
    command: [sleep, "300"]
  - name: after-long
    needs: [long]
    command: echo "must not run"
  - name: long-on-host
    executor: process
    command: [sleep, "@SLEEP@"]
"#
        .replace("@SLEEP@", &host_sleep),
    );
    let run = cluster.submit_and_trigger(&yaml, &[]).await.unwrap();
    let id = run.run_id.clone();
    let docker = cluster.docker.clone();
    let container_runs = wait_until(Duration::from_secs(30), || async {
        running_containers_of_run(&docker, &id)
            .await
            .is_ok_and(|c| c.len() == 1)
    })
    .await;
    assert!(container_runs, "the long stage's container never ran");
    let host_process_runs = wait_until(Duration::from_secs(30), || async {
        !processes_with_argument(&host_sleep).is_empty()
    })
    .await;
    assert!(host_process_runs, "the process stage never ran");
    for stage in ["long", "long-on-host"] {
        cluster
            .wait_for_stage_state(&id, stage, pb::StageState::Running, RUN_LIMIT)
            .await
            .unwrap();
    }

    let cancelling = Instant::now();
    let answer = cluster
        .client
        .cancel_run(pb::CancelRunRequest { run_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.run.unwrap().state,
        pb::RunState::Cancelled as i32,
        "CancelRun answers with the cancelled run"
    );
    let gone = wait_until_no_containers_of_run(&docker, &id, Duration::from_secs(5)).await;
    let elapsed = cancelling.elapsed();
    assert!(
        gone,
        "containers still there 5s after CancelRun: {:?}",
        vishwa_integration_tests::containers::containers_of_run(&docker, &id).await
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    let process_gone = wait_until(Duration::from_secs(5) - elapsed, || async {
        processes_with_argument(&host_sleep).is_empty()
    })
    .await;
    assert!(
        process_gone,
        "the process stage still runs 5s after CancelRun: pids {:?}",
        processes_with_argument(&host_sleep)
    );

    let run = cluster
        .wait_for_run_end(&id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        run_state(&run),
        Some(pb::RunState::Cancelled),
        "{}",
        describe_run(&run)
    );
    assert_eq!(stage_state(&run, "after-long"), pb::StageState::Cancelled);
    for name in ["long", "long-on-host"] {
        assert_eq!(stage_state(&run, name), pb::StageState::Cancelled);
        let attempts = &stage(&run, name).attempts;
        assert_eq!(attempts.len(), 1, "{name}");
        assert_eq!(attempts[0].outcome, "cancelled", "{name}");
    }
    assert!(stage(&run, "after-long").attempts.is_empty());

    // Cancelling a finished run is refused, and the run stays cancelled.
    let again = cluster
        .client
        .cancel_run(pb::CancelRunRequest { run_id: id.clone() })
        .await;
    assert!(again.is_err(), "cancelling a finished run: {again:?}");
    assert_eq!(
        run_state(&cluster.get_run(&id).await.unwrap()),
        Some(pb::RunState::Cancelled)
    );
    cluster.stop().await.unwrap();
}

/// Pids of the processes on this host that have `argument` among their arguments.
fn processes_with_argument(argument: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            cmdline
                .split(|b| *b == 0)
                .any(|arg| arg == argument.as_bytes())
                .then_some(pid)
        })
        .collect()
}
