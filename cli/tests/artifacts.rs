//! Issue 6, artifacts, metrics, caching and `compare`: a real scheduler and two real worker
//! processes with separate data dirs (no shared disk between them), real Docker with the
//! busybox test image.

mod cluster;

use std::time::Duration;

use cluster::{Cluster, IMAGE};
use serde_json::Value;

const RUN_LIMIT: Duration = Duration::from_secs(180);

/// A scheduler and workers `a` (label node=a) and `b` (label node=b), each with its own
/// cache folder.
fn two_worker_cluster() -> (Cluster, String, String) {
    let cluster = Cluster::new();
    cluster.start_scheduler();
    let a = cluster.name("a");
    let b = cluster.name("b");
    for (name, label) in [(&a, "node=a"), (&b, "node=b")] {
        let cache = cluster.dir().join(format!("cache-{name}"));
        cluster.start_worker(
            name,
            2,
            &["--label", label, "--cache", cache.to_str().unwrap()],
        );
    }
    (cluster, a, b)
}

fn get_json(cluster: &Cluster, run: &str) -> Value {
    let out = cluster.vishwa(&["get", run, "-o", "json"]);
    serde_json::from_str(&out.stdout).expect("vishwa get prints JSON")
}

fn stage<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stage {name} in {run:#}"))
}

fn finish(cluster: &Cluster, run: &str) -> Value {
    cluster.wait_run_final(run, RUN_LIMIT);
    get_json(cluster, run)
}

#[test]
fn outputs_cross_workers_with_no_shared_disk_and_metrics_are_recorded() {
    let (cluster, a, b) = two_worker_cluster();
    let dag = cluster.name("flow");
    let yaml = format!(
        r#"name: {dag}
stages:
  - name: produce
    image: {IMAGE}
    worker: {{node: a}}
    outputs: [data.txt, metrics.json]
    command: 'echo "hello from $VISHWA_RUN_ID" > /vishwa/out/data.txt && echo "{{\"accuracy\": 0.93, \"rows\": 500}}" > /vishwa/out/metrics.json'
  - name: part
    image: {IMAGE}
    worker: {{node: a}}
    for_each: [x, y]
    outputs: [part.txt]
    command: 'echo "part {{{{ item }}}}" > /vishwa/out/part.txt'
  - name: consume
    needs: [produce, part]
    image: {IMAGE}
    worker: {{node: b}}
    outputs: [copy.txt]
    command: 'cat /vishwa/in/produce/data.txt && grep -q "hello from $VISHWA_RUN_ID" /vishwa/in/produce/data.txt && grep -q "part x" "/vishwa/in/part[x]/part.txt" && grep -q "part y" "/vishwa/in/part[y]/part.txt" && cp /vishwa/in/produce/data.txt /vishwa/out/copy.txt && ! touch /vishwa/in/produce/data.txt'
"#
    );
    cluster.submit("flow.yaml", &yaml);
    let run = cluster.trigger(&dag, &[]);
    let view = finish(&cluster, &run);
    assert_eq!(view["state"], "succeeded", "{view:#}");
    assert_eq!(stage(&view, "produce")["worker"], a.as_str());
    assert_eq!(stage(&view, "consume")["worker"], b.as_str());
    let metrics = &stage(&view, "produce")["metrics"];
    assert_eq!(metrics["accuracy"], 0.93);
    assert_eq!(metrics["rows"], 500.0);

    // `vishwa get` shows the metrics to people too.
    let table = cluster.vishwa(&["get", &run]).stdout;
    assert!(table.contains("accuracy=0.93  rows=500"), "{table}");

    // The consumer's logs show the producer's content, read on the other worker.
    let logs = cluster.vishwa(&["logs", &run, "consume"]).stdout;
    assert!(logs.contains(&format!("hello from {run}")), "{logs}");

    // Listing: every output with its digest, and who consumed it.
    let list: Value =
        serde_json::from_str(&cluster.vishwa(&["artifacts", &run, "-o", "json"]).stdout).unwrap();
    let data = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["stage"] == "produce" && a["name"] == "data.txt")
        .unwrap_or_else(|| panic!("no produce/data.txt in {list:#}"));
    let consumers: Vec<&str> = data["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["stage"].as_str().unwrap())
        .collect();
    assert_eq!(consumers, ["consume"]);
    let digest = data["digest"].as_str().unwrap().to_owned();
    let table = cluster.vishwa(&["artifacts", &run]).stdout;
    assert!(
        table.contains(&digest[..12]) && table.contains("part[y]"),
        "{table}"
    );

    // Download one and compare.
    let out = cluster.dir().join("copy.txt");
    cluster.vishwa(&[
        "artifacts",
        "get",
        &run,
        "consume/copy.txt",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        format!("hello from {run}\n")
    );
    let missing = cluster.try_vishwa(&["artifacts", "get", &run, "consume/nope.txt", "-o", "x"]);
    assert!(!missing.ok());
    assert!(
        missing.stderr.contains("has no output consume/nope.txt"),
        "{missing}"
    );

    // Lineage: the digest was made by produce (and copied, same content, by consume) and
    // used by consume.
    let which = cluster
        .vishwa(&["artifacts", "which", &digest[..16]])
        .stdout;
    assert!(
        which.contains("produce") && which.contains("data.txt"),
        "{which}"
    );
    assert!(
        which.contains("used by:") && which.contains("consume"),
        "{which}"
    );
}

#[test]
fn missing_outputs_bad_metrics_and_tampered_blobs_fail_clearly() {
    let (cluster, _a, _b) = two_worker_cluster();
    let dag = cluster.name("bad");
    let yaml = format!(
        r#"name: {dag}
stages:
  - name: forgets
    image: {IMAGE}
    outputs: [model.pkl]
    command: 'echo trained'
  - name: metrics
    image: {IMAGE}
    command: 'echo "{{\"accuracy\": \"high\"}}" > /vishwa/out/metrics.json'
"#
    );
    cluster.submit("bad.yaml", &yaml);
    let run = cluster.trigger(&dag, &[]);
    let view = finish(&cluster, &run);
    assert_eq!(view["state"], "failed");
    let forgets = stage(&view, "forgets");
    assert_eq!(forgets["state"], "failed");
    let message = forgets["message"].as_str().unwrap();
    assert!(
        message.contains("declared output `model.pkl` was not written"),
        "{message}"
    );
    let metrics = stage(&view, "metrics");
    assert_eq!(metrics["state"], "failed");
    let message = metrics["message"].as_str().unwrap();
    assert!(
        message.contains("metrics.json") && message.contains("key `accuracy` is a string"),
        "{message}"
    );

    // A blob altered on the scheduler's disk is caught by the consumer's worker.
    let dag = cluster.name("tamper");
    let yaml = format!(
        r#"name: {dag}
stages:
  - name: produce
    image: {IMAGE}
    worker: {{node: a}}
    outputs: [model.bin]
    command: 'echo "the real model" > /vishwa/out/model.bin'
  - name: consume
    needs: [produce]
    image: {IMAGE}
    worker: {{node: b}}
    command: 'cat /vishwa/in/produce/model.bin'
"#
    );
    cluster.submit("tamper.yaml", &yaml);
    let run = cluster.trigger(&dag, &[]);
    let view = finish(&cluster, &run);
    assert_eq!(view["state"], "succeeded", "{view:#}");
    let digest = stage(&view, "produce")["outputs"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let blob = cluster
        .data
        .join("artifacts/sha256")
        .join(&digest[..2])
        .join(&digest[2..]);
    assert!(blob.is_file(), "blob {} not found", blob.display());
    std::fs::write(&blob, "a poisoned model\n").unwrap();
    cluster.vishwa(&["retry", &run, "--from", "consume"]);
    cluster.wait_run(&run, RUN_LIMIT, "the retry ended", |v| {
        v.is_final() && v.stage("consume").attempts.len() == 2
    });
    let view = get_json(&cluster, &run);
    let consume = stage(&view, "consume");
    assert_eq!(consume["state"], "failed", "{view:#}");
    let message = consume["message"].as_str().unwrap();
    assert!(
        message.contains("input `produce/model.bin` does not match its digest")
            && message.contains(&digest),
        "{message}"
    );
    // The CLI checks what it downloads as well.
    let out = cluster.dir().join("model.bin");
    let got = cluster.try_vishwa(&[
        "artifacts",
        "get",
        &run,
        "produce/model.bin",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        !got.ok() && got.stderr.contains("does not match its digest"),
        "{got}"
    );
    assert!(!out.exists());
}

#[test]
fn output_names_that_escape_are_refused_at_validation() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["../up.txt", "/etc/passwd", "sub/dir.txt", ".."] {
        let path = dir.path().join("escape.yaml");
        std::fs::write(
            &path,
            format!(
                "name: escape\nstages:\n  - name: s\n    image: {IMAGE}\n    outputs: [\"{bad}\"]\n"
            ),
        )
        .unwrap();
        let out = std::process::Command::new(cluster::VISHWA)
            .args(["validate", path.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(
            stderr.contains(&format!("output `{bad}`")) && stderr.contains("escape.yaml:5"),
            "{bad}: {stderr}"
        );
    }
}

/// Three cacheable stages: `prep` uses `rows`, `train` uses what prep made and `seed`,
/// `side` uses only `seed`.
fn cache_dag(dag: &str) -> String {
    format!(
        r#"name: {dag}
params:
  rows: 10
  seed: 1
stages:
  - name: prep
    image: {IMAGE}
    cache: true
    outputs: [data.txt]
    command: 'echo "rows={{{{ params.rows }}}}" > /vishwa/out/data.txt'
  - name: train
    needs: [prep]
    image: {IMAGE}
    cache: true
    outputs: [model.txt]
    command: 'rows=$(cut -d= -f2 /vishwa/in/prep/data.txt) && cp /vishwa/in/prep/data.txt /vishwa/out/model.txt && echo "{{\"acc\": 0.$rows, \"seed\": {{{{ params.seed }}}}}}" > /vishwa/out/metrics.json'
  - name: side
    image: {IMAGE}
    cache: true
    outputs: [s.txt]
    command: 'echo "seed={{{{ params.seed }}}}" > /vishwa/out/s.txt'
"#
    )
}

fn cache_of(view: &Value, name: &str) -> (bool, String, usize) {
    let s = stage(view, name);
    let cache = &s["cache"];
    assert!(cache.is_object(), "stage {name} has no cache note: {s:#}");
    let hit = cache["hit"].as_bool().unwrap();
    let said = if hit {
        cache["from_run"].as_str().unwrap().to_owned()
    } else {
        cache["reason"].as_str().unwrap().to_owned()
    };
    (hit, said, s["attempts"].as_array().unwrap().len())
}

#[test]
fn identical_runs_hit_the_cache_and_changes_miss_exactly_where_they_should() {
    let (cluster, _a, _b) = two_worker_cluster();
    let dag = cluster.name("cached");
    cluster.submit("cached.yaml", &cache_dag(&dag));

    let first = cluster.trigger(&dag, &[]);
    let v1 = finish(&cluster, &first);
    assert_eq!(v1["state"], "succeeded", "{v1:#}");
    for name in ["prep", "train", "side"] {
        let (hit, reason, attempts) = cache_of(&v1, name);
        assert!(
            !hit && reason.starts_with("no entry for key"),
            "{name}: {reason}"
        );
        assert_eq!(attempts, 1);
    }

    // Identical: every stage is a hit, no attempt, no container, metrics carried over.
    let second = cluster.trigger(&dag, &[]);
    let v2 = finish(&cluster, &second);
    assert_eq!(v2["state"], "succeeded", "{v2:#}");
    for name in ["prep", "train", "side"] {
        let (hit, from, attempts) = cache_of(&v2, name);
        assert!(hit, "{name} missed: {from}");
        assert_eq!(from, first);
        assert_eq!(attempts, 0, "{name} ran although it was cached");
    }
    assert!(cluster.containers_of_run(&second).is_empty());
    assert_eq!(stage(&v2, "train")["metrics"]["acc"], 0.1);
    let table = cluster.vishwa(&["get", &second]).stdout;
    assert!(table.contains(&format!("cached from {first}")), "{table}");
    // Followed live, a hit reads as one, not as a bare success.
    let watched = cluster.vishwa(&["trigger", &dag, "--watch"]).stdout;
    for name in ["prep", "train", "side"] {
        assert!(
            watched.lines().any(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                words.get(1) == Some(&name)
                    && words.get(2) == Some(&"cached")
                    && l.ends_with(&format!("(from run {first})"))
            }),
            "{name} not shown as cached:\n{watched}"
        );
    }
    let list: Value =
        serde_json::from_str(&cluster.vishwa(&["artifacts", &second, "-o", "json"]).stdout)
            .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 3, "{list:#}");
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|a| a["cached_from"] == first.as_str())
    );

    // `rows` changes prep's command; train misses through prep's new output; side hits.
    let third = cluster.trigger(&dag, &["rows=20"]);
    let v3 = finish(&cluster, &third);
    assert_eq!(v3["state"], "succeeded", "{v3:#}");
    let (hit, reason, _) = cache_of(&v3, "prep");
    assert!(!hit && reason.contains("params changed (rows)"), "{reason}");
    let (hit, reason, attempts) = cache_of(&v3, "train");
    assert!(
        !hit && reason.contains("input prep/data.txt changed"),
        "{reason}"
    );
    assert!(!reason.contains("params changed"), "{reason}");
    assert_eq!(attempts, 1);
    let (hit, from, attempts) = cache_of(&v3, "side");
    assert!(hit && attempts == 0, "side: {from}");
    assert_eq!(stage(&v3, "train")["metrics"]["acc"], 0.2);

    // --no-cache runs everything and says why.
    let out = cluster.vishwa(&["trigger", &dag, "--no-cache", "-o", "json"]);
    let fourth = cluster::run_id_of(&out.stdout);
    cluster.track_run(&fourth);
    let v4 = finish(&cluster, &fourth);
    for name in ["prep", "train", "side"] {
        let (hit, reason, attempts) = cache_of(&v4, name);
        assert!(!hit && reason.contains("--no-cache"), "{name}: {reason}");
        assert_eq!(attempts, 1);
    }

    // compare: params and metrics side by side, `-` where a run has no value.
    let compare = cluster.vishwa(&["compare", &first, &third]).stdout;
    let line = |prefix: &str| {
        compare
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} row in\n{compare}"))
            .split_whitespace()
            .skip(1)
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(line("params.rows"), ["10", "20"]);
    assert_eq!(line("params.seed"), ["1", "1"]);
    assert_eq!(line("train.acc"), ["0.1", "0.2"]);
    assert!(compare.lines().next().unwrap().contains(&first));
    let json: Value = serde_json::from_str(
        &cluster
            .vishwa(&["compare", &first, &third, "-o", "json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(json[1]["metrics"]["train"]["acc"], 0.2);
}

#[test]
fn process_stages_pass_outputs_through_vishwa_in_and_out_in_an_embedded_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("local.yaml");
    std::fs::write(
        &path,
        r#"name: local-artifacts
stages:
  - name: make
    executor: process
    outputs: [note.txt]
    command: 'echo "made locally" > "$VISHWA_OUT/note.txt" && echo "{\"score\": 7}" > "$VISHWA_OUT/metrics.json"'
  - name: use
    needs: [make]
    executor: process
    command: 'grep -q "made locally" "$VISHWA_IN/make/note.txt"'
"#,
    )
    .unwrap();
    let data = dir.path().join("data");
    let out = std::process::Command::new(cluster::VISHWA)
        .args([
            "run",
            path.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("stored output note.txt"), "{stdout}");
    // The blob is in the scheduler's data dir, content-addressed.
    use sha2::Digest as _;
    let digest = hex::encode(sha2::Sha256::digest(b"made locally\n"));
    let blob = data
        .join("artifacts/sha256")
        .join(&digest[..2])
        .join(&digest[2..]);
    assert_eq!(std::fs::read(blob).unwrap(), b"made locally\n");
}
