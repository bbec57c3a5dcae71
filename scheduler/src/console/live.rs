//! Server-Sent Events for open pages, fed by the engine's event broadcast (the one gRPC
//! watches read): a run page gets each stage's new state with its stage node's summary, a
//! log page gets new output as it is stored. Nothing polls: a stream wakes on an event.
//! Streams end when the page goes away or the scheduler shuts down.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::detail::{check_stage, run_of, stream_name};
use super::runs::{Counts, counts_text, group_of, group_state};
use super::{Console, ConsoleError, Session};
use crate::engine::EngineEvent;
use crate::ids::RunId;
use crate::store::{LOG_PAGE_BYTES, LogPosition, Store};

/// Events an open page may fall behind before the stream is told to reload.
const PAGE_BUFFER: usize = 256;

type EventStream =
    Sse<axum::response::sse::KeepAliveStream<ReceiverStream<Result<Event, Infallible>>>>;

fn sse(rx: mpsc::Receiver<Result<Event, Infallible>>) -> EventStream {
    Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default())
}

/// `GET /runs/ID/events`: `stage` and `run` events for one run.
pub(super) async fn run_events(
    State(console): State<Console>,
    _session: Session,
    Path(id): Path<String>,
) -> Result<EventStream, ConsoleError> {
    // Subscribe before reading, so nothing falls between the snapshot and the events.
    let events = console.engine().subscribe();
    let run = run_of(&console, &id)?;
    let stages = console.store().run_stages(&run.id)?;
    let mut tracker = RunTracker::default();
    for s in &stages {
        tracker.set(&s.instance, s.state.name());
    }
    let (tx, rx) = mpsc::channel(PAGE_BUFFER);
    let shutdown = console.api().shutdown_token().clone();
    tokio::spawn(async move {
        tokio::select! {
            () = follow_run(events, run.id, tracker, tx) => {}
            () = shutdown.cancelled() => {}
        }
    });
    Ok(sse(rx))
}

/// Each instance's state and each stage's counts, as the page shows them.
#[derive(Default)]
pub(super) struct RunTracker {
    states: HashMap<String, &'static str>,
    counts: HashMap<String, Counts>,
}

impl RunTracker {
    /// Records an instance's state; returns its stage, the stage's state and its summary.
    pub(super) fn set(
        &mut self,
        instance: &str,
        state: &'static str,
    ) -> (String, &'static str, String) {
        let group = group_of(instance).to_owned();
        let counts = self.counts.entry(group.clone()).or_default();
        if let Some(old) = self.states.insert(instance.to_owned(), state)
            && let Some(n) = counts.get_mut(old)
        {
            *n -= 1;
            if *n == 0 {
                counts.remove(old);
            }
        }
        *counts.entry(state).or_default() += 1;
        (group, group_state(counts), counts_text(counts))
    }
}

/// Most engine events folded into one page event: a turn that dispatches or finishes
/// hundreds of instances reaches the page as one message, each instance once.
const BATCH_EVENTS: usize = 4096;

/// Turns the run's engine events into page events until the page goes away: a `stages`
/// event carries every instance that changed since the last one (its latest state, its
/// stage's state and summary), a `run` event the run's state.
pub(super) async fn follow_run(
    mut events: broadcast::Receiver<Arc<EngineEvent>>,
    run: RunId,
    mut tracker: RunTracker,
    tx: mpsc::Sender<Result<Event, Infallible>>,
) {
    loop {
        let first = tokio::select! {
            e = events.recv() => e,
            _ = tx.closed() => return,
        };
        let mut batch = vec![first];
        while batch.len() < BATCH_EVENTS {
            match events.try_recv() {
                Ok(e) => batch.push(Ok(e)),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    batch.push(Err(broadcast::error::RecvError::Lagged(n)))
                }
                Err(_) => break,
            }
        }
        let mut changed: Vec<String> = Vec::new();
        let mut latest: HashMap<String, &'static str> = HashMap::new();
        let mut run_state = None;
        for event in batch {
            match event {
                Ok(e) => match &*e {
                    EngineEvent::Stage { run: r, record } if *r == run => {
                        let seen = latest.insert(record.instance.clone(), record.state.name());
                        if seen.is_none() {
                            changed.push(record.instance.clone());
                        }
                    }
                    EngineEvent::Run(record) if record.id == run => {
                        run_state = Some((record.state.as_str(), record.state.is_final()))
                    }
                    _ => {}
                },
                // Fell behind the broadcast: the page reads everything again.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let _ = tx
                        .send(Ok(Event::default().event("reload").data("lagged")))
                        .await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
        let mut page_events = Vec::new();
        if !changed.is_empty() {
            let updates: Vec<serde_json::Value> = changed
                .iter()
                .map(|instance| {
                    let state = latest[instance];
                    let (group, group_state, counts) = tracker.set(instance, state);
                    serde_json::json!({
                        "instance": instance,
                        "state": state,
                        "group": group,
                        "group_state": group_state,
                        "group_counts": counts,
                    })
                })
                .collect();
            page_events.push(
                Event::default()
                    .event("stages")
                    .data(serde_json::Value::Array(updates).to_string()),
            );
        }
        if let Some((state, done)) = run_state {
            let data = serde_json::json!({ "state": state, "final": done });
            page_events.push(Event::default().event("run").data(data.to_string()));
        }
        for page_event in page_events {
            // A page that does not keep up is told to reload rather than slowing anyone down.
            match tx.try_send(Ok(page_event)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    let _ = tx
                        .send(Ok(Event::default().event("reload").data("slow")))
                        .await;
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct LogFrom {
    attempt: Option<u32>,
    seq: Option<u64>,
}

/// `GET /runs/ID/logs/STAGE/events?attempt=A&seq=S`: the stage's output from that position
/// on, as `log` events (and `attempt` when a new attempt begins).
pub(super) async fn log_events(
    State(console): State<Console>,
    _session: Session,
    Path((id, stage)): Path<(String, String)>,
    Query(from): Query<LogFrom>,
) -> Result<EventStream, ConsoleError> {
    let events = console.engine().subscribe();
    let run = run_of(&console, &id)?;
    check_stage(&console, &run, &stage)?;
    let position = match (from.attempt, from.seq) {
        (Some(attempt), Some(seq)) => Some(LogPosition {
            stage: stage.clone(),
            attempt,
            seq,
        }),
        _ => None,
    };
    let (tx, rx) = mpsc::channel(PAGE_BUFFER);
    let follower = LogFollower {
        store: console.store().clone(),
        run: run.id,
        attempt: position.as_ref().map_or(0, |p| p.attempt),
        stage,
        position,
        tx,
    };
    let shutdown = console.api().shutdown_token().clone();
    tokio::spawn(async move {
        tokio::select! {
            () = follower.follow(events) => {}
            () = shutdown.cancelled() => {}
        }
    });
    Ok(sse(rx))
}

struct LogFollower {
    store: Arc<dyn Store>,
    run: RunId,
    stage: String,
    position: Option<LogPosition>,
    attempt: u32,
    tx: mpsc::Sender<Result<Event, Infallible>>,
}

impl LogFollower {
    async fn follow(mut self, mut events: broadcast::Receiver<Arc<EngineEvent>>) {
        // What was stored between the page's read and the subscription.
        if !self.send_stored().await {
            return;
        }
        loop {
            let event = tokio::select! {
                e = events.recv() => e,
                _ = self.tx.closed() => return,
            };
            let wake = match event {
                Ok(e) => {
                    matches!(&*e, EngineEvent::Log { run, stage, .. } if *run == self.run && *stage == self.stage)
                }
                Err(broadcast::error::RecvError::Lagged(_)) => true,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if wake && !self.send_stored().await {
                return;
            }
        }
    }

    /// Sends every stored chunk after the position; false once the page is gone.
    async fn send_stored(&mut self) -> bool {
        loop {
            let page = match self.store.read_log_page(
                &self.run,
                Some(&self.stage),
                self.position.as_ref(),
                LOG_PAGE_BYTES,
            ) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, run = %self.run, "reading logs for the console failed");
                    return false;
                }
            };
            let Some(last) = page.last() else {
                return true;
            };
            self.position = Some(LogPosition::after(last));
            for chunk in &page {
                if chunk.attempt != self.attempt {
                    self.attempt = chunk.attempt;
                    let e = Event::default()
                        .event("attempt")
                        .data(chunk.attempt.to_string());
                    if self.tx.send(Ok(e)).await.is_err() {
                        return false;
                    }
                }
                let data = serde_json::json!({
                    "stream": stream_name(chunk.stream),
                    "text": String::from_utf8_lossy(&chunk.data),
                });
                let e = Event::default().event("log").data(data.to_string());
                if self.tx.send(Ok(e)).await.is_err() {
                    return false;
                }
            }
        }
    }
}
