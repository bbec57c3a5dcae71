//! Secrets at rest: values are sealed with ChaCha20-Poly1305 under the scheduler's key before
//! they reach the store, and opened only when a task that needs them is dispatched.
//!
//! The key is 32 random bytes, hex-encoded in a file (created `0600` under the data dir, or
//! given with `--secret-key-file`). Each value is bound to its secret's name (associated
//! data), so a ciphertext moved to another name does not open.

use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use thiserror::Error;

use crate::ids::Millis;
use crate::store::SecretRecord;

/// Name of the key file inside the data dir when no `--secret-key-file` is given.
pub const DEFAULT_KEY_FILE: &str = "secret.key";
/// Largest secret value accepted.
pub const MAX_SECRET_BYTES: usize = 64 << 10;

/// Why a secret could not be stored or read.
#[derive(Debug, Error)]
pub enum SecretError {
    #[error("secret key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error(
        "secret `{name}` does not decrypt with this scheduler's key (was the key file replaced?); \
         set it again with `vishwa secret set {name}`"
    )]
    Undecryptable { name: String },
    #[error("secret `{name}` is not valid UTF-8 text; environment variables hold text")]
    NotText { name: String },
}

/// The scheduler's secret key. An existing key file is read when the scheduler starts (so a
/// bad one stops it there); a missing one is created when the first secret is sealed, so a
/// scheduler that never stores a secret (`vishwa run` in a throwaway directory) writes and
/// syncs no key.
pub struct SecretBox {
    path: PathBuf,
    cipher: OnceLock<ChaCha20Poly1305>,
    /// Held while the key file is created, so two first seals make one key.
    creating: Mutex<()>,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// Reads the key at `path` if the file exists; otherwise it is created (mode 0600) by the
    /// first [`SecretBox::seal`].
    pub fn load_or_create(path: &Path) -> Result<SecretBox, SecretError> {
        let key = SecretBox {
            path: path.to_owned(),
            cipher: OnceLock::new(),
            creating: Mutex::new(()),
        };
        if let Some(cipher) = read_key(path)? {
            let _ = key.cipher.set(cipher);
        }
        Ok(key)
    }

    /// The cipher, reading the key file if another process or an earlier seal made it, and
    /// creating it when `create` is set; None when there is no key and `create` is not set.
    fn cipher(&self, create: bool) -> Result<Option<&ChaCha20Poly1305>, SecretError> {
        if let Some(cipher) = self.cipher.get() {
            return Ok(Some(cipher));
        }
        let _creating = self
            .creating
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(cipher) = self.cipher.get() {
            return Ok(Some(cipher));
        }
        let cipher = match read_key(&self.path)? {
            Some(cipher) => cipher,
            None if create => create_key(&self.path)?,
            None => return Ok(None),
        };
        Ok(Some(self.cipher.get_or_init(|| cipher)))
    }

    /// Seals `value` as secret `name`, creating the key file first if there is none yet.
    pub fn seal(&self, name: &str, value: &[u8], now: Millis) -> Result<SecretRecord, SecretError> {
        let cipher = self.cipher(true)?.expect("a created key");
        let nonce: [u8; 12] = rand::random();
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value,
                    aad: name.as_bytes(),
                },
            )
            .expect("ChaCha20-Poly1305 encrypts any input under 256 GiB");
        Ok(SecretRecord {
            name: name.to_owned(),
            nonce: nonce.to_vec(),
            ciphertext,
            set_ms: now,
        })
    }

    /// Opens a stored secret as text.
    pub fn open(&self, record: &SecretRecord) -> Result<String, SecretError> {
        let undecryptable = || SecretError::Undecryptable {
            name: record.name.clone(),
        };
        // No key file at all: nothing was sealed under this scheduler's key.
        let Some(cipher) = self.cipher(false)? else {
            return Err(undecryptable());
        };
        if record.nonce.len() != 12 {
            return Err(undecryptable());
        }
        let plain = cipher
            .decrypt(
                Nonce::from_slice(&record.nonce),
                Payload {
                    msg: &record.ciphertext,
                    aad: record.name.as_bytes(),
                },
            )
            .map_err(|_| undecryptable())?;
        String::from_utf8(plain).map_err(|_| SecretError::NotText {
            name: record.name.clone(),
        })
    }
}

fn key_file_error(path: &Path, reason: String) -> SecretError {
    SecretError::KeyFile {
        path: path.to_owned(),
        reason,
    }
}

/// Reads the key file: None when it does not exist; refused when other users may read it or
/// it does not hold a key.
fn read_key(path: &Path) -> Result<Option<ChaCha20Poly1305>, SecretError> {
    let fail = |reason: String| key_file_error(path, reason);
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(format!("cannot read it: {e}"))),
    };
    let mode = std::fs::metadata(path)
        .map_err(|e| fail(e.to_string()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(fail(format!(
            "is readable by other users (mode {:o}); run `chmod 600 {}`",
            mode & 0o777,
            path.display()
        )));
    }
    let bytes = hex::decode(text.trim())
        .ok()
        .filter(|b| b.len() == 32)
        .ok_or_else(|| {
            fail(
                "must hold 64 hex digits (32 bytes); create one with `openssl rand -hex 32`".into(),
            )
        })?;
    Ok(Some(ChaCha20Poly1305::new(Key::from_slice(&bytes))))
}

/// Writes a new random key (mode 0600) and syncs it before anything is sealed under it.
fn create_key(path: &Path) -> Result<ChaCha20Poly1305, SecretError> {
    let fail = |reason: String| key_file_error(path, reason);
    let key: [u8; 32] = rand::random();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| fail(format!("cannot create it: {e}")))?;
    file.write_all(hex::encode(key).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| fail(format!("cannot write it: {e}")))?;
    tracing::info!(path = %path.display(), "created a new secret key");
    Ok(ChaCha20Poly1305::new(Key::from_slice(&key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_under_its_own_name_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let key = SecretBox::load_or_create(&path).unwrap();
        assert!(
            !path.exists(),
            "no key file before the first secret is sealed"
        );
        let sealed = key.seal("token", b"hunter2-value", 7).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!sealed.ciphertext.windows(6).any(|w| w == b"hunter"));
        assert_eq!(key.open(&sealed).unwrap(), "hunter2-value");

        let same_key = SecretBox::load_or_create(&path).unwrap();
        assert_eq!(same_key.open(&sealed).unwrap(), "hunter2-value");

        let mut moved = sealed.clone();
        moved.name = "other".into();
        assert!(matches!(
            key.open(&moved),
            Err(SecretError::Undecryptable { .. })
        ));

        let other_path = dir.path().join("other");
        let other = SecretBox::load_or_create(&other_path).unwrap();
        assert!(other.open(&sealed).is_err());
        assert!(!other_path.exists(), "opening creates no key");
        let _ = other.seal("x", b"y", 1).unwrap();
        assert!(other.open(&sealed).is_err());
    }

    #[test]
    fn bad_or_exposed_key_files_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "abcd").unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        let message = SecretBox::load_or_create(&short).unwrap_err().to_string();
        assert!(message.contains("64 hex digits"), "{message}");

        let open = dir.path().join("open");
        std::fs::write(&open, hex::encode([1u8; 32])).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let message = SecretBox::load_or_create(&open).unwrap_err().to_string();
        assert!(message.contains("chmod 600"), "{message}");
    }
}
