//! One module per group of verbs; [`dispatch`] routes a parsed command line to them.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::load::Invalid;
use crate::{Global, Verb};

pub(crate) mod approvals;
pub(crate) mod artifacts;
pub(crate) mod assets;
pub(crate) mod client_verbs;
pub(crate) mod migrate;
pub(crate) mod run;
pub(crate) mod runs_delete;
pub(crate) mod schedule_verbs;
pub(crate) mod security_verbs;
pub(crate) mod serve;
pub(crate) mod validate;

/// Runs one verb and returns the process exit code.
pub(crate) async fn dispatch(verb: Verb, global: Global) -> Result<u8> {
    match verb {
        Verb::Run(args) => {
            init_tracing_as("warn", args.log.log_format);
            run::run(args, &global).await
        }
        Verb::Dev(args) => {
            init_tracing_as("info", args.log.log_format);
            serve::dev(args).await
        }
        Verb::Scheduler(args) => {
            init_tracing_as("info", args.log.log_format);
            serve::scheduler(args).await
        }
        Verb::Worker(args) => {
            init_tracing_as("info", args.log.log_format);
            serve::worker(args).await
        }
        Verb::Migrate(args) => {
            init_tracing("warn");
            migrate::migrate(args).await
        }
        other => {
            init_tracing("warn");
            match other {
                Verb::Validate { paths } => validate::validate(&paths, global.format),
                Verb::Graph { target, dot } => validate::graph(&target, dot, &global).await,
                verb @ (Verb::Pause(_) | Verb::Resume(_) | Verb::Backfill(_) | Verb::Next(_)) => {
                    schedule_verbs::dispatch(verb, &global).await
                }
                verb @ (Verb::Secret { .. } | Verb::Audit { .. }) => {
                    security_verbs::dispatch(verb, &global).await
                }
                Verb::Runs {
                    action: Some(action),
                    ..
                } => runs_delete::dispatch(action, &global).await,
                verb @ (Verb::Approve { .. } | Verb::Reject { .. }) => {
                    approvals::dispatch(verb, &global).await
                }
                Verb::Artifacts(args) => artifacts::artifacts(args, &global).await,
                Verb::Assets(args) => assets::assets(args, &global).await,
                Verb::Compare { runs } => artifacts::compare(&runs, &global).await,
                other => client_verbs::dispatch(other, &global).await,
            }
        }
    }
}

/// How the long-running verbs write their log (to stderr).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON object per line, for log collectors: `timestamp`, `level`, `message`, the
    /// event's fields (`run`, `stage`, `worker`, ...) at the top level, and the enclosing
    /// spans' fields under `spans`.
    Json,
}

/// `--log-format` of `scheduler`, `worker`, `dev` and `run`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct LogArgs {
    /// Log lines for people (`text`) or one JSON object per line (`json`).
    #[arg(long, value_enum, env = "VISHWA_LOG_FORMAT", default_value = "text")]
    pub(crate) log_format: LogFormat,
}

fn init_tracing(default: &str) {
    init_tracing_as(default, LogFormat::Text);
}

fn init_tracing_as(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
    };
}

/// Parses `-p name=value` flags.
pub(crate) fn parse_params(raw: &[String]) -> Result<BTreeMap<String, String>> {
    let mut params = BTreeMap::new();
    for p in raw {
        let Some((name, value)) = p.split_once('=') else {
            return Err(Invalid(format!(
                "error: -p `{p}` has no `=`\n  help: write parameters as -p name=value"
            ))
            .into());
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(Invalid(format!(
                "error: -p `{p}` has an empty name\n  help: write parameters as -p name=value"
            ))
            .into());
        }
        params.insert(name.to_owned(), value.to_owned());
    }
    Ok(params)
}

/// The exit code a final run state stands for.
pub(crate) fn exit_code_of(state: i32) -> u8 {
    use vishwa_proto::v1::RunState;
    match RunState::try_from(state) {
        Ok(RunState::Succeeded) => crate::exit::OK,
        Ok(RunState::Cancelled) => crate::exit::CANCELLED,
        _ => crate::exit::FAILED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_split_at_the_first_equals_sign() {
        let p = parse_params(&["rows=500".into(), "expr=a=b".into()]).unwrap();
        assert_eq!(p["rows"], "500");
        assert_eq!(p["expr"], "a=b");
    }

    #[test]
    fn params_without_equals_sign_are_invalid_input() {
        let e = parse_params(&["rows".into()]).unwrap_err();
        assert!(e.downcast_ref::<Invalid>().is_some());
        assert!(e.to_string().contains("-p name=value"));
    }
}
