//! The overview: the fleet at a glance. Nodes Ready / NotReady, jobs and failing jobs, runs in
//! progress, hosts behind on packages, who leads the cluster, and a timeline of the runs and
//! failures of the last six hours. It refreshes itself every few
//! seconds (`data-refresh`), so a page left open on a wall screen stays true.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use op_proto::{NodeInfo, NodeStatus, RunStatus};
use op_store::RunBucket;

use super::Ui;
use super::chart;
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
        // Behind = not `current` by the standing the packages page and the CLI show.
        let behind = op_proto::analysis::Convergence::of(p, nodes).behind();
        if behind > 0 {
            c.behind.insert(p.name.clone(), behind);
        }
    }
    c
}

/// The timeline's slices: 24 of 15 minutes, the last six hours.
const SLICE_SECS: i64 = 15 * 60;
const SLICES: u32 = 24;

/// Where the timeline starts: slices are aligned to the clock, so the bars stay put as the page
/// refreshes and the newest slice is the one now fills.
pub fn timeline_start(now: DateTime<Utc>) -> DateTime<Utc> {
    let t = now.timestamp();
    let current = t - t.rem_euclid(SLICE_SECS);
    DateTime::from_timestamp(current - SLICE_SECS * (i64::from(SLICES) - 1), 0).unwrap_or(now)
}

/// How long the timeline's finished slices are reused. Counting six hours of runs reads every
/// run row in them (about 0.7 s for 200,000 runs), too much for a page that refreshes every few
/// seconds; the slice now is in is counted afresh on every request, and a run stored late into
/// an older slice shows within this long.
const SETTLED_TTL: Duration = Duration::from_secs(60);

/// Finished slices as counted: when, for the window starting when, and the counts.
struct Settled {
    counted: Instant,
    start: DateTime<Utc>,
    buckets: Vec<RunBucket>,
}

/// The counts of the timeline's finished slices, reused for [`SETTLED_TTL`].
#[derive(Default)]
pub struct TimelineCache {
    settled: Mutex<Option<Settled>>,
}

impl TimelineCache {
    fn get(&self, start: DateTime<Utc>) -> Option<Vec<RunBucket>> {
        let held = self.settled.lock().ok()?;
        held.as_ref()
            .filter(|s| s.start == start && s.counted.elapsed() < SETTLED_TTL)
            .map(|s| s.buckets.clone())
    }

    fn put(&self, start: DateTime<Utc>, buckets: &[RunBucket]) {
        if let Ok(mut held) = self.settled.lock() {
            *held = Some(Settled {
                counted: Instant::now(),
                start,
                buckets: buckets.to_vec(),
            });
        }
    }
}

/// The last six hours in slices: the finished ones from the cache when fresh, the current one
/// from the store.
fn timeline(
    st: &op_store::Store,
    cache: &TimelineCache,
    start: DateTime<Utc>,
) -> op_store::Result<Vec<RunBucket>> {
    let width = chrono::Duration::seconds(SLICE_SECS);
    let mut buckets = match cache.get(start) {
        Some(b) => b,
        None => {
            let b = st.run_timeline(start, width, SLICES - 1)?;
            cache.put(start, &b);
            b
        }
    };
    let current = start + width * (SLICES as i32 - 1);
    buckets.extend(st.run_timeline(current, width, 1)?);
    Ok(buckets)
}

pub async fn page(State(ui): State<Arc<Ui>>, Extension(s): Extension<SessionView>) -> Response {
    let now = Utc::now();
    let start = timeline_start(now);
    let u = ui.clone();
    let read = ui
        .app
        .read(move |st| {
            Ok((
                st.nodes()?,
                st.jobs()?,
                st.last_results(&[])?,
                st.packages()?,
                timeline(st, &u.timeline, start)?,
            ))
        })
        .await;
    let (c, timeline) = match read {
        Ok((mut nodes, mut jobs, mut last, packages, timeline)) => {
            // A policy token's counts are of its jobs and hosts.
            ui.app.beats.overlay(&mut nodes);
            s.caller.narrow_nodes(&mut nodes);
            jobs.retain(|j| s.caller.sees_job(&j.spec.name));
            last.retain(|(j, _, _)| s.caller.sees_job(j));
            (count(&nodes, &jobs, &last, &packages), timeline)
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
    let _ = write!(
        body,
        "<section class=\"card\"><h2>Runs and failures, last 6 hours</h2>{}</section>",
        chart::timeline("fleet-runs", &timeline, SLICE_SECS, now)
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
            manager_labels: Default::default(),
            facts: None,
            agent_version: "0.1.0".into(),
            os: String::new(),
            arch: String::new(),
            machine_id: String::new(),
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
                    fetched: None,
                })
                .into_iter()
                .collect(),
            stats: Default::default(),
            degraded: None,
            clock_skew_ms: None,
            capabilities: Vec::new(),
            drain: None,
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
    fn timeline_slices_follow_the_clock() {
        let now = DateTime::from_timestamp(1_800_000_000 + 7 * 60, 0).unwrap();
        let start = timeline_start(now);
        assert_eq!(start.timestamp() % SLICE_SECS, 0);
        // The newest slice holds now; the 24 slices end at its end.
        let end = start.timestamp() + SLICE_SECS * i64::from(SLICES);
        assert!(end > now.timestamp() && end - now.timestamp() <= SLICE_SECS);
    }

    #[test]
    fn settled_slices_are_reused_only_for_the_same_window() {
        let cache = TimelineCache::default();
        let start = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        assert!(cache.get(start).is_none());
        let b = vec![RunBucket {
            start,
            runs: 2,
            failed: 1,
        }];
        cache.put(start, &b);
        assert_eq!(cache.get(start), Some(b));
        // A new slice began: the window moved, the counts are read again.
        assert!(
            cache
                .get(start + chrono::Duration::seconds(SLICE_SECS))
                .is_none()
        );
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
            target: Default::default(),
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
