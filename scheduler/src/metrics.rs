//! The scheduler's Prometheus metrics: one registry, the one place every series is declared.
//! Each is updated where its event happens (the engine's turn, the API, the log path) and
//! the whole registry is encoded by `GET /metrics` (OpenMetrics text).
//!
//! Gauges that describe the engine's current state (slots per worker, running stages, next
//! cron fire) are set from a snapshot the engine takes at scrape time, not on every turn.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Series labelled by DAG.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DagLabel {
    pub dag: String,
}

/// Series labelled by DAG and final state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DagStateLabels {
    pub dag: String,
    pub state: String,
}

/// Series labelled by worker.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct WorkerLabel {
    pub worker: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Durations of stages: 0.1 s to about 2.8 h.
fn stage_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.1, 2.8, 11))
}

/// Short latencies: 50 µs to about 3.3 s.
fn latency_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 3.0, 11))
}

/// Every series of the scheduler.
pub struct Metrics {
    registry: Registry,
    pub runs_started: Family<DagLabel, Counter>,
    pub runs_finished: Family<DagStateLabels, Counter>,
    pub stages_finished: Family<DagStateLabels, Counter>,
    pub stage_duration: HistogramFamily<DagLabel>,
    pub queue_wait: HistogramFamily<DagLabel>,
    pub stages_running: Gauge,
    pub worker_slots: Family<WorkerLabel, Gauge>,
    pub worker_slots_free: Family<WorkerLabel, Gauge>,
    pub trigger_latency: Histogram,
    pub dispatch_latency: Histogram,
    pub store_commit: Histogram,
    pub store_batch_records: Histogram,
    pub up: Gauge,
    pub leader: Gauge,
    pub cron_next_fire: Family<DagLabel, Gauge>,
    pub log_bytes: Counter,
    pub artifact_bytes: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every series at zero (`up` and `leader` at 1).
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("vishwa");
        let m = Metrics {
            runs_started: Family::default(),
            runs_finished: Family::default(),
            stages_finished: Family::default(),
            stage_duration: Family::new_with_constructor(stage_seconds),
            queue_wait: Family::new_with_constructor(stage_seconds),
            stages_running: Gauge::default(),
            worker_slots: Family::default(),
            worker_slots_free: Family::default(),
            trigger_latency: latency_seconds(),
            dispatch_latency: latency_seconds(),
            store_commit: latency_seconds(),
            store_batch_records: Histogram::new(exponential_buckets(1.0, 4.0, 9)),
            up: Gauge::default(),
            leader: Gauge::default(),
            cron_next_fire: Family::default(),
            log_bytes: Counter::default(),
            artifact_bytes: Counter::default(),
            registry: Registry::default(),
        };
        m.up.set(1);
        // One scheduler per store: it always leads (until schedulers share a store).
        m.leader.set(1);
        let r = &mut registry;
        r.register(
            "runs_started",
            "Runs that started (left the queue), by DAG",
            m.runs_started.clone(),
        );
        r.register(
            "runs_finished",
            "Runs that ended, by DAG and final state",
            m.runs_finished.clone(),
        );
        r.register(
            "stages_finished",
            "Stage instances that ended, by DAG and final state",
            m.stages_finished.clone(),
        );
        r.register_with_unit(
            "stage_duration",
            "Time from a stage attempt's start to its end, by DAG",
            Unit::Seconds,
            m.stage_duration.clone(),
        );
        r.register_with_unit(
            "stage_queue_wait",
            "Time a stage instance waited queued before its attempt started, by DAG",
            Unit::Seconds,
            m.queue_wait.clone(),
        );
        r.register(
            "stages_running",
            "Stage attempts running on workers now",
            m.stages_running.clone(),
        );
        r.register(
            "worker_slots",
            "Slots a connected worker offers",
            m.worker_slots.clone(),
        );
        r.register(
            "worker_slots_free",
            "Slots of a connected worker that run nothing now",
            m.worker_slots_free.clone(),
        );
        r.register_with_unit(
            "trigger_latency",
            "Time to accept a trigger call (durably stored) at the API",
            Unit::Seconds,
            m.trigger_latency.clone(),
        );
        r.register_with_unit(
            "dispatch_latency",
            "Time from a stage instance becoming ready to its dispatch to a worker",
            Unit::Seconds,
            m.dispatch_latency.clone(),
        );
        r.register_with_unit(
            "store_commit",
            "Time to make one engine turn's write batch durable",
            Unit::Seconds,
            m.store_commit.clone(),
        );
        r.register(
            "store_commit_records",
            "Records in one engine turn's write batch",
            m.store_batch_records.clone(),
        );
        r.register("up", "1 while the scheduler serves", m.up.clone());
        r.register(
            "leader",
            "1 when this scheduler leads (always, with one scheduler per store)",
            m.leader.clone(),
        );
        r.register(
            "cron_next_fire_timestamp_seconds",
            "Unix time of a scheduled DAG's next fire (absent while paused)",
            m.cron_next_fire.clone(),
        );
        r.register_with_unit(
            "log",
            "Stage output stored, in bytes",
            Unit::Bytes,
            m.log_bytes.clone(),
        );
        r.register_with_unit(
            "artifact",
            "Stage outputs (artifacts) uploaded, in bytes",
            Unit::Bytes,
            m.artifact_bytes.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Shared, for the engine, the API and the HTTP port.
    pub fn shared() -> Arc<Metrics> {
        Arc::new(Metrics::new())
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// A finished stage attempt's duration, for `dag`.
    pub fn observe_stage(&self, dag: &str, state: &str, ran: Option<Duration>) {
        self.stages_finished
            .get_or_create(&DagStateLabels {
                dag: dag.to_owned(),
                state: state.to_owned(),
            })
            .inc();
        if let Some(ran) = ran {
            self.stage_duration
                .get_or_create(&DagLabel {
                    dag: dag.to_owned(),
                })
                .observe(ran.as_secs_f64());
        }
    }
}

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`to_prometheus_text`]'s text.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics text turned into the classic Prometheus text format (0.0.4), for scrapers
/// and tools that do not ask for OpenMetrics (`promtool check metrics`, `curl`): a
/// counter's `# HELP`/`# TYPE` name gains the `_total` its samples carry, and the `# UNIT`
/// and `# EOF` lines, which that format lacks, go. Samples are the same.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    text.push_str(&format!("{prefix}{name}_total {tail}"));
                } else {
                    text.push_str(line);
                }
            }
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}
