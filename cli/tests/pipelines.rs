//! The two example ML pipelines (`dags/cake-popularity`, `dags/student-intelligence`) run end
//! to end through the `vishwa` binary in real Docker: data, validation, training in the
//! python-ml image, a gate, an image built and a model container deployed through the mounted
//! Docker socket, predictions over HTTP, drift. Also: a bad batch stops the run at validation
//! with a readable report, and a gate that does not hold skips packaging and deployment.
//!
//! The image `vishwa-examples/python-ml:1` is built by `.ci/run`; these tests run
//! `dags/images/build-python-ml.sh` first, which does nothing when the image holds the current
//! shared package `vishwa_ml`, rebuilds only its thin layer when the package changed, and builds
//! the debootstrap base (root and a few minutes) only when that is missing. The package's own
//! unit tests run in the image too.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder};
use common::{Outcome, dags_dir, run_to_end, unique_name, vishwa_command};

/// The image every stage of both pipelines runs in.
const PYTHON_ML_IMAGE: &str = "vishwa-examples/python-ml:1";

/// How long one pipeline run may take (a busy 2-core machine builds a model image in it).
const PIPELINE_LIMIT: Duration = Duration::from_secs(900);

/// One pipeline at a time: each trains, builds images and deploys containers, and the machine
/// has two cores; the image build below must also happen once.
static PIPELINES: Mutex<()> = Mutex::new(());

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot start a runtime")
        .block_on(future)
}

fn docker() -> Docker {
    Docker::connect_with_local_defaults().expect("Docker must be reachable")
}

/// Brings the python-ml image up to date with the repository's script (a no-op when its
/// `vishwa_ml` layer matches dags/images/python).
fn ensure_python_ml_image() {
    let script = dags_dir().join("images/build-python-ml.sh");
    let mut command = Command::new("sh");
    command.arg(&script);
    let outcome = run_to_end(command, Duration::from_secs(1800));
    assert!(
        outcome.status.success(),
        "{} could not build {PYTHON_ML_IMAGE}: {outcome}",
        script.display()
    );
}

fn example(name: &str) -> String {
    dags_dir().join(name).display().to_string()
}

/// Whether `stdout` has a state line `TIME  STAGE  STATE ...` for `stage` in `state`.
fn has_state_line(stdout: &str, stage: &str, state: &str) -> bool {
    stdout.lines().any(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        words.len() >= 3 && words[1] == stage && words[2] == state
    })
}

/// Whether `stage` printed a line containing `text` (`vishwa run` prefixes output lines with
/// the stage's name and `|`).
fn stage_printed(stdout: &str, stage: &str, text: &str) -> bool {
    stdout.lines().any(|line| {
        line.split_once('|').is_some_and(|(prefix, rest)| {
            prefix.split_whitespace().next() == Some(stage) && rest.contains(text)
        })
    })
}

/// The run id from the first line, `run <id> of <dag> (<n> stages)`.
#[track_caller]
fn run_id_of(outcome: &Outcome) -> String {
    let first = outcome.stdout.lines().next().unwrap_or_default();
    let words: Vec<&str> = first.split_whitespace().collect();
    assert!(
        words.len() >= 4 && words[0] == "run" && words[2] == "of",
        "no run started: {outcome}"
    );
    words[1].to_owned()
}

#[track_caller]
fn assert_states(outcome: &Outcome, stages: &[&str], state: &str) {
    for stage in stages {
        assert!(
            has_state_line(&outcome.stdout, stage, state),
            "no `{stage} {state}` line: {outcome}"
        );
    }
}

/// What one test deploys, removed when the test ends however it ends: the model container, its
/// network, and the model images the run built.
struct Deployment {
    container: String,
    network: String,
    images: Vec<String>,
}

impl Deployment {
    fn new(prefix: &str) -> Deployment {
        Deployment {
            container: unique_name(prefix),
            network: unique_name("vishwa-test-net"),
            images: Vec::new(),
        }
    }

    /// The `-p` overrides that send the deployment to this test's own names and a free port.
    fn params(&self) -> Vec<String> {
        vec![
            "-p".into(),
            format!("container={}", self.container),
            "-p".into(),
            format!("network={}", self.network),
            "-p".into(),
            "host_port=0".into(),
        ]
    }

    fn container_exists(&self) -> bool {
        block_on(docker().inspect_container(&self.container, None)).is_ok()
    }

    /// The host port Docker published the model's 8080 on (127.0.0.1).
    fn host_port(&self) -> u16 {
        let info = block_on(docker().inspect_container(&self.container, None))
            .unwrap_or_else(|e| panic!("the model container {} is gone: {e}", self.container));
        let running = info.state.as_ref().and_then(|s| s.running);
        assert_eq!(running, Some(true), "{} is not running", self.container);
        info.network_settings
            .and_then(|n| n.ports)
            .and_then(|ports| ports.get("8080/tcp").cloned().flatten())
            .and_then(|bindings| bindings.into_iter().next())
            .and_then(|binding| binding.host_port)
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("{} publishes no port for 8080", self.container))
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let docker = docker();
        block_on(async {
            let force = RemoveContainerOptionsBuilder::default().force(true).build();
            let _ = docker.remove_container(&self.container, Some(force)).await;
            let _ = docker.remove_network(&self.network).await;
            for image in &self.images {
                let options = RemoveImageOptionsBuilder::default().force(true).build();
                let _ = docker.remove_image(image, Some(options), None).await;
            }
        });
    }
}

/// Runs `vishwa run DAG --allow-mount /var/run/docker.sock` with `params` to its end.
fn run_pipeline(dag: &str, params: &[String]) -> Outcome {
    let path = example(dag);
    let mut args = vec![
        "run",
        path.as_str(),
        "--slots",
        "2",
        "--allow-mount",
        "/var/run/docker.sock",
    ];
    args.extend(params.iter().map(String::as_str));
    run_to_end(vishwa_command(&args), PIPELINE_LIMIT)
}

/// A Docker tag made from a run id, as `vishwa_ml.package` makes it.
fn version_tag(run_id: &str) -> String {
    run_id
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// POSTs `body` to `http://127.0.0.1:port/path` and returns the status and the JSON body.
fn post_json(port: u16, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("cannot reach the model on 127.0.0.1:{port}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, json) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    let value = serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}): {json}"));
    (status, value)
}

const CAKE_STAGES: &[&str] = &[
    "collect", "validate", "features", "train", "evaluate", "gate", "package", "deploy", "smoke",
    "monitor",
];

#[test]
fn cake_popularity_runs_end_to_end_and_the_deployed_model_answers_predictions() {
    let _one = PIPELINES.lock().unwrap_or_else(|e| e.into_inner());
    ensure_python_ml_image();
    let mut deployment = Deployment::new("cake-test-model");
    let mut params = deployment.params();
    params.extend(["-p".into(), "rows=1200".into()]);
    let outcome = run_pipeline("cake-popularity", &params);
    let run_id = run_id_of(&outcome);
    let version = version_tag(&run_id);
    deployment
        .images
        .push(format!("vishwa-examples/cake-popularity-model:{version}"));
    outcome.expect_code(0);
    assert_states(&outcome, CAKE_STAGES, "succeeded");
    let out = &outcome.stdout;
    for (stage, text) in [
        ("validate", "validation passed: "),
        ("evaluate", "metric accuracy = "),
        ("gate", "gate passed: evaluate accuracy "),
        ("package", "built vishwa-examples/cake-popularity-model:"),
        ("deploy", "deployed cake-popularity "),
        ("smoke", "smoke test passed"),
        ("monitor", "no drift"),
    ] {
        assert!(
            stage_printed(out, stage, text),
            "{stage} did not print `{text}`: {outcome}"
        );
    }

    // The deployed container is this run's model and answers from the Docker host.
    let port = deployment.host_port();
    let (status, answer) = post_json(
        port,
        "/predict",
        r#"{"instances": [
            {"age": 19, "sweet_tooth": 10, "chocolate_love": 10, "price_inr": 80, "portion_g": 200, "flavour": "chocolate"},
            {"age": 30, "sweet_tooth": 1, "chocolate_love": 1, "price_inr": 550, "portion_g": 60, "flavour": "lemon"}]}"#,
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["version"], version.as_str(), "{answer}");
    let predictions = answer["predictions"].as_array().expect("predictions");
    assert_eq!(predictions.len(), 2, "{answer}");
    let fan = predictions[0]["probability"].as_f64().unwrap();
    let hater = predictions[1]["probability"].as_f64().unwrap();
    assert!(fan > 0.5 && hater < 0.5, "{answer}");
    let (status, error) = post_json(port, "/predict", r#"{"instances": [{"age": 20}]}"#);
    assert_eq!(status, 400, "{error}");
}

#[test]
fn cake_popularity_bad_batch_fails_at_validation_with_a_readable_report() {
    let _one = PIPELINES.lock().unwrap_or_else(|e| e.into_inner());
    ensure_python_ml_image();
    let deployment = Deployment::new("cake-test-model");
    let mut params = deployment.params();
    params.extend(["-p".into(), "bad_batch=true".into()]);
    let outcome = run_pipeline("cake-popularity", &params);
    outcome.expect_code(1);
    assert_states(&outcome, &["collect"], "succeeded");
    assert_states(&outcome, &["validate"], "failed");
    assert_states(
        &outcome,
        &["features", "train", "evaluate", "package", "deploy"],
        "upstream_failed",
    );
    let out = &outcome.stdout;
    for text in [
        "FAIL  schema: required columns",
        "missing ['portion_g']",
        "FAIL  age: within [15, 35]",
        "FAIL  flavour: known values",
        "['durian']",
        "FAIL  respondent_id: unique",
        "validation failed: ",
    ] {
        assert!(
            stage_printed(out, "validate", text),
            "the report lacks `{text}`: {outcome}"
        );
    }
    assert!(
        !deployment.container_exists(),
        "a bad batch deployed a model"
    );
}

#[test]
fn cake_popularity_gate_that_does_not_hold_skips_package_and_deploy() {
    let _one = PIPELINES.lock().unwrap_or_else(|e| e.into_inner());
    ensure_python_ml_image();
    let deployment = Deployment::new("cake-test-model");
    let mut params = deployment.params();
    params.extend([
        "-p".into(),
        "min_accuracy=1.01".into(),
        "-p".into(),
        "rows=600".into(),
    ]);
    let outcome = run_pipeline("cake-popularity", &params);
    outcome.expect_code(0);
    assert_states(
        &outcome,
        &["collect", "validate", "features", "train", "evaluate"],
        "succeeded",
    );
    assert_states(
        &outcome,
        &["gate", "package", "deploy", "smoke", "monitor"],
        "skipped",
    );
    assert!(
        !deployment.container_exists(),
        "a model below the bar was deployed"
    );
}

#[test]
fn student_intelligence_trains_a_model_per_course_and_deploys_the_set() {
    let _one = PIPELINES.lock().unwrap_or_else(|e| e.into_inner());
    ensure_python_ml_image();
    let mut deployment = Deployment::new("students-test-model");
    let mut params = deployment.params();
    params.extend([
        "-p".into(),
        "students=1200".into(),
        "-p".into(),
        "courses=maths,economics,biology".into(),
    ]);
    let outcome = run_pipeline("student-intelligence", &params);
    let run_id = run_id_of(&outcome);
    let version = version_tag(&run_id);
    deployment.images.push(format!(
        "vishwa-examples/student-intelligence-model:{version}"
    ));
    outcome.expect_code(0);
    assert_states(
        &outcome,
        &[
            "generate",
            "validate",
            "features",
            "version",
            "train[maths]",
            "train[economics]",
            "train[biology]",
            "select",
            "gate",
            "package",
            "deploy",
            "drift",
        ],
        "succeeded",
    );
    let out = &outcome.stdout;
    assert!(
        stage_printed(out, "version", "training data version sha256:"),
        "{outcome}"
    );
    assert!(stage_printed(out, "select", "<- best"), "{outcome}");
    for course in ["maths", "economics", "biology"] {
        assert!(
            stage_printed(out, "select", &format!("{course} ")),
            "the leaderboard lacks {course}: {outcome}"
        );
    }

    let port = deployment.host_port();
    let (status, answer) = post_json(
        port,
        "/predict",
        r#"{"instances": [
            {"course": "economics", "age": 19, "prior_gpa": 9.0, "attendance": 0.97, "study_hours": 20, "part_time_job": 0, "midterm": 85, "assignments_done": 0.95},
            {"course": "maths", "age": 22, "prior_gpa": 3.5, "attendance": 0.4, "study_hours": 1, "part_time_job": 1, "midterm": 25, "assignments_done": 0.3}]}"#,
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["version"], version.as_str(), "{answer}");
    let predictions = answer["predictions"].as_array().expect("predictions");
    assert_eq!(predictions[0]["model"], "economics", "{answer}");
    assert_eq!(predictions[1]["model"], "maths", "{answer}");
    assert_eq!(predictions[0]["label"], 1, "{answer}");
    assert_eq!(predictions[1]["label"], 0, "{answer}");
    let (status, error) = post_json(
        port,
        "/predict",
        r#"{"instances": [{"course": "astrology", "age": 20}]}"#,
    );
    assert_eq!(status, 400, "{error}");
}

/// The package both pipelines share, `vishwa_ml` (dags/images/python), passes its unit tests as
/// installed in the image: the tests are mounted, the code under test is the image's own.
#[test]
fn the_shared_python_package_passes_its_unit_tests_in_the_image() {
    let _one = PIPELINES.lock().unwrap_or_else(|e| e.into_inner());
    ensure_python_ml_image();
    let tests = dags_dir().join("images/python/tests");
    let mut command = Command::new("docker");
    command
        .args(["run", "--rm", "--network", "none", "--mount"])
        .arg(format!(
            "type=bind,source={},target=/tests,readonly",
            tests.display()
        ))
        .args([PYTHON_ML_IMAGE, "python3", "-m", "unittest", "discover"])
        .args(["-v", "-s", "/tests", "-t", "/tests"]);
    let outcome = run_to_end(command, Duration::from_secs(300));
    outcome.expect_code(0);
    // unittest reports on stderr; a discovery that found nothing would also exit 0.
    let ran = outcome
        .stderr
        .lines()
        .find_map(|line| {
            line.strip_prefix("Ran ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0u32);
    assert!(
        ran >= 20,
        "expected the package's 20+ tests to run: {outcome}"
    );
    for module in [
        "test_serve",
        "test_dockerapi",
        "test_driftstats",
        "test_validation",
    ] {
        assert!(
            outcome.stderr.contains(module),
            "{module} did not run: {outcome}"
        );
    }
}

/// Runs one stage's command (words split on whitespace) with `scripts/run-stage.sh`: in the
/// python-ml image, with the bundle, `/vishwa/in` and `/vishwa/out` laid out as a worker lays
/// them out, so the scripts are checked without the engine.
fn run_stage(dag: &str, work: &Path, stage: &str, run_id: &str, command: &str) -> Outcome {
    let mut cmd = Command::new("sh");
    cmd.arg(dags_dir().join("../scripts/run-stage.sh"))
        .arg(dags_dir().join(dag))
        .arg(work)
        .arg(stage);
    if matches!(stage, "package" | "deploy" | "smoke") {
        cmd.arg("--docker-socket");
    }
    cmd.arg("--")
        .args(command.split_whitespace())
        .env("VISHWA_RUN_ID", run_id);
    run_to_end(cmd, Duration::from_secs(600))
}

/// Panics, showing the stage's output, unless it exited with `code`.
#[track_caller]
fn expect_exit(outcome: Outcome, stage: &str, code: i32) -> Outcome {
    assert_eq!(
        outcome.status.code(),
        Some(code),
        "stage {stage} exited otherwise: {outcome}"
    );
    outcome
}

/// The metrics.json a stage run by [`run_stage`] wrote.
fn metrics_of(work: &Path, stage: &str) -> serde_json::Value {
    let path = work.join("in").join(stage).join("metrics.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The cake pipeline's scripts, stage by stage in the image with the container contract's
/// layout, through package, deploy and smoke on real Docker: what `vishwa run` does, minus the
/// engine (this passes before artifacts and `when:` exist in the engine).
#[test]
fn cake_popularity_scripts_run_stage_by_stage_in_the_image() {
    let _one = PIPELINES.lock().unwrap_or_else(|e| e.into_inner());
    ensure_python_ml_image();
    let dir = tempfile::tempdir().unwrap();
    let mut deployment = Deployment::new("cake-test-model");
    let run_id = unique_name("cake-popularity-stages");
    let image = format!(
        "vishwa-examples/cake-popularity-model:{}",
        version_tag(&run_id)
    );
    deployment.images.push(image);
    let stage = |work: &Path, name: &str, command: &str, code: i32| {
        expect_exit(
            run_stage("cake-popularity", work, name, &run_id, command),
            name,
            code,
        )
    };
    let work = dir.path();

    stage(
        work,
        "collect",
        "python3 collect.py --rows 1200 --seed 7",
        0,
    );
    let validate = stage(work, "validate", "python3 validate.py", 0);
    assert!(
        validate
            .stdout
            .contains("validation passed: 24 checks, 1200 rows"),
        "{validate}"
    );
    stage(work, "features", "python3 features.py --seed 7", 0);
    stage(work, "train", "python3 train.py --seed 7", 0);
    stage(work, "evaluate", "python3 evaluate.py", 0);
    let metrics = metrics_of(work, "evaluate");
    let accuracy = metrics["accuracy"]
        .as_f64()
        .expect("evaluate reports accuracy");
    assert!((0.75..=1.0).contains(&accuracy), "{metrics}");
    assert!(
        metrics["f1"].as_f64().is_some_and(|f1| f1 > 0.5),
        "{metrics}"
    );

    let gate = "python3 -m vishwa_ml.gate --stage evaluate --metric accuracy --min";
    let refused = stage(work, "gate", &format!("{gate} 1.01"), 1);
    assert!(refused.stderr.contains("not promoting"), "{refused}");
    stage(work, "gate", &format!("{gate} 0.75"), 0);

    let package = stage(
        work,
        "package",
        r#"python3 -m vishwa_ml.package --name cake-popularity --model train/model.pkl
           --metrics evaluate/metrics.json --example {"age":19}"#,
        0,
    );
    assert!(
        package.stdout.contains("# Model card: cake-popularity"),
        "{package}"
    );
    let deploy = format!(
        "python3 -m vishwa_ml.deploy --container {} --network {} --host-port 0",
        deployment.container, deployment.network
    );
    stage(work, "deploy", &deploy, 0);
    let smoke = stage(work, "smoke", "python3 smoke.py", 0);
    assert!(smoke.stdout.contains("smoke test passed"), "{smoke}");
    // A second deploy replaces the running container by name.
    let again = stage(work, "deploy", &deploy, 0);
    assert!(
        again.stdout.contains("removed the previous container"),
        "{again}"
    );
    let (status, answer) = post_json(
        deployment.host_port(),
        "/predict",
        r#"{"age": 19, "sweet_tooth": 10, "chocolate_love": 10, "price_inr": 80, "portion_g": 200, "flavour": "chocolate"}"#,
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["predictions"][0]["label"], 1, "{answer}");

    let monitor = "python3 monitor.py --rows 800 --seed 71 --fail-on-drift true --shift";
    let calm = stage(work, "monitor", &format!("{monitor} 0"), 0);
    assert!(calm.stdout.contains("no drift"), "{calm}");
    let drifted = stage(work, "monitor", &format!("{monitor} 1.5"), 1);
    assert!(
        drifted.stdout.contains("error: drift above PSI 0.2 in age"),
        "{drifted}"
    );

    // A bad batch: validation fails with its report.
    let bad = tempfile::tempdir().unwrap();
    let collect = "python3 collect.py --rows 300 --seed 7 --bad-batch true";
    stage(bad.path(), "collect", collect, 0);
    let report = stage(bad.path(), "validate", "python3 validate.py", 1);
    for text in [
        "FAIL  age: within [15, 35]",
        "['durian']",
        "validation failed: 7 of 21 checks failed",
    ] {
        assert!(
            report.stdout.contains(text),
            "the report lacks `{text}`: {report}"
        );
    }
}

/// The student pipeline's scripts stage by stage (package and deploy are the shared
/// `vishwa_ml` ones, checked above with the cake pipeline): fan-out instances' outputs under `train[<course>]`, the comparison, the gate
/// and drift.
#[test]
fn student_intelligence_scripts_run_stage_by_stage_in_the_image() {
    let _one = PIPELINES.lock().unwrap_or_else(|e| e.into_inner());
    ensure_python_ml_image();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let run_id = unique_name("student-intelligence-stages");
    let stage = |name: &str, command: &str| {
        expect_exit(
            run_stage("student-intelligence", work, name, &run_id, command),
            name,
            0,
        )
    };
    stage("generate", "python3 generate.py --students 900 --seed 11");
    stage("validate", "python3 validate.py");
    stage("features", "python3 features.py");
    let version = stage("version", "python3 version.py");
    assert!(
        version.stdout.contains("training data version sha256:"),
        "{version}"
    );
    let digest = metrics_of(work, "version")["data_version"]
        .as_f64()
        .unwrap();
    assert!(digest > 0.0 && digest < 2f64.powi(48), "{digest}");
    for course in ["maths", "economics"] {
        stage(
            &format!("train[{course}]"),
            &format!("python3 train.py --course {course} --seed 11"),
        );
    }
    let select = stage("select", "python3 select_best.py");
    assert!(select.stdout.contains("<- best"), "{select}");
    assert_eq!(metrics_of(work, "select")["courses"], 2);
    stage(
        "gate",
        "python3 -m vishwa_ml.gate --stage select --metric worst_accuracy --min 0.7",
    );
    let drift = stage("drift", "python3 drift.py --students 500 --seed 111");
    assert!(drift.stdout.contains("no drift"), "{drift}");
}
