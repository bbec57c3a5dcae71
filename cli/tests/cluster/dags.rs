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

/// Lines each stage of [`talkative_dag`] prints in the tests.
pub const TALK_LINES: usize = 30;

/// A DAG whose stage `talk` fans out over `items`; each instance prints `line 1` to
/// `line N`, one every 0.2 s; a stage `after` follows.
pub fn talkative_dag(name: &str, items: &[&str], lines: usize) -> String {
    format!(
        "name: {name}\ndefaults:\n  image: {IMAGE}\nstages:\n  - name: talk\n    for_each: [{}]\n    command: {}\n  - name: after\n    needs: [talk]\n    command: \"echo after\"\n",
        items.join(", "),
        yaml_string(&format!(
            "for i in $(seq 1 {lines}); do echo \"line $i\"; sleep 0.2; done"
        ))
    )
}
