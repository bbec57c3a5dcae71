//! Records of the security features: secrets (encrypted before they reach the store) and the
//! audit log. Both live apart from the run records (their own sled trees).

use serde::{Deserialize, Serialize};

use crate::ids::Millis;

/// A secret as stored: only the ciphertext, never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRecord {
    pub name: String,
    /// The AEAD nonce, unique per encryption.
    pub nonce: Vec<u8>,
    /// The value encrypted with the scheduler's secret key, bound to `name`.
    pub ciphertext: Vec<u8>,
    pub set_ms: Millis,
}

/// One mutating call, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at_ms: Millis,
    /// The token's name, or `local`.
    pub caller: String,
    /// The RPC, e.g. `TriggerRun`.
    pub method: String,
    /// Its main argument: a DAG, run, worker or secret name.
    pub target: String,
    /// `ok`, or the refusal's code and message.
    pub outcome: String,
}
