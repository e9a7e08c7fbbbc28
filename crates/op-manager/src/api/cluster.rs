//! `/v1/cluster`: this member's view of the cluster (always local, never forwarded: it is how an
//! operator sees a member that lags or lost its leader), and the admin operations on membership,
//! which run on the leader wherever the request lands.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use op_proto::api::{AddMemberRequest, ClusterMember, ClusterStatus, TransferLeaderRequest};
use op_store::META_CLUSTER_ID;

use super::error::ApiError;
use super::extract::ApiJson;
use crate::app::App;

/// The cluster as this member sees it; replication progress only on the leader.
pub fn status(app: &App, cluster_id: String) -> ClusterStatus {
    let m = app.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let last = m.last_log_index;
    let members = membership
        .nodes()
        .map(|(id, node)| {
            let own = *id == m.id;
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .map(|l| l.index)
                .or_else(|| own.then_some(last).flatten());
            ClusterMember {
                id: *id,
                api_addr: if own {
                    app.api_url.clone()
                } else {
                    node.api_addr.clone()
                },
                raft_addr: if own {
                    app.raft_url.clone()
                } else {
                    node.raft_addr.clone()
                },
                voter: voters.contains(id),
                matched_index: matched,
                lag: m
                    .replication
                    .as_ref()
                    .map(|_| last.unwrap_or(0).saturating_sub(matched.unwrap_or(0))),
            }
        })
        .collect();
    ClusterStatus {
        cluster_id,
        node_id: m.id,
        leader: m.current_leader,
        term: m.current_term,
        state: if app.cluster.removed() {
            "Removed".to_string()
        } else {
            format!("{:?}", m.state)
        },
        last_log_index: m.last_log_index,
        applied_index: m.last_applied.map(|l| l.index),
        snapshot_index: m.snapshot.map(|l| l.index),
        committed_index: app.cluster.committed_index(),
        members,
    }
}

pub async fn get(State(app): State<Arc<App>>) -> Result<Json<ClusterStatus>, ApiError> {
    // The identity file is the authority; the store's copy arrives with the first entries.
    let stored = app.read(|s| s.meta(META_CLUSTER_ID)).await?;
    let cluster_id = stored.unwrap_or_else(|| app.cluster.identity.cluster_id.clone());
    Ok(Json(status(&app, cluster_id)))
}

/// After a membership change: this member's view, once it has seen the change.
async fn settled(app: &App) -> Result<Json<ClusterStatus>, ApiError> {
    // The leader has applied the change; a follower waits to have applied as much. A removed
    // member never will, and answers with what it knows.
    if !app.cluster.removed() {
        let _ = app.cluster.read_barrier().await;
    }
    Ok(Json(status(app, app.cluster.identity.cluster_id.clone())))
}

pub async fn add_member(
    State(app): State<Arc<App>>,
    ApiJson(req): ApiJson<AddMemberRequest>,
) -> Result<Json<ClusterStatus>, ApiError> {
    app.cluster.add_member(req).await?;
    settled(&app).await
}

pub async fn remove_member(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<ClusterStatus>, ApiError> {
    let id: u64 = id.parse().map_err(|_| {
        ApiError::bad(
            "invalid_node_id",
            format!("{id:?} is not a raft node id (a whole number; see `agentcli cluster status`)"),
        )
    })?;
    app.cluster.remove_member(id).await?;
    settled(&app).await
}

pub async fn transfer_leader(
    State(app): State<Arc<App>>,
    ApiJson(req): ApiJson<TransferLeaderRequest>,
) -> Result<Json<ClusterStatus>, ApiError> {
    app.cluster.transfer_leader(req.to).await?;
    settled(&app).await
}
