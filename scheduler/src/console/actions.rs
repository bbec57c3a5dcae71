//! The console's actions: trigger, cancel, retry, pause and resume. Each is a POST with the
//! CSRF token; the role is checked as the gRPC layer checks it, then the call goes through
//! the client API's own handler (with the caller attached), so validation, the engine call
//! and the audit entry are the same as for `vishwa trigger` and friends.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Path, State};
use axum::response::Redirect;
use tonic::Request;
use vishwa_proto::v1 as pb;
use vishwa_proto::v1::vishwa_server::Vishwa;

use super::{Console, ConsoleError, Session, encode_segment};
use crate::dag::param_text;

type Fields = Form<Vec<(String, String)>>;

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A request to the client API made by `session`'s caller.
fn as_caller<T>(session: &Session, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(session.caller.clone());
    request
}

fn run_page(id: &str) -> Redirect {
    Redirect::to(&format!("/runs/{}", encode_segment(id)))
}

/// `POST /dags/NAME/trigger`: fields `p.PARAM`; only values changed from the defaults are
/// sent as overrides.
pub(super) async fn trigger(
    State(console): State<Console>,
    session: Session,
    Path(name): Path<String>,
    Form(fields): Fields,
) -> Result<Redirect, ConsoleError> {
    session.check_csrf(field(&fields, "csrf"))?;
    session.require("TriggerRun")?;
    let defaults: HashMap<String, String> = match console.store().get_dag(&name)? {
        Some(record) => console
            .api()
            .dag(&name, &record.version)?
            .params
            .iter()
            .map(|(k, v)| (k.clone(), param_text(v)))
            .collect(),
        None => HashMap::new(),
    };
    let params = fields
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("p.").map(|p| (p.to_owned(), v.clone())))
        .filter(|(k, v)| defaults.get(k) != Some(v))
        .collect();
    let request = as_caller(
        &session,
        pb::TriggerRunRequest {
            dag: name,
            params,
            no_cache: false,
        },
    );
    let response = console.api().trigger_run(request).await?.into_inner();
    let id = response.run.map(|r| r.run_id).unwrap_or_default();
    Ok(run_page(&id))
}

/// `POST /runs/ID/cancel`.
pub(super) async fn cancel(
    State(console): State<Console>,
    session: Session,
    Path(id): Path<String>,
    Form(fields): Fields,
) -> Result<Redirect, ConsoleError> {
    session.check_csrf(field(&fields, "csrf"))?;
    session.require("CancelRun")?;
    let request = as_caller(&session, pb::CancelRunRequest { run_id: id.clone() });
    console.api().cancel_run(request).await?;
    Ok(run_page(&id))
}

/// `POST /runs/ID/retry`: every failed stage, or `stage` (alone with `only=true`, else
/// with what follows it).
pub(super) async fn retry(
    State(console): State<Console>,
    session: Session,
    Path(id): Path<String>,
    Form(fields): Fields,
) -> Result<Redirect, ConsoleError> {
    session.check_csrf(field(&fields, "csrf"))?;
    session.require("RetryRun")?;
    let request = as_caller(
        &session,
        pb::RetryRunRequest {
            run_id: id.clone(),
            from_stage: field(&fields, "stage").unwrap_or_default().to_owned(),
            only: field(&fields, "only") == Some("true"),
        },
    );
    console.api().retry_run(request).await?;
    Ok(run_page(&id))
}

/// `POST /dags/NAME/pause`.
pub(super) async fn pause(
    State(console): State<Console>,
    session: Session,
    Path(name): Path<String>,
    Form(fields): Fields,
) -> Result<Redirect, ConsoleError> {
    session.check_csrf(field(&fields, "csrf"))?;
    session.require("PauseDag")?;
    let request = as_caller(&session, pb::PauseDagRequest { name: name.clone() });
    console.api().pause_dag(request).await?;
    Ok(Redirect::to(&format!("/dags/{}", encode_segment(&name))))
}

/// `POST /dags/NAME/resume`.
pub(super) async fn resume(
    State(console): State<Console>,
    session: Session,
    Path(name): Path<String>,
    Form(fields): Fields,
) -> Result<Redirect, ConsoleError> {
    session.check_csrf(field(&fields, "csrf"))?;
    session.require("ResumeDag")?;
    let request = as_caller(
        &session,
        pb::ResumeDagRequest {
            name: name.clone(),
            skip_missed: false,
        },
    );
    console.api().resume_dag(request).await?;
    Ok(Redirect::to(&format!("/dags/{}", encode_segment(&name))))
}
