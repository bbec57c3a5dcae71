//! The task stream: the scheduler's commands to this worker, an attempt to start or one to
//! stop. Each attempt runs on its own task, tracked so the worker reports it before it stops.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Status, Streaming};
use vishwa_proto::v1 as pb;

use super::attempt::Attempt;
use super::config::{Executors, WorkerConfig, owner_label};
use super::shared::Shared;
use crate::artifacts::AttemptDirPool;
use crate::bundle::BundleCache;
use crate::connect::WorkerClient as Client;

/// What starting an attempt takes.
pub(super) struct Tasks<'a> {
    pub(super) config: &'a WorkerConfig,
    pub(super) client: Client,
    pub(super) executors: &'a Executors,
    pub(super) bundles: &'a Arc<BundleCache>,
    pub(super) attempt_dirs: &'a Arc<AttemptDirPool>,
    pub(super) shared: Arc<Shared>,
    pub(super) tracker: &'a TaskTracker,
}

impl Tasks<'_> {
    /// Opens the registered worker's task stream.
    pub(super) async fn open(
        &self,
        worker_id: &str,
    ) -> Result<Streaming<pb::WorkerCommand>, Status> {
        Ok(self
            .client
            .clone()
            .tasks(pb::TasksRequest {
                worker_id: worker_id.to_owned(),
            })
            .await?
            .into_inner())
    }

    pub(super) fn handle(&self, worker_id: &str, command: pb::worker_command::Command) {
        match command {
            pb::worker_command::Command::Task(task) => {
                let token = CancellationToken::new();
                if self.shared.draining() {
                    // Sent before the scheduler heard we are draining: hand it back.
                    token.cancel();
                }
                self.shared
                    .running()
                    .insert(task.attempt_id.clone(), token.clone());
                let attempt = Attempt {
                    client: self.client.clone(),
                    worker_id: worker_id.to_owned(),
                    owner: owner_label(self.config),
                    executors: self.executors.clone(),
                    bundles: self.bundles.clone(),
                    attempt_dirs: self.attempt_dirs.clone(),
                    allow_process: self.config.allow_process,
                    allow_mounts: self.config.allow_mounts.clone(),
                    shared: self.shared.clone(),
                };
                self.tracker.spawn(attempt.run(task, token));
            }
            pb::worker_command::Command::Cancel(c) => self.shared.cancel(&c.attempt_id, &c.reason),
        }
    }
}
