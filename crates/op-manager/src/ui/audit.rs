//! The audit log, newest first, a page at a time (`before` is the id cursor of the next page).

use std::fmt::Write;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::Ui;
use super::html::{self, PER_PAGE, Section, esc};
use super::session::SessionView;

#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    before: Option<u64>,
}

pub async fn page(
    State(ui): State<Arc<Ui>>,
    Extension(s): Extension<SessionView>,
    Query(q): Query<AuditQuery>,
) -> Response {
    let before = q.before;
    let (rows, total) = match ui
        .app
        .read(move |st| st.audit_page(before, PER_PAGE as u32))
        .await
    {
        Ok(r) => r,
        Err(e) => return html::server_error(&s, e),
    };
    let mut body = String::with_capacity(2048 + rows.len() * 300);
    let _ = write!(
        body,
        "<h1>Audit</h1><p class=\"muted\">{total} entries in all, newest first.</p>\
         <table class=\"list\"><thead><tr><th>When</th><th>Who</th><th>Action</th><th>Target</th><th>Detail</th></tr></thead><tbody>"
    );
    for e in &rows {
        let _ = write!(
            body,
            "<tr><td data-label=\"When\">{}</td><td data-label=\"Who\">{}</td><td data-label=\"Action\"><code>{}</code></td>\
             <td data-label=\"Target\">{}</td><td data-label=\"Detail\" class=\"clip\">{}</td></tr>",
            html::time(e.at),
            esc(&e.actor),
            esc(&e.action),
            esc(&e.target),
            esc(&e.detail)
        );
    }
    if rows.is_empty() {
        body.push_str("<tr><td colspan=\"5\" class=\"muted\">Nothing recorded.</td></tr>");
    }
    body.push_str("</tbody></table><nav class=\"pager\" aria-label=\"pages\">");
    if before.is_some() {
        body.push_str("<a href=\"/ui/audit\">← newest</a>");
    }
    if rows.len() == PER_PAGE
        && let Some(last) = rows.last()
        && last.id > 1
    {
        let _ = write!(
            body,
            "<a rel=\"next\" href=\"/ui/audit?before={}\">older →</a>",
            last.id
        );
    }
    body.push_str("</nav>");
    html::respond(
        StatusCode::OK,
        html::page("Audit", Section::Audit, Some(&s), &body),
    )
}
