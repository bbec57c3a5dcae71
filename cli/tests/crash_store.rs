//! Issue 3, the store under a crash loop: the scheduler killed with SIGKILL 50 times at
//! random moments while a worker runs process stages and runs are triggered all along.
//! After every kill the sled store is opened straight from disk and checked: it opens, every
//! run has exactly its plan's stage records, no stage is in two states, counters match the
//! attempts, acknowledged triggers are there, and nothing durable went back.

mod cluster;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cluster::invariants::{Snapshot, check_progress, check_store};
use cluster::{Cluster, seed};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vishwa_scheduler::ids::RunId;
use vishwa_scheduler::run::RunState;

/// Kills per run of the test; `VISHWA_CRASH_KILLS` asks for more (a longer soak).
fn kills() -> usize {
    std::env::var("VISHWA_CRASH_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(50)
}

fn churn_dag(name: &str) -> String {
    let items: Vec<String> = (0..16).map(|i| i.to_string()).collect();
    format!(
        "name: {name}\ndefaults:\n  executor: process\n  command: \"true\"\nstages:\n  - name: head\n  - name: fan\n    needs: [head]\n    for_each: [{}]\n  - name: join\n    needs: [fan]\n  - name: tail\n    needs: [join]\n",
        items.join(", ")
    )
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn fifty_scheduler_kills_under_steady_writes_leave_a_consistent_store_every_time() {
    let seed = seed();
    let kills = kills();
    let mut rng = StdRng::seed_from_u64(seed);
    let cluster = Cluster::new();
    cluster.start_scheduler();
    let worker = cluster.name("w");
    cluster.start_worker(&worker, 8, &["--allow-process"]);
    let dag = cluster.name("churn");
    cluster.submit("churn.yaml", &churn_dag(&dag));

    // Runs the scheduler acknowledged: each must be in the store after any later crash.
    let acknowledged: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let mut earlier = Snapshot::default();
    let started = Instant::now();
    std::thread::scope(|scope| {
        // Stops the trigger thread however this scope ends: the scope waits for it, and a
        // failed check must end the test, not hang it.
        let _stop = StopOnDrop(&stop);
        scope.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                let out = cluster.try_vishwa(&["trigger", &dag, "-o", "json"]);
                if out.ok() {
                    let run = cluster::run_id_of(&out.stdout);
                    acknowledged.lock().unwrap().push(run);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        for kill in 1..=kills {
            // Mostly while it serves; now and then while it is still opening the store or
            // resuming runs.
            if rng.random_bool(0.2) {
                std::thread::sleep(Duration::from_millis(rng.random_range(0..300)));
            } else {
                cluster.wait_scheduler_serving();
                std::thread::sleep(Duration::from_millis(rng.random_range(100..800)));
            }
            let known: Vec<String> = acknowledged.lock().unwrap().clone();
            cluster.kill_scheduler();
            let now = {
                let (now, mut problems) = cluster.with_store(check_store);
                problems.extend(check_progress(&earlier, &now));
                for run in &known {
                    if !now.runs.contains_key(&RunId::from(run.as_str())) {
                        problems.push(format!("{run}: acknowledged, but not in the store"));
                    }
                }
                assert!(
                    problems.is_empty(),
                    "seed {seed}, kill {kill}: the store broke an invariant:\n{}",
                    problems.join("\n")
                );
                now
            };
            eprintln!(
                "kill {kill}: {} runs ({} succeeded, {} running, {} queued)",
                now.runs.len(),
                now.count(RunState::Succeeded),
                now.count(RunState::Running),
                now.count(RunState::Queued),
            );
            earlier = now;
            cluster.spawn_scheduler();
        }
    });
    eprintln!("{kills} kills in {:?}", started.elapsed());

    // Every acknowledged run finishes, and succeeds.
    cluster.wait_scheduler_serving();
    let runs = acknowledged.into_inner().unwrap();
    assert!(runs.len() >= 50, "only {} runs were triggered", runs.len());
    for run in &runs {
        let view = cluster.wait_run_final(run, Duration::from_secs(120));
        assert_eq!(view.state, "succeeded", "seed {seed}\n{}", view.summary());
    }
    cluster.kill_scheduler();
    let (now, mut problems) = cluster.with_store(check_store);
    problems.extend(check_progress(&earlier, &now));
    assert!(problems.is_empty(), "seed {seed}: {}", problems.join("\n"));
}
