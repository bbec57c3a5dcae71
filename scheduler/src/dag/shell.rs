//! Shell-form commands (`command: "..."`, run by `/bin/sh -c`): a rendered value never
//! becomes shell syntax.
//!
//! Every `{{ ... }}` of a shell-form command is rendered to its text as usual, but that text
//! is handed to the caller (which puts it in the stage's environment) and the command gets a
//! quoted reference to the variable instead, spelled for the quoting context the template
//! sits in:
//!
//! | context                          | becomes              |
//! |----------------------------------|----------------------|
//! | bare (`echo {{ x }}`)            | `echo "$VAR"`        |
//! | double quotes (`"a {{ x }}"`)    | `"a ${VAR}"`         |
//! | single quotes (`'a {{ x }}'`)    | `'a '"$VAR"''`       |
//! | here-document (`<<EOF`)          | `${VAR}`             |
//!
//! The shell expands a variable's value without parsing it again, so `$(...)`, backticks,
//! `;`, quotes and newlines in a param arrive verbatim and run nothing. A template in a
//! here-document whose delimiter is quoted (`<<'EOF'`, where nothing expands) or in a
//! delimiter is refused.

use std::cell::RefCell;

use crate::dag::template::{TemplateContext, TemplateError, is_template, render_template};

/// Stands for one rendered value in the text between rendering and quoting: a private-use
/// character, refused in the command itself.
const MARKER: char = '\u{E000}';
const MARKER_TEXT: &str = "\u{E000}";

thread_local! {
    /// The values rendered so far by the shell-form render running on this thread, if any.
    static CAPTURED: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// Called by the template formatter for each value it prints: while a shell-form command
/// renders on this thread, keeps the value and returns the marker to print instead.
pub(crate) fn capture(text: impl FnOnce() -> String) -> Option<&'static str> {
    CAPTURED.with(|captured| {
        let mut captured = captured.borrow_mut();
        let values = captured.as_mut()?;
        values.push(text());
        Some(MARKER_TEXT)
    })
}

/// Renders a shell-form command. `var_for` receives each rendered value and returns the
/// name of the environment variable that will hold it (the caller puts it there); the
/// command refers to that variable, quoted for where the template stands.
pub fn render_shell_command(
    template: &str,
    ctx: &TemplateContext<'_>,
    mut var_for: impl FnMut(&str) -> String,
) -> Result<String, TemplateError> {
    if !is_template(template) {
        return Ok(template.to_owned());
    }
    let refuse = |detail: &str| TemplateError::Shell {
        template: template.to_owned(),
        detail: detail.to_owned(),
    };
    if template.contains(MARKER) {
        return Err(refuse(
            "it contains U+E000, a character Vishwa reserves; remove it",
        ));
    }
    CAPTURED.with(|captured| *captured.borrow_mut() = Some(Vec::new()));
    let rendered = render_template(template, ctx);
    let values = CAPTURED
        .with(|captured| captured.borrow_mut().take())
        .unwrap_or_default();
    let rendered = rendered?;
    let mut contexts = marker_contexts(&rendered).into_iter();
    let mut values = values.into_iter();
    let mut out = String::with_capacity(rendered.len());
    for c in rendered.chars() {
        if c != MARKER {
            out.push(c);
            continue;
        }
        let (Some(context), Some(value)) = (contexts.next(), values.next()) else {
            return Err(refuse("internal error: a rendered value went missing"));
        };
        let var = var_for(&value);
        match context {
            Quoting::Bare => out.push_str(&format!("\"${var}\"")),
            Quoting::Double | Quoting::Heredoc => out.push_str(&format!("${{{var}}}")),
            Quoting::Single => out.push_str(&format!("'\"${var}\"'")),
            Quoting::Refused(why) => return Err(refuse(why)),
        }
    }
    Ok(out)
}

/// Where a rendered value stands in a shell script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoting {
    Bare,
    Double,
    Single,
    /// The body of a here-document with an unquoted delimiter: expands like double quotes.
    Heredoc,
    /// A place no reference can be written safely.
    Refused(&'static str),
}

const QUOTED_HEREDOC: &str = "a template in a here-document with a quoted delimiter \
     (<<'EOF') would be pasted in unexpanded; unquote the delimiter (<<EOF) or use \
     \"$VISHWA_PARAM_NAME\" in the script";
const IN_DELIMITER: &str = "a template in a here-document delimiter is not allowed; write the \
     delimiter literally";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// Outside quotes, at the top or inside `$(...)` (with its open parentheses) or backticks.
    Top,
    Subst(u32),
    Backtick,
    Double,
    Single,
}

struct Heredoc {
    delimiter: String,
    quoted: bool,
    strip_tabs: bool,
}

/// Whether a `#` after `prev` starts a comment.
fn starts_word(prev: Option<char>) -> bool {
    prev.is_none_or(|p| p.is_whitespace() || ";&|()<>".contains(p))
}

/// The quoting context of every marker in `text`, in order: a POSIX sh lexer that follows
/// quotes, command substitutions, comments and here-documents.
fn marker_contexts(text: &str) -> Vec<Quoting> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut stack = vec![Frame::Top];
    let mut pending: Vec<Heredoc> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let frame = stack.last().copied().unwrap_or(Frame::Top);
        if c == MARKER {
            out.push(match frame {
                Frame::Double => Quoting::Double,
                Frame::Single => Quoting::Single,
                _ => Quoting::Bare,
            });
            i += 1;
            continue;
        }
        match frame {
            Frame::Single => {
                if c == '\'' {
                    stack.pop();
                }
            }
            Frame::Double => match c {
                '\\' => i += 1,
                '"' => {
                    stack.pop();
                }
                '`' => stack.push(Frame::Backtick),
                '$' if next == Some('(') => {
                    stack.push(Frame::Subst(0));
                    i += 1;
                }
                _ => {}
            },
            Frame::Top | Frame::Subst(_) | Frame::Backtick => match c {
                '\\' => i += 1,
                '\'' => stack.push(Frame::Single),
                '"' => stack.push(Frame::Double),
                '`' if frame == Frame::Backtick => {
                    stack.pop();
                }
                '`' => stack.push(Frame::Backtick),
                '$' if next == Some('(') => {
                    stack.push(Frame::Subst(0));
                    i += 1;
                }
                '(' => {
                    if let Some(Frame::Subst(depth)) = stack.last_mut() {
                        *depth += 1;
                    }
                }
                ')' => match stack.last_mut() {
                    Some(Frame::Subst(0)) => {
                        stack.pop();
                    }
                    Some(Frame::Subst(depth)) => *depth -= 1,
                    _ => {}
                },
                '#' if starts_word(i.checked_sub(1).map(|p| chars[p])) => {
                    while i < chars.len() && chars[i] != '\n' {
                        if chars[i] == MARKER {
                            out.push(Quoting::Bare);
                        }
                        i += 1;
                    }
                    continue;
                }
                '<' if next == Some('<') && chars.get(i + 2) != Some(&'<') => {
                    i = read_heredoc_operator(&chars, i + 2, &mut pending, &mut out);
                    continue;
                }
                '\n' if !pending.is_empty() => {
                    i = read_heredoc_bodies(&chars, i + 1, &mut pending, &mut out);
                    continue;
                }
                _ => {}
            },
        }
        i += 1;
    }
    out
}

/// Reads `[-] WORD` after `<<` from `i`; returns where reading stops.
fn read_heredoc_operator(
    chars: &[char],
    mut i: usize,
    pending: &mut Vec<Heredoc>,
    out: &mut Vec<Quoting>,
) -> usize {
    let strip_tabs = chars.get(i) == Some(&'-');
    if strip_tabs {
        i += 1;
    }
    while matches!(chars.get(i), Some(' ' | '\t')) {
        i += 1;
    }
    let mut delimiter = String::new();
    let mut quoted = false;
    while let Some(&c) = chars.get(i) {
        if c.is_whitespace() || ";&|<>()".contains(c) {
            break;
        }
        match c {
            MARKER => out.push(Quoting::Refused(IN_DELIMITER)),
            '\\' => {
                quoted = true;
                i += 1;
                delimiter.extend(chars.get(i));
            }
            '\'' | '"' => {
                quoted = true;
                i += 1;
                while let Some(&q) = chars.get(i) {
                    if q == c {
                        break;
                    }
                    if q == MARKER {
                        out.push(Quoting::Refused(IN_DELIMITER));
                    }
                    delimiter.push(q);
                    i += 1;
                }
            }
            c => delimiter.push(c),
        }
        i += 1;
    }
    pending.push(Heredoc {
        delimiter,
        quoted,
        strip_tabs,
    });
    i
}

/// Reads the bodies of the pending here-documents, starting at line start `i`; returns the
/// index after the last delimiter line.
fn read_heredoc_bodies(
    chars: &[char],
    mut i: usize,
    pending: &mut Vec<Heredoc>,
    out: &mut Vec<Quoting>,
) -> usize {
    for heredoc in pending.drain(..) {
        while i < chars.len() {
            let end = chars[i..]
                .iter()
                .position(|&c| c == '\n')
                .map_or(chars.len(), |n| i + n);
            let mut line = &chars[i..end];
            if heredoc.strip_tabs {
                while let ['\t', rest @ ..] = line {
                    line = rest;
                }
            }
            i = end + 1;
            if line.iter().collect::<String>() == heredoc.delimiter {
                break;
            }
            for _ in line.iter().filter(|&&c| c == MARKER) {
                out.push(if heredoc.quoted {
                    Quoting::Refused(QUOTED_HEREDOC)
                } else {
                    Quoting::Heredoc
                });
            }
        }
    }
    i.min(chars.len())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::dag::ParamValue;

    /// Renders `template` with param `x` = `value`; each value goes to `V1`, `V2`, ...
    fn render(template: &str, value: &str) -> (Result<String, TemplateError>, Vec<String>) {
        let params: BTreeMap<String, ParamValue> = BTreeMap::from([("x".into(), json!(value))]);
        let ctx = TemplateContext {
            params: &params,
            run_id: "r",
            logical_time: None,
            item: None,
        };
        let mut values = Vec::new();
        let out = render_shell_command(template, &ctx, |v| {
            values.push(v.to_owned());
            format!("V{}", values.len())
        });
        (out, values)
    }

    #[test]
    fn each_quoting_context_gets_a_reference_spelled_for_it() {
        let cases = [
            ("echo {{ params.x }}", "echo \"$V1\""),
            ("echo a{{ params.x }}.txt", "echo a\"$V1\".txt"),
            ("echo \"a {{ params.x }} b\"", "echo \"a ${V1} b\""),
            ("echo 'a {{ params.x }} b'", "echo 'a '\"$V1\"' b'"),
            (
                "echo \"$(echo {{ params.x }})\"",
                "echo \"$(echo \"$V1\")\"",
            ),
            ("echo `echo {{ params.x }}`", "echo `echo \"$V1\"`"),
            ("echo hi # don't {{ params.x }}", "echo hi # don't \"$V1\""),
            ("echo \\'{{ params.x }}", "echo \\'\"$V1\""),
            (
                "cat <<EOF\nis {{ params.x }}\nEOF\necho '{{ params.x }}'",
                "cat <<EOF\nis ${V1}\nEOF\necho ''\"$V2\"''",
            ),
            (
                "cat <<-'E' ; echo {{ params.x }}\n\tplain\n\tE\n",
                "cat <<-'E' ; echo \"$V1\"\n\tplain\n\tE\n",
            ),
        ];
        for (template, expected) in cases {
            let (out, values) = render(template, "$(touch /tmp/pwned)");
            assert_eq!(out.as_deref(), Ok(expected), "{template}");
            assert!(values.iter().all(|v| v == "$(touch /tmp/pwned)"));
        }
    }

    #[test]
    fn values_never_reach_the_text() {
        let (out, values) = render("echo {{ params.x }} '{{ params.x }}'", "a'; rm -rf / #");
        let out = out.expect("renders");
        assert!(!out.contains("rm -rf"), "{out}");
        assert_eq!(values, ["a'; rm -rf / #", "a'; rm -rf / #"]);
    }

    #[test]
    fn text_without_templates_is_left_alone() {
        let (out, values) = render("echo 'it''s' \"$HOME\"", "x");
        assert_eq!(out.as_deref(), Ok("echo 'it''s' \"$HOME\""));
        assert!(values.is_empty());
    }

    #[test]
    fn places_no_reference_can_stand_are_refused() {
        for template in [
            "cat <<'EOF'\n{{ params.x }}\nEOF",
            "cat <<\"E\"\n{{ params.x }}\nE",
            "cat <<{{ params.x }}\nhi\n",
            "echo \u{E000} {{ params.x }}",
        ] {
            let (out, _) = render(template, "x");
            assert!(
                matches!(out, Err(TemplateError::Shell { .. })),
                "{template}: {out:?}"
            );
        }
    }

    #[test]
    fn rendering_errors_stay_rendering_errors() {
        let (out, _) = render("echo {{ params.nope }}", "x");
        assert!(matches!(out, Err(TemplateError::Undefined { .. })));
        // The capture ends with the failed render: a plain render prints values again.
        let params = BTreeMap::from([("x".to_owned(), json!("v"))]);
        let ctx = TemplateContext {
            params: &params,
            run_id: "r",
            logical_time: None,
            item: None,
        };
        assert_eq!(render_template("{{ params.x }}", &ctx).as_deref(), Ok("v"));
    }
}
