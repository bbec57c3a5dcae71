//! Heartbeats: keep the worker's lease, tell the scheduler what runs here and whether the
//! worker is draining, and hear which attempts to stop or that it must register again.

use std::time::Duration;

use tonic::Status;
use vishwa_proto::v1 as pb;

use super::shared::Shared;
use crate::connect::WorkerClient as Client;

/// Ticks at the interval the scheduler asked for; a late tick delays the next.
pub(super) fn ticker(interval: Duration) -> tokio::time::Interval {
    let mut heartbeat = tokio::time::interval(interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat
}

/// One heartbeat; Err when the call fails or the scheduler asks the worker to register again.
pub(super) async fn heartbeat(
    client: &mut Client,
    worker_id: &str,
    shared: &Shared,
) -> Result<(), Status> {
    let reply = client
        .heartbeat(pb::HeartbeatRequest {
            worker_id: worker_id.to_owned(),
            running_attempts: shared.running_ids(),
            draining: shared.draining(),
        })
        .await?
        .into_inner();
    for attempt in reply.cancel_attempts {
        shared.cancel(&attempt, "the scheduler no longer considers it current");
    }
    if reply.reregister {
        return Err(Status::unavailable("the scheduler asked to register again"));
    }
    Ok(())
}
