//! `/v1/nodes`: the fleet (Ready first), one node by id, hostname or IP, forget, and the
//! manager-set labels of a node (`POST /v1/nodes/KEY/labels`).

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

/// A policy token sees the nodes its host selectors match, and on them its jobs' runs only.
pub async fn list(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<NodeInfo>>, ApiError> {
    let mut nodes = app.read(|s| s.nodes()).await?;
    app.beats.overlay(&mut nodes);
    caller.narrow_nodes(&mut nodes);
    Ok(Json(nodes))
}

pub async fn get(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
) -> Result<Json<NodeInfo>, ApiError> {
    let k = key.clone();
    let mut nodes = app.read(move |s| s.find_nodes(&k)).await?;
    app.beats.overlay(&mut nodes);
    caller.narrow_nodes(&mut nodes);
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
    if caller.policy.is_some() {
        let nodes = app
            .read(move |s| s.find_nodes(&node_id.to_string()))
            .await?;
        if !nodes.iter().any(|n| caller.reaches_host(&n.identity())) {
            return Err(ApiError::NotFound(format!("no node with id {node_id}")));
        }
    }
    app.write(Command::ForgetNode {
        node_id,
        at: Utc::now(),
        actor: caller.name,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/nodes/KEY/labels`: sets and removes manager labels. The same rules as an agent's
/// own labels (a key of 1..=253 printable characters, a value of 0..=253, at most 64), plus: a key
/// has no `=`, a key is not both set and removed, and something is asked. Bad input is a 400 and
/// nothing is saved.
pub async fn label(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
    super::extract::ApiJson(req): super::extract::ApiJson<op_proto::api::LabelRequest>,
) -> Result<Json<NodeInfo>, ApiError> {
    let bad = |m: String| ApiError::bad("invalid_labels", m);
    if req.set.is_empty() && req.remove.is_empty() {
        return Err(bad("name labels to set (k=v) or to remove (k-)".into()));
    }
    for (k, v) in &req.set {
        check_label(k, Some(v))?;
    }
    for k in &req.remove {
        check_label(k, None)?;
        if req.set.contains_key(k) {
            return Err(bad(format!("label {k:?} is both set and removed")));
        }
    }
    let k = key.clone();
    let nodes = app.read(move |s| s.find_nodes(&k)).await?;
    let live: Vec<&NodeInfo> = nodes
        .iter()
        .filter(|n| n.status != op_proto::NodeStatus::Left && caller.reaches_host(&n.identity()))
        .collect();
    let node = match live.as_slice() {
        [] => {
            return Err(ApiError::NotFound(format!(
                "no node with id, hostname or IP {key:?}"
            )));
        }
        [one] => *one,
        many => {
            let ids: Vec<String> = many.iter().map(|n| n.node_id.to_string()).collect();
            return Err(bad(format!(
                "{key:?} names {} nodes ({}); name one by its node id",
                many.len(),
                ids.join(", ")
            )));
        }
    };
    let count = node
        .manager_labels
        .keys()
        .filter(|k| !req.remove.contains(k))
        .chain(
            req.set
                .keys()
                .filter(|k| !node.manager_labels.contains_key(*k)),
        )
        .count();
    if count > super::agent::MAX_LABELS {
        return Err(bad(format!(
            "at most {} manager labels per node",
            super::agent::MAX_LABELS
        )));
    }
    let node_id = node.node_id;
    let result = app
        .write(Command::SetNodeLabels {
            node_id,
            set: req.set,
            remove: req.remove,
            at: Utc::now(),
            actor: caller.name.clone(),
        })
        .await?;
    let mut nodes = match result {
        op_store::CommandResult::NodeLabelled { node } => vec![*node],
        _ => {
            let mut nodes = app
                .read(move |s| s.find_nodes(&node_id.to_string()))
                .await?;
            app.beats.overlay(&mut nodes);
            nodes
        }
    };
    caller.narrow_nodes(&mut nodes);
    nodes
        .into_iter()
        .next()
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no node {node_id}")))
}

fn check_label(key: &str, value: Option<&str>) -> Result<(), ApiError> {
    let bad = |m: String| ApiError::bad("invalid_labels", m);
    super::agent::check_text("label key", key, false).map_err(|_| {
        bad(format!(
            "label key {key:?} must be 1..=253 printable characters"
        ))
    })?;
    if key.contains('=') {
        return Err(bad(format!("label key {key:?} must not contain '='")));
    }
    if let Some(v) = value {
        super::agent::check_text("label value", v, true).map_err(|_| {
            bad(format!(
                "label {key}: the value must be 0..=253 printable characters"
            ))
        })?;
    }
    Ok(())
}
