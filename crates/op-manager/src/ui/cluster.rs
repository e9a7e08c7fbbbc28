//! The cluster page: members, the leader, the term and the applied index, from the API's own
//! `GET /v1/cluster` as answered by this member.

use std::fmt::Write;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use op_proto::api::ClusterStatus;

use super::Ui;
use super::html::{self, Section, esc};
use super::session::SessionView;
use super::writes;

fn opt(v: Option<u64>) -> String {
    v.map_or("–".into(), |v| v.to_string())
}

pub async fn page(State(ui): State<Arc<Ui>>, Extension(s): Extension<SessionView>) -> Response {
    let (status, text) = writes::read(writes::get_here(&ui, &s, "/v1/cluster").await).await;
    if !status.is_success() {
        return html::error_page(
            status,
            Some(&s),
            &writes::error_lines(status, &text).join("; "),
        );
    }
    let c: ClusterStatus = match serde_json::from_str(&text) {
        Ok(c) => c,
        Err(e) => return html::server_error(&s, format!("unexpected answer from the API: {e}")),
    };
    let mut body = String::with_capacity(4096);
    body.push_str("<h1>Cluster</h1><div id=\"cluster\" data-refresh=\"5000\"><section class=\"card\"><dl class=\"facts\">");
    let leader = match c.leader {
        Some(l) if l == c.node_id => format!("{l} (this member)"),
        Some(l) => l.to_string(),
        None => "none elected".into(),
    };
    for (k, v) in [
        ("Cluster id", esc(&c.cluster_id)),
        ("This member", c.node_id.to_string()),
        ("Its role", esc(&c.state)),
        ("Leader", esc(&leader)),
        ("Term", c.term.to_string()),
        ("Last log index", opt(c.last_log_index)),
        ("Applied index", opt(c.applied_index)),
        ("Snapshot index", opt(c.snapshot_index)),
    ] {
        let _ = write!(body, "<dt>{k}</dt><dd>{v}</dd>");
    }
    body.push_str("</dl></section><section class=\"card\"><h2>Members</h2><table class=\"list\"><thead><tr><th>Id</th><th>Role</th><th>API</th><th>Raft</th><th>Matched index</th></tr></thead><tbody>");
    for m in &c.members {
        let role = if Some(m.id) == c.leader {
            "<span class=\"badge good\"><span aria-hidden=\"true\">★</span> leader</span>"
        } else if m.voter {
            "voter"
        } else {
            "learner"
        };
        let _ = write!(
            body,
            "<tr><td data-label=\"Id\">{}</td><td data-label=\"Role\">{role}</td><td data-label=\"API\"><code>{}</code></td>\
             <td data-label=\"Raft\"><code>{}</code></td><td data-label=\"Matched\">{}</td></tr>",
            m.id,
            esc(&m.api_addr),
            esc(&m.raft_addr),
            opt(m.matched_index)
        );
    }
    body.push_str("</tbody></table></section></div>");
    html::respond(
        StatusCode::OK,
        html::page("Cluster", Section::Cluster, Some(&s), &body),
    )
}
