//! Issue 3, workers dying: killed with SIGKILL (and never restarted, or restarted), cut off
//! from the scheduler past their lease, and stopped with SIGTERM. Real processes, real Docker.

mod cluster;

use std::time::Duration;

use cluster::dags::layered_dag;
use cluster::{Cluster, RunView};

/// Every stage succeeded, and exactly once: one attempt that exited 0, and it is the last.
fn assert_every_stage_succeeded_once(view: &RunView) {
    assert_eq!(view.state, "succeeded", "{}", view.summary());
    for stage in &view.stages {
        assert_eq!(stage.state, "succeeded", "{}", view.summary());
        assert_eq!(
            stage.completions(),
            1,
            "stage {} must have exactly one recorded completion\n{}",
            stage.name,
            view.summary()
        );
        let last = stage.attempts.last().expect("a succeeded stage ran");
        assert_eq!(last.exit_code, Some(0), "{}", view.summary());
    }
}

#[test]
fn a_worker_killed_mid_run_loses_its_attempts_and_they_run_again_elsewhere_within_the_lease() {
    let cluster = Cluster::new();
    cluster.start_scheduler();
    let workers: Vec<String> = (1..=3).map(|i| cluster.name(&format!("w{i}"))).collect();
    for w in &workers {
        cluster.start_worker(w, 4, &[]);
    }
    let dag = cluster.name("wide");
    cluster.submit("wide.yaml", &layered_dag(&dag, 4, 50));
    let run = cluster.trigger(&dag, &[]);
    let victim = &workers[1];

    cluster.wait_run(
        &run,
        Duration::from_secs(120),
        "the victim running an attempt mid-run",
        |v| v.count("succeeded") >= 30 && !v.running_on(victim).is_empty(),
    );
    let killed_ms = cluster.kill_worker(victim);
    let view = cluster.wait_run_final(&run, Duration::from_secs(240));

    assert_eq!(view.stages.len(), 200);
    assert_every_stage_succeeded_once(&view);
    let lease_ms = cluster.config.lease.as_millis() as i64;
    let mut lost = 0;
    for (stage, attempt) in view.attempts().filter(|(_, a)| &a.worker == victim) {
        match attempt.outcome.as_str() {
            "succeeded" => assert!(
                attempt.finished_ms().unwrap() <= killed_ms + 1_000,
                "{} succeeded on the killed worker after its death\n{}",
                stage.name,
                view.summary()
            ),
            "lost" => {
                lost += 1;
                let why = attempt.message.as_deref().unwrap_or_default();
                assert!(
                    why.contains("stopped heartbeating") || why.contains("disconnected"),
                    "a lost attempt says why: {why:?}\n{}",
                    view.summary()
                );
                let next = stage
                    .attempts
                    .iter()
                    .find(|a| a.number == attempt.number + 1)
                    .unwrap_or_else(|| panic!("lost {} never ran again", stage.name));
                assert_ne!(&next.worker, victim, "{}", view.summary());
                let redispatched = next.started_ms().unwrap() - killed_ms;
                assert!(
                    redispatched <= lease_ms + 10_000,
                    "{} ran again {redispatched} ms after the kill (lease {lease_ms} ms)\n{}",
                    stage.name,
                    view.summary()
                );
            }
            other => panic!(
                "attempt of {} on the killed worker ended {other}\n{}",
                stage.name,
                view.summary()
            ),
        }
    }
    assert!(
        lost >= 1,
        "the killed worker ran at least one attempt, which must be lost\n{}",
        view.summary()
    );

    // The live workers removed their containers. The killed worker's containers run on
    // (nobody is left to stop them) until their short stages exit; they stay behind, exited,
    // until a worker of that name starts again and removes them.
    let others_clean = cluster::wait_until(Duration::from_secs(20), || {
        cluster
            .containers_of_run(&run)
            .iter()
            .all(|c| label(c, "vishwa.worker") == Some(victim.as_str()))
    });
    assert!(others_clean, "live workers left containers behind");
    let victims_exited = cluster::wait_until(Duration::from_secs(20), || {
        cluster
            .containers_of_run(&run)
            .iter()
            .all(|c| c.state.as_ref().map(|s| s.to_string()).as_deref() != Some("running"))
    });
    assert!(victims_exited, "the killed worker's containers did not exit");
    cluster.restart_worker(victim);
    assert!(
        cluster.wait_no_containers_of_run(&run, Duration::from_secs(20)),
        "the restarted worker did not remove what it left behind: {:?}",
        cluster.containers_of_run(&run)
    );
}

fn label<'a>(c: &'a bollard::models::ContainerSummary, key: &str) -> Option<&'a str> {
    c.labels.as_ref()?.get(key).map(String::as_str)
}
