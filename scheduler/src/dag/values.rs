//! Checks and parsers for single values of a DAG file: names, durations, memory quantities,
//! mounts, output names, and "did you mean" suggestions.

use std::time::Duration;

use crate::dag::basic::Location;
use crate::dag::error::{MountProblem, OutputProblem};
use crate::dag::model::Mount;

/// Converts a serde-saphyr location (1-based; 0 when unknown) into ours.
pub(crate) fn loc(at: &serde_saphyr::Location) -> Location {
    Location {
        line: usize::try_from(at.line()).unwrap_or(usize::MAX),
        column: usize::try_from(at.column()).unwrap_or(usize::MAX),
    }
}

/// `[a-z][a-z0-9-]*`
pub(crate) fn is_dag_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    if name.len() > crate::api::limits::MAX_NAME_CHARS {
        return false;
    }
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
}

/// `[a-z0-9][a-z0-9_-]*`
pub(crate) fn is_stage_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    if name.len() > crate::api::limits::MAX_NAME_CHARS {
        return false;
    }
    matches!(bytes.next(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

/// `[A-Za-z_][A-Za-z0-9_]*`, the shape of environment variable and param names.
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Letters, digits, `_`, `-` and `.`, not empty.
pub(crate) fn is_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Why a duration string was refused.
pub(crate) enum DurationProblem {
    NoUnit,
    Invalid,
}

/// Parses a humantime duration (`30s`, `5m`, `1h30m`, `500ms`); a bare number has no unit.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, DurationProblem> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(DurationProblem::NoUnit);
    }
    humantime::parse_duration(trimmed).map_err(|_| DurationProblem::Invalid)
}

/// Parses a memory quantity: bytes (`1000000`), binary (`512Mi`, `4Gi`) or decimal (`1G`)
/// units. Returns `None` for anything else, for zero and for overflow.
pub fn parse_memory(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: u64 = match unit {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    let bytes = if number.contains('.') {
        let value: f64 = number.parse().ok()?;
        let bytes = (value * multiplier as f64).round();
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return None;
        }
        bytes as u64
    } else {
        number.parse::<u64>().ok()?.checked_mul(multiplier)?
    };
    (bytes > 0).then_some(bytes)
}

/// Checks an `outputs:` entry: a plain file name.
pub(crate) fn output_problem(name: &str) -> Option<OutputProblem> {
    if name.trim().is_empty() {
        Some(OutputProblem::Empty)
    } else if name.contains('/') || name.contains('\\') {
        Some(OutputProblem::PathSeparator)
    } else if name == "." || name == ".." {
        Some(OutputProblem::DotName)
    } else {
        None
    }
}

/// Parses `host:container[:ro|rw]`, both paths absolute.
pub(crate) fn parse_mount(text: &str) -> Result<Mount, MountProblem> {
    let parts: Vec<&str> = text.split(':').collect();
    let (host, container, read_only) = match parts.as_slice() {
        [host, container] => (*host, *container, false),
        [host, container, "ro"] => (*host, *container, true),
        [host, container, "rw"] => (*host, *container, false),
        [_, _, mode] => return Err(MountProblem::UnknownMode((*mode).to_owned())),
        _ => return Err(MountProblem::Shape),
    };
    if host.is_empty() || container.is_empty() {
        return Err(MountProblem::Shape);
    }
    if !host.starts_with('/') {
        return Err(MountProblem::HostNotAbsolute);
    }
    if !container.starts_with('/') {
        return Err(MountProblem::ContainerNotAbsolute);
    }
    Ok(Mount {
        host: host.to_owned(),
        container: container.to_owned(),
        read_only,
    })
}

/// Optimal string alignment distance (Levenshtein plus adjacent transpositions), on
/// lowercase characters.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().flat_map(char::to_lowercase).collect();
    let b: Vec<char> = b.chars().flat_map(char::to_lowercase).collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for (i, row) in d.chunks_mut(width).enumerate() {
        row[0] = i;
    }
    for (j, cell) in d.iter_mut().take(width).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

/// Returns the candidate closest to `target`, if it is close enough to be a likely typo.
pub(crate) fn closest<'a>(
    target: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let len = target.chars().count();
    let limit = (len / 3).max(1);
    candidates
        .into_iter()
        // The distance is at least the difference in length: skip the hopeless cheaply.
        .filter(|c| *c != target && c.len().abs_diff(target.len()) <= limit * 4)
        .filter(|c| c.chars().count().abs_diff(len) <= limit)
        .map(|c| (edit_distance(target, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_their_patterns() {
        assert!(is_dag_name("cake-popularity2"));
        for bad in ["", "Cake", "2cake", "cake_pop", "cake pop"] {
            assert!(!is_dag_name(bad), "{bad}");
        }
        assert!(is_stage_name("train_v2-x"));
        assert!(is_stage_name("0stage"));
        assert!(is_dag_name(&"a".repeat(128)) && !is_dag_name(&"a".repeat(129)));
        assert!(!is_stage_name(&"a".repeat(129)));
        for bad in ["", "Train", "-x", "train[0]", "a/b", "a b"] {
            assert!(!is_stage_name(bad), "{bad}");
        }
        assert!(is_identifier("_MY_VAR1"));
        assert!(!is_identifier("1VAR"));
        assert!(!is_identifier("MY-VAR"));
    }

    #[test]
    fn memory_quantities_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_memory("4Gi"), Some(4 << 30));
        assert_eq!(parse_memory("512Mi"), Some(512 << 20));
        assert_eq!(parse_memory("1G"), Some(1_000_000_000));
        assert_eq!(parse_memory("1000000"), Some(1_000_000));
        assert_eq!(parse_memory("1.5Gi"), Some(3 << 29));
        for bad in ["", "0", "4GB", "Gi", "-1", "4 Gi", "99999999999Ti"] {
            assert_eq!(parse_memory(bad), None, "{bad}");
        }
    }

    #[test]
    fn closest_suggests_likely_typos_only() {
        let names = ["collect", "validate", "train"];
        assert_eq!(closest("trian", names), Some("train".into()));
        assert_eq!(closest("colect", names), Some("collect".into()));
        assert_eq!(closest("deploy", names), None);
    }
}
