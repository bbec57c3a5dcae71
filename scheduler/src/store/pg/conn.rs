//! Connections to PostgreSQL, each owned by one thread of its own (the writer, or one of the
//! readers). The `postgres` client drives its own small runtime, so it must never be used on
//! a tokio thread: callers hand work to these threads and wait for the answer.
//!
//! A connection that broke (PostgreSQL restarted, the network dropped) is opened again on
//! next use, and a query that failed because of it is retried once on the new connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement};

use super::super::StoreError;
use super::{db_error, schema};

/// How long a broken connection is tried again before the operation fails.
const RECONNECT_FOR: Duration = Duration::from_secs(30);

/// Where the store is: the parsed URL and how to name it in messages.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) config: postgres::Config,
    /// The URL without its password.
    pub(crate) shown: String,
}

/// One open connection with its prepared statements.
pub(crate) struct Session {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl Session {
    fn statement(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }

    pub(crate) fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.query(&s, params)
    }

    pub(crate) fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.execute(&s, params)
    }

    pub(crate) fn batch_execute(&mut self, sql: &str) -> Result<(), postgres::Error> {
        self.client.batch_execute(sql)
    }

    pub(crate) fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// A connection that opens itself again when it broke.
pub(crate) struct Conn {
    target: Target,
    session: Option<Session>,
}

impl Conn {
    /// Opens the first connection; fails at once (no retry) so a wrong URL is reported
    /// quickly.
    pub(crate) fn open(target: Target) -> Result<Conn, StoreError> {
        let client = connect(&target)?;
        Ok(Conn {
            target,
            session: Some(Session {
                client,
                statements: HashMap::new(),
            }),
        })
    }

    /// Runs `f` on an open connection. When it fails because the connection broke, the
    /// connection is opened again (for up to [`RECONNECT_FOR`]) and `f` runs once more:
    /// `f` must be safe to repeat (it is a read, or a whole transaction).
    pub(crate) fn with<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&mut Session) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        for tried in 0..2 {
            let session = self.session()?;
            match f(session) {
                Ok(v) => return Ok(v),
                Err(e) if tried == 0 && (e.is_closed() || session.client.is_closed()) => {
                    tracing::warn!(error = %e, database = %self.target.shown,
                        "lost the connection to PostgreSQL; reconnecting");
                    self.session = None;
                }
                Err(e) => return Err(db_error(what, e)),
            }
        }
        Err(StoreError::Backend(format!(
            "{what}: the connection to {} broke twice",
            self.target.shown
        )))
    }

    fn session(&mut self) -> Result<&mut Session, StoreError> {
        if self.session.as_ref().is_some_and(|s| s.client.is_closed()) {
            self.session = None;
        }
        if self.session.is_none() {
            let deadline = Instant::now() + RECONNECT_FOR;
            let client = loop {
                match connect(&self.target) {
                    Ok(c) => break c,
                    Err(e) if Instant::now() >= deadline => return Err(e),
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            };
            self.session = Some(Session {
                client,
                statements: HashMap::new(),
            });
        }
        Ok(self.session.as_mut().expect("just opened"))
    }
}

fn connect(target: &Target) -> Result<Client, StoreError> {
    target.config.connect(NoTls).map_err(|e| {
        StoreError::Backend(format!(
            "cannot connect to PostgreSQL at {}: {}\n  help: check that the server runs, \
             the user, host, port and database in the URL, and that the user may log in",
            target.shown,
            super::error_text(&e)
        ))
    })
}

type ReadJob = Box<dyn FnOnce(&mut Conn) + Send>;

/// A few reader threads, each with its connection, taking read jobs from one queue.
pub(crate) struct Readers {
    jobs: mpsc::Sender<ReadJob>,
}

impl Readers {
    /// Starts `n` readers; returns once each connected (or the first error). The first one
    /// also brings the schema up to date before the others start.
    pub(crate) fn start(target: &Target, n: usize) -> Result<Readers, StoreError> {
        let (jobs, rx) = mpsc::channel::<ReadJob>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..n {
            let (ready_tx, ready) = mpsc::channel();
            let rx = rx.clone();
            let target = target.clone();
            std::thread::Builder::new()
                .name(format!("postgres-reader-{i}"))
                .spawn(move || {
                    let mut conn = match Conn::open(target.clone()) {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    if i == 0 {
                        let migrated = conn.with("migrating", |s| {
                            Ok(schema::migrate(s.client(), &target.shown))
                        });
                        if let Err(e) = migrated.and_then(|r| r) {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    }
                    let _ = ready_tx.send(Ok(()));
                    drop(ready_tx);
                    loop {
                        let job = {
                            let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
                            rx.recv()
                        };
                        match job {
                            Ok(job) => job(&mut conn),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| StoreError::Backend(format!("cannot start a store reader: {e}")))?;
            ready.recv().map_err(|_| {
                StoreError::Backend("a store reader stopped while connecting".to_owned())
            })??;
        }
        Ok(Readers { jobs })
    }

    /// Runs `f` on a reader's connection and waits for its answer (blocking this thread,
    /// as a read from sled's disk does).
    pub(crate) fn read<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnMut(&mut Session) -> Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: ReadJob = Box::new(move |conn: &mut Conn| {
            let _ = tx.send(conn.with(what, f));
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Backend("the store readers have stopped".to_owned()))?;
        rx.recv()
            .map_err(|_| StoreError::Backend("a store reader stopped".to_owned()))?
    }
}
