//! A run-now invocation's page: every host's result as it arrives. While hosts are still
//! pending or running, `console.js` refreshes the results in place (`data-refresh`), so results
//! appear as hosts finish. The view is the API's own `GET /v1/invocations/ID`.

use std::fmt::Write;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use op_proto::invoke::{InvocationState, InvocationView};
use uuid::Uuid;

use super::Ui;
use super::html::{self, Section, esc};
use super::session::SessionView;
use super::writes;

pub async fn show(
    State(ui): State<Arc<Ui>>,
    Extension(s): Extension<SessionView>,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = Uuid::parse_str(&id) else {
        return html::not_found(&s, "that is not an invocation id");
    };
    let resp = writes::get_here(&ui, &s, &format!("/v1/invocations/{id}")).await;
    let (status, text) = writes::read(resp).await;
    if !status.is_success() {
        let lines = writes::error_lines(status, &text).join("; ");
        return html::error_page(status, Some(&s), &lines);
    }
    let v: InvocationView = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => return html::server_error(&s, format!("unexpected answer from the API: {e}")),
    };
    let running = v.state == InvocationState::Running;
    let mut body = String::with_capacity(8192);
    let _ = write!(
        body,
        "<h1>Run of <a href=\"/ui/jobs/{}\">{}</a></h1>",
        html::url(&v.job),
        esc(&v.job)
    );
    let refresh = if running {
        " data-refresh=\"1000\""
    } else {
        ""
    };
    let _ = write!(body, "<div id=\"invocation\"{refresh}>");
    let sm = &v.summary;
    let state = if running {
        "<span class=\"badge busy\"><span aria-hidden=\"true\">▶</span> running</span>"
    } else {
        "<span class=\"badge muted\"><span aria-hidden=\"true\">■</span> finished</span>"
    };
    let params = v
        .params
        .iter()
        .map(|(k, val)| format!("{k}={val}"))
        .collect::<Vec<_>>()
        .join(" ");
    let _ = write!(
        body,
        "<section class=\"card\"><dl class=\"facts\"><dt>State</dt><dd id=\"invocation-state\" data-state=\"{}\">{state}</dd>\
         <dt>Hosts</dt><dd id=\"invocation-summary\">{} in all: {} ok, {} failed, {} running, {} pending, {} other</dd>\
         <dt>Started</dt><dd>{} by {}</dd><dt>Finished</dt><dd>{}</dd><dt>Parameters</dt><dd>{}</dd>\
         <dt>Revision</dt><dd>{}</dd></dl>",
        if running { "running" } else { "finished" },
        sm.total,
        sm.ok,
        sm.failed,
        sm.running,
        sm.pending,
        sm.timeout
            + sm.killed
            + sm.skipped
            + sm.lost
            + sm.unreachable
            + sm.unresponsive
            + sm.cancelled,
        html::time(v.created_at),
        esc(&v.created_by),
        html::time_opt(v.finished_at),
        esc(if params.is_empty() { "–" } else { &params }),
        v.revision
    );
    if let Some(why) = &sm.stopped {
        let _ = write!(body, "<p class=\"error\">{}</p>", esc(why));
    }
    body.push_str("</section><section class=\"card\"><h2>Hosts</h2><table class=\"list\"><thead><tr><th>Host</th><th>Status</th><th>Exit</th><th>Duration</th><th>Output (tail)</th></tr></thead><tbody>");
    for h in &v.hosts {
        let host = match (h.node_id, h.run_id) {
            (_, Some(run)) => format!("<a href=\"/ui/runs/{run}\">{}</a>", esc(&h.host)),
            (Some(node), None) => format!("<a href=\"/ui/nodes/{node}\">{}</a>", esc(&h.host)),
            _ => esc(&h.host),
        };
        let exit = match (h.exit_code, h.signal) {
            (_, Some(sig)) => format!("signal {sig}"),
            (Some(c), None) => c.to_string(),
            _ => "–".into(),
        };
        let out = match &h.error {
            Some(e) if h.output.is_empty() => esc(e),
            _ => esc(&h.output),
        };
        let _ = write!(
            body,
            "<tr data-host=\"{}\" data-status=\"{}\"><td data-label=\"Host\">{host}</td><td data-label=\"Status\">{}</td>\
             <td data-label=\"Exit\">{exit}</td><td data-label=\"Duration\">{}</td><td data-label=\"Output\"><pre class=\"tail\">{out}</pre></td></tr>",
            html::attr(&h.host),
            h.status.as_str(),
            html::host_status(h.status),
            h.duration_ms()
                .map(html::duration_ms)
                .unwrap_or_else(|| "–".into()),
        );
    }
    body.push_str("</tbody></table></section></div>");
    html::respond(
        StatusCode::OK,
        html::page("Invocation", Section::Jobs, Some(&s), &body),
    )
}
