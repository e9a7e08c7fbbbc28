//! The raft listener: openraft's RPCs and the other peer requests (forwarded writes, read
//! barriers, membership, leadership transfer, blobs, output requests).
//!
//! Every route but `/raft/join` demands this cluster's secret (`Authorization: Bearer`,
//! compared in constant time) and this cluster's id ([`CLUSTER_HEADER`]). Anyone who can
//! reach the raft port but lacks the secret can therefore neither vote nor inject entries.
//! `/raft/join` hands the secret out, so it demands an admin token of this cluster (or the
//! secret itself).
//!
//! The credential is checked first, before the body is read or parsed, and an unauthenticated
//! caller learns nothing: one 401 whatever it sent, without this cluster's id (a node of another
//! cluster holds another secret, so it is told only that it is not of this cluster).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{delete, post};
use axum::{Json, Router};
use chrono::Utc;
use op_proto::api::{AddMemberRequest, Scope, TransferLeaderRequest};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use subtle::ConstantTimeEq;

use super::messages::{
    CLUSTER_HEADER, CampaignRequest, ForwardedOutputAnswer, ForwardedOutputRequest, JoinRequest,
    JoinResponse, ReadIndexResponse, RemovedNotice, WriteResponse, code,
};
use super::network::RAFT_BODY_LIMIT;
use super::refusal::PeerRefusal;
use super::types::{NodeId, TypeConfig};
use super::wire::{AppendRequest, decode_write};
use super::{Cluster, ClusterError};
use crate::auth::Authenticator;
use crate::metrics::Metrics;
use crate::output::OutputRequests;

/// What the raft listener's handlers use.
pub struct RaftListener {
    pub cluster: Arc<Cluster>,
    /// Checks an admin token presented to `/raft/join`.
    pub auth: Arc<Authenticator>,
    pub metrics: Arc<Metrics>,
    /// Output requests forwarded here by the member a reader asked (`POST /raft/output`).
    pub outputs: Arc<OutputRequests>,
    /// The secrets key handed to joining members (and replaced by a rotation).
    pub secrets: Arc<crate::secrets::Keeper>,
}

/// The raft listener's routes; `extra` (the blob transfer routes of `blobs::replicate`) is served
/// behind the same peer authentication.
pub fn router(app: Arc<RaftListener>, extra: Router<Arc<RaftListener>>) -> Router {
    let authenticated = Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/write", post(write))
        .route("/raft/read-index", post(read_index))
        .route("/raft/members", post(add_member))
        .route("/raft/members/{id}", delete(remove_member))
        .route("/raft/leader", post(transfer_leader))
        .route("/raft/campaign", post(campaign))
        .route("/raft/removed", post(removed))
        .route("/raft/hello", post(hello))
        .route("/raft/output", post(output_request))
        .route("/raft/secrets-key", post(secrets_key))
        .merge(extra)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            authenticate,
        ));
    Router::new()
        .route("/raft/join", post(join))
        .merge(authenticated)
        .layer(DefaultBodyLimit::max(RAFT_BODY_LIMIT))
        .with_state(app)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

fn is_secret(app: &RaftListener, presented: &str) -> bool {
    let secret = app.cluster.identity.secret.as_bytes();
    presented.len() == secret.len() && bool::from(presented.as_bytes().ct_eq(secret))
}

async fn authenticate(
    State(app): State<Arc<RaftListener>>,
    req: Request,
    next: Next,
) -> Result<Response, PeerRefusal> {
    if !bearer(req.headers()).is_some_and(|t| is_secret(&app, t)) {
        return Err(PeerRefusal::new(
            StatusCode::UNAUTHORIZED,
            code::UNAUTHORIZED,
            "raft request without this cluster's secret (DATA_DIR/cluster.secret): the caller is not a member of this manager's cluster; a manager's data dir belongs to one cluster (start a new member on an empty data dir with --join)",
        ));
    }
    let ours = &app.cluster.identity.cluster_id;
    let theirs = req
        .headers()
        .get(CLUSTER_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if theirs != ours {
        return Err(PeerRefusal::new(
            StatusCode::FORBIDDEN,
            code::WRONG_CLUSTER,
            format!(
                "this manager belongs to cluster {ours}, the caller to {}; a manager's data dir belongs to one cluster (start a new member on an empty data dir with --join)",
                if theirs.is_empty() { "none" } else { theirs }
            ),
        ));
    }
    Ok(next.run(req).await)
}

/// The refusal of a peer's request body that does not decode (`what`: the request's kind).
fn undecodable(what: &'static str) -> impl Fn(serde_json::Error) -> PeerRefusal {
    move |e| {
        PeerRefusal::new(
            StatusCode::BAD_REQUEST,
            code::FAILED,
            format!("undecodable {what} request: {e}"),
        )
    }
}

/// An append from the leader: each entry is decoded here and its JSON, as sent, is left for the
/// log to store as it is (`log_store::Received`), which spares encoding it again.
async fn append(
    State(app): State<Arc<RaftListener>>,
    body: Bytes,
) -> Result<Json<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>>, PeerRefusal> {
    let (req, texts) = AppendRequest::parse(&body)
        .and_then(AppendRequest::decode)
        .map_err(undecodable("append"))?;
    let _held = app.cluster.received.hold(
        req.entries
            .iter()
            .map(|e| e.log_id)
            .zip(texts.iter().copied()),
    );
    Ok(Json(app.cluster.raft.append_entries(req).await))
}

async fn vote(
    State(app): State<Arc<RaftListener>>,
    Json(req): Json<VoteRequest<NodeId>>,
) -> Result<Json<Result<VoteResponse<NodeId>, RaftError<NodeId>>>, PeerRefusal> {
    // A removed node that never learned of its removal keeps campaigning; tell it instead of
    // letting it raise the term. (The leader lease would refuse it too, but silently.)
    let candidate = req.vote.leader_id().voted_for();
    let known = candidate.is_some_and(|c| {
        app.cluster
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&c)
            .is_some()
    });
    if !known {
        return Err(PeerRefusal::new(
            StatusCode::FORBIDDEN,
            code::NOT_A_MEMBER,
            format!(
                "node {} is not a member of cluster {}; it was removed",
                candidate.map_or_else(|| "?".to_string(), |c| c.to_string()),
                app.cluster.identity.cluster_id
            ),
        ));
    }
    Ok(Json(app.cluster.raft.vote(req).await))
}

async fn snapshot(
    State(app): State<Arc<RaftListener>>,
    Json(req): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Json<Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>> {
    Json(app.cluster.raft.install_snapshot(req).await)
}

/// A command a follower forwards (most are run batches: decoded without serde's buffering).
async fn write(
    State(app): State<Arc<RaftListener>>,
    body: Bytes,
) -> Result<Json<WriteResponse>, PeerRefusal> {
    let req = decode_write(&body).map_err(undecodable("write"))?;
    if !app.cluster.is_leader() {
        return Err(ClusterError::NotLeader.into());
    }
    let kind = req.command.kind();
    let resp = app.cluster.write_local(req.command).await?;
    app.metrics.command_applied(kind);
    Ok(Json(resp))
}

async fn read_index(
    State(app): State<Arc<RaftListener>>,
) -> Result<Json<ReadIndexResponse>, PeerRefusal> {
    if !app.cluster.is_leader() {
        return Err(ClusterError::NotLeader.into());
    }
    let index = app.cluster.read_index_local().await?;
    Ok(Json(ReadIndexResponse { index }))
}

async fn add_member(
    State(app): State<Arc<RaftListener>>,
    Json(req): Json<AddMemberRequest>,
) -> Result<Json<serde_json::Value>, PeerRefusal> {
    // Any member takes the request; the leader does it.
    app.cluster.add_member(req).await?;
    Ok(Json(serde_json::json!({})))
}

async fn remove_member(
    State(app): State<Arc<RaftListener>>,
    Path(id): Path<NodeId>,
) -> Result<Json<serde_json::Value>, PeerRefusal> {
    if !app.cluster.is_leader() {
        return Err(ClusterError::NotLeader.into());
    }
    app.cluster.remove_member_local(id).await?;
    Ok(Json(serde_json::json!({})))
}

async fn transfer_leader(
    State(app): State<Arc<RaftListener>>,
    Json(req): Json<TransferLeaderRequest>,
) -> Result<Json<serde_json::Value>, PeerRefusal> {
    if !app.cluster.is_leader() {
        return Err(ClusterError::NotLeader.into());
    }
    app.cluster.transfer_leader_local(req.to).await?;
    Ok(Json(serde_json::json!({})))
}

async fn campaign(
    State(app): State<Arc<RaftListener>>,
    Json(req): Json<CampaignRequest>,
) -> Json<serde_json::Value> {
    let raft = app.cluster.raft.clone();
    let after = Duration::from_millis(req.after_ms.min(60_000));
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        tracing::info!("campaigning for leadership, as the leader asked");
        if let Err(e) = raft.trigger().elect().await {
            tracing::warn!(error = %e, "could not start an election");
        }
    });
    Json(serde_json::json!({}))
}

async fn removed(
    State(app): State<Arc<RaftListener>>,
    Json(notice): Json<RemovedNotice>,
) -> Json<serde_json::Value> {
    if notice.node_id == app.cluster.id() {
        app.cluster.peers.mark_removed();
    }
    Json(serde_json::json!({}))
}

async fn hello(State(app): State<Arc<RaftListener>>) -> Json<super::messages::Hello> {
    Json(super::messages::Hello {
        node_id: app.cluster.id(),
    })
}

/// A rotation hands this member the new secrets key (`super::secrets_key`).
async fn secrets_key(
    State(app): State<Arc<RaftListener>>,
    Json(msg): Json<super::secrets_key::KeyRingMessage>,
) -> Result<Json<super::secrets_key::KeyRingAck>, PeerRefusal> {
    let ring = msg.ring().map_err(|e| {
        PeerRefusal::new(
            StatusCode::BAD_REQUEST,
            code::FAILED,
            format!("the secrets key ring is {e}"),
        )
    })?;
    let key_id = ring
        .current()
        .map(|k| k.id().to_string())
        .unwrap_or_default();
    app.secrets.install(ring).map_err(|e| {
        PeerRefusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            code::FAILED,
            format!("writing secrets.key: {e}"),
        )
    })?;
    tracing::info!(%key_id, "took a new secrets key");
    Ok(Json(super::secrets_key::KeyRingAck {
        node_id: app.cluster.id(),
        key_id,
    }))
}

/// Step 1 of joining: the cluster's identity, for an admin token or the cluster secret.
async fn join(
    State(app): State<Arc<RaftListener>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<JoinResponse>, PeerRefusal> {
    // The body is parsed only once the caller is known (an extractor would refuse a bad one
    // first, telling an unauthenticated caller what this route expects).
    let token = bearer(&headers).unwrap_or("");
    let allowed = is_secret(&app, token)
        || app
            .auth
            .verify(token, Utc::now())
            .await
            .ok()
            .flatten()
            .is_some_and(|c| c.scope == Scope::Admin);
    if !allowed {
        return Err(PeerRefusal::new(
            StatusCode::UNAUTHORIZED,
            code::UNAUTHORIZED,
            "joining needs an admin token of this cluster or its secret (--join-token)",
        ));
    }
    let req: JoinRequest = serde_json::from_slice(&body).map_err(undecodable("join"))?;
    let ours = &app.cluster.identity.cluster_id;
    if let Some(theirs) = req.cluster_id.as_deref().filter(|t| *t != ours) {
        return Err(PeerRefusal::new(
            StatusCode::FORBIDDEN,
            code::WRONG_CLUSTER,
            format!(
                "the joining node's data dir belongs to cluster {theirs}, this manager to {ours}; join with an empty data dir"
            ),
        ));
    }
    let node_id = app.cluster.reserve_id(req.node_id)?;
    tracing::info!(node_id, "handing the cluster identity to a joining node");
    Ok(Json(JoinResponse {
        cluster_id: ours.clone(),
        node_id,
        secret: app.cluster.identity.secret.clone(),
        secrets_key: app.secrets.ring().current().map(|k| k.to_hex()),
    }))
}

/// Longest a forwarded output request is kept (a reader waits at most 30 s).
const FORWARDED_OUTPUT_MAX: Duration = Duration::from_secs(30);

/// `POST /raft/output`: another member's reader asks for a run's output; queued for the node's
/// next sync here (the agent syncs with one member; the others forget it when it expires).
async fn output_request(
    State(app): State<Arc<RaftListener>>,
    Json(req): Json<ForwardedOutputRequest>,
) -> Json<ForwardedOutputAnswer> {
    let ttl = Duration::from_millis(req.wait_ms).min(FORWARDED_OUTPUT_MAX);
    let held = app.outputs.holds(req.request.node_id);
    app.outputs.offer(req.request, ttl);
    Json(ForwardedOutputAnswer { held })
}
