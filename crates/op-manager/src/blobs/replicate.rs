//! Package blobs on every manager.
//!
//! A version commits only once its blob is on a majority of the voters: the manager that took
//! the upload pushes the file to every other member (`PUT /raft/blobs/<sha256>` on their raft
//! listeners) and proposes `AddPackageVersion` once enough of them confirmed a verified, fsynced
//! copy ([`push_to_majority`]); the other pushes finish in the background. Receivers keep the
//! copy in `blobs/incoming/` until their store refers to it.
//!
//! Every manager then makes sure it holds every blob its store refers to ([`sync_loop`], woken
//! when a version is added or a snapshot installed, and every half minute): it adopts an incoming
//! copy, or fetches the blob from a peer (`GET /raft/blobs/<sha256>`) and checks its hash. A
//! download asking a manager for content it lacks waits for the same fetch ([`ensure_local`]), so
//! any member can serve any version, including a member that joined long after the upload.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use op_store::Store;
use reqwest::Method;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::BlobStore;
use super::{ReceiveError, is_blob_name};
use crate::error::DomainError;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::raft::messages::code;
use crate::raft::network::{PeerError, Peers, send_json};
use crate::raft::refusal::PeerRefusal;
use crate::raft::{Cluster, Member, NodeId};
use crate::state;

/// How often every referenced blob is checked for even without a change.
const SYNC_INTERVAL: Duration = Duration::from_secs(30);
/// The slowest transfer rate a push or fetch may have before it is given up.
const MIN_RATE: u64 = 2 << 20;

/// Time allowed to move `size` bytes between managers.
fn transfer_timeout(size: u64) -> Duration {
    Duration::from_secs(60 + size / MIN_RATE)
}

/// What replication uses: this manager's blob files, its cluster (members and peer client) and
/// the transfer limits. Built by `App::replicas`; the upload and download handlers, the blob
/// transfer routes and [`sync_loop`] share it. Cheap to clone.
#[derive(Clone)]
pub struct Replicas {
    pub blobs: Arc<BlobStore>,
    pub cluster: Arc<Cluster>,
    pub metrics: Arc<Metrics>,
    /// The largest blob accepted (`upload_max_bytes`).
    pub max_bytes: u64,
    /// How long a transfer may stall before it is given up (`header_read_timeout`).
    pub stall_timeout: Duration,
}

/// The other members (leader first: it is the likeliest to have everything) and the voters.
fn others(app: &Replicas) -> (Vec<(NodeId, Member, bool)>, usize, bool) {
    let m = app.cluster.raft.metrics();
    let m = m.borrow();
    let membership = m.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let mut list: Vec<(NodeId, Member, bool)> = membership
        .nodes()
        .filter(|(id, _)| **id != m.id)
        .map(|(id, n)| (*id, n.clone(), voters.contains(id)))
        .collect();
    list.sort_by_key(|(id, _, _)| Some(*id) != m.current_leader);
    (list, voters.len(), voters.contains(&m.id))
}

async fn push_one(peers: &Peers, base: &str, path: PathBuf, sha256: &str) -> Result<(), PeerError> {
    let (url, req) = peers.request(Method::PUT, base, &format!("/raft/blobs/{sha256}"));
    let no_file = |e: std::io::Error| PeerError::Unreachable {
        url: url.clone(),
        message: format!("{}: {e}", path.display()),
    };
    let file = tokio::fs::File::open(&path).await.map_err(no_file)?;
    let size = file.metadata().await.map_err(no_file)?.len();
    let body =
        reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 256 << 10));
    send_json::<serde::de::IgnoredAny>(
        &url,
        req.timeout(transfer_timeout(size))
            .header(header::CONTENT_LENGTH, size)
            .body(body),
    )
    .await
    .map(|_| ())
}

/// Copies blob `sha256` (in place here) to the other members and returns once a majority of the
/// voters, this manager included, hold it. Pushes still running then continue in the background.
pub async fn push_to_majority(app: &Replicas, sha256: &str) -> Result<(), DomainError> {
    let (peers, voters, self_votes) = others(app);
    let majority = voters / 2 + 1;
    let needed = majority.saturating_sub(usize::from(self_votes));
    if peers.is_empty() || needed == 0 {
        return Ok(());
    }
    let (tx, mut rx) = mpsc::channel(peers.len());
    for (id, member, voter) in peers {
        let tx = tx.clone();
        let client = app.cluster.peers.clone();
        let path = app.blobs.path(sha256);
        let sha = sha256.to_string();
        let metrics = app.metrics.blob_pushes.clone();
        tokio::spawn(async move {
            let result = push_one(&client, &member.raft_addr, path, &sha).await;
            match &result {
                Ok(()) => {
                    metrics.inc();
                    tracing::debug!(peer = id, sha256 = %sha, "blob copied");
                }
                Err(e) => {
                    tracing::warn!(peer = id, sha256 = %sha, error = %e, "could not copy a blob to a peer; it fetches it later")
                }
            }
            let _ = tx.send((voter, result.is_ok())).await;
        });
    }
    drop(tx);
    let mut stored = 0;
    while stored < needed {
        match rx.recv().await {
            Some((true, true)) => stored += 1,
            Some(_) => {}
            None => break,
        }
    }
    if stored < needed {
        return Err(DomainError::Unavailable(format!(
            "the package reached {} of {voters} managers; it is accepted once a majority ({majority}) stores it",
            stored + usize::from(self_votes)
        )));
    }
    Ok(())
}

async fn fetch_one(app: &Replicas, base: &str, sha256: &str) -> Result<(), String> {
    let (url, req) = app
        .cluster
        .peers
        .request(Method::GET, base, &format!("/raft/blobs/{sha256}"));
    let resp = req
        .timeout(transfer_timeout(app.max_bytes))
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url}: {}", resp.status()));
    }
    let staged = app
        .blobs
        .receive(
            Box::pin(resp.bytes_stream()),
            app.max_bytes,
            app.stall_timeout,
        )
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if staged.received.sha256 != sha256 {
        return Err(format!(
            "{url} sent content whose sha256 is {}",
            staged.received.sha256
        ));
    }
    app.blobs
        .commit(staged)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    Ok(())
}

/// The file of blob `sha256`, which this manager's store refers to: in place, adopted from an
/// incoming copy, or fetched from a peer.
pub async fn ensure_local(app: &Replicas, sha256: &str) -> Result<PathBuf, String> {
    let path = app.blobs.path(sha256);
    if app.blobs.has(sha256) {
        return Ok(path);
    }
    let lock = app.blobs.fetch_lock(sha256);
    let _one = lock.lock().await;
    if app.blobs.has(sha256) {
        return Ok(path);
    }
    // The store refers to the blob, so GC keeps it once in place: no commit guard needed.
    if app
        .blobs
        .adopt(sha256)
        .await
        .map_err(|e| format!("adopting {sha256}: {e}"))?
    {
        return Ok(path);
    }
    let (peers, _, _) = others(app);
    let mut errors = Vec::new();
    for (id, member, _) in peers {
        match fetch_one(app, &member.raft_addr, sha256).await {
            Ok(()) => {
                app.metrics.blob_fetches.inc();
                tracing::info!(peer = id, sha256, "fetched a missing blob from a peer");
                return Ok(path);
            }
            Err(e) => errors.push(e),
        }
    }
    Err(if errors.is_empty() {
        "no other manager to fetch it from".to_string()
    } else {
        errors.join("; ")
    })
}

/// Makes sure every blob the store refers to is here; runs on every manager.
pub async fn sync_loop(
    app: Replicas,
    store: Arc<Store>,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(SYNC_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = hub.blob_sync_wanted() => {}
            _ = shutdown.cancelled() => return,
        }
        sync_once(&app, &store, &shutdown).await;
    }
}

async fn sync_once(app: &Replicas, store: &Arc<Store>, shutdown: &CancellationToken) {
    let referenced = match state::read(store, |s| s.referenced_blobs()).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "blob sync: cannot read the package versions");
            return;
        }
    };
    let missing: Vec<String> = referenced
        .into_iter()
        .filter(|sha| !app.blobs.has(sha))
        .collect();
    let mut left = missing.len();
    app.metrics.blobs_missing.set(left as i64);
    for sha in missing {
        if shutdown.is_cancelled() {
            return;
        }
        match ensure_local(app, &sha).await {
            Ok(_) => left -= 1,
            Err(e) => {
                tracing::warn!(sha256 = %sha, error = %e, "a package blob is missing here and no peer could send it yet")
            }
        }
        app.metrics.blobs_missing.set(left as i64);
    }
}

/// The blob transfer routes, merged into the raft listener's router (whatever its state `S`) and
/// served behind its peer authentication.
pub fn routes<S: Clone + Send + Sync + 'static>(replicas: Replicas) -> axum::Router<S> {
    axum::Router::new()
        .route(
            "/raft/blobs/{sha256}",
            axum::routing::get(serve_blob).put(receive_blob),
        )
        .with_state(replicas)
}

fn check_sha(sha256: &str) -> Result<(), PeerRefusal> {
    if is_blob_name(sha256) {
        Ok(())
    } else {
        Err(PeerRefusal::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("{sha256:?} is not a sha256"),
        ))
    }
}

/// `PUT /raft/blobs/<sha256>`: a peer's copy, verified against its name and kept incoming.
pub async fn receive_blob(
    State(app): State<Replicas>,
    Path(sha256): Path<String>,
    req: Request,
) -> Result<Json<serde_json::Value>, PeerRefusal> {
    check_sha(&sha256)?;
    let staged = app
        .blobs
        .receive(
            req.into_body().into_data_stream(),
            app.max_bytes,
            app.stall_timeout,
        )
        .await
        .map_err(|e| {
            let status = match e {
                ReceiveError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                ReceiveError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            PeerRefusal::new(status, code::FAILED, e.to_string())
        })?;
    if staged.received.sha256 != sha256 {
        return Err(PeerRefusal::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!(
                "the content's sha256 is {}, not {sha256}",
                staged.received.sha256
            ),
        ));
    }
    if !app.blobs.has(&sha256) {
        app.blobs.commit_incoming(staged).await.map_err(|e| {
            PeerRefusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                code::FAILED,
                e.to_string(),
            )
        })?;
    }
    Ok(Json(serde_json::json!({})))
}

/// `GET /raft/blobs/<sha256>`: a blob this manager holds, in place or incoming.
pub async fn serve_blob(
    State(app): State<Replicas>,
    Path(sha256): Path<String>,
) -> Result<Response, PeerRefusal> {
    check_sha(&sha256)?;
    let missing = || {
        PeerRefusal::new(
            StatusCode::NOT_FOUND,
            code::NO_BLOB,
            format!("blob {sha256} is not on this manager"),
        )
    };
    let path = app.blobs.find(&sha256).ok_or_else(missing)?;
    let file = tokio::fs::File::open(&path).await.map_err(|_| missing())?;
    let size = file
        .metadata()
        .await
        .map_err(|e| {
            PeerRefusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                code::FAILED,
                e.to_string(),
            )
        })?
        .len();
    let mut resp = Response::new(Body::from_stream(
        tokio_util::io::ReaderStream::with_capacity(file, 256 << 10),
    ));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, header::HeaderValue::from(size));
    Ok(resp)
}
