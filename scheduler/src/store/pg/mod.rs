//! The PostgreSQL implementation of [`Store`], for schedulers whose state lives in a
//! database the team already operates (`vishwa scheduler --store postgres://...`).
//!
//! Layout: one table per kind of record (`dags`, `dag_versions`, `runs`, `stages`,
//! `schedules`, `artifacts`, `consumers`, `cache`, `last_lookups`, `logs`, `secrets`,
//! `audit`), keyed by text columns in the "C" collation so rows sort as sled's keys do; each
//! record is its JSON in a `body` column, as in sled (logs keep their bytes in `data`).
//! The schema is versioned ([`schema`]).
//!
//! Writes go through the same single writer as sled ([`super::writer`]): a group of batches
//! is one transaction, acknowledged after COMMIT. Reads are answered by a few reader threads
//! with connections of their own. The `postgres` crate is the blocking client over
//! tokio-postgres: the trait's reads are synchronous and the writer is a thread, so a
//! blocking client on threads of its own fits without entering the async runtime; it needs
//! no database at build time (unlike sqlx's checked queries) and no pool crate (the threads
//! are the pool).

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use postgres::types::ToSql;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::writer::Writer;
use super::{
    ArtifactRecord, AssetCursor, AssetRecord, AuditEntry, CacheEntry, ConsumerRecord, DagRecord,
    DagVersion, LastLookup, LogPosition, LogRecord, LogStreamKind, ScheduleRecord, SecretRecord,
    Store, StoreError, WriteBatch,
};
use crate::ids::RunId;
use crate::run::{RunRecord, StageRecord};

mod conn;
mod schema;
mod write;

use conn::{Conn, Readers, Target};

/// Connections answering reads at once.
const READERS: usize = 4;
/// Log chunks fetched per query while filling a page.
const LOG_ROWS_PER_QUERY: i64 = 256;

/// A [`Store`] in a PostgreSQL database.
#[derive(Clone)]
pub struct PostgresStore {
    readers: Arc<Readers>,
    writer: Arc<Writer>,
    shown: String,
}

/// `url` without its password, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://USER[:PASSWORD]@HOST:PORT/DB`), brings
    /// its schema up to date and starts the writer and readers. Blocks while connecting.
    pub fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let shown = redact_url(url);
        let config = postgres::Config::from_str(url).map_err(|e| {
            StoreError::Backend(format!(
                "bad PostgreSQL URL {shown}: {}\n  help: write it as \
                 postgres://USER[:PASSWORD]@HOST:PORT/DATABASE",
                error_text(&e)
            ))
        })?;
        let target = Target {
            config,
            shown: shown.clone(),
        };
        // The readers connect first: the first one migrates, so the writer finds the schema.
        let readers = Readers::start(&target, READERS)?;
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let writer_target = target.clone();
        let (backend_tx, backend_rx) = std::sync::mpsc::channel();
        // The writer's connection is opened on a thread of its own too (never on a tokio
        // thread), then handed to the writer.
        std::thread::Builder::new()
            .name("postgres-connect".to_owned())
            .spawn(move || {
                let _ = ready_tx.send(Conn::open(writer_target).map(|conn| {
                    let _ = backend_tx.send(conn);
                }));
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the store writer: {e}")))?;
        ready
            .recv()
            .map_err(|_| StoreError::Backend("the store writer stopped connecting".to_owned()))??;
        let conn = backend_rx
            .recv()
            .map_err(|_| StoreError::Backend("the store writer stopped connecting".to_owned()))?;
        let writer = Writer::start("postgres", write::PgWriter::new(conn, shown.clone()))?;
        Ok(PostgresStore {
            readers: Arc::new(readers),
            writer: Arc::new(writer),
            shown,
        })
    }

    /// The database's URL without its password.
    pub fn shown_url(&self) -> &str {
        &self.shown
    }

    /// The `body` of every row `sql` returns, decoded, in order.
    fn bodies<T: DeserializeOwned>(
        &self,
        sql: &'static str,
        params: Vec<String>,
    ) -> Result<Vec<T>, StoreError> {
        let rows = self.readers.read(sql, move |s| {
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            let rows = s.query(sql, &refs)?;
            Ok(rows
                .iter()
                .map(|r| r.get::<_, Vec<u8>>(0))
                .collect::<Vec<_>>())
        })?;
        rows.iter().map(|b| decode(sql, b)).collect()
    }

    /// The `body` of the one row `sql` returns, if any.
    fn body<T: DeserializeOwned>(
        &self,
        sql: &'static str,
        params: Vec<String>,
    ) -> Result<Option<T>, StoreError> {
        Ok(self.bodies(sql, params)?.into_iter().next())
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize to JSON")
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: format!("row of `{what}`"),
        reason: e.to_string(),
    })
}

/// A postgres error with its cause (the server's message, or why connecting failed).
pub(crate) fn error_text(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_owned();
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

pub(crate) fn db_error(what: &str, e: postgres::Error) -> StoreError {
    StoreError::Backend(format!("postgres: {what}: {}", error_text(&e)))
}

fn stream_of(code: i16) -> Result<LogStreamKind, StoreError> {
    match code {
        1 => Ok(LogStreamKind::Stdout),
        2 => Ok(LogStreamKind::Stderr),
        3 => Ok(LogStreamKind::System),
        other => Err(StoreError::Corrupt {
            key: "row of `logs`".to_owned(),
            reason: format!("unknown log stream {other}"),
        }),
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.writer.commit(batch).await
    }

    fn write_failure(&self) -> Option<StoreError> {
        self.writer.failure()
    }

    async fn wait_write_failure(&self) -> StoreError {
        self.writer.wait_failure().await
    }

    fn get_dag(&self, name: &str) -> Result<Option<DagRecord>, StoreError> {
        self.body("SELECT body FROM dags WHERE name = $1", vec![name.into()])
    }

    fn list_dags(&self) -> Result<Vec<DagRecord>, StoreError> {
        self.bodies("SELECT body FROM dags ORDER BY name", vec![])
    }

    fn get_dag_version(&self, name: &str, version: &str) -> Result<Option<DagVersion>, StoreError> {
        self.body(
            "SELECT body FROM dag_versions WHERE name = $1 AND version = $2",
            vec![name.into(), version.into()],
        )
    }

    fn get_run(&self, id: &RunId) -> Result<Option<RunRecord>, StoreError> {
        self.body("SELECT body FROM runs WHERE id = $1", vec![id.0.clone()])
    }

    fn list_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        self.bodies("SELECT body FROM runs ORDER BY id", vec![])
    }

    fn run_stages(&self, id: &RunId) -> Result<Vec<StageRecord>, StoreError> {
        self.bodies(
            "SELECT body FROM stages WHERE run = $1 ORDER BY instance",
            vec![id.0.clone()],
        )
    }

    fn get_schedule(&self, dag: &str) -> Result<Option<ScheduleRecord>, StoreError> {
        self.body(
            "SELECT body FROM schedules WHERE dag = $1",
            vec![dag.into()],
        )
    }

    fn list_schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError> {
        self.bodies("SELECT body FROM schedules ORDER BY dag", vec![])
    }

    fn get_asset(&self, name: &str) -> Result<Option<AssetRecord>, StoreError> {
        self.body("SELECT body FROM assets WHERE name = $1", vec![name.into()])
    }

    fn list_assets(&self) -> Result<Vec<AssetRecord>, StoreError> {
        self.bodies("SELECT body FROM assets ORDER BY name", vec![])
    }

    fn get_asset_cursor(&self, dag: &str) -> Result<Option<AssetCursor>, StoreError> {
        self.body(
            "SELECT body FROM asset_cursors WHERE dag = $1",
            vec![dag.into()],
        )
    }

    fn read_log_page(
        &self,
        run: &RunId,
        stage: Option<&str>,
        from: Option<&LogPosition>,
        max_bytes: usize,
    ) -> Result<Vec<LogRecord>, StoreError> {
        // Start at `from`, or before every chunk; a stage filter keeps rows of that stage.
        let (mut at_stage, mut at_attempt, mut at_seq) = match from {
            Some(p) => (p.stage.clone(), i64::from(p.attempt), write::big(p.seq)),
            None => (String::new(), -1, -1),
        };
        let run = run.0.clone();
        let stage = stage.map(str::to_owned);
        let mut page = Vec::new();
        let mut bytes = 0;
        loop {
            let (r, st, a, q) = (
                run.clone(),
                stage.clone(),
                at_stage.clone(),
                (at_attempt, at_seq),
            );
            let rows = self.readers.read("reading logs", move |s| {
                let rows = s.query(
                    "SELECT stage, attempt, seq, stream, time_ms, data FROM logs \
                     WHERE run = $1 AND ($2::text IS NULL OR stage = $2) \
                       AND (stage, attempt, seq) >= ($3, $4, $5) \
                     ORDER BY stage, attempt, seq LIMIT $6",
                    &[&r, &st, &a, &q.0, &q.1, &LOG_ROWS_PER_QUERY],
                )?;
                Ok(rows
                    .iter()
                    .map(|row| {
                        (
                            row.get::<_, String>(0),
                            row.get::<_, i64>(1),
                            row.get::<_, i64>(2),
                            row.get::<_, i16>(3),
                            row.get::<_, i64>(4),
                            row.get::<_, Vec<u8>>(5),
                        )
                    })
                    .collect::<Vec<_>>())
            })?;
            let fetched = rows.len();
            for (stage, attempt, seq, stream, time_ms, data) in rows {
                if bytes >= max_bytes {
                    return Ok(page);
                }
                bytes += data.len();
                at_stage.clone_from(&stage);
                at_attempt = attempt;
                at_seq = seq.saturating_add(1);
                page.push(LogRecord {
                    stage,
                    attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                    seq: u64::try_from(seq).unwrap_or(0),
                    stream: stream_of(stream)?,
                    time_ms,
                    data,
                });
            }
            if (fetched as i64) < LOG_ROWS_PER_QUERY || bytes >= max_bytes {
                return Ok(page);
            }
        }
    }

    fn get_secret(&self, name: &str) -> Result<Option<SecretRecord>, StoreError> {
        self.body(
            "SELECT body FROM secrets WHERE name = $1",
            vec![name.into()],
        )
    }

    fn list_secrets(&self) -> Result<Vec<SecretRecord>, StoreError> {
        self.bodies("SELECT body FROM secrets ORDER BY name", vec![])
    }

    fn list_audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.readers.read("reading the audit log", move |s| {
            let rows = s.query(
                "SELECT body FROM (SELECT id, body FROM audit ORDER BY id DESC LIMIT $1) e \
                 ORDER BY id",
                &[&limit],
            )?;
            Ok(rows
                .iter()
                .map(|r| r.get::<_, Vec<u8>>(0))
                .collect::<Vec<_>>())
        })?;
        rows.iter().map(|b| decode("audit", b)).collect()
    }

    fn run_artifacts(&self, run: &RunId) -> Result<Vec<ArtifactRecord>, StoreError> {
        self.bodies(
            "SELECT body FROM artifacts WHERE run = $1 ORDER BY stage, name",
            vec![run.0.clone()],
        )
    }

    fn artifacts_by_digest(&self, prefix: &str) -> Result<Vec<ArtifactRecord>, StoreError> {
        self.bodies(
            "SELECT body FROM artifacts WHERE starts_with(digest, $1) \
             ORDER BY digest, run, stage, name",
            vec![prefix.into()],
        )
    }

    fn all_artifacts(&self) -> Result<Vec<ArtifactRecord>, StoreError> {
        self.bodies(
            "SELECT body FROM artifacts ORDER BY run, stage, name",
            vec![],
        )
    }

    fn consumers_of(&self, digest: &str) -> Result<Vec<ConsumerRecord>, StoreError> {
        self.bodies(
            "SELECT body FROM consumers WHERE digest = $1 ORDER BY run, stage",
            vec![digest.into()],
        )
    }

    fn get_cache(&self, key: &str) -> Result<Option<CacheEntry>, StoreError> {
        self.body("SELECT body FROM cache WHERE key = $1", vec![key.into()])
    }

    fn list_cache(&self) -> Result<Vec<CacheEntry>, StoreError> {
        self.bodies("SELECT body FROM cache ORDER BY key", vec![])
    }

    fn get_last_lookup(&self, dag: &str, stage: &str) -> Result<Option<LastLookup>, StoreError> {
        self.body(
            "SELECT body FROM last_lookups WHERE dag = $1 AND stage = $2",
            vec![dag.into(), stage.into()],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_url("postgres://vishwa:s3cret@db:5432/vishwa"),
            "postgres://vishwa:***@db:5432/vishwa"
        );
        assert_eq!(
            redact_url("postgres://vishwa@db:5432/vishwa"),
            "postgres://vishwa@db:5432/vishwa"
        );
        assert_eq!(redact_url("postgres://db/x"), "postgres://db/x");
    }
}
