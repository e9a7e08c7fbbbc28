//! Agent-wide views: `/v1/status`, `/v1/version`, `/metrics` and the unauthenticated `/healthz`.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use op_proto::api::VersionInfo;
use op_proto::local::{AgentStatus, LocalJob};

use super::AppState;
use super::error::ApiError;
use crate::outbox::Outbox;

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn version() -> Json<VersionInfo> {
    Json(VersionInfo {
        version: crate::version().into(),
        api_version: op_proto::API_VERSION,
        component: "op-agent".into(),
    })
}

pub async fn status(State(state): State<AppState>) -> Result<Json<AgentStatus>, ApiError> {
    let inner = &state.0;
    let totals = Outbox::new(inner.state.clone()).totals().await?;
    inner
        .metrics
        .outbox(totals.depth, totals.bytes, totals.dropped);
    let running = inner.executor.running();
    let jobs = inner
        .invoker
        .table
        .list()
        .into_iter()
        .map(|e| LocalJob {
            name: e.spec.name.clone(),
            revision: e.revision,
            kind: e.spec.kind().into(),
            enabled: e.spec.enabled,
            selected: e.selected,
            cron_expr: e.spec.cron_expr.clone(),
            next_fire: e.next_fire,
            running: running.iter().filter(|h| h.job() == e.spec.name).count() as u32,
        })
        .collect();
    let f = &inner.facts;
    Ok(Json(AgentStatus {
        node_id: f.node_id,
        hostname: f.hostname.clone(),
        ips: f.ips.clone(),
        labels: f.labels.clone(),
        agent_version: crate::version().into(),
        api_version: op_proto::API_VERSION,
        started_at: f.started_at,
        mode: f.mode.clone(),
        managers: f.managers.clone(),
        jobs,
        running: running.iter().map(|h| h.running_run()).collect(),
        stats: inner.metrics.stats(),
        outbox_bytes: totals.bytes,
        degraded: inner.executor.health().summary(),
    }))
}

pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let t = Outbox::new(state.0.state.clone()).totals().await?;
    state.0.metrics.outbox(t.depth, t.bytes, t.dropped);
    Ok((
        [(
            header::CONTENT_TYPE,
            op_proto::exposition::PROMETHEUS_TEXT_CONTENT_TYPE,
        )],
        state.0.metrics.encode(),
    ))
}
