//! The tokens file and checking a presented bearer token against it.
//!
//! Tokens are kept only as SHA-256 digests and compared in constant time, so neither the
//! file (when it holds digests) nor the comparison gives a token away.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

use super::roles::Role;

/// Why the tokens file cannot be used.
#[derive(Debug, Error)]
pub enum TokensError {
    #[error("cannot read tokens file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error(
        "tokens file {path}: {reason}\n  help: the file is a YAML list of entries like \
         `- {{name: ci, role: operator, token: \"...\"}}` (or `sha256: HEX` instead of `token:`); \
         roles are admin, operator, viewer and worker"
    )]
    Parse { path: PathBuf, reason: String },
    #[error("tokens file {path}: entry `{name}`: {reason}")]
    Entry {
        path: PathBuf,
        name: String,
        reason: String,
    },
    #[error("tokens file {path} holds no tokens; add at least one admin token")]
    Empty { path: PathBuf },
}

/// One entry of the tokens file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    /// Who holds the token: shown in the audit log and in refusals.
    name: String,
    role: Role,
    /// The token itself.
    #[serde(default)]
    token: Option<String>,
    /// Or the hex SHA-256 digest of the token, so the file holds no secret.
    #[serde(default)]
    sha256: Option<String>,
}

/// A known token, by digest.
#[derive(Debug, Clone)]
struct Known {
    digest: [u8; 32],
    name: String,
    role: Role,
}

/// The tokens a scheduler accepts.
#[derive(Debug, Clone)]
pub struct Tokens {
    known: Vec<Known>,
}

/// Who a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub name: String,
    pub role: Role,
}

/// Shortest token accepted in clear in the file; shorter ones are guessable.
const MIN_TOKEN_LEN: usize = 16;

impl Tokens {
    /// Reads and checks the tokens file at `path`.
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|e| TokensError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Tokens::parse(&text, path)
    }

    /// Parses the text of a tokens file (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Tokens, TokensError> {
        let entries: Vec<TokenEntry> =
            serde_saphyr::from_str(text).map_err(|e| TokensError::Parse {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        let mut known: Vec<Known> = Vec::with_capacity(entries.len());
        for entry in entries {
            let bad = |reason: String| TokensError::Entry {
                path: path.to_owned(),
                name: entry.name.clone(),
                reason,
            };
            if entry.name.trim().is_empty() {
                return Err(bad("the name is empty".into()));
            }
            let digest = match (&entry.token, &entry.sha256) {
                (Some(token), None) => {
                    if token.len() < MIN_TOKEN_LEN {
                        return Err(bad(format!(
                            "the token is shorter than {MIN_TOKEN_LEN} characters; generate one \
                             with `openssl rand -hex 32`"
                        )));
                    }
                    digest_of(token)
                }
                (None, Some(hex_digest)) => {
                    let bytes = hex::decode(hex_digest.trim())
                        .ok()
                        .filter(|b| b.len() == 32);
                    let Some(bytes) = bytes else {
                        return Err(bad(
                            "sha256 must be 64 hex digits (`printf %s TOKEN | sha256sum`)".into(),
                        ));
                    };
                    let mut digest = [0u8; 32];
                    digest.copy_from_slice(&bytes);
                    digest
                }
                (Some(_), Some(_)) => {
                    return Err(bad("give either `token` or `sha256`, not both".into()));
                }
                (None, None) => return Err(bad("give `token` or `sha256`".into())),
            };
            if known.iter().any(|k| k.name == entry.name) {
                return Err(bad("the name is used twice; names identify callers".into()));
            }
            if known.iter().any(|k| k.digest == digest) {
                return Err(bad("the same token is listed twice".into()));
            }
            known.push(Known {
                digest,
                name: entry.name,
                role: entry.role,
            });
        }
        if known.is_empty() {
            return Err(TokensError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(Tokens { known })
    }

    /// Who holds `token`, if anyone. Every entry is compared, in constant time each.
    pub fn holder(&self, token: &str) -> Option<Holder> {
        let presented = digest_of(token);
        let mut found = None;
        for known in &self.known {
            if bool::from(known.digest.ct_eq(&presented)) {
                found = Some(Holder {
                    name: known.name.clone(),
                    role: known.role,
                });
            }
        }
        found
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Whether there are none (never true for a loaded file).
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

fn digest_of(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Tokens, TokensError> {
        Tokens::parse(text, Path::new("tokens.yaml"))
    }

    #[test]
    fn tokens_in_clear_and_as_digests_both_identify_their_holder() {
        let digest = hex::encode(Sha256::digest(b"viewer-token-0123456789"));
        let tokens = parse(&format!(
            "- {{name: root, role: admin, token: admin-token-0123456789}}\n\
             - {{name: ro, role: viewer, sha256: \"{digest}\"}}\n"
        ))
        .unwrap();
        assert_eq!(
            tokens.holder("admin-token-0123456789"),
            Some(Holder {
                name: "root".into(),
                role: Role::Admin
            })
        );
        assert_eq!(tokens.holder("viewer-token-0123456789").unwrap().name, "ro");
        assert_eq!(tokens.holder("viewer-token-012345678"), None);
        assert_eq!(tokens.holder(""), None);
    }

    #[test]
    fn bad_entries_are_refused_with_the_entry_named() {
        let cases = [
            (
                "- {name: a, role: admin, token: short}\n",
                "shorter than 16",
            ),
            ("- {name: a, role: admin}\n", "give `token` or `sha256`"),
            ("- {name: a, role: admin, sha256: abc}\n", "64 hex digits"),
            (
                "- {name: a, role: admin, token: aaaaaaaaaaaaaaaaaaaa}\n- {name: a, role: viewer, token: bbbbbbbbbbbbbbbbbbbb}\n",
                "used twice",
            ),
            (
                "- {name: a, role: admin, token: aaaaaaaaaaaaaaaaaaaa}\n- {name: b, role: viewer, token: aaaaaaaaaaaaaaaaaaaa}\n",
                "listed twice",
            ),
            (
                "- {name: a, role: root, token: aaaaaaaaaaaaaaaaaaaa}\n",
                "roles are admin",
            ),
            (
                "- {name: a, role: admin, token: aaaaaaaaaaaaaaaaaaaa, extra: 1}\n",
                "tokens.yaml",
            ),
            ("[]\n", "holds no tokens"),
        ];
        for (text, expected) in cases {
            let message = parse(text).unwrap_err().to_string();
            assert!(message.contains(expected), "{text:?} gave {message:?}");
            assert!(message.contains("tokens.yaml"), "{message}");
        }
    }
}
