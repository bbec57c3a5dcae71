//! The one writer path into a store: group commit on a thread of its own.
//!
//! Every write (the engine's turn, log chunks, secrets, audit entries) is a [`WriteBatch`]
//! sent to one thread that owns writing. It takes everything queued, applies it, makes it
//! durable with one flush, and only then acknowledges every caller. Nothing else applies or
//! flushes, so writes never race a flush (sled 0.34 can deadlock `apply_batch` against a
//! concurrent `flush_async`), and a burst of callers costs one flush, not one each.
//!
//! A write that fails (a full disk) fails every caller of its group, and the writer refuses
//! every later write with the same error: what is in memory may no longer match the disk, so
//! the scheduler must stop and start again from what is durable.

use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use super::{StoreError, WriteBatch, WriteOp};

/// Batches applied per flush at most, so one flush is never unbounded.
const MAX_GROUP_BATCHES: usize = 4096;
/// How long dropping the writer waits for its thread to write what was queued and close the
/// backend; a thread stuck in the backend is left behind rather than hang the process.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// What a backend does for the writer: apply many batches' writes at once, then make them
/// durable.
pub(crate) trait Durable: Send + 'static {
    /// Applies `ops` (the writes of one or more batches, in order).
    fn apply(&mut self, ops: Vec<WriteOp>) -> Result<(), StoreError>;
    /// Makes everything applied so far survive a crash.
    fn flush(&mut self) -> Result<(), StoreError>;
}

struct Job {
    batch: WriteBatch,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The queue into the writer thread. Dropping it ends the thread after it wrote what was
/// queued, and waits for that: the backend is closed (its files unlocked) when drop returns.
pub(crate) struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    failed: watch::Receiver<Option<StoreError>>,
    /// Disconnects when the thread has ended (and dropped the backend).
    closed: std::sync::Mutex<mpsc::Receiver<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.jobs.take();
        let closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(mpsc::RecvTimeoutError::Timeout) = closed.recv_timeout(CLOSE_WAIT) {
            tracing::error!("the store writer did not finish within {CLOSE_WAIT:?}; leaving it");
        }
    }
}

impl Writer {
    /// Starts the writer thread over `backend`.
    pub(crate) fn start(name: &str, backend: impl Durable) -> Result<Writer, StoreError> {
        let (jobs, rx) = mpsc::channel();
        let (failed_tx, failed) = watch::channel(None);
        let (closing, closed) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name(format!("{name}-writer"))
            .spawn(move || {
                write_loop(backend, rx, failed_tx);
                drop(closing);
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the store writer: {e}")))?;
        Ok(Writer {
            jobs: Some(jobs),
            failed,
            closed: std::sync::Mutex::new(closed),
        })
    }

    /// Writes `batch` atomically; returns once it is durable.
    pub(crate) async fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let (done, wait) = oneshot::channel();
        self.jobs
            .as_ref()
            .expect("only drop takes the queue")
            .send(Job { batch, done })
            .map_err(|_| StoreError::Backend("the store writer has stopped".to_owned()))?;
        wait.await
            .map_err(|_| StoreError::Backend("the store writer has stopped".to_owned()))?
    }

    /// Why the store can no longer write, once a write failed.
    pub(crate) fn failure(&self) -> Option<StoreError> {
        self.failed.borrow().clone()
    }

    /// Resolves with the error once a write failed.
    pub(crate) async fn wait_failure(&self) -> StoreError {
        let mut failed = self.failed.clone();
        let found = match failed.wait_for(Option::is_some).await {
            Ok(e) => e.clone(),
            // The writer is gone without failing: nothing will fail any more.
            Err(_) => None,
        };
        match found {
            Some(e) => e,
            None => std::future::pending().await,
        }
    }
}

fn write_loop(
    mut backend: impl Durable,
    jobs: mpsc::Receiver<Job>,
    failed: watch::Sender<Option<StoreError>>,
) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP_BATCHES {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let result = match failed.borrow().clone() {
            Some(e) => Err(e),
            None => {
                let ops = group
                    .iter_mut()
                    .flat_map(|job| std::mem::take(&mut job.batch.ops))
                    .collect();
                backend.apply(ops).and_then(|()| backend.flush())
            }
        };
        if let Err(e) = &result {
            failed.send_if_modified(|slot| {
                let first_failure = slot.is_none();
                if first_failure {
                    tracing::error!(error = %e, "the store cannot write; every later write fails");
                    *slot = Some(e.clone());
                }
                first_failure
            });
        }
        for job in group {
            let _ = job.done.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::store::DagRecord;

    /// Records what the writer did, in order; fails once `fail_after` flushes happened.
    #[derive(Clone, Default)]
    struct Recorder {
        log: Arc<Mutex<Vec<String>>>,
        fail_after: Option<usize>,
    }

    impl Durable for Recorder {
        fn apply(&mut self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
            self.log
                .lock()
                .unwrap()
                .push(format!("apply {}", ops.len()));
            Ok(())
        }

        fn flush(&mut self) -> Result<(), StoreError> {
            let mut log = self.log.lock().unwrap();
            let flushes = log.iter().filter(|l| *l == "flush").count();
            if self.fail_after.is_some_and(|n| flushes >= n) {
                return Err(StoreError::WriteFailed {
                    reason: "No space left on device".into(),
                    path: "/data".into(),
                });
            }
            log.push("flush".to_owned());
            Ok(())
        }
    }

    fn batch(n: usize) -> WriteBatch {
        let mut b = WriteBatch::new();
        for i in 0..n {
            b.put_dag(DagRecord {
                name: format!("d{i}"),
                version: "v".into(),
                submitted_ms: 0,
                paused: false,
            });
        }
        b
    }

    #[tokio::test]
    async fn a_burst_of_commits_shares_flushes_and_every_caller_is_acknowledged() {
        let recorder = Recorder::default();
        let writer = Arc::new(Writer::start("test", recorder.clone()).unwrap());
        let commits: Vec<_> = (0..200)
            .map(|_| {
                let writer = writer.clone();
                tokio::spawn(async move { writer.commit(batch(2)).await })
            })
            .collect();
        for c in commits {
            c.await.unwrap().unwrap();
        }
        let log = recorder.log.lock().unwrap().clone();
        let flushes = log.iter().filter(|l| *l == "flush").count();
        let applied: usize = log
            .iter()
            .filter_map(|l| l.strip_prefix("apply "))
            .map(|n| n.parse::<usize>().unwrap())
            .sum();
        assert_eq!(applied, 400, "every write applied once");
        assert!((1..=200).contains(&flushes), "{flushes} flushes");
        // Each apply is followed by its flush before the next apply: never interleaved.
        for pair in log.chunks(2) {
            assert!(pair[0].starts_with("apply"), "{log:?}");
            assert_eq!(pair[1], "flush", "{log:?}");
        }
    }

    #[tokio::test]
    async fn a_failed_write_fails_its_callers_and_every_later_one_with_the_same_error() {
        let recorder = Recorder {
            fail_after: Some(1),
            ..Recorder::default()
        };
        let writer = Writer::start("test", recorder).unwrap();
        writer.commit(batch(1)).await.unwrap();
        assert!(writer.failure().is_none());
        let e = writer.commit(batch(1)).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "store write failed: No space left on device (/data)"
        );
        assert_eq!(writer.wait_failure().await.to_string(), e.to_string());
        let later = writer.commit(batch(1)).await.unwrap_err();
        assert_eq!(later.to_string(), e.to_string());
    }
}
