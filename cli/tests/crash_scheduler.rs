//! Issue 3, the scheduler dying: killed with SIGKILL at random moments mid-run and restarted
//! on the same data dir, stopped with SIGTERM with clients attached, and followed through a
//! restart by `trigger --watch` and `logs -f`. Real processes, real Docker.

mod cluster;

use std::time::{Duration, Instant};

use cluster::dags::{TALK_LINES, layered_dag, talkative_dag};
use cluster::{Cluster, RunView, seed};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vishwa_scheduler::run::AttemptOutcome;

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
    }
}

#[test]
fn a_scheduler_killed_five_times_mid_run_finishes_it_with_one_completion_per_stage() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let cluster = Cluster::new();
    cluster.start_scheduler();
    for i in 1..=3 {
        cluster.start_worker(&cluster.name(&format!("w{i}")), 4, &[]);
    }
    let dag = cluster.name("wide");
    cluster.submit("wide.yaml", &layered_dag(&dag, 4, 50));
    let run = cluster.trigger(&dag, &[]);

    for kill in 1..=5 {
        std::thread::sleep(Duration::from_millis(rng.random_range(1_500..5_000)));
        let view = cluster.get(&run);
        assert!(
            !view.is_final(),
            "seed {seed}: the run ended before kill {kill}\n{}",
            view.summary()
        );
        cluster.kill_scheduler();
        std::thread::sleep(Duration::from_millis(rng.random_range(0..1_500)));
        cluster.start_scheduler();
        eprintln!(
            "seed {seed}: kill {kill} with {} of 200 stages succeeded",
            view.count("succeeded")
        );
    }
    let view = cluster.wait_run_final(&run, Duration::from_secs(300));
    assert_every_stage_succeeded_once(&view);

    // Whether an attempt's container had started is in the store (the worker reports the
    // container id); read it with the scheduler stopped.
    let (status, _) = cluster.term_scheduler(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    let (problems, stages) = cluster.with_store(|store| {
        let problems = cluster::invariants::check_store(store).1;
        let stages = vishwa_scheduler::store::Store::run_stages(store, &run.as_str().into())
            .expect("the run's stages are readable");
        (problems, stages)
    });
    assert!(problems.is_empty(), "seed {seed}: {}", problems.join("\n"));
    assert_eq!(stages.len(), 200);
    let mut lost = 0;
    for stage in &stages {
        for attempt in &stage.attempts {
            let AttemptOutcome::Lost { reason } = &attempt.outcome else {
                continue;
            };
            lost += 1;
            // A restart must not cost a running container: workers come back within the
            // lease and claim their attempts. The one loss a kill may cause is an attempt
            // whose dispatch was stored but whose task never reached the worker (the kill
            // fell between the two): its worker comes back without it. No container ever
            // ran for it, so the restart stopped nothing.
            assert!(
                attempt.handle.is_none(),
                "seed {seed}: {} attempt {} had a running container and was lost: {reason}",
                stage.instance,
                attempt.number
            );
            assert!(
                reason.contains("came back without it") || reason.contains("disconnected"),
                "seed {seed}: {} attempt {} lost for another reason than a task that never \
                 arrived: {reason}",
                stage.instance,
                attempt.number
            );
        }
    }
    eprintln!("seed {seed}: {lost} attempts lost between a stored dispatch and its delivery");
}

#[test]
fn a_worker_reconnects_within_a_heartbeat_after_every_one_of_many_scheduler_restarts() {
    let cluster = Cluster::new();
    cluster.start_scheduler();
    let worker = cluster.name("w");
    cluster.start_worker(&worker, 1, &[]);
    for restart in 1..=6 {
        let before = cluster.registrations(&worker);
        cluster.kill_scheduler();
        // Down long enough for several failed reconnections.
        std::thread::sleep(Duration::from_millis(1_200));
        cluster.start_scheduler();
        let serving = Instant::now();
        assert!(
            cluster::wait_until(Duration::from_secs(10), || {
                cluster.registrations(&worker) > before
            }),
            "restart {restart}: the worker never came back"
        );
        // Its attempts get one lease (3 s) from the restart: it must be back well within it.
        let took = serving.elapsed();
        assert!(
            took < Duration::from_millis(1_500),
            "restart {restart}: the worker came back {took:?} after the scheduler served"
        );
    }
}

#[test]
fn a_scheduler_stopped_with_sigterm_exits_promptly_with_clients_attached_and_loses_nothing() {
    let cluster = Cluster::new();
    cluster.start_scheduler();
    let worker = cluster.name("w");
    cluster.start_worker(&worker, 2, &[]);
    let dag = cluster.name("talk");
    cluster.submit("talk.yaml", &talkative_dag(&dag, &["a"], 16));
    let (run, watch) = start_watch(&cluster, &dag);
    let logs = cluster.spawn_cli("logs", &["logs", &run, "-f"]);
    wait_for_output(&cluster, "logs", "line 3");

    let (status, took) = cluster.term_scheduler(Duration::from_secs(15));
    assert!(
        status.success(),
        "the scheduler exits 0 on SIGTERM: {status}"
    );
    assert!(
        took < Duration::from_secs(5),
        "the scheduler took {took:?} to stop with clients attached"
    );
    std::thread::sleep(Duration::from_millis(500));
    cluster.start_scheduler();

    let watched = cluster
        .wait_cli(watch, Duration::from_secs(60))
        .expect("trigger --watch did not end");
    assert!(
        watched.success(),
        "{watched}: {:?}",
        cluster.cli_output("watch")
    );
    let followed = cluster
        .wait_cli(logs, Duration::from_secs(30))
        .expect("logs -f did not end");
    assert!(
        followed.success(),
        "{followed}: {:?}",
        cluster.cli_output("logs")
    );
    let view = cluster.get(&run);
    assert_every_stage_succeeded_once(&view);
    for stage in &view.stages {
        assert_eq!(stage.attempts.len(), 1, "{}", view.summary());
    }
}

#[test]
fn trigger_watch_and_logs_follow_ride_through_a_scheduler_kill_and_show_every_line_once() {
    let cluster = Cluster::new();
    cluster.start_scheduler();
    let worker = cluster.name("w");
    cluster.start_worker(&worker, 2, &[]);
    let dag = cluster.name("talk");
    let items = ["a", "b"];
    cluster.submit("talk.yaml", &talkative_dag(&dag, &items, TALK_LINES));
    let (run, watch) = start_watch(&cluster, &dag);
    let logs = cluster.spawn_cli("logs", &["logs", &run, "-f"]);
    wait_for_output(&cluster, "logs", "line 5");

    cluster.kill_scheduler();
    std::thread::sleep(Duration::from_millis(1_000));
    cluster.start_scheduler();

    let watched = cluster
        .wait_cli(watch, Duration::from_secs(60))
        .expect("trigger --watch did not end");
    let (watch_out, watch_err) = cluster.cli_output("watch");
    assert!(watched.success(), "{watched}\n{watch_out}\n{watch_err}");
    assert!(
        watch_out.contains("succeeded"),
        "the watch shows the outcome:\n{watch_out}"
    );
    let followed = cluster
        .wait_cli(logs, Duration::from_secs(30))
        .expect("logs -f did not end");
    let (logs_out, logs_err) = cluster.cli_output("logs");
    assert!(followed.success(), "{followed}\n{logs_out}\n{logs_err}");
    assert!(
        logs_err.contains("reconnected"),
        "logs -f lost the scheduler and came back:\n{logs_err}"
    );
    for item in items {
        for i in 1..=TALK_LINES {
            let line = format!("talk[{item}] | line {i}");
            let seen = logs_out.lines().filter(|l| *l == line).count();
            assert_eq!(seen, 1, "`{line}` shown {seen} times:\n{logs_out}");
        }
    }
    let view = cluster.get(&run);
    assert_every_stage_succeeded_once(&view);
    // What was shown live was also stored: the logs outlive the crash.
    let stored = cluster.vishwa(&["logs", &run]).stdout;
    for item in items {
        for i in 1..=TALK_LINES {
            let line = format!("talk[{item}] | line {i}");
            let seen = stored.lines().filter(|l| *l == line).count();
            assert_eq!(seen, 1, "`{line}` stored {seen} times:\n{stored}");
        }
    }
}

/// Starts `vishwa trigger DAG --watch` in the background; returns the run id and the client.
fn start_watch(cluster: &Cluster, dag: &str) -> (String, usize) {
    let watch = cluster.spawn_cli("watch", &["trigger", dag, "--watch"]);
    let started = Instant::now();
    let run = loop {
        let (out, err) = cluster.cli_output("watch");
        if let Some(id) = out
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("run "))
            .and_then(|l| l.split_whitespace().next())
        {
            break id.to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "trigger --watch printed no run id:\n{out}\n{err}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    cluster.track_run(&run);
    (run, watch)
}

fn wait_for_output(cluster: &Cluster, client: &str, text: &str) {
    let seen = cluster::wait_until(Duration::from_secs(60), || {
        cluster.cli_output(client).0.contains(text)
    });
    assert!(
        seen,
        "{client} never printed {text:?}: {:?}",
        cluster.cli_output(client)
    );
}
