//! `when:` conditions: CEL expressions compiled and checked once, when the DAG file is read,
//! and evaluated when their stage's trigger rule would let it run.
//!
//! An expression sees three variables:
//! - `params`: the run's params with their types (`params.min_accuracy`, `params["rows"]`);
//! - `stages`: the stages this one needs, directly or through others, by name:
//!   `stages.train.state` (`"succeeded"`, `"failed"`, `"skipped"`, ...),
//!   `stages.train.metrics.accuracy` (doubles from `metrics.json`) and
//!   `stages.train.instances` (one `{item, state, metrics}` per instance; a fan-out stage has
//!   one per item);
//! - `item`: the fan-out item, in a stage with `for_each`.
//!
//! Checking is done on the parsed expression: a `params.X` names a declared param, a
//! `stages.S` names an upstream stage and reads one of its fields, and no other variable is
//! used. What cannot be known before the run (a metric a stage will report, the type of a
//! value) is found when the condition is evaluated, and fails the stage.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};
use cel::objects::{Key, Map};
use cel::{Context, Program, Value};
use thiserror::Error;

use crate::dag::basic::ParamValue;

/// Longest condition accepted, in characters. The CEL parser and evaluator recurse once per
/// level of the expression; within this length every shape of expression stays far inside
/// [`CEL_STACK_BYTES`]. Real conditions are a line or two.
pub const MAX_CONDITION_CHARS: usize = 2_000;

/// Stack of the thread that parses and evaluates conditions: the CEL parser needs tens of
/// kilobytes per level of nesting in a debug build, more than a tokio worker's 2 MiB holds
/// for a dozen parentheses. Only touched pages are ever allocated.
const CEL_STACK_BYTES: usize = 256 << 20;

/// The fields every entry of `stages` has.
pub const STAGE_FIELDS: [&str; 3] = ["state", "metrics", "instances"];

/// A compiled, checked `when:` expression.
#[derive(Clone)]
pub struct Condition {
    source: String,
    program: Arc<Program>,
    params: Reads,
    /// The upstream stages the expression reads, sorted.
    stages: Vec<String>,
    reads_instances: bool,
}

/// Which entries of a map variable an expression reads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reads {
    /// Only these names, each spelled out (`params.x`, `params["x"]`).
    Names(BTreeSet<String>),
    /// The map as a whole (`"x" in params`, `stages.all(...)`).
    All,
}

impl Reads {
    fn includes(&self, name: &str) -> bool {
        match self {
            Reads::Names(names) => names.contains(name),
            Reads::All => true,
        }
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Condition").field(&self.source).finish()
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl PartialEq for Condition {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// What a condition may refer to, known when the DAG file is read.
#[derive(Clone, Copy)]
pub(crate) struct ConditionScope<'a> {
    /// Declared params.
    pub(crate) params: &'a BTreeMap<String, ParamValue>,
    /// Every stage in the file.
    pub(crate) all_stages: &'a BTreeSet<String>,
    /// Whether the conditioned stage needs this stage, directly or through others. Asked
    /// only for the stages an expression names, so a long chain is not walked per stage.
    pub(crate) is_upstream: &'a (dyn Fn(&str) -> bool + Sync),
    /// Every stage the conditioned stage needs, directly or through others, sorted; asked
    /// only when an expression reads `stages` as a whole.
    pub(crate) upstream: &'a (dyn Fn() -> Vec<String> + Sync),
    /// Whether the stage has `for_each` (and so an `item`).
    pub(crate) fan_out: bool,
}

/// Why a `when:` expression was refused when the file was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConditionProblem {
    /// The parser's message, at a 1-based line and column inside the expression.
    Syntax {
        message: String,
        line: usize,
        column: usize,
    },
    UnknownParam(String),
    UnknownStage(String),
    NotUpstream(String),
    UnknownStageField {
        stage: String,
        field: String,
    },
    UnknownVariable(String),
    TooLong {
        chars: usize,
    },
}

/// Why a condition could not decide whether its stage runs.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ConditionError {
    #[error("when `{expression}` could not be evaluated: {cause}")]
    Evaluation { expression: String, cause: String },
    #[error("when `{expression}` gave {found}, not true or false")]
    NotBool { expression: String, found: String },
}

/// What a condition is evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct ConditionInput<'a> {
    /// The run's resolved params.
    pub params: &'a BTreeMap<String, ParamValue>,
    /// The fan-out item of the instance being decided.
    pub item: Option<&'a ParamValue>,
}

/// One upstream stage as a condition sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct StageView {
    /// The stage's state: its instance's, or for a fan-out the summary of its instances.
    pub state: String,
    /// The stage's metrics; for a fan-out, each key reported by every instance with its
    /// lowest value.
    pub metrics: BTreeMap<String, f64>,
    /// Each instance's item (None outside a fan-out), state and metrics.
    pub instances: Vec<InstanceView>,
}

/// One instance of an upstream stage as a condition sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceView {
    pub item: Option<ParamValue>,
    pub state: String,
    pub metrics: BTreeMap<String, f64>,
}

impl Condition {
    /// Compiles `source` and checks what it refers to against `scope`.
    #[cfg(test)]
    pub(crate) fn compile(
        source: &str,
        scope: &ConditionScope<'_>,
    ) -> Result<Condition, Vec<ConditionProblem>> {
        on_cel_stack(|| Condition::check(source, Condition::parse(source)?, scope))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Parses `source`. Call it on the CEL stack ([`on_cel_stack`]); the program may be
    /// checked against several scopes (a `when` in `defaults:` applies to every stage).
    pub(crate) fn parse(source: &str) -> Result<Arc<Program>, Vec<ConditionProblem>> {
        let chars = source.chars().count();
        if chars > MAX_CONDITION_CHARS {
            return Err(vec![ConditionProblem::TooLong { chars }]);
        }
        let program = Program::compile(source).map_err(|errors| {
            errors
                .errors
                .iter()
                .map(|e| ConditionProblem::Syntax {
                    message: e.msg.clone(),
                    line: usize::try_from(e.pos.0).unwrap_or(1).max(1),
                    column: usize::try_from(e.pos.1).unwrap_or(1).max(1),
                })
                .collect::<Vec<_>>()
        })?;
        Ok(Arc::new(program))
    }

    /// Checks what a parsed `program` refers to against `scope`. Call it on the CEL stack:
    /// it walks the expression recursively.
    pub(crate) fn check(
        source: &str,
        program: Arc<Program>,
        scope: &ConditionScope<'_>,
    ) -> Result<Condition, Vec<ConditionProblem>> {
        let mut walk = Walk {
            scope,
            bound: Vec::new(),
            problems: Vec::new(),
            params: Reads::Names(BTreeSet::new()),
            stages: Reads::Names(BTreeSet::new()),
            reads_instances: false,
        };
        walk.expr(program.expression());
        if !walk.problems.is_empty() {
            let mut problems = walk.problems;
            problems.dedup();
            return Err(problems);
        }
        let stages = match walk.stages {
            Reads::Names(names) => names.into_iter().collect(),
            Reads::All => (scope.upstream)(),
        };
        Ok(Condition {
            source: source.to_owned(),
            program,
            params: walk.params,
            stages,
            reads_instances: walk.reads_instances,
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The upstream stages the condition reads: those [`Condition::evaluate`] needs a
    /// [`StageView`] of.
    pub fn stages_read(&self) -> &[String] {
        &self.stages
    }

    /// Whether the condition reads `instances` of some stage; without it, the views'
    /// instance lists may be left empty.
    pub fn reads_instances(&self) -> bool {
        self.reads_instances
    }

    /// Evaluates the condition. `stages` holds a view of every stage in
    /// [`Condition::stages_read`].
    pub fn evaluate(
        &self,
        input: &ConditionInput<'_>,
        stages: &BTreeMap<String, StageView>,
    ) -> Result<bool, ConditionError> {
        let outcome = on_cel_stack(|| {
            let params: Vec<(Key, Value)> = input
                .params
                .iter()
                .filter(|(name, _)| self.params.includes(name))
                .map(|(name, value)| (Key::from(name.clone()), json_value(value)))
                .collect();
            let stages: Vec<(Key, Value)> = stages
                .iter()
                .filter(|(name, _)| self.stages.binary_search(name).is_ok())
                .map(|(name, view)| (Key::from(name.clone()), stage_value(view)))
                .collect();
            let mut context = Context::default();
            context.add_variable_from_value("params", map_value(params));
            context.add_variable_from_value("stages", map_value(stages));
            if let Some(item) = input.item {
                context.add_variable_from_value("item", json_value(item));
            }
            match self.program.execute(&context) {
                Ok(Value::Bool(b)) => Outcome::Decided(b),
                Ok(other) => Outcome::NotBool(describe(&other)),
                Err(e) => Outcome::Failed(e.to_string()),
            }
        });
        let expression = self.source.clone();
        match outcome {
            Ok(Outcome::Decided(b)) => Ok(b),
            Ok(Outcome::NotBool(found)) => Err(ConditionError::NotBool { expression, found }),
            Ok(Outcome::Failed(cause)) | Err(cause) => {
                Err(ConditionError::Evaluation { expression, cause })
            }
        }
    }
}

/// What evaluating an expression gave, carried back from the CEL thread.
enum Outcome {
    Decided(bool),
    NotBool(String),
    Failed(String),
}

/// A fresh pending walk over an expression, collecting what it reads and what is wrong.
struct Walk<'s, 'a> {
    scope: &'s ConditionScope<'a>,
    /// Names bound by enclosing comprehensions (`xs.all(x, ...)`).
    bound: Vec<String>,
    problems: Vec<ConditionProblem>,
    params: Reads,
    stages: Reads,
    reads_instances: bool,
}

impl Walk<'_, '_> {
    fn is_free(&self, name: &str) -> bool {
        !self.bound.iter().any(|b| b == name)
    }

    /// The variable and entry an access like `v.name` or `v["name"]` reads, if `e` is one.
    fn named_entry<'e>(&self, e: &'e IdedExpr) -> Option<(&'e str, &'e str)> {
        match &e.expr {
            Expr::Select(select) => match &select.operand.expr {
                Expr::Ident(var) if self.is_free(var) => Some((var, &select.field)),
                _ => None,
            },
            Expr::Call(call) if call.func_name == "_[_]" && call.args.len() == 2 => {
                match (&call.args[0].expr, &call.args[1].expr) {
                    (Expr::Ident(var), Expr::Literal(LiteralValue::String(key)))
                        if self.is_free(var) =>
                    {
                        Some((var, key.inner()))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn param(&mut self, name: &str) {
        if !self.scope.params.contains_key(name) {
            self.problems
                .push(ConditionProblem::UnknownParam(name.to_owned()));
        }
        if let Reads::Names(names) = &mut self.params {
            names.insert(name.to_owned());
        }
    }

    fn stage(&mut self, name: &str) -> bool {
        let problem = if (self.scope.is_upstream)(name) {
            None
        } else if self.scope.all_stages.contains(name) {
            Some(ConditionProblem::NotUpstream(name.to_owned()))
        } else {
            Some(ConditionProblem::UnknownStage(name.to_owned()))
        };
        if let Reads::Names(names) = &mut self.stages {
            names.insert(name.to_owned());
        }
        match problem {
            Some(p) => {
                self.problems.push(p);
                false
            }
            None => true,
        }
    }

    fn expr(&mut self, e: &IdedExpr) {
        // `stages.S.field` and `stages["S"].field`: the stage and the field it reads.
        if let Some((outer, field)) = self.field_of(e)
            && let Some(("stages", stage)) = self.named_entry(outer)
        {
            if self.stage(stage) && !STAGE_FIELDS.contains(&field) {
                self.problems.push(ConditionProblem::UnknownStageField {
                    stage: stage.to_owned(),
                    field: field.to_owned(),
                });
            }
            self.reads_instances |= field == "instances";
            return;
        }
        if let Some((var, name)) = self.named_entry(e) {
            match var {
                "params" => return self.param(name),
                "stages" => {
                    // The whole stage entry, e.g. `has(stages.a.metrics)` goes through the
                    // branch above; `stages.a` alone may be passed to a macro.
                    self.reads_instances = true;
                    self.stage(name);
                    return;
                }
                _ => {}
            }
        }
        match &e.expr {
            Expr::Ident(name) => self.ident(name),
            Expr::Select(select) => {
                self.reads_instances |= select.field == "instances";
                self.expr(&select.operand);
            }
            Expr::Call(call) => {
                if let Some(target) = &call.target {
                    self.expr(target);
                }
                for arg in &call.args {
                    self.expr(arg);
                }
            }
            Expr::Comprehension(c) => {
                self.expr(&c.iter_range);
                self.expr(&c.accu_init);
                let mut names = vec![c.iter_var.clone(), c.accu_var.clone()];
                names.extend(c.iter_var2.clone());
                let depth = self.bound.len();
                self.bound.extend(names);
                self.expr(&c.loop_cond);
                self.expr(&c.loop_step);
                self.expr(&c.result);
                self.bound.truncate(depth);
            }
            Expr::List(list) => list.elements.iter().for_each(|x| self.expr(x)),
            Expr::Map(map) => {
                for entry in &map.entries {
                    match &entry.expr {
                        EntryExpr::StructField(f) => self.expr(&f.value),
                        EntryExpr::MapEntry(m) => {
                            self.expr(&m.key);
                            self.expr(&m.value);
                        }
                    }
                }
            }
            Expr::Struct(s) => {
                for entry in &s.entries {
                    match &entry.expr {
                        EntryExpr::StructField(f) => self.expr(&f.value),
                        EntryExpr::MapEntry(m) => {
                            self.expr(&m.key);
                            self.expr(&m.value);
                        }
                    }
                }
            }
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }

    /// `x.field` or `x["field"]` for any `x`: the operand and the field.
    fn field_of<'e>(&self, e: &'e IdedExpr) -> Option<(&'e IdedExpr, &'e str)> {
        match &e.expr {
            Expr::Select(select) => Some((&select.operand, &select.field)),
            Expr::Call(call) if call.func_name == "_[_]" && call.args.len() == 2 => {
                match &call.args[1].expr {
                    Expr::Literal(LiteralValue::String(key)) => Some((&call.args[0], key.inner())),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn ident(&mut self, name: &str) {
        if !self.is_free(name) || name.starts_with('@') {
            return;
        }
        match name {
            "params" => self.params = Reads::All,
            "stages" => {
                self.stages = Reads::All;
                self.reads_instances = true;
                // Every stage the condition may read must be upstream; the whole map holds
                // only those.
            }
            "item" if self.scope.fan_out => {}
            _ => self
                .problems
                .push(ConditionProblem::UnknownVariable(name.to_owned())),
        }
    }
}

/// Runs `work` on a thread with [`CEL_STACK_BYTES`] of stack and waits for it. An error
/// says why it could not run.
pub(crate) fn on_cel_stack<T: Send>(work: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("cel".to_owned())
            .stack_size(CEL_STACK_BYTES)
            .spawn_scoped(scope, work)
            .map_err(|e| format!("cannot start a thread for the expression: {e}"))?;
        handle
            .join()
            .map_err(|_| "the expression evaluator failed unexpectedly".to_owned())
    })
}

fn map_value(entries: Vec<(Key, Value)>) -> Value {
    Value::Map(Map {
        map: Arc::new(entries.into_iter().collect()),
    })
}

/// A param or item as CEL sees it: whole numbers are `int`, other numbers `double`.
fn json_value(value: &ParamValue) -> Value {
    match value {
        ParamValue::Null => Value::Null,
        ParamValue::Bool(b) => Value::Bool(*b),
        ParamValue::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        ParamValue::String(s) => Value::String(Arc::new(s.clone())),
        ParamValue::Array(items) => Value::List(Arc::new(items.iter().map(json_value).collect())),
        ParamValue::Object(entries) => map_value(
            entries
                .iter()
                .map(|(k, v)| (Key::from(k.clone()), json_value(v)))
                .collect(),
        ),
    }
}

fn metrics_value(metrics: &BTreeMap<String, f64>) -> Value {
    map_value(
        metrics
            .iter()
            .map(|(k, v)| (Key::from(k.clone()), Value::Float(*v)))
            .collect(),
    )
}

fn stage_value(view: &StageView) -> Value {
    let instances = view
        .instances
        .iter()
        .map(|i| {
            map_value(vec![
                (
                    Key::from("item".to_owned()),
                    i.item.as_ref().map_or(Value::Null, json_value),
                ),
                (
                    Key::from("state".to_owned()),
                    Value::String(Arc::new(i.state.clone())),
                ),
                (Key::from("metrics".to_owned()), metrics_value(&i.metrics)),
            ])
        })
        .collect();
    map_value(vec![
        (
            Key::from("state".to_owned()),
            Value::String(Arc::new(view.state.clone())),
        ),
        (
            Key::from("metrics".to_owned()),
            metrics_value(&view.metrics),
        ),
        (
            Key::from("instances".to_owned()),
            Value::List(Arc::new(instances)),
        ),
    ])
}

/// A result's type and value for an error message, kept short.
fn describe(value: &Value) -> String {
    let text = match value {
        Value::Int(i) => format!("int {i}"),
        Value::UInt(u) => format!("uint {u}"),
        Value::Float(f) => format!("double {f}"),
        Value::String(s) => format!("string {:?}", s.as_str()),
        Value::Null => "null".to_owned(),
        Value::List(l) => format!("a list of {} items", l.len()),
        Value::Map(m) => format!("a map of {} entries", m.map.len()),
        other => format!("{other:?}"),
    };
    let mut short: String = text.chars().take(120).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

#[cfg(test)]
#[path = "condition_tests.rs"]
mod tests;
