//! `vishwa assets`: every asset (or one) with its versions, the run that published each and
//! the runs that consumed it, and the DAGs it triggers.

use vishwa_proto::v1 as pb;

use super::error::ApiError;
use crate::store::Store;

pub(crate) fn list_assets(
    store: &dyn Store,
    name: &str,
) -> Result<pb::ListAssetsResponse, ApiError> {
    let name = name.trim();
    let assets = if name.is_empty() {
        store.list_assets()?
    } else {
        vec![
            store
                .get_asset(name)?
                .ok_or_else(|| ApiError::AssetNotFound {
                    name: name.to_owned(),
                })?,
        ]
    };
    let runs = store.list_runs()?;
    let mut triggered: Vec<(String, Vec<String>)> = Vec::new();
    for dag in store.list_dags()? {
        let Some(version) = store.get_dag_version(&dag.name, &dag.version)? else {
            continue;
        };
        if let Ok(parsed) = crate::dag::parse_dag(&version.source, &version.file_name) {
            let names = parsed
                .asset_triggers()
                .flat_map(|(names, _, _)| names.to_vec())
                .collect();
            triggered.push((dag.name, names));
        }
    }
    let assets = assets
        .iter()
        .map(|asset| {
            let mut out = pb::Asset::from(asset);
            for version in &mut out.versions {
                version.consumer_runs = runs
                    .iter()
                    .filter(|r| {
                        r.assets
                            .iter()
                            .any(|a| a.asset == asset.name && a.version == version.version)
                    })
                    .map(|r| r.id.0.clone())
                    .collect();
            }
            out.triggers = triggered
                .iter()
                .filter(|(_, names)| names.contains(&asset.name))
                .map(|(dag, _)| dag.clone())
                .collect();
            out
        })
        .collect();
    Ok(pb::ListAssetsResponse { assets })
}
