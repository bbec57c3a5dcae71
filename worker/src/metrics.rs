//! The worker's Prometheus metrics (`vishwa worker --metrics ADDR`): containers started,
//! attempts' exit codes, image pull / container create / start latency and output bytes
//! uploaded. One registry per process (a process runs one worker), updated where each thing
//! happens (the Docker executor, the attempt, the upload) and served as OpenMetrics text on
//! `GET /metrics` with [`serve`].

use std::sync::LazyLock;
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Attempts ended, by how: `exit` (an exit code), `cancelled`, `timed_out` or `error`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct EndLabels {
    pub outcome: String,
    /// The exit code, or empty when there was none.
    pub code: String,
}

/// Every series of the worker.
pub struct WorkerMetrics {
    registry: Registry,
    pub containers_started: Counter,
    pub attempts_ended: Family<EndLabels, Counter>,
    pub image_pull: Histogram,
    pub container_create: Histogram,
    pub container_start: Histogram,
    pub upload_bytes: Counter,
}

fn seconds() -> Histogram {
    // 1 ms to about 2.4 min.
    Histogram::new(exponential_buckets(0.001, 3.3, 11))
}

impl WorkerMetrics {
    fn new() -> WorkerMetrics {
        let mut registry = Registry::with_prefix("vishwa_worker");
        let m = WorkerMetrics {
            registry: Registry::default(),
            containers_started: Counter::default(),
            attempts_ended: Family::default(),
            image_pull: seconds(),
            container_create: seconds(),
            container_start: seconds(),
            upload_bytes: Counter::default(),
        };
        registry.register(
            "containers_started",
            "Containers started for stage attempts",
            m.containers_started.clone(),
        );
        registry.register(
            "attempts_ended",
            "Stage attempts that ended on this worker, by outcome and exit code",
            m.attempts_ended.clone(),
        );
        registry.register_with_unit(
            "image_pull",
            "Time to pull a missing image",
            Unit::Seconds,
            m.image_pull.clone(),
        );
        registry.register_with_unit(
            "container_create",
            "Time to create a container",
            Unit::Seconds,
            m.container_create.clone(),
        );
        registry.register_with_unit(
            "container_start",
            "Time to start a created container",
            Unit::Seconds,
            m.container_start.clone(),
        );
        registry.register_with_unit(
            "upload",
            "Stage outputs uploaded to the scheduler",
            Unit::Bytes,
            m.upload_bytes.clone(),
        );
        WorkerMetrics { registry, ..m }
    }

    /// Counts an attempt that ended with `outcome` (and `code` when it exited).
    pub fn ended(&self, outcome: &str, code: Option<i64>) {
        self.attempts_ended
            .get_or_create(&EndLabels {
                outcome: outcome.to_owned(),
                code: code.map(|c| c.to_string()).unwrap_or_default(),
            })
            .inc();
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Observes `elapsed` on `histogram`.
pub fn observe(histogram: &Histogram, elapsed: Duration) {
    histogram.observe(elapsed.as_secs_f64());
}

static METRICS: LazyLock<WorkerMetrics> = LazyLock::new(WorkerMetrics::new);

/// This process's worker metrics.
pub fn metrics() -> &'static WorkerMetrics {
    &METRICS
}

/// Serves `GET /metrics` on `listener` until `shutdown` fires. No token is asked: bind it
/// where only your Prometheus reaches (the default is loopback).
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(|| async {
            (
                [(
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                metrics().encode(),
            )
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
