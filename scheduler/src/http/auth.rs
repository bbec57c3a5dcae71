//! Who may call an HTTP route: the gRPC services' [`Authenticator`] and roles, read from the
//! `Authorization: Bearer TOKEN` header. A scheduler without tokens (loopback only) lets
//! every caller in as `local`, exactly as over gRPC.
//!
//! A guarded route finds the [`Caller`] in its request's extensions
//! (`Extension<Caller>`), for the audit log and for deciding what to render.

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use tonic::{Code, Status};
use tracing::warn;

use crate::auth::{Authenticator, Caller, Role, describe_token};

/// The role a group of routes needs, with the authenticator that checks it.
#[derive(Debug, Clone)]
struct Guard {
    auth: Authenticator,
    role: Role,
}

/// `routes` with every request checked for a token of `role` (or more) first. Routes added
/// to `routes` after this call are not guarded: call it last.
pub fn guarded<S>(routes: Router<S>, auth: &Authenticator, role: Role) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let guard = Guard {
        auth: auth.clone(),
        role,
    };
    routes.route_layer(middleware::from_fn_with_state(guard, check))
}

async fn check(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match guard.auth.check_role(&path, guard.role, authorization) {
        Ok(caller) => {
            request.extensions_mut().insert::<Caller>(caller);
            next.run(request).await
        }
        Err(status) => {
            let peer = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map_or_else(|| "unknown".to_owned(), |c| c.0.to_string());
            warn!(
                path,
                caller = %describe_token(&guard.auth, request.headers()),
                peer,
                code = ?status.code(),
                reason = status.message(),
                "HTTP request refused"
            );
            http_refusal(&status)
        }
    }
}

/// The HTTP response for an authentication refusal: 401 (with `WWW-Authenticate: Bearer`) for
/// no or an unknown token, 403 for a role that may not, the reason in the body.
pub fn http_refusal(status: &Status) -> Response {
    let code = match status.code() {
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let body = format!(
        "{}\nover HTTP, send the header `Authorization: Bearer TOKEN`\n",
        status.message()
    );
    let mut response = (code, body).into_response();
    if code == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"vishwa\""),
        );
    }
    response
}
