//! `GET /v1/agent/packages/{name}/{version}/chunks`: the chunk list of a version (issue 26), for
//! agents (the path is under `/v1/agent/`, so only agent tokens pass the guard). Each chunk is then
//! fetched with a `Range` request on the version's `/content` (or, later, from a peer) and checked
//! against its sha256 before it is written.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use op_proto::chunks::ChunkManifest;

use super::error::ApiError;
use crate::app::App;
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
    let m = tokio::task::spawn_blocking(move || crate::peers::load_or_compute(&blobs, &path, &sha))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(format!("chunk list of {} {}: {e}", v.name, v.version)))?;
    Ok(Json(m))
}
