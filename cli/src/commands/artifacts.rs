//! `vishwa artifacts` (a run's outputs, one download, a digest's lineage) and
//! `vishwa compare` (params and metrics of runs side by side).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use futures::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use vishwa_proto::v1 as pb;

use crate::client::Client;
use crate::output::{self, Format, Table};
use crate::{Global, exit};

/// `vishwa artifacts RUN`, `vishwa artifacts get RUN STAGE/FILE -o PATH`,
/// `vishwa artifacts which DIGEST`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ArtifactsArgs {
    /// The run whose outputs to list.
    run: Option<String>,
    #[command(subcommand)]
    action: Option<ArtifactsAction>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ArtifactsAction {
    /// Download one output and check it against its digest.
    Get {
        run: String,
        /// `STAGE/FILE`, e.g. `train/model.pkl` or `train[chocolate]/model.pkl`.
        path: String,
        /// Where to write it (`-` for stdout); `-o PATH` works too here.
        #[arg(long = "out", value_name = "PATH")]
        out: PathBuf,
    },
    /// Which runs and stages made content with this digest (or prefix), and which used it.
    Which { digest: String },
}

pub(crate) async fn artifacts(args: ArtifactsArgs, global: &Global) -> Result<u8> {
    let mut client = Client::connect(&global.server, global.token.clone()).await?;
    match (args.action, args.run) {
        (Some(ArtifactsAction::Get { run, path, out }), _) => {
            download(&mut client, &run, &path, &out).await?;
            Ok(exit::OK)
        }
        (Some(ArtifactsAction::Which { digest }), _) => {
            let found = client.find_artifact(&digest).await?;
            print_lineage(&digest, &found, global.format)?;
            Ok(exit::OK)
        }
        (None, Some(run)) => {
            let list = client.list_artifacts(&run).await?;
            print_artifacts(&list, global.format);
            Ok(exit::OK)
        }
        (None, None) => Err(crate::load::Invalid(
            "error: name a run\n  help: vishwa artifacts RUN | vishwa artifacts get RUN STAGE/FILE -o PATH | vishwa artifacts which DIGEST".to_owned(),
        )
        .into()),
    }
}

fn short_digest(d: &str) -> &str {
    &d[..d.len().min(12)]
}

fn uses(consumers: &[pb::ArtifactUse], run: &str) -> String {
    if consumers.is_empty() {
        return "-".to_owned();
    }
    consumers
        .iter()
        .map(|c| {
            if c.run_id == run {
                c.stage.clone()
            } else {
                format!("{}:{}", c.run_id, c.stage)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn artifact_json(a: &pb::Artifact) -> serde_json::Value {
    json!({
        "run": a.run_id,
        "stage": a.stage,
        "name": a.name,
        "digest": a.digest,
        "size": a.size,
        "created": output::rfc3339(a.created_ms),
        "cached_from": (!a.cached_from_run.is_empty()).then_some(&a.cached_from_run),
        "consumers": a.consumers.iter().map(|c| json!({"run": c.run_id, "stage": c.stage})).collect::<Vec<_>>(),
    })
}

fn print_artifacts(list: &[pb::Artifact], format: Format) {
    if format == Format::Json {
        output::print_json(&json!(list.iter().map(artifact_json).collect::<Vec<_>>()));
        return;
    }
    if list.is_empty() {
        outln!("no outputs");
        return;
    }
    let mut table = Table::new(vec!["STAGE", "FILE", "SIZE", "DIGEST", "CONSUMERS", "NOTE"]);
    for a in list {
        table.row(vec![
            a.stage.clone(),
            a.name.clone(),
            a.size.to_string(),
            short_digest(&a.digest).to_owned(),
            uses(&a.consumers, &a.run_id),
            if a.cached_from_run.is_empty() {
                String::new()
            } else {
                format!("cached from {}", a.cached_from_run)
            },
        ]);
    }
    table.print();
}

fn print_lineage(digest: &str, found: &pb::FindArtifactResponse, format: Format) -> Result<()> {
    if format == Format::Json {
        output::print_json(&json!({
            "producers": found.producers.iter().map(artifact_json).collect::<Vec<_>>(),
            "consumers": found.consumers.iter().map(|c| json!({"run": c.run_id, "stage": c.stage})).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    if found.producers.is_empty() {
        bail!("no stored output has a digest starting with {digest}");
    }
    outln!("made by:");
    let mut table = Table::new(vec!["RUN", "STAGE", "FILE", "SIZE", "DIGEST", "NOTE"]);
    for a in &found.producers {
        table.row(vec![
            a.run_id.clone(),
            a.stage.clone(),
            a.name.clone(),
            a.size.to_string(),
            short_digest(&a.digest).to_owned(),
            if a.cached_from_run.is_empty() {
                String::new()
            } else {
                format!("cached from {}", a.cached_from_run)
            },
        ]);
    }
    table.print();
    outln!();
    if found.consumers.is_empty() {
        outln!("used by: no stage");
    } else {
        outln!("used by:");
        let mut table = Table::new(vec!["RUN", "STAGE"]);
        for c in &found.consumers {
            table.row(vec![c.run_id.clone(), c.stage.clone()]);
        }
        table.print();
    }
    Ok(())
}

/// Streams one output to `out` (or stdout), hashing it; a mismatch removes the file.
async fn download(client: &mut Client, run: &str, path: &str, out: &PathBuf) -> Result<()> {
    let mut stream = client.get_artifact(run, path).await?;
    let to_stdout = out.as_os_str() == "-";
    let partial = out.with_extension("vishwa-partial");
    let mut file = if to_stdout {
        None
    } else {
        Some(
            tokio::fs::File::create(&partial)
                .await
                .with_context(|| format!("cannot write {}", partial.display()))?,
        )
    };
    let mut stdout = tokio::io::stdout();
    let mut hasher = Sha256::new();
    let mut expected = String::new();
    let mut size = 0u64;
    let result: Result<()> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|s| anyhow!("{}", s.message()))?;
            if expected.is_empty() {
                expected = chunk.digest.clone();
            }
            hasher.update(&chunk.data);
            size += chunk.data.len() as u64;
            match &mut file {
                Some(f) => f.write_all(&chunk.data).await?,
                None => stdout.write_all(&chunk.data).await?,
            }
        }
        if let Some(f) = &mut file {
            f.flush().await?;
        }
        stdout.flush().await?;
        let actual = hex::encode(hasher.finalize());
        if actual != expected {
            bail!(
                "{path} of run {run} does not match its digest: expected sha256 {expected}, got {actual}; the stored artifact is corrupt"
            );
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(e);
    }
    if !to_stdout {
        tokio::fs::rename(&partial, out)
            .await
            .with_context(|| format!("cannot write {}", out.display()))?;
        eprintln!(
            "wrote {} ({size} bytes, sha256 {})",
            out.display(),
            short_digest(&expected)
        );
    }
    Ok(())
}

/// `vishwa compare RUN...`: one row per param and metric, one column per run.
pub(crate) async fn compare(runs: &[String], global: &Global) -> Result<u8> {
    let mut client = Client::connect(&global.server, global.token.clone()).await?;
    let mut fetched = Vec::with_capacity(runs.len());
    for id in runs {
        fetched.push(client.get_run(id).await?);
    }
    let mut params: BTreeSet<String> = BTreeSet::new();
    let mut metrics: BTreeSet<(String, String)> = BTreeSet::new();
    for run in &fetched {
        params.extend(run.params.keys().cloned());
        for s in &run.stages {
            metrics.extend(s.metrics.keys().map(|k| (s.name.clone(), k.clone())));
        }
    }
    let metric_of = |run: &pb::Run, stage: &str, key: &str| -> Option<f64> {
        run.stages
            .iter()
            .find(|s| s.name == stage)
            .and_then(|s| s.metrics.get(key).copied())
    };
    if global.format == Format::Json {
        let value: Vec<serde_json::Value> = fetched
            .iter()
            .map(|run| {
                let summary = run.summary.clone().unwrap_or_default();
                let ms: BTreeMap<String, BTreeMap<String, f64>> = run
                    .stages
                    .iter()
                    .filter(|s| !s.metrics.is_empty())
                    .map(|s| (s.name.clone(), s.metrics.clone().into_iter().collect()))
                    .collect();
                json!({
                    "run": summary.run_id,
                    "state": output::run_state(summary.state),
                    "params": run.params.iter().map(|(k, v)| (k.clone(), serde_json::from_str::<serde_json::Value>(v).unwrap_or(json!(v)))).collect::<serde_json::Map<_, _>>(),
                    "metrics": ms,
                })
            })
            .collect();
        output::print_json(&json!(value));
        return Ok(exit::OK);
    }
    let mut header: Vec<String> = vec!["".to_owned()];
    header.extend(runs.iter().cloned());
    let mut rows: Vec<Vec<String>> = Vec::new();
    let state_row = std::iter::once("state".to_owned())
        .chain(
            fetched
                .iter()
                .map(|r| output::run_state(r.summary.clone().unwrap_or_default().state).to_owned()),
        )
        .collect();
    rows.push(state_row);
    for p in &params {
        let mut row = vec![format!("params.{p}")];
        row.extend(
            fetched
                .iter()
                .map(|r| r.params.get(p).cloned().unwrap_or_else(|| "-".to_owned())),
        );
        rows.push(row);
    }
    for (stage, key) in &metrics {
        let mut row = vec![format!("{stage}.{key}")];
        row.extend(fetched.iter().map(|r| {
            metric_of(r, stage, key)
                .map(output::number)
                .unwrap_or_else(|| "-".to_owned())
        }));
        rows.push(row);
    }
    print_grid(&header, &rows);
    Ok(exit::OK)
}

/// A table whose header is not fixed (one column per run).
fn print_grid(header: &[String], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    outln!("{}", line(header));
    for row in rows {
        outln!("{}", line(row));
    }
}

/// In `vishwa artifacts get`, `-o` names the file to write (as product.md has it), not the
/// global output format: the arguments after `artifacts get` get `-o X` turned into
/// `--out X` before clap sees them.
pub(crate) fn artifacts_get_output_flag(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let position = args
        .windows(2)
        .position(|w| w[0] == "artifacts" && w[1] == "get");
    let Some(at) = position else {
        return args;
    };
    let mut rewritten: Vec<std::ffi::OsString> = args[..at + 2].to_vec();
    for arg in &args[at + 2..] {
        match arg.to_str() {
            Some("-o") => rewritten.push("--out".into()),
            Some(a) if a.starts_with("-o") && a.len() > 2 => {
                rewritten.push("--out".into());
                rewritten.push(a[2..].into());
            }
            _ => rewritten.push(arg.clone()),
        }
    }
    rewritten
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(args: &[&str]) -> Vec<String> {
        artifacts_get_output_flag(args.iter().map(Into::into).collect())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn dash_o_names_the_file_only_after_artifacts_get() {
        assert_eq!(
            rewrite(&["vishwa", "artifacts", "get", "r", "s/f", "-o", "x"]),
            ["vishwa", "artifacts", "get", "r", "s/f", "--out", "x"]
        );
        assert_eq!(
            rewrite(&["vishwa", "artifacts", "get", "r", "s/f", "-ox"]),
            ["vishwa", "artifacts", "get", "r", "s/f", "--out", "x"]
        );
        assert_eq!(
            rewrite(&["vishwa", "artifacts", "r", "-o", "json"]),
            ["vishwa", "artifacts", "r", "-o", "json"]
        );
    }
}
