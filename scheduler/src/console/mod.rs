//! The web console: server-rendered pages over the store and the engine, live updates over
//! Server-Sent Events fed by the engine's event broadcast (the one gRPC watches use), and
//! actions (trigger, cancel, retry, pause, resume) that go through the same client API
//! handlers as the gRPC calls, so they are checked and audited in one place.
//!
//! The console is an axum [`Router`]; the HTTP server mounts it. Who is calling comes from a
//! bearer header or the `vishwa_token` cookie the login form sets (HttpOnly, SameSite=Strict);
//! roles are those of the gRPC methods the pages and actions stand for. Every POST carries a
//! CSRF token derived from the caller's credential and a per-process key.

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::ClientApi;
use crate::auth::{Authenticator, Caller, Role, role_needed};
use crate::engine::EngineHandle;
use crate::store::{Store, StoreError};

mod actions;
mod admin;
mod charts;
mod detail;
mod graph;
mod layout;
mod live;
mod overview;
mod runs;

#[cfg(test)]
mod tests;

/// The cookie holding the browser's token.
pub const TOKEN_COOKIE: &str = "vishwa_token";

/// What the console's handlers share.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    api: Arc<ClientApi>,
    auth: Authenticator,
    /// Keys CSRF tokens; new per process, so a restart asks forms to be reloaded.
    csrf_key: [u8; 32],
    /// Whether the console is served over TLS (the cookie is then `Secure`).
    tls: bool,
}

impl Console {
    /// A console over the client API's handlers, checking callers with `auth`; with `tls`
    /// its cookie is sent over TLS only.
    pub fn new(api: Arc<ClientApi>, auth: Authenticator, tls: bool) -> Console {
        Console {
            inner: Arc::new(Inner {
                api,
                auth,
                csrf_key: rand::random(),
                tls,
            }),
        }
    }

    /// Every console route, to merge into a router over any state.
    pub fn router<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        Router::new()
            .route("/", get(overview::index))
            .route("/dags/{name}", get(overview::dag_page))
            .route("/dags/{name}/trigger", post(actions::trigger))
            .route("/dags/{name}/pause", post(actions::pause))
            .route("/dags/{name}/resume", post(actions::resume))
            .route("/runs", get(runs::list))
            .route("/runs/{id}", get(runs::run_page))
            .route("/runs/{id}/events", get(live::run_events))
            .route("/runs/{id}/cancel", post(actions::cancel))
            .route("/runs/{id}/retry", post(actions::retry))
            .route("/runs/{id}/logs/{stage}", get(detail::logs))
            .route("/runs/{id}/logs/{stage}/events", get(live::log_events))
            .route(
                "/runs/{id}/logs/{stage}/download",
                get(detail::download_logs),
            )
            .route("/runs/{id}/artifacts", get(detail::artifacts))
            .route(
                "/runs/{id}/artifacts/{stage}/{name}",
                get(detail::download_artifact),
            )
            .route("/compare", get(detail::compare))
            .route("/workers", get(admin::workers))
            .route("/audit", get(admin::audit))
            .route("/login", get(admin::login_form).post(admin::login))
            .route("/logout", post(admin::logout))
            .route("/static/console.css", get(layout::css))
            .route("/static/console.js", get(layout::js))
            .with_state(self)
    }

    fn api(&self) -> &ClientApi {
        &self.inner.api
    }

    fn engine(&self) -> &EngineHandle {
        self.inner.api.engine()
    }

    fn store(&self) -> &Arc<dyn Store> {
        self.engine().store()
    }

    /// The CSRF token of a credential.
    fn csrf_for(&self, credential: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.inner.csrf_key);
        h.update(b"vishwa-console-csrf\0");
        h.update(credential.as_bytes());
        hex::encode(h.finalize())
    }
}

/// The caller of a console request, with what its forms need.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) caller: Caller,
    /// The CSRF token its forms carry.
    pub(crate) csrf: String,
}

impl Session {
    /// Whether the caller may make the gRPC call `method` (e.g. `TriggerRun`).
    pub(crate) fn may(&self, method: &str) -> bool {
        self.caller
            .role
            .allows(role_needed(&format!("/vishwa.v1.Vishwa/{method}")))
    }

    /// Refuses an action the caller's role does not allow, as the gRPC layer would.
    pub(crate) fn require(&self, method: &str) -> Result<(), ConsoleError> {
        if self.may(method) {
            return Ok(());
        }
        let needed = role_needed(&format!("/vishwa.v1.Vishwa/{method}"));
        tracing::warn!(caller = %self.caller.name, method, "console action refused");
        Err(ConsoleError::Forbidden(format!(
            "{method} needs the {needed} role; token `{}` has the {} role",
            self.caller.name, self.caller.role
        )))
    }

    /// Checks the CSRF token a form sent.
    pub(crate) fn check_csrf(&self, sent: Option<&str>) -> Result<(), ConsoleError> {
        let ok = sent.is_some_and(|s| bool::from(s.as_bytes().ct_eq(self.csrf.as_bytes())));
        if ok {
            Ok(())
        } else {
            tracing::warn!(caller = %self.caller.name, "console POST without a valid CSRF token");
            Err(ConsoleError::Forbidden(
                "the form's CSRF token is missing or stale; reload the page and submit again"
                    .to_owned(),
            ))
        }
    }
}

/// The token a request carries: the bearer header first, then the cookie.
fn credential(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some((scheme, token)) = value.split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
    {
        return Some(token.trim().to_owned());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == TOKEN_COOKIE)
        .map(|(_, value)| value.to_owned())
}

impl FromRequestParts<Console> for Session {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Console,
    ) -> Result<Self, Self::Rejection> {
        let auth = &console.inner.auth;
        if !auth.requires_tokens() {
            return Ok(Session {
                caller: Caller::local(),
                csrf: console.csrf_for("local"),
            });
        }
        let next = parts
            .uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        let Some(token) = credential(&parts.headers) else {
            return Err(ConsoleError::Login { next });
        };
        let caller = check_token(auth, &token).map_err(|_| ConsoleError::Login { next })?;
        if caller.role == Role::Worker {
            return Err(ConsoleError::Forbidden(format!(
                "token `{}` has the worker role, which cannot read the console; use a viewer, \
                 operator or admin token",
                caller.name
            )));
        }
        Ok(Session {
            csrf: console.csrf_for(&token),
            caller,
        })
    }
}

/// Checks a token as the gRPC layer checks a caller of `GetRun` (a viewer call).
fn check_token(auth: &Authenticator, token: &str) -> Result<Caller, tonic::Status> {
    let header = format!("Bearer {token}");
    match auth.check("/vishwa.v1.Vishwa/GetRun", Some(header.as_bytes())) {
        Ok(caller) => Ok(caller),
        // A worker token is known but may not read runs: say who it is, refuse later.
        Err(status) if status.code() == tonic::Code::PermissionDenied => auth
            .check("/vishwa.v1.WorkerApi/Heartbeat", Some(header.as_bytes()))
            .map_err(|_| status),
        Err(status) => Err(status),
    }
}

/// Why a console request failed; each becomes a page with its status code.
#[derive(Debug)]
pub(crate) enum ConsoleError {
    /// No (valid) token: the browser is sent to the login form.
    Login {
        next: String,
    },
    Forbidden(String),
    NotFound(String),
    BadRequest(String),
    Store(StoreError),
    /// A refusal of the client API the action went through.
    Api(tonic::Status),
}

impl From<StoreError> for ConsoleError {
    fn from(e: StoreError) -> Self {
        ConsoleError::Store(e)
    }
}

impl From<tonic::Status> for ConsoleError {
    fn from(s: tonic::Status) -> Self {
        ConsoleError::Api(s)
    }
}

impl From<crate::api::ApiError> for ConsoleError {
    fn from(e: crate::api::ApiError) -> Self {
        ConsoleError::Api(e.into())
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ConsoleError::Login { next } => {
                let next = if next.starts_with('/') && !next.starts_with("//") {
                    next
                } else {
                    "/".to_owned()
                };
                let target = format!("/login?next={}", encode_query(&next));
                return (StatusCode::SEE_OTHER, Redirect::to(&target)).into_response();
            }
            ConsoleError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            ConsoleError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ConsoleError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ConsoleError::Store(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            ConsoleError::Api(s) => {
                let code = match s.code() {
                    tonic::Code::NotFound => StatusCode::NOT_FOUND,
                    tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => {
                        StatusCode::BAD_REQUEST
                    }
                    tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
                    tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
                    tonic::Code::AlreadyExists | tonic::Code::Aborted => StatusCode::CONFLICT,
                    tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                (code, s.message().to_owned())
            }
        };
        (status, layout::error_page(status, &message)).into_response()
    }
}

/// Percent-encodes a query value.
pub(crate) fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes one path segment (a run id or a stage instance like `train[a b]`).
pub(crate) fn encode_segment(value: &str) -> String {
    encode_query(value).replace('/', "%2F")
}
