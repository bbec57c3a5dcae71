//! Where a scheduler's store is: `sled:DIR` (the embedded default, a folder on this host) or
//! `postgres://USER@HOST:PORT/DB` (a PostgreSQL database), as `--store`, `VISHWA_STORE`,
//! the config file's `store` and `vishwa migrate` write it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use serde::Deserialize;

use super::{PostgresStore, SledStore, Store, StoreError, redact_url};

/// A store's location.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum StoreLocation {
    /// A sled store in this folder.
    Sled(PathBuf),
    /// A PostgreSQL database, by URL.
    Postgres(String),
}

/// A `--store` value that names no store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{given}` is not a store: {reason}\n  help: write sled:DIR (a folder on this host) or \
     postgres://USER[:PASSWORD]@HOST:PORT/DATABASE"
)]
pub struct BadStoreLocation {
    given: String,
    reason: String,
}

impl FromStr for StoreLocation {
    type Err = BadStoreLocation;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| BadStoreLocation {
            given: redact_url(text),
            reason: reason.to_owned(),
        };
        if let Some(dir) = text.strip_prefix("sled:") {
            if dir.is_empty() {
                return Err(bad("sled: needs a folder after the colon"));
            }
            return Ok(StoreLocation::Sled(PathBuf::from(dir)));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            postgres::Config::from_str(text)
                .map_err(|e| bad(&format!("not a PostgreSQL URL ({e})")))?;
            let rest = text.split_once("://").map_or("", |(_, r)| r);
            if rest.split('/').nth(1).is_none_or(str::is_empty) {
                return Err(bad("the URL names no database (the part after the last /)"));
            }
            return Ok(StoreLocation::Postgres(text.to_owned()));
        }
        match text.split_once("://") {
            Some((scheme, _)) => Err(bad(&format!("unknown kind of store `{scheme}`"))),
            None => Err(bad("it says neither sled: nor postgres://")),
        }
    }
}

impl TryFrom<String> for StoreLocation {
    type Error = BadStoreLocation;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl fmt::Display for StoreLocation {
    /// The location as written, without a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Sled(dir) => write!(f, "sled:{}", dir.display()),
            StoreLocation::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

impl StoreLocation {
    /// The sled store of a data dir (the default).
    pub fn in_data_dir(data_dir: &Path) -> StoreLocation {
        StoreLocation::Sled(data_dir.join("store"))
    }

    /// Opens (or creates) the store. Blocks while it opens files or connects.
    pub fn open(&self) -> Result<Arc<dyn Store>, StoreError> {
        match self {
            StoreLocation::Sled(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Backend(format!("creating {}: {e}", dir.display())))?;
                Ok(Arc::new(SledStore::open(&sled_dir(dir))?))
            }
            StoreLocation::Postgres(url) => Ok(Arc::new(PostgresStore::open(url)?)),
        }
    }

    /// Opens a store that must exist already (the source of a migration): a sled folder
    /// that is not there is an error, not a new empty store.
    pub fn open_existing(&self) -> Result<Arc<dyn Store>, StoreError> {
        if let StoreLocation::Sled(dir) = self {
            let dir = sled_dir(dir);
            if !dir.join("db").exists() && !dir.join("conf").exists() {
                return Err(StoreError::Backend(format!(
                    "{} holds no sled store\n  help: give the store's folder (DATA/store) or \
                     the scheduler's data dir",
                    dir.display()
                )));
            }
        }
        self.open()
    }
}

/// A data dir given where the store's folder is meant (it holds `store/`) names that store.
fn sled_dir(dir: &Path) -> PathBuf {
    let inner = dir.join("store");
    if !dir.join("db").exists() && inner.join("db").exists() {
        inner
    } else {
        dir.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_bad_ones_say_how_to_write_them() {
        assert_eq!(
            "sled:/var/lib/vishwa".parse::<StoreLocation>().unwrap(),
            StoreLocation::Sled("/var/lib/vishwa".into())
        );
        let pg = "postgres://vishwa:pw@db:5432/vishwa"
            .parse::<StoreLocation>()
            .unwrap();
        assert_eq!(pg.to_string(), "postgres://vishwa:***@db:5432/vishwa");
        for (bad, says) in [
            ("mysql://db/x", "unknown kind of store `mysql`"),
            ("/var/lib/vishwa", "neither sled: nor postgres://"),
            ("sled:", "needs a folder"),
            ("postgres://vishwa@db:5432", "names no database"),
            ("postgres://vishwa:pw@db:notaport/x", "not a PostgreSQL URL"),
        ] {
            let e = bad.parse::<StoreLocation>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(e.contains("help: write sled:DIR"), "{e}");
            assert!(!e.contains(":pw@"), "no password in messages: {e}");
        }
    }
}
