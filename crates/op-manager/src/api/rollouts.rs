//! `/v1/rollouts` (issue 21): list, status (with each host's state), and the operator's pause,
//! resume, abort and promote. Also what upload and save use to stage their change.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::Utc;
use op_proto::NodeStatus;
use op_proto::rollout::{
    PackageRollout, RolloutAction, RolloutInfo, RolloutKind, RolloutRequest, RolloutStatus,
};
use op_store::{Command, CommandResult, NewRollout};
use serde::Deserialize;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::ApiJson;
use crate::app::App;
use crate::auth::Caller;

/// The rollout of an upload or a save, as query parameters (`agentcli upload/save --rollout`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutQuery {
    pub rollout: Option<String>,
    pub step_wait: Option<String>,
    pub halt_on: Option<String>,
    pub auto_rollback: Option<bool>,
}

impl RolloutQuery {
    /// The request the parameters make; `--step-wait` and the others without `--rollout` are
    /// refused.
    pub fn request(&self) -> Result<Option<RolloutRequest>, ApiError> {
        match &self.rollout {
            Some(stages) => Ok(Some(RolloutRequest::from_flags(
                stages,
                self.step_wait.as_deref(),
                self.halt_on.as_deref(),
                self.auto_rollback.unwrap_or(false),
            ))),
            None if self.step_wait.is_some()
                || self.halt_on.is_some()
                || self.auto_rollback.is_some() =>
            {
                Err(ApiError::bad(
                    "invalid_rollout",
                    "step_wait, halt_on and auto_rollback need rollout (the stages, e.g. 1,10%,100%)",
                ))
            }
            None => Ok(None),
        }
    }
}

/// Checks a rollout request: the rollout to start, or a 400 saying what is wrong.
pub fn checked(request: Option<RolloutRequest>) -> Result<Option<NewRollout>, ApiError> {
    let Some(r) = request else { return Ok(None) };
    let plan = r
        .plan()
        .map_err(|e| ApiError::bad("invalid_rollout", format!("rollout: {e}")))?;
    Ok(Some(NewRollout {
        id: Uuid::now_v7(),
        plan,
    }))
}

/// `change` staged by `rollout`, or as it is.
pub fn staged(change: Command, rollout: Option<NewRollout>) -> Command {
    match rollout {
        Some(rollout) => Command::StartRollout {
            rollout,
            change: Box::new(change),
        },
        None => change,
    }
}

/// The rollout an upload of package `name` is staged by: the one its query asks for, else the
/// package's default rollout (`rollout=100%` reaches every host at once).
pub async fn for_upload(
    app: &App,
    name: &str,
    query: RolloutQuery,
) -> Result<Option<NewRollout>, ApiError> {
    if let Some(asked) = checked(query.request()?)? {
        return Ok(Some(asked));
    }
    let n = name.to_string();
    Ok(app
        .read(move |s| s.package_rollout(&n))
        .await?
        .map(|d| NewRollout {
            id: Uuid::now_v7(),
            plan: d.plan,
        }))
}

fn package_name(name: &str) -> Result<(), ApiError> {
    op_proto::package::validate_package_name(name)
        .map_err(|e| ApiError::bad("invalid_name", format!("package name {name:?} {e}")))?;
    if op_proto::agent_upgrade::is_reserved(name) {
        return Err(ApiError::bad(
            "reserved_name",
            format!(
                "{name} is an agent release: its rollout is set by agentcli agent upgrade start"
            ),
        ));
    }
    Ok(())
}

/// `GET /v1/rollouts/defaults`: every package's default rollout.
pub async fn defaults(State(app): State<Arc<App>>) -> Result<Json<Vec<PackageRollout>>, ApiError> {
    Ok(Json(app.read(|s| s.package_rollouts()).await?))
}

/// `GET /v1/packages/NAME/rollout`: the package's default rollout (404 when it has none).
pub async fn get_default(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Json<PackageRollout>, ApiError> {
    package_name(&name)?;
    let n = name.clone();
    app.read(move |s| s.package_rollout(&n))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("package {name:?} has no default rollout")))
}

/// `PUT /v1/packages/NAME/rollout` with a task file's `Rollout` object: sets the package's
/// default rollout.
pub async fn set_default(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<RolloutRequest>,
) -> Result<Json<PackageRollout>, ApiError> {
    package_name(&name)?;
    super::guard::check_own_package(&app, &caller, &name).await?;
    let plan = request
        .plan()
        .map_err(|e| ApiError::bad("invalid_rollout", format!("rollout: {e}")))?;
    let at = Utc::now();
    app.write(Command::SetPackageRollout {
        name: name.clone(),
        plan: Some(plan.clone()),
        at,
        actor: caller.name.clone(),
    })
    .await?;
    Ok(Json(PackageRollout {
        name,
        plan,
        set_at: at,
        set_by: caller.name,
    }))
}

/// `DELETE /v1/packages/NAME/rollout`: uploads of the package are unstaged again.
pub async fn clear_default(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    package_name(&name)?;
    super::guard::check_own_package(&app, &caller, &name).await?;
    app.write(Command::SetPackageRollout {
        name,
        plan: None,
        at: Utc::now(),
        actor: caller.name,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id)
        .map_err(|_| ApiError::bad("invalid_id", format!("{id:?} is not a rollout id")))
}

pub async fn list(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<RolloutInfo>>, ApiError> {
    let mut rollouts = app.read(|s| s.rollouts()).await?;
    rollouts.retain(|r| caller.sees_rollout(r));
    Ok(Json(rollouts))
}

pub async fn get(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<RolloutStatus>, ApiError> {
    let id = parse_id(&id)?;
    let info = app
        .read(move |s| s.rollout(id))
        .await?
        .filter(|r| caller.sees_rollout(r))
        .ok_or_else(|| ApiError::NotFound(format!("no rollout {id}")))?;
    let mut nodes = app.read(|s| s.nodes()).await?;
    app.beats.overlay(&mut nodes);
    nodes.retain(|n| n.status != NodeStatus::Left);
    let status = app
        .read(move |s| crate::rollouts::status(s, info, &nodes))
        .await?;
    Ok(Json(status))
}

pub async fn act(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<RolloutInfo>, ApiError> {
    let id = parse_id(&id)?;
    let action = RolloutAction::parse(&action).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no rollout action {action:?}; use pause, resume, abort or promote"
        ))
    })?;
    // A rollout moves a job's revision or a package's version: the token must own that.
    let info = app
        .read(move |s| s.rollout(id))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no rollout {id}")))?;
    match info.kind {
        RolloutKind::Job => caller.check_job(&info.subject)?,
        RolloutKind::Package => {
            super::guard::check_own_package(&app, &caller, &info.subject).await?
        }
    }
    match app
        .write(Command::RolloutAction {
            id,
            action,
            at: Utc::now(),
            actor: caller.name,
        })
        .await?
    {
        CommandResult::Rollout { rollout } => Ok(Json(*rollout)),
        _ => Err(ApiError::Internal(
            "unexpected answer to RolloutAction".into(),
        )),
    }
}
