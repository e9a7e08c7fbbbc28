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

pub async fn list(
    State(app): State<Arc<App>>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let limit = q.limit.unwrap_or(1000);
    Ok(Json(app.read(move |s| s.audit(q.since, limit)).await?))
}
