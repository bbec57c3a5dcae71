//! What a stage sees and what is kept of it: params in commands and env, the `VISHWA_*`
//! variables, a missing image, output that is not UTF-8, and fan-out held to `max_parallel`.

use std::time::Duration;

use futures::StreamExt;

use vishwa_integration_tests::cluster::{
    ClusterOptions, TestCluster, dag_yaml, describe_run, is_final, output_of, run_id, run_state,
    stage, stage_state, stdout_text, unique_dag_name,
};
use vishwa_integration_tests::containers::{
    assert_no_containers_of_run, running_containers_of_run,
};
use vishwa_proto::v1 as pb;

const RUN_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn param_overrides_reach_commands_and_env_with_the_vishwa_variables() {
    let mut cluster = TestCluster::start().await.unwrap();
    let name = unique_dag_name("params");
    let yaml = dag_yaml(
        &name,
        &cluster.image,
        r#"
params:
  greeting: hello
  rows: 10
defaults:
  image: "@IMAGE@"
stages:
  - name: shell-form
    command: 'echo "arg={{ params.greeting }} rows={{ params.rows }}"; echo "env=$VISHWA_PARAM_GREETING rows=$VISHWA_PARAM_ROWS"; echo "run=$VISHWA_RUN_ID dag=$VISHWA_DAG stage=$VISHWA_STAGE attempt=$VISHWA_ATTEMPT"'
  - name: exec-form
    command: [echo, "{{ params.greeting }}", "{{ params.rows }}"]
  - name: defaults-kept
    command: echo "{{ params.greeting }}"
    env:
      FROM_PARAM: "{{ params.greeting }}-{{ params.rows }}"
  - name: on-host
    executor: process
    command: echo "host env=$VISHWA_PARAM_GREETING stage=$VISHWA_STAGE attempt=$VISHWA_ATTEMPT"
"#,
    );
    let run = cluster
        .submit_and_trigger(&yaml, &[("greeting", "bonjour"), ("rows", "42")])
        .await
        .unwrap();
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
    assert_eq!(run.params["greeting"], "\"bonjour\"");
    assert_eq!(run.params["rows"], "42");

    let logs = cluster.logs(&id, None).await.unwrap();
    assert_eq!(
        stdout_text(&logs, "shell-form"),
        format!(
            "arg=bonjour rows=42\nenv=bonjour rows=42\nrun={id} dag={name} stage=shell-form attempt=1\n"
        )
    );
    assert_eq!(stdout_text(&logs, "exec-form"), "bonjour 42\n");
    assert_eq!(stdout_text(&logs, "defaults-kept"), "bonjour\n");
    assert_eq!(
        stdout_text(&logs, "on-host"),
        "host env=bonjour stage=on-host attempt=1\n"
    );
    assert_no_containers_of_run(&cluster.docker, &id).await;
    cluster.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_env_renders_params() {
    let mut cluster = TestCluster::start().await.unwrap();
    let name = unique_dag_name("env");
    let yaml = dag_yaml(
        &name,
        &cluster.image,
        r#"
params:
  flavour: vanilla
stages:
  - name: show
    image: "@IMAGE@"
    command: echo "target=$TARGET flavour=$FLAVOUR"
    env:
      TARGET: staging
      FLAVOUR: "{{ params.flavour }}"
"#,
    );
    let run = cluster
        .submit_and_trigger(&yaml, &[("flavour", "mango")])
        .await
        .unwrap();
    let run = cluster
        .wait_for_run_end(&run.run_id, RUN_LIMIT)
        .await
        .unwrap();
    let id = run_id(&run).to_owned();
    assert_eq!(run_state(&run), Some(pb::RunState::Succeeded));
    let logs = cluster.logs(&id, Some("show")).await.unwrap();
    assert_eq!(stdout_text(&logs, "show"), "target=staging flavour=mango\n");
    assert_no_containers_of_run(&cluster.docker, &id).await;
    cluster.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_image_fails_the_stage_with_a_message_naming_the_image() {
    let mut cluster = TestCluster::start().await.unwrap();
    let name = unique_dag_name("ghost-image");
    let image = format!("vishwa-test/no-such-image:{name}");
    let yaml = dag_yaml(
        &name,
        &cluster.image,
        &format!(
            r#"
stages:
  - name: ghost
    image: "{image}"
    command: echo "must not run"
  - name: after-ghost
    needs: [ghost]
    image: "@IMAGE@"
    command: echo "must not run"
"#
        ),
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
    let ghost = stage(&run, "ghost");
    assert_eq!(ghost.state, pb::StageState::Failed as i32);
    assert!(
        ghost.message.contains(&image),
        "the stage's message names the image: {}",
        ghost.message
    );
    assert!(!ghost.attempts.is_empty());
    for attempt in &ghost.attempts {
        assert_eq!(attempt.outcome, "error", "{attempt:?}");
        assert!(!attempt.has_exit_code);
        assert!(attempt.message.contains(&image), "{attempt:?}");
    }
    assert_eq!(
        stage_state(&run, "after-ghost"),
        pb::StageState::UpstreamFailed
    );
    assert_no_containers_of_run(&cluster.docker, &id).await;
    cluster.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_that_is_not_utf8_is_stored_and_returned_byte_exact() {
    let mut cluster = TestCluster::start().await.unwrap();
    let name = unique_dag_name("bytes");
    let yaml = dag_yaml(
        &name,
        &cluster.image,
        r#"
defaults:
  image: "@IMAGE@"
stages:
  - name: binary
    command: [printf, '\377\376']
  - name: binary-stderr
    command: printf '\001\377\000end' >&2
  - name: binary-on-host
    executor: process
    command: printf '\377\376'
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

    let logs = cluster.logs(&id, None).await.unwrap();
    assert_eq!(
        output_of(&logs, "binary", pb::LogStream::Stdout),
        [0xff, 0xfe]
    );
    assert_eq!(
        output_of(&logs, "binary-stderr", pb::LogStream::Stderr),
        b"\x01\xff\x00end"
    );
    assert_eq!(
        output_of(&logs, "binary-on-host", pb::LogStream::Stdout),
        [0xff, 0xfe]
    );
    // The same bytes through a one-stage stream.
    let binary = cluster.logs(&id, Some("binary")).await.unwrap();
    assert_eq!(
        output_of(&binary, "binary", pb::LogStream::Stdout),
        [0xff, 0xfe]
    );
    assert_no_containers_of_run(&cluster.docker, &id).await;
    cluster.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_never_runs_more_containers_than_max_parallel() {
    // Six slots: only `max_parallel` may hold the fan-out to two at a time.
    let mut cluster = TestCluster::start_with(ClusterOptions {
        slots: 6,
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    let name = unique_dag_name("fan-out");
    let yaml = dag_yaml(
        &name,
        &cluster.image,
        r#"
stages:
  - name: fan
    image: "@IMAGE@"
    for_each: [a, b, c, d, e, f]
    max_parallel: 2
    command: echo "item {{ item }} as $VISHWA_STAGE"; sleep 1
"#,
    );
    let run = cluster.submit_and_trigger(&yaml, &[]).await.unwrap();
    let id = run.run_id.clone();

    let mut most_running = 0;
    let deadline = tokio::time::Instant::now() + RUN_LIMIT;
    let run = loop {
        let running = running_containers_of_run(&cluster.docker, &id)
            .await
            .unwrap();
        assert!(
            running.len() <= 2,
            "more than max_parallel containers run at once: {running:#?}"
        );
        most_running = most_running.max(running.len());
        let run = cluster.get_run(&id).await.unwrap();
        if run_state(&run).is_some_and(is_final) {
            break run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fan-out did not finish:\n{}",
            describe_run(&run)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        run_state(&run),
        Some(pb::RunState::Succeeded),
        "{}",
        describe_run(&run)
    );
    assert_eq!(
        most_running, 2,
        "the fan-out should have used both of its parallel slots"
    );

    // The scheduler's own record agrees: no three attempts overlap in time.
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for s in &run.stages {
        let attempt = s.attempts.last().expect("every instance ran");
        edges.push((attempt.started_ms, 1));
        edges.push((attempt.finished_ms, -1));
    }
    edges.sort();
    let mut overlapping = 0;
    for (_, change) in edges {
        overlapping += change;
        assert!(
            overlapping <= 2,
            "attempts overlapped:\n{}",
            describe_run(&run)
        );
    }

    let logs = cluster.logs(&id, None).await.unwrap();
    for item in ["a", "b", "c", "d", "e", "f"] {
        let instance = format!("fan[{item}]");
        assert_eq!(stage_state(&run, &instance), pb::StageState::Succeeded);
        assert_eq!(
            stdout_text(&logs, &instance),
            format!("item {item} as {instance}\n")
        );
    }
    assert_no_containers_of_run(&cluster.docker, &id).await;
    cluster.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_output_is_kept_whole_and_in_order_whether_followed_or_read_afterwards() {
    let mut cluster = TestCluster::start().await.unwrap();
    let name = unique_dag_name("large-output");
    let yaml = dag_yaml(
        &name,
        &cluster.image,
        r#"
stages:
  - name: chatty
    image: "@IMAGE@"
    command: seq 1 50000; seq 1 20000 >&2
"#,
    );
    let run = cluster.submit_and_trigger(&yaml, &[]).await.unwrap();
    let id = run.run_id.clone();
    let following = cluster
        .client
        .stream_logs(pb::StreamLogsRequest {
            run_id: id.clone(),
            stage: String::new(),
            follow: true,
        })
        .await
        .unwrap()
        .into_inner();
    let followed = tokio::time::timeout(RUN_LIMIT, async {
        let lines: Vec<Result<pb::LogLine, tonic::Status>> = following.collect().await;
        lines.into_iter().collect::<Result<Vec<_>, _>>()
    })
    .await
    .expect("the followed stream ends with the run")
    .unwrap();
    let run = cluster.wait_for_run_end(&id, RUN_LIMIT).await.unwrap();
    assert_eq!(
        run_state(&run),
        Some(pb::RunState::Succeeded),
        "{}",
        describe_run(&run)
    );

    let numbers = |n: u32| -> Vec<u8> {
        (1..=n)
            .map(|i| format!("{i}\n"))
            .collect::<String>()
            .into_bytes()
    };
    let stored = cluster.logs(&id, Some("chatty")).await.unwrap();
    for (what, lines) in [("followed", &followed), ("stored", &stored)] {
        assert!(
            output_of(lines, "chatty", pb::LogStream::Stdout) == numbers(50_000),
            "{what} stdout differs from `seq 1 50000`"
        );
        assert!(
            output_of(lines, "chatty", pb::LogStream::Stderr) == numbers(20_000),
            "{what} stderr differs from `seq 1 20000`"
        );
    }
    // Chunks come in the order they were written.
    let seqs: Vec<u64> = stored
        .iter()
        .filter(|l| l.stream != pb::LogStream::System as i32)
        .map(|l| l.seq)
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "stored chunks out of order"
    );
    assert_no_containers_of_run(&cluster.docker, &id).await;
    cluster.stop().await.unwrap();
}
