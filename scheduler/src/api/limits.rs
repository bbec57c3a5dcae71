//! Size limits on what a client asks for, checked by the scheduler and, early, by the CLI:
//! a 10,000-character name or a 10 MB param is a mistake, and would fail every stage.

/// The longest DAG, stage or param name, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// The largest param value, in bytes.
pub const MAX_PARAM_BYTES: usize = 64 << 10;
/// The largest trigger: the DAG name and every param name and value, in bytes.
pub const MAX_TRIGGER_BYTES: usize = 1 << 20;

/// Checks a trigger of `dag` with `params` against the limits; the error says which limit,
/// by how much, and what to do instead.
pub fn check_trigger<'a>(
    dag: &str,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), String> {
    check_name("DAG name", dag)?;
    let mut total = dag.len();
    for (name, value) in params {
        check_name("param name", name)?;
        if value.len() > MAX_PARAM_BYTES {
            return Err(format!(
                "param `{name}` is {} bytes; a param value is at most {MAX_PARAM_BYTES} bytes \
                 (64 KiB): put large data in a file or an upstream stage's output and pass its \
                 name",
                value.len()
            ));
        }
        total += name.len() + value.len();
    }
    if total > MAX_TRIGGER_BYTES {
        return Err(format!(
            "the trigger is {total} bytes; a trigger's DAG name and params are at most \
             {MAX_TRIGGER_BYTES} bytes (1 MiB) in all: pass fewer or smaller params"
        ));
    }
    Ok(())
}

/// Checks one name against [`MAX_NAME_CHARS`].
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        let start: String = name.chars().take(20).collect();
        return Err(format!(
            "{what} `{start}...` is {chars} characters; names are at most {MAX_NAME_CHARS}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_params_and_whole_triggers_are_bounded() {
        assert!(check_trigger("cake", [("rows", "500")]).is_ok());
        let long = "a".repeat(10_000);
        let e = check_trigger(&long, []).unwrap_err();
        assert!(
            e.contains("10000 characters") && e.contains("at most 128"),
            "{e}"
        );
        assert!(check_trigger(&"a".repeat(128), []).is_ok());
        let e = check_trigger("cake", [(long.as_str(), "1")]).unwrap_err();
        assert!(e.starts_with("param name"), "{e}");
        let big = "x".repeat(10 << 20);
        let e = check_trigger("cake", [("data", big.as_str())]).unwrap_err();
        assert!(e.contains("param `data` is 10485760 bytes"), "{e}");
        let value = "x".repeat(MAX_PARAM_BYTES);
        let names: Vec<String> = (0..20).map(|i| format!("p{i}")).collect();
        let params = names.iter().map(|n| (n.as_str(), value.as_str()));
        let e = check_trigger("cake", params).unwrap_err();
        assert!(e.contains("at most 1048576 bytes (1 MiB)"), "{e}");
    }
}
