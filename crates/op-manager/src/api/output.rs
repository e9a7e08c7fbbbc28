//! A run's output beyond the tail stored with its record: `GET /v1/runs/{id}/output`.
//!
//! The full output lives in a file on the agent, and agents take no inbound connections. So the
//! reader's manager hands an output request to the member the node's agent syncs with
//! (`crate::output`): to itself when it holds the node's sync, which wakes the parked sync
//! with just the request, else over the raft listener (`POST /raft/output`, authenticated like
//! every peer request) to the member that last said it holds the node, or to every other member
//! when none did or that one no longer does; each queues it for the node's next sync, and the
//! agent answers a request it receives twice once. The agent reads its
//! file from the requested offset and posts the piece to `POST /v1/agent/output` on the member
//! named in `reply_to`, which hands it to the waiting reader. Neither the request nor the bytes
//! pass through raft, and a request is forgotten when its reader stops waiting.
//!
//! The answer is the raw bytes (`application/octet-stream`) with `x-op-offset`,
//! `x-op-next-offset`, `x-op-size` and `x-op-finished` headers; `agentcli logs --follow` asks
//! again from `x-op-next-offset` until the run has finished and everything was read.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use op_proto::agent::{OUTPUT_CHUNK_MAX, OutputChunk};
use serde::Deserialize;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery};
use crate::app::App;
use crate::auth::Caller;
use crate::output::OutputRequest;
use crate::raft::messages::{ForwardedOutputAnswer, ForwardedOutputRequest};

/// Longest a reader may wait for the agent.
const MAX_WAIT_SECS: u64 = 30;
const DEFAULT_WAIT_SECS: u64 = 10;
/// Longest a forward to another member may take; the reader does not wait for it.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputQuery {
    #[serde(default)]
    offset: u64,
    /// Seconds to wait for the agent.
    #[serde(default)]
    wait: Option<u64>,
    /// The node the reader saw running the run: used when the manager knows the run from
    /// neither its record (not delivered yet) nor a heartbeat (the run just ended).
    #[serde(default)]
    node: Option<Uuid>,
}

pub async fn read(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<OutputQuery>,
) -> Result<Response, ApiError> {
    let run_id = Uuid::parse_str(&id)
        .map_err(|_| ApiError::bad("invalid_run_id", format!("{id:?} is not a run id (a UUID)")))?;
    let hidden = || ApiError::NotFound(format!("no run with id {run_id}"));
    let node_id = match app.read(move |s| s.run(run_id)).await? {
        Some(r) if !caller.sees_job(&r.job) => return Err(hidden()),
        Some(r) => r.node_id,
        // A policy token reads the output of its own jobs' runs, once recorded.
        None if caller.policy.is_some() => return Err(hidden()),
        None => {
            // Still running: only the heartbeats know where.
            let mut nodes = app.read(|s| s.nodes()).await?;
            app.beats.overlay(&mut nodes);
            nodes
                .iter()
                .find(|n| n.running.iter().any(|r| r.run_id == run_id))
                .map(|n| n.node_id)
                .or(q.node.filter(|id| nodes.iter().any(|n| n.node_id == *id)))
                .ok_or_else(|| ApiError::NotFound(format!("no run with id {run_id}")))?
        }
    };
    let wait = Duration::from_secs(q.wait.unwrap_or(DEFAULT_WAIT_SECS).clamp(1, MAX_WAIT_SECS));
    let request = OutputRequest {
        request_id: Uuid::now_v7(),
        node_id,
        run_id,
        offset: q.offset,
        reply_to: app.api_url.clone(),
    };
    // Dropped when this handler ends, however it ends: the reader and its request are forgotten.
    let mut waiter = app.outputs.wait_for(&request);
    if !app.outputs.holds(node_id) {
        forward(&app, &request, wait);
    }
    // Queued here too when the node syncs elsewhere: its agent may be moving to this member.
    app.outputs.offer(request, wait);
    let chunk = waiter.answer(wait, app.shutdown.cancelled()).await;
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

/// Hands `request`, in the background, to the member the node was last found syncing with, or,
/// when none is known or that member no longer holds the node, to every other member (the one
/// the node syncs with queues it for its next sync; the others forget it when `wait` has
/// passed). The member that answers it holds the node is where the node's next request goes.
fn forward(app: &Arc<App>, request: &OutputRequest, wait: Duration) {
    let body = ForwardedOutputRequest {
        request: request.clone(),
        wait_ms: wait.as_millis() as u64,
    };
    let app = app.clone();
    tokio::spawn(async move {
        let known = app.outputs.member_of(body.request.node_id);
        if let Some(base) = &known
            && send(&app, base, &body).await
        {
            return;
        }
        let others: Vec<String> = {
            let metrics = app.raft.metrics();
            let m = metrics.borrow();
            m.membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != m.id)
                .map(|(_, member)| member.raft_addr.clone())
                .filter(|base| Some(base) != known.as_ref())
                .collect()
        };
        futures_util::future::join_all(others.iter().map(|base| send(&app, base, &body))).await;
    });
}

/// Forwards one request to the member at `base`; true when that member holds the node's sync.
async fn send(app: &App, base: &str, body: &ForwardedOutputRequest) -> bool {
    let node = body.request.node_id;
    let answer = app
        .cluster
        .peers
        .post::<_, ForwardedOutputAnswer>(base, "/raft/output", body, FORWARD_TIMEOUT)
        .await;
    let held = match answer {
        Ok(a) => a.held,
        Err(e) => {
            tracing::debug!(member = %base, error = %e, "output request not forwarded");
            false
        }
    };
    app.outputs.learn_member(node, base, held);
    held
}
