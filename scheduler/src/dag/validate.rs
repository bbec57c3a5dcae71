//! Turning the raw file into a validated [`Dag`]: names, params, schedule, stages with
//! `defaults:` merged in, templates, dependencies and cycles. Every mistake found is
//! recorded; the file is refused if there is any.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use serde_saphyr::Spanned;

use crate::cron::{CronExpr, Schedule};
use crate::dag::basic::{DagName, Location, ParamValue, StageName};
use crate::dag::error::{DagError, Scope};
use crate::dag::fields::Fields;
use crate::dag::graph::{build_graph, find_cycles, topological_order};
use crate::dag::model::{Approval, AssetMode, Dag, EnvValue, ForEach, Resources, Stage, Trigger};
use crate::dag::raw::{
    RawApproval, RawDag, RawDefaults, RawForEach, RawNames, RawSchedule, RawStage, RawTrigger,
};
use crate::dag::template::{
    TemplateProblem, for_each_param_name, is_template, reference_problems, template_references,
};
use crate::dag::validator::Validator;
use crate::dag::values::{closest, is_dag_name, is_identifier, is_stage_name, loc};

/// A dependency edge (upstream, downstream) by stage index, with the place of the `needs`
/// entry behind it.
type PlacedEdge = ((usize, usize), Location);

/// A stage's `when` text with the place of its value, checked once the graph is known.
pub(super) type PlacedWhen = Option<(String, Location)>;

/// Validates a parsed file. On failure returns every error, in file order.
pub(crate) fn validate(raw: RawDag, source: &str) -> Result<Dag, Vec<DagError>> {
    let mut v = Validator::new(source);
    if !is_dag_name(&raw.name.value) {
        v.push(DagError::InvalidDagName {
            name: raw.name.value.clone(),
            at: loc(&raw.name.referenced),
        });
    }
    for (name, value) in raw.params.map(|p| p.0).unwrap_or_default() {
        v.check_param(name, value);
    }
    let schedule = raw.schedule.and_then(|s| v.check_schedule(s.value));
    if let Some(max) = &raw.max_active_runs
        && max.value == 0
    {
        v.push(DagError::MaxActiveRunsZero {
            at: loc(&max.referenced),
        });
    }
    let timeout = raw.timeout.as_ref().and_then(|t| {
        let d = v.duration("timeout", t, &Scope::Dag);
        if d.is_some_and(|d| d.is_zero()) {
            v.push(DagError::ZeroTimeout {
                scope: Scope::Dag,
                at: loc(&t.referenced),
            });
        }
        d
    });
    let defaults = raw
        .defaults
        .map(|d| v.check_defaults(d.value))
        .unwrap_or_default();
    let (mut stages, edges, whens) = v.check_stages(raw.stages, &defaults);
    let triggers = v.check_triggers(raw.triggers.unwrap_or_default());
    for trigger in &triggers {
        let Trigger::Assets { names, at, .. } = trigger;
        if let Some(own) = names
            .iter()
            .find(|n| stages.iter().any(|s| s.assets.values().any(|a| a == *n)))
        {
            v.push(DagError::AssetCycle {
                path: format!("{0} publishes `{own}`, which triggers {0}", raw.name.value),
                at: *at,
            });
        }
    }

    let (graph, nodes) = build_graph(stages.len(), &edges.iter().map(|e| e.0).collect::<Vec<_>>());
    let edge_places: HashMap<(usize, usize), Location> = edges.into_iter().collect();
    let topo_order = topological_order(&graph);
    // A topological order leaves out exactly the stages on or behind a cycle.
    let cycles = if topo_order.len() < stages.len() {
        find_cycles(&graph)
    } else {
        Vec::new()
    };
    for cycle in cycles {
        // The edge that closes the cycle: its first stage needs the one before it.
        let closing = (cycle[cycle.len() - 2], cycle[0]);
        v.push(DagError::Cycle {
            at: edge_places.get(&closing).copied().unwrap_or_default(),
            path: cycle.iter().map(|&i| stages[i].name.clone()).collect(),
        });
    }

    v.check_conditions(&mut stages, whens, &graph, &nodes);

    if !v.errors.is_empty() {
        return Err(sorted_unique(v.errors));
    }
    Ok(Dag {
        name: DagName(raw.name.value),
        description: raw.description,
        params: v.params,
        schedule,
        max_active_runs: raw.max_active_runs.map(|m| m.value),
        timeout,
        triggers,
        stages,
        graph,
        nodes,
        topo_order,
    })
}

/// Orders errors by place (those without one last) and drops repeats of one error at one
/// place, as a bad value in `defaults:` would otherwise be reported once per stage.
fn sorted_unique(mut errors: Vec<DagError>) -> Vec<DagError> {
    let key = |e: &DagError| {
        let at = e.location();
        if at.line == 0 {
            (usize::MAX, 0)
        } else {
            (at.line, at.column)
        }
    };
    errors.sort_by_key(key);
    let mut seen = HashSet::new();
    errors.retain(|e| {
        let at = e.location();
        at.line == 0 || seen.insert((at.line, at.column, std::mem::discriminant(e)))
    });
    errors
}

impl Validator<'_> {
    fn check_param(&mut self, name: Spanned<String>, value: Spanned<ParamValue>) {
        if !is_identifier(&name.value) {
            self.push(DagError::InvalidParamName {
                name: name.value.clone(),
                at: loc(&name.referenced),
            });
        }
        let is_scalar = |v: &ParamValue| v.is_string() || v.is_number() || v.is_boolean();
        let found = match &value.value {
            v if is_scalar(v) => None,
            ParamValue::Array(items) if items.iter().all(is_scalar) => None,
            ParamValue::Array(_) => Some("a list with nested or empty values"),
            ParamValue::Object(_) => Some("a map"),
            _ => Some("empty (null)"),
        };
        if let Some(found) = found {
            self.push(DagError::InvalidParamValue {
                name: name.value.clone(),
                found,
                at: loc(&value.referenced),
            });
        }
        self.params.insert(name.value, value.value);
    }

    /// Checks `triggers:`; the kinds are exclusive, each entry names one.
    fn check_triggers(&mut self, raw: Vec<Spanned<RawTrigger>>) -> Vec<Trigger> {
        let mut triggers = Vec::with_capacity(raw.len());
        for entry in raw {
            let at = loc(&entry.referenced);
            let RawTrigger { asset, mode } = entry.value;
            let Some(asset) = asset else {
                match mode {
                    Some(mode) => self.push(DagError::ModeWithoutAsset {
                        at: loc(&mode.referenced),
                    }),
                    None => self.push(DagError::TriggerWithoutKind { at }),
                }
                continue;
            };
            let mode = match mode {
                None => AssetMode::Any,
                Some(mode) => match mode.value.trim() {
                    "any" => AssetMode::Any,
                    "all" => AssetMode::All,
                    _ => {
                        self.push(DagError::UnknownAssetMode {
                            mode: mode.value.clone(),
                            at: loc(&mode.referenced),
                        });
                        AssetMode::Any
                    }
                },
            };
            let asset_at = loc(&asset.referenced);
            let listed = match asset.value {
                RawNames::One(name) => vec![(name, asset_at)],
                RawNames::List(names) => names
                    .into_iter()
                    .map(|n| (n.value, loc(&n.referenced)))
                    .collect(),
            };
            if listed.is_empty() {
                self.push(DagError::EmptyAssetTrigger { at: asset_at });
                continue;
            }
            let mut names: Vec<String> = Vec::with_capacity(listed.len());
            for (name, name_at) in listed {
                if !is_dag_name(&name) {
                    self.push(DagError::InvalidAssetName {
                        name,
                        scope: Scope::Dag,
                        at: name_at,
                    });
                } else if names.contains(&name) {
                    self.push(DagError::DuplicateTriggerAsset { name, at: name_at });
                } else {
                    names.push(name);
                }
            }
            triggers.push(Trigger::Assets { names, mode, at });
        }
        triggers
    }

    fn check_schedule(&mut self, raw: RawSchedule) -> Option<Schedule> {
        let expression = match CronExpr::parse(&raw.cron.value) {
            Ok(expr) => Some(expr),
            Err(error) => {
                self.push(DagError::InvalidCron {
                    expression: raw.cron.value.clone(),
                    error,
                    at: loc(&raw.cron.referenced),
                });
                None
            }
        };
        let timezone = match &raw.timezone {
            None => Some(chrono_tz::UTC),
            Some(tz) => match chrono_tz::Tz::from_str(tz.value.trim()) {
                Ok(zone) => Some(zone),
                Err(_) => {
                    self.push(DagError::UnknownTimezone {
                        name: tz.value.clone(),
                        suggestion: suggest_timezone(&tz.value),
                        at: loc(&tz.referenced),
                    });
                    None
                }
            },
        };
        Some(Schedule {
            cron: raw.cron.value,
            expression: expression?,
            timezone: timezone?,
            catchup: raw.catchup.unwrap_or_default(),
            overlap: raw.overlap.unwrap_or_default(),
        })
    }

    fn check_defaults(&mut self, mut raw: RawDefaults) -> Fields {
        let per_stage = [
            ("name", raw.name.take().map(|s| s.referenced)),
            ("needs", raw.needs.take().map(|s| s.referenced)),
            ("for_each", raw.for_each.take().map(|s| s.referenced)),
            (
                "max_parallel",
                raw.max_parallel.take().map(|s| s.referenced),
            ),
            ("approval", raw.approval.take().map(|s| s.referenced)),
        ];
        for (field, at) in per_stage {
            if let Some(at) = at {
                self.push(DagError::NotAllowedInDefaults {
                    field,
                    at: loc(&at),
                });
            }
        }
        self.check_fields(raw.take_common(), &Scope::Defaults)
    }

    /// Checks every stage; returns them with the dependency edges (upstream, downstream),
    /// the place of the `needs` entry behind each edge, and each stage's `when` text with
    /// its place, checked once the graph is known.
    fn check_stages(
        &mut self,
        raw: Spanned<Vec<Spanned<RawStage>>>,
        defaults: &Fields,
    ) -> (Vec<Stage>, Vec<PlacedEdge>, Vec<PlacedWhen>) {
        if raw.value.is_empty() {
            self.push(DagError::NoStages {
                at: loc(&raw.referenced),
            });
        }
        let mut first_seen: HashMap<String, (usize, usize)> = HashMap::new();
        let mut stages = Vec::with_capacity(raw.value.len());
        let mut all_needs = Vec::with_capacity(raw.value.len());
        let mut whens = Vec::with_capacity(raw.value.len());
        for (index, stage) in raw.value.into_iter().enumerate() {
            let at = loc(&stage.referenced);
            let mut stage = stage.value;
            let name = stage.name.value.clone();
            let name_at = loc(&stage.name.referenced);
            if !is_stage_name(&name) {
                self.push(DagError::InvalidStageName {
                    name: name.clone(),
                    at: name_at,
                });
            }
            if let Some((_, first_line)) = first_seen.get(&name) {
                self.push(DagError::DuplicateStage {
                    name: StageName(name.clone()),
                    first_line: *first_line,
                    at: name_at,
                });
            } else {
                first_seen.insert(name.clone(), (index, name_at.line));
            }
            all_needs.push(stage.needs.take().unwrap_or_default());
            let (checked, when) = self.check_stage(stage, at, defaults);
            stages.push(checked);
            whens.push(when);
        }
        let mut edges = Vec::new();
        for (index, needs) in all_needs.into_iter().enumerate() {
            let own = stages[index].name.clone();
            let mut listed = HashSet::new();
            for need in needs {
                let at = loc(&need.referenced);
                if need.value == own.as_str() {
                    self.push(DagError::SelfDependency {
                        stage: own.clone(),
                        at,
                    });
                } else if !listed.insert(need.value.clone()) {
                    self.push(DagError::DuplicateDependency {
                        stage: own.clone(),
                        dependency: StageName(need.value),
                        at,
                    });
                } else if let Some(&(upstream, _)) = first_seen.get(&need.value) {
                    edges.push(((upstream, index), at));
                    stages[index].needs.push(StageName(need.value));
                } else {
                    let suggestion =
                        self.suggest(&need.value, first_seen.keys().map(String::as_str));
                    self.push(DagError::UnknownDependency {
                        stage: own.clone(),
                        missing: need.value,
                        suggestion,
                        at,
                    });
                }
            }
        }
        (stages, edges, whens)
    }

    fn check_stage(
        &mut self,
        mut raw: RawStage,
        at: Location,
        defaults: &Fields,
    ) -> (Stage, PlacedWhen) {
        let name = StageName(raw.name.value.clone());
        let scope = Scope::Stage(name.clone());
        let fields = self
            .check_fields(raw.take_common(), &scope)
            .merged_over(defaults);
        let for_each = raw
            .for_each
            .as_ref()
            .and_then(|f| self.check_for_each(&name, f));
        if let Some(max) = &raw.max_parallel {
            let max_at = loc(&max.referenced);
            if max.value == 0 {
                self.push(DagError::MaxParallelZero {
                    stage: name.clone(),
                    at: max_at,
                });
            }
            if raw.for_each.is_none() {
                self.push(DagError::MaxParallelWithoutForEach {
                    stage: name.clone(),
                    at: max_at,
                });
            }
        }
        let approval = raw
            .approval
            .take()
            .map(|a| self.check_approval(&name, a.value, &scope));
        let executor = fields.executor.unwrap_or_default();
        match executor {
            crate::dag::model::ExecutorKind::Docker if fields.image.is_none() => {
                self.push(DagError::MissingImage {
                    stage: name.clone(),
                    at,
                });
            }
            crate::dag::model::ExecutorKind::Process if fields.command.is_none() => {
                self.push(DagError::ProcessStageWithoutCommand {
                    stage: name.clone(),
                    at,
                });
            }
            _ => {}
        }
        let fan_out = raw.for_each.is_some();
        if let Some(command) = &fields.command {
            for (text, at) in &command.parts {
                self.check_template(text, *at, &scope, fan_out);
            }
        }
        for (value, at) in fields.env.values() {
            if let EnvValue::Literal(text) = value {
                self.check_template(text, *at, &scope, fan_out);
            }
        }
        let outputs = fields.outputs.unwrap_or_default();
        let stage = Stage {
            name,
            description: fields.description,
            needs: Vec::new(),
            executor,
            image: fields.image,
            command: fields.command.map(|c| c.command),
            env: fields.env.into_iter().map(|(k, (v, _))| (k, v)).collect(),
            timeout: fields.timeout,
            retries: fields.retries.unwrap_or_default(),
            resources: Resources {
                cpus: fields.cpus,
                memory_bytes: fields.memory_bytes,
                gpus: fields.gpus,
            },
            worker: fields.worker,
            outputs: outputs.iter().map(|o| o.name.clone()).collect(),
            optional_outputs: outputs
                .iter()
                .filter(|o| o.optional)
                .map(|o| o.name.clone())
                .collect(),
            assets: outputs
                .iter()
                .filter_map(|o| Some((o.name.clone(), o.asset.clone()?)))
                .collect(),
            cache: fields.cache.unwrap_or(false),
            when: None,
            trigger: fields.trigger.unwrap_or_default(),
            for_each,
            max_parallel: raw.max_parallel.map(|m| m.value),
            mounts: fields.mounts.unwrap_or_default(),
            approval,
            location: at,
        };
        let when = fields.when.filter(|(text, _)| !text.trim().is_empty());
        (stage, when)
    }

    /// `approval:`: the message shown to whoever approves (a default names the stage) and
    /// an optional positive timeout after which the stage is rejected.
    fn check_approval(&mut self, stage: &StageName, raw: RawApproval, scope: &Scope) -> Approval {
        let message = raw
            .message
            .map(|m| m.value.trim().to_owned())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| format!("approve stage `{stage}`?"));
        let timeout = raw.timeout.and_then(|t| {
            let d = self.duration("approval.timeout", &t, scope);
            if d == Some(Duration::ZERO) {
                self.push(DagError::ZeroTimeout {
                    scope: scope.clone(),
                    at: loc(&t.referenced),
                });
                return None;
            }
            d
        });
        Approval { message, timeout }
    }

    fn check_for_each(&mut self, stage: &StageName, raw: &Spanned<RawForEach>) -> Option<ForEach> {
        let at = loc(&raw.referenced);
        match &raw.value {
            RawForEach::Template(text) => {
                let Some(param) = for_each_param_name(text) else {
                    self.push(DagError::InvalidForEach {
                        stage: stage.clone(),
                        value: text.clone(),
                        at,
                    });
                    return None;
                };
                match self.params.get(param) {
                    Some(ParamValue::Array(_)) => Some(ForEach::Param(text.clone())),
                    Some(_) => {
                        self.push(DagError::ForEachParamNotList {
                            stage: stage.clone(),
                            param: param.to_owned(),
                            at,
                        });
                        None
                    }
                    None => {
                        self.push(DagError::ForEachUnknownParam {
                            stage: stage.clone(),
                            param: param.to_owned(),
                            declared: self.params.keys().cloned().collect(),
                            at,
                        });
                        None
                    }
                }
            }
            RawForEach::List(items) => {
                let mut values = Vec::with_capacity(items.len());
                for item in items {
                    let v = &item.value;
                    if !(v.is_string() || v.is_number() || v.is_boolean()) {
                        self.push(DagError::ForEachItemNotScalar {
                            stage: stage.clone(),
                            at: loc(&item.referenced),
                        });
                        return None;
                    }
                    values.push(v.clone());
                }
                Some(ForEach::List(values))
            }
        }
    }

    fn check_template(&mut self, text: &str, at: Location, scope: &Scope, fan_out: bool) {
        if !is_template(text) {
            return;
        }
        if !self.templates.contains_key(text) {
            self.templates
                .insert(text.to_owned(), template_references(text));
        }
        let references = match self.templates.get(text) {
            Some(Ok(references)) => references.clone(),
            Some(Err(detail)) => {
                let detail = detail.clone();
                self.push(DagError::TemplateSyntax {
                    template: text.to_owned(),
                    detail,
                    scope: scope.clone(),
                    at,
                });
                return;
            }
            None => return,
        };
        for problem in reference_problems(&references, &self.params, fan_out) {
            let error = match problem {
                TemplateProblem::ItemOutsideForEach => DagError::ItemOutsideForEach {
                    scope: scope.clone(),
                    at,
                },
                TemplateProblem::UnknownReference(reference) => {
                    let mut known: Vec<String> =
                        self.params.keys().map(|p| format!("params.{p}")).collect();
                    known.extend(["run.id", "run.logical_time"].map(String::from));
                    if fan_out {
                        known.push("item".to_owned());
                    }
                    let suggestion = self.suggest(&reference, known.iter().map(String::as_str));
                    DagError::UnknownTemplateReference {
                        reference,
                        declared: self.params.keys().cloned().collect(),
                        suggestion,
                        scope: scope.clone(),
                        at,
                    }
                }
            };
            self.push(error);
        }
    }
}

/// A likely intended IANA name: a different capitalisation, a city without its region
/// (`Kolkata`), or a close spelling.
fn suggest_timezone(name: &str) -> Option<String> {
    let name = name.trim();
    let names = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name());
    if let Some(exact) = names.clone().find(|n| n.eq_ignore_ascii_case(name)) {
        return Some(exact.to_owned());
    }
    let suffix = format!("/{}", name.replace(' ', "_")).to_ascii_lowercase();
    if let Some(city) = names
        .clone()
        .find(|n| n.to_ascii_lowercase().ends_with(&suffix))
    {
        return Some(city.to_owned());
    }
    closest(name, names)
}
