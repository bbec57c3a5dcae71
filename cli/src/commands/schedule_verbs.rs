//! Schedule verbs: `vishwa pause`, `resume`, `backfill` and `next`, plus the next-fire cells
//! `vishwa dags` shows. Times on the command line are RFC 3339, or a date or date and time read
//! in the DAG's zone.

use std::path::Path;

use anyhow::{Result, anyhow};
use chrono_tz::Tz;
use clap::Args;
use serde_json::json;
use vishwa_proto::v1 as pb;
use vishwa_scheduler::cron::{format_in_zone, format_utc, next_fire, parse_time};
use vishwa_scheduler::dag::{Catchup, Dag, Overlap, parse_dag};

use crate::client::Client;
use crate::load::{Invalid, load_dag};
use crate::output::{self, Format, Table};
use crate::{Global, Verb, exit};

#[derive(Debug, Args)]
pub(crate) struct PauseArgs {
    /// A registered DAG.
    dag: String,
}

#[derive(Debug, Args)]
pub(crate) struct ResumeArgs {
    /// A registered DAG.
    dag: String,
    /// Pass over every slot that came while the DAG was paused [default: the DAG's catch-up
    /// policy decides, as after scheduler downtime].
    #[arg(long)]
    skip_missed: bool,
}

#[derive(Debug, Args)]
pub(crate) struct BackfillArgs {
    /// A registered DAG with a schedule.
    dag: String,
    /// First slot time, included: RFC 3339, or YYYY-MM-DD[THH:MM[:SS]] in the DAG's zone.
    #[arg(long)]
    from: String,
    /// Last slot time, included (slots after now are left to the schedule).
    #[arg(long)]
    to: String,
    /// List the slots and what would happen to each; create nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
pub(crate) struct NextArgs {
    /// A DAG file or folder, or the name of a registered DAG.
    target: String,
    /// How many fire times to show.
    #[arg(short = 'n', long = "count", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    count: u32,
    /// Show fire times after this time [default: now]: RFC 3339, or YYYY-MM-DD[THH:MM[:SS]] in
    /// the DAG's zone.
    #[arg(long)]
    after: Option<String>,
}

pub(crate) async fn dispatch(verb: Verb, global: &Global) -> Result<u8> {
    match verb {
        Verb::Next(args) => next(args, global).await,
        Verb::Pause(args) => pause(&args.dag, global).await,
        Verb::Resume(args) => resume(args, global).await,
        Verb::Backfill(args) => backfill(args, global).await,
        _ => unreachable!("dispatch routes only schedule verbs here"),
    }
}

/// The zone a summary names (UTC for an unscheduled DAG).
fn zone_of(d: &pb::DagSummary) -> Tz {
    d.timezone.parse().unwrap_or(chrono_tz::UTC)
}

/// The `NEXT FIRE` cells of `vishwa dags`: in the schedule's zone, and in UTC.
pub(crate) fn next_fire_cells(d: &pb::DagSummary) -> (String, String) {
    if d.schedule.is_empty() {
        return ("-".into(), "-".into());
    }
    if d.paused {
        return ("paused".into(), "-".into());
    }
    if d.next_fire_ms == 0 {
        return ("never".into(), "-".into());
    }
    (
        format_in_zone(d.next_fire_ms, zone_of(d)),
        format_utc(d.next_fire_ms),
    )
}

fn read_time(text: &str, tz: Tz) -> Result<i64> {
    parse_time(text, tz)
        .map(|t| t.timestamp_millis())
        .map_err(|e| Invalid(format!("error: {e}")).into())
}

async fn pause(dag: &str, global: &Global) -> Result<u8> {
    let mut client = Client::from_global(global).await?;
    let response = client.pause(dag).await?;
    let summary = response.dag.unwrap_or_default();
    match global.format {
        Format::Json => output::print_json(
            &json!({"dag": output::dag_json(&summary), "changed": response.changed}),
        ),
        Format::Table if !response.changed => outln!("{dag} was already paused"),
        Format::Table if summary.schedule.is_empty() => {
            outln!("paused {dag} (it has no schedule, so nothing starts it on its own anyway)")
        }
        Format::Table => outln!(
            "paused {dag}: its schedule starts no runs until `vishwa resume {dag}`; runs \
             already started carry on"
        ),
    }
    Ok(exit::OK)
}

async fn resume(args: ResumeArgs, global: &Global) -> Result<u8> {
    let mut client = Client::from_global(global).await?;
    let response = client.resume(&args.dag, args.skip_missed).await?;
    let summary = response.dag.unwrap_or_default();
    if global.format == Format::Json {
        output::print_json(
            &json!({"dag": output::dag_json(&summary), "changed": response.changed}),
        );
        return Ok(exit::OK);
    }
    let dag = &args.dag;
    if !response.changed {
        outln!("{dag} was not paused");
        return Ok(exit::OK);
    }
    outln!("resumed {dag}");
    if !summary.schedule.is_empty() {
        let (zone, utc) = next_fire_cells(&summary);
        if args.skip_missed {
            outln!("slots that came while it was paused are passed over");
        } else {
            outln!("slots that came while it was paused follow its catch-up policy");
        }
        outln!("next fire {zone} ({utc})");
    }
    Ok(exit::OK)
}

async fn backfill(args: BackfillArgs, global: &Global) -> Result<u8> {
    let mut client = Client::from_global(global).await?;
    let summary = client.get_dag(&args.dag).await?.dag.unwrap_or_default();
    let tz = zone_of(&summary);
    let from_ms = read_time(&args.from, tz)?;
    let to_ms = read_time(&args.to, tz)?;
    let response = client
        .backfill(pb::BackfillRequest {
            dag: args.dag.clone(),
            from_ms,
            to_ms,
            dry_run: args.dry_run,
        })
        .await?;
    let tz: Tz = response.timezone.parse().unwrap_or(tz);
    if global.format == Format::Json {
        let slots: Vec<_> = response
            .slots
            .iter()
            .map(|s| {
                json!({
                    "logical_time": format_utc(s.logical_time_ms),
                    "logical_time_in_zone": format_in_zone(s.logical_time_ms, tz),
                    "run_id": s.run_id,
                    "outcome": s.outcome,
                    "state": (s.outcome == "exists").then(|| output::run_state(s.state)),
                })
            })
            .collect();
        output::print_json(&json!({"dag": args.dag, "dry_run": args.dry_run, "slots": slots}));
        return Ok(exit::OK);
    }
    if response.slots.is_empty() {
        outln!(
            "no slots of {}'s schedule ({}) between {} and {}",
            args.dag,
            summary.schedule,
            format_in_zone(from_ms, tz),
            format_in_zone(to_ms, tz)
        );
    } else {
        let mut table = Table::new(vec!["SLOT (ZONE)", "SLOT (UTC)", "RUN", "OUTCOME"]);
        for s in &response.slots {
            let outcome = match s.outcome.as_str() {
                "exists" => format!("exists ({})", output::run_state(s.state)),
                "would_create" => "would create".to_owned(),
                other => other.to_owned(),
            };
            table.row(vec![
                format_in_zone(s.logical_time_ms, tz),
                format_utc(s.logical_time_ms),
                s.run_id.clone(),
                outcome,
            ]);
        }
        table.print();
    }
    let count = |o: &str| response.slots.iter().filter(|s| s.outcome == o).count();
    let (created, would, existing) = (count("created"), count("would_create"), count("exists"));
    let total = response.slots.len();
    if args.dry_run {
        outln!("dry run: {total} slots; would create {would} runs, {existing} already have one");
    } else if created == 0 && total > 0 {
        outln!("nothing new: all {total} slots already have runs");
    } else {
        outln!("created {created} runs; {existing} slots already had one");
    }
    if to_ms > chrono::Utc::now().timestamp_millis() {
        outln!("slots after now are left to the schedule");
    }
    Ok(exit::OK)
}

async fn next(args: NextArgs, global: &Global) -> Result<u8> {
    let path = Path::new(&args.target);
    let (dag, paused): (Dag, bool) = if path.exists() {
        (load_dag(path)?.0, false)
    } else {
        let mut client = Client::from_global(global).await?;
        let stored = client.get_dag(&args.target).await?;
        let dag =
            parse_dag(&stored.source, &stored.file_name).map_err(|e| Invalid(e.to_string()))?;
        (dag, stored.dag.is_some_and(|d| d.paused))
    };
    let schedule = dag.schedule.as_ref().ok_or_else(|| {
        anyhow!(
            "`{}` has no schedule; add `schedule:` with a `cron:` expression to it",
            dag.name
        )
    })?;
    let tz = schedule.timezone;
    let mut at = match &args.after {
        Some(text) => parse_time(text, tz).map_err(|e| Invalid(format!("error: {e}")))?,
        None => chrono::Utc::now(),
    };
    let mut fires = Vec::new();
    for _ in 0..args.count {
        let Some(t) = next_fire(&schedule.expression, tz, at) else {
            break;
        };
        fires.push(t.timestamp_millis());
        at = t;
    }
    if global.format == Format::Json {
        let fires: Vec<_> = fires
            .iter()
            .map(|ms| json!({"zone": format_in_zone(*ms, tz), "utc": format_utc(*ms)}))
            .collect();
        output::print_json(&json!({
            "dag": dag.name.0, "cron": schedule.cron, "timezone": tz.name(),
            "catchup": catchup_name(schedule.catchup), "overlap": overlap_name(schedule.overlap),
            "paused": paused, "fires": fires,
        }));
        return Ok(exit::OK);
    }
    outln!(
        "{}: `{}` in {} (catchup: {}, overlap: {})",
        dag.name,
        schedule.cron,
        tz.name(),
        catchup_name(schedule.catchup),
        overlap_name(schedule.overlap)
    );
    if paused {
        eprintln!(
            "note: {} is paused; these slots fire only after `vishwa resume {}`",
            dag.name, dag.name
        );
    }
    let mut table = Table::new(vec!["IN ZONE", "UTC"]);
    for ms in &fires {
        table.row(vec![format_in_zone(*ms, tz), format_utc(*ms)]);
    }
    table.print();
    Ok(exit::OK)
}

fn catchup_name(c: Catchup) -> &'static str {
    match c {
        Catchup::None => "none",
        Catchup::Latest => "latest",
        Catchup::All => "all",
    }
}

fn overlap_name(o: Overlap) -> &'static str {
    match o {
        Overlap::Skip => "skip",
        Overlap::Allow => "allow",
        Overlap::CancelPrevious => "cancel_previous",
    }
}
