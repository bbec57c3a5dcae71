//! Issue 3, workers dying: killed with SIGKILL (and never restarted, or restarted), cut off
//! from the scheduler past their lease, and stopped with SIGTERM. Real processes, real Docker.

mod cluster;

use std::time::Duration;

use cluster::dags::{layered_dag, one_stage_dag, yaml_string};
use cluster::netns::NetNs;
use cluster::{Cluster, ClusterConfig, IMAGE, RunView, now_ms, wait_until};
use nix::sys::signal::Signal;

/// A stage that sleeps two minutes on its first attempt only, so a second attempt finishes
/// at once.
const SLOW_FIRST_ATTEMPT: &str = r#"if [ "$VISHWA_ATTEMPT" = 1 ]; then sleep 120; fi; echo done"#;

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
    let others_clean = wait_until(Duration::from_secs(20), || {
        cluster
            .containers_of_run(&run)
            .iter()
            // Containers are labelled `name@scheduler`.
            .all(|c| {
                label(c, "vishwa.worker")
                    .is_some_and(|owner| owner.split('@').next() == Some(victim.as_str()))
            })
    });
    assert!(others_clean, "live workers left containers behind");
    let victims_exited = wait_until(Duration::from_secs(20), || {
        cluster
            .containers_of_run(&run)
            .iter()
            .all(|c| c.state.as_ref().map(|s| s.to_string()).as_deref() != Some("running"))
    });
    assert!(
        victims_exited,
        "the killed worker's containers did not exit"
    );
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

fn container_running(cluster: &Cluster, attempt: &str) -> bool {
    cluster
        .containers_of_attempt(attempt)
        .iter()
        .any(|c| c.state.as_ref().map(|s| s.to_string()).as_deref() == Some("running"))
}

/// Waits until attempt 1 of the run's only stage runs on `worker` in a container that Docker
/// says is running; returns the attempt id.
fn wait_first_attempt_running(cluster: &Cluster, run: &str, worker: &str) -> String {
    let view = cluster.wait_run(run, Duration::from_secs(60), "attempt 1 running", |v| {
        v.running_on(worker).len() == 1
    });
    let attempt = view.stages[0].attempts[0].id.clone();
    assert!(
        wait_until(Duration::from_secs(30), || container_running(
            cluster, &attempt
        )),
        "the container of attempt 1 never ran"
    );
    attempt
}

#[test]
fn a_worker_cut_off_past_its_lease_loses_its_stage_and_its_container_is_stopped_when_it_returns() {
    let seed = std::process::id() ^ now_ms() as u32;
    let ns = NetNs::create(&cluster::unique_suffix(), seed);
    let cluster = Cluster::with_config(ClusterConfig {
        listen_ip: ns.host_ip,
        ..ClusterConfig::default()
    });
    cluster.start_scheduler();
    let far = cluster.name("far");
    cluster.start_worker_in(Some(&ns.name), &far, 1, &[]);
    let dag = cluster.name("cutoff");
    cluster.submit(
        "cutoff.yaml",
        &one_stage_dag(&dag, "work", SLOW_FIRST_ATTEMPT),
    );
    let run = cluster.trigger(&dag, &[]);
    let first = wait_first_attempt_running(&cluster, &run, &far);
    let near = cluster.name("near");
    cluster.start_worker(&near, 1, &[]);

    ns.link_down();
    let view = cluster.wait_run_final(&run, Duration::from_secs(60));
    assert_every_stage_succeeded_once(&view);
    let attempts = &view.stage("work").attempts;
    assert_eq!(attempts.len(), 2, "{}", view.summary());
    assert_eq!(
        (attempts[0].worker.as_str(), attempts[0].outcome.as_str()),
        (far.as_str(), "lost"),
        "{}",
        view.summary()
    );
    assert!(
        attempts[0]
            .message
            .as_deref()
            .is_some_and(|m| m.contains("stopped heartbeating")),
        "{}",
        view.summary()
    );
    assert_eq!(attempts[1].worker, near);
    // Cut off, the far worker cannot know: its container still runs.
    assert!(
        container_running(&cluster, &first),
        "the cut-off worker's container should still run until it hears from the scheduler"
    );

    ns.link_up();
    let back = std::time::Instant::now();
    let stopped = wait_until(Duration::from_secs(30), || {
        cluster.containers_of_attempt(&first).is_empty()
    });
    assert!(
        stopped,
        "the late worker's container was not stopped: {:?}",
        cluster.containers_of_attempt(&first)
    );
    eprintln!(
        "the late worker stopped its container {:?} after the link came back",
        back.elapsed()
    );
    assert!(
        cluster
            .worker_log(&far)
            .contains("the scheduler no longer considers it current"),
        "the far worker was told its attempt is stale:\n{}",
        cluster.worker_log(&far)
    );
    // Its late report changed nothing: still one completion, attempt 1 still lost.
    let after = cluster.get(&run);
    assert_every_stage_succeeded_once(&after);
    let attempts = &after.stage("work").attempts;
    assert_eq!(attempts.len(), 2, "{}", after.summary());
    assert_eq!(attempts[0].outcome, "lost", "{}", after.summary());
}

#[test]
fn a_worker_killed_and_restarted_while_its_container_runs_removes_it_and_the_stage_runs_again() {
    let cluster = Cluster::new();
    cluster.start_scheduler();
    let worker = cluster.name("phoenix");
    cluster.start_worker(&worker, 1, &[]);
    let dag = cluster.name("phoenix");
    cluster.submit(
        "phoenix.yaml",
        &one_stage_dag(&dag, "work", SLOW_FIRST_ATTEMPT),
    );
    let run = cluster.trigger(&dag, &[]);
    let first = wait_first_attempt_running(&cluster, &run, &worker);

    cluster.kill_worker(&worker);
    assert!(
        container_running(&cluster, &first),
        "the killed worker's container runs on, orphaned"
    );
    cluster.restart_worker(&worker);
    assert!(
        wait_until(Duration::from_secs(10), || cluster
            .containers_of_attempt(&first)
            .is_empty()),
        "the restarted worker left its old container: {:?}",
        cluster.containers_of_attempt(&first)
    );
    let view = cluster.wait_run_final(&run, Duration::from_secs(60));
    assert_every_stage_succeeded_once(&view);
    let attempts = &view.stage("work").attempts;
    assert_eq!(attempts.len(), 2, "{}", view.summary());
    assert_eq!(attempts[0].outcome, "lost", "{}", view.summary());
    let why = attempts[0].message.as_deref().unwrap_or_default();
    assert!(
        why.contains("came back without it") || why.contains("stopped heartbeating"),
        "{}",
        view.summary()
    );
    assert_eq!(attempts[1].worker, worker);
    assert!(
        cluster.wait_no_containers_of_run(&run, Duration::from_secs(10)),
        "containers left: {:?}",
        cluster.containers_of_run(&run)
    );
}

#[test]
fn a_worker_stopped_with_sigterm_finishes_a_stage_shorter_than_its_grace_and_takes_nothing_new() {
    let cluster = Cluster::new();
    cluster.start_scheduler();
    let leaving = cluster.name("leaving");
    cluster.start_worker(&leaving, 1, &["--grace", "20s"]);
    let dag = cluster.name("drain");
    let script = yaml_string("sleep 3; echo done");
    cluster.submit(
        "drain.yaml",
        &format!(
            "name: {dag}\ndefaults: {{image: {IMAGE}}}\nstages:\n  - {{name: one, command: {script}}}\n  - {{name: two, command: {script}}}\n"
        ),
    );
    let run = cluster.trigger(&dag, &[]);
    let view = cluster.wait_run(&run, Duration::from_secs(60), "a stage running", |v| {
        v.running_on(&leaving).len() == 1
    });
    let (held, attempt) = view
        .attempts()
        .find(|(_, a)| a.outcome == "running")
        .map(|(s, a)| (s.name.clone(), a.id.clone()))
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || container_running(
        &cluster, &attempt
    )));

    cluster.signal_worker(&leaving, Signal::SIGTERM);
    let status = cluster
        .wait_worker_exit(&leaving, Duration::from_secs(25))
        .expect("the draining worker did not exit within its grace");
    let exited_ms = now_ms();
    assert!(
        status.success(),
        "the worker exits 0 after draining: {status}"
    );

    // The stage it held finished there before it left; the other one waited for a worker.
    let view = cluster.get(&run);
    let stage = view.stage(&held);
    assert_eq!(stage.state, "succeeded", "{}", view.summary());
    assert_eq!(stage.attempts.len(), 1, "{}", view.summary());
    assert_eq!(stage.attempts[0].worker, leaving);
    assert!(stage.attempts[0].finished_ms().unwrap() <= exited_ms);
    let other = view.stages.iter().find(|s| s.name != held).unwrap();
    assert!(
        other.attempts.is_empty(),
        "a draining worker took a new stage\n{}",
        view.summary()
    );

    let staying = cluster.name("staying");
    cluster.start_worker(&staying, 1, &[]);
    let view = cluster.wait_run_final(&run, Duration::from_secs(60));
    assert_every_stage_succeeded_once(&view);
    let other = view.stages.iter().find(|s| s.name != held).unwrap();
    assert_eq!(other.attempts.len(), 1, "{}", view.summary());
    assert_eq!(other.attempts[0].worker, staying);
}

#[test]
fn a_worker_stopped_with_sigterm_stops_a_stage_longer_than_its_grace_and_it_runs_again_elsewhere() {
    let cluster = Cluster::new();
    cluster.start_scheduler();
    let leaving = cluster.name("leaving");
    cluster.start_worker(&leaving, 1, &["--grace", "2s"]);
    let dag = cluster.name("overstay");
    cluster.submit(
        "overstay.yaml",
        &one_stage_dag(&dag, "work", SLOW_FIRST_ATTEMPT),
    );
    let run = cluster.trigger(&dag, &[]);
    let first = wait_first_attempt_running(&cluster, &run, &leaving);
    let staying = cluster.name("staying");
    cluster.start_worker(&staying, 1, &[]);

    let signalled = std::time::Instant::now();
    cluster.signal_worker(&leaving, Signal::SIGTERM);
    let status = cluster
        .wait_worker_exit(&leaving, Duration::from_secs(20))
        .expect("the worker did not exit after its grace");
    let took = signalled.elapsed();
    assert!(status.success(), "the worker exits 0: {status}");
    assert!(
        took >= Duration::from_millis(1_900),
        "the worker left before its grace was over ({took:?})"
    );
    assert!(
        cluster.containers_of_attempt(&first).is_empty(),
        "the stopped attempt's container is gone"
    );

    let view = cluster.wait_run_final(&run, Duration::from_secs(60));
    assert_every_stage_succeeded_once(&view);
    let attempts = &view.stage("work").attempts;
    assert_eq!(attempts.len(), 2, "{}", view.summary());
    // Reported by the worker as stopped (not lost to an expired lease), then run elsewhere.
    assert_eq!(
        (attempts[0].worker.as_str(), attempts[0].outcome.as_str()),
        (leaving.as_str(), "cancelled"),
        "{}",
        view.summary()
    );
    assert_eq!(attempts[1].worker, staying);
}

/// Issue 10, defect 9: a second `vishwa worker` under a live worker's name is refused with
/// a clear message and exits; the live one keeps its running container and finishes.
#[test]
fn a_second_worker_under_a_live_workers_name_is_refused_and_the_first_runs_on() {
    let cluster = Cluster::new();
    cluster.start_scheduler();
    let worker = cluster.name("twin");
    cluster.start_worker(&worker, 1, &[]);
    let dag = cluster.name("twin");
    cluster.submit(
        "twin.yaml",
        &one_stage_dag(&dag, "work", "sleep 4; echo done"),
    );
    let run = cluster.trigger(&dag, &[]);
    let first = wait_first_attempt_running(&cluster, &run, &worker);

    let mut twin = std::process::Command::new(cluster::VISHWA)
        .args(["worker", "--scheduler", &cluster.url, "--name", &worker])
        .args(["--slots", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cannot start the second worker");
    let exited = wait_until(Duration::from_secs(20), || {
        twin.try_wait().ok().flatten().is_some()
    });
    if !exited {
        let _ = twin.kill();
    }
    let out = twin.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(exited, "the second worker kept running: {stderr}");
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("worker name `{worker}` is taken")) && stderr.contains("--name"),
        "{stderr}"
    );
    assert!(
        container_running(&cluster, &first),
        "the live worker's container was touched"
    );
    let view = cluster.wait_run_final(&run, Duration::from_secs(60));
    assert_every_stage_succeeded_once(&view);
    assert_eq!(view.stage("work").attempts.len(), 1, "{}", view.summary());
}
