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

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn heartbeats_tick_at_the_interval_and_a_late_one_delays_the_next() {
        let start = Instant::now();
        let mut ticks = ticker(Duration::from_secs(5));
        ticks.tick().await;
        assert_eq!(start.elapsed(), Duration::ZERO, "the first at once");
        ticks.tick().await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        // A heartbeat call that takes 7 s: the next tick is 5 s after the late one, not
        // a burst to catch up.
        tokio::time::sleep(Duration::from_secs(7)).await;
        ticks.tick().await;
        assert_eq!(start.elapsed(), Duration::from_secs(12));
        ticks.tick().await;
        assert_eq!(start.elapsed(), Duration::from_secs(17));
    }
}
