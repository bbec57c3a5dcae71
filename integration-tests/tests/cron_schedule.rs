//! A real seconds-level schedule firing real runs: a scheduler on a port-0 listener over a
//! tempdir sled store, a real worker with the process executor, a DAG scheduled every 2 s.

use std::collections::BTreeSet;
use std::time::Duration;

use vishwa_integration_tests::inproc::{
    InProcessScheduler, InProcessWorker, process_executors, worker_config,
};
use vishwa_integration_tests::names::now_ms;
use vishwa_integration_tests::poll::wait_until;
use vishwa_proto::v1 as pb;
use vishwa_proto::v1::vishwa_client::VishwaClient;
use vishwa_scheduler::SchedulerConfig;

const DAG: &str = "name: every-two-seconds
schedule:
  cron: \"*/2 * * * * *\"
  catchup: none
  overlap: allow
stages:
  - name: tick
    executor: process
    command: \"echo slot $VISHWA_LOGICAL_TIME\"
";

/// `<dag>-<yyyymmddThhmmssZ>` of a slot, written out independently of the scheduler's code.
fn expected_run_id(slot_ms: i64) -> String {
    let secs = slot_ms / 1000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "every-two-seconds-{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

async fn scheduled_runs(
    client: &mut VishwaClient<tonic::transport::Channel>,
) -> Vec<pb::RunSummary> {
    let runs = client
        .list_runs(pb::ListRunsRequest {
            dag: "every-two-seconds".into(),
            state: 0,
            limit: 1000,
        })
        .await
        .expect("lists runs")
        .into_inner()
        .runs;
    runs.into_iter()
        .filter(|r| r.trigger == "schedule")
        .collect()
}

#[tokio::test]
async fn a_seconds_level_schedule_fires_real_runs_with_slot_ids_and_logical_times() {
    let data = tempfile::tempdir().unwrap();
    let scheduler = InProcessScheduler::start(SchedulerConfig {
        data_dir: data.path().to_path_buf(),
        ..SchedulerConfig::default()
    })
    .await
    .unwrap();
    let url = scheduler.url.clone();
    let mut config = worker_config(&url, "cron-test", 4, data.path().join("worker-cache"));
    config.allow_process = true;
    let worker = InProcessWorker::spawn(config, process_executors());

    let mut client = VishwaClient::connect(url.clone()).await.unwrap();
    let submitted = client
        .submit_dag(pb::SubmitDagRequest {
            file_name: "every-two-seconds.yaml".into(),
            source: DAG.into(),
            local_dir: String::new(),
            bundle_digest: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let summary = submitted.dag.unwrap();
    let submitted_at = now_ms();
    // The first fire is the next 2 s slot after the submission.
    assert!(summary.next_fire_ms > submitted_at - 1000);
    assert!(summary.next_fire_ms <= submitted_at + 2000);
    assert_eq!(summary.next_fire_ms % 2000, 0);

    let mut probe = client.clone();
    let fired = wait_until(Duration::from_secs(20), || {
        let mut c = probe.clone();
        async move {
            let runs = scheduled_runs(&mut c).await;
            runs.iter()
                .filter(|r| r.state == pb::RunState::Succeeded as i32)
                .count()
                >= 2
        }
    })
    .await;
    assert!(fired, "two scheduled runs did not succeed within 20 s");

    let runs = scheduled_runs(&mut probe).await;
    let mut slots = BTreeSet::new();
    for run in &runs {
        let slot = run.logical_time_ms;
        assert_eq!(
            slot % 2000,
            0,
            "{} has logical time {slot} off a slot",
            run.run_id
        );
        assert!(
            slot >= summary.next_fire_ms,
            "{} fired a slot before submission",
            run.run_id
        );
        assert_eq!(run.run_id, expected_run_id(slot));
        let lateness = run.created_ms - slot;
        assert!(
            (0..1000).contains(&lateness),
            "{} created {lateness} ms after its slot",
            run.run_id
        );
        assert!(slots.insert(slot), "slot {slot} fired twice");
    }

    // Backfilling the fired range finds every slot taken and creates nothing.
    let (first, last) = (*slots.first().unwrap(), *slots.last().unwrap());
    let backfill = client
        .backfill(pb::BackfillRequest {
            dag: "every-two-seconds".into(),
            from_ms: first,
            to_ms: last,
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!backfill.slots.is_empty());
    assert!(
        backfill.slots.iter().all(|s| s.outcome == "exists"),
        "{:?}",
        backfill.slots
    );

    // Paused, the schedule starts nothing; the pause shows in the DAG listing.
    let paused = client
        .pause_dag(pb::PauseDagRequest {
            name: "every-two-seconds".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(paused.changed && paused.dag.unwrap().paused);
    let count = scheduled_runs(&mut probe).await.len();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(
        scheduled_runs(&mut probe).await.len(),
        count,
        "a paused schedule fired"
    );

    let _ = worker.stop().await;
    scheduler.stop().await.unwrap();
}
