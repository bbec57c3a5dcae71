//! Workers, the audit log (admins), and signing in: the login form puts the token in an
//! HttpOnly, SameSite=Strict cookie, never in a URL.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::layout::{Live, page, time};
use super::{Console, ConsoleError, Session, TOKEN_COOKIE, check_token, encode_segment};
use crate::auth::Role;

/// Audit entries the page shows.
const AUDIT_ENTRIES: usize = 500;

/// `GET /workers`.
pub(super) async fn workers(
    State(console): State<Console>,
    session: Session,
) -> Result<Html<String>, ConsoleError> {
    let workers = console
        .engine()
        .workers()
        .await
        .map_err(|e| ConsoleError::Api(crate::api::ApiError::Engine(e).into()))?;
    let now = console.engine().clock().now_ms();
    let content = html! {
        h1 { "Workers" }
        @if workers.is_empty() { p.muted { "No worker has registered." } }
        @else {
            table {
                thead { tr { th { "worker" } th { "status" } th.num { "slots" } th { "labels" } th { "resources" } th { "running" } th { "last heartbeat" } } }
                tbody {
                    @for w in &workers {
                        tr {
                            td { (w.name) }
                            td { @if !w.connected { "disconnected" } @else if w.drained { "drained" } @else if w.draining { "draining" } @else { "ready" } }
                            td.num { (w.running.len()) " / " (w.slots) }
                            td.mono { @for (k, v) in &w.labels { (k) "=" (v) br; } }
                            td { @if w.cpus > 0.0 { (format!("{:.1}/{:.1}", w.used_cpus, w.cpus)) " cpus " }
                                 @if w.memory_bytes > 0 { (w.used_memory_bytes >> 20) "/" (w.memory_bytes >> 20) " MiB " }
                                 @if !w.gpus.is_empty() { (w.used_gpus.len()) "/" (w.gpus.len()) " gpus" } }
                            td {
                                @for (run, stage, attempt) in &w.running {
                                    a href={ "/runs/" (encode_segment(&run.0)) } { (run) } " " span.mono { (stage) " #" (attempt) } br;
                                }
                            }
                            td { (time(w.last_seen_ms)) " (" (super::layout::duration(now - w.last_seen_ms)) " ago)" }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Workers", Some(&session), Live::default(), content))
}

/// `GET /audit` (admins).
pub(super) async fn audit(
    State(console): State<Console>,
    session: Session,
) -> Result<Html<String>, ConsoleError> {
    session.require("ListAudit")?;
    let entries = console.store().list_audit(AUDIT_ENTRIES)?;
    let content = html! {
        h1 { "Audit log" }
        table {
            thead { tr { th { "when" } th { "caller" } th { "call" } th { "target" } th { "outcome" } } }
            tbody {
                @for e in entries.iter().rev() {
                    tr { td { (time(e.at_ms)) } td { (e.caller) } td { (e.method) } td.mono { (e.target) } td { (e.outcome) } }
                }
            }
        }
    };
    Ok(page("Audit log", Some(&session), Live::default(), content))
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Next {
    #[serde(default)]
    next: String,
}

/// Where to go after signing in: a path on this console, never another site.
fn safe_next(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.starts_with("/\\") {
        next
    } else {
        "/"
    }
}

fn login_page(next: &str, error: Option<&str>) -> Html<String> {
    page(
        "Sign in",
        None,
        Live::default(),
        html! {
            h1 { "Sign in" }
            p { "This scheduler requires a token. Paste a viewer, operator or admin token from its tokens file." }
            @if let Some(e) = error { p.error { (e) } }
            form.stack method="post" action="/login" {
                input type="hidden" name="next" value=(safe_next(next));
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="current-password" size="48";
                p { button #sign-in type="submit" { "Sign in" } }
            }
        },
    )
}

/// `GET /login`.
pub(super) async fn login_form(Query(q): Query<Next>) -> Html<String> {
    login_page(&q.next, None)
}

#[derive(Debug, Deserialize)]
pub(super) struct LoginForm {
    token: String,
    #[serde(default)]
    next: String,
}

/// `POST /login`: checks the token and keeps it in the cookie.
pub(super) async fn login(State(console): State<Console>, Form(form): Form<LoginForm>) -> Response {
    let token = form.token.trim();
    let valid = !token.is_empty()
        && !token.contains([';', ',', ' ', '"'])
        && check_token(&console.inner.auth, token).is_ok_and(|c| c.role != Role::Worker);
    if !valid {
        tracing::warn!("console sign-in with an unknown token refused");
        let page = login_page(
            &form.next,
            Some("That token is not known to this scheduler (or is a worker token)."),
        );
        return (StatusCode::UNAUTHORIZED, page).into_response();
    }
    let secure = if console.inner.tls { "; Secure" } else { "" };
    let cookie = format!("{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}");
    let mut headers = HeaderMap::new();
    if let Ok(value) = cookie.parse() {
        headers.insert(header::SET_COOKIE, value);
    }
    (headers, Redirect::to(safe_next(&form.next))).into_response()
}

/// `POST /logout`: forgets the cookie.
pub(super) async fn logout(
    session: Session,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    session.check_csrf(
        fields
            .iter()
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.as_str()),
    )?;
    let cookie = format!("{TOKEN_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response())
}
