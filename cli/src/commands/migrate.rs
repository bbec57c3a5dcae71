//! `vishwa migrate --from sled:DIR --to postgres://...`: copies a scheduler's state from one
//! store into another (see `vishwa_scheduler::store::copy_store`). The scheduler must be
//! stopped: sled's folder is locked while it runs, and a copy of a moving store is not one.

use std::time::Instant;

use anyhow::{Result, anyhow};
use clap::Args;
use vishwa_scheduler::store::{StoreLocation, copy_store, store_is_empty};

use crate::load::Invalid;

#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// The store to copy: sled:DIR (the store's folder or the data dir) or postgres://...
    #[arg(long, value_name = "STORE")]
    from: StoreLocation,
    /// The store to fill: postgres://USER[:PASSWORD]@HOST:PORT/DB or sled:DIR.
    #[arg(long, value_name = "STORE")]
    to: StoreLocation,
    /// Copy even though the target already holds records (same keys are replaced).
    #[arg(long)]
    into_non_empty: bool,
}

pub(crate) async fn migrate(args: MigrateArgs) -> Result<u8> {
    if args.from == args.to {
        return Err(Invalid(format!(
            "error: --from and --to are the same store ({})\n  help: give the store to copy \
             and a different one to fill",
            args.from
        ))
        .into());
    }
    let (from_at, to_at) = (args.from.clone(), args.to.clone());
    let opened = tokio::task::spawn_blocking(move || {
        let from = from_at
            .open_existing()
            .map_err(|e| anyhow!("opening --from {from_at}: {e}"))?;
        let to = to_at
            .open()
            .map_err(|e| anyhow!("opening --to {to_at}: {e}"))?;
        Ok::<_, anyhow::Error>((from, to))
    })
    .await??;
    let (from, to) = opened;
    if !args.into_non_empty && !store_is_empty(to.as_ref())? {
        return Err(Invalid(format!(
            "error: {} already holds records (DAGs, runs, schedules, secrets or audit \
             entries)\n  help: copy into an empty database, or pass --into-non-empty to add to \
             it (records with the same keys are replaced)",
            args.to
        ))
        .into());
    }
    let started = Instant::now();
    let counts = copy_store(from.as_ref(), to.as_ref()).await?;
    println!(
        "copied {} to {} in {:.1}s: {} DAGs ({} versions), {} runs, {} stage records, {} log \
         chunks, {} schedules, {} outputs, {} consumers, {} cache entries, {} last lookups, \
         {} secrets, {} audit entries",
        args.from,
        args.to,
        started.elapsed().as_secs_f64(),
        counts.dags,
        counts.dag_versions,
        counts.runs,
        counts.stages,
        counts.log_chunks,
        counts.schedules,
        counts.artifacts,
        counts.consumers,
        counts.cache_entries,
        counts.last_lookups,
        counts.secrets,
        counts.audit_entries
    );
    Ok(crate::exit::OK)
}
