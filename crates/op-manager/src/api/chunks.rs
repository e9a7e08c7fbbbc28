//! `GET /v1/agent/packages/{name}/{version}/chunks`: the chunk list of a version (issue 26), for
//! agents (the path is under `/v1/agent/`, so only agent tokens pass the guard). Each chunk is then
//! fetched with a `Range` request on the version's `/content` (or, later, from a peer) and checked
//! against its sha256 before it is written.
//!
//! `GET /v1/agent/packages/{name}/{version}/ticket`: a chunk ticket for the calling node (its own
//! node credential only; an enrollment token or a forgotten node gets none), for fetching that
//! version's chunks from peer agents (`crate::peers`).

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use op_proto::chunks::{ChunkManifest, PeerSource, Ticket, TicketGrant};
use op_proto::package::PackageState;

use super::error::ApiError;
use crate::app::App;
use crate::auth::Caller;
use crate::blobs::replicate;

pub async fn manifest(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ChunkManifest>, ApiError> {
    let v = super::packages::load(&app, name, &version).await?;
    let path = replicate::ensure_local(&app.replicas(), &v.sha256)
        .await
        .map_err(|e| {
            ApiError::Unavailable(format!(
                "the content of {} {} is not on this manager and no other manager could send it: {e}",
                v.name, v.version
            ))
        })?;
    // One computation per blob at a time; the others then read the cached list.
    let lock = app.blobs.fetch_lock(&format!("chunks:{}", v.sha256));
    let _one = lock.lock().await;
    let blobs = app.blobs.clone();
    let sha = v.sha256.clone();
    let m = tokio::task::spawn_blocking(move || {
        crate::blobs::chunks::load_or_compute(&blobs, &path, &sha)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(format!("chunk list of {} {}: {e}", v.name, v.version)))?;
    Ok(Json(m))
}

pub async fn ticket(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<TicketGrant>, ApiError> {
    let Some(node) = caller.node_id else {
        return Err(ApiError::Denied(
            "chunk tickets are for a node's own credential, not an enrollment token".into(),
        ));
    };
    let state = app.hub.node(&app.store, node).await?;
    if state.is_none_or(|s| s.status == op_proto::NodeStatus::Left) {
        return Err(ApiError::UnknownNode(node));
    }
    let v = super::packages::load(&app, name, &version).await?;
    if !app.config.peer_distribution {
        return Err(ApiError::Denied(
            "peer distribution is off on this cluster (--peer-distribution false): download from a manager".into(),
        ));
    }
    let key = app
        .secrets
        .current()
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let signer = crate::peers::TicketSigner::from_secrets_key(&key);
    let expires = chrono::Utc::now().timestamp() + crate::peers::TICKET_TTL_SECS;
    let t = Ticket {
        node,
        package: v.name,
        version: v.version,
        expires,
    };
    let (sources, holders) = sources(&app, node, &t.package, t.version).await?;
    // Nobody holds it yet: a few nodes fetch it from the managers, the others wait for them.
    let wait_secs = if sources.is_empty() {
        app.peer_dir
            .seed_or_wait(node, &t.package, t.version, &holders)
    } else {
        None
    };
    Ok(Json(TicketGrant {
        ticket: signer.sign(&t),
        expires,
        public_key: signer.public_key(),
        sources,
        wait_secs,
    }))
}

/// The peers `node` may fetch `name` `version` from: live nodes that report it installed and
/// serve chunks (a peer URL heard lately), nearest first (`crate::peers::choose`); and every
/// node that reports it installed.
async fn sources(
    app: &Arc<App>,
    node: uuid::Uuid,
    name: &str,
    version: u64,
) -> Result<(Vec<PeerSource>, Vec<uuid::Uuid>), ApiError> {
    let mut nodes = app.read(|st| st.nodes()).await?;
    app.beats.overlay(&mut nodes);
    let holders = nodes
        .iter()
        .filter(|n| {
            n.packages.iter().any(|p| {
                p.name == name && p.version == version && p.state == PackageState::Installed
            })
        })
        .map(|n| n.node_id)
        .collect();
    let Some(me) = nodes.iter().find(|n| n.node_id == node) else {
        return Ok((Vec::new(), holders));
    };
    let rack = me.labels.get("rack").cloned();
    let ips = me.ips.clone();
    let candidates = nodes
        .iter()
        .filter(|n| {
            n.node_id != node
                && matches!(
                    n.status,
                    op_proto::NodeStatus::Ready | op_proto::NodeStatus::Degraded
                )
                && n.packages.iter().any(|p| {
                    p.name == name && p.version == version && p.state == PackageState::Installed
                })
        })
        .filter_map(|n| {
            Some(crate::peers::Candidate {
                node: n.node_id,
                url: app.peer_dir.url(n.node_id)?,
                rack: n.labels.get("rack").cloned(),
                ips: n.ips.clone(),
            })
        })
        .collect();
    let chosen = crate::peers::choose(rack.as_deref(), &ips, candidates)
        .into_iter()
        .map(|c| PeerSource {
            node: c.node,
            url: c.url,
        })
        .collect();
    Ok((chosen, holders))
}
