//! Reading DAG files from disk: a single YAML file, or a folder holding `dag.yaml`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use vishwa_scheduler::dag::{Dag, DagErrors, parse_dag};

/// Largest DAG file read (a 10,000-stage DAG is well under a megabyte).
const MAX_DAG_BYTES: u64 = 16 << 20;

/// A DAG file as read from disk.
pub(crate) struct DagFile {
    /// The path as shown in messages.
    pub(crate) file_name: String,
    pub(crate) source: String,
    /// The folder of a folder DAG (its files are the stages' working directory).
    pub(crate) dir: Option<PathBuf>,
}

/// Reads the DAG at `path` (a file, or a folder with `dag.yaml`).
pub(crate) fn read_dag_file(path: &Path) -> Result<DagFile> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (file, dir) = if meta.is_dir() {
        let file = path.join("dag.yaml");
        if !file.is_file() {
            bail!(
                "{} is a folder without a dag.yaml; a DAG folder holds dag.yaml plus the files its stages use",
                path.display()
            );
        }
        let dir = path
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", path.display()))?;
        (file, Some(dir))
    } else {
        (path.to_path_buf(), None)
    };
    let size = std::fs::metadata(&file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    if size > MAX_DAG_BYTES {
        bail!(
            "{} is {} bytes; DAG files are limited to {} bytes",
            file.display(),
            size,
            MAX_DAG_BYTES
        );
    }
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let source = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            let offset = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(&e.as_bytes()[..offset]);
            let line = text.matches('\n').count() + 1;
            let column = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            bail!(
                "{}:{line}:{column}: error: the file is not UTF-8 text (invalid byte at offset {offset})\n  help: DAG files are YAML text; save the file as UTF-8",
                file.display()
            );
        }
    };
    Ok(DagFile {
        file_name: file.display().to_string(),
        source,
        dir,
    })
}

/// A validation failure, kept apart so the CLI can exit with the "bad input" code.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Invalid(pub(crate) String);

/// Reads and validates the DAG at `path`.
pub(crate) fn load_dag(path: &Path) -> Result<(Dag, DagFile)> {
    let file = read_dag_file(path).map_err(|e| Invalid(format!("{e:#}")))?;
    let dag =
        parse_dag(&file.source, &file.file_name).map_err(|e: DagErrors| Invalid(e.to_string()))?;
    Ok((dag, file))
}
