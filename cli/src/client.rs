//! The CLI's gRPC client: one connection to the scheduler, the token on every call, and
//! errors turned into one readable line.

use std::error::Error as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Result, anyhow};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};
use vishwa_proto::v1 as pb;
use vishwa_worker::connect::endpoint;

use crate::Global;

/// A connected client.
#[derive(Clone)]
pub(crate) struct Client {
    server: String,
    token: Option<String>,
    /// How long a call waits for the answer (`--timeout`); None: as long as it takes.
    timeout: Option<Duration>,
    inner: pb::vishwa_client::VishwaClient<Channel>,
}

impl Client {
    /// Connects to the scheduler at `server` over plain HTTP/2 or (`https://`) TLS trusting
    /// the system's roots.
    pub(crate) async fn connect(server: &str, token: Option<String>) -> Result<Client> {
        Client::connect_tls(server, token, None, None).await
    }

    /// Connects as the global flags say: --server, --token, --tls-ca.
    pub(crate) async fn from_global(global: &Global) -> Result<Client> {
        Client::connect_tls(
            &global.server,
            global.token.clone(),
            global.tls_ca.as_deref(),
            Some(global.timeout),
        )
        .await
    }

    /// Connects to `server`, trusting the CA in `tls_ca` for an `https://` URL.
    pub(crate) async fn connect_tls(
        server: &str,
        token: Option<String>,
        tls_ca: Option<&Path>,
        timeout: Option<Duration>,
    ) -> Result<Client> {
        let mut endpoint = endpoint(server, tls_ca)
            .map_err(|e| anyhow!("--server `{server}`: {e}"))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5));
        // Per call, until the answer (a stream's start) arrives; a stream then lives on.
        if let Some(timeout) = timeout {
            endpoint = endpoint.timeout(timeout);
        }
        let channel = endpoint.connect().await.map_err(|e| {
            let cause = source_message(&e);
            anyhow!(
                "cannot reach the scheduler at {server} ({cause}){}",
                hint(server, &cause)
            )
        })?;
        let inner = pb::vishwa_client::VishwaClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        Ok(Client {
            server: server.to_owned(),
            token,
            timeout,
            inner,
        })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(token) = &self.token
            && let Ok(value) = MetadataValue::try_from(format!("Bearer {token}"))
        {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    fn fail(&self, status: Status) -> anyhow::Error {
        if let Some(timeout) = self.timeout
            && status.code() == Code::Cancelled
            && status.message().to_ascii_lowercase().contains("timeout")
        {
            return anyhow!(
                "the scheduler at {} did not answer within {} (--timeout); it is overloaded or \
                 stuck: check its log, or pass a longer --timeout",
                self.server,
                humantime::format_duration(timeout)
            );
        }
        match status.code() {
            // The scheduler itself answered (e.g. its store cannot write): its message says
            // what is wrong; connection hints would mislead.
            Code::Unavailable | Code::Internal if status.source().is_none() => {
                anyhow!(
                    "the scheduler at {} is unavailable: {}",
                    self.server,
                    status.message()
                )
            }
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled => {
                let cause = status
                    .source()
                    .map(source_message)
                    .unwrap_or_else(|| status.message().to_owned());
                anyhow!(
                    "the scheduler at {} is unavailable: {}{}",
                    self.server,
                    status.message(),
                    hint(&self.server, &format!("{} {cause}", status.message()))
                )
            }
            // Bad input (an unknown param, a value over a limit): the usage exit code.
            Code::InvalidArgument => {
                crate::load::Invalid(format!("error: {}", status.message())).into()
            }
            _ => anyhow!("{}", status.message()),
        }
    }

    pub(crate) async fn submit(
        &mut self,
        r: pb::SubmitDagRequest,
    ) -> Result<pb::SubmitDagResponse> {
        let req = self.request(r);
        self.inner
            .submit_dag(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.fail(s))
    }

    pub(crate) async fn has_bundle(&mut self, digest: &str) -> Result<bool> {
        let req = self.request(pb::HasBundleRequest {
            digest: digest.to_owned(),
        });
        self.inner
            .has_bundle(req)
            .await
            .map(|r| r.into_inner().present)
            .map_err(|s| self.fail(s))
    }

    pub(crate) async fn upload_bundle(
        &mut self,
        chunks: impl tonic::IntoStreamingRequest<Message = pb::BundleChunk>,
    ) -> Result<pb::UploadBundleResponse> {
        let mut req = chunks.into_streaming_request();
        if let Some(token) = &self.token
            && let Ok(value) = MetadataValue::try_from(format!("Bearer {token}"))
        {
            req.metadata_mut().insert("authorization", value);
        }
        self.inner
            .upload_bundle(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.fail(s))
    }

    pub(crate) async fn list_workers(&mut self) -> Result<Vec<pb::WorkerInfo>> {
        let req = self.request(pb::ListWorkersRequest {});
        self.inner
            .list_workers(req)
            .await
            .map(|r| r.into_inner().workers)
            .map_err(|s| self.fail(s))
    }

    pub(crate) async fn drain_worker(&mut self, name: &str, undo: bool) -> Result<pb::WorkerInfo> {
        let req = self.request(pb::DrainWorkerRequest {
            name: name.to_owned(),
            undo,
        });
        let response = self
            .inner
            .drain_worker(req)
            .await
            .map_err(|s| self.fail(s))?;
        response
            .into_inner()
            .worker
            .ok_or_else(|| anyhow!("the scheduler answered without the worker"))
    }

    pub(crate) async fn list_dags(&mut self) -> Result<Vec<pb::DagSummary>> {
        let req = self.request(pb::ListDagsRequest {});
        self.inner
            .list_dags(req)
            .await
            .map(|r| r.into_inner().dags)
            .map_err(|s| self.fail(s))
    }

    pub(crate) async fn get_dag(&mut self, name: &str) -> Result<pb::GetDagResponse> {
        let req = self.request(pb::GetDagRequest {
            name: name.to_owned(),
        });
        self.inner
            .get_dag(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.fail(s))
    }

    pub(crate) async fn trigger(&mut self, r: pb::TriggerRunRequest) -> Result<pb::RunSummary> {
        let req = self.request(r);
        let response = self
            .inner
            .trigger_run(req)
            .await
            .map_err(|s| self.fail(s))?;
        response
            .into_inner()
            .run
            .ok_or_else(|| anyhow!("the scheduler answered without a run"))
    }

    pub(crate) async fn list_runs(
        &mut self,
        r: pb::ListRunsRequest,
    ) -> Result<Vec<pb::RunSummary>> {
        let req = self.request(r);
        self.inner
            .list_runs(req)
            .await
            .map(|r| r.into_inner().runs)
            .map_err(|s| self.fail(s))
    }

    pub(crate) async fn delete_runs(
        &mut self,
        r: pb::DeleteRunsRequest,
    ) -> Result<pb::DeleteRunsResponse> {
        let req = self.request(r);
        self.inner
            .delete_runs(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.fail(s))
    }

    pub(crate) async fn prune_runs(
        &mut self,
        r: pb::PruneRunsRequest,
    ) -> Result<pb::DeleteRunsResponse> {
        let req = self.request(r);
        self.inner
            .prune_runs(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.fail(s))
    }

    pub(crate) async fn get_run(&mut self, run_id: &str) -> Result<pb::Run> {
        let req = self.request(pb::GetRunRequest {
            run_id: run_id.to_owned(),
        });
        self.inner
            .get_run(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.fail(s))
    }

    pub(crate) async fn cancel(&mut self, run_id: &str) -> Result<pb::RunSummary> {
        let req = self.request(pb::CancelRunRequest {
            run_id: run_id.to_owned(),
        });
        let response = self.inner.cancel_run(req).await.map_err(|s| self.fail(s))?;
        response
            .into_inner()
            .run
            .ok_or_else(|| anyhow!("the scheduler answered without a run"))
    }

    pub(crate) async fn approve_stage(
        &mut self,
        r: pb::ApproveStageRequest,
    ) -> Result<pb::ApproveStageResponse> {
        let req = self.request(r);
        let response = self
            .inner
            .approve_stage(req)
            .await
            .map_err(|s| self.fail(s))?;
        Ok(response.into_inner())
    }

    pub(crate) async fn retry(&mut self, r: pb::RetryRunRequest) -> Result<pb::RetryRunResponse> {
        let req = self.request(r);
        self.inner
            .retry_run(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.fail(s))
    }

    pub(crate) async fn pause(&mut self, name: &str) -> Result<pb::PauseDagResponse> {
        let req = self.request(pb::PauseDagRequest {
            name: name.to_owned(),
        });
        self.inner
            .pause_dag(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.fail(s))
    }

    pub(crate) async fn resume(
        &mut self,
        name: &str,
        skip_missed: bool,
    ) -> Result<pb::ResumeDagResponse> {
        let req = self.request(pb::ResumeDagRequest {
            name: name.to_owned(),
            skip_missed,
        });
        self.inner
            .resume_dag(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.fail(s))
    }

    pub(crate) async fn backfill(
        &mut self,
        r: pb::BackfillRequest,
    ) -> Result<pb::BackfillResponse> {
        let req = self.request(r);
        self.inner
            .backfill(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.fail(s))
    }

    /// Errors stay statuses, so a caller can tell a restarting scheduler from a refusal.
    pub(crate) async fn watch_run(
        &mut self,
        run_id: &str,
        include_logs: bool,
    ) -> Result<Streaming<pb::RunEvent>, Status> {
        let req = self.request(pb::WatchRunRequest {
            run_id: run_id.to_owned(),
            include_logs,
        });
        self.inner.watch_run(req).await.map(|r| r.into_inner())
    }

    /// Errors stay statuses, so a caller can tell a restarting scheduler from a refusal.
    pub(crate) async fn stream_logs(
        &mut self,
        r: pb::StreamLogsRequest,
    ) -> Result<Streaming<pb::LogLine>, Status> {
        let req = self.request(r);
        self.inner.stream_logs(req).await.map(|r| r.into_inner())
    }

    pub(crate) async fn set_secret(
        &mut self,
        name: &str,
        value: Vec<u8>,
    ) -> Result<pb::SetSecretResponse> {
        let req = self.request(pb::SetSecretRequest {
            name: name.to_owned(),
            value: value.into(),
        });
        self.inner
            .set_secret(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.fail(s))
    }

    pub(crate) async fn list_artifacts(&mut self, run_id: &str) -> Result<Vec<pb::Artifact>> {
        let req = self.request(pb::ListArtifactsRequest {
            run_id: run_id.to_owned(),
        });
        self.inner
            .list_artifacts(req)
            .await
            .map(|r| r.into_inner().artifacts)
            .map_err(|s| self.fail(s))
    }

    pub(crate) async fn get_artifact(
        &mut self,
        run_id: &str,
        path: &str,
    ) -> Result<Streaming<pb::ArtifactChunk>> {
        let req = self.request(pb::GetArtifactRequest {
            run_id: run_id.to_owned(),
            path: path.to_owned(),
        });
        self.inner
            .get_artifact(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.fail(s))
    }

    pub(crate) async fn list_assets(&mut self, name: &str) -> Result<Vec<pb::Asset>> {
        let req = self.request(pb::ListAssetsRequest {
            name: name.to_owned(),
        });
        self.inner
            .list_assets(req)
            .await
            .map(|r| r.into_inner().assets)
            .map_err(|s| self.fail(s))
    }

    pub(crate) async fn list_secrets(&mut self) -> Result<Vec<pb::SecretInfo>> {
        let req = self.request(pb::ListSecretsRequest {});
        self.inner
            .list_secrets(req)
            .await
            .map(|r| r.into_inner().secrets)
            .map_err(|s| self.fail(s))
    }

    pub(crate) async fn delete_secret(&mut self, name: &str) -> Result<()> {
        let req = self.request(pb::DeleteSecretRequest {
            name: name.to_owned(),
        });
        self.inner
            .delete_secret(req)
            .await
            .map(|_| ())
            .map_err(|s| self.fail(s))
    }

    pub(crate) async fn list_audit(&mut self, limit: u32) -> Result<Vec<pb::AuditEntry>> {
        let req = self.request(pb::ListAuditRequest { limit });
        self.inner
            .list_audit(req)
            .await
            .map(|r| r.into_inner().entries)
            .map_err(|s| self.fail(s))
    }

    pub(crate) async fn find_artifact(&mut self, digest: &str) -> Result<pb::FindArtifactResponse> {
        let req = self.request(pb::FindArtifactRequest {
            digest: digest.to_owned(),
        });
        self.inner
            .find_artifact(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.fail(s))
    }

    /// The scheduler's URL.
    pub(crate) fn server(&self) -> &str {
        &self.server
    }

    /// An error for a status, as the other calls report it.
    pub(crate) fn error(&self, status: Status) -> anyhow::Error {
        self.fail(status)
    }
}

/// What to try when the scheduler could not be reached: start one, or fix what TLS
/// explains (a plain URL to a TLS port, a certificate the client does not trust).
fn hint(server: &str, cause: &str) -> &'static str {
    let lower = cause.to_ascii_lowercase();
    if lower.contains("expired") {
        "; the scheduler's TLS certificate has expired and needs renewing"
    } else if lower.contains("unknownissuer")
        || lower.contains("unknown issuer")
        || lower.contains("certificate")
    {
        "; the scheduler's TLS certificate is not trusted: pass the CA that signed it with --tls-ca or VISHWA_TLS_CA"
    } else if lower.contains("refused")
        || lower.contains("lookup")
        || lower.contains("dns")
        || lower.contains("timed out")
    {
        "; start one with `vishwa scheduler` or `vishwa dev`, or set --server"
    } else if server.starts_with("https://") {
        "; if the scheduler does not serve TLS, use an http:// URL"
    } else {
        "; if the scheduler serves TLS, use an https:// URL (and --tls-ca for a private CA)"
    }
}

/// The innermost message of an error chain, which names the real cause.
fn source_message(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}
