//! Reading DAG file text into the raw serde structs: refusing hostile input up front (size,
//! control characters, alias bombs, deep nesting) and turning YAML errors into [`DagError`]s.

use std::borrow::Cow;

use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::{DefaultMessageFormatter, Error as YamlError, MessageFormatter};

use crate::dag::basic::Location;
use crate::dag::error::DagError;
use crate::dag::raw::RawDag;
use crate::dag::values::{closest, loc};

/// Largest DAG file accepted, in bytes.
pub const MAX_DAG_FILE_BYTES: usize = 5 * 1024 * 1024;

/// Parser limits. A DAG file is small and shallow; these bound the work any input can cause
/// (alias bombs, deep nesting) while leaving room for DAGs of 10,000s of stages.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: Some(MAX_DAG_FILE_BYTES),
            max_events: 4_000_000,
            max_nodes: 2_000_000,
            max_depth: 16,
            flow_nesting_limit: 16,
            max_documents: 1,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_recorded_anchor_events: 100_000,
            max_total_scalar_bytes: MAX_DAG_FILE_BYTES,
            max_merge_keys: 1_000,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 50_000,
            max_replay_stack_depth: 16,
            max_alias_expansions_per_anchor: 500,
        },
        // YAML 1.2 booleans: `yes`/`no`/`on`/`off` stay strings (no "Norway problem").
        strict_booleans: true,
    }
}

/// Parses `source` into the raw DAG, or the one error that stopped the parser.
pub(crate) fn read_raw(source: &str) -> Result<RawDag, DagError> {
    if source.len() > MAX_DAG_FILE_BYTES {
        return Err(DagError::TooLarge {
            bytes: source.len(),
            limit: MAX_DAG_FILE_BYTES,
            at: Location::default(),
        });
    }
    if let Some(error) = find_control_character(source) {
        return Err(error);
    }
    if is_blank(source) {
        return Err(DagError::EmptyFile {
            at: Location::default(),
        });
    }
    serde_saphyr::from_str_with_options::<RawDag>(source, yaml_options())
        .map_err(|e| convert_yaml_error(&e))
}

/// Only whitespace, comments and document markers.
fn is_blank(source: &str) -> bool {
    source.lines().all(|line| {
        let line = line.trim_start_matches('\u{feff}').trim();
        line.is_empty() || line.starts_with('#') || line == "---" || line == "..."
    })
}

/// YAML allows tab, line feed and carriage return; any other control character means the
/// file is not text (or is corrupt), and is refused with its position.
fn find_control_character(source: &str) -> Option<DagError> {
    let (index, ch) = source
        .char_indices()
        .find(|(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))?;
    let before = &source[..index];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    Some(DagError::ControlCharacter {
        code: u32::from(ch),
        at: Location { line, column },
    })
}

/// The error the parser started from, without alias and snippet wrappers.
fn original_error(mut err: &YamlError) -> &YamlError {
    while let YamlError::AliasError { error, .. } | YamlError::WithSnippet { error, .. } = err {
        err = error;
    }
    err
}

fn plain_message(err: &YamlError) -> String {
    let message: Cow<'_, str> = DefaultMessageFormatter.format_message(err);
    // The message may quote input; keep it on one line and free of control characters.
    let mut plain = String::with_capacity(message.len());
    for c in message.chars() {
        if c.is_control() {
            plain.extend(c.escape_default());
        } else {
            plain.push(c);
        }
    }
    plain
}

fn budget_message(breach: &BudgetBreach) -> String {
    match breach {
        BudgetBreach::Depth { depth } => format!("nested {depth} levels deep"),
        BudgetBreach::Aliases { aliases } => format!("more than {aliases} aliases"),
        BudgetBreach::Anchors { anchors } => format!("more than {anchors} anchors"),
        BudgetBreach::Events { .. } | BudgetBreach::Nodes { .. } => {
            "too many YAML nodes".to_owned()
        }
        BudgetBreach::Documents { .. } => "more than one YAML document".to_owned(),
        other => format!("parser limit reached ({other:?})"),
    }
}

pub(crate) fn convert_yaml_error(err: &YamlError) -> DagError {
    let at = err.location().map(|l| loc(&l)).unwrap_or_default();
    match original_error(err) {
        YamlError::SerdeUnknownField {
            field, expected, ..
        } => DagError::UnknownField {
            suggestion: closest(field, expected.iter().copied()),
            allowed: expected.iter().map(|s| (*s).to_owned()).collect(),
            field: field.clone(),
            at,
        },
        YamlError::SerdeMissingField { field, .. } => DagError::MissingField {
            field: (*field).to_owned(),
            at,
        },
        YamlError::SerdeInvalidType {
            unexpected,
            expected,
            ..
        }
        | YamlError::SerdeInvalidValue {
            unexpected,
            expected,
            ..
        } => DagError::WrongType {
            found: unexpected.clone(),
            expected: expected.clone(),
            at,
        },
        YamlError::SerdeUnknownVariant {
            variant, expected, ..
        } => DagError::UnknownVariant {
            suggestion: closest(variant, expected.iter().copied()),
            allowed: expected.iter().map(|s| (*s).to_owned()).collect(),
            value: variant.clone(),
            at,
        },
        YamlError::InvalidBooleanStrict { .. } => DagError::WrongType {
            found: "a word".to_owned(),
            expected: "a boolean (`true` or `false`)".to_owned(),
            at,
        },
        YamlError::InvalidScalar { ty, .. } => DagError::WrongType {
            found: "a value that does not fit".to_owned(),
            expected: match *ty {
                "u8" | "u16" | "u32" | "u64" | "usize" => "a non-negative integer",
                "i8" | "i16" | "i32" | "i64" | "isize" => "an integer",
                "f32" | "f64" => "a number",
                "bool" => "a boolean (`true` or `false`)",
                other => other,
            }
            .to_owned(),
            at,
        },
        YamlError::DuplicateMappingKey { key, .. } => DagError::DuplicateKey {
            key: key.clone(),
            at,
        },
        YamlError::Budget { breach, .. } => DagError::TooComplex {
            message: budget_message(breach),
            at,
        },
        inner @ (YamlError::AliasReplayLimitExceeded { .. }
        | YamlError::AliasExpansionLimitExceeded { .. }
        | YamlError::AliasReplayStackDepthExceeded { .. }
        | YamlError::AliasReplayCounterOverflow { .. }) => DagError::TooComplex {
            message: plain_message(inner),
            at,
        },
        YamlError::MultipleDocuments { .. } => DagError::Yaml {
            message: "more than one YAML document; a DAG file holds one".to_owned(),
            at,
        },
        inner => {
            let message = plain_message(inner);
            if message.contains("limit") {
                DagError::TooComplex { message, at }
            } else {
                DagError::Yaml { message, at }
            }
        }
    }
}
