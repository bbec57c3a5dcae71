//! `vishwa assets` and `vishwa assets show NAME`: data assets with their versions, the runs
//! that published them and the runs that consumed them.

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use vishwa_proto::v1 as pb;

use crate::Global;
use crate::client::Client;
use crate::output::{self, Format, Table};

/// `vishwa assets` lists every asset; `vishwa assets show NAME` one, version by version.
#[derive(Debug, Args)]
pub(crate) struct AssetsArgs {
    #[command(subcommand)]
    action: Option<AssetsAction>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AssetsAction {
    /// Every version of one asset: digest, producer run and stage, consumer runs.
    Show { name: String },
}

pub(crate) async fn assets(args: AssetsArgs, global: &Global) -> Result<u8> {
    let mut client = Client::from_global(global).await?;
    match args.action {
        None => {
            let assets = client.list_assets("").await?;
            match global.format {
                Format::Json => {
                    output::print_json(&json!(assets.iter().map(asset_json).collect::<Vec<_>>()))
                }
                Format::Table if assets.is_empty() => outln!(
                    "no assets; a stage publishes one with `outputs: [{{path: FILE, asset: NAME}}]`"
                ),
                Format::Table => {
                    let mut table = Table::new(vec![
                        "ASSET",
                        "VERSIONS",
                        "LATEST",
                        "PRODUCER",
                        "CONSUMERS",
                        "TRIGGERS",
                    ]);
                    for a in &assets {
                        let latest = a.versions.last();
                        table.row(vec![
                            a.name.clone(),
                            a.versions.len().to_string(),
                            latest.map_or("-".into(), |v| output::time(v.created_ms)),
                            latest.map_or("-".into(), |v| format!("{}/{}", v.run_id, v.stage)),
                            a.versions
                                .iter()
                                .map(|v| v.consumer_runs.len())
                                .sum::<usize>()
                                .to_string(),
                            list(&a.triggers),
                        ]);
                    }
                    table.print();
                }
            }
        }
        Some(AssetsAction::Show { name }) => {
            let assets = client.list_assets(&name).await?;
            let Some(a) = assets.first() else {
                return Ok(0);
            };
            match global.format {
                Format::Json => output::print_json(&asset_json(a)),
                Format::Table => {
                    outln!("asset {} (triggers: {})", a.name, list(&a.triggers));
                    let mut table = Table::new(vec![
                        "VERSION",
                        "PUBLISHED",
                        "DIGEST",
                        "FILE",
                        "SIZE",
                        "PRODUCER",
                        "CONSUMERS",
                    ]);
                    for v in &a.versions {
                        table.row(vec![
                            v.version.to_string(),
                            output::time(v.created_ms),
                            v.digest.chars().take(12).collect(),
                            v.file.clone(),
                            output::bytes(v.size),
                            format!("{}/{}", v.run_id, v.stage),
                            list(&v.consumer_runs),
                        ]);
                    }
                    table.print();
                }
            }
        }
    }
    Ok(0)
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(",")
    }
}

fn asset_json(a: &pb::Asset) -> Value {
    json!({
        "name": a.name,
        "triggers": a.triggers,
        "versions": a.versions.iter().map(|v| json!({
            "version": v.version,
            "digest": v.digest,
            "file": v.file,
            "size": v.size,
            "run": v.run_id,
            "stage": v.stage,
            "published": output::rfc3339(v.created_ms),
            "consumers": v.consumer_runs,
        })).collect::<Vec<_>>(),
    })
}
