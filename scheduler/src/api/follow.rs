//! Following a run for a client: its state changes and/or its logs, read from the store a
//! page at a time as the client takes them, until the run ends.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use vishwa_proto::v1 as pb;

use super::convert::{log_line, run_summary};
use crate::engine::{EngineEvent, Waiting};
use crate::ids::RunId;
use crate::run::{RunRecord, StageRecord};
use crate::store::{LOG_PAGE_BYTES, LogPosition, LogRecord, Store};

/// Messages queued for one client of a stream. Log messages hold up to a chunk each, so this
/// bounds what a slow reader holds in the scheduler; the store is read a page at a time, as
/// the client takes them.
pub(super) const FOLLOW_BUFFER: usize = 16;

/// Streams one run's state changes and/or logs to a client until the run ends.
pub(super) struct Follower {
    pub(super) store: Arc<dyn Store>,
    pub(super) run: RunId,
    /// Only this stage's logs, when set.
    pub(super) stage: Option<String>,
    pub(super) logs: bool,
    pub(super) states: bool,
    pub(super) tx: mpsc::Sender<Result<pb::RunEvent, Status>>,
    /// Next log seq to send per (stage, attempt): what was sent from the store is not sent
    /// again when it also arrives live.
    pub(super) next_seq: HashMap<(String, u32), u64>,
    /// Why queued stages wait, to fill their message.
    pub(super) waiting: Waiting,
}

/// The client went away.
pub(super) struct Gone;

impl Follower {
    pub(super) async fn follow(
        mut self,
        mut events: broadcast::Receiver<Arc<EngineEvent>>,
        run: RunRecord,
        shutdown: CancellationToken,
    ) {
        if self.send_snapshot(&run).await.is_err() || run.state.is_final() {
            return;
        }
        loop {
            let received = tokio::select! {
                received = events.recv() => received,
                _ = shutdown.cancelled() => {
                    let status = Status::unavailable("the scheduler is shutting down");
                    let _ = self.tx.send(Err(status)).await;
                    return;
                }
            };
            let event = match received {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind: the store has everything, so start over from it.
                    let Ok(Some(run)) = self.store.get_run(&self.run) else {
                        return;
                    };
                    if self.send_snapshot(&run).await.is_err() || run.state.is_final() {
                        return;
                    }
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let sent = match &*event {
                EngineEvent::Stage { run, record } if *run == self.run && self.states => {
                    self.send_stage(record).await
                }
                EngineEvent::Run(record) if record.id == self.run => {
                    let result = if self.states {
                        let stages = self.store.run_stages(&self.run).unwrap_or_default();
                        let summary = run_summary(record, Some(&stages));
                        self.send(pb::run_event::Event::Run(summary)).await
                    } else {
                        Ok(())
                    };
                    if record.state.is_final() {
                        return;
                    }
                    result
                }
                EngineEvent::Log {
                    run,
                    stage,
                    attempt,
                } if *run == self.run => self.send_new_logs(stage, *attempt).await,
                _ => Ok(()),
            };
            if sent.is_err() {
                return;
            }
        }
    }

    async fn send_snapshot(&mut self, run: &RunRecord) -> Result<(), Gone> {
        if self.states {
            let stages = self.store.run_stages(&self.run).unwrap_or_default();
            for s in &stages {
                self.send_stage(s).await?;
            }
            let summary = run_summary(run, Some(&stages));
            self.send(pb::run_event::Event::Run(summary)).await?;
        }
        self.send_stored_logs().await
    }

    /// Sends what the store holds of the run's (or the stage's) logs, a page at a time,
    /// skipping what was sent already.
    pub(super) async fn send_stored_logs(&mut self) -> Result<(), Gone> {
        if !self.logs {
            return Ok(());
        }
        let stage = self.stage.clone();
        self.send_pages(stage.as_deref(), None).await
    }

    /// Sends a stage's chunks stored since the last one sent of `attempt`.
    async fn send_new_logs(&mut self, stage: &str, attempt: u32) -> Result<(), Gone> {
        if !self.logs || self.stage.as_deref().is_some_and(|s| s != stage) {
            return Ok(());
        }
        let from = LogPosition {
            stage: stage.to_owned(),
            attempt,
            seq: self
                .next_seq
                .get(&(stage.to_owned(), attempt))
                .copied()
                .unwrap_or(0),
        };
        self.send_pages(Some(stage), Some(from)).await
    }

    async fn send_pages(
        &mut self,
        stage: Option<&str>,
        mut from: Option<LogPosition>,
    ) -> Result<(), Gone> {
        loop {
            let page =
                match self
                    .store
                    .read_log_page(&self.run, stage, from.as_ref(), LOG_PAGE_BYTES)
                {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = self.tx.send(Err(e.into())).await;
                        return Err(Gone);
                    }
                };
            let Some(last) = page.last() else {
                return Ok(());
            };
            from = Some(LogPosition::after(last));
            for l in &page {
                self.send_log(l).await?;
            }
        }
    }

    async fn send_log(&mut self, l: &LogRecord) -> Result<(), Gone> {
        if !self.logs || self.stage.as_ref().is_some_and(|s| *s != l.stage) {
            return Ok(());
        }
        let next = self
            .next_seq
            .entry((l.stage.clone(), l.attempt))
            .or_insert(0);
        if l.seq < *next {
            return Ok(());
        }
        *next = l.seq + 1;
        let line = log_line(self.run.as_str(), l);
        self.send(pb::run_event::Event::Log(line)).await
    }

    /// Sends a stage's state, with why it waits when it is queued for a worker.
    async fn send_stage(&self, record: &StageRecord) -> Result<(), Gone> {
        let mut stage = pb::StageRun::from(record);
        self.waiting.explain(&self.run, record, &mut stage.message);
        self.send(pb::run_event::Event::Stage(stage)).await
    }

    async fn send(&self, event: pb::run_event::Event) -> Result<(), Gone> {
        self.tx
            .send(Ok(pb::RunEvent { event: Some(event) }))
            .await
            .map_err(|_| Gone)
    }
}
