//! Identifiers of runs, attempts and workers, and the unit of time the state machine uses.

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, UTC. The state machine takes time as an argument in
/// this unit so tests can drive it with any clock; the engine reads it from its
/// [`crate::clock::Clock`].
pub type Millis = i64;

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// Returns the id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }
    };
}

string_id!(
    /// A run: `<dag>-<yyyymmddThhmmss>-<4 hex>` for manual runs.
    RunId
);
string_id!(
    /// One attempt of one stage instance; reports carry it so stale ones can be refused.
    AttemptId
);
string_id!(
    /// A registered worker (its name).
    WorkerId
);

impl RunId {
    /// A new id for a manually triggered run of `dag` at `now`.
    pub fn new_manual(dag: &str, now: Millis) -> RunId {
        let time = chrono::DateTime::from_timestamp_millis(now)
            .unwrap_or_default()
            .format("%Y%m%dT%H%M%S");
        let suffix: u16 = rand::rng().random();
        RunId(format!("{dag}-{time}-{suffix:04x}"))
    }
}

impl AttemptId {
    /// A new random attempt id (96 bits, hex).
    pub fn random() -> AttemptId {
        let bits: u128 = rand::rng().random();
        AttemptId(format!("{:024x}", bits >> 32))
    }
}
