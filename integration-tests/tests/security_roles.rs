//! Tokens and roles against a real scheduler on a real TCP port: every RPC of both services,
//! called with each role's token, is let through or refused exactly as the role table says;
//! no token and a wrong token are unauthenticated; mutating calls land in the audit log with
//! the caller's name; without tokens the scheduler refuses a non-loopback address.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Status};
use vishwa_integration_tests::inproc::InProcessScheduler;
use vishwa_proto::v1 as pb;
use vishwa_scheduler::auth::{METHOD_ROLES, Role, method_name};
use vishwa_scheduler::{Scheduler, SchedulerConfig, ServeError};
use vishwa_worker::connect::BearerToken;

const TOKENS: &str = "\
- {name: root, role: admin, token: admin-token-000000000}
- {name: ops, role: operator, token: operator-token-0000000}
- {name: reader, role: viewer, token: viewer-token-00000000}
- {name: w1, role: worker, token: worker-token-00000000}
";

const ROLES: [(Role, &str); 4] = [
    (Role::Admin, "admin-token-000000000"),
    (Role::Operator, "operator-token-0000000"),
    (Role::Viewer, "viewer-token-00000000"),
    (Role::Worker, "worker-token-00000000"),
];

const DAG: &str = "name: audited\nstages:\n  - name: only\n    image: vishwa-test/busybox:1\n    command: [true]\n";

struct Server {
    channel: Channel,
    scheduler: Option<InProcessScheduler>,
    _data: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let data = tempfile::tempdir().unwrap();
        let tokens = data.path().join("tokens.yaml");
        std::fs::write(&tokens, TOKENS).unwrap();
        let scheduler = InProcessScheduler::start(SchedulerConfig {
            data_dir: data.path().join("data"),
            tokens: Some(tokens),
            ..SchedulerConfig::default()
        })
        .await
        .unwrap();
        let channel = Channel::from_shared(scheduler.url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        Server {
            channel,
            scheduler: Some(scheduler),
            _data: data,
        }
    }

    fn client(
        &self,
        token: Option<&str>,
    ) -> pb::vishwa_client::VishwaClient<
        tonic::service::interceptor::InterceptedService<Channel, BearerToken>,
    > {
        pb::vishwa_client::VishwaClient::with_interceptor(
            self.channel.clone(),
            BearerToken::new(token).unwrap(),
        )
    }

    fn worker_client(&self, token: Option<&str>) -> vishwa_worker::connect::WorkerClient {
        pb::worker_api_client::WorkerApiClient::with_interceptor(
            self.channel.clone(),
            BearerToken::new(token).unwrap(),
        )
    }

    /// Calls `method` (a full path from the role table) with a harmless request.
    async fn call(&self, method: &str, token: Option<&str>) -> Result<(), Status> {
        let mut c = self.client(token);
        let mut w = self.worker_client(token);
        let nothing = "no-such-thing".to_owned();
        match method_name(method) {
            "SubmitDag" => c
                .submit_dag(pb::SubmitDagRequest {
                    file_name: "bad.yaml".into(),
                    source: "not: [a dag".into(),
                    ..Default::default()
                })
                .await
                .map(drop),
            "ListDags" => c.list_dags(pb::ListDagsRequest {}).await.map(drop),
            "GetDag" => c
                .get_dag(pb::GetDagRequest { name: nothing })
                .await
                .map(drop),
            "TriggerRun" => c
                .trigger_run(pb::TriggerRunRequest {
                    dag: nothing,
                    ..Default::default()
                })
                .await
                .map(drop),
            "ListRuns" => c.list_runs(pb::ListRunsRequest::default()).await.map(drop),
            "GetRun" => c
                .get_run(pb::GetRunRequest { run_id: nothing })
                .await
                .map(drop),
            "WatchRun" => c
                .watch_run(pb::WatchRunRequest {
                    run_id: nothing,
                    include_logs: false,
                })
                .await
                .map(drop),
            "StreamLogs" => c
                .stream_logs(pb::StreamLogsRequest {
                    run_id: nothing,
                    ..Default::default()
                })
                .await
                .map(drop),
            "CancelRun" => c
                .cancel_run(pb::CancelRunRequest { run_id: nothing })
                .await
                .map(drop),
            "RetryRun" => c
                .retry_run(pb::RetryRunRequest {
                    run_id: nothing,
                    ..Default::default()
                })
                .await
                .map(drop),
            "ListAssets" => c
                .list_assets(pb::ListAssetsRequest::default())
                .await
                .map(drop),
            "ApproveStage" => c
                .approve_stage(pb::ApproveStageRequest {
                    run_id: nothing,
                    stage: "deploy".into(),
                    approve: true,
                    ..Default::default()
                })
                .await
                .map(drop),
            "HasBundle" => c
                .has_bundle(pb::HasBundleRequest { digest: nothing })
                .await
                .map(drop),
            "UploadBundle" => c
                .upload_bundle(futures::stream::iter(Vec::<pb::BundleChunk>::new()))
                .await
                .map(drop),
            "ListWorkers" => c.list_workers(pb::ListWorkersRequest {}).await.map(drop),
            "ListArtifacts" => c
                .list_artifacts(pb::ListArtifactsRequest { run_id: nothing })
                .await
                .map(drop),
            "GetArtifact" => c
                .get_artifact(pb::GetArtifactRequest {
                    run_id: nothing,
                    path: String::new(),
                })
                .await
                .map(drop),
            "FindArtifact" => c
                .find_artifact(pb::FindArtifactRequest { digest: nothing })
                .await
                .map(drop),
            "DrainWorker" => c
                .drain_worker(pb::DrainWorkerRequest {
                    name: nothing,
                    undo: false,
                })
                .await
                .map(drop),
            "PauseDag" => c
                .pause_dag(pb::PauseDagRequest { name: nothing })
                .await
                .map(drop),
            "ResumeDag" => c
                .resume_dag(pb::ResumeDagRequest {
                    name: nothing,
                    skip_missed: false,
                })
                .await
                .map(drop),
            "Backfill" => c
                .backfill(pb::BackfillRequest {
                    dag: nothing,
                    ..Default::default()
                })
                .await
                .map(drop),
            "SetSecret" => c
                .set_secret(pb::SetSecretRequest {
                    name: "not a valid name".into(),
                    value: b"x".to_vec().into(),
                })
                .await
                .map(drop),
            "ListSecrets" => c.list_secrets(pb::ListSecretsRequest {}).await.map(drop),
            "DeleteSecret" => c
                .delete_secret(pb::DeleteSecretRequest { name: nothing })
                .await
                .map(drop),
            "ListAudit" => c
                .list_audit(pb::ListAuditRequest { limit: 1 })
                .await
                .map(drop),
            "DeleteRuns" => c
                .delete_runs(pb::DeleteRunsRequest {
                    run_ids: vec![nothing],
                })
                .await
                .map(drop),
            "PruneRuns" => c
                .prune_runs(pb::PruneRunsRequest::default())
                .await
                .map(drop),
            "Register" => w.register(pb::RegisterRequest::default()).await.map(drop),
            "Heartbeat" => w
                .heartbeat(pb::HeartbeatRequest {
                    worker_id: nothing,
                    ..Default::default()
                })
                .await
                .map(drop),
            "Tasks" => w
                .tasks(pb::TasksRequest { worker_id: nothing })
                .await
                .map(drop),
            "ReportStarted" => w
                .report_started(pb::ReportStartedRequest {
                    worker_id: nothing.clone(),
                    attempt_id: nothing,
                    handle: String::new(),
                })
                .await
                .map(drop),
            "PushLogs" => w.push_logs(pb::LogBatch::default()).await.map(drop),
            "ReportResult" => w
                .report_result(pb::ReportResultRequest {
                    worker_id: nothing.clone(),
                    attempt_id: nothing,
                    ..Default::default()
                })
                .await
                .map(drop),
            "FetchBundle" => w
                .fetch_bundle(pb::FetchBundleRequest { digest: nothing })
                .await
                .map(drop),
            "UploadArtifact" => w
                .upload_artifact(futures::stream::iter(Vec::<pb::ArtifactChunk>::new()))
                .await
                .map(drop),
            "FetchArtifact" => w
                .fetch_artifact(pb::FetchArtifactRequest { digest: nothing })
                .await
                .map(drop),
            "ArtifactTransfer" => w
                .artifact_transfer(pb::ArtifactTransferRequest::default())
                .await
                .map(drop),
            "CompleteArtifactUpload" => w
                .complete_artifact_upload(pb::CompleteArtifactUploadRequest::default())
                .await
                .map(drop),
            other => panic!("the test does not know how to call {other}; add it here"),
        }
    }

    async fn stop(mut self) {
        if let Some(s) = self.scheduler.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), s.stop()).await;
        }
    }
}

fn passed_auth(result: &Result<(), Status>) -> bool {
    match result {
        Ok(()) => true,
        Err(s) => !matches!(s.code(), Code::PermissionDenied | Code::Unauthenticated),
    }
}

#[tokio::test]
async fn each_role_may_call_exactly_the_rpcs_the_table_grants_it() {
    let server = Server::start().await;
    for (role, token) in ROLES {
        for (method, needed) in METHOD_ROLES {
            let result = server.call(method, Some(token)).await;
            if role.allows(*needed) {
                assert!(
                    passed_auth(&result),
                    "{role} was refused {method}: {result:?}"
                );
            } else {
                let status = result.expect_err(&format!("{role} was let through {method}"));
                assert_eq!(status.code(), Code::PermissionDenied, "{role} {method}");
                assert!(
                    status
                        .message()
                        .contains(&format!("needs the {needed} role")),
                    "{}",
                    status.message()
                );
            }
        }
    }
    // The two crossings the roles exist for, spelled out.
    let status = server
        .call("/vishwa.v1.Vishwa/ListRuns", Some("worker-token-00000000"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = server
        .call(
            "/vishwa.v1.WorkerApi/Register",
            Some("viewer-token-00000000"),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("needs the worker role"));
    server.stop().await;
}

#[tokio::test]
async fn no_token_and_a_wrong_token_are_unauthenticated_on_both_services() {
    let server = Server::start().await;
    for token in [None, Some("not-a-known-token-at-all")] {
        for (method, _) in METHOD_ROLES {
            let status = server
                .call(method, token)
                .await
                .expect_err(&format!("{method} let {token:?} in"));
            assert_eq!(status.code(), Code::Unauthenticated, "{method} {token:?}");
            assert!(
                status.message().contains("VISHWA_TOKEN"),
                "{}",
                status.message()
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn mutating_calls_are_audited_with_their_caller_and_outcome() {
    let server = Server::start().await;
    let mut admin = server.client(Some("admin-token-000000000"));
    let mut ops = server.client(Some("operator-token-0000000"));
    admin
        .submit_dag(pb::SubmitDagRequest {
            file_name: "audited.yaml".into(),
            source: DAG.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let run = ops
        .trigger_run(pb::TriggerRunRequest {
            dag: "audited".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    ops.cancel_run(pb::CancelRunRequest {
        run_id: run.run_id.clone(),
    })
    .await
    .unwrap();
    ops.pause_dag(pb::PauseDagRequest {
        name: "missing".into(),
    })
    .await
    .unwrap_err();
    admin
        .set_secret(pb::SetSecretRequest {
            name: "db-password".into(),
            value: b"hunter2-hunter2".to_vec().into(),
        })
        .await
        .unwrap();
    // Reads are not audited.
    ops.list_runs(pb::ListRunsRequest::default()).await.unwrap();

    let entries = admin
        .list_audit(pb::ListAuditRequest { limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let seen: Vec<(&str, &str, &str, bool)> = entries
        .iter()
        .map(|e| {
            (
                e.caller.as_str(),
                e.method.as_str(),
                e.target.as_str(),
                e.outcome == "ok",
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("root", "SubmitDag", "audited", true),
            ("ops", "TriggerRun", "audited", true),
            ("ops", "CancelRun", run.run_id.as_str(), true),
            ("ops", "PauseDag", "missing", false),
            ("root", "SetSecret", "db-password", true),
        ]
    );
    assert!(
        entries[3].outcome.contains("NotFound"),
        "{}",
        entries[3].outcome
    );
    assert!(entries.iter().all(|e| e.at_ms > 0));
    assert!(
        !format!("{entries:?}").contains("hunter2"),
        "a secret's value reached the audit log"
    );
    // Only admins read the audit log.
    let status = ops
        .list_audit(pb::ListAuditRequest { limit: 0 })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    server.stop().await;
}

#[tokio::test]
async fn without_tokens_a_non_loopback_address_is_refused_with_the_fix() {
    let data = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let config = SchedulerConfig {
        data_dir: data.path().to_path_buf(),
        ..SchedulerConfig::default()
    };
    let error = Scheduler::start(&config, listener, CancellationToken::new())
        .await
        .err()
        .expect("an open scheduler on 0.0.0.0 must be refused");
    assert!(matches!(error, ServeError::OpenOnNetwork { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("--tokens FILE"), "{message}");
    assert!(message.contains("127.0.0.1"), "{message}");
}
