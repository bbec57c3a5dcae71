//! Summaries of repeated measurements (median, minimum) and how figures are printed in tables.

use std::time::Duration;

/// Repeated wall-clock measurements of one thing.
#[derive(Debug, Clone, Default)]
pub(crate) struct Samples {
    values: Vec<f64>,
}

impl Samples {
    /// Adds one measurement.
    pub(crate) fn push(&mut self, value: f64) {
        self.values.push(value);
    }

    /// Adds one duration, in seconds.
    pub(crate) fn push_duration(&mut self, value: Duration) {
        self.push(value.as_secs_f64());
    }

    /// The median (the mean of the middle two for an even count); NaN when empty.
    pub(crate) fn median(&self) -> f64 {
        let sorted = self.sorted();
        let n = sorted.len();
        match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        }
    }

    /// The smallest measurement; NaN when empty.
    pub(crate) fn min(&self) -> f64 {
        self.values.iter().copied().fold(f64::NAN, f64::min)
    }

    /// The latest measurement; NaN when empty.
    pub(crate) fn last(&self) -> f64 {
        self.values.last().copied().unwrap_or(f64::NAN)
    }

    fn sorted(&self) -> Vec<f64> {
        let mut sorted = self.values.clone();
        sorted.sort_by(f64::total_cmp);
        sorted
    }
}

/// A row of a table: its label and how to get its figure from one measurement.
pub(crate) type Row<T> = (&'static str, fn(&T) -> f64);

/// Seconds for a table: `0.081 s`, `12.4 s`.
pub(crate) fn secs(value: f64) -> String {
    if value.is_nan() {
        "–".to_owned()
    } else if value < 10.0 {
        format!("{value:.3} s")
    } else {
        format!("{value:.1} s")
    }
}

/// `10002` as `10,002`.
pub(crate) fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A ratio for a table: `1.84×`.
pub(crate) fn ratio(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.2}×")
    } else {
        "–".to_owned()
    }
}

/// The load average for a section's preamble.
pub(crate) fn load_text(load: Option<f64>) -> String {
    load.map_or_else(|| "unknown".to_owned(), |l| format!("{l:.1}"))
}

/// How a target came out, for a table cell.
pub(crate) fn verdict(met: bool) -> &'static str {
    if met { "**met**" } else { "**missed**" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated_by_commas() {
        assert_eq!(thousands(7), "7");
        assert_eq!(thousands(2_000), "2,000");
        assert_eq!(thousands(10_002), "10,002");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        let mut s = Samples::default();
        for v in [3.0, 1.0, 2.0] {
            s.push(v);
        }
        assert_eq!(s.median(), 2.0);
        s.push(10.0);
        assert_eq!(s.median(), 2.5);
        assert_eq!(s.min(), 1.0);
        assert_eq!(s.last(), 10.0);
    }
}
