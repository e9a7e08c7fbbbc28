//! `/v1/audit`: who changed what, oldest first.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use op_proto::api::AuditEntry;
use serde::Deserialize;

use super::error::ApiError;
use super::extract::ApiQuery;
use crate::app::App;

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    since: Option<DateTime<Utc>>,
    limit: Option<u32>,
}

/// A policy token that restricts jobs sees only the entries about its jobs (`job.*` actions).
pub async fn list(
    State(app): State<Arc<App>>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let limit = q.limit.unwrap_or(1000);
    let mut entries = app.read(move |s| s.audit(q.since, limit)).await?;
    if caller.policy.as_ref().is_some_and(|p| p.restricts_jobs()) {
        entries.retain(|e| e.action.starts_with("job.") && caller.sees_job(&e.target));
    }
    Ok(Json(entries))
}
