//! The overview: the fleet at a glance. Nodes Ready / NotReady, jobs and failing jobs, runs in
//! progress, hosts behind on packages, and who leads the cluster. It refreshes itself every few
//! seconds (`data-refresh`), so a page left open on a wall screen stays true.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use op_proto::{NodeInfo, NodeStatus, RunStatus};

use super::Ui;
use super::html::{self, Section, esc, tile};
use super::session::SessionView;

/// Everything the overview counts, from one read of the store.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub ready: usize,
    pub degraded: usize,
    pub not_ready: usize,
    pub left: usize,
    pub jobs: usize,
    pub disabled: usize,
    /// Jobs whose latest run failed on at least one host.
    pub failing: BTreeMap<String, u64>,
    pub running: usize,
    pub packages: usize,
    /// (package, hosts not on its current version).
    pub behind: BTreeMap<String, usize>,
}

/// Counts the fleet: `last` is the latest result per (job, host), counted by status.
pub fn count(
    nodes: &[NodeInfo],
    jobs: &[op_proto::api::JobRecord],
    last: &[(String, RunStatus, u64)],
    packages: &[op_proto::package::PackageVersion],
) -> Counts {
    let mut c = Counts::default();
    for n in nodes {
        match n.status {
            NodeStatus::Ready => c.ready += 1,
            NodeStatus::Degraded => c.degraded += 1,
            NodeStatus::NotReady => c.not_ready += 1,
            NodeStatus::Left => c.left += 1,
        }
        if n.status != NodeStatus::Left {
            c.running += n.running.len();
        }
    }
    c.jobs = jobs.len();
    c.disabled = jobs.iter().filter(|j| !j.spec.enabled).count();
    let names: BTreeSet<&str> = jobs.iter().map(|j| j.spec.name.as_str()).collect();
    for (job, status, hosts) in last {
        if status.is_failure() && names.contains(job.as_str()) {
            *c.failing.entry(job.clone()).or_default() += hosts;
        }
    }
    c.packages = packages.len();
    for p in packages {
        let behind = nodes
            .iter()
            .filter(|n| n.status != NodeStatus::Left)
            .filter(|n| {
                !n.packages
                    .iter()
                    .any(|i| i.name == p.name && i.version == p.version)
            })
            .count();
        if behind > 0 {
            c.behind.insert(p.name.clone(), behind);
        }
    }
    c
}

pub async fn page(State(ui): State<Arc<Ui>>, Extension(s): Extension<SessionView>) -> Response {
    let read = ui
        .app
        .read(|st| {
            Ok((
                st.nodes()?,
                st.jobs()?,
                st.last_results(&[])?,
                st.packages()?,
            ))
        })
        .await;
    let c = match read {
        Ok((mut nodes, jobs, last, packages)) => {
            ui.app.beats.overlay(&mut nodes);
            count(&nodes, &jobs, &last, &packages)
        }
        Err(e) => return html::server_error(&s, e),
    };
    let (leader, term, me) = {
        let m = ui.app.raft.metrics().borrow().clone();
        (m.current_leader, m.current_term, m.id)
    };
    let (leader_value, leader_label) = match leader {
        Some(l) if l == me => (l.to_string(), "cluster leader (this member)"),
        Some(l) => (l.to_string(), "cluster leader"),
        None => ("none".to_string(), "cluster leader (none elected)"),
    };
    let behind_hosts: usize = c.behind.values().sum();
    let mut body = String::with_capacity(4096);
    body.push_str("<h1>Overview</h1><div id=\"overview\" data-refresh=\"3000\">");
    body.push_str("<div class=\"tiles\">");
    body.push_str(&tile(
        "nodes-ready",
        "nodes Ready",
        &c.ready.to_string(),
        "good",
        "/ui/nodes?status=Ready",
    ));
    if c.degraded > 0 {
        body.push_str(&tile(
            "nodes-degraded",
            "nodes Degraded",
            &c.degraded.to_string(),
            "warn",
            "/ui/nodes?status=Degraded",
        ));
    }
    body.push_str(&tile(
        "nodes-notready",
        "nodes NotReady",
        &c.not_ready.to_string(),
        if c.not_ready > 0 { "bad" } else { "" },
        "/ui/nodes?status=NotReady",
    ));
    body.push_str(&tile("jobs", "jobs", &c.jobs.to_string(), "", "/ui/jobs"));
    body.push_str(&tile(
        "failing-jobs",
        "failing jobs",
        &c.failing.len().to_string(),
        if c.failing.is_empty() { "" } else { "bad" },
        "/ui/jobs?failing=1",
    ));
    body.push_str(&tile(
        "runs-in-progress",
        "runs in progress",
        &c.running.to_string(),
        if c.running > 0 { "busy" } else { "" },
        "/ui/runs?status=running",
    ));
    body.push_str(&tile(
        "packages-behind",
        "packages behind",
        &format!("{}", c.behind.len()),
        if behind_hosts > 0 { "warn" } else { "" },
        "/ui/packages",
    ));
    body.push_str(&tile(
        "cluster-leader",
        leader_label,
        &leader_value,
        "",
        "/ui/cluster",
    ));
    body.push_str("</div>");
    let _ = write!(
        body,
        "<p class=\"muted\">{} jobs disabled · {} nodes Left · {} packages · raft term {term}</p>",
        c.disabled, c.left, c.packages
    );
    body.push_str("<div class=\"cols\"><section class=\"card\"><h2>Failing jobs</h2>");
    if c.failing.is_empty() {
        body.push_str("<p class=\"muted\">No job's latest run failed on any host.</p>");
    } else {
        body.push_str("<table><thead><tr><th>Job</th><th>Hosts failing</th></tr></thead><tbody>");
        for (job, hosts) in c.failing.iter().take(20) {
            let _ = write!(
                body,
                "<tr><td><a href=\"/ui/jobs/{}\">{}</a></td><td>{} {hosts}</td></tr>",
                html::url(job),
                esc(job),
                html::run_status(RunStatus::Failed)
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("</section><section class=\"card\"><h2>Packages behind</h2>");
    if c.behind.is_empty() {
        body.push_str(
            "<p class=\"muted\">Every host runs the current version of every package.</p>",
        );
    } else {
        body.push_str(
            "<table><thead><tr><th>Package</th><th>Hosts behind</th></tr></thead><tbody>",
        );
        for (name, hosts) in c.behind.iter().take(20) {
            let _ = write!(
                body,
                "<tr><td><a href=\"/ui/packages/{}\">{}</a></td><td>{hosts}</td></tr>",
                html::url(name),
                esc(name)
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("</section></div></div>");
    html::respond(
        StatusCode::OK,
        html::page("Overview", Section::Overview, Some(&s), &body),
    )
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use op_proto::JobSpec;
    use op_proto::api::JobRecord;
    use op_proto::package::{InstalledPackage, PackageState, PackageVersion};

    use super::*;

    fn node(n: u8, status: NodeStatus, installed: Option<u64>) -> NodeInfo {
        let t = DateTime::from_timestamp(1_730_000_000, 0).unwrap();
        NodeInfo {
            node_id: uuid::Uuid::from_u128(u128::from(n)),
            hostname: format!("host-{n}"),
            ips: vec![],
            labels: Default::default(),
            agent_version: "0.1.0".into(),
            os: String::new(),
            arch: String::new(),
            status,
            first_seen: t,
            last_seen: t,
            load: None,
            running: vec![],
            packages: installed
                .map(|v| InstalledPackage {
                    name: "tool".into(),
                    version: v,
                    sha256: String::new(),
                    state: PackageState::Installed,
                    target_version: None,
                    error: None,
                })
                .into_iter()
                .collect(),
            stats: Default::default(),
            degraded: None,
        }
    }

    fn job(name: &str, enabled: bool) -> JobRecord {
        let t = DateTime::from_timestamp(1_730_000_000, 0).unwrap();
        let mut spec = JobSpec::new(name, "true");
        spec.enabled = enabled;
        JobRecord {
            spec,
            revision: 1,
            created_at: t,
            updated_at: t,
            updated_by: "admin".into(),
        }
    }

    #[test]
    fn counts_the_fleet() {
        let nodes = [
            node(1, NodeStatus::Ready, Some(2)),
            node(2, NodeStatus::NotReady, Some(1)),
            node(3, NodeStatus::Left, None),
        ];
        let jobs = [job("a", true), job("b", false)];
        let last = [
            ("a".to_string(), RunStatus::Failed, 1),
            ("a".to_string(), RunStatus::Ok, 1),
            ("b".to_string(), RunStatus::Ok, 2),
            // A deleted job's runs do not make a failing job.
            ("gone".to_string(), RunStatus::Failed, 1),
        ];
        let packages = [PackageVersion {
            name: "tool".into(),
            version: 2,
            sha256: String::new(),
            size: 1,
            deploy_dir: String::new(),
            uploaded_at: DateTime::from_timestamp(1_730_000_000, 0).unwrap(),
            uploader: "admin".into(),
            current: true,
        }];
        let c = count(&nodes, &jobs, &last, &packages);
        assert_eq!((c.ready, c.not_ready, c.left), (1, 1, 1));
        assert_eq!((c.jobs, c.disabled), (2, 1));
        assert_eq!(c.failing.into_iter().collect::<Vec<_>>(), [("a".into(), 1)]);
        // The NotReady node is behind; the Left one does not count.
        assert_eq!(
            c.behind.into_iter().collect::<Vec<_>>(),
            [("tool".into(), 1)]
        );
    }
}
