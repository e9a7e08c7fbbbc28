//! Fan-out invocations: `POST /v1/jobs/NAME/run` (a saved job with parameters), `POST /v1/exec`
//! (an ad-hoc command), `GET /v1/invocations[/ID]`, `POST /v1/invocations/ID/cancel`,
//! `POST /v1/invocations/ID/retry` (the same run again on the hosts that did not succeed).
//!
//! A run is checked completely before anything is written: the job exists and is enabled, the
//! parameters fit it (`op_proto::params`, the same check the agent applies), the options are in
//! range, and the selection names at least one host. Then the targets (the Ready nodes selected,
//! each with a fresh run id) and the first release become one `CreateInvocation` command; the
//! rest of the rollout is the leader's driver (`fanout::driver`). With `wait` the answer streams
//! NDJSON (`fanout::stream`); without, it is 202 with the invocation id.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use op_proto::JobSpec;
use op_proto::hosts::HostSelector;
use op_proto::invoke::{
    ADHOC_JOB, DEFAULT_DEADLINE_SECS, HostStatus, InvocationAccepted, InvocationBrief,
    InvocationKind, InvocationOptions, InvocationQuery, InvocationState, InvocationView,
    InvokeRequest, MAX_WAIT_SECS, RetryRequest, Selection,
};
use op_proto::params;
use op_store::{Command, NewInvocation, NewTarget};
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery};
use super::jobs::check_name;
use crate::app::App;
use crate::auth::Caller;
use crate::fanout::plan::{self, Host};
use crate::fanout::{results, stream, targets};

/// What differs between a job run and an exec once the request is checked.
struct Prepared {
    kind: InvocationKind,
    spec: JobSpec,
    revision: u64,
    selection: Selection,
    /// A job run with an explicit selection is also bounded by the job's own.
    job_selector: Option<HostSelector>,
    wait: bool,
    /// The invocation a retry re-runs.
    retry_of: Option<Uuid>,
}

pub async fn run_job(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<InvokeRequest>,
) -> Result<Response, ApiError> {
    let started = tokio::time::Instant::now();
    check_name(&name)?;
    for (field, given) in [
        ("command", req.command.is_some()),
        ("timeout", req.timeout.is_some()),
        ("run_as", req.run_as.is_some()),
    ] {
        if given {
            return Err(ApiError::bad(
                "invalid_request",
                format!("`{field}` belongs to POST /v1/exec; a job runs its own Command"),
            ));
        }
    }
    let n = name.clone();
    let job = app
        .read(move |s| s.job(&n))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job named {name:?}")))?;
    if !job.spec.enabled {
        return Err(ApiError::Conflict(format!(
            "job {name:?} is disabled (Enabled: 0); enable it before running it"
        )));
    }
    // The same check the agent makes, before anything is sent anywhere.
    params::substitute(&job.spec.command, &job.spec.params, &req.params)
        .map_err(|e| ApiError::bad("invalid_params", e.to_string()))?;
    let (selection, job_selector) = if req.has_selection() {
        (selection_of(&req)?, Some(job.spec.selector()))
    } else {
        (targets::of_job(&job.spec.selector()), None)
    };
    let prepared = Prepared {
        kind: InvocationKind::Job,
        wait: req.wait.unwrap_or(job.spec.syn_flag),
        spec: job.spec,
        revision: job.revision,
        selection,
        job_selector,
        retry_of: None,
    };
    start(app, caller, req, prepared, started).await
}

pub async fn exec(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<InvokeRequest>,
) -> Result<Response, ApiError> {
    let started = tokio::time::Instant::now();
    let command = req.command.clone().unwrap_or_default();
    if command.trim().is_empty() {
        return Err(ApiError::bad(
            "invalid_request",
            "`command` is required: the command to run on every selected host",
        ));
    }
    if !req.params.is_empty() {
        return Err(ApiError::bad(
            "invalid_request",
            "`params` belong to a saved job (POST /v1/jobs/NAME/run); an exec runs its command as written",
        ));
    }
    if !req.has_selection() {
        return Err(ApiError::bad(
            "no_selection",
            "select hosts: `hosts`, `white`, `labels` or `all: true`",
        ));
    }
    // Built through the task-file form, so the command, timeout and user get the same checks as
    // a saved job's.
    let mut task = serde_json::json!({
        "JobName": ADHOC_JOB,
        "Command": command,
        "Timeout": req.timeout.unwrap_or(0),
        "Concurrency": "allow",
    });
    if let Some(user) = &req.run_as {
        task["RunAs"] = user.clone().into();
    }
    let spec = JobSpec::from_task_value(&task).map_err(|e| ApiError::InvalidJob {
        message: format!("invalid command: {e}"),
        details: e.messages(),
    })?;
    let prepared = Prepared {
        kind: InvocationKind::Exec,
        spec,
        revision: 0,
        selection: selection_of(&req)?,
        job_selector: None,
        wait: req.wait.unwrap_or(true),
        retry_of: None,
    };
    start(app, caller, req, prepared, started).await
}

fn selection_of(req: &InvokeRequest) -> Result<Selection, ApiError> {
    Selection::from_request(req).map_err(|e| ApiError::bad("invalid_selection", e))
}

fn options_of(req: &InvokeRequest, spec: &JobSpec) -> Result<InvocationOptions, ApiError> {
    let bad = |m: String| ApiError::bad("invalid_options", m);
    let deadline = req
        .deadline
        .unwrap_or(DEFAULT_DEADLINE_SECS + spec.timeout_secs);
    if deadline == 0 || deadline > MAX_WAIT_SECS {
        return Err(bad(format!("deadline must be 1..={MAX_WAIT_SECS} seconds")));
    }
    let batch_wait = req.batch_wait.unwrap_or(0);
    if batch_wait > MAX_WAIT_SECS {
        return Err(bad(format!(
            "batch_wait must be at most {MAX_WAIT_SECS} seconds"
        )));
    }
    if req.max_concurrency == Some(0) {
        return Err(bad("max_concurrency must be at least 1".into()));
    }
    if req.max_failures == Some(0) {
        return Err(bad(
            "max_failures must be at least 1 (stop after that many failed hosts)".into(),
        ));
    }
    Ok(InvocationOptions {
        max_concurrency: req.max_concurrency,
        batch: req.batch,
        batch_hosts: None,
        batch_wait_secs: batch_wait,
        max_failures: req.max_failures,
        deadline_secs: deadline,
        ack_secs: None,
    })
}

async fn start(
    app: Arc<App>,
    caller: Caller,
    req: InvokeRequest,
    p: Prepared,
    started: tokio::time::Instant,
) -> Result<Response, ApiError> {
    let mut options = options_of(&req, &p.spec)?;
    // Acknowledgement time: the manager's setting, fixed in the invocation so every leader
    // judges it alike (0 s: none asked).
    let ack = app.config.directive_ack_timeout;
    options.ack_secs = (!ack.is_zero()).then(|| ack.as_secs().max(1));
    let nodes = app.read(|s| s.nodes()).await?;
    let mut selected = targets::select(&nodes, &p.selection, p.job_selector.as_ref())
        .map_err(|e| ApiError::bad("excluded_host", e))?;
    // A policy token runs only on the hosts it may target; the others are named in the answer.
    let (allowed, refused): (Vec<_>, Vec<_>) = std::mem::take(&mut selected.targets)
        .into_iter()
        .partition(|n| caller.reaches_host(&n.identity()));
    selected.targets = allowed;
    let refused: Vec<String> = refused.into_iter().map(|n| n.hostname).collect();
    if selected.targets.is_empty() && !refused.is_empty() {
        return Err(ApiError::Denied(format!(
            "token {:?} may not target any selected host: refused {}",
            caller.name,
            refused.join(", ")
        )));
    }
    if selected.targets.is_empty() && selected.unreachable.is_empty() {
        return Err(ApiError::bad(
            "no_hosts",
            "no host matches the selection (see `agentcli get nodes`)",
        ));
    }
    let per_batch = options
        .batch
        .map(|b| b.hosts(selected.targets.len()).max(1));
    options.batch_hosts = per_batch.map(|n| n as u32);
    let id = Uuid::now_v7();
    let new_targets: Vec<NewTarget> = selected
        .targets
        .iter()
        .enumerate()
        .map(|(i, n)| NewTarget {
            node_id: n.node_id,
            hostname: n.hostname.clone(),
            ips: n.ips.clone(),
            run_id: Uuid::now_v7(),
            batch: per_batch.map_or(0, |b| (i / b) as u32),
        })
        .collect();
    let now = Utc::now();
    let fresh: Vec<Host> = new_targets
        .iter()
        .map(|t| Host {
            run_id: t.run_id,
            batch: t.batch,
            status: op_proto::invoke::HostStatus::Pending,
            not_after: None,
            ack_by: None,
            finished_at: None,
        })
        .collect();
    let release = plan::decide(&options, &fresh, false, now).release;
    let batches = new_targets.iter().map(|t| t.batch + 1).max().unwrap_or(0);
    let accepted = InvocationAccepted {
        invocation_id: id,
        job: p.spec.name.clone(),
        kind: p.kind,
        hosts: new_targets.iter().map(|t| t.hostname.clone()).collect(),
        unreachable: selected
            .unreachable
            .iter()
            .map(|m| m.host.clone())
            .collect(),
        batches,
        url: format!("/v1/invocations/{id}"),
        refused,
    };
    app.write(Command::CreateInvocation {
        invocation: Box::new(NewInvocation {
            id,
            kind: p.kind,
            spec: p.spec,
            revision: p.revision,
            params: req.params,
            options,
            targets: new_targets,
            unreachable: selected.unreachable,
            release,
            retry_of: p.retry_of,
            fire: None,
        }),
        at: now,
        actor: caller.name,
    })
    .await?;
    if p.wait {
        Ok(stream::respond(app, accepted, started))
    } else {
        Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
    }
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| {
        ApiError::bad(
            "invalid_invocation_id",
            format!("{id:?} is not an invocation id (a UUID)"),
        )
    })
}

async fn load_view(app: &App, id: Uuid) -> Result<InvocationView, ApiError> {
    let (row, targets) = app
        .read(move |s| s.invocation(id, true))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no invocation {id}")))?;
    Ok(results::view(&row, &targets))
}

pub async fn get(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<InvocationView>, ApiError> {
    let view = load_view(&app, parse_id(&id)?).await?;
    if !sees_invocation(&caller, &view.job, view.kind, &view.created_by) {
        return Err(ApiError::NotFound(format!("no invocation {id}")));
    }
    Ok(Json(view))
}

/// A policy token sees the invocations of its jobs, and the execs it started itself.
fn sees_invocation(caller: &Caller, job: &str, kind: InvocationKind, by: &str) -> bool {
    caller.sees_job(job)
        || (caller.policy.is_some() && kind == InvocationKind::Exec && by == caller.name)
}

pub async fn list(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<InvocationQuery>,
) -> Result<Json<Vec<InvocationBrief>>, ApiError> {
    if q.limit == Some(0) || q.limit.is_some_and(|l| l > op_store::MAX_INVOCATION_LIMIT) {
        return Err(ApiError::bad(
            "invalid_query",
            format!("limit must be 1..={}", op_store::MAX_INVOCATION_LIMIT),
        ));
    }
    let rows = app.read(move |s| s.invocations(&q)).await?;
    Ok(Json(
        rows.into_iter()
            .filter(|(row, _)| sees_invocation(&caller, &row.job, row.kind, &row.created_by))
            .map(|(row, statuses)| {
                let mut summary = op_proto::invoke::Summary::count(
                    row.id,
                    &row.job,
                    row.detail
                        .unreachable
                        .iter()
                        .map(|_| op_proto::invoke::HostStatus::Unreachable)
                        .chain(statuses),
                );
                summary.stopped = row.stopped.clone();
                InvocationBrief {
                    invocation_id: row.id,
                    job: row.job,
                    kind: row.kind,
                    state: row.state,
                    created_at: row.created_at,
                    created_by: row.created_by,
                    finished_at: row.finished_at,
                    summary,
                }
            })
            .collect(),
    ))
}

pub async fn cancel(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<InvocationView>, ApiError> {
    let id = parse_id(&id)?;
    if caller.policy.is_some() {
        let view = load_view(&app, id).await?;
        if !sees_invocation(&caller, &view.job, view.kind, &view.created_by) {
            return Err(ApiError::NotFound(format!("no invocation {id}")));
        }
    }
    app.write(Command::CancelInvocation {
        id,
        at: Utc::now(),
        actor: caller.name,
    })
    .await?;
    Ok(Json(load_view(&app, id).await?))
}

/// `POST /v1/invocations/ID/retry`: a new invocation with the old one's job (same revision) or
/// command, parameters and rollout options, on the hosts that ended with one of the asked
/// statuses. The hosts are named by hostname (or as listed, for those that matched no node), so
/// one that is gone or not Ready now is reported `unreachable` like in any fan-out. A job saved
/// since is refused by the store (409), as for any run prepared against an older revision.
pub async fn retry(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RetryRequest>,
) -> Result<Response, ApiError> {
    let started = tokio::time::Instant::now();
    let id = parse_id(&id)?;
    if let Some(bad) = body
        .statuses
        .iter()
        .find(|s| !s.is_final() || **s == HostStatus::Ok)
    {
        return Err(ApiError::bad(
            "invalid_request",
            format!(
                "cannot retry hosts that are {}: name final statuses that did not succeed \
                 (failed, timeout, killed, skipped, lost, unreachable, unresponsive, cancelled)",
                bad.as_str()
            ),
        ));
    }
    let (row, old_targets) = app
        .read(move |s| s.invocation(id, false))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no invocation {id}")))?;
    if !sees_invocation(&caller, &row.job, row.kind, &row.created_by) {
        return Err(ApiError::NotFound(format!("no invocation {id}")));
    }
    if row.state != InvocationState::Finished {
        return Err(ApiError::Conflict(format!(
            "invocation {id} is still running; wait for it to finish (or cancel it) before retrying its hosts"
        )));
    }
    let mut hosts: Vec<String> = Vec::new();
    if body.selects(HostStatus::Unreachable) {
        hosts.extend(row.detail.unreachable.iter().map(|m| m.host.clone()));
    }
    hosts.extend(
        old_targets
            .iter()
            .filter(|t| body.selects(t.status))
            .map(|t| t.hostname.clone()),
    );
    hosts.dedup();
    let named: Vec<op_proto::HostPattern> = hosts
        .iter()
        .filter_map(|h| op_proto::HostPattern::parse(h).ok())
        .filter(op_proto::HostPattern::is_specific)
        .collect();
    if named.is_empty() {
        let wanted = if body.statuses.is_empty() {
            "did not succeed".to_string()
        } else {
            let names: Vec<&str> = body.statuses.iter().map(|s| s.as_str()).collect();
            format!("ended {}", names.join(" or "))
        };
        return Err(ApiError::bad(
            "no_hosts",
            format!("no host of invocation {id} {wanted}; nothing to retry"),
        ));
    }
    let detail = row.detail;
    let opts = &detail.options;
    // The old options, in the form a request gives them (the batch is resolved again against
    // the hosts retried).
    let req = InvokeRequest {
        params: detail.params.clone(),
        max_concurrency: opts.max_concurrency,
        batch: opts.batch,
        batch_wait: Some(opts.batch_wait_secs),
        max_failures: opts.max_failures,
        deadline: Some(opts.deadline_secs),
        ..InvokeRequest::default()
    };
    let prepared = Prepared {
        kind: row.kind,
        spec: detail.spec,
        revision: detail.revision,
        selection: Selection {
            named,
            ..Selection::default()
        },
        job_selector: None,
        wait: body.wait.unwrap_or(true),
        retry_of: Some(id),
    };
    start(app, caller, req, prepared, started).await
}
