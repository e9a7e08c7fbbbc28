//! Pauses, drains and maintenance windows (issue 23): `/v1/pauses`, `/v1/windows` and
//! `POST /v1/nodes/KEY/drain|undrain`. Writes need an operator token (the guard's default for
//! non-GET), are audited by the state machine, and bad input is a 400 with nothing saved.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::Utc;
use op_proto::NodeInfo;
use op_proto::holds::{
    Drain, Pause, PauseRequest, ResumeRequest, Window, WindowRequest, check_window,
};
use op_store::{Command, CommandResult};

use super::error::ApiError;
use super::extract::ApiJson;
use crate::app::App;
use crate::auth::Caller;

pub async fn list_pauses(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<Pause>>, ApiError> {
    let mut pauses = app.read(|s| s.pauses()).await?;
    pauses.retain(|p| caller.sees_hold(&p.scope));
    Ok(Json(pauses))
}

pub async fn pause(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<PauseRequest>,
) -> Result<Json<Pause>, ApiError> {
    let bad = |m: String| ApiError::bad("invalid_pause", m);
    req.scope.check().map_err(bad)?;
    caller.check_hold(&req.scope)?;
    let now = Utc::now();
    if let Some(until) = req.until
        && until <= now
    {
        return Err(bad(format!(
            "--until {} is not in the future",
            until.to_rfc3339()
        )));
    }
    if let op_proto::holds::HoldScope::Job(name) = &req.scope {
        let n = name.clone();
        if app.read(move |s| s.job(&n)).await?.is_none() {
            return Err(ApiError::NotFound(format!("no job named {name:?}")));
        }
    }
    let pause = Pause {
        scope: req.scope,
        until: req.until,
        by: caller.name,
        at: now,
    };
    app.write(Command::Pause {
        pause: pause.clone(),
    })
    .await?;
    Ok(Json(pause))
}

pub async fn resume(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<ResumeRequest>,
) -> Result<StatusCode, ApiError> {
    req.scope
        .check()
        .map_err(|m| ApiError::bad("invalid_pause", m))?;
    caller.check_hold(&req.scope)?;
    app.write(Command::Resume {
        scope: req.scope,
        at: Utc::now(),
        actor: caller.name,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_windows(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<Window>>, ApiError> {
    let mut windows = app.read(|s| s.windows()).await?;
    windows.retain(|w| caller.sees_hold(&w.scope));
    Ok(Json(windows))
}

pub async fn put_window(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<WindowRequest>,
) -> Result<Json<Window>, ApiError> {
    let bad = |m: String| ApiError::bad("invalid_window", m);
    let duration = op_proto::units::parse_duration(&req.duration)
        .map_err(|e| bad(format!("--duration: {e}")))?;
    let now = Utc::now();
    check_window(&name, &req.cron, duration.as_secs(), now).map_err(bad)?;
    if duration.subsec_nanos() != 0 {
        return Err(bad("--duration must be whole seconds".into()));
    }
    req.scope.check().map_err(bad)?;
    caller.check_hold(&req.scope)?;
    if let Some(old) = find_window(&app, &name).await? {
        // Replacing a window is removing the old one too.
        caller.check_hold(&old.scope)?;
    }
    let window = Window {
        name,
        cron: req.cron.trim().to_string(),
        duration_secs: duration.as_secs(),
        scope: req.scope,
        by: caller.name,
        at: now,
    };
    app.write(Command::SetWindow {
        window: window.clone(),
    })
    .await?;
    Ok(Json(window))
}

pub async fn remove_window(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if let Some(old) = find_window(&app, &name).await? {
        caller.check_hold(&old.scope)?;
    }
    app.write(Command::RemoveWindow {
        name,
        at: Utc::now(),
        actor: caller.name,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn find_window(app: &App, name: &str) -> Result<Option<Window>, ApiError> {
    let windows = app.read(|s| s.windows()).await?;
    Ok(windows.into_iter().find(|w| w.name == name))
}

/// The one live node `key` (a node id, hostname or IP) names.
pub(super) async fn one_node(app: &App, key: &str) -> Result<NodeInfo, ApiError> {
    let k = key.to_string();
    let nodes = app.read(move |s| s.find_nodes(&k)).await?;
    let mut live: Vec<NodeInfo> = nodes
        .into_iter()
        .filter(|n| n.status != op_proto::NodeStatus::Left)
        .collect();
    match live.len() {
        0 => Err(ApiError::NotFound(format!(
            "no node with id, hostname or IP {key:?}"
        ))),
        1 => Ok(live.remove(0)),
        n => {
            let ids: Vec<String> = live.iter().map(|n| n.node_id.to_string()).collect();
            Err(ApiError::bad(
                "ambiguous_node",
                format!(
                    "{key:?} names {n} nodes ({}); name one by its node id",
                    ids.join(", ")
                ),
            ))
        }
    }
}

async fn set_drain(
    app: &App,
    caller: Caller,
    key: &str,
    drain: bool,
) -> Result<Json<NodeInfo>, ApiError> {
    let node = one_node(app, key).await?;
    caller.check_node(&node)?;
    let at = Utc::now();
    let result = app
        .write(Command::SetNodeDrain {
            node_id: node.node_id,
            drain: drain.then(|| Drain {
                by: caller.name.clone(),
                at,
            }),
            at,
            actor: caller.name,
        })
        .await?;
    match result {
        CommandResult::NodeDrained { node } => Ok(Json(*node)),
        _ => Ok(Json(node)),
    }
}

/// `POST /v1/nodes/KEY/drain`: no new runs start on the node; running ones finish.
pub async fn drain(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
) -> Result<Json<NodeInfo>, ApiError> {
    set_drain(&app, caller, &key, true).await
}

/// `POST /v1/nodes/KEY/undrain`.
pub async fn undrain(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
) -> Result<Json<NodeInfo>, ApiError> {
    set_drain(&app, caller, &key, false).await
}
