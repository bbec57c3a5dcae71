//! Who may call what: bearer tokens with roles, checked by a tower layer in front of both
//! gRPC services before any handler runs. Without a tokens file every caller is `local`
//! with the admin role, which the server allows only on loopback addresses.

mod roles;
mod tokens;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tracing::warn;

pub use roles::{METHOD_ROLES, Role, STANDARD_ROLES, is_open, method_name, role_needed};
pub use tokens::{Holder, Tokens, TokensError};

/// The caller of a request, put in its extensions for the handlers (the audit log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name, or `local` when the scheduler runs without tokens.
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// The caller of a scheduler without tokens.
    pub fn local() -> Caller {
        Caller {
            name: "local".to_owned(),
            role: Role::Admin,
        }
    }

    /// The caller recorded on `request`; `local` when none was (a service used directly,
    /// as in unit tests).
    pub fn of<T>(request: &tonic::Request<T>) -> Caller {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(Caller::local)
    }
}

/// Checks requests against the tokens, or lets everyone in as `local` without them.
#[derive(Debug, Clone)]
pub struct Authenticator {
    tokens: Option<Arc<Tokens>>,
}

impl Authenticator {
    /// Checks bearer tokens against `tokens`.
    pub fn with_tokens(tokens: Tokens) -> Authenticator {
        Authenticator {
            tokens: Some(Arc::new(tokens)),
        }
    }

    /// Lets every caller in as `local` (loopback-only schedulers and embedded modes).
    pub fn open() -> Authenticator {
        Authenticator { tokens: None }
    }

    /// Whether tokens are required.
    pub fn requires_tokens(&self) -> bool {
        self.tokens.is_some()
    }

    /// Decides a call to `path` that carried `authorization` (the header's value).
    pub fn check(&self, path: &str, authorization: Option<&[u8]>) -> Result<Caller, Status> {
        if is_open(path) {
            return Ok(Caller {
                name: "probe".to_owned(),
                role: Role::Viewer,
            });
        }
        self.check_role(method_name(path), role_needed(path), authorization)
    }

    /// Decides a request for `method` (named in messages), which needs the `needed` role,
    /// that carried `authorization` (the header's value). The gRPC services and the HTTP
    /// routes both decide here.
    pub fn check_role(
        &self,
        method: &str,
        needed: Role,
        authorization: Option<&[u8]>,
    ) -> Result<Caller, Status> {
        let Some(tokens) = &self.tokens else {
            return Ok(Caller::local());
        };
        let Some(header) = authorization else {
            return Err(Status::unauthenticated(format!(
                "{method} needs a token: this scheduler accepts only callers with a bearer \
                 token; pass --token TOKEN or set VISHWA_TOKEN"
            )));
        };
        let token = std::str::from_utf8(header)
            .ok()
            .and_then(|h| {
                let (scheme, rest) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .ok_or_else(|| {
                Status::unauthenticated(
                    "the authorization header is not `Bearer TOKEN`; pass the token with \
                     --token TOKEN or VISHWA_TOKEN",
                )
            })?;
        let holder = tokens.holder(token).ok_or_else(|| {
            Status::unauthenticated(
                "the token is not known to this scheduler; check --token / VISHWA_TOKEN against \
                 the scheduler's tokens file",
            )
        })?;
        if !holder.role.allows(needed) {
            let holders: Vec<&str> = [Role::Viewer, Role::Operator, Role::Worker, Role::Admin]
                .into_iter()
                .filter(|r| r.allows(needed))
                .map(Role::as_str)
                .collect();
            let roles = match holders.split_last() {
                Some((last, others)) if !others.is_empty() => format!(
                    "the {needed} role, which {} and {last} tokens have",
                    others.join(", ")
                ),
                _ => format!("the {needed} role"),
            };
            return Err(Status::permission_denied(format!(
                "{method} needs {roles}; token `{}` has the {} role",
                holder.name, holder.role
            )));
        }
        Ok(Caller {
            name: holder.name,
            role: holder.role,
        })
    }
}

/// The tower layer that puts an [`Authenticator`] in front of a service.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    auth: Authenticator,
}

impl AuthLayer {
    pub fn new(auth: Authenticator) -> AuthLayer {
        AuthLayer { auth }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            auth: self.auth.clone(),
            inner,
        }
    }
}

/// A service whose requests pass the [`Authenticator`] first.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    auth: Authenticator,
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower_service::Service<http::Request<B>> for AuthService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        match self.auth.check(&path, authorization) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Box::pin(self.inner.call(request))
            }
            Err(status) => {
                let peer = peer_of(&request);
                let who = describe_token(&self.auth, request.headers());
                warn!(
                    method = method_name(&path),
                    caller = %who,
                    peer = %peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
                    code = ?status.code(),
                    reason = status.message(),
                    "call refused"
                );
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// Names the token on a refused call (gRPC or HTTP): its holder when known (a role refusal), else what
/// was wrong with it. Never the token itself.
pub fn describe_token(auth: &Authenticator, headers: &http::HeaderMap) -> String {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return "no token".to_owned();
    };
    let holder = value
        .to_str()
        .ok()
        .and_then(|h| h.split_once(' ').map(|(_, t)| t.trim().to_owned()))
        .and_then(|t| auth.tokens.as_ref().and_then(|tokens| tokens.holder(&t)));
    match holder {
        Some(h) => h.name,
        None => "unknown token".to_owned(),
    }
}

/// The remote address of a request, plain or over TLS.
fn peer_of<B>(request: &http::Request<B>) -> Option<SocketAddr> {
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(|i| i.remote_addr())
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tonic::Code;

    use super::*;

    fn auth() -> Authenticator {
        let tokens = Tokens::parse(
            "- {name: root, role: admin, token: admin-token-000000}\n\
             - {name: ops, role: operator, token: operator-token-0000}\n\
             - {name: ro, role: viewer, token: viewer-token-000000}\n\
             - {name: w1, role: worker, token: worker-token-000000}\n",
            Path::new("tokens.yaml"),
        )
        .unwrap();
        Authenticator::with_tokens(tokens)
    }

    #[test]
    fn without_tokens_everyone_is_local_admin() {
        let caller = Authenticator::open()
            .check("/vishwa.v1.Vishwa/SubmitDag", None)
            .unwrap();
        assert_eq!(caller, Caller::local());
    }

    #[test]
    fn a_missing_or_unknown_token_is_unauthenticated_and_says_how_to_pass_one() {
        let auth = auth();
        for header in [
            None,
            Some(&b"Bearer nope-nope-nope-nope"[..]),
            Some(&b"Basic x"[..]),
        ] {
            let status = auth.check("/vishwa.v1.Vishwa/GetRun", header).unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{header:?}");
            assert!(
                status.message().contains("VISHWA_TOKEN"),
                "{}",
                status.message()
            );
        }
    }

    #[test]
    fn the_wrong_role_is_permission_denied_naming_the_role_needed() {
        let status = auth()
            .check(
                "/vishwa.v1.Vishwa/TriggerRun",
                Some(b"Bearer viewer-token-000000"),
            )
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert!(
            status.message().contains(
                "TriggerRun needs the operator role, which operator and admin tokens have;"
            ),
            "{}",
            status.message()
        );
        let admin_only = auth()
            .check(
                "/vishwa.v1.Vishwa/SetSecret",
                Some(b"Bearer viewer-token-000000"),
            )
            .unwrap_err();
        assert!(
            admin_only
                .message()
                .contains("SetSecret needs the admin role;"),
            "{}",
            admin_only.message()
        );
        assert!(status.message().contains("`ro`"), "{}", status.message());
    }

    #[test]
    fn every_role_gets_exactly_the_methods_the_table_grants() {
        let auth = auth();
        let tokens = [
            (Role::Admin, "admin-token-000000"),
            (Role::Operator, "operator-token-0000"),
            (Role::Viewer, "viewer-token-000000"),
            (Role::Worker, "worker-token-000000"),
        ];
        for (role, token) in tokens {
            let header = format!("bearer {token}");
            for (method, needed) in METHOD_ROLES {
                let result = auth.check(method, Some(header.as_bytes()));
                assert_eq!(
                    result.is_ok(),
                    role.allows(*needed),
                    "{role} calling {method}"
                );
                if let Ok(caller) = result {
                    assert_eq!(caller.role, role);
                }
            }
        }
    }
}
