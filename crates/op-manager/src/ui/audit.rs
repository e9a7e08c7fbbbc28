//! The audit log, newest first, a page at a time (`before` is the id cursor of the next page).
//! Each entry is one line; a detail too long for its cell (an exec's command) is cut with an
//! ellipsis, shown whole on hover, and unfolds in place when clicked.

use std::fmt::Write;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::Ui;
use super::html::{self, PER_PAGE, Section, attr, esc};
use super::session::SessionView;

#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    before: Option<u64>,
}

/// Details up to this many characters are shown as they are; longer ones fold.
const INLINE_DETAIL: usize = 60;

/// An entry's detail: the text, or for a long one a disclosure whose one-line summary carries
/// the whole text as its tooltip and whose body shows it whole.
fn detail(text: &str) -> String {
    if text.chars().count() <= INLINE_DETAIL {
        return esc(text);
    }
    format!(
        "<details><summary title=\"{}\">{}</summary><div class=\"whole\">{}</div></details>",
        attr(text),
        esc(text),
        esc(text)
    )
}

pub async fn page(
    State(ui): State<Arc<Ui>>,
    Extension(s): Extension<SessionView>,
    Query(q): Query<AuditQuery>,
) -> Response {
    let before = q.before;
    let (page, total) = match ui
        .app
        .read(move |st| st.audit_page(before, PER_PAGE as u32))
        .await
    {
        Ok(r) => r,
        Err(e) => return html::server_error(&s, e),
    };
    // A policy token's page holds the entries it may see (the API's rule); the pager still
    // walks the whole log, and the total, which counts every team's, is not said.
    let next = (page.len() == PER_PAGE)
        .then(|| page.last().map(|e| e.id))
        .flatten();
    let rows = match crate::api::audit::visible(&ui.app, &s.caller, page).await {
        Ok(r) => r,
        Err(e) => return html::server_error(&s, e),
    };
    let mut body = String::with_capacity(2048 + rows.len() * 300);
    let summary = if s.caller.policy.is_some() {
        "The entries about this token's jobs and hosts, newest first.".to_string()
    } else {
        format!("{total} entries in all, newest first.")
    };
    let _ = write!(
        body,
        "<h1>Audit</h1><p class=\"muted\">{summary}</p>\
         <table class=\"list audit\"><thead><tr><th>When</th><th>Who</th><th>Action</th><th>Target</th><th>Detail</th></tr></thead><tbody>"
    );
    for e in &rows {
        let _ = write!(
            body,
            "<tr data-audit=\"{}\"><td data-label=\"When\">{}</td><td data-label=\"Who\">{}</td><td data-label=\"Action\"><code>{}</code></td>\
             <td data-label=\"Target\">{}</td><td data-label=\"Detail\" class=\"detail\">{}</td></tr>",
            e.id,
            html::time(e.at),
            esc(&e.actor),
            esc(&e.action),
            esc(&e.target),
            detail(&e.detail)
        );
    }
    if rows.is_empty() {
        body.push_str("<tr><td colspan=\"5\" class=\"muted\">Nothing recorded.</td></tr>");
    }
    body.push_str("</tbody></table><nav class=\"pager\" aria-label=\"pages\">");
    if before.is_some() {
        body.push_str("<a href=\"/ui/audit\">← newest</a>");
    }
    if let Some(last) = next
        && last > 1
    {
        let _ = write!(
            body,
            "<a rel=\"next\" href=\"/ui/audit?before={last}\">older →</a>"
        );
    }
    body.push_str("</nav>");
    html::respond(
        StatusCode::OK,
        html::page("Audit", Section::Audit, Some(&s), &body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_detail_folds_and_keeps_every_character() {
        assert_eq!(detail("version 1 -> 2"), "version 1 -&gt; 2");
        let cmd = format!("invocation x on 2 host(s): echo {}<end>", "a".repeat(150));
        let html = detail(&cmd);
        assert!(html.starts_with("<details><summary title=\""), "{html}");
        // The whole text, escaped, in the tooltip and in the unfolded body.
        assert_eq!(html.matches(&esc(&cmd)).count(), 3, "{html}");
        assert!(!html.contains("<end>"));
    }
}
