//! Data assets through a real scheduler, worker and Docker: a producer publishing the same
//! bytes twice and then new bytes starts its consumer exactly twice, each run reading the
//! version that started it at `/vishwa/in/@asset/NAME/FILE`; `mode: all` waits for every
//! asset; a scheduler restart right after publishing neither loses nor repeats the
//! consumer's run; a cycle of asset triggers is refused at submit.

use std::time::Duration;

use vishwa_integration_tests::cluster::{
    ClusterOptions, TestCluster, describe_run, run_state, stdout_text,
};
use vishwa_integration_tests::poll::wait_until;
use vishwa_proto::v1 as pb;

const RUN_LIMIT: Duration = Duration::from_secs(60);

fn producer(image: &str) -> String {
    format!(
        r#"name: collect
params:
  content: one
stages:
  - name: emit
    image: "{image}"
    command: printf '%s' "$VISHWA_PARAM_CONTENT" > /vishwa/out/data.csv
    outputs: [{{path: data.csv, asset: survey-data}}, {{path: extra.csv, optional: true}}]
"#
    )
}

fn consumer(image: &str) -> String {
    format!(
        r#"name: train
triggers:
  - asset: survey-data
stages:
  - name: fit
    image: "{image}"
    command: cat /vishwa/in/@asset/survey-data/data.csv
"#
    )
}

async fn runs_of(cluster: &mut TestCluster, dag: &str) -> Vec<pb::RunSummary> {
    let mut runs = cluster
        .client
        .list_runs(pb::ListRunsRequest {
            dag: dag.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    runs.sort_by_key(|r| r.created_ms);
    runs
}

/// Triggers `dag` with `params` and waits for the run to succeed.
async fn run_to_success(cluster: &mut TestCluster, dag: &str, params: &[(&str, &str)]) {
    let run = cluster.trigger(dag, params).await.unwrap();
    let run = cluster
        .wait_for_run_end(&run.run_id, RUN_LIMIT)
        .await
        .unwrap();
    assert_eq!(
        run_state(&run),
        Some(pb::RunState::Succeeded),
        "{}",
        describe_run(&run)
    );
}

/// Waits until `dag` has `count` runs, all ended, and returns them oldest first.
async fn wait_for_ended_runs(
    cluster: &mut TestCluster,
    dag: &str,
    count: usize,
) -> Vec<pb::RunSummary> {
    let mut runs = Vec::new();
    let start = std::time::Instant::now();
    while start.elapsed() < RUN_LIMIT {
        runs = runs_of(cluster, dag).await;
        let ended = runs.iter().all(|r| r.finished_ms > 0);
        if runs.len() >= count && ended {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(runs.len(), count, "runs of {dag}: {runs:?}");
    runs
}

async fn stdout_of(cluster: &mut TestCluster, run: &str, stage: &str) -> String {
    let lines = cluster.logs(run, Some(stage)).await.unwrap();
    stdout_text(&lines, stage)
}

async fn assets(cluster: &mut TestCluster, name: &str) -> Vec<pb::Asset> {
    cluster
        .client
        .list_assets(pb::ListAssetsRequest {
            name: name.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .assets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_runs_once_per_new_version_reading_it() {
    let mut cluster = TestCluster::start().await.unwrap();
    cluster.submit(&producer(&cluster.image)).await.unwrap();
    cluster.submit(&consumer(&cluster.image)).await.unwrap();

    run_to_success(&mut cluster, "collect", &[("content", "first bytes")]).await;
    wait_for_ended_runs(&mut cluster, "train", 1).await;
    // The same bytes again publish no version and start nothing.
    run_to_success(&mut cluster, "collect", &[("content", "first bytes")]).await;
    run_to_success(&mut cluster, "collect", &[("content", "second bytes")]).await;
    let runs = wait_for_ended_runs(&mut cluster, "train", 2).await;
    // Nothing more comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(runs_of(&mut cluster, "train").await.len(), 2);

    for (run, expected) in runs.iter().zip(["first bytes", "second bytes"]) {
        assert_eq!(run.trigger, "asset");
        assert_eq!(run.state, pb::RunState::Succeeded as i32, "{run:?}");
        assert_eq!(stdout_of(&mut cluster, &run.run_id, "fit").await, expected);
    }

    let listed = assets(&mut cluster, "survey-data").await;
    let asset = &listed[0];
    assert_eq!(asset.triggers, ["train"]);
    assert_eq!(asset.versions.len(), 2);
    for (version, run) in asset.versions.iter().zip(&runs) {
        assert_eq!(version.stage, "emit");
        assert_eq!(version.file, "data.csv");
        assert_eq!(version.consumer_runs, std::slice::from_ref(&run.run_id));
    }
    let missing = cluster
        .client
        .list_assets(pb::ListAssetsRequest {
            name: "no-such".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert!(
        missing.message().contains("no asset `no-such`"),
        "{missing:?}"
    );
    cluster.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_all_waits_for_every_asset() {
    let mut cluster = TestCluster::start().await.unwrap();
    let image = cluster.image.clone();
    for (dag, asset) in [("make-a", "asset-a"), ("make-b", "asset-b")] {
        let yaml = format!(
            r#"name: {dag}
params: {{content: x}}
stages:
  - name: emit
    image: "{image}"
    command: printf '%s' "$VISHWA_PARAM_CONTENT" > /vishwa/out/out.txt
    outputs: [{{path: out.txt, asset: {asset}}}]
"#
        );
        cluster.submit(&yaml).await.unwrap();
    }
    let join = format!(
        r#"name: join
triggers:
  - {{asset: [asset-a, asset-b], mode: all}}
stages:
  - name: merge
    image: "{image}"
    command: cat /vishwa/in/@asset/asset-a/out.txt /vishwa/in/@asset/asset-b/out.txt
"#
    );
    cluster.submit(&join).await.unwrap();
    run_to_success(&mut cluster, "make-a", &[("content", "a1 ")]).await;
    run_to_success(&mut cluster, "make-a", &[("content", "a2 ")]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(runs_of(&mut cluster, "join").await.is_empty());
    run_to_success(&mut cluster, "make-b", &[("content", "b1")]).await;
    let runs = wait_for_ended_runs(&mut cluster, "join", 1).await;
    assert_eq!(
        stdout_of(&mut cluster, &runs[0].run_id, "merge").await,
        "a2 b1"
    );
    cluster.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_right_after_publishing_loses_and_repeats_nothing() {
    let dir = tempfile::Builder::new()
        .prefix("vishwa-it-assets-")
        .tempdir()
        .unwrap();
    let options = ClusterOptions {
        data_dir: Some(dir.path().to_path_buf()),
        ..ClusterOptions::default()
    };
    let mut cluster = TestCluster::start_with(options.clone()).await.unwrap();
    cluster.submit(&producer(&cluster.image)).await.unwrap();
    cluster.submit(&consumer(&cluster.image)).await.unwrap();
    let run = cluster
        .trigger("collect", &[("content", "survives")])
        .await
        .unwrap();
    // Stop the scheduler the moment the producer's success is stored: the version and the
    // consumer's run were committed with it.
    let id = run.run_id.clone();
    let ended = wait_until(RUN_LIMIT, || {
        let mut client = cluster.client.clone();
        let id = id.clone();
        async move {
            client
                .get_run(pb::GetRunRequest { run_id: id })
                .await
                .is_ok_and(|r| r.into_inner().summary.is_some_and(|s| s.finished_ms > 0))
        }
    })
    .await;
    assert!(ended, "the producer did not end");
    cluster.stop().await.unwrap();

    let mut cluster = TestCluster::start_with(options).await.unwrap();
    let runs = wait_for_ended_runs(&mut cluster, "train", 1).await;
    assert_eq!(runs[0].state, pb::RunState::Succeeded as i32, "{runs:?}");
    assert_eq!(
        stdout_of(&mut cluster, &runs[0].run_id, "fit").await,
        "survives"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(runs_of(&mut cluster, "train").await.len(), 1);
    assert_eq!(
        assets(&mut cluster, "survey-data").await[0].versions.len(),
        1
    );
    cluster.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_of_asset_triggers_is_refused_at_submit() {
    let mut cluster = TestCluster::start().await.unwrap();
    let image = cluster.image.clone();
    let dag = |name: &str, publishes: &str, triggered_by: &str| {
        format!(
            "name: {name}\ntriggers: [{{asset: {triggered_by}}}]\nstages:\n  - {{name: s, image: \
             \"{image}\", outputs: [{{path: o.txt, asset: {publishes}}}]}}\n"
        )
    };
    cluster.submit(&dag("first", "raw", "model")).await.unwrap();
    let refused = cluster
        .submit(&dag("second", "model", "raw"))
        .await
        .unwrap_err();
    let status = refused.downcast_ref::<tonic::Status>().expect("a status");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("asset triggers form a cycle: second publishes `model` -> first publishes `raw` -> second"),
        "{}",
        status.message()
    );
    cluster.stop().await.unwrap();
}
