//! The recovery section of BENCHMARKS.md.

use std::fmt::Write;

use super::replay::{self, STEPS};
use super::{BASELINE_RUNS, HELD_SLOTS, RUNS, Restart};
use crate::stats::{Row, Samples, load_text, ratio, secs, thousands, verdict};

/// The target for the first dispatch after a restart, in seconds.
pub(super) const TARGET_SECS: f64 = 2.0;

fn samples(restarts: &[Restart], f: impl Fn(&Restart) -> f64) -> Samples {
    let mut s = Samples::default();
    for r in restarts {
        s.push(f(r));
    }
    s
}

fn ms(seconds: f64) -> String {
    if seconds.is_nan() {
        "–".to_owned()
    } else {
        format!("{:.0} ms", seconds * 1000.0)
    }
}

pub(super) fn render(
    full: &[Restart],
    baseline: &[Restart],
    collided: usize,
    load: Option<f64>,
    date: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## 5. Scheduler restart with 1,000 runs in flight\n\n{ABOUT}\n\n\
         Measured {date} (load average {} at the start): {} SIGKILL-and-restart cycles of each \
         series, the two series interleaved; medians over the restarts.\n",
        load_text(load),
        full.len()
    );
    if let Some(first) = full.first() {
        let r = &first.replay;
        let states: Vec<String> = r
            .stages
            .iter()
            .map(|(state, n)| format!("{} {state}", thousands(*n)))
            .collect();
        let _ = writeln!(
            out,
            "At the first crash the store held {} unfinished runs with {} stage records ({}) \
             in {:.1} MB; the holding worker ran {HELD_SLOTS} of them.{}\n",
            thousands(r.runs),
            thousands(r.stages.values().sum::<usize>()),
            states.join(", "),
            r.store_bytes as f64 / 1e6,
            if collided > 0 {
                format!(
                    " Setting this up took {collided} trigger(s) more than {}: a run \
                     triggered in the same second as another drew its id and replaced it.",
                    thousands(RUNS)
                )
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(
        out,
        "| from the restarted process's spawn to | {} runs: median | min | max | \
         {BASELINE_RUNS} run (baseline): median | ratio |\n|---|---:|---:|---:|---:|---:|",
        thousands(RUNS)
    );
    let rows: [Row<Restart>; 5] = [
        ("`opening store` logged", |r| r.opening),
        ("`resumed unfinished runs` logged", |r| r.resumed),
        ("`scheduler listening` logged: gRPC served", |r| r.listening),
        ("**the first new dispatch**, seen by a worker", |r| {
            r.first_dispatch
        }),
        ("the worker from before the crash registered again", |r| {
            r.held_back
        }),
    ];
    for (label, f) in rows {
        let ours = samples(full, f);
        let base = samples(baseline, f);
        let max = full.iter().map(f).fold(f64::NAN, f64::max);
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} | {} | {} |",
            ms(ours.median()),
            ms(ours.min()),
            ms(max),
            ms(base.median()),
            ratio(ours.median() / base.median()),
        );
    }
    let first = samples(full, |r| r.first_dispatch);
    let worst = full
        .iter()
        .map(|r| r.first_dispatch)
        .fold(f64::NAN, f64::max);
    let _ = writeln!(
        out,
        "\nTarget: the first new dispatch under {} after a restart with {} runs in flight: \
         {} (median {}, worst {}).\n",
        secs(TARGET_SECS),
        thousands(RUNS),
        verdict(first.median() < TARGET_SECS),
        secs(first.median()),
        secs(worst)
    );
    let back: Vec<String> = full.iter().map(|r| secs(r.held_back)).collect();
    let growing = full.len() >= 3 && full.windows(2).all(|w| w[1].held_back > w[0].held_back);
    let _ = writeln!(
        out,
        "The worker connected before the crash (the same process through every restart) was \
         back after {}, restart by restart: it reconnects on its own backoff, so it comes back \
         some time after gRPC is served.{}\n",
        back.join(", "),
        if growing {
            " The wait grows from one restart to the next: the worker's reconnect backoff \
             doubles after each failed attempt and is not reset once it is connected again."
        } else {
            ""
        }
    );
    render_replay(&mut out, full, baseline);
    out
}

fn render_replay(out: &mut String, full: &[Restart], baseline: &[Restart]) {
    let _ = writeln!(
        out,
        "Where the time between `opening store` and `resumed unfinished runs` goes: the \
         engine's recovery steps replayed one by one in the harness on a copy of each crashed \
         store (medians):\n\n\
         | step | {} runs | share | {BASELINE_RUNS} run |\n|---|---:|---:|---:|",
        thousands(RUNS)
    );
    let total = samples(full, |r| replay::total(&r.replay).as_secs_f64()).median();
    for (i, step) in STEPS.iter().enumerate() {
        let ours = samples(full, |r| r.replay.steps[i]).median();
        let base = samples(baseline, |r| r.replay.steps[i]).median();
        let _ = writeln!(
            out,
            "| {step} | {} | {:.0} % | {} |",
            ms_fine(ours),
            100.0 * ours / total,
            ms_fine(base)
        );
    }
    let base_total = samples(baseline, |r| replay::total(&r.replay).as_secs_f64()).median();
    let _ = writeln!(
        out,
        "| total | {} | 100 % | {} |",
        ms_fine(total),
        ms_fine(base_total)
    );
    let logged = samples(full, |r| r.resumed - r.opening).median();
    let _ = writeln!(
        out,
        "\nThe restarted scheduler took {} from `opening store` to `resumed unfinished runs` \
         (median), against {} for the same steps replayed here.",
        ms(logged),
        ms(total)
    );
}

fn ms_fine(seconds: f64) -> String {
    if seconds.is_nan() {
        "–".to_owned()
    } else {
        format!("{:.1} ms", seconds * 1000.0)
    }
}

const ABOUT: &str = "What is measured: `vishwa scheduler` (the release binary, sled in \
a temporary directory) runs as a child process with 1,000 runs of a four-stage DAG \
(`a` → `b`, `c` → `d`) in flight, served by a worker in the harness (the real worker agent over \
gRPC, with an executor that finishes `a` at once and holds every other stage running). The \
harness kills the scheduler with SIGKILL and spawns it again on the same data dir and port, \
then times, from that spawn, the scheduler's own log lines (their timestamps) and the first \
task a fresh worker receives; that worker starts connecting as soon as the harness sees the \
port bound (before the store opens), so its first task marks the moment the scheduler could \
dispatch. The worker from \
before the crash stays up throughout and reconnects by itself. Each cycle stops the fresh \
worker first (its stages go back to the queue), so every crash finds the same work. A series \
with one run in flight, restarted in turn with the big one, is the baseline: its times are \
the start-up floor.\n\n\
What dominates: reading what sled holds. In the replay, reading the runs' stage records (one \
prefix scan per run, every record JSON-decoded) is the largest part, and opening sled, which \
replays its log after the SIGKILL, about a third; parsing the one DAG version, building the \
plans and restoring the runs' state machines take a few milliseconds together. The restarted \
process takes longer than the replay between the same two log lines (figures below): the \
replay leaves out putting the queued stages back in the dispatch line, the placeholder \
entries for the workers whose attempts were running and the schedules, and it runs in a \
process that is already warm. From `scheduler listening` to the first task at a worker takes 1–2 ms, since that worker \
was already waiting in the listen queue. A worker connected before the crash comes back on its \
own reconnect backoff instead, after the scheduler is ready.";
