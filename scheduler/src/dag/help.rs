//! How to fix each [`DagError`]: the `help:` line printed under every error.

use crate::dag::error::{DagError, MountProblem, OutputProblem};

fn did_you_mean(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!("did you mean `{s}`? "),
        None => String::new(),
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join(", ")
    }
}

impl DagError {
    /// Returns a suggestion for fixing the mistake, lowercase and without a trailing period.
    pub fn help(&self) -> String {
        use DagError::*;
        match self {
            EmptyFile { .. } => {
                "a DAG file needs at least `name:` and `stages:` with one stage".to_owned()
            }
            TooLarge { limit, .. } => format!("keep DAG files under {limit} bytes"),
            ControlCharacter { .. } => {
                "remove the control character; DAG files are UTF-8 text (is this a binary file?)"
                    .to_owned()
            }
            Yaml { .. } => "fix the YAML syntax at this place".to_owned(),
            TooComplex { .. } => {
                "simplify the file: fewer anchors and aliases, less nesting".to_owned()
            }
            UnknownField {
                suggestion,
                allowed,
                ..
            } => format!(
                "{}allowed fields here: {}",
                did_you_mean(suggestion),
                list(allowed)
            ),
            MissingField { field, .. } => format!("add `{field}:` here"),
            WrongType { expected, .. } => format!("write {expected} here"),
            UnknownVariant {
                suggestion,
                allowed,
                ..
            } => format!("{}use one of: {}", did_you_mean(suggestion), list(allowed)),
            DuplicateKey { .. } => "remove or rename one of the two keys".to_owned(),
            InvalidDagName { .. } => {
                "a DAG name starts with a lowercase letter, contains only a-z, 0-9 and `-`, \
                 and is at most 128 characters"
                    .to_owned()
            }
            InvalidStageName { .. } => {
                "a stage name starts with a lowercase letter or digit, contains only a-z, \
                 0-9, `_` and `-`, and is at most 128 characters"
                    .to_owned()
            }
            DuplicateStage { .. } => "give each stage a unique name".to_owned(),
            NoStages { .. } => "add at least one stage under `stages:`".to_owned(),
            UnknownDependency { suggestion, .. } => format!(
                "{}`needs` lists names of stages defined in this file",
                did_you_mean(suggestion)
            ),
            SelfDependency { .. } => "remove the stage's own name from its `needs`".to_owned(),
            DuplicateDependency { .. } => "list each stage once in `needs`".to_owned(),
            Cycle { path, .. } => {
                let edges: Vec<String> = path
                    .windows(2)
                    .map(|w| format!("`{}` needs `{}`", w[1], w[0]))
                    .collect();
                format!("break the cycle by removing one of: {}", edges.join(", "))
            }
            DurationWithoutUnit { value, .. } => {
                format!("add a unit, e.g. `{value}s` or `{value}m` (units: ms, s, m, h, d)")
            }
            InvalidDuration { .. } => {
                "write a duration like `30s`, `5m`, `2h`, `1h30m` or `500ms`".to_owned()
            }
            ZeroTimeout { .. } => "give a positive timeout, or remove `timeout`".to_owned(),
            BackoffAboveMax { .. } => {
                "make `backoff` no longer than `max_backoff`, or raise `max_backoff`".to_owned()
            }
            InvalidCpus { .. } => "write a positive number of cpus, e.g. `2` or `0.5`".to_owned(),
            InvalidMemory { .. } => {
                "write bytes (`1000000`) or a quantity with a unit: Ki, Mi, Gi, Ti or k, M, G, T \
                 (e.g. `512Mi`, `4Gi`)"
                    .to_owned()
            }
            InvalidEnvName { .. } => {
                "an environment variable name matches [A-Za-z_][A-Za-z0-9_]*".to_owned()
            }
            ReservedEnvName { .. } => {
                "names starting with `VISHWA_` are set by vishwa; pick another name".to_owned()
            }
            InvalidSecretName { .. } => {
                "a secret name contains only letters, digits, `_`, `-` and `.`".to_owned()
            }
            EmptyCommand { .. } => {
                "give a command, e.g. `[python3, train.py]`, or remove `command` to run the \
                 image's default"
                    .to_owned()
            }
            ProcessStageWithoutCommand { .. } => {
                "add a `command:`; process stages have no image to take one from".to_owned()
            }
            MissingImage { .. } => {
                "add `image:` to the stage or to `defaults:`, or set `executor: process`".to_owned()
            }
            InvalidOutput { problem, .. } => match problem {
                OutputProblem::Empty => "remove the empty entry".to_owned(),
                _ => "outputs are plain file names written to /vishwa/out, e.g. `model.pkl`"
                    .to_owned(),
            },
            DuplicateOutput { .. } => "list each output once".to_owned(),
            InvalidAssetName { .. } => {
                "asset names are lower case letters, digits and `-`, starting with a letter, \
                 e.g. `survey-data`"
                    .to_owned()
            }
            TriggerWithoutKind { .. } => {
                "write `{asset: NAME}` or `{asset: [A, B], mode: all}`".to_owned()
            }
            UnknownAssetMode { .. } => "use `mode: any` (the default) or `mode: all`".to_owned(),
            ModeWithoutAsset { .. } => {
                "remove `mode`, or add `asset: [A, B]` to the trigger".to_owned()
            }
            EmptyAssetTrigger { .. } => "name at least one asset: `asset: [a, b]`".to_owned(),
            DuplicateTriggerAsset { .. } => "list each asset once".to_owned(),
            AssetCycle { .. } => {
                "a DAG must not be started, directly or through other DAGs, by an asset it \
                 publishes; remove one of these triggers or publish another asset"
                    .to_owned()
            }
            InvalidMount { problem, .. } => match problem {
                MountProblem::UnknownMode(_) => "the mode is `ro` or `rw`".to_owned(),
                _ => "write `/host/path:/container/path` with an optional `:ro` or `:rw`, both \
                      paths absolute"
                    .to_owned(),
            },
            EmptyWhen { .. } => "write a condition, or remove `when`".to_owned(),
            InvalidForEach { .. } => {
                "write a list (`[a, b]`) or a list param as `\"{{ params.NAME }}\"`".to_owned()
            }
            ForEachUnknownParam { declared, .. } => {
                format!(
                    "declare it under `params:`; declared params: {}",
                    list(declared)
                )
            }
            ForEachParamNotList { param, .. } => {
                format!("make the default of `{param}` a list, e.g. `{param}: [a, b]`")
            }
            ForEachItemNotScalar { .. } => "write each item as a plain value".to_owned(),
            MaxParallelZero { .. } => "use 1 or more, or remove `max_parallel`".to_owned(),
            MaxParallelWithoutForEach { .. } => {
                "`max_parallel` limits fan-out instances; add `for_each` or remove it".to_owned()
            }
            ItemOutsideForEach { .. } => {
                "`{{ item }}` exists only in stages with `for_each`".to_owned()
            }
            TemplateSyntax { .. } => {
                "fix the template, e.g. `{{ params.rows }}` (see minijinja syntax)".to_owned()
            }
            UnknownTemplateReference {
                suggestion,
                declared,
                ..
            } => format!(
                "{}templates can use params.<name>, run.id, run.logical_time and item (in \
                 fan-out stages); declared params: {}",
                did_you_mean(suggestion),
                list(declared)
            ),
            InvalidCron { error, .. } => error.help(),
            UnknownTimezone { suggestion, .. } => format!(
                "{}use an IANA time zone name like `UTC`, `Europe/Berlin` or `Asia/Kolkata`",
                did_you_mean(suggestion)
            ),
            MaxActiveRunsZero { .. } => "use 1 or more".to_owned(),
            InvalidParamName { .. } => "a param name matches [a-zA-Z_][a-zA-Z0-9_]*".to_owned(),
            InvalidParamValue { .. } => {
                "params are scalars (`rows: 1000`) or lists of scalars (`flavours: [a, b]`)"
                    .to_owned()
            }
            NotAllowedInDefaults { field, .. } => {
                format!("set `{field}` on each stage instead")
            }
            WhenSyntax { .. } => "write a CEL expression that gives true or false, e.g. \
                 `params.min_accuracy <= stages.train.metrics.accuracy` or \
                 `stages.validate.state == \"succeeded\"`"
                .to_owned(),
            WhenUnknownParam {
                declared,
                suggestion,
                ..
            } => format!(
                "{}declare it under `params:`; declared params: {}",
                did_you_mean(suggestion),
                list(declared)
            ),
            WhenUnknownStage {
                reference,
                upstream,
                suggestion,
                ..
            } => format!(
                "{}`stages` holds the stages this one needs, directly or through others: {}; \
                 `{reference}` is not defined in this file",
                did_you_mean(suggestion),
                list(upstream)
            ),
            WhenStageNotUpstream { reference, .. } => format!(
                "a condition reads only stages that finish before it is decided; add \
                 `{reference}` to `needs` (or to the `needs` of a stage this one needs)"
            ),
            WhenUnknownStageField { .. } => {
                "a stage has `state`, `metrics` (e.g. `stages.train.metrics.accuracy`) and \
                 `instances`"
                    .to_owned()
            }
            WhenTooLong { .. } => {
                "shorten the condition; compute what it needs in an upstream stage and report \
                 it as a metric"
                    .to_owned()
            }
            WhenUnchecked { .. } => {
                "the scheduler is short of resources (threads); try again".to_owned()
            }
            WhenUnknownVariable { name, .. } => format!(
                "a condition can use `params`, `stages` and, in a stage with `for_each`, \
                 `item`, not `{name}`; a stage name with `-` is written `stages[\"a-b\"]` \
                 (`stages.a-b` would subtract `b`)"
            ),
        }
    }
}
