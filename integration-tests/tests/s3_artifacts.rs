//! Issue 13, S3 artifacts: a real S3-compatible server (s3s-fs on a free port), a scheduler
//! with `--artifacts s3://BUCKET/PREFIX`, and two workers: outputs go from one worker to the
//! bucket and from the bucket to the other worker through presigned URLs (one PUT, or a
//! multipart upload for the big one), never through the scheduler, whose byte counters stay
//! at zero; an object overwritten in the bucket between producer and consumer is caught by
//! the consumer's digest check.

use std::collections::BTreeMap;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tonic::transport::Channel;
use vishwa_integration_tests::inproc::{
    InProcessScheduler, InProcessWorker, process_executors, worker_config,
};
use vishwa_integration_tests::s3::S3Server;
use vishwa_proto::v1 as pb;
use vishwa_proto::v1::vishwa_client::VishwaClient;
use vishwa_scheduler::SchedulerConfig;
use vishwa_scheduler::artifacts::ArtifactsAt;
use vishwa_scheduler::blobs::s3::{PART_BYTES, S3Location};

const PREFIX: &str = "ml/prod";
const RUN_LIMIT: Duration = Duration::from_secs(120);

struct Setup {
    s3: S3Server,
    scheduler: InProcessScheduler,
    workers: Vec<InProcessWorker>,
    client: VishwaClient<Channel>,
    dir: tempfile::TempDir,
}

async fn start() -> Setup {
    let s3 = S3Server::start("vishwa-artifacts").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let scheduler = InProcessScheduler::start(SchedulerConfig {
        data_dir: dir.path().join("data"),
        artifacts: ArtifactsAt::S3(
            S3Location::parse(&format!("s3://{}/{PREFIX}", s3.bucket)).unwrap(),
        ),
        s3: Some(s3.settings()),
        ..SchedulerConfig::default()
    })
    .await
    .unwrap();
    let mut workers = Vec::new();
    for node in ["a", "b"] {
        let mut config = worker_config(
            &scheduler.url,
            &format!("s3-{node}"),
            2,
            dir.path().join(format!("cache-{node}")),
        );
        config.allow_process = true;
        config.labels = BTreeMap::from([("node".to_owned(), node.to_owned())]);
        workers.push(InProcessWorker::spawn(config, process_executors()));
    }
    let client = scheduler.client().await.unwrap();
    Setup {
        s3,
        scheduler,
        workers,
        client,
        dir,
    }
}

async fn trigger(client: &mut VishwaClient<Channel>, name: &str, yaml: &str) -> String {
    client
        .submit_dag(pb::SubmitDagRequest {
            file_name: format!("{name}.yaml"),
            source: yaml.to_owned(),
            local_dir: String::new(),
            bundle_digest: String::new(),
        })
        .await
        .unwrap();
    client
        .trigger_run(pb::TriggerRunRequest {
            dag: name.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .run
        .expect("a triggered run has a summary")
        .run_id
}

async fn wait_run(
    client: &mut VishwaClient<Channel>,
    run: &str,
    done: impl Fn(&pb::Run) -> bool,
) -> pb::Run {
    let deadline = tokio::time::Instant::now() + RUN_LIMIT;
    loop {
        let view = client
            .get_run(pb::GetRunRequest {
                run_id: run.to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        if done(&view) {
            return view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {run} did not get there in {RUN_LIMIT:?}: {view:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ended(run: &pb::Run) -> bool {
    run.summary.as_ref().is_some_and(|s| {
        [
            pb::RunState::Succeeded,
            pb::RunState::Failed,
            pb::RunState::Cancelled,
        ]
        .iter()
        .any(|state| s.state == *state as i32)
    })
}

fn stage<'a>(run: &'a pb::Run, name: &str) -> &'a pb::StageRun {
    run.stages
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no stage {name} in {run:#?}"))
}

fn key_of(digest: &str) -> String {
    format!("{PREFIX}/sha256/{}/{}", &digest[..2], &digest[2..])
}

async fn outputs(client: &mut VishwaClient<Channel>, run: &str) -> Vec<pb::Artifact> {
    client
        .list_artifacts(pb::ListArtifactsRequest {
            run_id: run.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .artifacts
}

#[tokio::test]
async fn outputs_go_through_the_bucket_never_the_scheduler_and_tampering_is_caught() {
    let mut setup = start().await;
    let big = PART_BYTES + 3_000_000;
    let yaml = format!(
        r#"name: s3-flow
stages:
  - name: produce
    executor: process
    worker: {{node: a}}
    outputs: [data.txt, big.bin]
    command: 'seq 1 200000 > "$VISHWA_OUT/data.txt" && head -c {big} /dev/urandom > "$VISHWA_OUT/big.bin"'
  - name: consume
    needs: [produce]
    executor: process
    worker: {{node: b}}
    outputs: [last.txt]
    command: 'tail -n 1 "$VISHWA_IN/produce/data.txt" > "$VISHWA_OUT/last.txt" && test "$(wc -c < "$VISHWA_IN/produce/big.bin")" -eq {big}'
"#
    );
    let client = &mut setup.client;
    let run = trigger(client, "s3-flow", &yaml).await;
    let view = wait_run(client, &run, ended).await;
    assert_eq!(
        view.summary.as_ref().unwrap().state,
        pb::RunState::Succeeded as i32,
        "{view:#?}"
    );
    assert_eq!(stage(&view, "produce").worker, "s3-a");
    assert_eq!(stage(&view, "consume").worker, "s3-b");

    // Every output is an object keyed by its digest, with the bytes the stage wrote.
    let keys = setup.s3.keys();
    let artifacts = outputs(client, &run).await;
    assert_eq!(artifacts.len(), 3, "{artifacts:#?}");
    for a in &artifacts {
        let key = key_of(&a.digest);
        assert!(keys.contains(&key), "{key} not in the bucket: {keys:?}");
        let object = std::fs::read(setup.s3.object_path(&key)).unwrap();
        assert_eq!(object.len() as u64, a.size, "{}", a.name);
        assert_eq!(hex_sha256(&object), a.digest, "{}", a.name);
    }
    let last = artifacts.iter().find(|a| a.name == "last.txt").unwrap();
    let object = std::fs::read(setup.s3.object_path(&key_of(&last.digest))).unwrap();
    assert_eq!(object, b"200000\n");
    let big_out = artifacts.iter().find(|a| a.name == "big.bin").unwrap();
    assert_eq!(big_out.size, big, "the multipart upload kept every part");

    // The scheduler's process never read or wrote an artifact byte.
    let counters = setup.scheduler.scheduler().artifact_counters();
    assert_eq!((counters.read(), counters.written()), (0, 0));

    // Tampering: the producer's output is overwritten in the bucket (same size) while a
    // gate stage holds the consumer back; the consumer's download does not match its digest.
    let go = setup.dir.path().join("go");
    let yaml = format!(
        r#"name: s3-tamper
stages:
  - name: produce
    executor: process
    worker: {{node: a}}
    outputs: [model.txt]
    command: 'echo "trained $VISHWA_RUN_ID" > "$VISHWA_OUT/model.txt"'
  - name: gate
    needs: [produce]
    executor: process
    worker: {{node: a}}
    command: 'while [ ! -e {go} ]; do sleep 0.1; done'
  - name: consume
    needs: [produce, gate]
    executor: process
    worker: {{node: b}}
    command: 'cat "$VISHWA_IN/produce/model.txt"'
"#,
        go = go.display()
    );
    let run = trigger(client, "s3-tamper", &yaml).await;
    wait_run(client, &run, |r| {
        r.stages
            .iter()
            .any(|s| s.name == "produce" && s.state == pb::StageState::Succeeded as i32)
    })
    .await;
    let model = outputs(client, &run)
        .await
        .into_iter()
        .find(|a| a.name == "model.txt")
        .unwrap();
    let path = setup.s3.object_path(&key_of(&model.digest));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    std::fs::write(&go, b"").unwrap();
    let view = wait_run(client, &run, ended).await;
    assert_eq!(
        view.summary.as_ref().unwrap().state,
        pb::RunState::Failed as i32,
        "{view:#?}"
    );
    let consume = stage(&view, "consume");
    assert_eq!(consume.state, pb::StageState::Failed as i32, "{view:#?}");
    assert!(
        consume.message.contains(&model.digest) && consume.message.contains("produce/model.txt"),
        "the failure names the input and its digest: {}",
        consume.message
    );
    let counters = setup.scheduler.scheduler().artifact_counters();
    assert_eq!((counters.read(), counters.written()), (0, 0));

    for worker in setup.workers {
        worker.stop().await.unwrap();
    }
    setup.scheduler.stop().await.unwrap();
}

fn hex_sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
