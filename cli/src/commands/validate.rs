//! `vishwa validate` and `vishwa graph`: reading DAG files without a scheduler.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::json;
use vishwa_scheduler::dag::{parse_dag, render_graph_dot, render_graph_text};

use crate::client::Client;
use crate::load::{Invalid, load_dag};
use crate::output::{self, Format};
use crate::{Global, exit};

/// Checks each file; prints every error, and a line per valid file.
pub(crate) fn validate(paths: &[PathBuf], format: Format) -> Result<u8> {
    let mut failed = 0;
    let mut results = Vec::new();
    for path in paths {
        match load_dag(path) {
            Ok((dag, _)) => {
                if format == Format::Table {
                    outln!(
                        "{}: ok ({} {}, {} stage{})",
                        path.display(),
                        dag.name,
                        if dag.schedule.is_some() {
                            "scheduled"
                        } else {
                            "dag"
                        },
                        dag.stages.len(),
                        if dag.stages.len() == 1 { "" } else { "s" }
                    );
                }
                results.push(json!({"path": path.display().to_string(), "ok": true, "dag": dag.name.0, "stages": dag.stages.len()}));
            }
            Err(e) => {
                failed += 1;
                let text = match e.downcast_ref::<Invalid>() {
                    Some(invalid) => invalid.0.clone(),
                    None => format!("error: {e:#}"),
                };
                if format == Format::Table {
                    eprintln!("{}", text.trim_end());
                }
                results
                    .push(json!({"path": path.display().to_string(), "ok": false, "error": text}));
            }
        }
    }
    if format == Format::Json {
        output::print_json(&json!(results));
    }
    Ok(if failed > 0 { exit::INVALID } else { exit::OK })
}

/// Prints the graph of a DAG file, or of a registered DAG when no such file exists.
pub(crate) async fn graph(target: &str, dot: bool, global: &Global) -> Result<u8> {
    let path = Path::new(target);
    let dag = if path.exists() {
        load_dag(path)?.0
    } else {
        let mut client = Client::from_global(global).await?;
        let stored = client.get_dag(target).await?;
        parse_dag(&stored.source, &stored.file_name).map_err(|e| Invalid(e.to_string()))?
    };
    if dot {
        out!("{}", render_graph_dot(&dag));
    } else {
        out!("{}", render_graph_text(&dag));
    }
    Ok(exit::OK)
}
