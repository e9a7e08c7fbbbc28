//! Health, version, metrics, and the answers for unknown routes.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use op_proto::API_VERSION;
use op_proto::api::VersionInfo;

use super::error::ApiError;
use crate::app::App;
use crate::metrics::RaftView;

/// `ok` while this manager can do its work; 503 with the reason when raft has stopped (the
/// manager is about to exit so that its service manager restarts it) or when its disk is below
/// `disk_reserve` (writes are refused until space returns).
pub async fn healthz(State(app): State<Arc<App>>) -> (axum::http::StatusCode, String) {
    let stopped = {
        let m = app.raft.metrics();
        let m = m.borrow();
        match &m.running_state {
            Err(e) => Some(format!("raft stopped: {e}")),
            Ok(()) if m.state == openraft::ServerState::Shutdown => {
                Some("raft is shut down".to_string())
            }
            Ok(()) => None,
        }
    };
    match stopped.or_else(|| app.cluster.disk_full()) {
        Some(why) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("{why}\n"),
        ),
        None => (axum::http::StatusCode::OK, "ok\n".to_string()),
    }
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
        let last = m.last_log_index.unwrap_or(0);
        RaftView {
            term: m.current_term,
            applied: m.last_applied.map_or(0, |l| l.index),
            last_log: last,
            committed: app.cluster.committed_index().unwrap_or(0),
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
            members: m.membership_config.membership().nodes().count(),
            lag: m
                .replication
                .as_ref()
                .map(|r| {
                    r.iter()
                        .filter(|(id, _)| **id != m.id)
                        .map(|(id, l)| (*id, last.saturating_sub(l.map_or(0, |l| l.index))))
                        .collect()
                })
                .unwrap_or_default(),
        }
    };
    app.metrics
        .connections(app.conn_cap.open(), app.conn_cap.refused());
    let body = app.metrics.render(&stats, &latest, &raft);
    Ok((
        [(
            header::CONTENT_TYPE,
            op_proto::exposition::PROMETHEUS_TEXT_CONTENT_TYPE,
        )],
        body,
    ))
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route; see the API reference".into())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
