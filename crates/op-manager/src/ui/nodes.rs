//! Nodes: a filterable, paginated list (status, version, last seen, load, packages), and a page
//! per node with its labels, its load over time (the samples this member keeps, see
//! [`crate::load_history`]), the jobs that select it, its runs in progress and recent runs (with
//! their job), and its installed packages.

use std::fmt::Write;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use op_proto::api::RunQuery;
use op_proto::package::PackageState;
use op_proto::{NodeInfo, NodeStatus};
use serde::Deserialize;
use uuid::Uuid;

use super::Ui;
use super::chart;
use super::html::{self, Section, attr, esc};
use super::session::SessionView;

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// Part of a hostname, an IP, a label or a version.
    #[serde(default)]
    q: String,
    /// `Ready`, `NotReady` or `Left`; empty for all.
    #[serde(default)]
    status: String,
    #[serde(default)]
    page: Option<usize>,
}

/// True when `n` matches the free-text filter (case-insensitive, any of its names).
fn matches(n: &NodeInfo, q: &str) -> bool {
    if q.is_empty() {
        return true;
    }
    let q = q.to_lowercase();
    n.hostname.to_lowercase().contains(&q)
        || n.ips.iter().any(|ip| ip.to_string().contains(&q))
        || n.agent_version.to_lowercase().contains(&q)
        || n.node_id.to_string().starts_with(&q)
        || n.all_labels()
            .iter()
            .any(|(k, v)| format!("{k}={v}").to_lowercase().contains(&q))
}

/// `0.42 / 4 cpu, 35% mem`, or a dash.
fn load(n: &NodeInfo) -> String {
    match &n.load {
        Some(l) => {
            let mem = (l.mem_total_kb.saturating_sub(l.mem_available_kb) * 100)
                .checked_div(l.mem_total_kb)
                .map(|used| format!(", {used}% mem"))
                .unwrap_or_default();
            format!("{:.2} / {} cpu{mem}", l.load1, l.cpus)
        }
        None => "–".into(),
    }
}

pub async fn list(
    State(ui): State<Arc<Ui>>,
    Extension(s): Extension<SessionView>,
    Query(q): Query<ListQuery>,
) -> Response {
    let mut nodes = match ui.app.read(|st| st.nodes()).await {
        Ok(n) => n,
        Err(e) => return html::server_error(&s, e),
    };
    // Heartbeats not yet written carry the freshest status and last-seen time.
    ui.app.beats.overlay(&mut nodes);
    s.caller.narrow_nodes(&mut nodes);
    nodes.sort_by(|a, b| (&a.hostname, a.node_id).cmp(&(&b.hostname, b.node_id)));
    let status = NodeStatus::parse_ui(&q.status);
    let shown: Vec<&NodeInfo> = nodes
        .iter()
        .filter(|n| status.is_none_or(|st| n.status == st))
        .filter(|n| matches(n, q.q.trim()))
        .collect();
    let (rows, page) = html::page_of(&shown, q.page.unwrap_or(1));
    let mut body = String::with_capacity(1024 + rows.len() * 512);
    body.push_str("<h1>Nodes</h1>");
    let _ = write!(
        body,
        "<form class=\"filters\" method=\"get\" action=\"/ui/nodes\">\
         <input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"hostname, IP, label, version\" aria-label=\"filter\">\
         <select name=\"status\" aria-label=\"status\">",
        attr(&q.q)
    );
    for (v, label) in [
        ("", "any status"),
        ("Ready", "Ready"),
        ("Degraded", "Degraded"),
        ("NotReady", "NotReady"),
        ("Left", "Left"),
    ] {
        let sel = if q.status == v { " selected" } else { "" };
        let _ = write!(body, "<option value=\"{v}\"{sel}>{label}</option>");
    }
    body.push_str("</select><button>Filter</button></form>");
    body.push_str("<div id=\"nodes\" data-refresh=\"5000\">");
    body.push_str(
        "<table class=\"list\"><thead><tr><th>Status</th><th>Host</th><th>IPs</th><th>Version</th>\
         <th>Last seen</th><th>Clock skew</th><th>Load</th><th>Running</th><th>Packages</th></tr></thead><tbody>",
    );
    for n in rows {
        let failed = n
            .packages
            .iter()
            .filter(|p| p.state == PackageState::Failed)
            .count();
        let pk = if failed > 0 {
            format!("{} ({failed} failed)", n.packages.len())
        } else {
            n.packages.len().to_string()
        };
        let _ = write!(
            body,
            "<tr data-node=\"{}\"><td data-label=\"Status\">{}</td><td data-label=\"Host\"><a href=\"/ui/nodes/{}\">{}</a></td>\
             <td data-label=\"IPs\">{}</td><td data-label=\"Version\">{}</td><td data-label=\"Last seen\">{}</td>\
             <td data-label=\"Clock skew\" data-skew>{}</td><td data-label=\"Load\">{}</td><td data-label=\"Running\">{}</td><td data-label=\"Packages\">{pk}</td></tr>",
            attr(&n.hostname),
            status_cell(n),
            n.node_id,
            esc(&n.hostname),
            esc(&n.ip_string()),
            esc(&n.agent_version),
            html::time(n.last_seen),
            esc(&n.clock_skew_text()),
            load(n),
            n.running.len(),
        );
    }
    if rows.is_empty() {
        body.push_str("<tr><td colspan=\"9\" class=\"muted\">No node matches.</td></tr>");
    }
    body.push_str("</tbody></table>");
    body.push_str(&html::pager(
        "/ui/nodes",
        &[("q", &q.q), ("status", &q.status)],
        page,
        shown.len(),
    ));
    body.push_str("</div>");
    html::respond(
        StatusCode::OK,
        html::page("Nodes", Section::Nodes, Some(&s), &body),
    )
}

/// How many recent runs a node page shows.
const RECENT_RUNS: u32 = 30;

pub async fn show(
    State(ui): State<Arc<Ui>>,
    Extension(s): Extension<SessionView>,
    Path(id): Path<String>,
) -> Response {
    let Ok(node_id) = Uuid::parse_str(&id) else {
        return html::not_found(&s, "that is not a node id");
    };
    let read = ui
        .app
        .read(move |st| {
            let node = st.node(node_id)?;
            let jobs = st.jobs()?;
            let runs = st.runs(&RunQuery {
                host: Some(node_id.to_string()),
                limit: Some(RECENT_RUNS),
                ..RunQuery::default()
            })?;
            Ok((node, jobs, runs))
        })
        .await;
    let (node, mut jobs, mut runs) = match read {
        // A host outside the token's policy is as absent as in the API's `GET /v1/nodes/KEY`.
        Ok((Some(n), j, r)) if s.caller.reaches_host(&n.identity()) => {
            let mut one = vec![n];
            ui.app.beats.overlay(&mut one);
            s.caller.narrow_nodes(&mut one);
            match one.pop() {
                Some(n) => (n, j, r),
                None => return html::not_found(&s, "no such node (it may have been forgotten)"),
            }
        }
        Ok(_) => {
            return html::not_found(&s, "no such node (it may have been forgotten)");
        }
        Err(e) => return html::server_error(&s, e),
    };
    // And of the jobs on a host it reaches, only its own jobs and their runs.
    jobs.retain(|j| s.caller.sees_job(&j.spec.name));
    runs.retain(|r| s.caller.sees_job(&r.job));
    let ident = node.identity();
    let mut body = String::with_capacity(8192);
    let _ = write!(
        body,
        "<h1>{} <span id=\"node-status\">{}</span></h1><div id=\"node\" data-refresh=\"5000\">",
        esc(&node.hostname),
        html::node_badge(&node)
    );
    body.push_str("<section class=\"card\"><dl class=\"facts\">");
    // Manager-set labels (`agentcli label`) are marked `k=v*`.
    let mut labels = node.labels_text().join(", ");
    if !node.manager_labels.is_empty() {
        labels.push_str(" (* set on the manager)");
    }
    for (k, v) in [
        ("Status", status_cell(&node)),
        ("Node id", esc(&node.node_id.to_string())),
        ("IPs", esc(&node.ip_string())),
        ("Labels", esc(if labels.is_empty() { "–" } else { &labels })),
        ("Agent version", esc(&node.agent_version)),
        ("OS / arch", esc(&format!("{} / {}", node.os, node.arch))),
        ("Last seen", html::time(node.last_seen)),
        (
            "Clock skew",
            esc(&node
                .clock_skew_ms
                .map_or("–".into(), |_| node.clock_skew_text())),
        ),
        ("First seen", html::time(node.first_seen)),
        ("Load", load(&node)),
        (
            "Outbox",
            format!(
                "{} waiting, {} dropped runs, {} lost fires, {} refused fires",
                node.stats.outbox_depth,
                node.stats.dropped_runs,
                node.stats.lost_fires,
                node.stats.refused_fires
            ),
        ),
    ] {
        let _ = write!(body, "<dt>{k}</dt><dd>{v}</dd>");
    }
    body.push_str("</dl></section>");
    body.push_str(&facts_card(&node));

    let history = ui.app.beats.load_history();
    let _ = write!(
        body,
        "<section class=\"card\"><h2>Load over time</h2>{}</section>",
        chart::load(
            "node-load",
            &history.samples(node.node_id),
            history.every().as_secs(),
            chrono::Utc::now()
        )
    );

    body.push_str("<section class=\"card\"><h2>Running now</h2>");
    if node.running.is_empty() {
        body.push_str("<p class=\"muted\">Nothing is running.</p>");
    } else {
        body.push_str(
            "<table><thead><tr><th>Job</th><th>Trigger</th><th>Started</th></tr></thead><tbody>",
        );
        for r in &node.running {
            let _ = write!(
                body,
                "<tr><td><a href=\"/ui/runs/{}\">{}</a></td><td>{}</td><td>{}</td></tr>",
                r.run_id,
                esc(&r.job),
                r.trigger.as_str(),
                html::time(r.started_at)
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("</section>");

    let selected: Vec<_> = jobs
        .iter()
        .filter(|j| j.spec.selector().matches(&ident))
        .collect();
    let _ = write!(
        body,
        "<section class=\"card\"><h2>Jobs that select this node ({})</h2>",
        selected.len()
    );
    if selected.is_empty() {
        body.push_str("<p class=\"muted\">No job selects this node.</p>");
    } else {
        body.push_str("<ul class=\"chips\">");
        for j in selected.iter().take(200) {
            let _ = write!(
                body,
                "<li><a href=\"/ui/jobs/{}\">{}</a> {}</li>",
                html::url(&j.spec.name),
                esc(&j.spec.name),
                if j.spec.enabled { "" } else { "(disabled)" }
            );
        }
        body.push_str("</ul>");
    }
    body.push_str("</section>");

    body.push_str("<section class=\"card\"><h2>Installed packages</h2>");
    if node.packages.is_empty() {
        body.push_str("<p class=\"muted\">The agent reports no package.</p>");
    } else {
        body.push_str("<table><thead><tr><th>Package</th><th>Version</th><th>State</th><th>Error</th></tr></thead><tbody>");
        for p in &node.packages {
            let target = p
                .target_version
                .map(|t| format!(" → {t}"))
                .unwrap_or_default();
            let _ = write!(
                body,
                "<tr><td><a href=\"/ui/packages/{}\">{}</a></td><td>{}{target}</td><td>{}</td><td>{}</td></tr>",
                html::url(&p.name),
                esc(&p.name),
                p.version,
                package_state(p.state),
                esc(p.error.as_deref().unwrap_or(""))
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("</section>");

    body.push_str("<section class=\"card\"><h2>Recent runs</h2>");
    body.push_str(&super::runs::table(&runs, true));
    let _ = write!(
        body,
        "<p><a href=\"/ui/runs?host={}\">All runs on this node →</a></p></section></div>",
        node.node_id
    );
    html::respond(
        StatusCode::OK,
        html::page(&node.hostname, Section::Nodes, Some(&s), &body),
    )
}

/// A package state as a badge that reads without colour.
pub fn package_state(s: PackageState) -> String {
    match s {
        PackageState::Installed => {
            "<span class=\"badge good\"><span aria-hidden=\"true\">✓</span> installed</span>".into()
        }
        PackageState::Downloading => {
            "<span class=\"badge busy\"><span aria-hidden=\"true\">↓</span> downloading</span>"
                .into()
        }
        PackageState::Failed => {
            "<span class=\"badge bad\"><span aria-hidden=\"true\">✕</span> failed</span>".into()
        }
    }
}

/// The status badge, and for a Degraded node the reason its agent reported.
fn status_cell(n: &NodeInfo) -> String {
    match (&n.degraded, n.status) {
        (Some(why), NodeStatus::Degraded) => format!(
            "{} <span class=\"muted\" data-degraded>{}</span>",
            html::node_status(n.status),
            esc(why)
        ),
        _ => html::node_badge(n),
    }
}

/// Parsing of the status filter.
trait ParseUi: Sized {
    fn parse_ui(s: &str) -> Option<Self>;
}

impl ParseUi for NodeStatus {
    fn parse_ui(s: &str) -> Option<NodeStatus> {
        match s {
            "Ready" => Some(NodeStatus::Ready),
            "Degraded" => Some(NodeStatus::Degraded),
            "NotReady" => Some(NodeStatus::NotReady),
            "Left" => Some(NodeStatus::Left),
            _ => None,
        }
    }
}

/// The facts the node's agent probed (`fact.KEY` selectors name these keys), with its disks.
fn facts_card(node: &op_proto::NodeInfo) -> String {
    let mut out = String::from("<section class=\"card\" id=\"node-facts\"><h2>Facts</h2>");
    let Some(facts) = &node.facts else {
        out.push_str("<p class=\"muted\">Its agent has not reported facts.</p></section>");
        return out;
    };
    out.push_str("<dl class=\"facts\">");
    for (key, _) in op_proto::facts::FACT_KEYS {
        if let Some(v) = facts.get(key) {
            let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", esc(key), esc(&v.text()));
        }
    }
    out.push_str("</dl>");
    if !facts.disks.is_empty() {
        out.push_str(
            "<table><thead><tr><th>Mount</th><th>Device</th><th>Filesystem</th><th>Size</th></tr></thead><tbody>",
        );
        for d in &facts.disks {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1} GiB</td></tr>",
                esc(&d.mount),
                esc(&d.device),
                esc(&d.fs),
                d.size_bytes as f64 / (1u64 << 30) as f64
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");
    out
}
