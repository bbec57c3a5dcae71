//! How a worker's result report finishes a stage, through the real worker service: a test
//! plays the worker over gRPC (so it can report what a real worker never would) against a
//! scheduler on a real socket with sled and the blob store on disk. An output whose upload
//! is not on the scheduler, an unreadable output and a missing declared output each fail
//! the stage naming what is wrong; a stored, declared output succeeds and is indexed, and an
//! undeclared one is dropped.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use tonic::transport::Channel;
use vishwa_integration_tests::inproc::InProcessScheduler;
use vishwa_integration_tests::poll::wait_for;
use vishwa_proto::v1 as pb;
use vishwa_proto::v1::worker_api_client::WorkerApiClient;
use vishwa_scheduler::SchedulerConfig;

/// sha256 of no bytes: the one digest this test can upload without hashing.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const LIMIT: Duration = Duration::from_secs(30);

const DAG: &str = "
name: finishing
defaults: {image: vishwa-test/busybox:1}
stages:
  - {name: kept, command: [true], outputs: [model.pkl]}
  - {name: not-uploaded, command: [true], outputs: [model.pkl]}
  - {name: unreadable, command: [true], outputs: [model.pkl]}
  - {name: missing, command: [true], outputs: [model.pkl]}
";

fn output(name: &str, digest: &str) -> pb::ArtifactRef {
    pb::ArtifactRef {
        name: name.to_owned(),
        digest: digest.to_owned(),
        size: 0,
    }
}

async fn upload_empty(worker: &mut WorkerApiClient<Channel>, task: &pb::Task, name: &str) {
    let chunk = pb::ArtifactChunk {
        attempt_id: task.attempt_id.clone(),
        worker_id: "fake".to_owned(),
        name: name.to_owned(),
        size: 0,
        digest: EMPTY_SHA256.to_owned(),
        data: Vec::new().into(),
    };
    let stored = worker
        .upload_artifact(futures::stream::iter(vec![chunk]))
        .await
        .expect("the upload is taken")
        .into_inner();
    assert_eq!(stored.digest, EMPTY_SHA256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_report_finishes_its_stage_checked_against_the_declared_outputs() {
    let data = tempfile::tempdir().unwrap();
    let scheduler = InProcessScheduler::start(SchedulerConfig {
        data_dir: data.path().join("data"),
        ..SchedulerConfig::default()
    })
    .await
    .unwrap();
    let mut client = scheduler.client().await.unwrap();
    let mut worker = WorkerApiClient::connect(scheduler.url.clone())
        .await
        .unwrap();
    worker
        .register(pb::RegisterRequest {
            name: "fake".to_owned(),
            slots: 4,
            instance: "fake-1".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut tasks = worker
        .tasks(pb::TasksRequest {
            worker_id: "fake".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    client
        .submit_dag(pb::SubmitDagRequest {
            file_name: "finishing.yaml".to_owned(),
            source: DAG.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap();
    let run = client
        .trigger_run(pb::TriggerRunRequest {
            dag: "finishing".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap()
        .run_id;

    for _ in 0..4 {
        let command = tokio::time::timeout(LIMIT, tasks.next())
            .await
            .expect("a task within the limit")
            .expect("the stream stays open")
            .unwrap();
        let Some(pb::worker_command::Command::Task(task)) = command.command else {
            panic!("expected a task, got {command:?}");
        };
        let outputs = match task.stage.as_str() {
            "kept" => {
                upload_empty(&mut worker, &task, "model.pkl").await;
                // Uploaded but not declared: dropped, not an error.
                upload_empty(&mut worker, &task, "scratch.txt").await;
                vec![
                    output("model.pkl", EMPTY_SHA256),
                    output("scratch.txt", EMPTY_SHA256),
                ]
            }
            "not-uploaded" => vec![output("model.pkl", &"ab".repeat(32))],
            "unreadable" => vec![output("../model.pkl", EMPTY_SHA256)],
            "missing" => Vec::new(),
            other => panic!("no stage {other}"),
        };
        worker
            .report_result(pb::ReportResultRequest {
                worker_id: "fake".to_owned(),
                attempt_id: task.attempt_id.clone(),
                outcome: Some(pb::report_result_request::Outcome::ExitCode(0)),
                outputs,
                metrics: HashMap::from([("acc".to_owned(), 0.5)]),
            })
            .await
            .unwrap();
        // The attempt is finished: a second report of it is refused as stale.
        let again = worker
            .report_result(pb::ReportResultRequest {
                worker_id: "fake".to_owned(),
                attempt_id: task.attempt_id.clone(),
                outcome: Some(pb::report_result_request::Outcome::ExitCode(0)),
                ..Default::default()
            })
            .await
            .expect_err("a finished attempt's report is stale");
        assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");
    }

    let finished = wait_for("the run to end", LIMIT, Duration::from_millis(50), || {
        let mut client = client.clone();
        let run = run.clone();
        async move {
            let got = client
                .get_run(pb::GetRunRequest { run_id: run })
                .await
                .ok()?
                .into_inner();
            let state = got.summary.as_ref()?.state;
            (state == pb::RunState::Failed as i32).then_some(got)
        }
    })
    .await
    .unwrap();
    let stages: HashMap<&str, &pb::StageRun> = finished
        .stages
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();
    let kept = stages["kept"];
    assert_eq!(kept.state, pb::StageState::Succeeded as i32);
    assert_eq!(kept.outputs, vec![output("model.pkl", EMPTY_SHA256)]);
    assert_eq!(kept.metrics.get("acc"), Some(&0.5));
    let failures = [
        (
            "not-uploaded",
            format!(
                "output `model.pkl` was reported, but its upload ({}) is not on the scheduler",
                "ab".repeat(32)
            ),
        ),
        (
            "unreadable",
            "output `../model.pkl` was reported wrongly: `../model.pkl` is not an output file name"
                .to_owned(),
        ),
        (
            "missing",
            "declared output `model.pkl` was not uploaded by the worker; it must be written to \
             /vishwa/out/model.pkl"
                .to_owned(),
        ),
    ];
    for (name, message) in failures {
        let stage = stages[name];
        assert_eq!(stage.state, pb::StageState::Failed as i32, "{name}");
        assert_eq!(stage.message, message, "{name}");
        assert!(
            stage.outputs.is_empty() && stage.metrics.is_empty(),
            "{name}"
        );
        assert_eq!(stage.attempts[0].message, message, "the attempt says why");
    }

    // Only the stage that succeeded is in the artifact index.
    let artifacts = client
        .list_artifacts(pb::ListArtifactsRequest { run_id: run })
        .await
        .unwrap()
        .into_inner()
        .artifacts;
    let indexed: Vec<(&str, &str)> = artifacts
        .iter()
        .map(|a| (a.stage.as_str(), a.name.as_str()))
        .collect();
    assert_eq!(indexed, [("kept", "model.pkl")]);
    scheduler.stop().await.unwrap();
}
