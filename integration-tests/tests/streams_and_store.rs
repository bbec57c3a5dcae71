//! Following a run as it happens (StreamLogs with `follow`, WatchRun) and keeping it after the
//! scheduler is gone: a new scheduler over the same data directory still has the run and its
//! logs.

use std::time::Duration;

use futures::StreamExt;
use vishwa_integration_tests::cluster::{
    ClusterOptions, TestCluster, dag_yaml, describe_run, is_final, run_id, run_state, stage_state,
    stdout_text, unique_dag_name,
};
use vishwa_integration_tests::containers::assert_no_containers_of_run;
use vishwa_integration_tests::poll::wait_until;
use vishwa_proto::v1 as pb;

const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Reads a stream to its end; fails if it does not end within `limit`.
async fn read_to_end<T>(
    mut stream: tonic::Streaming<T>,
    limit: Duration,
) -> anyhow::Result<Vec<T>> {
    let reading = async {
        let mut items = Vec::new();
        while let Some(item) = stream.next().await {
            items.push(item?);
        }
        Ok::<_, anyhow::Error>(items)
    };
    tokio::time::timeout(limit, reading)
        .await
        .map_err(|_| anyhow::anyhow!("the stream did not end within {limit:?}"))?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_logs_ends_with_the_run_and_includes_output_still_being_written() {
    let mut cluster = TestCluster::start().await.unwrap();
    let name = unique_dag_name("follow");
    let yaml = dag_yaml(
        &name,
        &cluster.image,
        r#"
defaults:
  image: "@IMAGE@"
stages:
  - name: slow
    command: echo "first"; sleep 2; echo "second"
  - name: later
    needs: [slow]
    command: echo "from a later stage"
"#,
    );
    let run = cluster.submit_and_trigger(&yaml, &[]).await.unwrap();
    let id = run.run_id.clone();

    // Start following once `slow` has written its first line and is still running.
    let mut probe = cluster.client.clone();
    let first_written = wait_until(RUN_LIMIT, || {
        let mut probe = probe.clone();
        let id = id.clone();
        async move {
            let request = pb::StreamLogsRequest {
                run_id: id,
                stage: "slow".to_owned(),
                follow: false,
            };
            let Ok(response) = probe.stream_logs(request).await else {
                return false;
            };
            let lines: Vec<_> = response.into_inner().collect().await;
            lines
                .iter()
                .any(|l| l.as_ref().is_ok_and(|l| l.data.starts_with(b"first")))
        }
    })
    .await;
    assert!(first_written, "the slow stage never wrote its first line");
    let before = cluster.get_run(&id).await.unwrap();
    assert_eq!(
        stage_state(&before, "slow"),
        pb::StageState::Running,
        "the test needs `slow` still running when the stream starts:\n{}",
        describe_run(&before)
    );

    let follow = |stage: &str| pb::StreamLogsRequest {
        run_id: id.clone(),
        stage: stage.to_owned(),
        follow: true,
    };
    let everything = probe.stream_logs(follow("")).await.unwrap().into_inner();
    let later_only = probe
        .stream_logs(follow("later"))
        .await
        .unwrap()
        .into_inner();
    let (everything, later_only) = tokio::join!(
        read_to_end(everything, RUN_LIMIT),
        read_to_end(later_only, RUN_LIMIT)
    );
    let (everything, later_only) = (everything.unwrap(), later_only.unwrap());

    // The streams end only once the run is over.
    let after = cluster.get_run(&id).await.unwrap();
    assert_eq!(
        run_state(&after),
        Some(pb::RunState::Succeeded),
        "{}",
        describe_run(&after)
    );
    // What was stored before the stream started is not sent twice.
    assert_eq!(stdout_text(&everything, "slow"), "first\nsecond\n");
    assert_eq!(stdout_text(&everything, "later"), "from a later stage\n");
    assert!(later_only.iter().all(|l| l.stage == "later"));
    assert_eq!(stdout_text(&later_only, "later"), "from a later stage\n");
    assert_no_containers_of_run(&cluster.docker, &id).await;
    cluster.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_run_sends_a_snapshot_then_changes_and_ends_with_the_final_state() {
    let mut cluster = TestCluster::start().await.unwrap();
    let name = unique_dag_name("watch");
    let yaml = dag_yaml(
        &name,
        &cluster.image,
        r#"
defaults:
  image: "@IMAGE@"
stages:
  - name: one
    command: sleep 1; echo "one done"
  - name: two
    needs: [one]
    command: echo "two done"
"#,
    );
    let run = cluster.submit_and_trigger(&yaml, &[]).await.unwrap();
    let id = run.run_id.clone();
    let stream = cluster
        .client
        .watch_run(pb::WatchRunRequest {
            run_id: id.clone(),
            include_logs: true,
        })
        .await
        .unwrap()
        .into_inner();
    let events: Vec<pb::run_event::Event> = read_to_end(stream, RUN_LIMIT)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event.expect("every event carries something"))
        .collect();
    let describe = || format!("{events:#?}");

    // The snapshot: every stage, then the run.
    let snapshot_stages: Vec<&str> = events
        .iter()
        .take(2)
        .filter_map(|e| match e {
            pb::run_event::Event::Stage(s) => Some(s.name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(snapshot_stages, ["one", "two"], "{}", describe());
    let Some(pb::run_event::Event::Run(first_run)) = events.get(2) else {
        panic!("the snapshot ends with the run:\n{}", describe());
    };
    assert_eq!(first_run.run_id, id);
    assert!(!is_final(pb::RunState::try_from(first_run.state).unwrap()));

    // Then changes, ending with the run's final state.
    let Some(pb::run_event::Event::Run(last)) = events.last() else {
        panic!("the watch ends with the run:\n{}", describe());
    };
    assert_eq!(last.state, pb::RunState::Succeeded as i32);
    assert_eq!(last.stages_succeeded, 2);
    let order = |state: i32| match pb::StageState::try_from(state).unwrap() {
        pb::StageState::Pending => 0,
        pb::StageState::Queued => 1,
        pb::StageState::Running => 2,
        pb::StageState::Succeeded => 3,
        other => panic!("unexpected state {other:?}:\n{}", describe()),
    };
    for name in ["one", "two"] {
        let states: Vec<i32> = events
            .iter()
            .filter_map(|e| match e {
                pb::run_event::Event::Stage(s) if s.name == name => Some(order(s.state)),
                _ => None,
            })
            .collect();
        assert!(
            states.windows(2).all(|w| w[0] <= w[1]),
            "{name} went back in state: {states:?}"
        );
        assert_eq!(states.last(), Some(&3), "{name} ends succeeded");
    }
    let two_states: Vec<i32> = events
        .iter()
        .skip(3)
        .filter_map(|e| match e {
            pb::run_event::Event::Stage(s) if s.name == "two" => Some(order(s.state)),
            _ => None,
        })
        .collect();
    assert!(
        two_states.contains(&2),
        "two was seen running after the snapshot: {two_states:?}"
    );

    // Log lines came with the events, before the end.
    let logs: Vec<pb::LogLine> = events
        .iter()
        .filter_map(|e| match e {
            pb::run_event::Event::Log(l) => Some(l.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(stdout_text(&logs, "one"), "one done\n");
    assert_eq!(stdout_text(&logs, "two"), "two done\n");

    // Watching a finished run gives its snapshot and ends at once.
    let again = cluster
        .client
        .watch_run(pb::WatchRunRequest {
            run_id: id.clone(),
            include_logs: false,
        })
        .await
        .unwrap()
        .into_inner();
    let again = read_to_end(again, Duration::from_secs(10)).await.unwrap();
    assert_eq!(again.len(), 3, "{again:#?}");
    assert!(matches!(
        again.last().and_then(|e| e.event.as_ref()),
        Some(pb::run_event::Event::Run(r)) if r.state == pb::RunState::Succeeded as i32
    ));
    assert_no_containers_of_run(&cluster.docker, &id).await;
    cluster.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_scheduler_still_has_finished_runs_and_their_logs() {
    let data = tempfile::Builder::new()
        .prefix("vishwa-it-restart-")
        .tempdir()
        .unwrap();
    let options = ClusterOptions {
        data_dir: Some(data.path().to_path_buf()),
        ..ClusterOptions::default()
    };
    let mut first = TestCluster::start_with(options.clone()).await.unwrap();
    let name = unique_dag_name("restart");
    let yaml = dag_yaml(
        &name,
        &first.image,
        r#"
defaults:
  image: "@IMAGE@"
stages:
  - name: write
    command: echo "kept across restarts"; printf '\377'
  - name: fail
    needs: [write]
    command: echo "failing on purpose" >&2; exit 4
"#,
    );
    let run = first.submit_and_trigger(&yaml, &[]).await.unwrap();
    let before = first
        .wait_for_run_end(&run.run_id, RUN_LIMIT)
        .await
        .unwrap();
    let id = run_id(&before).to_owned();
    assert_eq!(
        run_state(&before),
        Some(pb::RunState::Failed),
        "{}",
        describe_run(&before)
    );
    let logs_before = first.logs(&id, None).await.unwrap();
    assert!(!logs_before.is_empty());
    assert_no_containers_of_run(&first.docker, &id).await;
    first.stop().await.unwrap();

    let mut second = TestCluster::start_with(options).await.unwrap();
    let after = second.get_run(&id).await.unwrap();
    assert_eq!(after, before, "the run reads the same after a restart");
    let logs_after = second.logs(&id, None).await.unwrap();
    assert_eq!(logs_after, logs_before);
    assert_eq!(
        stdout_text(&logs_after, "write"),
        "kept across restarts\n\u{FFFD}"
    );

    let runs = second
        .client
        .list_runs(pb::ListRunsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert!(runs.iter().any(|r| r.run_id == id), "{runs:#?}");
    let dags = second
        .client
        .list_dags(pb::ListDagsRequest {})
        .await
        .unwrap()
        .into_inner()
        .dags;
    let dag = dags
        .iter()
        .find(|d| d.name == name)
        .expect("the DAG is kept");
    assert_eq!(
        dag.last_run.as_ref().map(|r| r.run_id.as_str()),
        Some(id.as_str())
    );

    // The DAG itself survived too: it runs again on the new scheduler.
    let rerun = second.trigger(&name, &[]).await.unwrap();
    assert_ne!(rerun.run_id, id);
    let rerun = second
        .wait_for_run_end(&rerun.run_id, RUN_LIMIT)
        .await
        .unwrap();
    assert_eq!(stage_state(&rerun, "write"), pb::StageState::Succeeded);
    assert_eq!(stage_state(&rerun, "fail"), pb::StageState::Failed);
    assert_no_containers_of_run(&second.docker, run_id(&rerun)).await;
    second.stop().await.unwrap();
}
