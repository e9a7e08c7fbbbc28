//! The agent's HTTP API: routes and shared state. Handlers live one topic per file.
//!
//! | route | file |
//! |---|---|
//! | `POST /api/opAgent` (the seed's call) | [`seed`] |
//! | `POST /v1/jobs/{name}/run` | [`jobs`] |
//! | `GET /v1/runs`, `/v1/runs/{id}`, `/v1/runs/{id}/output` | [`runs`] |
//! | `GET /v1/status`, `/v1/version`, `/metrics`, `/healthz` | [`status`] |
//!
//! | `GET /v1/peer/packages/{name}/{version}/chunks/{k}` (other agents, by ticket) | [`peers`] |
//!
//! Every route but `/healthz` and the peer route (checked by ticket) sits behind [`auth::require`].

pub mod auth;
pub mod error;
mod jobs;
pub mod peers;
mod runs;
mod seed;
mod status;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::executor::Executor;
use crate::invoke::Invoker;
use crate::metrics::Metrics;
use crate::state::StateStore;

/// Largest request body: 64 parameters of 32 KiB each fit with room to spare.
const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Facts about this agent shown by `/v1/status`.
#[derive(Debug, Clone)]
pub struct AgentFacts {
    pub node_id: Uuid,
    pub hostname: String,
    pub ips: Vec<IpAddr>,
    pub labels: BTreeMap<String, String>,
    pub managers: Vec<String>,
    pub mode: String,
    pub started_at: DateTime<Utc>,
}

pub struct AppInner {
    pub invoker: Invoker,
    pub executor: Executor,
    pub state: StateStore,
    pub metrics: Metrics,
    pub credentials: auth::Credentials,
    /// Failed authentications per client address (the same limits as the manager's).
    pub auth_failures: op_tls::auth_failures::FailureLimiter,
    pub facts: AgentFacts,
    pub log_dir: PathBuf,
    /// Chunks served to peers (`--peer-serve`); None when off.
    pub peers: Option<Arc<crate::deploy::peers::PeerShare>>,
}

/// Shared by every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState(pub Arc<AppInner>);

pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/api/opAgent", post(seed::op_agent))
        .route("/v1/jobs/{name}/run", post(jobs::run_job))
        .route("/v1/runs", get(runs::list))
        .route("/v1/runs/{id}", get(runs::get_one))
        .route("/v1/runs/{id}/output", get(runs::output))
        .route("/v1/status", get(status::status))
        .route("/v1/version", get(status::version))
        .route("/metrics", get(status::metrics))
        .route_layer(axum::middleware::from_fn(check_api_version))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ));
    Router::new()
        .merge(protected)
        .route("/healthz", get(status::healthz))
        // Checked by ticket, not by the API credential (another node calls it).
        .route(
            "/v1/peer/packages/{name}/{version}/chunks/{k}",
            get(peers::chunk),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// A client that says which API version it speaks (`x-op-api-version`) must speak ours; one
/// that says nothing (curl, the seed's callers) is served.
async fn check_api_version(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let theirs = req
        .headers()
        .get(op_proto::API_VERSION_HEADER)
        .map(|v| v.to_str().unwrap_or("").trim().to_string());
    match theirs {
        Some(v) if v != op_proto::API_VERSION.to_string() => error::ApiError::BadRequest(format!(
            "client speaks API version {v:?}; this agent speaks version {}",
            op_proto::API_VERSION
        ))
        .into_response(),
        _ => next.run(req).await,
    }
}

/// Decodes a JSON object whose values become parameter strings. Numbers and booleans are taken
/// as their text (`3306` and `"3306"` are the same parameter); nested values are refused.
pub(crate) fn params_from(
    map: serde_json::Map<String, serde_json::Value>,
) -> Result<BTreeMap<String, String>, error::ApiError> {
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let text = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            other => {
                return Err(error::ApiError::BadRequest(format!(
                    "parameter {k:?} must be a string, number or boolean, not {}",
                    match other {
                        serde_json::Value::Null => "null",
                        serde_json::Value::Array(_) => "an array",
                        _ => "an object",
                    }
                )));
            }
        };
        out.insert(k, text);
    }
    Ok(out)
}

/// Parses a request body as a JSON object (an empty body is an empty object).
pub(crate) fn json_object(
    body: &[u8],
) -> Result<serde_json::Map<String, serde_json::Value>, error::ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(error::ApiError::BadRequest(
            "the body must be a JSON object".into(),
        )),
        Err(e) => Err(error::ApiError::BadRequest(format!(
            "the body is not valid JSON: {e}"
        ))),
    }
}
