//! `/v1/runs`: run records by job, host, status, time, invocation and revision, newest first,
//! optionally the latest N per node (the seed's `logs JOB HOST LIMIT`); one run by id.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use op_proto::RunRecord;
use op_proto::api::RunQuery;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::ApiQuery;
use crate::app::App;
use crate::auth::Caller;

pub async fn list(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<RunQuery>,
) -> Result<Json<Vec<RunRecord>>, ApiError> {
    if q.per_node == Some(0) || q.limit == Some(0) {
        return Err(ApiError::bad(
            "invalid_query",
            "per_node and limit must be at least 1",
        ));
    }
    if q.limit.is_some_and(|l| l > op_store::MAX_RUN_LIMIT) {
        return Err(ApiError::bad(
            "invalid_query",
            format!("limit may be at most {}", op_store::MAX_RUN_LIMIT),
        ));
    }
    let mut runs = app.read(move |s| s.runs(&q)).await?;
    // A policy token sees the runs of its jobs only.
    runs.retain(|r| caller.sees_job(&r.job));
    Ok(Json(runs))
}

pub async fn get(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<RunRecord>, ApiError> {
    let run_id = Uuid::parse_str(&id)
        .map_err(|_| ApiError::bad("invalid_run_id", format!("{id:?} is not a run id (a UUID)")))?;
    app.read(move |s| s.run(run_id))
        .await?
        .filter(|r| caller.sees_job(&r.job))
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no run with id {run_id}")))
}
