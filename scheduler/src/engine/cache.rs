//! The stage cache: before a queued instance of a `cache: true` stage goes to a worker, its
//! key is computed from everything that decides its result (image reference, rendered
//! command, the stage's env with secrets by name, the params its templates use, its input
//! digests, the bundle digest). A key with an entry makes the instance succeed at once with
//! the stored outputs and metrics; a miss is recorded with its reason, found by comparing
//! the components with the last lookup of the same stage instance of the DAG.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use tracing::{debug, warn};

use super::core::Engine;
use super::task::{SecretSource, build_task};
use super::{DagFiles, TaskAssignment};
use crate::dag::{EnvValue, param_text, template_references};
use crate::ids::{AttemptId, Millis, RunId};
use crate::run::{CacheNote, CacheOutcome, Event, Run, StageState};
use crate::store::{CacheComponents, LastLookup};

/// Bumped when what goes into a key changes, so old entries stop matching.
const KEY_VERSION: &str = "vishwa-cache-v1";

impl Engine {
    /// Looks up every pending cache check; hits succeed at once (which may make more
    /// instances ready, and checks them too), misses go to the ready queue.
    pub(super) fn resolve_cache_checks(&mut self, now: Millis) {
        while let Some((id, i)) = self.cache_checks.pop() {
            self.check_cache(&id, i, now);
        }
    }

    fn check_cache(&mut self, id: &RunId, i: usize, now: Millis) {
        let Some(run) = self.runs.get(id) else {
            return;
        };
        if !matches!(run.stages[i].state, StageState::Queued { .. }) {
            return;
        }
        let key = (run.record.dag.clone(), run.record.dag_version.clone());
        let files = self.files.get(&key).cloned().unwrap_or_default();
        // Rendering errors are reported when the instance is dispatched.
        let Ok(task) = build_task(
            run,
            i,
            &AttemptId::from("cache-lookup"),
            0,
            &files,
            &SecretSource::names_only(),
        ) else {
            self.push_ready(id, i);
            return;
        };
        let mut components = cache_components(run, i, &task, &files);
        if let (None, Some(dir)) = (&files.bundle, &files.local_dir) {
            // The folder's content, not only its path, decides the result; read once a run.
            let digest = self
                .local_dir_digests
                .entry(id.clone())
                .or_insert_with(|| local_dir_digest(std::path::Path::new(dir)));
            components.bundle = format!("local:{dir}:{digest}");
        }
        let key = cache_key(&components);
        let dag = run.record.dag.clone();
        let instance = run.stages[i].instance.clone();
        let no_cache = run.record.no_cache;
        // Looked up again (a retry, a lost attempt): the reason found the first time stands.
        let earlier_miss = match &run.stages[i].cache {
            Some(CacheNote {
                key: k,
                outcome: CacheOutcome::Miss { reason },
            }) if *k == key => Some(reason.clone()),
            _ => None,
        };
        let last = match self.store.get_last_lookup(&dag, &instance) {
            Ok(last) => last,
            Err(e) => {
                warn!(run = %id, %instance, error = %e, "cannot read the last cache lookup");
                None
            }
        };
        if earlier_miss.is_none() {
            self.batch.put_last_lookup(LastLookup {
                dag: dag.clone(),
                stage: instance.clone(),
                key: key.clone(),
                run: id.clone(),
                components: components.clone(),
            });
        }
        let entry = if no_cache {
            None
        } else {
            match self.store.get_cache(&key) {
                Ok(entry) => entry,
                Err(e) => {
                    warn!(run = %id, %instance, error = %e, "cache lookup failed; running the stage");
                    None
                }
            }
        };
        if let Some(entry) = entry {
            debug!(run = %id, %instance, from = %entry.run, "cache hit");
            let note = CacheNote {
                key: key.clone(),
                outcome: CacheOutcome::Hit {
                    run: entry.run.clone(),
                    stage: entry.stage.clone(),
                },
            };
            let hit = Event::CacheHit {
                instance: i,
                note,
                outputs: entry.outputs,
                metrics: entry.metrics,
            };
            // Refused only if the instance is no longer queued; then it needs nothing more.
            let _ = self.apply(id, hit, now);
            return;
        }
        let reason = if no_cache {
            "caching disabled for this run (--no-cache)".to_owned()
        } else if let Some(reason) = earlier_miss {
            reason
        } else {
            why_missed(last.as_ref(), &components)
        };
        let miss = Event::CacheMiss {
            instance: i,
            key,
            reason,
        };
        if self.apply(id, miss, now).is_ok() {
            self.push_ready(id, i);
        }
    }
}

/// What decides instance `i`'s result, from its rendered task.
pub(super) fn cache_components(
    run: &Run,
    i: usize,
    task: &TaskAssignment,
    files: &DagFiles,
) -> CacheComponents {
    let node = &run.plan.nodes[i];
    let stage = &run.plan.dag.stages[node.stage];
    let mut env = BTreeMap::new();
    let mut templates: Vec<&str> = Vec::new();
    for (name, value) in &stage.env {
        match value {
            EnvValue::Literal(text) => {
                templates.push(text);
                env.insert(
                    name.clone(),
                    task.env.get(name).cloned().unwrap_or_default(),
                );
            }
            // The value never enters the key (nor the store): only which secret it is.
            EnvValue::Secret(secret) => {
                env.insert(name.clone(), format!("secret:{secret}"));
            }
        }
    }
    // Values a shell-form command refers to through `VISHWA_ARG_<n>` (dag/shell.rs): its
    // text no longer holds them, so they join the key here.
    for (name, value) in task.env.range("VISHWA_ARG_".to_owned()..) {
        if !name.starts_with("VISHWA_ARG_") {
            break;
        }
        env.insert(name.clone(), value.clone());
    }
    match &stage.command {
        Some(crate::dag::Command::Shell(s)) => templates.push(s),
        Some(crate::dag::Command::Exec(args)) => templates.extend(args.iter().map(String::as_str)),
        None => {}
    }
    let mut params = BTreeMap::new();
    for text in templates {
        for reference in template_references(text).unwrap_or_default() {
            if let Some(name) = reference.strip_prefix("params.") {
                if let Some(value) = run.record.params.get(name) {
                    params.insert(name.to_owned(), param_text(value));
                }
            } else if reference == "item"
                && let Some(item) = &node.item
            {
                params.insert("item".to_owned(), param_text(item));
            }
        }
    }
    let inputs = task
        .inputs
        .iter()
        .map(|input| {
            (
                format!("{}/{}", input.stage, input.name),
                input.digest.clone(),
            )
        })
        .collect();
    let bundle = match (&files.bundle, &files.local_dir) {
        (Some(digest), _) => digest.clone(),
        (None, Some(dir)) => format!("local:{dir}"),
        (None, None) => String::new(),
    };
    CacheComponents {
        image: task.image.clone().unwrap_or_default(),
        command: serde_json::to_string(&task.command).unwrap_or_default(),
        env,
        params,
        inputs,
        bundle,
        shape: format!("{:?} outputs={:?}", stage.executor, stage.outputs),
    }
}

/// A digest of a DAG folder on the scheduler's host: every regular file's path and content,
/// in path order (symlinks are not followed). Unreadable parts are named in the digest's
/// input, so they change it rather than being silently skipped.
pub(super) fn local_dir_digest(dir: &std::path::Path) -> String {
    fn walk(dir: &std::path::Path, files: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            files.push(dir.to_path_buf());
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => walk(&path, files),
                Ok(t) if t.is_file() => files.push(path),
                _ => {}
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, &mut files);
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        let relative = file.strip_prefix(dir).unwrap_or(&file);
        hasher.update(relative.to_string_lossy().as_bytes());
        hasher.update([0]);
        match std::fs::read(&file) {
            Ok(bytes) => hasher.update(Sha256::digest(&bytes)),
            Err(e) => hasher.update(format!("unreadable: {e}").as_bytes()),
        }
    }
    hex::encode(hasher.finalize())
}

/// The key: sha256 over the components' canonical JSON (maps are ordered).
pub(super) fn cache_key(components: &CacheComponents) -> String {
    let mut hasher = Sha256::new();
    hasher.update(KEY_VERSION.as_bytes());
    hasher.update([0]);
    hasher.update(serde_json::to_vec(components).unwrap_or_default());
    hex::encode(hasher.finalize())
}

/// Says why a key had no entry: what changed since the last lookup of the same stage
/// instance, or that nothing did.
pub(super) fn why_missed(last: Option<&LastLookup>, now: &CacheComponents) -> String {
    let Some(last) = last else {
        return "no entry for key (first run of this stage with caching)".to_owned();
    };
    let before = &last.components;
    let mut changes = Vec::new();
    if before.image != now.image {
        changes.push(format!("image changed ({} -> {})", before.image, now.image));
    }
    if before.command != now.command {
        changes.push("command changed".to_owned());
    }
    let changed_params = changed_keys(&before.params, &now.params);
    if !changed_params.is_empty() {
        changes.push(format!("params changed ({})", changed_params.join(", ")));
    }
    let changed_env = changed_keys(&before.env, &now.env);
    if !changed_env.is_empty() {
        changes.push(format!("env changed ({})", changed_env.join(", ")));
    }
    for input in changed_keys(&before.inputs, &now.inputs) {
        changes.push(format!("input {input} changed"));
    }
    if before.bundle != now.bundle {
        changes.push("bundle changed (the DAG's files)".to_owned());
    }
    if before.shape != now.shape {
        changes.push("executor or declared outputs changed".to_owned());
    }
    if changes.is_empty() {
        format!(
            "no entry for key (nothing changed since run {}, which stored no result)",
            last.run
        )
    } else {
        format!("{} since run {}", changes.join("; "), last.run)
    }
}

/// Keys added, removed or with another value.
fn changed_keys(before: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<String> {
    let mut keys: Vec<String> = before
        .iter()
        .filter(|(k, v)| now.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    for k in now.keys() {
        if !before.contains_key(k) {
            keys.push(k.clone());
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn components() -> CacheComponents {
        CacheComponents {
            image: "img:1".into(),
            command: "[\"train\"]".into(),
            env: BTreeMap::from([("TARGET".into(), "staging".into())]),
            params: BTreeMap::from([("rows".into(), "100".into())]),
            inputs: BTreeMap::from([("prep/data.csv".into(), "aa".into())]),
            bundle: "b".into(),
            shape: "Docker".into(),
        }
    }

    fn last(components: CacheComponents) -> LastLookup {
        LastLookup {
            dag: "d".into(),
            stage: "train".into(),
            key: cache_key(&components),
            run: RunId::from("d-1"),
            components,
        }
    }

    #[test]
    fn a_local_dag_folder_is_keyed_by_its_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("lib")).unwrap();
        std::fs::write(dir.path().join("train.py"), "print(1)").unwrap();
        std::fs::write(dir.path().join("lib/util.py"), "x = 1").unwrap();
        let before = local_dir_digest(dir.path());
        assert_eq!(before, local_dir_digest(dir.path()));
        std::fs::write(dir.path().join("lib/util.py"), "x = 2").unwrap();
        assert_ne!(before, local_dir_digest(dir.path()));
    }

    #[test]
    fn keys_change_with_every_component_and_only_with_them() {
        let base = components();
        assert_eq!(cache_key(&base), cache_key(&components()));
        let mut variants = Vec::new();
        let mut c = components();
        c.image = "img:2".into();
        variants.push(c);
        let mut c = components();
        c.params.insert("rows".into(), "200".into());
        variants.push(c);
        let mut c = components();
        c.inputs.insert("prep/data.csv".into(), "bb".into());
        variants.push(c);
        let mut c = components();
        c.bundle = "other".into();
        variants.push(c);
        let mut c = components();
        c.env.insert("TARGET".into(), "prod".into());
        variants.push(c);
        for v in variants {
            assert_ne!(cache_key(&base), cache_key(&v), "{v:?}");
        }
    }

    #[test]
    fn a_miss_names_what_changed_since_the_last_lookup() {
        let before = last(components());
        let mut now = components();
        now.params.insert("rows".into(), "200".into());
        now.inputs.insert("prep/data.csv".into(), "bb".into());
        let reason = why_missed(Some(&before), &now);
        assert!(reason.contains("params changed (rows)"), "{reason}");
        assert!(reason.contains("input prep/data.csv changed"), "{reason}");
        assert!(reason.contains("since run d-1"), "{reason}");
        let mut now = components();
        now.image = "img:2".into();
        assert!(why_missed(Some(&before), &now).contains("image changed (img:1 -> img:2)"));
        assert!(why_missed(None, &now).starts_with("no entry for key"));
        assert!(why_missed(Some(&before), &components()).contains("nothing changed"));
    }
}
