//! Health, version, metrics, cluster status, and the answers for unknown routes.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use op_proto::API_VERSION;
use op_proto::api::{ClusterMember, ClusterStatus, VersionInfo};
use op_store::META_CLUSTER_ID;

use super::error::ApiError;
use crate::app::App;
use crate::metrics::RaftView;

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn version() -> Json<VersionInfo> {
    Json(VersionInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        api_version: API_VERSION,
        component: "op-manager".into(),
    })
}

pub async fn metrics(State(app): State<Arc<App>>) -> Result<impl IntoResponse, ApiError> {
    let stats = app.read(|s| s.stats()).await?;
    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    let latest = app.read(move |s| s.latest_run_counts(since)).await?;
    let raft = {
        let m = app.raft.metrics();
        let m = m.borrow();
        RaftView {
            term: m.current_term,
            applied: m.last_applied.map_or(0, |l| l.index),
            last_log: m.last_log_index.unwrap_or(0),
            snapshot: m.snapshot.map_or(0, |l| l.index),
            leader: m.current_leader == Some(m.id),
            has_leader: m.current_leader.is_some(),
            state: match m.state {
                openraft::ServerState::Leader => "leader",
                openraft::ServerState::Follower => "follower",
                openraft::ServerState::Candidate => "candidate",
                openraft::ServerState::Learner => "learner",
                openraft::ServerState::Shutdown => "shutdown",
            },
            voters: m.membership_config.membership().voter_ids().count() as u64,
        }
    };
    let body = app.metrics.render(&stats, &latest, &raft);
    Ok((
        [(
            header::CONTENT_TYPE,
            op_proto::exposition::PROMETHEUS_TEXT_CONTENT_TYPE,
        )],
        body,
    ))
}

pub async fn cluster(State(app): State<Arc<App>>) -> Result<Json<ClusterStatus>, ApiError> {
    let cluster_id = app
        .read(|s| s.meta(META_CLUSTER_ID))
        .await?
        .unwrap_or_default();
    let m = app.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, node)| ClusterMember {
            id: *id,
            api_addr: if *id == m.id {
                app.api_url.clone()
            } else {
                node.api_addr.clone()
            },
            raft_addr: if *id == m.id {
                app.raft_url.clone()
            } else {
                node.raft_addr.clone()
            },
            voter: voters.contains(id),
            matched_index: m
                .replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .map(|l| l.index)
                .or_else(|| (*id == m.id).then_some(m.last_log_index).flatten()),
        })
        .collect();
    Ok(Json(ClusterStatus {
        cluster_id,
        node_id: m.id,
        leader: m.current_leader,
        term: m.current_term,
        state: format!("{:?}", m.state),
        last_log_index: m.last_log_index,
        applied_index: m.last_applied.map(|l| l.index),
        snapshot_index: m.snapshot.map(|l| l.index),
        members,
    }))
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route; see the API reference".into())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
