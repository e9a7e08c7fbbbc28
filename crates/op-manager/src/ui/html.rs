//! HTML building blocks shared by every page: escaping, the page frame (navigation, the user's
//! scope, the CSRF token for scripts), timestamps that the browser turns into local and relative
//! times, status badges that read without colour, forms and pagination.
//!
//! Every string that did not come from this crate's own literals goes through [`esc`] (or
//! [`attr`]) before it reaches a page: job names, hostnames, labels, commands, run output, audit
//! details. Pages are plain `String`s built with `format!`/`push_str`; there is no template engine
//! to keep in step with.

use std::fmt::Write;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use op_proto::invoke::HostStatus;
use op_proto::{NodeStatus, RunStatus};

use super::session_view::SessionView;

/// Escapes text for an HTML element body or a quoted attribute value.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The same as [`esc`]; named for the reader of a `format!` that builds an attribute.
pub fn attr(text: &str) -> String {
    esc(text)
}

/// Percent-encodes a value for a URL path segment or query value.
pub fn url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// A point in time: UTC text that works without scripts, turned by `console.js` into local time
/// with a relative part ("5 s ago") and the exact local time as a tooltip.
pub fn time(at: DateTime<Utc>) -> String {
    let iso = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    format!(
        "<time datetime=\"{iso}\">{}</time>",
        at.format("%Y-%m-%d %H:%M:%S UTC")
    )
}

/// Like [`time`], or a dash.
pub fn time_opt(at: Option<DateTime<Utc>>) -> String {
    at.map(time).unwrap_or_else(|| "–".into())
}

/// A badge: a symbol and the word, so the state reads in any colour scheme.
fn badge(class: &str, symbol: &str, word: &str) -> String {
    format!(
        "<span class=\"badge {class}\"><span aria-hidden=\"true\">{symbol}</span> {word}</span>"
    )
}

pub fn node_status(s: NodeStatus) -> String {
    match s {
        NodeStatus::Ready => badge("good", "●", "Ready"),
        NodeStatus::Degraded => badge("warn", "▲", "Degraded"),
        NodeStatus::NotReady => badge("bad", "✕", "NotReady"),
        NodeStatus::Left => badge("muted", "–", "Left"),
    }
}

/// A node's status badge: `Draining` for a Ready node that is drained (issue 23).
pub fn node_badge(n: &op_proto::NodeInfo) -> String {
    if n.status_text() == "Draining" {
        badge("warn", "⏸", "Draining")
    } else {
        node_status(n.status)
    }
}

/// A clock face, drawn in the text's colour at the text's size.
const CLOCK: &str = "<svg class=\"icon\" viewBox=\"0 0 16 16\"><circle cx=\"8\" cy=\"9\" r=\"6\"/>\
                     <path d=\"M8 5.5V9l2.5 1.5M6 1.5h4\"/></svg>";

pub fn run_status(s: RunStatus) -> String {
    match s {
        RunStatus::Running => badge("busy", "▶", "running"),
        RunStatus::Ok => badge("good", "✓", "ok"),
        RunStatus::Failed => badge("bad", "✕", "failed"),
        // A drawn clock: the stopwatch character (U+23F1) is missing from common fonts
        // (DejaVu, Liberation) and showed as an empty box.
        RunStatus::Timeout => badge("bad", CLOCK, "timeout"),
        RunStatus::Killed => badge("bad", "■", "killed"),
        RunStatus::Skipped => badge("muted", "↷", "skipped"),
        RunStatus::Lost => badge("bad", "?", "lost"),
        RunStatus::Missed => badge("bad", "∅", "missed"),
    }
}

/// A judged fire's outcome on a host (`op_proto::expect::OutcomeKind::as_str`).
pub fn fire_outcome(outcome: &str) -> String {
    match outcome {
        "ok" => badge("good", "✓", "ok"),
        "running" => badge("busy", "▶", "running"),
        "missed" => badge("bad", "∅", "missed"),
        "failed" => badge("bad", "✕", "failed"),
        "overrunning" => badge("warn", CLOCK, "overrunning"),
        "late" => badge("warn", "…", "late"),
        "skipped" => badge("warn", "↷", "skipped"),
        other => badge("muted", "–", &esc(other)),
    }
}

pub fn host_status(s: HostStatus) -> String {
    let class = if s == HostStatus::Ok {
        "good"
    } else if s.is_failure() {
        "bad"
    } else {
        "muted"
    };
    badge(
        class,
        if s == HostStatus::Ok { "✓" } else { "✕" },
        s.as_str(),
    )
}

/// An event's kind: failures and things down read as bad, recoveries as good, the rest muted.
pub fn event_kind(kind: &op_proto::events::EventKind) -> String {
    use op_proto::events::EventKind as K;
    let (class, symbol) = match kind {
        K::RunFailed
        | K::NodeNotReady
        | K::PackageFailed
        | K::RunMissed
        | K::RunOverrunning
        | K::RolloutHalted => ("bad", "✕"),
        K::RunLate | K::RunSkipped | K::NodeClockSkew | K::NodeDegraded => ("warn", "▲"),
        K::RunRecovered | K::NodeReady | K::RolloutFinished => ("good", "✓"),
        _ => ("muted", "●"),
    };
    badge(class, symbol, &esc(kind.as_str()))
}

pub fn enabled(on: bool) -> String {
    if on {
        badge("good", "●", "enabled")
    } else {
        badge("muted", "○", "disabled")
    }
}

/// Which section of the navigation a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Nodes,
    Jobs,
    Runs,
    Packages,
    Cluster,
    Audit,
    Login,
    Events,
    Rollouts,
}

const NAV: [(Section, &str, &str); 9] = [
    (Section::Overview, "/ui", "Overview"),
    (Section::Nodes, "/ui/nodes", "Nodes"),
    (Section::Jobs, "/ui/jobs", "Jobs"),
    (Section::Runs, "/ui/runs", "Runs"),
    (Section::Events, "/ui/events", "Events"),
    (Section::Packages, "/ui/packages", "Packages"),
    (Section::Rollouts, "/ui/rollouts", "Rollouts"),
    (Section::Cluster, "/ui/cluster", "Cluster"),
    (Section::Audit, "/ui/audit", "Audit"),
];

/// A whole page: the frame around `body`. `session` is `None` on the login page.
pub fn page(title: &str, section: Section, session: Option<&SessionView>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    out.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    let _ = write!(out, "<title>{} · op-agent</title>", esc(title));
    // The version in the URL makes a new binary's assets bypass the browser's cache.
    let v = env!("CARGO_PKG_VERSION");
    let _ = write!(
        out,
        "<link rel=\"stylesheet\" href=\"/ui/static/console.css?v={v}\">\
         <script src=\"/ui/static/console.js?v={v}\" defer></script>"
    );
    if let Some(s) = session {
        let _ = write!(
            out,
            "<meta name=\"csrf-token\" content=\"{}\">",
            attr(&s.csrf)
        );
    }
    out.push_str("</head><body><header class=\"top\"><a class=\"brand\" href=\"/ui\">op-agent</a>");
    if let Some(s) = session {
        out.push_str("<nav>");
        for (sec, href, label) in NAV {
            let current = if sec == section {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(out, "<a href=\"{href}\"{current}>{label}</a>");
        }
        out.push_str("</nav>");
        let _ = write!(
            out,
            "<form class=\"who\" method=\"post\" action=\"/ui/logout\">{}<span title=\"token {}\">{} <span class=\"scope\">{}</span></span> <button class=\"link\">Log out</button></form>",
            csrf_field(s),
            attr(&s.caller.token_id),
            esc(&s.caller.name),
            s.caller.scope.as_str(),
        );
    }
    out.push_str("</header><main>");
    out.push_str(body);
    out.push_str("</main></body></html>");
    out
}

/// The hidden CSRF field every form carries.
pub fn csrf_field(s: &SessionView) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        attr(&s.csrf)
    )
}

/// A one-button form that POSTs to `action` (with the CSRF token). `confirm` asks first.
pub fn button_form(
    s: &SessionView,
    action: &str,
    label: &str,
    class: &str,
    confirm: Option<&str>,
) -> String {
    let confirm = confirm
        .map(|c| format!(" data-confirm=\"{}\"", attr(c)))
        .unwrap_or_default();
    format!(
        "<form class=\"inline\" method=\"post\" action=\"{}\"{confirm}>{}<button class=\"{class}\">{}</button></form>",
        attr(action),
        csrf_field(s),
        esc(label)
    )
}

/// Rows per page of every list.
pub const PER_PAGE: usize = 50;

/// "Page 2 of 20" with previous/next links that keep the other query parameters.
pub fn pager(base: &str, query: &[(&str, &str)], page: usize, total: usize) -> String {
    let pages = total.div_ceil(PER_PAGE).max(1);
    if pages <= 1 {
        return format!("<p class=\"pager\">{total} in all</p>");
    }
    let link = |p: usize| {
        let mut q: Vec<String> = query
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={}", url(v)))
            .collect();
        q.push(format!("page={p}"));
        format!("{base}?{}", q.join("&amp;"))
    };
    let mut out = String::from("<nav class=\"pager\" aria-label=\"pages\">");
    if page > 1 {
        let _ = write!(
            out,
            "<a href=\"{}\" rel=\"prev\">← previous</a>",
            link(page - 1)
        );
    }
    let _ = write!(out, "<span>page {page} of {pages} ({total} in all)</span>");
    if page < pages {
        let _ = write!(
            out,
            "<a href=\"{}\" rel=\"next\">next →</a>",
            link(page + 1)
        );
    }
    out.push_str("</nav>");
    out
}

/// The slice of `items` on `page` (1-based; out of range gives the last page).
pub fn page_of<T>(items: &[T], page: usize) -> (&[T], usize) {
    let pages = items.len().div_ceil(PER_PAGE).max(1);
    let page = page.clamp(1, pages);
    let start = (page - 1) * PER_PAGE;
    let end = (start + PER_PAGE).min(items.len());
    (&items[start.min(end)..end], page)
}

/// A finished HTML response with the console's security headers.
pub fn respond(status: StatusCode, html: String) -> Response {
    let mut resp = (status, html).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(h);
    resp
}

/// Headers on every console response: no caching of fleet data, no framing, no inline scripts.
pub fn secure_headers(h: &mut axum::http::HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

/// A page that says what went wrong, in the frame, with a link back to the page the user came
/// from (the session's referring console page) and one to the overview.
pub fn error_page(status: StatusCode, session: Option<&SessionView>, message: &str) -> Response {
    let back = match session {
        Some(s) => s.back.as_deref().map(|b| {
            format!(
                "<a id=\"back\" href=\"{}\">← Back to the page you were on</a> · ",
                attr(b)
            )
        }),
        // No session: the way on is signing in.
        None => Some("<a id=\"back\" href=\"/ui/login\">← Back to sign in</a> · ".to_string()),
    }
    .unwrap_or_default();
    let body = format!(
        "<h1>{}</h1><p class=\"error\" role=\"alert\">{}</p><p class=\"back\">{back}<a href=\"/ui\">Overview</a></p>",
        status.canonical_reason().unwrap_or("Error"),
        esc(message)
    );
    respond(status, page("Error", Section::Overview, session, &body))
}

/// The page for a failed store read or API call.
pub fn server_error(session: &SessionView, e: impl std::fmt::Display) -> Response {
    error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        Some(session),
        &e.to_string(),
    )
}

/// A "not found" page.
pub fn not_found(session: &SessionView, message: &str) -> Response {
    error_page(StatusCode::NOT_FOUND, Some(session), message)
}

/// A small figure with a label, for the overview's tiles; `id` names it for scripts and tests.
pub fn tile(id: &str, label: &str, value: &str, class: &str, href: &str) -> String {
    format!(
        "<a class=\"tile {class}\" id=\"tile-{id}\" href=\"{}\"><span class=\"value\">{}</span><span class=\"label\">{}</span></a>",
        attr(href),
        esc(value),
        esc(label)
    )
}

/// Bytes as `1.2 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Milliseconds as `850 ms`, `12.3 s`, `4 min 5 s`.
pub fn duration_ms(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
    }

    #[test]
    fn url_encodes_everything_but_unreserved() {
        assert_eq!(url("a b/c?d=é"), "a%20b%2Fc%3Fd%3D%C3%A9");
        assert_eq!(url("ls-l.py_1~"), "ls-l.py_1~");
    }

    #[test]
    fn pages_clamp() {
        let items: Vec<u32> = (0..120).collect();
        assert_eq!(page_of(&items, 1).0.len(), 50);
        assert_eq!(page_of(&items, 3).0, &items[100..]);
        assert_eq!(page_of(&items, 9).1, 3);
        assert_eq!(page_of(&items, 0).1, 1);
        let empty: Vec<u32> = Vec::new();
        assert!(page_of(&empty, 2).0.is_empty());
        assert!(pager("/ui/nodes", &[("q", "a&b")], 2, 120).contains("q=a%26b&amp;page=3"));
    }

    #[test]
    fn human_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(duration_ms(850), "850 ms");
        assert_eq!(duration_ms(12_300), "12.3 s");
        assert_eq!(duration_ms(245_000), "4 min 5 s");
    }
}
