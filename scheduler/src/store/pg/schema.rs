//! The PostgreSQL schema and its versions. Each migration is applied once, in order, inside
//! one transaction that also records its version in `vishwa_schema`; a database whose
//! recorded version is newer than this binary knows is refused (an older scheduler must not
//! write to a schema it does not understand).
//!
//! Text key columns use the "C" collation, so rows sort by their bytes, as sled's keys do.

use postgres::Client;

use super::super::StoreError;
use super::db_error;

/// Each entry is one version: version N is `MIGRATIONS[N - 1]`. Never edit a released entry;
/// add a new one.
const MIGRATIONS: &[&str] = &[
    // 1: every record the Store trait keeps.
    r#"
    CREATE TABLE dags (
        name text COLLATE "C" PRIMARY KEY,
        body bytea NOT NULL
    );
    CREATE TABLE dag_versions (
        name text COLLATE "C" NOT NULL,
        version text COLLATE "C" NOT NULL,
        body bytea NOT NULL,
        PRIMARY KEY (name, version)
    );
    CREATE TABLE runs (
        id text COLLATE "C" PRIMARY KEY,
        body bytea NOT NULL
    );
    CREATE TABLE stages (
        run text COLLATE "C" NOT NULL,
        instance text COLLATE "C" NOT NULL,
        body bytea NOT NULL,
        PRIMARY KEY (run, instance)
    );
    CREATE TABLE schedules (
        dag text COLLATE "C" PRIMARY KEY,
        body bytea NOT NULL
    );
    CREATE TABLE artifacts (
        run text COLLATE "C" NOT NULL,
        stage text COLLATE "C" NOT NULL,
        name text COLLATE "C" NOT NULL,
        digest text COLLATE "C" NOT NULL,
        body bytea NOT NULL,
        PRIMARY KEY (run, stage, name)
    );
    CREATE INDEX artifacts_by_digest ON artifacts (digest, run, stage, name);
    CREATE TABLE consumers (
        digest text COLLATE "C" NOT NULL,
        run text COLLATE "C" NOT NULL,
        stage text COLLATE "C" NOT NULL,
        body bytea NOT NULL,
        PRIMARY KEY (digest, run, stage)
    );
    CREATE INDEX consumers_by_run ON consumers (run);
    CREATE TABLE cache (
        key text COLLATE "C" PRIMARY KEY,
        run text COLLATE "C" NOT NULL,
        body bytea NOT NULL
    );
    CREATE INDEX cache_by_run ON cache (run);
    CREATE TABLE last_lookups (
        dag text COLLATE "C" NOT NULL,
        stage text COLLATE "C" NOT NULL,
        run text COLLATE "C" NOT NULL,
        body bytea NOT NULL,
        PRIMARY KEY (dag, stage)
    );
    CREATE INDEX last_lookups_by_run ON last_lookups (run);
    CREATE TABLE logs (
        run text COLLATE "C" NOT NULL,
        stage text COLLATE "C" NOT NULL,
        attempt bigint NOT NULL,
        seq bigint NOT NULL,
        stream smallint NOT NULL,
        time_ms bigint NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (run, stage, attempt, seq)
    );
    CREATE TABLE secrets (
        name text COLLATE "C" PRIMARY KEY,
        body bytea NOT NULL
    );
    CREATE TABLE audit (
        id bigserial PRIMARY KEY,
        token text NOT NULL UNIQUE,
        body bytea NOT NULL
    );
    "#,
    // 2: data assets and the asset-trigger cursors of consuming DAGs.
    r#"
    CREATE TABLE assets (
        name text COLLATE "C" PRIMARY KEY,
        body bytea NOT NULL
    );
    CREATE TABLE asset_cursors (
        dag text COLLATE "C" PRIMARY KEY,
        body bytea NOT NULL
    );
    "#,
];

/// The schema version this binary writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database to [`SCHEMA_VERSION`], or refuses a newer one. `where_` names the
/// database in messages (its URL without the password).
pub(crate) fn migrate(client: &mut Client, where_: &str) -> Result<(), StoreError> {
    let err = |e: postgres::Error| db_error(&format!("migrating {where_}"), e);
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS vishwa_schema (
                 version bigint PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .map_err(err)?;
    let mut tx = client.transaction().map_err(err)?;
    // One scheduler migrates at a time; the others wait here and then find nothing to do.
    tx.batch_execute("LOCK TABLE vishwa_schema IN EXCLUSIVE MODE")
        .map_err(err)?;
    let current: i64 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM vishwa_schema", &[])
        .map_err(err)?
        .get(0);
    if current > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "{where_} has schema version {current}, newer than this vishwa knows \
             ({SCHEMA_VERSION}): a newer vishwa migrated it\n  help: run the vishwa version \
             that migrated it (or newer); an older one must not write to it"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i as i64 + 1;
        tx.batch_execute(sql).map_err(err)?;
        tx.execute(
            "INSERT INTO vishwa_schema (version) VALUES ($1)",
            &[&version],
        )
        .map_err(err)?;
        tracing::info!(version, "applied store schema migration");
    }
    tx.commit().map_err(err)
}
