//! Bearer tokens for tests of a scheduler that requires them.

use std::path::Path;

/// Admin token of test clusters that use tokens.
pub const ADMIN_TOKEN: &str = "cluster-admin-token-0123456789";
/// Worker token of test clusters that use tokens.
pub const WORKER_TOKEN: &str = "cluster-worker-token-0123456789";

/// Writes a scheduler's tokens file at `path`: one `(name, role, token)` per entry.
pub fn write_tokens_file(path: &Path, entries: &[(&str, &str, &str)]) {
    let text: String = entries
        .iter()
        .map(|(name, role, token)| format!("- {{name: {name}, role: {role}, token: {token}}}\n"))
        .collect();
    std::fs::write(path, text)
        .unwrap_or_else(|e| panic!("cannot write the tokens file {}: {e}", path.display()));
}

/// Writes a tokens file granting [`ADMIN_TOKEN`] the admin role and [`WORKER_TOKEN`] the
/// worker role.
pub fn write_cluster_tokens(path: &Path) {
    write_tokens_file(
        path,
        &[
            ("admin", "admin", ADMIN_TOKEN),
            ("workers", "worker", WORKER_TOKEN),
        ],
    );
}
