//! `/v1/nodes`: the fleet (Ready first), one node by id, hostname or IP, and forget.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::Utc;
use op_proto::NodeInfo;
use op_store::Command;
use uuid::Uuid;

use super::error::ApiError;
use crate::app::App;
use crate::auth::Caller;

pub async fn list(State(app): State<Arc<App>>) -> Result<Json<Vec<NodeInfo>>, ApiError> {
    let mut nodes = app.read(|s| s.nodes()).await?;
    app.beats.overlay(&mut nodes);
    Ok(Json(nodes))
}

pub async fn get(
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
) -> Result<Json<NodeInfo>, ApiError> {
    let k = key.clone();
    let mut nodes = app.read(move |s| s.find_nodes(&k)).await?;
    app.beats.overlay(&mut nodes);
    nodes
        .into_iter()
        .next()
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no node with id, hostname or IP {key:?}")))
}

pub async fn forget(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    let node_id = Uuid::parse_str(&key).map_err(|_| {
        ApiError::bad(
            "invalid_node_id",
            format!("{key:?} is not a node id (a UUID)"),
        )
    })?;
    app.write(Command::ForgetNode {
        node_id,
        at: Utc::now(),
        actor: caller.name,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
