//! Checking the fields a stage and `defaults:` share, and merging the two.
//!
//! Merge rule: a value set on the stage replaces the one in `defaults:`, field by field.
//! Maps merge key by key with the stage winning: `env:`, `worker:` and the entries of
//! `resources:` (`cpus`, `memory`, `gpus`). Lists (`outputs`, `mounts`) and `retries` are
//! replaced whole.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_saphyr::Spanned;

use crate::dag::basic::Location;
use crate::dag::error::{DagError, Scope};
use crate::dag::model::{
    Command, EnvValue, ExecutorKind, Mount, OutputSpec, RetryPolicy, TriggerRule,
};
use crate::dag::raw::{RawCommand, RawCommon, RawEnvValue, RawOutput, RawRetries};
use crate::dag::validator::Validator;
use crate::dag::values::{
    DurationProblem, is_dag_name, is_identifier, is_secret_name, loc, output_problem,
    parse_duration, parse_memory, parse_mount,
};

/// Environment variable prefix reserved for what vishwa sets (`VISHWA_RUN_ID`, ...).
const RESERVED_ENV_PREFIX: &str = "VISHWA_";

/// A command with the place of each template in it.
#[derive(Debug, Clone)]
pub(crate) struct LocatedCommand {
    pub(crate) command: Command,
    /// Each argument (exec form) or the whole string (shell form), with its place.
    pub(crate) parts: Vec<(String, Location)>,
}

/// Shared fields after their own checks: what the stage or `defaults:` set.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fields {
    pub(crate) description: Option<String>,
    pub(crate) executor: Option<ExecutorKind>,
    pub(crate) image: Option<String>,
    pub(crate) command: Option<LocatedCommand>,
    pub(crate) env: BTreeMap<String, (EnvValue, Location)>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) retries: Option<RetryPolicy>,
    pub(crate) cpus: Option<f64>,
    pub(crate) memory_bytes: Option<u64>,
    pub(crate) gpus: Option<u32>,
    pub(crate) worker: BTreeMap<String, String>,
    pub(crate) outputs: Option<Vec<OutputSpec>>,
    pub(crate) cache: Option<bool>,
    /// The expression and the place of its value.
    pub(crate) when: Option<(String, Location)>,
    pub(crate) trigger: Option<TriggerRule>,
    pub(crate) mounts: Option<Vec<Mount>>,
}

impl Fields {
    /// Returns `self` (a stage's fields) with `defaults` filling what it leaves unset.
    pub(crate) fn merged_over(self, defaults: &Fields) -> Fields {
        let mut env = defaults.env.clone();
        env.extend(self.env);
        let mut worker = defaults.worker.clone();
        worker.extend(self.worker);
        Fields {
            description: self.description.or_else(|| defaults.description.clone()),
            executor: self.executor.or(defaults.executor),
            image: self.image.or_else(|| defaults.image.clone()),
            command: self.command.or_else(|| defaults.command.clone()),
            env,
            timeout: self.timeout.or(defaults.timeout),
            retries: self.retries.or(defaults.retries),
            cpus: self.cpus.or(defaults.cpus),
            memory_bytes: self.memory_bytes.or(defaults.memory_bytes),
            gpus: self.gpus.or(defaults.gpus),
            worker,
            outputs: self.outputs.or_else(|| defaults.outputs.clone()),
            cache: self.cache.or(defaults.cache),
            when: self.when.or_else(|| defaults.when.clone()),
            trigger: self.trigger.or(defaults.trigger),
            mounts: self.mounts.or_else(|| defaults.mounts.clone()),
        }
    }
}

impl Validator<'_> {
    /// Checks the shared fields of a stage or of `defaults:`, recording every mistake.
    pub(crate) fn check_fields(&mut self, raw: RawCommon, scope: &Scope) -> Fields {
        let mut fields = Fields {
            description: raw.description,
            executor: raw.executor,
            image: raw.image.map(|i| i.value),
            cache: raw.cache,
            trigger: raw.trigger,
            ..Fields::default()
        };
        fields.command = raw.command.and_then(|c| self.check_command(c, scope));
        for (name, value) in raw.env.map(|m| m.0).unwrap_or_default() {
            if let Some(checked) = self.check_env(&name, value, scope) {
                fields.env.insert(name.value, checked);
            }
        }
        if let Some(timeout) = raw.timeout {
            fields.timeout = self.duration("timeout", &timeout, scope);
            if fields.timeout == Some(Duration::ZERO) {
                self.push(DagError::ZeroTimeout {
                    scope: scope.clone(),
                    at: loc(&timeout.referenced),
                });
            }
        }
        fields.retries = raw.retries.and_then(|r| self.check_retries(r, scope));
        if let Some(resources) = raw.resources {
            let resources = resources.value;
            if let Some(cpus) = resources.cpus {
                if cpus.value.is_finite() && cpus.value > 0.0 {
                    fields.cpus = Some(cpus.value);
                } else {
                    self.push(DagError::InvalidCpus {
                        value: cpus.value,
                        scope: scope.clone(),
                        at: loc(&cpus.referenced),
                    });
                }
            }
            if let Some(memory) = resources.memory {
                fields.memory_bytes = parse_memory(&memory.value);
                if fields.memory_bytes.is_none() {
                    self.push(DagError::InvalidMemory {
                        value: memory.value.clone(),
                        scope: scope.clone(),
                        at: loc(&memory.referenced),
                    });
                }
            }
            fields.gpus = resources.gpus;
        }
        fields.worker = raw
            .worker
            .map(|m| m.0.into_iter().map(|(k, v)| (k.value, v)).collect())
            .unwrap_or_default();
        if let Some(outputs) = raw.outputs {
            fields.outputs = Some(self.check_outputs(outputs, scope));
        }
        if let Some(when) = raw.when {
            if when.value.trim().is_empty() {
                self.push(DagError::EmptyWhen {
                    scope: scope.clone(),
                    at: loc(&when.referenced),
                });
            }
            fields.when = Some((when.value, loc(&when.referenced)));
        }
        if let Some(mounts) = raw.mounts {
            let mut checked = Vec::with_capacity(mounts.len());
            for mount in mounts {
                match parse_mount(&mount.value) {
                    Ok(m) => checked.push(m),
                    Err(problem) => self.push(DagError::InvalidMount {
                        mount: mount.value.clone(),
                        problem,
                        scope: scope.clone(),
                        at: loc(&mount.referenced),
                    }),
                }
            }
            fields.mounts = Some(checked);
        }
        fields
    }

    /// Parses a duration field, recording why it is refused.
    pub(crate) fn duration(
        &mut self,
        field: &'static str,
        value: &Spanned<String>,
        scope: &Scope,
    ) -> Option<Duration> {
        let at = loc(&value.referenced);
        match parse_duration(&value.value) {
            Ok(d) => Some(d),
            Err(problem) => {
                let value = value.value.clone();
                let scope = scope.clone();
                self.push(match problem {
                    DurationProblem::NoUnit => DagError::DurationWithoutUnit {
                        field,
                        value,
                        scope,
                        at,
                    },
                    DurationProblem::Invalid => DagError::InvalidDuration {
                        field,
                        value,
                        scope,
                        at,
                    },
                });
                None
            }
        }
    }

    fn check_command(
        &mut self,
        command: Spanned<RawCommand>,
        scope: &Scope,
    ) -> Option<LocatedCommand> {
        let at = loc(&command.referenced);
        let located = match command.value {
            RawCommand::Exec(args) => LocatedCommand {
                command: Command::Exec(args.iter().map(|a| a.value.clone()).collect()),
                parts: args
                    .into_iter()
                    .map(|a| (a.value, loc(&a.referenced)))
                    .collect(),
            },
            RawCommand::Shell(text) => LocatedCommand {
                command: Command::Shell(text.clone()),
                parts: vec![(text, at)],
            },
        };
        let empty = match &located.command {
            Command::Exec(args) => args.first().is_none_or(|a| a.trim().is_empty()),
            Command::Shell(text) => text.trim().is_empty(),
        };
        if empty {
            self.push(DagError::EmptyCommand {
                scope: scope.clone(),
                at,
            });
            return None;
        }
        Some(located)
    }

    fn check_env(
        &mut self,
        name: &Spanned<String>,
        value: Spanned<RawEnvValue>,
        scope: &Scope,
    ) -> Option<(EnvValue, Location)> {
        let name_at = loc(&name.referenced);
        if !is_identifier(&name.value) {
            self.push(DagError::InvalidEnvName {
                name: name.value.clone(),
                scope: scope.clone(),
                at: name_at,
            });
        } else if name.value.starts_with(RESERVED_ENV_PREFIX) {
            self.push(DagError::ReservedEnvName {
                name: name.value.clone(),
                scope: scope.clone(),
                at: name_at,
            });
        }
        let at = loc(&value.referenced);
        let checked = match value.value {
            RawEnvValue::Text(text) => EnvValue::Literal(text),
            // Numbers and booleans keep their spelling (`1.10` stays `1.10`, not `1.1`).
            RawEnvValue::OtherScalar(fallback) => {
                let span = value.referenced.span();
                let written = span.byte_offset().zip(span.byte_len()).and_then(|(o, l)| {
                    let start = usize::try_from(o).ok()?;
                    self.source
                        .get(start..start.checked_add(usize::try_from(l).ok()?)?)
                });
                EnvValue::Literal(written.map_or(fallback, str::to_owned))
            }
            RawEnvValue::Secret(secret) => {
                if !is_secret_name(&secret.value) {
                    self.push(DagError::InvalidSecretName {
                        name: secret.value.clone(),
                        scope: scope.clone(),
                        at: loc(&secret.referenced),
                    });
                }
                EnvValue::Secret(secret.value)
            }
        };
        Some((checked, at))
    }

    fn check_retries(
        &mut self,
        retries: Spanned<RawRetries>,
        scope: &Scope,
    ) -> Option<RetryPolicy> {
        let policy = match retries.value {
            RawRetries::Count(limit) => RetryPolicy {
                limit,
                ..RetryPolicy::default()
            },
            RawRetries::Policy(raw) => {
                let backoff = match &raw.backoff {
                    Some(b) => self.duration("backoff", b, scope)?,
                    None => RetryPolicy::DEFAULT_BACKOFF,
                };
                let max_backoff = match &raw.max_backoff {
                    Some(m) => self.duration("max_backoff", m, scope)?,
                    None => RetryPolicy::DEFAULT_MAX_BACKOFF.max(backoff),
                };
                if backoff > max_backoff {
                    let at = raw
                        .backoff
                        .as_ref()
                        .map_or_else(|| loc(&retries.referenced), |b| loc(&b.referenced));
                    self.push(DagError::BackoffAboveMax {
                        backoff,
                        max_backoff,
                        scope: scope.clone(),
                        at,
                    });
                }
                RetryPolicy {
                    limit: raw.limit,
                    backoff,
                    max_backoff,
                }
            }
        };
        Some(policy)
    }

    fn check_outputs(
        &mut self,
        outputs: Vec<Spanned<RawOutput>>,
        scope: &Scope,
    ) -> Vec<OutputSpec> {
        let mut seen = HashSet::new();
        let mut checked = Vec::with_capacity(outputs.len());
        for output in outputs {
            let (name, at, asset, optional) = match output.value {
                RawOutput::Name(name) => (name, loc(&output.referenced), None, false),
                RawOutput::Spec(spec) => (
                    spec.path.value,
                    loc(&spec.path.referenced),
                    spec.asset,
                    spec.optional.unwrap_or(false),
                ),
            };
            let asset = asset.and_then(|asset| {
                if is_dag_name(&asset.value) {
                    Some(asset.value)
                } else {
                    self.push(DagError::InvalidAssetName {
                        name: asset.value,
                        scope: scope.clone(),
                        at: loc(&asset.referenced),
                    });
                    None
                }
            });
            if let Some(problem) = output_problem(&name) {
                self.push(DagError::InvalidOutput {
                    output: name,
                    problem,
                    scope: scope.clone(),
                    at,
                });
            } else if !seen.insert(name.clone()) {
                self.push(DagError::DuplicateOutput {
                    output: name,
                    scope: scope.clone(),
                    at,
                });
            } else {
                checked.push(OutputSpec {
                    name,
                    asset,
                    optional,
                });
            }
        }
        checked
    }
}
