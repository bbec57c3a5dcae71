//! `vishwa secret set|list|rm` and `vishwa audit`.

use std::io::Read as _;

use anyhow::{Context as _, Result};
use serde_json::json;

use crate::client::Client;
use crate::load::Invalid;
use crate::output::{self, Format, Table};
use crate::{Global, SecretAction, Verb, exit};

/// Most bytes read from stdin for a value; the scheduler refuses values over 64 KiB.
const SECRET_INPUT_LIMIT: u64 = 1 << 20;

pub(crate) async fn dispatch(verb: Verb, global: &Global) -> Result<u8> {
    // Read the value before connecting: a bad input fails the same with no scheduler.
    let value = match &verb {
        Verb::Secret {
            action: SecretAction::Set { .. },
        } => Some(read_secret_value()?),
        _ => None,
    };
    let mut client = Client::from_global(global).await?;
    let format = global.format;
    match verb {
        Verb::Secret { action } => match action {
            SecretAction::Set { name } => {
                let value = value.expect("read above");
                let response = client.set_secret(&name, value).await?;
                let set_ms = response.secret.map(|s| s.set_ms).unwrap_or_default();
                match format {
                    Format::Json => output::print_json(&json!({
                        "name": name,
                        "replaced": response.replaced,
                        "set": output::rfc3339(set_ms),
                    })),
                    Format::Table if response.replaced => outln!("secret {name} replaced"),
                    Format::Table => outln!("secret {name} set"),
                }
            }
            SecretAction::List => {
                let secrets = client.list_secrets().await?;
                match format {
                    Format::Json => output::print_json(&json!(
                        secrets
                            .iter()
                            .map(|s| json!({"name": s.name, "set": output::rfc3339(s.set_ms)}))
                            .collect::<Vec<_>>()
                    )),
                    Format::Table if secrets.is_empty() => {
                        outln!(
                            "no secrets; store one with `vishwa secret set NAME` (value on stdin)"
                        )
                    }
                    Format::Table => {
                        let mut table = Table::new(vec!["NAME", "SET"]);
                        for s in &secrets {
                            table.row(vec![s.name.clone(), output::time(s.set_ms)]);
                        }
                        table.print();
                    }
                }
            }
            SecretAction::Rm { name } => {
                client.delete_secret(&name).await?;
                match format {
                    Format::Json => output::print_json(&json!({"name": name, "removed": true})),
                    Format::Table => outln!("secret {name} removed"),
                }
            }
        },
        Verb::Audit { limit } => {
            let entries = client.list_audit(limit).await?;
            match format {
                Format::Json => output::print_json(&json!(
                    entries
                        .iter()
                        .map(|e| json!({
                            "at": output::rfc3339(e.at_ms),
                            "caller": e.caller,
                            "method": e.method,
                            "target": e.target,
                            "outcome": e.outcome,
                        }))
                        .collect::<Vec<_>>()
                )),
                Format::Table => {
                    let mut table = Table::new(vec!["AT", "CALLER", "METHOD", "TARGET", "OUTCOME"]);
                    for e in &entries {
                        table.row(vec![
                            output::time(e.at_ms),
                            e.caller.clone(),
                            e.method.clone(),
                            e.target.clone(),
                            e.outcome.clone(),
                        ]);
                    }
                    table.print();
                }
            }
        }
        _ => unreachable!("dispatched here only for secret and audit verbs"),
    }
    Ok(exit::OK)
}

/// The secret's value from stdin (a trailing newline is dropped by the scheduler).
fn read_secret_value() -> Result<Vec<u8>> {
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!("reading the secret's value from stdin; end it with Ctrl-D");
    }
    let mut value = Vec::new();
    std::io::stdin()
        .take(SECRET_INPUT_LIMIT)
        .read_to_end(&mut value)
        .context("cannot read the secret's value from stdin")?;
    if value.iter().all(u8::is_ascii_whitespace) {
        return Err(Invalid(
            "error: the secret's value on stdin is empty\n  help: pipe it in, e.g. `printf %s \"$TOKEN\" | vishwa secret set NAME`"
                .to_owned(),
        )
        .into());
    }
    Ok(value)
}
