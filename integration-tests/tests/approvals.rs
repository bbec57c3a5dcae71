//! `approval:` gates through a real scheduler and worker: a waiting stage holds no slot (a
//! second DAG runs on the only slot meanwhile), approval lets it run, rejection fails it and
//! what needs it follows its trigger rule, the approval's timeout rejects, and a scheduler
//! restart keeps it waiting.

use std::time::Duration;

use tonic::Code;
use vishwa_integration_tests::cluster::{
    ClusterOptions, TestCluster, dag_yaml, describe_run, run_state, stage, stage_state,
    unique_dag_name,
};
use vishwa_proto::v1 as pb;

const LIMIT: Duration = Duration::from_secs(60);

fn gated(name: &str, timeout: &str) -> String {
    dag_yaml(
        name,
        "",
        &format!(
            r#"
defaults:
  executor: process
stages:
  - name: train
    command: [true]
  - name: deploy
    needs: [train]
    command: [true]
    approval: {{message: "ship the model?"{timeout}}}
  - name: notify
    needs: [deploy]
    command: [true]
  - name: report
    needs: [deploy]
    trigger: all_done
    command: [true]
"#
        ),
    )
}

async fn decide(
    cluster: &mut TestCluster,
    run: &str,
    approve: bool,
    reason: &str,
) -> Result<Vec<String>, tonic::Status> {
    cluster
        .client
        .approve_stage(pb::ApproveStageRequest {
            run_id: run.to_owned(),
            stage: "deploy".into(),
            approve,
            reason: reason.into(),
        })
        .await
        .map(|r| r.into_inner().instances)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_stage_holds_no_slot_until_approved_or_rejected() {
    let mut cluster = TestCluster::start_with(ClusterOptions {
        slots: 1,
        data_dir: None,
    })
    .await
    .unwrap();
    let name = unique_dag_name("gated");
    cluster.submit(&gated(&name, "")).await.unwrap();

    // Approve: the stage waits with its message, another DAG runs on the one slot, then
    // the approved stage runs.
    let run = cluster.trigger(&name, &[]).await.unwrap().run_id;
    let waiting = cluster
        .wait_for_stage_state(&run, "deploy", pb::StageState::WaitingApproval, LIMIT)
        .await
        .unwrap();
    assert_eq!(stage(&waiting, "deploy").message, "ship the model?");
    assert_eq!(stage(&waiting, "deploy").approval_deadline_ms, 0);
    let other = unique_dag_name("other");
    let other_yaml = dag_yaml(
        &other,
        "",
        "stages:\n  - {name: only, executor: process, command: [true]}\n",
    );
    let other_run = cluster.submit_and_trigger(&other_yaml, &[]).await.unwrap();
    let other_run = cluster
        .wait_for_run_end(&other_run.run_id, LIMIT)
        .await
        .unwrap();
    assert_eq!(run_state(&other_run), Some(pb::RunState::Succeeded));
    let still = cluster.get_run(&run).await.unwrap();
    assert_eq!(
        stage_state(&still, "deploy"),
        pb::StageState::WaitingApproval
    );
    let err = decide(&mut cluster, &run, false, "  ").await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "a rejection needs a reason"
    );
    assert_eq!(
        decide(&mut cluster, &run, true, "").await.unwrap(),
        ["deploy"]
    );
    let done = cluster.wait_for_run_end(&run, LIMIT).await.unwrap();
    assert_eq!(
        run_state(&done),
        Some(pb::RunState::Succeeded),
        "{}",
        describe_run(&done)
    );
    assert_eq!(stage(&done, "deploy").attempts.len(), 1);
    let err = decide(&mut cluster, &run, true, "").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // Reject: the stage fails with who and why, notify is upstream_failed, all_done runs.
    let run = cluster.trigger(&name, &[]).await.unwrap().run_id;
    cluster
        .wait_for_stage_state(&run, "deploy", pb::StageState::WaitingApproval, LIMIT)
        .await
        .unwrap();
    decide(&mut cluster, &run, false, "accuracy dropped")
        .await
        .unwrap();
    let done = cluster.wait_for_run_end(&run, LIMIT).await.unwrap();
    assert_eq!(run_state(&done), Some(pb::RunState::Failed));
    let deploy = stage(&done, "deploy");
    assert_eq!(deploy.state, pb::StageState::Failed as i32);
    assert_eq!(deploy.message, "rejected by local: accuracy dropped");
    assert!(deploy.attempts.is_empty(), "a rejected stage never ran");
    assert_eq!(stage_state(&done, "notify"), pb::StageState::UpstreamFailed);
    assert_eq!(stage_state(&done, "report"), pb::StageState::Succeeded);
    cluster.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approval_timeout_rejects_the_stage() {
    let mut cluster = TestCluster::start().await.unwrap();
    let name = unique_dag_name("gated-timeout");
    cluster
        .submit(&gated(&name, ", timeout: 2s"))
        .await
        .unwrap();
    let run = cluster.trigger(&name, &[]).await.unwrap().run_id;
    let waiting = cluster
        .wait_for_stage_state(&run, "deploy", pb::StageState::WaitingApproval, LIMIT)
        .await
        .unwrap();
    assert!(stage(&waiting, "deploy").approval_deadline_ms > 0);
    let done = cluster.wait_for_run_end(&run, LIMIT).await.unwrap();
    assert_eq!(run_state(&done), Some(pb::RunState::Failed));
    assert_eq!(
        stage(&done, "deploy").message,
        "rejected by timeout: no decision within 2s"
    );
    assert_eq!(stage_state(&done, "report"), pb::StageState::Succeeded);
    cluster.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_waiting_keeps_the_stage_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let options = ClusterOptions {
        slots: 2,
        data_dir: Some(dir.path().to_path_buf()),
    };
    let mut cluster = TestCluster::start_with(options.clone()).await.unwrap();
    let name = unique_dag_name("gated-restart");
    cluster
        .submit(&gated(&name, ", timeout: 1h"))
        .await
        .unwrap();
    let run = cluster.trigger(&name, &[]).await.unwrap().run_id;
    let before = cluster
        .wait_for_stage_state(&run, "deploy", pb::StageState::WaitingApproval, LIMIT)
        .await
        .unwrap();
    cluster.stop().await.unwrap();

    let mut cluster = TestCluster::start_with(options).await.unwrap();
    let after = cluster.get_run(&run).await.unwrap();
    assert_eq!(
        stage_state(&after, "deploy"),
        pb::StageState::WaitingApproval
    );
    assert_eq!(
        stage(&after, "deploy").approval_deadline_ms,
        stage(&before, "deploy").approval_deadline_ms,
        "the deadline survives the restart"
    );
    decide(&mut cluster, &run, true, "").await.unwrap();
    let done = cluster.wait_for_run_end(&run, LIMIT).await.unwrap();
    assert_eq!(
        run_state(&done),
        Some(pb::RunState::Succeeded),
        "{}",
        describe_run(&done)
    );
    cluster.stop().await.unwrap();
}

/// With tokens: a viewer may not approve; an operator's decision is audited with the caller,
/// the run and stage, and the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_cannot_approve_and_decisions_are_audited() {
    use vishwa_integration_tests::auth::write_tokens_file;
    use vishwa_integration_tests::inproc::InProcessScheduler;
    use vishwa_scheduler::SchedulerConfig;
    use vishwa_worker::connect::BearerToken;

    let data = tempfile::tempdir().unwrap();
    let tokens = data.path().join("tokens.yaml");
    write_tokens_file(
        &tokens,
        &[
            ("root", "admin", "admin-token-000000000"),
            ("ops", "operator", "operator-token-0000000"),
            ("reader", "viewer", "viewer-token-00000000"),
        ],
    );
    let scheduler = InProcessScheduler::start(SchedulerConfig {
        data_dir: data.path().join("data"),
        tokens: Some(tokens),
        ..SchedulerConfig::default()
    })
    .await
    .unwrap();
    let channel = tonic::transport::Channel::from_shared(scheduler.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = |token: &str| {
        pb::vishwa_client::VishwaClient::with_interceptor(
            channel.clone(),
            BearerToken::new(Some(token)).unwrap(),
        )
    };
    let request = |approve: bool| pb::ApproveStageRequest {
        run_id: "nightly-1".into(),
        stage: "deploy".into(),
        approve,
        reason: if approve { "" } else { "bad metrics" }.into(),
    };
    let err = client("viewer-token-00000000")
        .approve_stage(request(true))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = client("operator-token-0000000")
        .approve_stage(request(false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "the operator passes: {err:?}");
    let audit = client("admin-token-000000000")
        .list_audit(pb::ListAuditRequest { limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let entry = audit
        .iter()
        .find(|e| e.method == "RejectStage")
        .unwrap_or_else(|| panic!("no RejectStage in {audit:?}"));
    assert_eq!(entry.caller, "ops");
    assert_eq!(entry.target, "nightly-1/deploy reason: bad metrics");
    assert!(entry.outcome.starts_with("NotFound"), "{}", entry.outcome);
    scheduler.stop().await.unwrap();
}
