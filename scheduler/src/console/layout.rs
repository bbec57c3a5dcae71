//! The page shell (head, navigation, the embedded stylesheet and script) and the small
//! pieces every page uses: times, durations, state badges, CSRF fields.

use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::Session;
use crate::ids::Millis;

const CSS: &str = include_str!("static/console.css");
const JS: &str = include_str!("static/console.js");

/// Serves the stylesheet.
pub(super) async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        CSS,
    )
        .into_response()
}

/// Serves the script.
pub(super) async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        JS,
    )
        .into_response()
}

/// Extra attributes of `<body>` that switch the script's live updates on.
#[derive(Debug, Default)]
pub(super) struct Live {
    pub(super) run_events: Option<String>,
    pub(super) log_events: Option<String>,
}

/// A whole page.
pub(super) fn page(
    title: &str,
    session: Option<&Session>,
    live: Live,
    content: Markup,
) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Vishwa" }
                link rel="stylesheet" href="/static/console.css";
            }
            body data-run-events=[live.run_events] data-log-events=[live.log_events] {
                header.top {
                    a.brand href="/" { "Vishwa" }
                    a href="/" { "DAGs" }
                    a href="/runs" { "Runs" }
                    a href="/workers" { "Workers" }
                    @if session.is_some_and(|s| s.may("ListAudit")) {
                        a href="/audit" { "Audit" }
                    }
                    @if let Some(s) = session {
                        span.who {
                            (s.caller.name) " (" (s.caller.role) ")"
                            @if s.caller.name != "local" {
                                " "
                                form.inline method="post" action="/logout" {
                                    (csrf_field(s))
                                    button.plain type="submit" { "Log out" }
                                }
                            }
                        }
                    }
                }
                main { (content) }
                script src="/static/console.js" defer {}
            }
        }
    };
    Html(markup.into_string())
}

/// The page of an error.
pub(super) fn error_page(status: StatusCode, message: &str) -> Html<String> {
    page(
        status.canonical_reason().unwrap_or("Error"),
        None,
        Live::default(),
        html! {
            h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
            p.error { (message) }
            p { a href="/" { "Back to the DAGs" } }
        },
    )
}

/// The hidden field every form carries.
pub(super) fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// A state badge.
pub(super) fn state_badge(state: &str) -> Markup {
    html! { span class={ "state " (state) } { (state) } }
}

/// A time as `2026-01-02 03:04:05`, UTC.
pub(super) fn time(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// An optional time, or a dash.
pub(super) fn time_or_dash(ms: Option<Millis>) -> String {
    ms.filter(|&m| m > 0).map_or_else(|| "—".to_owned(), time)
}

/// A duration as `1h 02m`, `3m 04s`, `5.2s` or `120ms`.
pub(super) fn duration(ms: Millis) -> String {
    let ms = ms.max(0);
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m {:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h {:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration(120), "120ms");
        assert_eq!(duration(5_200), "5.2s");
        assert_eq!(duration(184_000), "3m 04s");
        assert_eq!(duration(3_720_000), "1h 02m");
    }
}
