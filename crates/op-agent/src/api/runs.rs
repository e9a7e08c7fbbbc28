//! Run records and their output: `GET /v1/runs`, `/v1/runs/{id}`, `/v1/runs/{id}/output`.
//!
//! A run in progress is answered from the executor (status `running`); a finished one from the
//! state database's history. The output endpoint streams the run's full log file.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use op_proto::RunRecord;
use op_proto::local::LocalRunQuery;
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use crate::executor::run_log_path;

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 1000;

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::BadRequest(format!("{id:?} is not a run id")))
}

async fn find(state: &AppState, id: Uuid) -> Result<RunRecord, ApiError> {
    if let Some(handle) = state.0.executor.get(id) {
        return Ok(handle.snapshot());
    }
    state
        .0
        .state
        .get_run(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("run {id} is not known to this agent")))
}

pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunRecord>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(find(&state, id).await?))
}

pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<LocalRunQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<RunRecord>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT) as usize;
    let mut runs = state
        .0
        .state
        .list_runs(q.job.filter(|j| !j.is_empty()), limit)
        .await?;
    for r in runs.iter_mut() {
        if let Some(h) = state.0.executor.get(r.run_id) {
            *r = h.snapshot();
        }
    }
    Ok(Json(runs))
}

pub async fn output(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let record = find(&state, id).await?;
    let path = run_log_path(&state.0.log_dir, &record.job, id);
    let body = match tokio::fs::File::open(&path).await {
        Ok(file) => Body::from_stream(tokio_util::io::ReaderStream::new(file)),
        // The file is created at the first output: a run that wrote nothing (yet) has none.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && crate::executor::logs::no_output_yet(&record) =>
        {
            Body::empty()
        }
        Err(_) => {
            return Err(ApiError::NotFound(format!(
                "the output file of run {id} is gone (removed by log retention, or never written)"
            )));
        }
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}
