//! The router without sockets: probes, guarded routes, the refusals. Over real sockets
//! (TLS, the CLI's flags, Prometheus) see integration-tests/tests/http_ops.rs.

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Extension;
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;
use crate::auth::{Caller, Role, Tokens};
use crate::engine::EngineConfig;
use crate::store::MemoryStore;

async fn state(auth: Authenticator) -> HttpState {
    let shutdown = CancellationToken::new();
    let store = Arc::new(MemoryStore::new());
    let engine = EngineHandle::start(
        store,
        EngineConfig::default(),
        &TaskTracker::new(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    HttpState {
        engine,
        auth,
        shutdown,
        console: None,
    }
}

fn tokens() -> Authenticator {
    let tokens = Tokens::parse(
        "- {name: ro, role: viewer, token: viewer-token-000000}\n\
         - {name: w1, role: worker, token: worker-token-000000}\n",
        Path::new("tokens.yaml"),
    )
    .unwrap();
    Authenticator::with_tokens(tokens)
}

async fn get_text(app: &Router, path: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let mut app = app.clone();
    let response = tower_service::Service::call(&mut app, request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn probes_answer_without_a_token_and_readyz_fails_once_stopping() {
    let state = state(tokens()).await;
    let shutdown = state.shutdown.clone();
    let app = router(state);
    assert_eq!(
        get_text(&app, "/healthz", None).await,
        (StatusCode::OK, "ok\n".into())
    );
    assert_eq!(
        get_text(&app, "/readyz", None).await,
        (StatusCode::OK, "ready\n".into())
    );
    shutdown.cancel();
    let (status, body) = get_text(&app, "/readyz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("shutting down"), "{body}");
    assert_eq!(get_text(&app, "/healthz", None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn guarded_routes_take_a_bearer_token_of_the_role_and_see_the_caller() {
    let state = state(tokens()).await;
    let auth = state.auth.clone();
    let seen = guarded(
        Router::new().route(
            "/who",
            get(|Extension(caller): Extension<Caller>| async move { caller.name }),
        ),
        &auth,
        Role::Viewer,
    );
    let app = router(state).merge(seen);
    let (status, body) = get_text(&app, "/who", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("/who needs a token"), "{body}");
    assert!(body.contains("Authorization: Bearer TOKEN"), "{body}");
    let (status, body) = get_text(&app, "/who", Some("worker-token-000000")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("needs the viewer role"), "{body}");
    assert_eq!(
        get_text(&app, "/who", Some("viewer-token-000000")).await,
        (StatusCode::OK, "ro".into())
    );
    assert_eq!(
        get_text(&app, "/who", Some("not-a-token-0000000")).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn without_tokens_every_caller_is_local() {
    let state = state(Authenticator::open()).await;
    let auth = state.auth.clone();
    let seen = guarded(
        Router::new().route(
            "/who",
            get(|Extension(caller): Extension<Caller>| async move { caller.name }),
        ),
        &auth,
        Role::Admin,
    );
    let app = router(state).merge(seen);
    assert_eq!(
        get_text(&app, "/who", None).await,
        (StatusCode::OK, "local".into())
    );
    assert_eq!(get_text(&app, "/nope", None).await.0, StatusCode::NOT_FOUND);
}

#[test]
fn the_http_flag_takes_an_address_or_off() {
    assert_eq!(parse_http_addr("off"), Ok(None));
    assert_eq!(parse_http_addr("OFF"), Ok(None));
    assert_eq!(
        parse_http_addr("0.0.0.0:8080"),
        Ok(Some("0.0.0.0:8080".parse().unwrap()))
    );
    let error = parse_http_addr("localhost").unwrap_err();
    assert!(error.contains("HOST:PORT"), "{error}");
}

#[tokio::test]
async fn metrics_take_a_viewer_token_and_show_the_next_cron_fire_in_classic_text() {
    let state = state(tokens()).await;
    let yaml = "name: hourly\nschedule:\n  cron: \"0 * * * *\"\nstages:\n  - {name: s, image: busybox, command: [true]}\n";
    let dag = Arc::new(crate::dag::parse_dag(yaml, "hourly.yaml").unwrap());
    state
        .engine
        .submit(
            dag,
            "hourly.yaml".into(),
            yaml.into(),
            crate::engine::DagFiles::default(),
        )
        .await
        .unwrap();
    let app = router(state);
    assert_eq!(
        get_text(&app, "/metrics", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, text) = get_text(&app, "/metrics", Some("viewer-token-000000")).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let next = text
        .lines()
        .find_map(|l| l.strip_prefix("vishwa_cron_next_fire_timestamp_seconds{dag=\"hourly\"} "))
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or_else(|| panic!("no next fire in\n{text}"));
    let now = crate::clock::Clock::system().now_ms() / 1000;
    assert!(next > now && next <= now + 3600, "{next} vs {now}");
    assert_eq!(next % 3600, 0, "on the hour: {next}");
    // Classic text: counters' metadata carries `_total`, no OpenMetrics-only lines.
    assert!(
        text.contains("# TYPE vishwa_log_bytes_total counter"),
        "{text}"
    );
    assert!(
        !text.contains("# EOF") && !text.contains("# UNIT"),
        "{text}"
    );
    assert!(text.contains("vishwa_up 1\n"), "{text}");
}
