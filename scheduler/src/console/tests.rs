//! The console's routes through `tower::ServiceExt::oneshot` over a real engine on the
//! in-memory store: roles, CSRF, the login cookie, escaping, actions audited as gRPC calls,
//! and live events.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::*;
use crate::bundle::BundleStore;
use crate::dag::parse_dag;
use crate::engine::{DagFiles, EngineConfig, WorkerRegistration};
use crate::ids::RunId;
use crate::store::{LogRecord, LogStreamKind, MemoryStore};

const DAG: &str = "
name: shop
description: 'sells <script>alert(1)</script>'
params:
  rows: 10
  note: '<script>alert(2)</script>'
stages:
  - {name: prep, image: busybox, command: [echo, '{{ params.rows }}']}
  - {name: train, image: busybox, command: [echo, hi], needs: [prep]}
";

const TOKENS: &str = "- {name: root, role: admin, token: admin-token-000000}\n\
                      - {name: ops, role: operator, token: operator-token-0000}\n\
                      - {name: ro, role: viewer, token: viewer-token-000000}\n\
                      - {name: w1, role: worker, token: worker-token-000000}\n";

struct Fixture {
    console: Console,
    engine: EngineHandle,
    _dir: tempfile::TempDir,
    _shutdown: tokio_util::sync::DropGuard,
}

async fn fixture(tokens: bool) -> Fixture {
    let store = Arc::new(MemoryStore::new());
    let shutdown = CancellationToken::new();
    let engine = EngineHandle::start(
        store,
        EngineConfig::default(),
        &TaskTracker::new(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let dag = Arc::new(parse_dag(DAG, "shop.yaml").unwrap());
    engine
        .submit(dag, "shop.yaml".into(), DAG.into(), DagFiles::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bundles = Arc::new(BundleStore::open(dir.path(), 1 << 20).unwrap());
    let api = Arc::new(ClientApi::new(engine.clone(), bundles, shutdown.clone()));
    let auth = if tokens {
        Authenticator::with_tokens(
            crate::auth::Tokens::parse(TOKENS, Path::new("tokens.yaml")).unwrap(),
        )
    } else {
        Authenticator::open()
    };
    Fixture {
        console: Console::new(api, auth, false),
        engine,
        _dir: dir,
        _shutdown: shutdown.drop_guard(),
    }
}

async fn send(f: &Fixture, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = f.console.clone().router().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .unwrap();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn get(path: &str, token: Option<&str>) -> Request<Body> {
    let mut r = Request::get(path);
    if let Some(t) = token {
        r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    r.body(Body::empty()).unwrap()
}

fn post(path: &str, token: Option<&str>, form: &str) -> Request<Body> {
    let mut r =
        Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(t) = token {
        r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    r.body(Body::from(form.to_owned())).unwrap()
}

/// The CSRF token on a page's forms.
fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    page[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn user_text_is_escaped_on_every_page() {
    let f = fixture(false).await;
    let run = f
        .engine
        .trigger(
            "shop".into(),
            [("note".to_owned(), "<script>alert(3)</script>".to_owned())].into(),
        )
        .await
        .unwrap();
    f.engine
        .append_logs(vec![(
            run.id.clone(),
            vec![LogRecord {
                stage: "prep".into(),
                attempt: 1,
                seq: 0,
                stream: LogStreamKind::Stdout,
                time_ms: 0,
                data: b"<script>alert(4)</script>\n".to_vec(),
            }],
        )])
        .await
        .unwrap();
    for path in [
        "/".to_owned(),
        "/dags/shop".to_owned(),
        format!("/runs/{}", run.id),
        format!("/runs/{}/logs/prep", run.id),
        format!("/compare?runs={}", run.id),
    ] {
        let (status, _, body) = send(&f, get(&path, None)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert!(
            !body.contains("<script>alert"),
            "{path} lets a script through: {body}"
        );
    }
    let (_, _, log) = send(&f, get(&format!("/runs/{}/logs/prep", run.id), None)).await;
    assert!(
        log.contains("&lt;script&gt;alert(4)&lt;/script&gt;"),
        "{log}"
    );
    let (_, _, dag) = send(&f, get("/dags/shop", None)).await;
    assert!(dag.contains("&lt;script&gt;alert(2)"), "{dag}");
}

#[tokio::test]
async fn without_a_token_the_browser_is_sent_to_sign_in_and_the_cookie_is_httponly_and_strict() {
    let f = fixture(true).await;
    let (status, headers, _) = send(&f, get("/runs?state=failed", None)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        headers[header::LOCATION],
        "/login?next=/runs%3Fstate%3Dfailed"
    );
    let (status, _, body) = send(&f, post("/login", None, "token=nope-nope-nope&next=/runs")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("not known"));
    let (status, headers, _) = send(
        &f,
        post(
            "/login",
            None,
            "token=viewer-token-000000&next=//evil.example",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        headers[header::LOCATION],
        "/",
        "no redirect off the console"
    );
    let cookie = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    let request = Request::get("/")
        .header(header::COOKIE, pair)
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(&f, request).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("ro (viewer)"), "{body}");
    let (status, _, _) = send(&f, get("/", Some("worker-token-000000"))).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a worker token reads nothing"
    );
}

#[tokio::test]
async fn a_viewer_sees_no_action_forms_and_its_posts_are_refused() {
    let f = fixture(true).await;
    let (_, _, page) = send(&f, get("/dags/shop", Some("viewer-token-000000"))).await;
    assert!(!page.contains("id=\"trigger\""), "{page}");
    assert!(!page.contains("/audit"), "a viewer has no audit link");
    let csrf = csrf_of(&page);
    let (status, _, body) = send(
        &f,
        post(
            "/dags/shop/trigger",
            Some("viewer-token-000000"),
            &format!("csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body.contains("TriggerRun needs the operator role"),
        "{body}"
    );
    let (status, _, _) = send(&f, get("/audit", Some("viewer-token-000000"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(f.engine.store().list_runs().unwrap().is_empty());
}

#[tokio::test]
async fn a_post_without_the_csrf_token_is_refused() {
    let f = fixture(true).await;
    for form in ["", "csrf=0000", "p.rows=5"] {
        let (status, _, body) = send(
            &f,
            post("/dags/shop/trigger", Some("operator-token-0000"), form),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{form}");
        assert!(body.contains("CSRF"), "{body}");
    }
    // Another caller's token does not pass either.
    let (_, _, admin_page) = send(&f, get("/dags/shop", Some("admin-token-000000"))).await;
    let (status, _, _) = send(
        &f,
        post(
            "/dags/shop/trigger",
            Some("operator-token-0000"),
            &format!("csrf={}", csrf_of(&admin_page)),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(f.engine.store().list_runs().unwrap().is_empty());
}

#[tokio::test]
async fn an_operator_triggers_with_a_param_and_cancels_audited_like_grpc() {
    let f = fixture(true).await;
    let token = Some("operator-token-0000");
    let (_, _, page) = send(&f, get("/dags/shop", token)).await;
    assert!(page.contains("id=\"trigger\""));
    let csrf = csrf_of(&page);
    let form = format!(
        "csrf={csrf}&p.rows=500&p.note={}",
        encode_query("<script>alert(2)</script>")
    );
    let (status, headers, body) = send(&f, post("/dags/shop/trigger", token, &form)).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let location = headers[header::LOCATION].to_str().unwrap().to_owned();
    let runs = f.engine.store().list_runs().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(location, format!("/runs/{}", runs[0].id));
    assert_eq!(runs[0].params["rows"], serde_json::json!(500));
    let (status, _, body) = send(
        &f,
        post(
            &format!("{location}/cancel"),
            token,
            &format!("csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let run = f.engine.store().get_run(&runs[0].id).unwrap().unwrap();
    assert!(run.cancel_requested);
    // A bad param is the API's refusal, shown as a page.
    let (status, _, body) = send(
        &f,
        post(
            "/dags/shop/trigger",
            token,
            &format!("csrf={csrf}&p.rows=many"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let audit = f.engine.store().list_audit(10).unwrap();
    let calls: Vec<_> = audit
        .iter()
        .map(|e| {
            (
                e.caller.as_str(),
                e.method.as_str(),
                e.outcome.starts_with("ok"),
            )
        })
        .collect();
    assert_eq!(
        calls,
        vec![
            ("ops", "TriggerRun", true),
            ("ops", "CancelRun", true),
            ("ops", "TriggerRun", false)
        ]
    );
    let (status, _, body) = send(&f, get("/audit", Some("admin-token-000000"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("CancelRun"));
}

#[tokio::test]
async fn the_run_page_streams_stage_states_as_the_engine_publishes_them() {
    let f = fixture(false).await;
    let run = f
        .engine
        .trigger("shop".into(), Default::default())
        .await
        .unwrap();
    let response = f
        .console
        .clone()
        .router()
        .oneshot(get(&format!("/runs/{}/events", run.id), None))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body().into_data_stream();
    // A worker takes `prep`: the page hears it start.
    let registered = f
        .engine
        .register(WorkerRegistration {
            name: "w".into(),
            slots: 1,
            labels: Default::default(),
            allow_process: false,
            running: vec![],
            cpus: 0.0,
            memory_bytes: 0,
            gpus: vec![],
            draining: false,
            instance: String::new(),
        })
        .await
        .unwrap();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    f.engine.attach_inbox(registered.worker, tx).await.unwrap();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !seen.contains("\"state\":\"running\"") {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("a running event within 5 s");
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap().unwrap()));
    }
    assert!(seen.contains("event: stages"), "{seen}");
    assert!(seen.contains("\"group\":\"prep\""), "{seen}");
    let (status, _, page) = send(&f, get(&format!("/runs/{}", run.id), None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(&format!(
        "data-run-events=\"/runs/{}/events\"",
        RunId::from(run.id.as_str())
    )));
}

#[tokio::test]
async fn unknown_runs_stages_and_bad_filters_say_what_is_wrong() {
    let f = fixture(false).await;
    let (status, _, body) = send(&f, get("/runs/nope", None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("there is no run `nope`"));
    let (status, _, body) = send(&f, get("/runs?state=lost", None)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("use one of queued"), "{body}");
    let run = f
        .engine
        .trigger("shop".into(), Default::default())
        .await
        .unwrap();
    let (status, _, body) = send(&f, get(&format!("/runs/{}/logs/nope", run.id), None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("prep"), "{body}");
    let (status, _, _) = send(&f, get("/dags/nope", None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
