//! The workloads as DAG files: chains, fan-outs (explicit or `for_each`) and parallel chains
//! of stages that all run the same trivial command.

use std::fmt::Write;

/// How every stage of a generated DAG runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StageKind {
    /// `process` or `docker`.
    pub(crate) executor: &'static str,
    /// Set for Docker stages.
    pub(crate) image: Option<&'static str>,
    /// The program each stage runs (exec form, no arguments).
    pub(crate) program: &'static str,
}

fn header(name: &str, kind: StageKind, params: &str) -> String {
    let mut out = format!(
        "name: {name}\n{params}defaults:\n  executor: {}\n",
        kind.executor
    );
    if let Some(image) = kind.image {
        let _ = writeln!(out, "  image: {image}");
    }
    out.push_str("stages:\n");
    out
}

fn stage(out: &mut String, kind: StageKind, name: &str, needs: &[String]) {
    let _ = writeln!(out, "  - name: {name}\n    command: [\"{}\"]", kind.program);
    if !needs.is_empty() {
        let _ = writeln!(out, "    needs: [{}]", needs.join(", "));
    }
}

/// `len` stages, each needing the one before.
pub(crate) fn chain(name: &str, len: usize, kind: StageKind) -> String {
    chains(name, 1, len, kind)
}

/// `count` independent chains of `len` stages each.
pub(crate) fn chains(name: &str, count: usize, len: usize, kind: StageKind) -> String {
    let mut out = header(name, kind, "");
    for c in 0..count {
        for s in 0..len {
            let needs = if s == 0 {
                Vec::new()
            } else {
                vec![format!("c{c}-s{}", s - 1)]
            };
            stage(&mut out, kind, &format!("c{c}-s{s}"), &needs);
        }
    }
    out
}

/// `first` → `width` explicit stages → `last`.
pub(crate) fn fan(name: &str, width: usize, kind: StageKind) -> String {
    let mut out = header(name, kind, "");
    stage(&mut out, kind, "first", &[]);
    let middle: Vec<String> = (0..width).map(|i| format!("m{i}")).collect();
    for m in &middle {
        stage(&mut out, kind, m, &["first".to_owned()]);
    }
    stage(&mut out, kind, "last", &middle);
    out
}

/// `first` → one `for_each` stage over a `width`-item list param → `last`.
pub(crate) fn fan_for_each(name: &str, width: usize, kind: StageKind) -> String {
    let items: Vec<String> = (0..width).map(|i| i.to_string()).collect();
    let params = format!("params:\n  items: [{}]\n", items.join(", "));
    let mut out = header(name, kind, &params);
    stage(&mut out, kind, "first", &[]);
    let _ = writeln!(
        out,
        "  - name: work\n    needs: [first]\n    for_each: \"{{{{ params.items }}}}\"\n    \
         command: [\"{}\", \"{{{{ item }}}}\"]",
        kind.program
    );
    stage(&mut out, kind, "last", &["work".to_owned()]);
    out
}

#[cfg(test)]
mod tests {
    use vishwa_scheduler::dag::parse_dag;

    use super::*;

    const PROCESS_TRUE: StageKind = StageKind {
        executor: "process",
        image: None,
        program: "true",
    };

    #[test]
    fn generated_dags_are_valid_and_have_the_expected_stage_counts() {
        let cases = [
            (chain("w1", 50, PROCESS_TRUE), 50),
            (chains("cs", 3, 4, PROCESS_TRUE), 12),
            (fan("w2", 200, PROCESS_TRUE), 202),
            (fan_for_each("fe", 10, PROCESS_TRUE), 3),
        ];
        for (yaml, stages) in cases {
            let dag = parse_dag(&yaml, "gen.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
            assert_eq!(dag.stages.len(), stages);
        }
    }
}
