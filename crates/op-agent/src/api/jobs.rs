//! `POST /v1/jobs/{name}/run`: invoke a job with a JSON object of parameters.
//!
//! `?wait=true` answers 200 with the final `RunRecord`; `?wait=false` answers 202 with
//! `RunAccepted` (fetch the record later from `/v1/runs/{id}`). Without `wait`, the job's SynFlag
//! decides. An empty body means no parameters.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use op_proto::local::{InvokeQuery, RunAccepted};

use super::error::ApiError;
use super::{AppState, json_object, params_from};

pub async fn run_job(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<InvokeQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let params = params_from(json_object(&body)?)?;
    let invoked = state.0.invoker.invoke(&name, params)?;
    if query.wait.unwrap_or(invoked.syn_flag) {
        let record = invoked.handle.wait().await;
        return Ok(Json(record.as_ref().clone()).into_response());
    }
    let run_id = invoked.handle.run_id();
    let accepted = RunAccepted {
        run_id,
        job: name,
        status: op_proto::RunStatus::Running,
        url: format!("/v1/runs/{run_id}"),
    };
    Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
}
