//! Data assets inside the engine: a succeeded stage publishes a new version of each asset
//! its outputs name (a new digest; the same bytes again publish nothing), and every DAG
//! triggered by assets whose trigger is now satisfied gets a run consuming the newest
//! versions. The versions, the consumer's cursor and the run are written in the same batch
//! as the stage's success: a version starts at most one run of each consumer, and a restart
//! loses none.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use tracing::{info, warn};

use super::EngineError;
use super::core::Engine;
use crate::dag::{AssetMode, Dag, DagError, DagErrors};
use crate::ids::{Millis, RunId};
use crate::run::{ConsumedAsset, Run, RunPlan, RunRecord, RunState, TriggerKind};
use crate::store::{AssetCursor, AssetRecord, AssetVersion};

/// Assets and cursors read or written since the engine started (the store's state plus
/// this turn's writes, which the store sees only once committed).
#[derive(Debug, Default)]
pub(super) struct AssetBook {
    assets: HashMap<String, AssetRecord>,
    cursors: HashMap<String, AssetCursor>,
}

impl Engine {
    fn asset(&mut self, name: &str) -> Result<AssetRecord, EngineError> {
        if let Some(asset) = self.assets.assets.get(name) {
            return Ok(asset.clone());
        }
        let asset = self.store.get_asset(name)?.unwrap_or_else(|| AssetRecord {
            name: name.to_owned(),
            versions: Vec::new(),
        });
        self.assets.assets.insert(name.to_owned(), asset.clone());
        Ok(asset)
    }

    fn asset_cursor(&mut self, dag: &str) -> Result<Option<AssetCursor>, EngineError> {
        if let Some(cursor) = self.assets.cursors.get(dag) {
            return Ok(Some(cursor.clone()));
        }
        let cursor = self.store.get_asset_cursor(dag)?;
        if let Some(cursor) = &cursor {
            self.assets.cursors.insert(dag.to_owned(), cursor.clone());
        }
        Ok(cursor)
    }

    fn put_asset_cursor(&mut self, cursor: AssetCursor) {
        self.batch.put_asset_cursor(cursor.clone());
        self.assets.cursors.insert(cursor.dag.clone(), cursor);
    }

    /// Publishes the assets of succeeded instance `i` of run `id`, then starts the runs the
    /// new versions trigger. Called for `Action::Succeeded`, in the turn of the success.
    pub(super) fn publish_assets(&mut self, id: &RunId, i: usize, now: Millis) {
        let Some(run) = self.runs.get(id) else {
            return;
        };
        let record = &run.stages[i];
        let stage = &run.plan.dag.stages[run.plan.nodes[i].stage];
        let published: Vec<(String, AssetVersion)> = stage
            .assets
            .iter()
            .filter_map(|(file, asset)| {
                // An optional output the stage did not write publishes nothing.
                let output = record.outputs.iter().find(|o| &o.name == file)?;
                Some((
                    asset.clone(),
                    AssetVersion {
                        version: 0,
                        digest: output.digest.clone(),
                        file: file.clone(),
                        size: output.size,
                        run: id.clone(),
                        stage: record.instance.clone(),
                        created_ms: now,
                    },
                ))
            })
            .collect();
        let mut changed = false;
        for (name, mut version) in published {
            let mut asset = match self.asset(&name) {
                Ok(asset) => asset,
                Err(e) => {
                    warn!(asset = %name, error = %e, "cannot read asset; version not published");
                    continue;
                }
            };
            if asset
                .versions
                .last()
                .is_some_and(|v| v.digest == version.digest)
            {
                continue;
            }
            version.version = asset.latest() + 1;
            info!(asset = %name, version = version.version, run = %id, "asset version published");
            asset.versions.push(version);
            self.batch.put_asset(asset.clone());
            self.assets.assets.insert(name, asset);
            changed = true;
        }
        if changed {
            self.fire_asset_triggers(now);
        }
    }

    /// Starts a run of every registered, unpaused DAG whose asset trigger is satisfied.
    pub(super) fn fire_asset_triggers(&mut self, now: Millis) {
        let dags = match self.store.list_dags() {
            Ok(dags) => dags,
            Err(e) => {
                warn!(error = %e, "cannot list DAGs for asset triggers");
                return;
            }
        };
        for record in dags {
            if record.paused {
                continue;
            }
            let Ok(dag) = self.load_dag(&record.name, &record.version) else {
                continue;
            };
            if dag.triggers.is_empty() {
                continue;
            }
            if let Err(e) = self.fire_dag_assets(&dag, &record.version, now) {
                warn!(dag = %record.name, error = %e, "asset trigger not evaluated");
            }
        }
    }

    fn fire_dag_assets(
        &mut self,
        dag: &Arc<Dag>,
        version: &str,
        now: Millis,
    ) -> Result<(), EngineError> {
        let name = dag.name.0.clone();
        let mut cursor = self.asset_cursor(&name)?.unwrap_or_else(|| AssetCursor {
            dag: name.clone(),
            seen: BTreeMap::new(),
        });
        let triggers: Vec<(Vec<String>, AssetMode)> = dag
            .asset_triggers()
            .map(|(names, mode, _)| (names.to_vec(), mode))
            .collect();
        let mut moved = false;
        for (names, mode) in triggers {
            let mut assets = Vec::with_capacity(names.len());
            for n in &names {
                assets.push(self.asset(n)?);
            }
            let is_new =
                |a: &AssetRecord| a.latest() > cursor.seen.get(&a.name).copied().unwrap_or(0);
            let fires = match mode {
                AssetMode::Any => assets.iter().any(is_new),
                AssetMode::All => assets.iter().all(is_new),
            };
            if !fires {
                continue;
            }
            let consumed: Vec<ConsumedAsset> = assets
                .iter()
                .filter_map(|a| {
                    let v = a.versions.last()?;
                    Some(ConsumedAsset {
                        asset: a.name.clone(),
                        version: v.version,
                        digest: v.digest.clone(),
                        file: v.file.clone(),
                        size: v.size,
                    })
                })
                .collect();
            for a in &assets {
                cursor.seen.insert(a.name.clone(), a.latest());
            }
            moved = true;
            self.create_asset_run(dag, version, consumed, now)?;
        }
        if moved {
            self.put_asset_cursor(cursor);
            self.admit_queued_runs(&name, now);
        }
        Ok(())
    }

    fn create_asset_run(
        &mut self,
        dag: &Arc<Dag>,
        version: &str,
        consumed: Vec<ConsumedAsset>,
        now: Millis,
    ) -> Result<(), EngineError> {
        let name = dag.name.0.clone();
        let params = dag.resolve_params(&BTreeMap::new())?;
        let plan = Arc::new(RunPlan::build(dag.clone(), &params)?);
        let record = RunRecord {
            id: self.unused_run_id(&name, now)?,
            dag: name.clone(),
            dag_version: version.to_owned(),
            params,
            state: RunState::Queued,
            trigger: TriggerKind::Asset,
            created_ms: now,
            started_ms: None,
            finished_ms: None,
            message: None,
            logical_time_ms: None,
            deadline_ms: None,
            cancel_requested: false,
            retries: Vec::new(),
            no_cache: false,
            assets: consumed,
        };
        let id = record.id.clone();
        let versions: Vec<String> = record
            .assets
            .iter()
            .map(|a| format!("{}@{}", a.asset, a.version))
            .collect();
        self.runs.insert(id.clone(), Run::new(record, plan));
        self.touched.insert(id.clone());
        info!(run = %id, dag = %name, assets = %versions.join(","), "run created for new asset versions");
        Ok(())
    }

    /// A DAG being registered: its asset triggers must not close a cycle through the DAGs
    /// already registered (one publishes what starts the next, back to the first).
    pub(super) fn check_asset_cycles(
        &mut self,
        dag: &Dag,
        file_name: &str,
    ) -> Result<(), EngineError> {
        let (Some((_, _, at)), false) = (
            dag.asset_triggers().next(),
            dag.published_assets().is_empty(),
        ) else {
            return Ok(());
        };
        // DAG name → (assets it publishes, assets that trigger it), the new DAG replacing its
        // registered version.
        let mut graph: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
        for record in self.store.list_dags()? {
            if record.name == dag.name.0 {
                continue;
            }
            let Ok(other) = self.load_dag(&record.name, &record.version) else {
                continue;
            };
            graph.insert(record.name.clone(), edges_of(&other));
        }
        graph.insert(dag.name.0.clone(), edges_of(dag));
        if let Some(path) = cycle_through(&graph, &dag.name.0) {
            return Err(EngineError::InvalidDag(DagErrors::single(
                file_name,
                DagError::AssetCycle { path, at },
            )));
        }
        Ok(())
    }

    /// A DAG registered with asset triggers: versions published before it (or before it
    /// named an asset) start nothing; only newer ones do.
    pub(super) fn assets_dag_submitted(&mut self, dag: &Dag) -> Result<(), EngineError> {
        let names: HashSet<String> = dag
            .asset_triggers()
            .flat_map(|(names, _, _)| names.iter().cloned())
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        let mut cursor = self
            .asset_cursor(&dag.name.0)?
            .unwrap_or_else(|| AssetCursor {
                dag: dag.name.0.clone(),
                seen: BTreeMap::new(),
            });
        let mut changed = false;
        for name in names {
            if let Entry::Vacant(entry) = cursor.seen.entry(name) {
                let latest = self.asset(entry.key())?.latest();
                entry.insert(latest);
                changed = true;
            }
        }
        if changed {
            self.put_asset_cursor(cursor);
        }
        Ok(())
    }
}

fn edges_of(dag: &Dag) -> (Vec<String>, Vec<String>) {
    let triggers = dag
        .asset_triggers()
        .flat_map(|(names, _, _)| names.iter().cloned())
        .collect();
    (dag.published_assets(), triggers)
}

/// A path of DAGs from `start` back to itself, each publishing an asset that triggers the
/// next, as `a publishes `x` → b publishes `y` → a`; None without one.
fn cycle_through(
    graph: &BTreeMap<String, (Vec<String>, Vec<String>)>,
    start: &str,
) -> Option<String> {
    // Depth-first from `start`, remembering how each DAG was reached.
    let mut reached: HashMap<String, (String, String)> = HashMap::new();
    let mut work = vec![start.to_owned()];
    while let Some(from) = work.pop() {
        let (publishes, _) = &graph[&from];
        for (to, (_, triggered_by)) in graph {
            let Some(asset) = publishes.iter().find(|a| triggered_by.contains(a)) else {
                continue;
            };
            if to == start {
                let mut steps = vec![format!("{from} publishes `{asset}`")];
                let mut at = from.clone();
                while at != start {
                    let (prev, prev_asset) = &reached[&at];
                    steps.push(format!("{prev} publishes `{prev_asset}`"));
                    at = prev.clone();
                }
                steps.reverse();
                return Some(format!("{} -> {start}", steps.join(" -> ")));
            }
            if !reached.contains_key(to) {
                reached.insert(to.clone(), (from.clone(), asset.clone()));
                work.push(to.clone());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(entries: &[(&str, &[&str], &[&str])]) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
        entries
            .iter()
            .map(|(n, p, t)| {
                let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
                (n.to_string(), (v(p), v(t)))
            })
            .collect()
    }

    #[test]
    fn a_cycle_across_dags_is_named_step_by_step() {
        let g = graph(&[
            ("ingest", &["raw"], &["model"]),
            ("train", &["model"], &["raw"]),
            ("report", &[], &["model"]),
        ]);
        assert_eq!(
            cycle_through(&g, "ingest").as_deref(),
            Some("ingest publishes `raw` -> train publishes `model` -> ingest")
        );
    }

    #[test]
    fn a_chain_without_a_way_back_is_no_cycle() {
        let g = graph(&[
            ("ingest", &["raw"], &[]),
            ("train", &["model"], &["raw"]),
            ("report", &[], &["model"]),
        ]);
        assert_eq!(cycle_through(&g, "train"), None);
        assert_eq!(cycle_through(&g, "ingest"), None);
    }
}

#[cfg(test)]
#[path = "assets_tests.rs"]
mod engine_tests;
