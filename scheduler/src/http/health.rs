//! `/healthz` (the process answers) and `/readyz` (it can do its job: the store writes and
//! the engine runs).

use axum::extract::State;
use axum::http::StatusCode;

use super::HttpState;

/// 200 while the process serves HTTP at all.
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 when the store can write and the engine takes commands; 503 with the reasons else.
pub(super) async fn readyz(State(state): State<HttpState>) -> (StatusCode, String) {
    let mut problems = Vec::new();
    if let Some(e) = state.store().write_failure() {
        problems.push(format!("the store cannot write: {e}"));
    }
    if !state.engine.is_running() {
        problems.push("the engine is not running".to_owned());
    }
    if state.shutdown.is_cancelled() {
        problems.push("the scheduler is shutting down".to_owned());
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
    }
}
