//! What can be wrong with a DAG file: one [`DagError`] variant per mistake, each with its
//! place in the file and a fix ([`DagError::help`]), collected into [`DagErrors`].

use std::fmt;
use std::time::Duration;

use thiserror::Error;

use crate::cron::CronError;
use crate::dag::basic::{Location, StageName};

/// The part of a DAG file an error is about, printed after the message (` in stage `x``).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The top level of the file.
    Dag,
    /// The `defaults:` block.
    Defaults,
    /// A stage (with `defaults:` merged in).
    Stage(StageName),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Dag => Ok(()),
            Scope::Defaults => f.write_str(" in `defaults`"),
            Scope::Stage(name) => write!(f, " in stage `{name}`"),
        }
    }
}

/// Why an `outputs:` entry was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputProblem {
    Empty,
    PathSeparator,
    DotName,
}

impl fmt::Display for OutputProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OutputProblem::Empty => "is empty",
            OutputProblem::PathSeparator => "contains a path separator",
            OutputProblem::DotName => "is `.` or `..`",
        })
    }
}

/// Why a `mounts:` entry was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountProblem {
    /// Not `host:container` or `host:container:mode`.
    Shape,
    HostNotAbsolute,
    ContainerNotAbsolute,
    UnknownMode(String),
}

impl fmt::Display for MountProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MountProblem::Shape => f.write_str("is not `host:container[:ro|rw]`"),
            MountProblem::HostNotAbsolute => f.write_str("has a host path that is not absolute"),
            MountProblem::ContainerNotAbsolute => {
                f.write_str("has a container path that is not absolute")
            }
            MountProblem::UnknownMode(mode) => write!(f, "has unknown mode `{mode}`"),
        }
    }
}

fn fmt_duration(d: &Duration) -> String {
    humantime::format_duration(*d).to_string()
}

fn fmt_path(path: &[StageName]) -> String {
    let names: Vec<&str> = path.iter().map(StageName::as_str).collect();
    names.join(" -> ")
}

/// Declares [`DagError`] with [`DagError::location`]: every variant must carry `at`, and
/// adding one to the enum is enough for `location` to know it.
macro_rules! dag_errors {
    ($(
        $(#[$meta:meta])*
        $variant:ident { $($field:ident: $ty:ty),* $(,)? }
    ),* $(,)?) => {
        /// One mistake in a DAG file. Every variant carries `at`, the place in the file it is
        /// about (line 0 when the YAML has none).
        #[derive(Debug, Clone, PartialEq, Error)]
        pub enum DagError {
            $($(#[$meta])* $variant { $($field: $ty),* },)*
        }

        impl DagError {
            /// Returns where in the file the error is; line 0 when unknown.
            pub fn location(&self) -> Location {
                match self {
                    $(DagError::$variant { at, .. })|* => *at,
                }
            }
        }
    };
}

dag_errors! {
    #[error("empty DAG file")]
    EmptyFile { at: Location },
    #[error("DAG file is {bytes} bytes, more than the limit of {limit}")]
    TooLarge {
        bytes: usize,
        limit: usize,
        at: Location,
    },
    #[error("control character U+{code:04X} in DAG file")]
    ControlCharacter { code: u32, at: Location },
    #[error("invalid YAML: {message}")]
    Yaml { message: String, at: Location },
    #[error("DAG file is too complex: {message}")]
    TooComplex { message: String, at: Location },
    #[error("unknown field `{field}`")]
    UnknownField {
        field: String,
        allowed: Vec<String>,
        suggestion: Option<String>,
        at: Location,
    },
    #[error("missing field `{field}`")]
    MissingField { field: String, at: Location },
    #[error("expected {expected}, found {found}")]
    WrongType {
        found: String,
        expected: String,
        at: Location,
    },
    #[error("unknown value `{value}`")]
    UnknownVariant {
        value: String,
        allowed: Vec<String>,
        suggestion: Option<String>,
        at: Location,
    },
    #[error("duplicate key{}", key.as_ref().map(|k| format!(" `{k}`")).unwrap_or_default())]
    DuplicateKey { key: Option<String>, at: Location },
    #[error("invalid DAG name `{name}`")]
    InvalidDagName { name: String, at: Location },
    #[error("invalid stage name `{name}`")]
    InvalidStageName { name: String, at: Location },
    #[error("duplicate stage name `{name}`, first defined on line {first_line}")]
    DuplicateStage {
        name: StageName,
        first_line: usize,
        at: Location,
    },
    #[error("`stages` is empty")]
    NoStages { at: Location },
    #[error("stage `{stage}` needs unknown stage `{missing}`")]
    UnknownDependency {
        stage: StageName,
        missing: String,
        suggestion: Option<String>,
        at: Location,
    },
    #[error("stage `{stage}` needs itself")]
    SelfDependency { stage: StageName, at: Location },
    #[error("stage `{stage}` lists `{dependency}` in `needs` more than once")]
    DuplicateDependency {
        stage: StageName,
        dependency: StageName,
        at: Location,
    },
    #[error("dependency cycle: {}", fmt_path(path))]
    Cycle { path: Vec<StageName>, at: Location },
    #[error("`{field}` value `{value}` has no unit{scope}")]
    DurationWithoutUnit {
        field: &'static str,
        value: String,
        scope: Scope,
        at: Location,
    },
    #[error("invalid duration `{value}` for `{field}`{scope}")]
    InvalidDuration {
        field: &'static str,
        value: String,
        scope: Scope,
        at: Location,
    },
    #[error("`timeout` is zero{scope}")]
    ZeroTimeout { scope: Scope, at: Location },
    #[error(
        "retry `backoff` {} is longer than `max_backoff` {}{scope}",
        fmt_duration(backoff),
        fmt_duration(max_backoff)
    )]
    BackoffAboveMax {
        backoff: Duration,
        max_backoff: Duration,
        scope: Scope,
        at: Location,
    },
    #[error("`cpus` must be a positive number, got {value}{scope}")]
    InvalidCpus {
        value: f64,
        scope: Scope,
        at: Location,
    },
    #[error("invalid `memory` quantity `{value}`{scope}")]
    InvalidMemory {
        value: String,
        scope: Scope,
        at: Location,
    },
    #[error("invalid environment variable name `{name}`{scope}")]
    InvalidEnvName {
        name: String,
        scope: Scope,
        at: Location,
    },
    #[error("environment variable `{name}` is reserved{scope}")]
    ReservedEnvName {
        name: String,
        scope: Scope,
        at: Location,
    },
    #[error("invalid secret name `{name}`{scope}")]
    InvalidSecretName {
        name: String,
        scope: Scope,
        at: Location,
    },
    #[error("`command` is empty{scope}")]
    EmptyCommand { scope: Scope, at: Location },
    #[error("process stage `{stage}` has no `command`")]
    ProcessStageWithoutCommand { stage: StageName, at: Location },
    #[error("docker stage `{stage}` has no `image`")]
    MissingImage { stage: StageName, at: Location },
    #[error("output `{output}` {problem}{scope}")]
    InvalidOutput {
        output: String,
        problem: OutputProblem,
        scope: Scope,
        at: Location,
    },
    #[error("output `{output}` is listed twice{scope}")]
    DuplicateOutput {
        output: String,
        scope: Scope,
        at: Location,
    },
    #[error("asset name `{name}` is not valid{scope}")]
    InvalidAssetName {
        name: String,
        scope: Scope,
        at: Location,
    },
    #[error("a trigger has no kind")]
    TriggerWithoutKind { at: Location },
    #[error("trigger mode `{mode}` is unknown")]
    UnknownAssetMode { mode: String, at: Location },
    #[error("`mode` only applies to an asset trigger")]
    ModeWithoutAsset { at: Location },
    #[error("an asset trigger names no asset")]
    EmptyAssetTrigger { at: Location },
    #[error("asset `{name}` is listed twice in one trigger")]
    DuplicateTriggerAsset { name: String, at: Location },
    #[error("asset triggers form a cycle: {path}")]
    AssetCycle { path: String, at: Location },
    #[error("mount `{mount}` {problem}{scope}")]
    InvalidMount {
        mount: String,
        problem: MountProblem,
        scope: Scope,
        at: Location,
    },
    #[error("`when` is empty{scope}")]
    EmptyWhen { scope: Scope, at: Location },
    #[error("invalid `for_each` `{value}` in stage `{stage}`")]
    InvalidForEach {
        stage: StageName,
        value: String,
        at: Location,
    },
    #[error("`for_each` in stage `{stage}` names unknown param `{param}`")]
    ForEachUnknownParam {
        stage: StageName,
        param: String,
        declared: Vec<String>,
        at: Location,
    },
    #[error("`for_each` in stage `{stage}` names param `{param}`, which is not a list")]
    ForEachParamNotList {
        stage: StageName,
        param: String,
        at: Location,
    },
    #[error("`for_each` items in stage `{stage}` must be strings, numbers or booleans")]
    ForEachItemNotScalar { stage: StageName, at: Location },
    #[error("`max_parallel` is 0 in stage `{stage}`")]
    MaxParallelZero { stage: StageName, at: Location },
    #[error("`max_parallel` without `for_each` in stage `{stage}`")]
    MaxParallelWithoutForEach { stage: StageName, at: Location },
    #[error("`{{{{ item }}}}` used outside a fan-out stage{scope}")]
    ItemOutsideForEach { scope: Scope, at: Location },
    #[error("template syntax error in `{template}`{scope}: {detail}")]
    TemplateSyntax {
        template: String,
        detail: String,
        scope: Scope,
        at: Location,
    },
    #[error("template references unknown `{reference}`{scope}")]
    UnknownTemplateReference {
        reference: String,
        declared: Vec<String>,
        suggestion: Option<String>,
        scope: Scope,
        at: Location,
    },
    #[error("invalid cron expression `{expression}`: {error}")]
    InvalidCron {
        expression: String,
        error: CronError,
        at: Location,
    },
    #[error("unknown time zone `{name}`")]
    UnknownTimezone {
        name: String,
        suggestion: Option<String>,
        at: Location,
    },
    #[error("`max_active_runs` is 0")]
    MaxActiveRunsZero { at: Location },
    #[error("invalid param name `{name}`")]
    InvalidParamName { name: String, at: Location },
    #[error("param `{name}` is {found}, expected a string, number, boolean or a list of them")]
    InvalidParamValue {
        name: String,
        found: &'static str,
        at: Location,
    },
    #[error("`{field}` is not allowed in `defaults`")]
    NotAllowedInDefaults { field: &'static str, at: Location },
    #[error("syntax error in `when` of stage `{stage}`: {detail}")]
    WhenSyntax {
        stage: StageName,
        expression: String,
        detail: String,
        at: Location,
    },
    #[error("`when` of stage `{stage}` uses unknown param `{param}`")]
    WhenUnknownParam {
        stage: StageName,
        param: String,
        declared: Vec<String>,
        suggestion: Option<String>,
        at: Location,
    },
    #[error("`when` of stage `{stage}` reads unknown stage `{reference}`")]
    WhenUnknownStage {
        stage: StageName,
        reference: String,
        upstream: Vec<String>,
        suggestion: Option<String>,
        at: Location,
    },
    #[error("`when` of stage `{stage}` reads stage `{reference}`, which it does not need")]
    WhenStageNotUpstream {
        stage: StageName,
        reference: String,
        at: Location,
    },
    #[error("`when` of stage `{stage}` reads unknown field `{field}` of stage `{reference}`")]
    WhenUnknownStageField {
        stage: StageName,
        reference: String,
        field: String,
        at: Location,
    },
    #[error("`when` of stage `{stage}` uses unknown name `{name}`")]
    WhenUnknownVariable {
        stage: StageName,
        name: String,
        at: Location,
    },
    #[error("`when` of stage `{stage}` is {chars} characters long, more than the limit of {limit}")]
    WhenTooLong {
        stage: StageName,
        chars: usize,
        limit: usize,
        at: Location,
    },
    #[error("`when` of stage `{stage}` could not be checked: {reason}")]
    WhenUnchecked {
        stage: StageName,
        reason: String,
        at: Location,
    },
}

/// Every error found in one DAG file, printed compiler-style:
/// `file:line:col: error: <message>` then `  help: <fix>`.
#[derive(Debug, Clone, PartialEq)]
pub struct DagErrors {
    /// The file name given to [`crate::dag::parse_dag`].
    pub file: String,
    /// In the order of their place in the file.
    pub errors: Vec<DagError>,
}

impl DagErrors {
    pub(crate) fn single(file: &str, error: DagError) -> DagErrors {
        DagErrors {
            file: file.to_owned(),
            errors: vec![error],
        }
    }

    /// Returns the errors in file order.
    pub fn iter(&self) -> std::slice::Iter<'_, DagError> {
        self.errors.iter()
    }

    /// Returns how many errors were found.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// Returns true when no error was found (never the case for a returned `DagErrors`).
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
}

impl fmt::Display for DagErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let at = error.location();
            if at.line > 0 {
                write!(f, "{}:{}:{}: ", self.file, at.line, at.column)?;
            } else {
                write!(f, "{}: ", self.file)?;
            }
            write!(f, "error: {error}\n  help: {}", error.help())?;
        }
        Ok(())
    }
}

impl std::error::Error for DagErrors {}

impl<'a> IntoIterator for &'a DagErrors {
    type Item = &'a DagError;
    type IntoIter = std::slice::Iter<'a, DagError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}
