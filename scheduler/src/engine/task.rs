//! Turning a ready stage instance into a worker task: templates rendered, the container
//! contract's `VISHWA_*` variables added.

use std::collections::BTreeMap;

use super::{DagFiles, TaskAssignment, TaskInput};
use crate::dag::{
    Command, EnvValue, TemplateContext, param_text, render_shell_command, render_template,
    template_references,
};
use crate::ids::AttemptId;
use crate::run::Run;
use crate::secrets::SecretBox;
use crate::store::Store;

/// Where a task's secret values come from: the store's sealed records and the key.
pub(crate) struct SecretSource<'a> {
    pub(crate) key: Option<&'a SecretBox>,
    /// None: no values are read; each secret env entry holds `secret:NAME` (the cache key
    /// covers a secret by name only, never by value).
    pub(crate) store: Option<&'a dyn Store>,
}

impl SecretSource<'_> {
    /// A source that names secrets instead of reading them.
    pub(crate) fn names_only() -> SecretSource<'static> {
        SecretSource {
            key: None,
            store: None,
        }
    }

    /// The value of secret `name`, which env var `var` asks for, or why it cannot be had.
    fn value(&self, var: &str, name: &str) -> Result<String, String> {
        let Some(store) = self.store else {
            return Ok(format!("secret:{name}"));
        };
        let record = store
            .get_secret(name)
            .map_err(|e| format!("env.{var}: reading secret `{name}`: {e}"))?
            .ok_or_else(|| {
                format!(
                    "env.{var} needs secret `{name}`, which is not set; set it with \
                     `vishwa secret set {name}` (value on stdin) and retry the run"
                )
            })?;
        let key = self.key.ok_or_else(|| {
            format!("env.{var} needs secret `{name}`, but this scheduler has no secret key")
        })?;
        key.open(&record).map_err(|e| format!("env.{var}: {e}"))
    }
}

/// Renders instance `i` of `run` as attempt `attempt`, or says why it cannot run.
pub(crate) fn build_task(
    run: &Run,
    i: usize,
    attempt: &AttemptId,
    attempt_number: u32,
    files: &DagFiles,
    secrets: &SecretSource<'_>,
) -> Result<TaskAssignment, String> {
    let node = &run.plan.nodes[i];
    let stage = &run.plan.dag.stages[node.stage];
    let logical_time = run
        .record
        .logical_time_ms
        .and_then(|ms| chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339()));
    let ctx = TemplateContext {
        params: &run.record.params,
        run_id: run.record.id.as_str(),
        logical_time: logical_time.as_deref(),
        item: node.item.as_ref(),
    };
    let render = |field: &str, text: &str| {
        render_template(text, &ctx).map_err(|e| format!("rendering {field}: {e}"))
    };
    let mut env = BTreeMap::new();
    let mut secret_env = Vec::new();
    for (name, value) in &stage.env {
        match value {
            EnvValue::Literal(text) => {
                env.insert(name.clone(), render(&format!("env.{name}"), text)?);
            }
            EnvValue::Secret(secret) => {
                env.insert(name.clone(), secrets.value(name, secret)?);
                secret_env.push(name.clone());
            }
        }
    }
    for (name, text) in &run.plan.param_texts {
        env.insert(format!("VISHWA_PARAM_{}", env_suffix(name)), text.clone());
    }
    env.insert("VISHWA_RUN_ID".into(), run.record.id.0.clone());
    env.insert("VISHWA_DAG".into(), run.record.dag.clone());
    env.insert("VISHWA_STAGE".into(), node.name.clone());
    env.insert("VISHWA_ATTEMPT".into(), attempt_number.to_string());
    if let Some(t) = &logical_time {
        env.insert("VISHWA_LOGICAL_TIME".into(), t.clone());
    }
    if let Some(item) = &node.item {
        env.insert("VISHWA_ITEM".into(), param_text(item));
    }
    let command = match &stage.command {
        None => None,
        // Values reach a shell script only through the environment (see dag/shell.rs).
        Some(Command::Shell(s)) => Some(Command::Shell(
            render_shell_command(s, &ctx, |value| shell_var(&mut env, s, value))
                .map_err(|e| format!("rendering command: {e}"))?,
        )),
        Some(Command::Exec(args)) => Some(Command::Exec(
            args.iter()
                .map(|a| render("command", a))
                .collect::<Result<_, _>>()?,
        )),
    };
    Ok(TaskAssignment {
        attempt: attempt.clone(),
        attempt_number,
        run: run.record.id.clone(),
        dag: run.record.dag.clone(),
        stage: node.name.clone(),
        executor: stage.executor,
        image: stage.image.clone(),
        command,
        env,
        local_dir: files.local_dir.clone(),
        bundle: files.bundle.clone(),
        gpus: Vec::new(),
        timeout: stage.timeout,
        mounts: stage.mounts.clone(),
        resources: stage.resources,
        secret_env,
        inputs: task_inputs(run, i),
        outputs: stage.outputs.clone(),
        optional_outputs: stage.optional_outputs.clone(),
        max_log_bytes: 0,
    })
}

/// The outputs of every upstream instance that produced some, in plan order, then the asset
/// versions the run consumed (as stage `@asset/NAME`, read at `/vishwa/in/@asset/NAME/FILE`).
pub(crate) fn task_inputs(run: &Run, i: usize) -> Vec<TaskInput> {
    let assets = run.record.assets.iter().map(|a| TaskInput {
        stage: format!("@asset/{}", a.asset),
        name: a.file.clone(),
        digest: a.digest.clone(),
        size: a.size,
    });
    run.plan.nodes[i]
        .upstream
        .iter()
        .flat_map(|&u| {
            let upstream = &run.stages[u];
            upstream.outputs.iter().map(|o| TaskInput {
                stage: upstream.instance.clone(),
                name: o.name.clone(),
                digest: o.digest.clone(),
                size: o.size,
            })
        })
        .chain(assets)
        .collect()
}

/// The variable that holds `value`, rendered from shell-form command `template`: the
/// `VISHWA_ITEM` or `VISHWA_PARAM_*` variable of an item or param the template names when it
/// holds exactly that text, else a `VISHWA_ARG_<n>` added to `env` for it.
fn shell_var(env: &mut BTreeMap<String, String>, template: &str, value: &str) -> String {
    let references = template_references(template).unwrap_or_default();
    let mut named = references.iter().filter_map(|r| {
        if r == "item" {
            Some("VISHWA_ITEM".to_owned())
        } else {
            r.strip_prefix("params.")
                .map(|name| format!("VISHWA_PARAM_{}", env_suffix(name)))
        }
    });
    if let Some(var) = named.find(|var| env.get(var).is_some_and(|held| held == value)) {
        return var;
    }
    let var = (1..)
        .map(|n| format!("VISHWA_ARG_{n}"))
        .find(|var| env.get(var).is_none_or(|held| held == value))
        .unwrap_or_default();
    env.insert(var.clone(), value.to_owned());
    var
}

/// A param name as an environment variable suffix: upper case, anything else than letters
/// and digits becomes `_`.
fn env_suffix(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::dag::parse_dag;
    use crate::ids::RunId;
    use crate::run::{RunPlan, RunRecord, RunState, TriggerKind};
    use crate::store::{MemoryStore, Store};

    const FAN_OUT: &str = "name: fan\n\
        params:\n  rows: 500\n  flavours: [chocolate, vanilla]\n\
        stages:\n  - name: train\n    image: i\n    for_each: \"{{ params.flavours }}\"\n    \
        command: [train, \"{{ item }}\", \"--rows={{ params.rows }}\"]\n";

    fn fan_out_run() -> Run {
        let dag = Arc::new(parse_dag(FAN_OUT, "fan.yaml").expect("valid DAG"));
        let params = dag
            .resolve_params(&BTreeMap::new())
            .expect("defaults resolve");
        let plan = Arc::new(RunPlan::build(dag, &params).expect("plan builds"));
        let record = RunRecord {
            id: RunId::new_manual("fan", 0),
            dag: "fan".to_owned(),
            dag_version: "v".to_owned(),
            params,
            state: RunState::Running,
            trigger: TriggerKind::Manual,
            created_ms: 0,
            started_ms: Some(0),
            finished_ms: None,
            message: None,
            logical_time_ms: None,
            deadline_ms: None,
            cancel_requested: false,
            retries: Vec::new(),
            no_cache: false,
            assets: Vec::new(),
        };
        Run::new(record, plan)
    }

    #[test]
    fn tasks_carry_rendered_commands_and_every_param_as_env() {
        let run = fan_out_run();
        let vanilla = run
            .plan
            .instance("train[vanilla]")
            .expect("instance exists");
        let store = MemoryStore::new();
        let secrets = SecretSource {
            key: None,
            store: Some(&store),
        };
        let task = build_task(
            &run,
            vanilla,
            &AttemptId::random(),
            1,
            &DagFiles::default(),
            &secrets,
        )
        .expect("renders");
        assert_eq!(
            task.command,
            Some(Command::Exec(vec![
                "train".to_owned(),
                "vanilla".to_owned(),
                "--rows=500".to_owned()
            ]))
        );
        assert_eq!(task.env["VISHWA_PARAM_ROWS"], "500");
        assert_eq!(
            task.env["VISHWA_PARAM_FLAVOURS"],
            r#"["chocolate","vanilla"]"#
        );
        assert_eq!(task.env["VISHWA_ITEM"], "vanilla");
        assert_eq!(task.env["VISHWA_STAGE"], "train[vanilla]");
    }

    #[test]
    fn params_too_large_for_the_environment_are_not_exported() {
        let items: Vec<String> = (0..5_000).map(|i| format!("\"item-{i}\"")).collect();
        let yaml = format!(
            "name: big\nparams:\n  items: [{}]\n  rows: 5\nstages:\n  - {{name: s, image: i, command: [echo, '{{{{ params.rows }}}}']}}\n",
            items.join(", ")
        );
        let dag = Arc::new(crate::dag::parse_dag(&yaml, "big.yaml").unwrap());
        let params = dag.resolve_params(&Default::default()).unwrap();
        let plan = RunPlan::build(dag, &params).unwrap();
        let names: Vec<&str> = plan.param_texts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["rows"],
            "the 5,000-item list stays out of the environment"
        );
    }

    const WITH_SECRET: &str = "name: s\nstages:\n  - name: publish\n    image: i\n    \
        env:\n      TOKEN: {secret: registry-token}\n      PLAIN: x\n    command: [echo]\n";

    fn one_stage_run(yaml: &str) -> Run {
        let dag = Arc::new(parse_dag(yaml, "s.yaml").expect("valid DAG"));
        let params = dag.resolve_params(&BTreeMap::new()).expect("no params");
        let plan = Arc::new(RunPlan::build(dag, &params).expect("plan builds"));
        let mut record = fan_out_run().record;
        record.dag = "s".into();
        record.params = params;
        Run::new(record, plan)
    }

    #[tokio::test]
    async fn a_stored_secret_reaches_the_task_env_marked_for_masking() {
        let dir = tempfile::tempdir().unwrap();
        let key = crate::secrets::SecretBox::load_or_create(&dir.path().join("key")).unwrap();
        let store = MemoryStore::new();
        store
            .put_secret(&key.seal("registry-token", b"tok-123", 1).unwrap())
            .await
            .unwrap();
        let secrets = SecretSource {
            key: Some(&key),
            store: Some(&store),
        };
        let run = one_stage_run(WITH_SECRET);
        let task = build_task(
            &run,
            0,
            &AttemptId::random(),
            1,
            &DagFiles::default(),
            &secrets,
        )
        .expect("the secret is set");
        assert_eq!(task.env["TOKEN"], "tok-123");
        assert_eq!(task.env["PLAIN"], "x");
        assert_eq!(task.secret_env, ["TOKEN"]);
    }

    #[test]
    fn a_missing_secret_fails_the_task_naming_it_and_the_fix() {
        let store = MemoryStore::new();
        let secrets = SecretSource {
            key: None,
            store: Some(&store),
        };
        let run = one_stage_run(WITH_SECRET);
        let error = build_task(
            &run,
            0,
            &AttemptId::random(),
            1,
            &DagFiles::default(),
            &secrets,
        )
        .expect_err("no such secret");
        assert!(
            error.contains("env.TOKEN needs secret `registry-token`"),
            "{error}"
        );
        assert!(
            error.contains("vishwa secret set registry-token"),
            "{error}"
        );
    }

    #[test]
    fn shell_commands_refer_to_values_through_the_environment() {
        let yaml = "name: s\nparams:\n  rows: 5\n  ab: x\n  AB: y\nstages:\n  - name: s\n    \
            image: i\n    command: \"echo {{ params.rows }} '{{ run.id }}' {{ params.AB }} \
            {{ params.ab }}\"\n";
        let run = one_stage_run(yaml);
        let task = build_task(
            &run,
            0,
            &AttemptId::random(),
            1,
            &DagFiles::default(),
            &SecretSource::names_only(),
        )
        .expect("renders");
        // `ab` and `AB` share VISHWA_PARAM_AB; the one it does not hold gets its own.
        assert_eq!(
            task.command,
            Some(Command::Shell(
                "echo \"$VISHWA_PARAM_ROWS\" ''\"$VISHWA_ARG_1\"'' \"$VISHWA_ARG_2\" \
                 \"$VISHWA_PARAM_AB\""
                    .to_owned()
            ))
        );
        assert_eq!(task.env["VISHWA_ARG_1"], run.record.id.0);
        assert_eq!(task.env["VISHWA_PARAM_AB"], "x");
        assert_eq!(task.env["VISHWA_ARG_2"], "y");
    }

    #[test]
    fn param_names_become_upper_case_env_suffixes() {
        assert_eq!(env_suffix("min_accuracy"), "MIN_ACCURACY");
        assert_eq!(env_suffix("rows"), "ROWS");
    }
}
