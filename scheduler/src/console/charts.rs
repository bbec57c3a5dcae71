//! Inline SVG charts: the success sparkline of a DAG, a metric across runs, and the Gantt
//! timeline of a run. Pure: data in, markup out.

use maud::{Markup, html};

use super::layout::{duration, time};
use crate::ids::Millis;

/// One bar per finished run, oldest first: tall and green for success, short and red else.
pub(super) fn sparkline(outcomes: &[bool]) -> Markup {
    let w = 6.0;
    let width = outcomes.len().max(1) as f64 * w;
    let ok = outcomes.iter().filter(|o| **o).count();
    html! {
        svg.spark xmlns="http://www.w3.org/2000/svg" width=(width) height="18" viewBox=(format!("0 0 {width} 18")) {
            title { (ok) " of " (outcomes.len()) " recent runs succeeded" }
            @for (i, &good) in outcomes.iter().enumerate() {
                @let (h, class) = if good { (16.0, "bar succeeded") } else { (7.0, "bar failed") };
                rect class=(class) x=(i as f64 * w) y=(18.0 - h) width=(w - 1.0) height=(h) {}
            }
        }
    }
}

/// One point of a metric: the run and its value.
#[derive(Debug, Clone)]
pub(super) struct Point {
    pub(super) run: String,
    pub(super) value: f64,
}

/// A metric across runs, oldest first, as a line chart with its range on the axis.
pub(super) fn line_chart(title: &str, points: &[Point]) -> Markup {
    let (w, h, pad) = (420.0, 150.0, 34.0);
    let lo = points.iter().map(|p| p.value).fold(f64::INFINITY, f64::min);
    let hi = points
        .iter()
        .map(|p| p.value)
        .fold(f64::NEG_INFINITY, f64::max);
    let span = if (hi - lo).abs() < f64::EPSILON {
        1.0
    } else {
        hi - lo
    };
    let step = if points.len() > 1 {
        (w - 2.0 * pad) / (points.len() - 1) as f64
    } else {
        0.0
    };
    let at = |i: usize, v: f64| {
        (
            pad + i as f64 * step,
            h - pad - (v - lo) / span * (h - 2.0 * pad),
        )
    };
    let path: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (x, y) = at(i, p.value);
            format!("{}{x:.1} {y:.1}", if i == 0 { 'M' } else { 'L' })
        })
        .collect();
    html! {
        figure.chart {
            figcaption { (title) }
            svg xmlns="http://www.w3.org/2000/svg" width=(w) height=(h) viewBox=(format!("0 0 {w} {h}")) {
                line.axis x1=(pad) y1=(h - pad) x2=(w - pad) y2=(h - pad) {}
                line.axis x1=(pad) y1=(pad) x2=(pad) y2=(h - pad) {}
                text x="2" y=(pad + 4.0) { (short(hi)) }
                text x="2" y=(h - pad) { (short(lo)) }
                path.line d=(path.concat()) {}
                @for (i, p) in points.iter().enumerate() {
                    @let (x, y) = at(i, p.value);
                    circle.dot cx=(format!("{x:.1}")) cy=(format!("{y:.1}")) r="3" {
                        title { (p.run) ": " (p.value) }
                    }
                }
            }
        }
    }
}

fn short(v: f64) -> String {
    if v.abs() >= 1000.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// One row of a Gantt timeline.
#[derive(Debug, Clone)]
pub(super) struct Bar {
    pub(super) label: String,
    pub(super) state: String,
    pub(super) start: Millis,
    pub(super) end: Millis,
}

/// Bars on a shared time axis from the earliest start to the latest end.
pub(super) fn gantt(bars: &[Bar]) -> Markup {
    if bars.is_empty() {
        return html! { p.muted { "Nothing has started yet." } };
    }
    let (label_w, w, row) = (190.0, 900.0, 18.0);
    let t0 = bars.iter().map(|b| b.start).min().unwrap_or(0);
    let t1 = bars.iter().map(|b| b.end).max().unwrap_or(t0).max(t0 + 1);
    let scale = (w - label_w - 10.0) / (t1 - t0) as f64;
    let height = bars.len() as f64 * row + 24.0;
    html! {
        svg.gantt xmlns="http://www.w3.org/2000/svg" width=(w) height=(height) viewBox=(format!("0 0 {w} {height}")) {
            @for k in 0..=4 {
                @let x = label_w + (w - label_w - 10.0) * k as f64 / 4.0;
                line.axis x1=(x) y1="0" x2=(x) y2=(height - 16.0) {}
                text x=(x) y=(height - 3.0) font-size="10" text-anchor=(if k == 4 { "end" } else if k == 0 { "start" } else { "middle" }) {
                    "+" (duration((t1 - t0) * k / 4))
                }
            }
            @for (i, b) in bars.iter().enumerate() {
                @let y = i as f64 * row;
                text x="2" y=(y + 13.0) { (b.label) }
                rect class={ "bar " (b.state) } x=(format!("{:.1}", label_w + (b.start - t0) as f64 * scale)) y=(y + 3.0)
                    width=(format!("{:.1}", ((b.end - b.start) as f64 * scale).max(2.0))) height=(row - 5.0) {
                    title { (b.label) ": " (b.state) ", " (time(b.start)) ", " (duration(b.end - b.start)) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_escape_labels_and_draw_one_mark_per_point() {
        let points = vec![
            Point {
                run: "<b>r1</b>".into(),
                value: 0.5,
            },
            Point {
                run: "r2".into(),
                value: 0.75,
            },
        ];
        let svg = line_chart("acc", &points).into_string();
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("&lt;b&gt;r1"));
        let bars = vec![Bar {
            label: "<i>".into(),
            state: "running".into(),
            start: 0,
            end: 10,
        }];
        assert!(gantt(&bars).into_string().contains("&lt;i&gt;"));
        assert_eq!(
            sparkline(&[true, false])
                .into_string()
                .matches("<rect")
                .count(),
            2
        );
    }
}
