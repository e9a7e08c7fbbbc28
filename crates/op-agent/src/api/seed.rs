//! `POST /api/opAgent`: the seed's invocation call, exactly as its README shows it:
//!
//! ```text
//! curl -u USER:PASS http://HOST:7070/api/opAgent -d '{"jobname":"apiTest.py","host":"192.168.1.1","port":"3306"}'
//! ```
//!
//! `jobname` (any case) names the job; every other key is a parameter. The job's SynFlag decides
//! whether the call waits (1: the envelope carries the exit code and output tail) or returns the
//! run id at once (0); `?wait=true|false` overrides it. The mode is a query parameter, not a body
//! key, so no parameter name is reserved. The answer is the seed envelope
//! `{"Code":"OK"|"ERROR","Message":...,"Details":...}`: `Code` is `OK` when the call was accepted
//! and, in wait mode, the run succeeded.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use op_proto::RunStatus;
use op_proto::api::SeedEnvelope;
use op_proto::local::{InvokeQuery, SeedRunDetails};

use super::error::ApiError;
use super::{AppState, json_object, params_from};

pub async fn op_agent(
    State(state): State<AppState>,
    query: Result<Query<InvokeQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Response {
    match handle(state, query, body).await {
        Ok(resp) => resp,
        Err(e) => e.seed(),
    }
}

async fn handle(
    state: AppState,
    query: Result<Query<InvokeQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let mut map = json_object(&body)?;
    let key = map
        .keys()
        .find(|k| k.eq_ignore_ascii_case("jobname"))
        .cloned()
        .ok_or_else(|| ApiError::BadRequest("the body has no \"jobname\"".into()))?;
    let name = match map.remove(&key) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s,
        _ => {
            return Err(ApiError::BadRequest(
                "\"jobname\" must be a non-empty string".into(),
            ));
        }
    };
    let params = params_from(map)?;
    let invoked = state.0.invoker.invoke(&name, params)?;
    let wait = query.wait.unwrap_or(invoked.syn_flag);
    if !wait {
        let details = SeedRunDetails::from(&invoked.handle.snapshot());
        let message = format!("run {} of {name} started", details.run_id);
        return Ok(Json(SeedEnvelope::ok(message, to_value(&details))).into_response());
    }
    let record = invoked.handle.wait().await;
    let details = SeedRunDetails::from(record.as_ref());
    let envelope = if record.status == RunStatus::Ok {
        SeedEnvelope::ok(
            format!("run {} of {name} finished: ok", record.run_id),
            to_value(&details),
        )
    } else {
        SeedEnvelope {
            code: "ERROR".into(),
            message: format!(
                "run {} of {name} {}: {}",
                record.run_id,
                record.status.as_str(),
                record.error.as_deref().unwrap_or("")
            ),
            details: to_value(&details),
        }
    };
    Ok(Json(envelope).into_response())
}

fn to_value(details: &SeedRunDetails) -> serde_json::Value {
    serde_json::to_value(details).unwrap_or(serde_json::Value::Null)
}
