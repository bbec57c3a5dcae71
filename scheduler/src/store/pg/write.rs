//! The writer thread's side of the PostgreSQL store. [`Durable::apply`] turns the writes of
//! a group of batches into a plan (later writes of a key replace earlier ones, so each table
//! gets one multi-row statement); [`Durable::flush`] runs the plan as one transaction and
//! returns after COMMIT, so the writer acknowledges its callers only once PostgreSQL has
//! made the group durable.
//!
//! The transaction is safe to run twice: rows are upserted or deleted by key, and audit
//! entries carry a unique token. So when the connection breaks, even during COMMIT, the
//! writer opens it again and runs the same plan once more.

use std::collections::BTreeMap;

use rand::Rng;

use super::super::writer::Durable;
use super::super::{LogRecord, LogStreamKind, StoreError, WriteOp};
use super::conn::{Conn, Session};
use super::encode;
use crate::ids::RunId;

/// The tables keyed by text columns whose rows are (key, extra columns, JSON body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Table {
    Dags,
    DagVersions,
    Runs,
    Stages,
    Schedules,
    Assets,
    AssetCursors,
    Artifacts,
    Consumers,
    Cache,
    LastLookups,
    Secrets,
}

impl Table {
    /// The upsert statement: arrays of key columns, extra columns and bodies.
    fn upsert(self) -> &'static str {
        match self {
            Table::Dags => {
                "INSERT INTO dags (name, body) SELECT * FROM unnest($1::text[], $2::bytea[]) \
                 ON CONFLICT (name) DO UPDATE SET body = excluded.body"
            }
            Table::DagVersions => {
                "INSERT INTO dag_versions (name, version, body) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[]) \
                 ON CONFLICT (name, version) DO UPDATE SET body = excluded.body"
            }
            Table::Runs => {
                "INSERT INTO runs (id, body) SELECT * FROM unnest($1::text[], $2::bytea[]) \
                 ON CONFLICT (id) DO UPDATE SET body = excluded.body"
            }
            Table::Stages => {
                "INSERT INTO stages (run, instance, body) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[]) \
                 ON CONFLICT (run, instance) DO UPDATE SET body = excluded.body"
            }
            Table::Schedules => {
                "INSERT INTO schedules (dag, body) SELECT * FROM unnest($1::text[], $2::bytea[]) \
                 ON CONFLICT (dag) DO UPDATE SET body = excluded.body"
            }
            Table::Assets => {
                "INSERT INTO assets (name, body) SELECT * FROM unnest($1::text[], $2::bytea[]) \
                 ON CONFLICT (name) DO UPDATE SET body = excluded.body"
            }
            Table::AssetCursors => {
                "INSERT INTO asset_cursors (dag, body) \
                 SELECT * FROM unnest($1::text[], $2::bytea[]) \
                 ON CONFLICT (dag) DO UPDATE SET body = excluded.body"
            }
            Table::Artifacts => {
                "INSERT INTO artifacts (run, stage, name, digest, body) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[]) \
                 ON CONFLICT (run, stage, name) \
                 DO UPDATE SET digest = excluded.digest, body = excluded.body"
            }
            Table::Consumers => {
                "INSERT INTO consumers (digest, run, stage, body) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) \
                 ON CONFLICT (digest, run, stage) DO UPDATE SET body = excluded.body"
            }
            Table::Cache => {
                "INSERT INTO cache (key, run, body) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[]) \
                 ON CONFLICT (key) DO UPDATE SET run = excluded.run, body = excluded.body"
            }
            Table::LastLookups => {
                "INSERT INTO last_lookups (dag, stage, run, body) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) \
                 ON CONFLICT (dag, stage) DO UPDATE SET run = excluded.run, body = excluded.body"
            }
            Table::Secrets => {
                "INSERT INTO secrets (name, body) SELECT * FROM unnest($1::text[], $2::bytea[]) \
                 ON CONFLICT (name) DO UPDATE SET body = excluded.body"
            }
        }
    }

    /// The delete statement: arrays of the key columns.
    fn delete(self) -> &'static str {
        match self {
            Table::Artifacts => {
                "DELETE FROM artifacts WHERE (run, stage, name) IN \
                 (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))"
            }
            Table::Consumers => {
                "DELETE FROM consumers WHERE (digest, run, stage) IN \
                 (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))"
            }
            Table::Cache => "DELETE FROM cache WHERE key = ANY($1::text[])",
            Table::Secrets => "DELETE FROM secrets WHERE name = ANY($1::text[])",
            other => unreachable!("no delete of single {other:?} rows"),
        }
    }

    /// How many leading text columns form the key.
    fn key_columns(self) -> usize {
        match self {
            Table::DagVersions | Table::Stages | Table::LastLookups => 2,
            Table::Artifacts | Table::Consumers => 3,
            _ => 1,
        }
    }
}

/// What one row becomes: its text columns after the key, and its body; `None` deletes it.
type RowValue = Option<(Vec<String>, Vec<u8>)>;

/// Log chunks keyed by (run, stage, attempt, seq).
type LogKey = (String, String, i64, i64);

/// The writes between two run deletions, latest per key.
#[derive(Default)]
struct Segment {
    rows: BTreeMap<(Table, Vec<String>), RowValue>,
    logs: BTreeMap<LogKey, (i16, i64, Vec<u8>)>,
    /// Audit entries in order, each with its unique token.
    audit: Vec<(String, Vec<u8>)>,
}

impl Segment {
    fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.logs.is_empty() && self.audit.is_empty()
    }
}

enum Step {
    Rows(Segment),
    DeleteRun(RunId),
}

/// The writer's connection and the plan of the group being written.
pub(super) struct PgWriter {
    pub(super) conn: Conn,
    pub(super) shown: String,
    plan: Vec<Step>,
}

impl PgWriter {
    pub(super) fn new(conn: Conn, shown: String) -> PgWriter {
        PgWriter {
            conn,
            shown,
            plan: Vec::new(),
        }
    }

    fn segment(&mut self) -> &mut Segment {
        if !matches!(self.plan.last(), Some(Step::Rows(_))) {
            self.plan.push(Step::Rows(Segment::default()));
        }
        match self.plan.last_mut() {
            Some(Step::Rows(s)) => s,
            _ => unreachable!("a segment was just pushed"),
        }
    }

    fn put(&mut self, table: Table, key: Vec<String>, extra: Vec<String>, body: Vec<u8>) {
        self.segment()
            .rows
            .insert((table, key), Some((extra, body)));
    }

    fn remove(&mut self, table: Table, key: Vec<String>) {
        self.segment().rows.insert((table, key), None);
    }
}

pub(super) fn stream_code(s: LogStreamKind) -> i16 {
    match s {
        LogStreamKind::Stdout => 1,
        LogStreamKind::Stderr => 2,
        LogStreamKind::System => 3,
    }
}

/// A u64 as PostgreSQL's bigint; values past i64::MAX (never written in practice) clamp.
pub(super) fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn log_row(run: &RunId, c: LogRecord) -> (LogKey, (i16, i64, Vec<u8>)) {
    (
        (
            run.as_str().to_owned(),
            c.stage,
            i64::from(c.attempt),
            big(c.seq),
        ),
        (stream_code(c.stream), c.time_ms, c.data),
    )
}

impl Durable for PgWriter {
    fn apply(&mut self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        for op in ops {
            match op {
                WriteOp::Dag(d) => self.put(Table::Dags, vec![d.name.clone()], vec![], encode(&d)),
                WriteOp::DagVersion(v) => self.put(
                    Table::DagVersions,
                    vec![v.name.clone(), v.version.clone()],
                    vec![],
                    encode(&v),
                ),
                WriteOp::Run(r) => self.put(
                    Table::Runs,
                    vec![r.id.as_str().to_owned()],
                    vec![],
                    encode(&r),
                ),
                WriteOp::Stage(run, s) => self.put(
                    Table::Stages,
                    vec![run.as_str().to_owned(), s.instance.clone()],
                    vec![],
                    encode(&*s),
                ),
                WriteOp::Schedule(c) => {
                    self.put(Table::Schedules, vec![c.dag.clone()], vec![], encode(&c))
                }
                WriteOp::Asset(a) => {
                    self.put(Table::Assets, vec![a.name.clone()], vec![], encode(&a))
                }
                WriteOp::AssetCursor(c) => {
                    self.put(Table::AssetCursors, vec![c.dag.clone()], vec![], encode(&c))
                }
                WriteOp::Artifact(a) => self.put(
                    Table::Artifacts,
                    vec![a.run.as_str().to_owned(), a.stage.clone(), a.name.clone()],
                    vec![a.digest.clone()],
                    encode(&a),
                ),
                WriteOp::Consumer(c) => self.put(
                    Table::Consumers,
                    vec![c.digest.clone(), c.run.as_str().to_owned(), c.stage.clone()],
                    vec![],
                    encode(&c),
                ),
                WriteOp::Cache(e) => self.put(
                    Table::Cache,
                    vec![e.key.clone()],
                    vec![e.run.as_str().to_owned()],
                    encode(&e),
                ),
                WriteOp::LastLookup(l) => self.put(
                    Table::LastLookups,
                    vec![l.dag.clone(), l.stage.clone()],
                    vec![l.run.as_str().to_owned()],
                    encode(&l),
                ),
                WriteOp::DeleteArtifact(a) => self.remove(
                    Table::Artifacts,
                    vec![a.run.as_str().to_owned(), a.stage, a.name],
                ),
                WriteOp::DeleteConsumer(c) => self.remove(
                    Table::Consumers,
                    vec![c.digest, c.run.as_str().to_owned(), c.stage],
                ),
                WriteOp::DeleteCache(k) => self.remove(Table::Cache, vec![k]),
                WriteOp::Logs(run, chunks) => {
                    let segment = self.segment();
                    for c in chunks {
                        let (k, v) = log_row(&run, c);
                        segment.logs.insert(k, v);
                    }
                }
                WriteOp::Secret(s) => {
                    self.put(Table::Secrets, vec![s.name.clone()], vec![], encode(&s))
                }
                WriteOp::DeleteSecret(name) => self.remove(Table::Secrets, vec![name]),
                WriteOp::Audit(entry) => {
                    let token = format!("{:032x}", rand::rng().random::<u128>());
                    self.segment().audit.push((token, encode(&entry)));
                }
                WriteOp::DeleteRun(run) => self.plan.push(Step::DeleteRun(run)),
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        let plan = std::mem::take(&mut self.plan);
        if plan.is_empty() {
            return Ok(());
        }
        let shown = self.shown.clone();
        self.conn
            .with("writing", |s| run_plan(s, &plan))
            .map_err(|e| StoreError::WriteFailed {
                reason: e.to_string(),
                path: shown.clone().into(),
            })
    }
}

/// The whole plan in one transaction, committed before this returns.
fn run_plan(s: &mut Session, plan: &[Step]) -> Result<(), postgres::Error> {
    s.batch_execute("BEGIN")?;
    let result = (|| {
        for step in plan {
            match step {
                Step::Rows(segment) if !segment.is_empty() => write_segment(s, segment)?,
                Step::Rows(_) => {}
                Step::DeleteRun(run) => delete_run(s, run.as_str())?,
            }
        }
        s.batch_execute("COMMIT")
    })();
    if result.is_err() && !s.client().is_closed() {
        let _ = s.batch_execute("ROLLBACK");
    }
    result
}

fn write_segment(s: &mut Session, segment: &Segment) -> Result<(), postgres::Error> {
    // Group rows by table and by upsert/delete; BTreeMap order keeps tables together.
    let mut i = 0;
    let rows: Vec<_> = segment.rows.iter().collect();
    while i < rows.len() {
        let table = rows[i].0.0;
        let end = rows[i..]
            .iter()
            .position(|((t, _), _)| *t != table)
            .map_or(rows.len(), |n| i + n);
        let group = &rows[i..end];
        let keys = table.key_columns();
        let puts: Vec<_> = group
            .iter()
            .filter_map(|((_, k), v)| v.as_ref().map(|(extra, body)| (k, extra, body)))
            .collect();
        let deletes: Vec<_> = group
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|((_, k), _)| k)
            .collect();
        if !deletes.is_empty() {
            let columns: Vec<Vec<&str>> = (0..keys)
                .map(|c| deletes.iter().map(|k| k[c].as_str()).collect())
                .collect();
            let params: Vec<&(dyn postgres::types::ToSql + Sync)> = columns
                .iter()
                .map(|c| c as &(dyn postgres::types::ToSql + Sync))
                .collect();
            s.execute(table.delete(), &params)?;
        }
        if !puts.is_empty() {
            let extras = puts[0].1.len();
            let mut columns: Vec<Vec<&str>> = (0..keys)
                .map(|c| puts.iter().map(|(k, _, _)| k[c].as_str()).collect())
                .collect();
            columns
                .extend((0..extras).map(|c| puts.iter().map(|(_, e, _)| e[c].as_str()).collect()));
            let bodies: Vec<&[u8]> = puts.iter().map(|(_, _, b)| b.as_slice()).collect();
            let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = columns
                .iter()
                .map(|c| c as &(dyn postgres::types::ToSql + Sync))
                .collect();
            params.push(&bodies);
            s.execute(table.upsert(), &params)?;
        }
        i = end;
    }
    if !segment.logs.is_empty() {
        let n = segment.logs.len();
        let (mut runs, mut stages, mut attempts, mut seqs) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut streams, mut times, mut data) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for ((run, stage, attempt, seq), (stream, time, bytes)) in &segment.logs {
            runs.push(run.as_str());
            stages.push(stage.as_str());
            attempts.push(*attempt);
            seqs.push(*seq);
            streams.push(*stream);
            times.push(*time);
            data.push(bytes.as_slice());
        }
        s.execute(
            "INSERT INTO logs (run, stage, attempt, seq, stream, time_ms, data) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], \
                                  $5::int2[], $6::int8[], $7::bytea[]) \
             ON CONFLICT (run, stage, attempt, seq) \
             DO UPDATE SET stream = excluded.stream, time_ms = excluded.time_ms, data = excluded.data",
            &[&runs, &stages, &attempts, &seqs, &streams, &times, &data],
        )?;
    }
    if !segment.audit.is_empty() {
        let tokens: Vec<&str> = segment.audit.iter().map(|(t, _)| t.as_str()).collect();
        let bodies: Vec<&[u8]> = segment.audit.iter().map(|(_, b)| b.as_slice()).collect();
        s.execute(
            "INSERT INTO audit (token, body) \
             SELECT token, body FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS e(token, body, n) \
             ORDER BY n ON CONFLICT (token) DO NOTHING",
            &[&tokens, &bodies],
        )?;
    }
    Ok(())
}

/// Everything recorded about a run, as [`super::super::WriteBatch::delete_run`] says.
fn delete_run(s: &mut Session, run: &str) -> Result<(), postgres::Error> {
    for sql in [
        "DELETE FROM runs WHERE id = $1",
        "DELETE FROM stages WHERE run = $1",
        "DELETE FROM artifacts WHERE run = $1",
        "DELETE FROM consumers WHERE run = $1",
        "DELETE FROM cache WHERE run = $1",
        "DELETE FROM last_lookups WHERE run = $1",
        "DELETE FROM logs WHERE run = $1",
    ] {
        s.execute(sql, &[&run])?;
    }
    Ok(())
}
