//! The web console in a real browser: headless Chromium driven over WebDriver against a
//! scheduler (with tokens) and a worker running process stages, all on real sockets.
//! Signing in, a run page whose states change live without a reload, a log that follows the
//! tail, triggering with a param, cancelling; a viewer gets no trigger button and its POST is
//! refused; a POST without the CSRF token is refused; user text shows as text.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fantoccini::{Client, Locator};
use vishwa_integration_tests::auth::{ADMIN_TOKEN, WORKER_TOKEN, write_tokens_file};
use vishwa_integration_tests::browser::Browser;
use vishwa_integration_tests::inproc::{
    InProcessScheduler, InProcessWorker, process_executors, worker_config,
};
use vishwa_integration_tests::names::unique_name;
use vishwa_proto::v1 as pb;
use vishwa_scheduler::SchedulerConfig;
use vishwa_worker::connect::BearerToken;

const OPERATOR_TOKEN: &str = "console-operator-token-0123456789";
const VIEWER_TOKEN: &str = "console-viewer-token-0123456789";
/// How long the page may take to show a change.
const LIVE_LIMIT: Duration = Duration::from_secs(20);

/// A first stage that prints a line every 100 ms until its gate file exists, then a second.
fn dag(name: &str, gate: &Path) -> String {
    format!(
        r#"
name: {name}
description: "console test <script>window.pwned = 1</script>"
params:
  gate: "{gate}"
  note: "<script>window.pwned = 2</script>"
stages:
  - name: first
    executor: process
    command: ["sh", "-c", "echo \"note: $VISHWA_PARAM_NOTE\"; i=0; while [ ! -e \"$VISHWA_PARAM_GATE\" ]; do i=$((i+1)); echo tick $i; sleep 0.1; done"]
  - name: second
    executor: process
    needs: [first]
    command: ["sh", "-c", "echo done"]
"#,
        gate = gate.display()
    )
}

/// Runs JavaScript in the page and returns its value as JSON.
async fn js(c: &Client, script: &str) -> Result<serde_json::Value> {
    c.execute(script, vec![])
        .await
        .with_context(|| format!("running `{script}`"))
}

/// Waits until `script` returns true in the page.
async fn wait_js(c: &Client, what: &str, script: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + LIVE_LIMIT;
    loop {
        if js(c, script).await? == serde_json::Value::Bool(true) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            let body = js(c, "return document.body.innerText")
                .await
                .unwrap_or_default();
            bail!("gave up waiting for {what} after {LIVE_LIMIT:?}; page: {body}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn stage_state_is(stage: &str, state: &str) -> String {
    format!(
        "var e = document.querySelector('.stage-state[data-instance=\"{stage}\"]'); return !!e && e.textContent === '{state}';"
    )
}

/// Posts a form from the page with `fetch` and returns the status code.
async fn post_status(c: &Client, path: &str, body: &str) -> Result<i64> {
    let script = format!(
        "return fetch('{path}', {{method: 'POST', headers: {{'Content-Type': 'application/x-www-form-urlencoded'}}, body: '{body}', redirect: 'manual'}}).then(r => r.status);"
    );
    js(c, &script).await?.as_i64().context("a status code")
}

async fn sign_in(c: &Client, base: &str, token: &str) -> Result<()> {
    c.goto(&format!("{base}/")).await?;
    let url = c.current_url().await?;
    assert_eq!(
        url.path(),
        "/login",
        "a browser without a token is asked for one"
    );
    c.find(Locator::Id("token")).await?.send_keys(token).await?;
    c.find(Locator::Id("sign-in")).await?.click().await?;
    wait_js(c, "the DAG list after signing in", "return location.pathname === '/' && !!document.querySelector('h1') && document.querySelector('h1').textContent === 'DAGs';").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium_follows_a_run_live_and_acts_as_the_role_allows() -> Result<()> {
    let data = tempfile::tempdir()?;
    let tokens = data.path().join("tokens.yaml");
    write_tokens_file(
        &tokens,
        &[
            ("root", "admin", ADMIN_TOKEN),
            ("workers", "worker", WORKER_TOKEN),
            ("ops", "operator", OPERATOR_TOKEN),
            ("ro", "viewer", VIEWER_TOKEN),
        ],
    );
    let scheduler = InProcessScheduler::start(SchedulerConfig {
        data_dir: data.path().join("scheduler"),
        tokens: Some(tokens),
        ..SchedulerConfig::default()
    })
    .await?;
    let base = scheduler
        .http_url
        .clone()
        .context("the scheduler serves HTTP")?;
    let mut config = worker_config(
        &scheduler.url,
        "console-worker",
        4,
        data.path().join("cache"),
    );
    config.allow_process = true;
    config.token = Some(WORKER_TOKEN.to_owned());
    let worker = InProcessWorker::spawn(config, process_executors());

    let name = unique_name("console");
    let gate = data.path().join("gate");
    let channel = tonic::transport::Channel::from_shared(scheduler.url.clone())?
        .connect()
        .await?;
    let mut client = pb::vishwa_client::VishwaClient::with_interceptor(
        channel,
        BearerToken::new(Some(ADMIN_TOKEN))?,
    );
    client
        .submit_dag(pb::SubmitDagRequest {
            file_name: "dag.yaml".into(),
            source: dag(&name, &gate),
            local_dir: data.path().display().to_string(),
            ..Default::default()
        })
        .await?;

    let browser = Browser::start().await?;
    let c = browser.client.clone();
    sign_in(&c, &base, OPERATOR_TOKEN).await?;

    // Trigger with a param from the DAG's form; the browser lands on the run's page.
    c.goto(&format!("{base}/dags/{name}")).await?;
    let note = c.find(Locator::Id("p-note")).await?;
    note.clear().await?;
    note.send_keys("from the browser <b>bold</b>").await?;
    c.find(Locator::Id("trigger")).await?.click().await?;
    wait_js(
        &c,
        "the run page",
        "return location.pathname.startsWith('/runs/');",
    )
    .await?;
    let run_path = c.current_url().await?.path().to_owned();
    let run_id = run_path.trim_start_matches("/runs/").to_owned();
    let run = client
        .get_run(pb::GetRunRequest {
            run_id: run_id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(
        run.params["note"], "\"from the browser <b>bold</b>\"",
        "the param reached the run (as JSON text)"
    );

    // States change on the open page, without a reload (the marker would be gone).
    js(&c, "window.marker = 'kept'; return true;").await?;
    wait_js(&c, "first running", &stage_state_is("first", "running")).await?;

    // The log follows the tail: lines arrive while the page stays open.
    c.goto(&format!("{base}{run_path}/logs/first")).await?;
    js(&c, "window.marker = 'log'; return true;").await?;
    let before = js(
        &c,
        "return document.querySelectorAll('#log li.line').length;",
    )
    .await?
    .as_u64()
    .unwrap_or(0);
    wait_js(
        &c,
        "new log lines",
        &format!("return document.querySelectorAll('#log li.line').length > {before} + 5 && window.marker === 'log';"),
    )
    .await?;
    // User text in a log line is text, not markup.
    wait_js(&c, "the note line", "return document.getElementById('log').innerText.includes('from the browser <b>bold</b>') && !document.querySelector('#log b');").await?;
    assert_eq!(js(&c, "return typeof window.pwned;").await?, "undefined");
    let lines = js(&c, "return Array.from(document.querySelectorAll('#log li.line .n')).slice(0, 3).map(e => e.textContent);").await?;
    assert_eq!(
        lines,
        serde_json::json!(["1", "2", "3"]),
        "lines are numbered"
    );

    // Back on the run page: opening the gate finishes the run, seen live.
    c.goto(&format!("{base}{run_path}")).await?;
    js(&c, "window.marker = 'run'; return true;").await?;
    std::fs::write(&gate, b"open")?;
    wait_js(
        &c,
        "second succeeded",
        &stage_state_is("second", "succeeded"),
    )
    .await?;
    wait_js(&c, "the run succeeded", "return document.querySelector('.run-state').textContent === 'succeeded' && window.marker === 'run';").await?;
    assert_eq!(js(&c, "return document.querySelector('.node[data-group=\"first\"]').classList.contains('succeeded');").await?, true);

    // A POST without the CSRF token is refused, and starts nothing.
    let runs_before = client
        .list_runs(pb::ListRunsRequest::default())
        .await?
        .into_inner()
        .runs
        .len();
    assert_eq!(
        post_status(&c, &format!("/dags/{name}/trigger"), "p.note=x").await?,
        403
    );
    assert_eq!(
        post_status(&c, &format!("/dags/{name}/trigger"), "csrf=forged&p.note=x").await?,
        403
    );
    assert_eq!(
        client
            .list_runs(pb::ListRunsRequest::default())
            .await?
            .into_inner()
            .runs
            .len(),
        runs_before
    );

    // Cancel: a second run waits on a gate that never opens.
    std::fs::remove_file(&gate)?;
    c.goto(&format!("{base}/dags/{name}")).await?;
    c.find(Locator::Id("trigger")).await?.click().await?;
    wait_js(
        &c,
        "the second run's page",
        &format!(
            "return location.pathname.startsWith('/runs/') && location.pathname !== '{run_path}';"
        ),
    )
    .await?;
    wait_js(
        &c,
        "first running again",
        &stage_state_is("first", "running"),
    )
    .await?;
    c.find(Locator::Id("cancel")).await?.click().await?;
    wait_js(
        &c,
        "the run cancelled",
        "return document.querySelector('.run-state').textContent === 'cancelled';",
    )
    .await?;

    // A viewer: no trigger button, and its POST (with a valid CSRF token) is refused.
    c.find(Locator::Css("header form button"))
        .await?
        .click()
        .await?;
    sign_in(&c, &base, VIEWER_TOKEN).await?;
    c.goto(&format!("{base}/dags/{name}")).await?;
    assert!(
        c.find_all(Locator::Id("trigger")).await?.is_empty(),
        "a viewer sees no trigger button"
    );
    assert!(c.find_all(Locator::Id("trigger-form")).await?.is_empty());
    let csrf = js(
        &c,
        "return document.querySelector('input[name=csrf]').value;",
    )
    .await?;
    let csrf = csrf.as_str().context("the page's CSRF token")?;
    assert_eq!(
        post_status(
            &c,
            &format!("/dags/{name}/trigger"),
            &format!("csrf={csrf}&p.note=x")
        )
        .await?,
        403
    );
    assert_eq!(
        client
            .list_runs(pb::ListRunsRequest::default())
            .await?
            .into_inner()
            .runs
            .len(),
        runs_before + 1
    );
    assert_eq!(js(&c, "return typeof window.pwned;").await?, "undefined");

    browser.close().await;
    worker.stop().await?;
    scheduler.stop().await?;
    Ok(())
}

/// A retraining pipeline: an extract whose output the trained flavours consume, and an
/// evaluation whose accuracy grows with `rows`.
fn retrain_dag(name: &str) -> String {
    format!(
        r#"
name: {name}
description: Nightly retraining of the cake-popularity model
params:
  rows: 500
  flavours: [chocolate, vanilla, lemon]
stages:
  - name: extract
    executor: process
    command: ["sh", "-c", "echo extracting $VISHWA_PARAM_ROWS rows; echo rows,$VISHWA_PARAM_ROWS > $VISHWA_OUT/data.csv"]
    outputs: [data.csv]
  - name: train
    executor: process
    needs: [extract]
    for_each: "{{{{ params.flavours }}}}"
    command: ["sh", "-c", "echo training $VISHWA_ITEM on $(cat $VISHWA_IN/extract/data.csv); sleep 0.3"]
  - name: evaluate
    executor: process
    needs: [train]
    command: ["sh", "-c", "echo '{{\"accuracy\": 0.'$((70 + VISHWA_PARAM_ROWS / 100))'}}' > $VISHWA_OUT/metrics.json"]
  - name: report
    executor: process
    needs: [evaluate]
    command: ["sh", "-c", "echo report written"]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dag_page_charts_a_metric_across_runs_and_runs_compare_with_their_outputs() -> Result<()>
{
    let data = tempfile::tempdir()?;
    let scheduler = InProcessScheduler::start(SchedulerConfig {
        data_dir: data.path().join("scheduler"),
        ..SchedulerConfig::default()
    })
    .await?;
    let base = scheduler
        .http_url
        .clone()
        .context("the scheduler serves HTTP")?;
    let mut config = worker_config(
        &scheduler.url,
        "console-worker",
        4,
        data.path().join("cache"),
    );
    config.allow_process = true;
    let worker = InProcessWorker::spawn(config, process_executors());
    let name = unique_name("retrain");
    let mut client = scheduler.client().await?;
    client
        .submit_dag(pb::SubmitDagRequest {
            file_name: "dag.yaml".into(),
            source: retrain_dag(&name),
            local_dir: data.path().display().to_string(),
            ..Default::default()
        })
        .await?;
    let mut runs = Vec::new();
    for rows in [500, 900, 1300, 1100, 1500, 2100] {
        let run = client
            .trigger_run(pb::TriggerRunRequest {
                dag: name.clone(),
                params: [("rows".to_owned(), rows.to_string())].into(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .run
            .context("a run")?
            .run_id;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let got = client
                .get_run(pb::GetRunRequest {
                    run_id: run.clone(),
                })
                .await?
                .into_inner();
            let state = got.summary.map(|s| s.state).unwrap_or_default();
            if state == pb::RunState::Succeeded as i32 {
                break;
            }
            assert!(
                state != pb::RunState::Failed as i32 && tokio::time::Instant::now() < deadline,
                "run {run} did not succeed: {:?}",
                got.stages
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        runs.push(run);
    }

    let browser = Browser::start().await?;
    let c = browser.client.clone();
    // The DAG page: one point per run on the accuracy chart.
    c.goto(&format!("{base}/dags/{name}")).await?;
    let caption = c
        .find(Locator::Css("figure.chart figcaption"))
        .await?
        .text()
        .await?;
    assert_eq!(caption, "evaluate.accuracy");
    assert_eq!(
        c.find_all(Locator::Css("figure.chart circle")).await?.len(),
        runs.len()
    );
    assert_eq!(
        c.find_all(Locator::Css("svg.graph .node")).await?.len(),
        4,
        "one node per stage"
    );
    let dag_png = c.screenshot().await?;

    // The run page: the fan-out is one node counting its three instances.
    let last = runs.last().context("runs")?;
    c.goto(&format!("{base}/runs/{last}")).await?;
    let counts = js(
        &c,
        "return document.querySelector('.node[data-group=\"train\"] .counts').textContent;",
    )
    .await?;
    assert_eq!(counts, "×3 · 3 succeeded");
    assert_eq!(
        c.find_all(Locator::Css("svg.gantt rect.bar")).await?.len(),
        6,
        "one bar per instance"
    );
    let run_png = c.screenshot().await?;

    // Compare: the rows param differs, so its row is highlighted.
    c.goto(&format!("{base}/compare?runs={},{last}", runs[0]))
        .await?;
    let highlighted = js(&c, "return Array.from(document.querySelectorAll('tr.diff td:first-child')).map(e => e.textContent);").await?;
    assert_eq!(
        highlighted,
        serde_json::json!(["param rows", "evaluate.accuracy"])
    );

    // Artifacts: the extract's output, its consumers, and its download.
    c.goto(&format!("{base}/runs/{last}/artifacts")).await?;
    let text = js(&c, "return document.querySelector('main table').innerText;").await?;
    let text = text.as_str().unwrap_or_default();
    assert!(
        text.contains("data.csv")
            && text.contains("train[chocolate]")
            && text.contains("train[lemon]"),
        "{text}"
    );
    let body = js(
        &c,
        &format!("return fetch('/runs/{last}/artifacts/extract/data.csv').then(r => r.text());"),
    )
    .await?;
    assert_eq!(body, "rows,2100\n");

    // Screenshots for the README, when asked for.
    if let Ok(dir) = std::env::var("VISHWA_CONSOLE_SCREENSHOTS") {
        std::fs::write(Path::new(&dir).join("console-dag.png"), dag_png)?;
        std::fs::write(Path::new(&dir).join("console-run.png"), run_png)?;
    }
    browser.close().await;
    worker.stop().await?;
    scheduler.stop().await?;
    Ok(())
}
