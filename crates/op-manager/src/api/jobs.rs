//! `/v1/jobs`: save (the seed's task JSON), list, get, delete, enable/disable, once-targets.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::Utc;
use op_proto::JobSpec;
use op_proto::api::{JobRecord, JobView, OnceTarget, SaveJobResponse};
use op_proto::invoke::ADHOC_JOB;
use op_proto::job::validate_name;
use op_store::{Command, CommandResult};
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{ApiBytes, ApiQuery};
use crate::app::App;
use crate::auth::Caller;

/// Fire times shown with a job.
const NEXT_FIRES: usize = 3;

pub fn view(record: JobRecord) -> JobView {
    let next_fires = record
        .spec
        .schedule()
        .map(|s| s.upcoming(Utc::now(), NEXT_FIRES))
        .unwrap_or_default();
    JobView {
        record,
        next_fires,
        last_fires: Vec::new(),
    }
}

/// [`view`] with the job's latest judged fires (issue 20).
fn view_judged(
    record: JobRecord,
    judged: &mut std::collections::BTreeMap<String, Vec<op_proto::judged::JudgedFire>>,
) -> JobView {
    let mut v = view(record);
    v.last_fires = judged.remove(&v.record.spec.name).unwrap_or_default();
    v
}

pub(super) fn check_name(name: &str) -> Result<(), ApiError> {
    validate_name(name).map_err(|e| ApiError::bad("invalid_name", format!("job name {name:?} {e}")))
}

/// A job as `caller` may see it, with its latest judged fires (issue 20): a viewer sees the
/// names of `Env` variables, never their values (issue 24).
pub fn view_for(
    caller: &Caller,
    mut record: JobRecord,
    judged: &mut std::collections::BTreeMap<String, Vec<op_proto::judged::JudgedFire>>,
) -> JobView {
    caller.redact_env(&mut record.spec.env);
    view_judged(record, judged)
}

pub async fn list(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<JobView>>, ApiError> {
    let (jobs, mut judged) = app.read(|s| Ok((s.jobs()?, s.judged_fires(None)?))).await?;
    Ok(Json(
        jobs.into_iter()
            .filter(|j| caller.sees_job(&j.spec.name))
            .map(|j| view_for(&caller, j, &mut judged))
            .collect(),
    ))
}

async fn load(app: &App, name: String) -> Result<JobRecord, ApiError> {
    check_name(&name)?;
    let n = name.clone();
    app.read(move |s| s.job(&n))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job named {name:?}")))
}

pub async fn get(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let record = load(&app, name).await?;
    let job = record.spec.name.clone();
    let mut judged = app.read(move |s| s.judged_fires(Some(&job))).await?;
    Ok(Json(view_for(&caller, record, &mut judged)))
}

pub async fn save(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiQuery(rq): ApiQuery<super::rollouts::RolloutQuery>,
    ApiBytes(body): ApiBytes,
) -> Result<(StatusCode, Json<SaveJobResponse>), ApiError> {
    check_name(&name)?;
    if name == ADHOC_JOB {
        return Err(ApiError::bad(
            "reserved_name",
            format!(
                "the job name {ADHOC_JOB:?} is reserved for ad-hoc commands (agentcli exec); choose another"
            ),
        ));
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad("invalid_body", "the task file is not UTF-8 text"))?;
    let now = Utc::now();
    // The task file's `Rollout` (issue 21), or the query's; not both.
    let (text, file_rollout) = op_proto::rollout::split_task_rollout(text)
        .map_err(|e| ApiError::bad("invalid_rollout", e))?;
    let text = text.as_str();
    let rollout = match (file_rollout, rq.request()?) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad(
                "invalid_rollout",
                "the task file has a Rollout and the request gives one too; keep one",
            ));
        }
        (a, b) => super::rollouts::checked(a.or(b))?,
    };
    let spec = JobSpec::from_task_json_at(text, now).map_err(|e| ApiError::InvalidJob {
        message: format!("invalid task file: {e}"),
        details: e.messages(),
    })?;
    if spec.name != name {
        return Err(ApiError::bad(
            "name_mismatch",
            format!(
                "JobName {:?} differs from the name in the URL ({name:?})",
                spec.name
            ),
        ));
    }
    // A policy token saves only jobs whose selection stays within its hosts (the guard already
    // checked the name and the verb).
    if let Some(policy) = &caller.policy {
        policy.confines(&spec.selector()).map_err(|e| {
            ApiError::Denied(format!(
                "token {:?} may not save job {name:?}: {e}",
                caller.name
            ))
        })?;
    }
    super::secrets::check_refs(&app, &spec.env).await?;
    let next_fires = spec
        .schedule()
        .map(|s| s.upcoming(now, NEXT_FIRES))
        .unwrap_or_default();
    let result = app
        .write(super::rollouts::staged(
            Command::SaveJob {
                spec: Box::new(spec),
                at: now,
                actor: caller.name,
            },
            rollout,
        ))
        .await?;
    let CommandResult::JobSaved { mut response } = result else {
        return Err(ApiError::Internal("unexpected answer to SaveJob".into()));
    };
    response.next_fires = next_fires;
    let status = if response.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(*response)))
}

pub async fn delete(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    check_name(&name)?;
    app.write(Command::DeleteJob {
        name,
        at: Utc::now(),
        actor: caller.name,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_enabled(
    app: &App,
    caller: Caller,
    name: String,
    enabled: bool,
) -> Result<Json<JobView>, ApiError> {
    check_name(&name)?;
    match app
        .write(Command::SetJobEnabled {
            name,
            enabled,
            at: Utc::now(),
            actor: caller.name,
        })
        .await?
    {
        CommandResult::Job { job } => Ok(Json(view(*job))),
        _ => Err(ApiError::Internal(
            "unexpected answer to SetJobEnabled".into(),
        )),
    }
}

pub async fn enable(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    set_enabled(&app, caller, name, true).await
}

pub async fn disable(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    set_enabled(&app, caller, name, false).await
}

#[derive(Debug, Deserialize)]
pub struct OnceQuery {
    revision: Option<u64>,
}

pub async fn once(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<OnceQuery>,
) -> Result<Json<Vec<OnceTarget>>, ApiError> {
    let job = load(&app, name).await?;
    let name = job.spec.name.clone();
    // Every save makes the next revision, so versions are 1..=latest; one outside that range
    // would read as "no targets, nothing wrong" and hide the typo.
    if let Some(r) = q.revision
        && (r == 0 || r > job.revision)
    {
        return Err(ApiError::NotFound(format!(
            "job {name:?} has no version {r}; its versions are 1 to {} (the latest)",
            job.revision
        )));
    }
    let targets = app.read(move |s| s.once_targets(&name, q.revision)).await?;
    Ok(Json(targets))
}
