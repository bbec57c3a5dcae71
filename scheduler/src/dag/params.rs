//! Params at trigger time: typing `-p key=value` overrides after the defaults, expanding
//! `for_each` into items, and naming fan-out instances (`train[chocolate]`).

use std::collections::BTreeMap;
use std::fmt;

use thiserror::Error;

use crate::dag::basic::{ParamValue, StageName};
use crate::dag::model::{Dag, ForEach};
use crate::dag::template::for_each_param_name;

/// The type of a param, taken from its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    String,
    Number,
    Bool,
    List,
}

impl ParamType {
    /// Returns the type of a param value.
    pub fn of(value: &ParamValue) -> ParamType {
        match value {
            ParamValue::Number(_) => ParamType::Number,
            ParamValue::Bool(_) => ParamType::Bool,
            ParamValue::Array(_) => ParamType::List,
            _ => ParamType::String,
        }
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParamType::String => "a string",
            ParamType::Number => "a number",
            ParamType::Bool => "a boolean (true or false)",
            ParamType::List => "a list (`[a, b]` or `a,b`)",
        })
    }
}

/// Why params could not be resolved or expanded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParamError {
    #[error("unknown param `{name}`; known params: {}", list(known))]
    UnknownParam { name: String, known: Vec<String> },
    #[error("param `{name}` expects {expected}, got `{value}`")]
    InvalidValue {
        name: String,
        expected: ParamType,
        value: String,
    },
    #[error("`for_each` of stage `{stage}` needs param `{param}` to be a list, got `{value}`")]
    NotAList {
        stage: StageName,
        param: String,
        value: String,
    },
    #[error(
        "`for_each` of stage `{stage}` has item `{item}` twice; each item names one instance \
         (`{stage}[{item}]`), so give each a distinct value"
    )]
    DuplicateItem { stage: StageName, item: String },
    #[error("no stage with index {index}")]
    NoSuchStage { index: usize },
}

/// Refuses a fan-out whose items would name the same instance twice (`1` and `"1"` too).
fn unique_items(stage: &StageName, items: Vec<ParamValue>) -> Result<Vec<ParamValue>, ParamError> {
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    for item in &items {
        let text = param_text(item);
        if !seen.insert(text.clone()) {
            return Err(ParamError::DuplicateItem {
                stage: stage.clone(),
                item: text,
            });
        }
    }
    Ok(items)
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".to_owned()
    } else {
        names.join(", ")
    }
}

/// Renders a scalar param value as plain text: strings without quotes, numbers as written.
pub fn param_text(value: &ParamValue) -> String {
    match value {
        ParamValue::String(s) => s.clone(),
        ParamValue::Null => String::new(),
        other => other.to_string(),
    }
}

/// Names one instance of a fan-out stage: `train[chocolate]`, `shard[3]`.
pub fn instance_name(stage: &StageName, item: &ParamValue) -> String {
    format!("{stage}[{}]", param_text(item))
}

/// Converts an override typed as text into the type of the param's default.
fn convert(name: &str, default: &ParamValue, text: &str) -> Result<ParamValue, ParamError> {
    let expected = ParamType::of(default);
    let invalid = || ParamError::InvalidValue {
        name: name.to_owned(),
        expected,
        value: text.to_owned(),
    };
    match expected {
        ParamType::String => Ok(ParamValue::String(text.to_owned())),
        ParamType::Number => parse_number(text.trim()).ok_or_else(invalid),
        ParamType::Bool => match text.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(ParamValue::Bool(true)),
            "false" => Ok(ParamValue::Bool(false)),
            _ => Err(invalid()),
        },
        ParamType::List => {
            let trimmed = text.trim();
            let items: Vec<ParamValue> = if trimmed.starts_with('[') {
                let parsed: Vec<ParamValue> =
                    serde_saphyr::from_str(trimmed).map_err(|_| invalid())?;
                if parsed
                    .iter()
                    .any(|v| v.is_array() || v.is_object() || v.is_null())
                {
                    return Err(invalid());
                }
                parsed
            } else if trimmed.is_empty() {
                Vec::new()
            } else {
                // Comma form: items take the type of the default's items when they share one.
                let item_type = match default.as_array().map(Vec::as_slice) {
                    Some([first, rest @ ..])
                        if rest
                            .iter()
                            .all(|v| ParamType::of(v) == ParamType::of(first)) =>
                    {
                        ParamType::of(first)
                    }
                    _ => ParamType::String,
                };
                let mut items = Vec::new();
                for part in trimmed.split(',') {
                    let part = part.trim();
                    let item = match item_type {
                        ParamType::Number => parse_number(part),
                        ParamType::Bool => part.parse::<bool>().ok().map(ParamValue::Bool),
                        _ => Some(ParamValue::String(part.to_owned())),
                    };
                    items.push(item.ok_or_else(invalid)?);
                }
                items
            };
            Ok(ParamValue::Array(items))
        }
    }
}

fn parse_number(text: &str) -> Option<ParamValue> {
    if let Ok(i) = text.parse::<i64>() {
        return Some(ParamValue::from(i));
    }
    if let Ok(u) = text.parse::<u64>() {
        return Some(ParamValue::from(u));
    }
    let f = text.parse::<f64>().ok().filter(|f| f.is_finite())?;
    serde_json::Number::from_f64(f).map(ParamValue::Number)
}

impl Dag {
    /// Returns the params of a run: the defaults, with `overrides` (from `-p key=value`)
    /// converted to the type of each default.
    pub fn resolve_params(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, ParamValue>, ParamError> {
        let mut resolved = self.params.clone();
        for (name, text) in overrides {
            let Some(default) = self.params.get(name) else {
                return Err(ParamError::UnknownParam {
                    name: name.clone(),
                    known: self.params.keys().cloned().collect(),
                });
            };
            let value = convert(name, default, text)?;
            resolved.insert(name.clone(), value);
        }
        Ok(resolved)
    }

    /// Returns the items a fan-out stage runs once for, or `None` when the stage does not
    /// fan out. `params` are the run's resolved params. An empty list gives no instances.
    pub fn for_each_items(
        &self,
        stage: usize,
        params: &BTreeMap<String, ParamValue>,
    ) -> Result<Option<Vec<ParamValue>>, ParamError> {
        let Some(spec) = self.stages.get(stage) else {
            return Err(ParamError::NoSuchStage { index: stage });
        };
        match &spec.for_each {
            None => Ok(None),
            Some(ForEach::List(items)) => unique_items(&spec.name, items.clone()).map(Some),
            Some(ForEach::Param(template)) => {
                let param = for_each_param_name(template).unwrap_or(template.as_str());
                match params.get(param).or_else(|| self.params.get(param)) {
                    Some(ParamValue::Array(items)) => {
                        unique_items(&spec.name, items.clone()).map(Some)
                    }
                    other => Err(ParamError::NotAList {
                        stage: spec.name.clone(),
                        param: param.to_owned(),
                        value: other.map(param_text).unwrap_or_default(),
                    }),
                }
            }
        }
    }
}

impl ForEach {
    /// For `ForEach::Param`, returns the name of the list param it iterates over.
    pub fn param_name(&self) -> Option<&str> {
        match self {
            ForEach::Param(template) => for_each_param_name(template),
            ForEach::List(_) => None,
        }
    }
}
