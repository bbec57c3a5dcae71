//! Placement across machines: a scheduler and three workers, each worker in its own network
//! namespace (its own address) with its own cache directory, labels and capacity. A bundle
//! submitted with `vishwa submit DIR` reaches each worker over gRPC only, every stage lands
//! on a worker that fits its selector and resources, a stage no worker fits fails with the
//! reason, and a stage waiting for a busy worker runs once it is free.

mod cluster;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cluster::netns::NetNs;
use cluster::{Cluster, ClusterConfig, IMAGE, RunView, now_ms};
use serde_json::Value;

/// How long a run of this file may take.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// One worker: its pool label and the capacity it declares.
struct Machine {
    pool: &'static str,
    slots: u32,
    cpus: &'static str,
    memory: &'static str,
    gpus: &'static str,
}

const MACHINES: [Machine; 3] = [
    Machine {
        pool: "cpu",
        slots: 2,
        cpus: "2",
        memory: "4Gi",
        gpus: "none",
    },
    Machine {
        pool: "gpu",
        slots: 2,
        cpus: "1.5",
        memory: "8Gi",
        gpus: "0,1",
    },
    Machine {
        pool: "edge",
        slots: 1,
        cpus: "0.5",
        memory: "512Mi",
        gpus: "none",
    },
];

/// A scheduler reachable from three network namespaces and a worker in each. The
/// namespaces are returned first so they outlive the cluster when dropped in order.
struct Site {
    cluster: Cluster,
    /// Worker name by pool.
    workers: BTreeMap<&'static str, String>,
    _namespaces: Vec<NetNs>,
}

fn site() -> Site {
    // Each namespace gets its own /30: tests of this process draw consecutive seeds from
    // one base (two sites built in the same millisecond must not share a link).
    static BASE: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = *BASE.get_or_init(|| std::process::id() ^ (now_ms() as u32).rotate_left(7));
    let seed = base.wrapping_add(NEXT.fetch_add(3, Ordering::Relaxed));
    let namespaces: Vec<NetNs> = (0..3)
        .map(|i| {
            let ns = NetNs::create(
                &format!("{}p{i}", cluster::unique_suffix()),
                seed.wrapping_add(i),
            );
            ns.route_via_host();
            ns
        })
        .collect();
    // The scheduler listens on the host end of the first namespace's link; the others reach
    // it through their route to the host.
    let cluster = Cluster::with_config(ClusterConfig {
        listen_ip: namespaces[0].host_ip,
        ..ClusterConfig::default()
    });
    cluster.start_scheduler();
    let mut workers = BTreeMap::new();
    for (machine, ns) in MACHINES.iter().zip(&namespaces) {
        let name = cluster.name(machine.pool);
        let cache = worker_dir(&cluster, &name);
        let label = format!("pool={}", machine.pool);
        cluster.start_worker_in(
            Some(&ns.name),
            &name,
            machine.slots,
            &[
                "--label",
                &label,
                "--cpus",
                machine.cpus,
                "--memory",
                machine.memory,
                "--gpus",
                machine.gpus,
                "--cache",
                cache.to_str().unwrap(),
            ],
        );
        workers.insert(machine.pool, name);
    }
    Site {
        cluster,
        workers,
        _namespaces: namespaces,
    }
}

/// A directory of this worker's own: nothing is shared between workers.
fn worker_dir(cluster: &Cluster, name: &str) -> PathBuf {
    let dir = cluster.dir().join(format!("machine-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The script every stage runs from its bundle: it fails unless the bundle's files are there.
const CHECK_SH: &str = r#"set -eu
test -f /vishwa/dag/dag.yaml
test "$(cat /vishwa/dag/data/token.txt)" = "bundle-$1"
echo "stage $VISHWA_STAGE found the bundle in $(pwd): $(cat data/token.txt)"
"#;

/// Writes a bundle folder (dag.yaml, check.sh, data/token.txt) and returns it.
fn write_bundle(cluster: &Cluster, folder: &str, dag: &str, token: &str) -> PathBuf {
    let dir = cluster.dir().join(folder);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("dag.yaml"), dag).unwrap();
    std::fs::write(dir.join("check.sh"), CHECK_SH).unwrap();
    std::fs::write(dir.join("data/token.txt"), format!("bundle-{token}")).unwrap();
    dir
}

fn submit_bundle(cluster: &Cluster, dir: &Path) {
    cluster.vishwa(&["submit", dir.to_str().unwrap()]);
}

/// The workers as `vishwa workers -o json` lists them, by name.
fn registered_workers(cluster: &Cluster) -> BTreeMap<String, Value> {
    let out = cluster.vishwa(&["workers", "-o", "json"]);
    let list: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON from vishwa workers ({e}): {}", out.stdout));
    list.as_array()
        .unwrap_or_else(|| panic!("vishwa workers: {list}"))
        .iter()
        .map(|w| (w["name"].as_str().unwrap().to_owned(), w.clone()))
        .collect()
}

/// What a stage asks for: a label selector and resources.
struct Ask {
    stage: &'static str,
    selector: &'static [(&'static str, &'static str)],
    cpus: f64,
    memory_bytes: u64,
}

const MIB: u64 = 1 << 20;

/// Stages pinned by label, and stages that only one worker's capacity fits.
const ASKS: [Ask; 5] = [
    Ask {
        stage: "prepare",
        selector: &[("pool", "cpu")],
        cpus: 1.0,
        memory_bytes: 256 * MIB,
    },
    Ask {
        stage: "train",
        selector: &[("pool", "gpu")],
        cpus: 1.0,
        memory_bytes: 2048 * MIB,
    },
    Ask {
        stage: "serve",
        selector: &[("pool", "edge")],
        cpus: 0.25,
        memory_bytes: 128 * MIB,
    },
    // Only the gpu worker has 6Gi of memory.
    Ask {
        stage: "big-memory",
        selector: &[],
        cpus: 0.5,
        memory_bytes: 6144 * MIB,
    },
    // Only the cpu worker has 1.8 cpus (Docker refuses more cpus than the host has, 2 here).
    Ask {
        stage: "many-cpus",
        selector: &[],
        cpus: 1.8,
        memory_bytes: 64 * MIB,
    },
];

fn placement_dag(name: &str) -> String {
    let mut yaml = format!(
        "name: {name}\ndefaults:\n  image: {IMAGE}\n  command: [sh, check.sh, placed]\nstages:\n"
    );
    for ask in &ASKS {
        yaml.push_str(&format!(
            "  - name: {}\n    resources: {{cpus: {}, memory: {}Mi}}\n",
            ask.stage,
            ask.cpus,
            ask.memory_bytes / MIB
        ));
        if !ask.selector.is_empty() {
            let labels: Vec<String> = ask
                .selector
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            yaml.push_str(&format!("    worker: {{{}}}\n", labels.join(", ")));
        }
        if ask.stage == "serve" {
            yaml.push_str("    needs: [train, prepare]\n");
        }
    }
    yaml
}

/// Whether worker `w` (as `vishwa workers` shows it) fits `ask` on labels and capacity.
fn fits(w: &Value, ask: &Ask) -> bool {
    let labels_match = ask
        .selector
        .iter()
        .all(|(k, v)| w["labels"][*k].as_str() == Some(*v));
    labels_match
        && w["cpus"].as_f64().unwrap_or(0.0) >= ask.cpus
        && w["memory_bytes"].as_u64().unwrap_or(0) >= ask.memory_bytes
}

#[test]
fn stages_run_on_workers_that_fit_their_labels_and_resources_with_the_bundle_present() {
    let site = site();
    let cluster = &site.cluster;
    let dag = cluster.name("placed");
    let bundle = write_bundle(cluster, "placed-bundle", &placement_dag(&dag), "placed");
    submit_bundle(cluster, &bundle);
    let run = cluster.trigger(&dag, &[]);
    let view = cluster.wait_run_final(&run, RUN_LIMIT);
    assert_eq!(view.state, "succeeded", "{}", view.summary());

    let workers = registered_workers(cluster);
    for (pool, name) in &site.workers {
        let worker = workers
            .get(name)
            .unwrap_or_else(|| panic!("worker {name} is not listed"));
        assert_eq!(worker["labels"]["pool"], *pool, "{worker}");
        let gpus = if *pool == "gpu" {
            vec!["0", "1"]
        } else {
            vec![]
        };
        assert_eq!(worker["gpus"], serde_json::json!(gpus), "{worker}");
    }
    let expected = BTreeMap::from([
        ("prepare", "cpu"),
        ("train", "gpu"),
        ("serve", "edge"),
        ("big-memory", "gpu"),
        ("many-cpus", "cpu"),
    ]);
    for ask in &ASKS {
        let stage = view.stage(ask.stage);
        assert_eq!(stage.attempts.len(), 1, "{}", view.summary());
        let ran_on = &stage.attempts[0].worker;
        let worker = &workers[ran_on];
        assert!(
            fits(worker, ask),
            "stage {} ran on {ran_on}, which does not fit it: {worker}",
            ask.stage
        );
        assert_eq!(
            ran_on, &site.workers[expected[ask.stage]],
            "stage {} is placed on the only worker that fits it",
            ask.stage
        );
        // No other worker fits, so the check above is not luck.
        let fitting: Vec<&String> = workers
            .iter()
            .filter(|(_, w)| fits(w, ask))
            .map(|(n, _)| n)
            .collect();
        assert_eq!(fitting, [ran_on], "stage {}", ask.stage);
        let logs = cluster.vishwa(&["logs", &run, ask.stage]);
        assert_eq!(
            logs.stdout,
            format!(
                "stage {} found the bundle in /vishwa/dag: bundle-placed\n",
                ask.stage
            ),
            "{logs}"
        );
    }
    // Each worker fetched the bundle into its own cache; nothing else put it there.
    for name in site.workers.values() {
        let cache = worker_dir(cluster, name);
        let fetched = std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
        assert!(
            fetched > 0,
            "worker {name} cached no bundle in {}",
            cache.display()
        );
    }
}

fn limits_dag(name: &str) -> String {
    format!(
        r#"name: {name}
defaults:
  image: {IMAGE}
stages:
  - name: huge
    resources: {{cpus: 64}}
    command: [sh, check.sh, limits]
  - name: nowhere
    worker: {{pool: tpu}}
    command: [sh, check.sh, limits]
  - name: first-on-edge
    worker: {{pool: edge}}
    command: [sh, -c, "sh check.sh limits && sleep 3"]
  - name: second-on-edge
    worker: {{pool: edge}}
    command: [sh, -c, "sh check.sh limits && sleep 3"]
"#
    )
}

/// When an attempt started and finished, as `vishwa get` shows them (RFC 3339, UTC, ms).
fn span(view: &RunView, stage: &str) -> (String, String) {
    let s = view.stage(stage);
    assert_eq!(s.state, "succeeded", "{}", view.summary());
    assert_eq!(s.attempts.len(), 1, "{}", view.summary());
    let a = &s.attempts[0];
    (
        a.started.clone().expect("started"),
        a.finished.clone().expect("finished"),
    )
}

#[test]
fn a_stage_no_worker_fits_fails_clearly_and_a_stage_waits_for_a_busy_worker() {
    let site = site();
    let cluster = &site.cluster;
    let dag = cluster.name("limits");
    let bundle = write_bundle(cluster, "limits-bundle", &limits_dag(&dag), "limits");
    submit_bundle(cluster, &bundle);
    let run = cluster.trigger(&dag, &[]);
    let edge = &site.workers["edge"];

    // The edge worker has one slot: while one pinned stage runs there, the other waits.
    let pinned = ["first-on-edge", "second-on-edge"];
    cluster.wait_run(&run, RUN_LIMIT, "one edge stage running, one queued", |v| {
        let queued = pinned
            .iter()
            .filter(|s| v.stage(s).state == "queued")
            .count();
        v.running_on(edge).len() == 1 && queued == 1
    });

    let view = cluster.wait_run_final(&run, RUN_LIMIT);
    assert_eq!(view.state, "failed", "{}", view.summary());
    for stage in ["huge", "nowhere"] {
        let s = view.stage(stage);
        assert_eq!(s.state, "failed", "{}", view.summary());
        assert!(
            s.attempts.is_empty(),
            "{stage} never started: {}",
            view.summary()
        );
        let message = s.message.clone().unwrap_or_default();
        assert!(
            message.starts_with(&format!("no worker can run stage {stage}: ")),
            "{message}"
        );
        for worker in site.workers.values() {
            assert!(
                message.contains(worker.as_str()),
                "names {worker}: {message}"
            );
        }
    }
    let get = cluster.vishwa(&["get", &run]);
    assert!(
        get.stdout.contains("no worker can run stage huge"),
        "vishwa get says why: {}",
        get.stdout
    );

    // Both edge stages succeeded on the edge worker, one after the other.
    let mut spans = [span(&view, "first-on-edge"), span(&view, "second-on-edge")];
    for stage in pinned {
        assert_eq!(&view.stage(stage).attempts[0].worker, edge);
    }
    spans.sort();
    assert!(
        spans[1].0 >= spans[0].1,
        "the second started ({}) only after the first finished ({})",
        spans[1].0,
        spans[0].1
    );
}
