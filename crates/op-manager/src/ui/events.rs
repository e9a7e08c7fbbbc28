//! Events (issue 19): the newest derived events (`run.failed`, `run.recovered`, `node.not_ready`,
//! `package.failed`, `invocation.finished`, ...) with their time, kind, job or package, hosts,
//! summary and a link to the page that shows each, filterable by kind and job. The list is a
//! live region (`data-refresh`, the mechanism every live console page uses): new events appear
//! without a reload. Older pages (`before=ID`) stay still.
//!
//! The job page's incidents ([`incidents`]) pair each `run.failed` event of the job with the
//! `run.recovered` that closed it, read from the same event log.

use std::fmt::Write;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use op_proto::events::{Event, EventKind, NotifyRuleInfo};
use serde::Deserialize;

use super::Ui;
use super::html::{self, PER_PAGE, Section, attr, esc};
use super::session::SessionView;

/// How often the list looks for new events, in milliseconds.
const REFRESH_MS: u32 = 3000;
/// Host names spelled out in a row before `and N more`.
const ROW_HOSTS: usize = 5;
/// Incidents a job page shows.
pub const JOB_INCIDENTS: usize = 10;

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    job: String,
    /// Show events older than this id (the "older" link).
    #[serde(default)]
    before: Option<u64>,
}

pub async fn list(
    State(ui): State<Arc<Ui>>,
    Extension(s): Extension<SessionView>,
    Query(q): Query<ListQuery>,
) -> Response {
    let kind = q.kind.trim().to_string();
    let job = q.job.trim().to_string();
    if !kind.is_empty() && !EventKind::parse(&kind).is_known() {
        let known: Vec<&str> = EventKind::KNOWN.iter().map(EventKind::as_str).collect();
        return html::error_page(
            StatusCode::BAD_REQUEST,
            Some(&s),
            &format!("unknown event kind {kind:?}; known: {}", known.join(", ")),
        );
    }
    let kinds: Vec<String> = if kind.is_empty() {
        Vec::new()
    } else {
        vec![kind.clone()]
    };
    let job_filter = Some(job.clone()).filter(|j| !j.is_empty());
    let before = q.before;
    let read = ui
        .app
        .read(move |st| {
            // One more than a page tells whether there are older ones.
            let events =
                st.events_newest(&kinds, job_filter.as_deref(), before, PER_PAGE as u32 + 1)?;
            Ok((events, st.notify_rules()?))
        })
        .await;
    let (mut events, rules) = match read {
        Ok(e) => e,
        Err(e) => return html::server_error(&s, e),
    };
    if let Some(p) = s.caller.policy.as_ref().filter(|p| p.restricts_jobs()) {
        events.retain(|e| e.job.as_ref().is_some_and(|j| p.sees_job(j)));
    }
    let older = events.len() > PER_PAGE;
    events.truncate(PER_PAGE);

    let mut body = String::with_capacity(4096 + events.len() * 600);
    body.push_str("<h1>Events</h1>");
    let _ = write!(
        body,
        "<form class=\"filters\" method=\"get\" action=\"/ui/events\" id=\"event-filters\">\
         <select name=\"kind\" aria-label=\"kind\"><option value=\"\">any kind</option>"
    );
    for k in EventKind::KNOWN {
        let selected = if k.as_str() == kind { " selected" } else { "" };
        let _ = write!(
            body,
            "<option value=\"{0}\"{selected}>{0}</option>",
            k.as_str()
        );
    }
    let _ = write!(
        body,
        "</select><input name=\"job\" value=\"{}\" placeholder=\"job\" aria-label=\"job\">\
         <button>Filter</button></form>",
        attr(&job)
    );
    // Only the newest page follows new events; an older page stays as it was.
    let live = if before.is_none() {
        format!(" data-refresh=\"{REFRESH_MS}\"")
    } else {
        String::new()
    };
    let _ = write!(body, "<div id=\"events-live\"{live}>");
    if before.is_none() {
        body.push_str(&channels(&rules, chrono::Utc::now()));
    }
    body.push_str(&table(&events));
    body.push_str("</div>");
    if let (true, Some(last)) = (older, events.last()) {
        let mut query: Vec<String> = Vec::new();
        if !kind.is_empty() {
            query.push(format!("kind={}", html::url(&kind)));
        }
        if !job.is_empty() {
            query.push(format!("job={}", html::url(&job)));
        }
        query.push(format!("before={}", last.id));
        let _ = write!(
            body,
            "<nav class=\"pager\" aria-label=\"pages\"><a href=\"/ui/events?{}\" rel=\"next\">older events →</a></nav>",
            query.join("&amp;")
        );
    }
    if before.is_some() {
        body.push_str("<p><a href=\"/ui/events\">← newest events</a></p>");
    }
    html::respond(
        StatusCode::OK,
        html::page("Events", Section::Events, Some(&s), &body),
    )
}

/// The notification rules and how their channels are doing (the replicated delivery health), so
/// a receiver that keeps refusing shows here as well as in `agentcli notify list` and metrics.
fn channels(rules: &[NotifyRuleInfo], now: chrono::DateTime<chrono::Utc>) -> String {
    if rules.is_empty() {
        return "<p class=\"muted\" id=\"no-channels\">No notification rules \
                (<code>agentcli notify add</code>).</p>"
            .into();
    }
    let mut out = String::from(
        "<table class=\"list\" id=\"channels\"><thead><tr><th>Rule</th><th>Channel</th>\
         <th>Health</th></tr></thead><tbody>",
    );
    for r in rules {
        let health = r.delivery.health(now);
        let class = if r.delivery.consecutive_failures > 0 {
            " class=\"error\""
        } else {
            ""
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td{class} data-health>{}</td></tr>",
            esc(&r.rule.name),
            esc(&r.rule.channel.receiver()),
            esc(&health)
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// A table of events, newest first.
fn table(events: &[Event]) -> String {
    if events.is_empty() {
        return "<p class=\"muted\" id=\"no-events\">No events.</p>".into();
    }
    let mut out = String::with_capacity(events.len() * 600);
    out.push_str(
        "<table class=\"list events\"><thead><tr><th>Time</th><th>Kind</th><th>Job / package</th>\
         <th>Hosts</th><th>Summary</th><th></th></tr></thead><tbody>",
    );
    for e in events {
        let subject = match (&e.job, &e.package) {
            (Some(job), _) => format!("<a href=\"/ui/jobs/{}\">{}</a>", html::url(job), esc(job)),
            (None, Some(package)) => {
                let name = package
                    .rsplit_once('@')
                    .map_or(package.as_str(), |(n, _)| n);
                format!(
                    "<a href=\"/ui/packages/{}\">{}</a>",
                    html::url(name),
                    esc(package)
                )
            }
            (None, None) => "–".into(),
        };
        let _ = write!(
            out,
            "<tr data-event=\"{}\" data-kind=\"{}\"><td data-label=\"Time\">{}</td><td data-label=\"Kind\">{}</td>\
             <td data-label=\"Job / package\">{subject}</td><td data-label=\"Hosts\">{}</td>\
             <td data-label=\"Summary\" class=\"summary\">{}</td><td>{}</td></tr>",
            e.id,
            attr(e.kind.as_str()),
            html::time(e.time),
            html::event_kind(&e.kind),
            hosts(e),
            esc(&e.summary),
            link(e),
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// `a, b, c and 17 more` (the event keeps at most a capped list; `host_count` is the total).
fn hosts(e: &Event) -> String {
    let total = (e.host_count as usize).max(e.hosts.len());
    if total == 0 {
        return "–".into();
    }
    let shown: Vec<String> = e.hosts.iter().take(ROW_HOSTS).map(|h| esc(h)).collect();
    let rest = total - shown.len();
    if rest > 0 {
        format!("{} and {rest} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// The link to the page that shows the event: only console paths are links.
fn link(e: &Event) -> String {
    if e.url.starts_with("/ui/") {
        format!(
            "<a class=\"event-url\" href=\"{}\">details →</a>",
            attr(&e.url)
        )
    } else {
        String::new()
    }
}

/// A job's recent incidents: each `run.failed` of `events` (newest first, the job's `run.failed`
/// and `run.recovered` events) with when it opened, its hosts and signature, and whether it
/// recovered (when, from its `run.recovered`) or is still open (`open` says so for an incident
/// whose recovery is not in `events`).
pub fn incidents(job: &str, events: &[Event], open: impl Fn(u64) -> bool) -> String {
    let failures: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == EventKind::RunFailed)
        .take(JOB_INCIDENTS)
        .collect();
    let mut out = String::from("<section class=\"card\" id=\"incidents\"><h2>Incidents</h2>");
    if failures.is_empty() {
        out.push_str("<p class=\"muted\">No incident among the kept events.</p>");
    } else {
        out.push_str(
            "<table class=\"list incidents\"><thead><tr><th>Opened</th><th>State</th><th>Hosts</th>\
             <th>Signature</th></tr></thead><tbody>",
        );
        for f in failures {
            let id = f.incident.unwrap_or(f.id);
            let recovery = events
                .iter()
                .find(|e| e.kind == EventKind::RunRecovered && e.incident == Some(id));
            let state = match recovery {
                Some(r) => format!(
                    "<span class=\"badge good\"><span aria-hidden=\"true\">✓</span> recovered</span> {}",
                    html::time(r.time)
                ),
                None if open(id) => {
                    "<span class=\"badge bad\"><span aria-hidden=\"true\">✕</span> open</span>"
                        .to_string()
                }
                None => "<span class=\"badge muted\">closed</span>".to_string(),
            };
            let _ = write!(
                out,
                "<tr data-incident=\"{id}\"><td data-label=\"Opened\">{}</td><td data-label=\"State\">{state}</td>\
                 <td data-label=\"Hosts\">{}</td><td data-label=\"Signature\"><code>{}</code></td></tr>",
                html::time(f.time),
                hosts(f),
                esc(f.signature.as_deref().unwrap_or("")),
            );
        }
        out.push_str("</tbody></table>");
    }
    let _ = write!(
        out,
        "<p><a href=\"/ui/events?job={}\">Every event of this job →</a></p></section>",
        html::url(job)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn event(id: u64, kind: EventKind, incident: Option<u64>) -> Event {
        Event {
            id,
            kind,
            time: Utc.timestamp_opt(1_700_000_000 + id as i64, 0).unwrap(),
            job: Some("<b>job</b>".into()),
            package: None,
            hosts: vec!["h1".into(), "<h2>".into()],
            host_count: 9,
            selected_hosts: 0,
            host_labels: Vec::new(),
            summary: "<script>x</script>".into(),
            url: "/ui/jobs/%3Cb%3Ejob%3C%2Fb%3E".into(),
            incident,
            opened_at: None,
            signature: Some("exit 1: <oops>".into()),
        }
    }

    #[test]
    fn rows_escape_and_count_the_hosts_left_out() {
        let html = table(&[event(3, EventKind::RunFailed, Some(3))]);
        assert!(!html.contains("<script>") && !html.contains("<h2>") && !html.contains("<b>"));
        assert!(html.contains("&lt;h2&gt; and 7 more"), "{html}");
        assert!(html.contains("href=\"/ui/jobs/%3Cb%3Ejob%3C%2Fb%3E\""));
    }

    #[test]
    fn only_console_paths_are_links() {
        let mut e = event(1, EventKind::NodeReady, None);
        e.url = "javascript:alert(1)".into();
        assert_eq!(link(&e), "");
    }

    #[test]
    fn incidents_pair_failures_with_their_recovery() {
        let events = vec![
            event(5, EventKind::RunFailed, Some(5)),
            event(4, EventKind::RunRecovered, Some(2)),
            event(2, EventKind::RunFailed, Some(2)),
            event(1, EventKind::RunFailed, Some(1)),
        ];
        let html = incidents("j", &events, |id| id == 5);
        let row = |id: u64| {
            let start = html.find(&format!("data-incident=\"{id}\"")).unwrap();
            let end = html[start..].find("</tr>").unwrap();
            html[start..start + end].to_string()
        };
        assert!(row(5).contains("open"));
        assert!(row(2).contains("recovered"));
        assert!(row(1).contains("closed"));
        assert!(!html.contains("<oops>"));
    }
}
