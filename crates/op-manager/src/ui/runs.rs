//! Runs: a filterable history (job, host, status), paginated; a page per run with its facts and
//! output; and `/ui/runs/ID/live`, which the run page's script polls to follow the output of a
//! run in progress.
//!
//! The manager stores a run when it has finished (with the tail of its output); while it runs,
//! only the agent's heartbeat names it. So a running run's page is built from the node that
//! reports it, and its output comes from the agent's log file through `GET /v1/runs/ID/output`
//! (called as the user, like every other API use of the console). Where that route cannot answer
//! (the agent is away), the stored tail is shown.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use op_proto::api::RunQuery;
use op_proto::node::RunningRun;
use op_proto::{NodeInfo, RunRecord, RunStatus};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Ui;
use super::html::{self, PER_PAGE, Section, attr, esc};
use super::session::SessionView;
use super::writes;

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    job: String,
    /// A hostname, an IP or a node id.
    #[serde(default)]
    host: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    page: Option<usize>,
}

/// A table of runs; `with_job` adds the job column.
pub fn table(runs: &[RunRecord], with_job: bool) -> String {
    if runs.is_empty() {
        return "<p class=\"muted\">No runs.</p>".into();
    }
    let mut out = String::with_capacity(runs.len() * 400);
    out.push_str("<table class=\"list runs\"><thead><tr><th>Status</th>");
    if with_job {
        out.push_str("<th>Job</th>");
    }
    out.push_str("<th>Host</th><th>Trigger</th><th>Started</th><th>Duration</th><th>Exit</th><th>Error</th></tr></thead><tbody>");
    for r in runs {
        let _ = write!(
            out,
            "<tr data-run=\"{}\"><td data-label=\"Status\"><a href=\"/ui/runs/{}\">{}</a></td>",
            r.run_id,
            r.run_id,
            html::run_status(r.status)
        );
        if with_job {
            let _ = write!(
                out,
                "<td data-label=\"Job\"><a href=\"/ui/jobs/{}\">{}</a></td>",
                html::url(&r.job),
                esc(&r.job)
            );
        }
        let exit = match (r.exit_code, r.signal) {
            (_, Some(sig)) => format!("signal {sig}"),
            (Some(c), None) => c.to_string(),
            _ => "–".into(),
        };
        let _ = write!(
            out,
            "<td data-label=\"Host\"><a href=\"/ui/nodes/{}\">{}</a></td><td data-label=\"Trigger\">{}</td>\
             <td data-label=\"Started\">{}</td><td data-label=\"Duration\">{}</td><td data-label=\"Exit\">{exit}</td>\
             <td data-label=\"Error\" class=\"clip\">{}</td></tr>",
            r.node_id,
            esc(&r.hostname),
            r.trigger.as_str(),
            html::time_opt(r.started_at.or(r.planned_at)),
            r.duration_ms()
                .map(html::duration_ms)
                .unwrap_or_else(|| "–".into()),
            esc(&error_line(r)),
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// A run's error in one line: for a failed run its reason and signature as every front end says
/// it (`op_proto::analysis`, like `agentcli logs`' ERROR column), else the agent's first line.
fn error_line(r: &RunRecord) -> String {
    if r.status.is_failure() {
        op_proto::analysis::Failure::of(r).summary()
    } else {
        r.first_error_line()
    }
}

/// Runs in progress across the fleet, from the nodes' heartbeats.
fn running<'a>(
    nodes: &'a [NodeInfo],
    job: &str,
    host: &str,
) -> Vec<(&'a NodeInfo, &'a RunningRun)> {
    let mut out: Vec<_> = nodes
        .iter()
        .filter(|n| {
            host.is_empty()
                || n.hostname == host
                || n.node_id.to_string() == host
                || n.ips.iter().any(|ip| ip.to_string() == host)
        })
        .flat_map(|n| n.running.iter().map(move |r| (n, r)))
        .filter(|(_, r)| job.is_empty() || r.job == job)
        .collect();
    out.sort_by_key(|r| std::cmp::Reverse(r.1.started_at));
    out
}

fn running_table(rows: &[(&NodeInfo, &RunningRun)]) -> String {
    let mut out = String::from(
        "<table class=\"list\"><thead><tr><th>Status</th><th>Job</th><th>Host</th><th>Trigger</th><th>Started</th></tr></thead><tbody>",
    );
    for (n, r) in rows {
        let _ = write!(
            out,
            "<tr data-run=\"{}\"><td data-label=\"Status\"><a href=\"/ui/runs/{}\">{}</a></td>\
             <td data-label=\"Job\"><a href=\"/ui/jobs/{}\">{}</a></td><td data-label=\"Host\"><a href=\"/ui/nodes/{}\">{}</a></td>\
             <td data-label=\"Trigger\">{}</td><td data-label=\"Started\">{}</td></tr>",
            r.run_id,
            r.run_id,
            html::run_status(RunStatus::Running),
            html::url(&r.job),
            esc(&r.job),
            n.node_id,
            esc(&n.hostname),
            r.trigger.as_str(),
            html::time(r.started_at)
        );
    }
    out.push_str("</tbody></table>");
    out
}

pub async fn list(
    State(ui): State<Arc<Ui>>,
    Extension(s): Extension<SessionView>,
    Query(q): Query<ListQuery>,
) -> Response {
    let page = q.page.unwrap_or(1).max(1);
    let status = RunStatus::parse(q.status.trim());
    let query = RunQuery {
        job: Some(q.job.trim().to_string()).filter(|j| !j.is_empty()),
        host: Some(q.host.trim().to_string()).filter(|h| !h.is_empty()),
        status,
        // One more than a page tells whether there is a next one.
        limit: Some(PER_PAGE as u32 + 1),
        ..RunQuery::default()
    };
    let offset = ((page - 1) * PER_PAGE) as u32;
    let want_stored = status != Some(RunStatus::Running);
    let read = ui
        .app
        .read(move |st| {
            let runs = if want_stored {
                st.runs_from(&query, offset)?
            } else {
                Vec::new()
            };
            Ok((runs, st.nodes()?))
        })
        .await;
    let (mut runs, nodes) = match read {
        Ok((r, mut n)) => {
            ui.app.beats.overlay(&mut n);
            (r, n)
        }
        Err(e) => return html::server_error(&s, e),
    };
    runs.retain(|r| s.caller.sees_job(&r.job));
    let more = runs.len() > PER_PAGE;
    runs.truncate(PER_PAGE);
    let mut body = String::with_capacity(8192 + runs.len() * 400);
    body.push_str("<h1>Runs</h1>");
    let _ = write!(
        body,
        "<form class=\"filters\" method=\"get\" action=\"/ui/runs\">\
         <input name=\"job\" value=\"{}\" placeholder=\"job\" aria-label=\"job\">\
         <input name=\"host\" value=\"{}\" placeholder=\"hostname, IP or node id\" aria-label=\"host\">\
         <select name=\"status\" aria-label=\"status\"><option value=\"\">any status</option>",
        attr(&q.job),
        attr(&q.host)
    );
    for st in [
        RunStatus::Running,
        RunStatus::Ok,
        RunStatus::Failed,
        RunStatus::Timeout,
        RunStatus::Killed,
        RunStatus::Skipped,
        RunStatus::Lost,
        RunStatus::Missed,
    ] {
        let sel = if status == Some(st) { " selected" } else { "" };
        let _ = write!(body, "<option{sel}>{}</option>", st.as_str());
    }
    body.push_str("</select><button>Filter</button></form><div id=\"runs\" data-refresh=\"5000\">");
    if page == 1 && (status.is_none() || status == Some(RunStatus::Running)) {
        let live = running(&nodes, q.job.trim(), q.host.trim());
        if !live.is_empty() || status == Some(RunStatus::Running) {
            let _ = write!(body, "<h2>Running now ({})</h2>", live.len());
            if live.is_empty() {
                body.push_str("<p class=\"muted\">Nothing is running.</p>");
            } else {
                body.push_str(&running_table(&live));
            }
        }
    }
    if want_stored {
        body.push_str("<h2>History</h2>");
        body.push_str(&table(&runs, true));
        let keep = [
            ("job", q.job.as_str()),
            ("host", q.host.as_str()),
            ("status", q.status.as_str()),
        ];
        let link = |p: usize| {
            let mut parts: Vec<String> = keep
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| format!("{k}={}", html::url(v)))
                .collect();
            parts.push(format!("page={p}"));
            format!("/ui/runs?{}", parts.join("&amp;"))
        };
        body.push_str("<nav class=\"pager\" aria-label=\"pages\">");
        if page > 1 {
            let _ = write!(
                body,
                "<a rel=\"prev\" href=\"{}\">← newer</a>",
                link(page - 1)
            );
        }
        let _ = write!(body, "<span>page {page}</span>");
        if more {
            let _ = write!(
                body,
                "<a rel=\"next\" href=\"{}\">older →</a>",
                link(page + 1)
            );
        }
        body.push_str("</nav>");
    }
    body.push_str("</div>");
    html::respond(
        StatusCode::OK,
        html::page("Runs", Section::Runs, Some(&s), &body),
    )
}

/// What the run page knows about a run.
enum Found {
    Stored(Box<RunRecord>),
    Running(Box<NodeInfo>, RunningRun),
}

/// The run `id` as the session may see it: none when it is not found, or when it belongs to a
/// job outside the session token's policy (every page and poll that shows a run asks here, so
/// none can forget the check).
async fn find(ui: &Ui, s: &SessionView, id: Uuid) -> Result<Option<Found>, crate::api::ApiError> {
    Ok(find_any(ui, id).await?.filter(|f| {
        s.caller.sees_job(match f {
            Found::Stored(r) => &r.job,
            Found::Running(_, r) => &r.job,
        })
    }))
}

async fn find_any(ui: &Ui, id: Uuid) -> Result<Option<Found>, crate::api::ApiError> {
    let (stored, mut nodes) = ui
        .app
        .read(move |st| {
            if let Some(r) = st.run(id)? {
                return Ok((Some(r), Vec::new()));
            }
            Ok((None, st.nodes()?))
        })
        .await?;
    if let Some(r) = stored {
        return Ok(Some(Found::Stored(Box::new(r))));
    }
    ui.app.beats.overlay(&mut nodes);
    for n in nodes {
        if let Some(r) = n.running.iter().find(|r| r.run_id == id).cloned() {
            return Ok(Some(Found::Running(Box::new(n), r)));
        }
    }
    Ok(None)
}

pub async fn show(
    State(ui): State<Arc<Ui>>,
    Extension(s): Extension<SessionView>,
    Path(id): Path<String>,
) -> Response {
    let Ok(run_id) = Uuid::parse_str(&id) else {
        return html::not_found(&s, "that is not a run id");
    };
    let found = match find(&ui, &s, run_id).await {
        Ok(Some(f)) => f,
        Ok(None) => {
            return html::not_found(
                &s,
                "no such run: it has not reached the manager yet, or retention removed it",
            );
        }
        Err(e) => return html::server_error(&s, e),
    };
    let mut body = String::with_capacity(16384);
    match found {
        Found::Stored(r) => {
            let _ = write!(
                body,
                "<h1>Run of <a href=\"/ui/jobs/{}\">{}</a> on <a href=\"/ui/nodes/{}\">{}</a> <span id=\"run-status\">{}</span></h1>",
                html::url(&r.job),
                esc(&r.job),
                r.node_id,
                esc(&r.hostname),
                html::run_status(r.status)
            );
            body.push_str("<section class=\"card\"><dl class=\"facts\">");
            let exit = match (r.exit_code, r.signal) {
                (_, Some(sig)) => format!("killed by signal {sig}"),
                (Some(c), None) => c.to_string(),
                _ => "–".into(),
            };
            let params = r
                .params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            let invocation = r
                .invocation_id
                .map(|i| format!("<a href=\"/ui/invocations/{i}\">{i}</a>"))
                .unwrap_or_else(|| "–".into());
            for (k, v) in [
                ("Run id", r.run_id.to_string()),
                ("Status", html::run_status(r.status)),
                ("Exit", exit),
                (
                    "Trigger",
                    format!("{} (attempt {})", r.trigger.as_str(), r.attempt),
                ),
                ("Revision", r.job_revision.to_string()),
                ("Planned", html::time_opt(r.planned_at)),
                ("Started", html::time_opt(r.started_at)),
                ("Ended", html::time_opt(r.ended_at)),
                (
                    "Duration",
                    r.duration_ms()
                        .map(html::duration_ms)
                        .unwrap_or_else(|| "–".into()),
                ),
                ("Invocation", invocation),
                (
                    "Parameters",
                    esc(if params.is_empty() { "–" } else { &params }),
                ),
                (
                    "Error",
                    esc(&Some(error_line(&r))
                        .filter(|e| !e.is_empty())
                        .unwrap_or_else(|| "–".into())),
                ),
            ] {
                let _ = write!(body, "<dt>{k}</dt><dd>{v}</dd>");
            }
            if let Some(u) = &r.rusage {
                let _ = write!(
                    body,
                    "<dt>CPU / memory</dt><dd>{} ms user, {} ms sys, {} max RSS</dd>",
                    u.user_ms,
                    u.sys_ms,
                    html::bytes(u.max_rss_kb * 1024)
                );
            }
            for n in &r.notes {
                let _ = write!(body, "<dt>Note</dt><dd>{}</dd>", esc(n));
            }
            let _ = write!(
                body,
                "</dl></section><section class=\"card\"><h2>Command</h2><pre class=\"command\">{}</pre></section>",
                esc(&r.command)
            );
            let truncated = if r.output_truncated {
                format!(
                    "<p class=\"muted\">The last part of {} of output, as the agent sent it.</p>",
                    html::bytes(r.output_bytes)
                )
            } else {
                String::new()
            };
            let _ = write!(
                body,
                "<section class=\"card\"><h2>Output</h2>{truncated}<pre id=\"output\" class=\"output\">{}</pre></section>",
                esc(&r.output)
            );
        }
        Found::Running(n, r) => {
            let _ = write!(
                body,
                "<h1>Run of <a href=\"/ui/jobs/{}\">{}</a> on <a href=\"/ui/nodes/{}\">{}</a> <span id=\"run-status\">{}</span></h1>\
                 <section class=\"card\"><dl class=\"facts\"><dt>Run id</dt><dd>{}</dd><dt>Trigger</dt><dd>{}</dd>\
                 <dt>Started</dt><dd>{}</dd></dl></section>",
                html::url(&r.job),
                esc(&r.job),
                n.node_id,
                esc(&n.hostname),
                html::run_status(RunStatus::Running),
                r.run_id,
                r.trigger.as_str(),
                html::time(r.started_at)
            );
            let _ = write!(
                body,
                "<section class=\"card\"><h2>Output <span class=\"live-state muted\" id=\"live-state\">following live…</span></h2>\
                 <pre id=\"output\" class=\"output\" data-live=\"/ui/runs/{}/live\" data-offset=\"0\"></pre></section>",
                r.run_id
            );
        }
    }
    html::respond(
        StatusCode::OK,
        html::page("Run", Section::Runs, Some(&s), &body),
    )
}

#[derive(Debug, Deserialize)]
pub struct LiveQuery {
    #[serde(default)]
    offset: u64,
}

/// One step of following a run's output, for `console.js`.
#[derive(Debug, Serialize)]
pub struct LiveChunk {
    /// The output from `offset` on (decoded as UTF-8; an incomplete last character waits for
    /// the next step).
    pub text: String,
    pub offset: u64,
    pub next_offset: u64,
    /// True once the run has finished and everything was read: stop polling, reload the page.
    pub finished: bool,
}

fn header_u64(resp: &Response, name: &str) -> Option<u64> {
    resp.headers().get(name)?.to_str().ok()?.trim().parse().ok()
}

pub async fn live(
    State(ui): State<Arc<Ui>>,
    Extension(s): Extension<SessionView>,
    Path(id): Path<String>,
    Query(q): Query<LiveQuery>,
) -> Response {
    let Ok(run_id) = Uuid::parse_str(&id) else {
        return (StatusCode::NOT_FOUND, "not a run id").into_response();
    };
    // Reading output asks the agent through a raft command, so a follower passes it to the
    // leader like a write.
    let resp = writes::call(
        &ui,
        &s,
        Method::GET,
        &format!("/v1/runs/{run_id}/output?offset={}&wait=5", q.offset),
        writes::CallBody::Empty,
    )
    .await;
    if resp.status().is_success() {
        let next = header_u64(&resp, "x-op-next-offset");
        let finished = resp
            .headers()
            .get("x-op-finished")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == "true" || v.trim() == "1");
        let size = header_u64(&resp, "x-op-size");
        let bytes = axum::body::to_bytes(resp.into_body(), 8 * 1024 * 1024)
            .await
            .unwrap_or_default();
        let (text, used) = match std::str::from_utf8(&bytes) {
            Ok(t) => (t.to_string(), bytes.len()),
            Err(e) if e.error_len().is_none() => (
                String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into_owned(),
                e.valid_up_to(),
            ),
            Err(_) => (String::from_utf8_lossy(&bytes).into_owned(), bytes.len()),
        };
        let next_offset = if used < bytes.len() {
            q.offset + used as u64
        } else {
            next.unwrap_or(q.offset + used as u64)
        };
        let done = finished && size.is_none_or(|sz| next_offset >= sz);
        return writes::no_store(
            Json(LiveChunk {
                text,
                offset: q.offset,
                next_offset,
                finished: done,
            })
            .into_response(),
        );
    }
    // The route could not answer (the agent is away, or this manager predates it): what the
    // store has is the best there is.
    match find(&ui, &s, run_id).await {
        Ok(Some(Found::Stored(r))) => writes::no_store(
            Json(LiveChunk {
                text: if q.offset == 0 {
                    r.output.clone()
                } else {
                    String::new()
                },
                offset: q.offset,
                next_offset: q.offset.max(r.output.len() as u64),
                finished: true,
            })
            .into_response(),
        ),
        Ok(Some(Found::Running(..))) => writes::no_store(
            Json(LiveChunk {
                text: String::new(),
                offset: q.offset,
                next_offset: q.offset,
                finished: false,
            })
            .into_response(),
        ),
        Ok(None) => (StatusCode::NOT_FOUND, "no such run").into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
