//! DAG files the crash tests run.

use std::fmt::Write;

use super::IMAGE;

/// A DAG of `layers × width` Docker stages `sL-II` that sleep 0.2–2 s (varying by stage);
/// each stage after the first layer needs two stages of the layer before.
pub fn layered_dag(name: &str, layers: usize, width: usize) -> String {
    let mut yaml = format!("name: {name}\ndefaults:\n  image: {IMAGE}\nstages:\n");
    for layer in 0..layers {
        for i in 0..width {
            let tenths = 2 + (i * 7 + layer * 13) % 19;
            let _ = writeln!(yaml, "  - name: s{layer}-{i:02}");
            let _ = writeln!(
                yaml,
                "    command: \"sleep {}.{}\"",
                tenths / 10,
                tenths % 10
            );
            if layer > 0 {
                let _ = writeln!(
                    yaml,
                    "    needs: [s{}-{i:02}, s{}-{:02}]",
                    layer - 1,
                    layer - 1,
                    (i + 1) % width
                );
            }
        }
    }
    yaml
}

/// A DAG of one Docker stage running `script` (a shell command).
pub fn one_stage_dag(name: &str, stage: &str, script: &str) -> String {
    format!(
        "name: {name}\nstages:\n  - name: {stage}\n    image: {IMAGE}\n    command: {}\n",
        yaml_string(script)
    )
}

/// `text` as a double-quoted YAML string.
pub fn yaml_string(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialize")
}
