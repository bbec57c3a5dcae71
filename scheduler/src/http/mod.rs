//! The scheduler's HTTP port (`--http ADDR`, default 127.0.0.1:7071): health probes,
//! Prometheus metrics and the web console, all on one axum router.
//!
//! - [`router`] builds the whole app from an [`HttpState`] (the engine, the store through it,
//!   the authenticator, the shutdown token). It is **the one place routes are added**: the
//!   operational routes are here, the console's router is merged in where the comment in
//!   [`router`] says.
//! - [`auth`] decides who may call a route: `Authorization: Bearer TOKEN` checked by the same
//!   [`Authenticator`] and roles as gRPC ([`guarded`] puts a role on a group of routes).
//!   `/healthz` and `/readyz` take no token, so probes need no secret.
//! - [`serve`] accepts connections (plain or TLS with the gRPC port's certificate) and stops
//!   with the scheduler.

pub mod auth;
mod health;
mod metrics;
pub mod serve;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

pub use auth::{guarded, http_refusal};
pub use serve::HttpServer;

use crate::auth::{Authenticator, Role};
use crate::console::Console;
use crate::engine::EngineHandle;
use crate::store::Store;

/// Where the HTTP port listens unless `--http` says otherwise.
pub const DEFAULT_HTTP_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7071);

/// What every handler may use. Cloned per request; everything in it is a handle.
#[derive(Clone)]
pub struct HttpState {
    /// The engine: commands (trigger, cancel, ...) and its event stream.
    pub engine: EngineHandle,
    /// The same authenticator as the gRPC services.
    pub auth: Authenticator,
    /// Fires when the scheduler stops; long-lived responses (event streams) end with it.
    pub shutdown: CancellationToken,
    /// The web console, mounted at `/` (none: the port serves only the operational routes).
    pub console: Option<Console>,
}

impl HttpState {
    /// The store, for reads (writes go through the engine).
    pub fn store(&self) -> &Arc<dyn Store> {
        self.engine.store()
    }
}

/// The whole HTTP app over `state`.
pub fn router(state: HttpState) -> Router {
    // Probes: no token, ever (load balancers and kubelets hold none).
    let probes = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz));
    // Scrapes: a viewer token (or better) when the scheduler has tokens.
    let ops = guarded(
        Router::new().route("/metrics", get(metrics::metrics)),
        &state.auth,
        Role::Viewer,
    );
    let mut app = Router::new().merge(probes).merge(ops);
    // The console checks its callers itself: a bearer header or its login cookie, with CSRF.
    if let Some(console) = state.console.clone() {
        app = app.merge(console.router());
    }
    app.fallback(not_found).with_state(state)
}

async fn not_found() -> (StatusCode, &'static str) {
    (
        StatusCode::NOT_FOUND,
        "no such page on this scheduler's HTTP port (try /metrics, /healthz or /readyz)\n",
    )
}

/// Parses `--http`'s value: an address, or `off` for no HTTP port.
pub fn parse_http_addr(text: &str) -> Result<Option<SocketAddr>, String> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.trim().parse().map(Some).map_err(|_| {
        format!("`{text}` is not an address; write HOST:PORT such as 127.0.0.1:7071, or `off`")
    })
}

#[cfg(test)]
mod tests;
