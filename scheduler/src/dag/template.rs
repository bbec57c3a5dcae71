//! Templates in stage commands, env values and `for_each` (`{{ params.rows }}`,
//! `{{ run.id }}`, `{{ item }}`): checking them when the file is read and rendering them
//! when a stage instance is dispatched.
//!
//! Templates are minijinja with strict undefined behaviour: a reference to anything that is
//! not there is an error, never an empty string.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use minijinja::value::{Serde, ValueKind};
use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};
use thiserror::Error;

use crate::dag::basic::ParamValue;

/// What a template may refer to when rendered.
#[derive(Debug, Clone, Copy)]
pub struct TemplateContext<'a> {
    /// Resolved params (defaults with the run's overrides), as `params.<name>`.
    pub params: &'a BTreeMap<String, ParamValue>,
    /// `run.id`.
    pub run_id: &'a str,
    /// `run.logical_time`: the schedule slot the run stands for; renders as an empty string
    /// for a run that stands for none.
    pub logical_time: Option<&'a str>,
    /// `item`: the fan-out item of this stage instance; referring to it without one is an
    /// error.
    pub item: Option<&'a ParamValue>,
}

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TemplateError {
    #[error("template `{template}` has a syntax error: {detail}")]
    Syntax { template: String, detail: String },
    #[error("template `{template}` refers to something undefined: {detail}")]
    Undefined { template: String, detail: String },
    #[error("template `{template}` failed to render: {detail}")]
    Render { template: String, detail: String },
    #[error("template `{template}` cannot be used safely in a shell command: {detail}")]
    Shell { template: String, detail: String },
}

/// Whether `text` has template syntax at all; text without it is used as is.
pub(crate) fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// The shared environment: built once, since building one per render would dominate the
/// cost of rendering the short templates DAG files hold.
fn environment() -> &'static Environment<'static> {
    static ENVIRONMENT: OnceLock<Environment<'static>> = OnceLock::new();
    ENVIRONMENT.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let mut syntax = minijinja::syntax::SyntaxConfig::builder();
        syntax.keep_trailing_newline(true);
        if let Ok(config) = syntax.build() {
            env.set_syntax(config);
        }
        env.set_formatter(|out, state, value| {
            // A shell-form command: the value goes to the environment, a marker to the text.
            if let Some(marker) = crate::dag::shell::capture(|| plain_text(value)) {
                return out.write_str(marker).map_err(minijinja::Error::from);
            }
            match value.kind() {
                ValueKind::Bool => out
                    .write_str(&plain_text(value))
                    .map_err(minijinja::Error::from),
                _ => minijinja::escape_formatter(out, state, value),
            }
        });
        env
    })
}

/// A rendered value as text: booleans print as YAML and shells spell them (`true`), not as
/// Python (`True`); everything else as minijinja prints it.
fn plain_text(value: &Value) -> String {
    match value.kind() {
        ValueKind::Bool if value.is_true() => "true".to_owned(),
        ValueKind::Bool => "false".to_owned(),
        _ => value.to_string(),
    }
}

/// Renders a template from a DAG file. Strings without template syntax come back unchanged
/// without touching the template engine. Scalars render as plain text: strings without
/// quotes, numbers as written, booleans as `true`/`false`.
pub fn render_template(template: &str, ctx: &TemplateContext<'_>) -> Result<String, TemplateError> {
    if !is_template(template) {
        return Ok(template.to_owned());
    }
    // Only the params the template names are converted: converting all of them for every
    // render made a fan-out over a long list param quadratic. Validation only lets a template
    // reach a param as `params.NAME`, so a param whose name is not in the text is never read.
    let named: BTreeMap<&str, &ParamValue> = ctx
        .params
        .iter()
        .filter(|(name, _)| template.contains(name.as_str()))
        .map(|(name, value)| (name.as_str(), value))
        .collect();
    let mut root: Vec<(&str, Value)> = vec![
        ("params", Value::from(Serde(named))),
        (
            "run",
            Value::from_pairs([
                ("id", Value::from(ctx.run_id)),
                ("logical_time", Value::from(ctx.logical_time.unwrap_or(""))),
            ]),
        ),
    ];
    if let Some(item) = ctx.item {
        root.push(("item", Value::from(Serde(item))));
    }
    environment()
        .render_str(template, Value::from_pairs(root))
        .map_err(|e| {
            let detail = e.to_string();
            let template = template.to_owned();
            match e.kind() {
                ErrorKind::SyntaxError => TemplateError::Syntax { template, detail },
                ErrorKind::UndefinedError => TemplateError::Undefined { template, detail },
                _ => TemplateError::Render { template, detail },
            }
        })
}

/// What is wrong with a template found in a DAG file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TemplateProblem {
    UnknownReference(String),
    ItemOutsideForEach,
}

/// Returns the dotted names a template refers to (`params.rows`, `item`), or its syntax
/// error.
pub(crate) fn template_references(text: &str) -> Result<Vec<String>, String> {
    let template = environment()
        .template_from_str(text)
        .map_err(|e| e.detail().unwrap_or("invalid syntax").to_owned())?;
    let mut names: Vec<String> = template.undeclared_variables(true).into_iter().collect();
    names.sort();
    Ok(names)
}

/// Checks the references of one template against what will exist when it is rendered.
pub(crate) fn reference_problems(
    references: &[String],
    params: &BTreeMap<String, ParamValue>,
    fan_out: bool,
) -> Vec<TemplateProblem> {
    let mut problems = Vec::new();
    for reference in references {
        let mut parts = reference.split('.');
        let ok = match (parts.next(), parts.next(), parts.next()) {
            (Some("params"), Some(name), None) => params.contains_key(name),
            (Some("run"), Some("id" | "logical_time"), None) => true,
            (Some("item"), None, None) => {
                if !fan_out {
                    problems.push(TemplateProblem::ItemOutsideForEach);
                }
                true
            }
            _ => false,
        };
        if !ok {
            problems.push(TemplateProblem::UnknownReference(reference.clone()));
        }
    }
    problems
}

/// For `for_each: "{{ params.NAME }}"`, returns `NAME`; `None` for any other shape.
pub(crate) fn for_each_param_name(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let name = inner.strip_prefix("params.")?;
    crate::dag::values::is_identifier(name).then_some(name)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn params() -> BTreeMap<String, ParamValue> {
        BTreeMap::from([
            ("rows".to_owned(), json!(1000)),
            ("min_accuracy".to_owned(), json!(0.8)),
            ("label".to_owned(), json!("cake")),
            ("flag".to_owned(), json!(true)),
            ("flavours".to_owned(), json!(["chocolate", "vanilla"])),
        ])
    }

    #[test]
    fn renders_params_run_and_item_as_plain_text() {
        let params = params();
        let item = json!("chocolate");
        let ctx = TemplateContext {
            params: &params,
            run_id: "run-42",
            logical_time: Some("2024-03-01T02:00:00Z"),
            item: Some(&item),
        };
        let rendered = render_template(
            "{{ params.rows }} {{ params.min_accuracy }} {{ params.label }} {{ params.flag }} \
             {{ run.id }} {{ run.logical_time }} {{ item }}",
            &ctx,
        );
        assert_eq!(
            rendered.as_deref(),
            Ok("1000 0.8 cake true run-42 2024-03-01T02:00:00Z chocolate")
        );
        assert_eq!(
            render_template("plain text", &ctx).as_deref(),
            Ok("plain text")
        );
        assert_eq!(
            render_template("echo {{ item }}\n", &ctx).as_deref(),
            Ok("echo chocolate\n")
        );
    }

    #[test]
    fn params_whose_names_overlap_render_from_the_one_named() {
        let mut params = params();
        params.insert("rows_max".to_owned(), json!(5000));
        let ctx = TemplateContext {
            params: &params,
            run_id: "r",
            logical_time: None,
            item: None,
        };
        assert_eq!(
            render_template("{{ params.rows_max }}/{{ params.rows }}", &ctx).as_deref(),
            Ok("5000/1000")
        );
    }

    #[test]
    fn unknown_references_are_errors_not_empty_strings() {
        let params = params();
        let ctx = TemplateContext {
            params: &params,
            run_id: "r",
            logical_time: None,
            item: None,
        };
        assert!(matches!(
            render_template("{{ params.nope }}", &ctx),
            Err(TemplateError::Undefined { .. })
        ));
        assert!(matches!(
            render_template("{{ item }}", &ctx),
            Err(TemplateError::Undefined { .. })
        ));
        assert!(matches!(
            render_template("{{ oops", &ctx),
            Err(TemplateError::Syntax { .. })
        ));
        assert_eq!(
            render_template("[{{ run.logical_time }}]", &ctx).as_deref(),
            Ok("[]")
        );
    }

    #[test]
    fn references_are_checked_against_declared_params() {
        let params = params();
        let refs = template_references("{{ params.rows }}{{ params.nope }}{{ item }}{{ x.y }}")
            .expect("valid syntax");
        assert_eq!(refs, vec!["item", "params.nope", "params.rows", "x.y"]);
        assert_eq!(
            reference_problems(&refs, &params, false),
            vec![
                TemplateProblem::ItemOutsideForEach,
                TemplateProblem::UnknownReference("params.nope".into()),
                TemplateProblem::UnknownReference("x.y".into()),
            ]
        );
        assert!(template_references("{{ params.rows").is_err());
    }

    #[test]
    fn rendering_is_cheap_enough_for_thousands_of_instances() {
        let params = params();
        let item = json!(7);
        let ctx = TemplateContext {
            params: &params,
            run_id: "r",
            logical_time: None,
            item: Some(&item),
        };
        let start = std::time::Instant::now();
        for _ in 0..5_000 {
            let out = render_template("--flavour={{ item }} --rows={{ params.rows }}", &ctx);
            assert_eq!(out.as_deref(), Ok("--flavour=7 --rows=1000"));
        }
        eprintln!("5,000 renders in {:?}", start.elapsed());
        // A hang guard only; render speed is what the scheduler benchmark measures.
        assert!(start.elapsed() < std::time::Duration::from_secs(30));
    }

    #[test]
    fn for_each_param_name_accepts_only_a_single_param_reference() {
        assert_eq!(
            for_each_param_name("{{ params.flavours }}"),
            Some("flavours")
        );
        assert_eq!(for_each_param_name("{{params.f}}"), Some("f"));
        assert_eq!(for_each_param_name("{{ params.f }} x"), None);
        assert_eq!(for_each_param_name("{{ run.id }}"), None);
        assert_eq!(for_each_param_name("flavours"), None);
    }
}
