//! `GET /metrics`: the scheduler's Prometheus series, with the gauges of the engine's
//! current state refreshed from a snapshot first.

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::HttpState;
use crate::metrics::{CONTENT_TYPE, DagLabel, TEXT_CONTENT_TYPE, WorkerLabel, to_prometheus_text};

/// The series in OpenMetrics when the scraper asks for it (Prometheus does), else in the
/// classic text format.
pub(super) async fn metrics(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let m = state.engine.telemetry();
    // A stopped engine has no current state: its gauges keep their last values.
    if let Ok(snapshot) = state.engine.snapshot().await {
        m.worker_slots.clear();
        m.worker_slots_free.clear();
        for (worker, slots, free) in snapshot.workers {
            let label = WorkerLabel { worker };
            m.worker_slots.get_or_create(&label).set(i64::from(slots));
            m.worker_slots_free
                .get_or_create(&label)
                .set(i64::from(free));
        }
        m.stages_running
            .set(i64::try_from(snapshot.running).unwrap_or(i64::MAX));
        m.cron_next_fire.clear();
        for (dag, at_ms) in snapshot.next_fires {
            m.cron_next_fire
                .get_or_create(&DagLabel { dag })
                .set(at_ms / 1000);
        }
    }
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if openmetrics {
        ([(header::CONTENT_TYPE, CONTENT_TYPE)], m.encode()).into_response()
    } else {
        let text = to_prometheus_text(&m.encode());
        ([(header::CONTENT_TYPE, TEXT_CONTENT_TYPE)], text).into_response()
    }
}
