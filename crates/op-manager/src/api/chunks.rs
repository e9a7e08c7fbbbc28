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

/// Most holders scored for nearness per ticket request: a random sample of this many, so a
/// version held by thousands costs a few node reads, not the whole list.
const SCORED: usize = 64;

/// The peers `node` may fetch `name` `version` from: live nodes that report it installed (the
/// holders index `PeerDirectory::holders`, kept from the heartbeats this member receives) and
/// serve chunks (a peer URL heard lately), nearest first (`crate::peers::choose`) among a
/// random sample of [`SCORED`]; and every node that reports it installed. Reads only the asking
/// node and the sampled holders from the store, not the node list.
async fn sources(
    app: &Arc<App>,
    node: uuid::Uuid,
    name: &str,
    version: u64,
) -> Result<(Vec<PeerSource>, Vec<uuid::Uuid>), ApiError> {
    use rand::seq::SliceRandom;
    let holders = app.peer_dir.holders(name, version);
    let mut sample: Vec<(uuid::Uuid, String)> = holders
        .iter()
        .filter(|n| **n != node)
        .filter_map(|n| Some((*n, app.peer_dir.url(*n)?)))
        .collect();
    if sample.is_empty() {
        return Ok((Vec::new(), holders));
    }
    sample.shuffle(&mut rand::rng());
    sample.truncate(SCORED);
    let ids: Vec<uuid::Uuid> = std::iter::once(node)
        .chain(sample.iter().map(|(n, _)| *n))
        .collect();
    let mut infos = app
        .read(move |st| {
            ids.into_iter()
                .map(|id| st.node(id))
                .collect::<op_store::Result<Vec<_>>>()
        })
        .await?
        .into_iter();
    let Some(Some(me)) = infos.next() else {
        return Ok((Vec::new(), holders));
    };
    let rack = me.labels.get("rack").cloned();
    let candidates = infos
        .zip(sample)
        .filter_map(|(info, (id, url))| {
            let n = info?;
            matches!(
                n.status,
                op_proto::NodeStatus::Ready | op_proto::NodeStatus::Degraded
            )
            .then(|| crate::peers::Candidate {
                node: id,
                url,
                rack: n.labels.get("rack").cloned(),
                ips: n.ips.clone(),
            })
        })
        .collect();
    let chosen = crate::peers::choose(rack.as_deref(), &me.ips, candidates)
        .into_iter()
        .map(|c| PeerSource {
            node: c.node,
            url: c.url,
        })
        .collect();
    Ok((chosen, holders))
}
