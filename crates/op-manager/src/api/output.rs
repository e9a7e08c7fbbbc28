//! A run's output beyond the tail stored with its record: `GET /v1/runs/{id}/output`.
//!
//! The full output lives in a file on the agent, and agents take no inbound connections. So the
//! reader's manager writes a `RequestOutput` command (through raft, so whichever member the agent
//! syncs with hands it out as a directive) naming itself as `reply_to`; the agent reads its file
//! from the requested offset and posts the piece to `POST /v1/agent/output` on that member, which
//! hands it to the waiting reader. The bytes never pass through raft.
//!
//! The answer is the raw bytes (`application/octet-stream`) with `x-op-offset`,
//! `x-op-next-offset`, `x-op-size` and `x-op-finished` headers; `agentcli logs --follow` asks
//! again from `x-op-next-offset` until the run has finished and everything was read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::Utc;
use op_proto::agent::{OUTPUT_CHUNK_MAX, OutputChunk};
use op_store::Command;
use serde::Deserialize;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery};
use crate::app::App;
use crate::auth::Caller;

/// Longest a reader may wait for the agent.
const MAX_WAIT_SECS: u64 = 30;
const DEFAULT_WAIT_SECS: u64 = 10;

/// Readers waiting for an agent's answer, by request id.
#[derive(Debug, Default)]
pub struct OutputWaiters(Mutex<HashMap<Uuid, (Uuid, oneshot::Sender<OutputChunk>)>>);

impl OutputWaiters {
    fn add(&self, request_id: Uuid, node_id: Uuid) -> oneshot::Receiver<OutputChunk> {
        let (tx, rx) = oneshot::channel();
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(request_id, (node_id, tx));
        rx
    }

    fn remove(&self, request_id: Uuid) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&request_id);
    }

    /// Hands `chunk` to its reader; false when nobody waits for it (any more).
    fn deliver(&self, chunk: OutputChunk) -> bool {
        let waiter = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&chunk.request_id);
        match waiter {
            // Only the node that was asked may answer.
            Some((node, tx)) if node == chunk.node_id => tx.send(chunk).is_ok(),
            Some(other) => {
                self.0
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(chunk.request_id, other);
                false
            }
            None => false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputQuery {
    #[serde(default)]
    offset: u64,
    /// Seconds to wait for the agent.
    #[serde(default)]
    wait: Option<u64>,
}

pub async fn read(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<OutputQuery>,
) -> Result<Response, ApiError> {
    let run_id = Uuid::parse_str(&id)
        .map_err(|_| ApiError::bad("invalid_run_id", format!("{id:?} is not a run id (a UUID)")))?;
    let node_id = match app.read(move |s| s.run(run_id)).await? {
        Some(r) => r.node_id,
        None => {
            // Still running: only the heartbeats know where.
            let mut nodes = app.read(|s| s.nodes()).await?;
            app.beats.overlay(&mut nodes);
            nodes
                .iter()
                .find(|n| n.running.iter().any(|r| r.run_id == run_id))
                .map(|n| n.node_id)
                .ok_or_else(|| ApiError::NotFound(format!("no run with id {run_id}")))?
        }
    };
    let wait = Duration::from_secs(q.wait.unwrap_or(DEFAULT_WAIT_SECS).clamp(1, MAX_WAIT_SECS));
    let request_id = Uuid::now_v7();
    let answer = app.outputs.add(request_id, node_id);
    let written = app
        .write(Command::RequestOutput {
            request_id,
            node_id,
            run_id,
            offset: q.offset,
            reply_to: app.api_url.clone(),
            at: Utc::now(),
        })
        .await;
    if let Err(e) = written {
        app.outputs.remove(request_id);
        return Err(e.into());
    }
    let chunk = tokio::select! {
        c = answer => c.ok(),
        _ = tokio::time::sleep(wait) => None,
        _ = app.shutdown.cancelled() => None,
    };
    app.outputs.remove(request_id);
    let Some(chunk) = chunk else {
        return Err(ApiError::Unavailable(format!(
            "the agent holding run {run_id} did not send its output within {}s (is it connected?)",
            wait.as_secs()
        )));
    };
    if let Some(e) = chunk.error {
        return Err(ApiError::NotFound(format!("output of run {run_id}: {e}")));
    }
    let data = base64::engine::general_purpose::STANDARD
        .decode(chunk.data.as_bytes())
        .map_err(|_| ApiError::Unavailable("the agent sent undecodable output".into()))?;
    let mut headers = HeaderMap::new();
    let num = |v: u64| HeaderValue::from_str(&v.to_string()).expect("digits are a valid header");
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert("x-op-offset", num(chunk.offset));
    headers.insert("x-op-next-offset", num(chunk.offset + data.len() as u64));
    headers.insert("x-op-size", num(chunk.size));
    headers.insert(
        "x-op-finished",
        HeaderValue::from_static(if chunk.finished { "true" } else { "false" }),
    );
    Ok((StatusCode::OK, headers, data).into_response())
}

/// `POST /v1/agent/output`: an agent answers an output request.
pub async fn upload(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiJson(chunk): ApiJson<OutputChunk>,
) -> Result<StatusCode, ApiError> {
    caller.speaks_for(chunk.node_id)?;
    // base64 grows 4/3; a bit more for the padding.
    if chunk.data.len() > OUTPUT_CHUNK_MAX / 3 * 4 + 8 {
        return Err(ApiError::bad(
            "invalid_chunk",
            format!("an output chunk holds at most {OUTPUT_CHUNK_MAX} bytes"),
        ));
    }
    if app.outputs.deliver(chunk) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(
            "nobody waits for this output (any more)".into(),
        ))
    }
}
