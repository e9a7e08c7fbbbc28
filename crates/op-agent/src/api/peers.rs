//! `GET /v1/peer/packages/{name}/{version}/chunks/{k}`: chunk `k` of a package version this agent
//! holds, for another agent of the fleet (issue 26, packages from peers).
//!
//! Not behind the API credential: the caller is another node, which presents instead a chunk
//! ticket its manager signed (`x-op-ticket`, checked with the fleet's ticket public key from the
//! manager's settings: signature, expiry, and that it names this version). Only versions this
//! agent downloaded, verified and still keeps are served ([`crate::deploy::peers::PeerShare`]);
//! at most [`MAX_UPLOADS`] at a time (more get 429) and under `--peer-upload-rate-limit`.
//! With `--peer-serve false`, or while the manager gave no key (peer distribution off), every
//! request is refused.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use op_proto::chunks::{CHUNK_SIZE, chunk_range};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::AppState;
use super::error::ApiError;
use crate::deploy::peers::{MAX_UPLOADS, verify_ticket};

/// The header carrying a chunk ticket.
pub const TICKET_HEADER: &str = "x-op-ticket";

pub async fn chunk(
    State(app): State<AppState>,
    Path((name, version, k)): Path<(String, u64, usize)>,
    headers: HeaderMap,
) -> Response {
    match serve(&app, &name, version, k, &headers).await {
        Ok(r) => r,
        Err(e) => {
            app.0.metrics.peer_refused();
            if let ApiError::Conflict(m) = &e {
                // At the upload cap: come back soon (or fetch elsewhere).
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, "1")],
                    m.clone(),
                )
                    .into_response();
            }
            e.into_response()
        }
    }
}

async fn serve(
    app: &AppState,
    name: &str,
    version: u64,
    k: usize,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let Some(share) = app.0.peers.clone() else {
        return Err(ApiError::NotFound(
            "this agent does not serve packages to peers (--peer-serve false)".into(),
        ));
    };
    let Some(key) = share.public_key() else {
        return Err(ApiError::Unavailable(
            "no ticket key from the manager (peer distribution is off)".into(),
        ));
    };
    let ticket = headers
        .get(TICKET_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::Unauthorized(format!("a chunk ticket ({TICKET_HEADER}) is required"))
        })?;
    let now = chrono::Utc::now().timestamp();
    verify_ticket(&key, ticket, name, version, now)
        .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    let held = share
        .held(name, version)
        .ok_or_else(|| ApiError::NotFound(format!("{name} {version} is not held here")))?;
    let (start, end) = chunk_range(held.size, CHUNK_SIZE, k)
        .ok_or_else(|| ApiError::NotFound(format!("{name} {version} has no chunk {k}")))?;
    let permit =
        share.uploads.clone().try_acquire_owned().map_err(|_| {
            ApiError::Conflict(format!("{MAX_UPLOADS} uploads to peers in progress"))
        })?;
    let path = share
        .content_path(name, version)
        .ok_or_else(|| ApiError::NotFound(format!("{name} {version} is not held here")))?;
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::NotFound(format!("{name} {version}: {e}")))?;
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let metrics = app.0.metrics.clone();
    let state = (file, end - start, share, permit, metrics);
    let body = futures_util::stream::unfold(
        state,
        |(mut file, left, share, permit, metrics)| async move {
            if left == 0 {
                return None;
            }
            let mut buf = vec![0u8; (left as usize).min(256 << 10)];
            let n = match file.read(&mut buf).await {
                Ok(0) => {
                    return Some((
                        Err(std::io::Error::other(
                            "the held copy is shorter than its size",
                        )),
                        (file, 0, share, permit, metrics),
                    ));
                }
                Ok(n) => n,
                Err(e) => return Some((Err(e), (file, 0, share, permit, metrics))),
            };
            buf.truncate(n);
            if let Some(b) = &share.bucket {
                b.take(n as u64).await;
            }
            share.count_served(n as u64);
            metrics.peer_served(n as u64);
            Some((
                Ok::<_, std::io::Error>(bytes::Bytes::from(buf)),
                (file, left - n as u64, share, permit, metrics),
            ))
        },
    );
    Ok((
        StatusCode::OK,
        [(header::CONTENT_LENGTH, (end - start).to_string())],
        Body::from_stream(body),
    )
        .into_response())
}
