//! Prometheus metrics (`GET /metrics`). Counters are bumped where things happen; gauges that
//! describe stored state (nodes by status, runs, raft indexes) are read at scrape time.
//!
//! Names follow Prometheus conventions: base units in the name (`_seconds`, `_bytes`), `_total`
//! on counters, and labels whose values come from a fixed set (status codes, routes, command
//! kinds, run statuses, raft states). The labels an operator chooses are `job` on
//! `op_manager_job_latest_runs`, bounded by the number of saved jobs, and `rule` on the
//! `op_manager_notify_*` series, bounded by the number of notification rules. The text is served in the
//! Prometheus 0.0.4 format ([`op_proto::exposition`]), which `promtool check metrics` accepts.

use op_proto::NodeStatus;
use op_store::StoreStats;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::downloads::DownloadMetrics;

type Labels = Vec<(String, String)>;

/// Request durations: from a cached read to a sync call parked for its whole wait.
const HTTP_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Run durations: from a 10 ms `true` to an hour-long backup.
const RUN_BUCKETS: [f64; 13] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS)
}

fn run_histogram() -> Histogram {
    Histogram::new(RUN_BUCKETS)
}

/// The raft facts `/metrics` shows, read from openraft's metrics at scrape time.
#[derive(Debug, Clone, Default)]
pub struct RaftView {
    pub term: u64,
    pub applied: u64,
    pub last_log: u64,
    pub committed: u64,
    pub snapshot: u64,
    pub leader: bool,
    pub has_leader: bool,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub state: &'static str,
    pub voters: u64,
    pub members: usize,
    /// Per follower: entries it has not acknowledged (leader only).
    pub lag: Vec<(u64, u64)>,
}

/// Every value `op_manager_raft_state` can take, so each is always present (0 or 1).
pub const RAFT_STATES: [&str; 5] = ["leader", "follower", "candidate", "learner", "shutdown"];

/// What the run duration histogram needs of a run record, taken before the record is handed on,
/// so that a batch of records is not copied only to be measured.
#[derive(Debug, Clone, Copy)]
pub struct RunDuration {
    status: &'static str,
    seconds: f64,
}

impl RunDuration {
    /// A finished run's status and duration; `None` for a run without both times.
    pub fn of(run: &op_proto::RunRecord) -> Option<RunDuration> {
        Some(RunDuration {
            status: run.status.as_str(),
            seconds: run.duration_ms()?.max(0) as f64 / 1000.0,
        })
    }
}

pub struct Metrics {
    registry: Registry,
    http: Family<Labels, Counter>,
    commands: Family<Labels, Counter>,
    status_changes: Family<Labels, Counter>,
    heartbeats: Counter,
    pub runs_stored: Counter,
    pub runs_duplicate: Counter,
    runs_pruned: Counter,
    pub syncs_parked: Gauge,
    /// Agents holding a watch (`op_proto::watch`).
    pub watches_open: Gauge,
    watch_states: Family<Labels, Counter>,
    watch_state_bytes: Family<Labels, Counter>,
    /// Beats taken in on watches.
    pub watch_beats: Counter,
    pub invocation_streams: Gauge,
    nodes: Family<Labels, Gauge>,
    jobs: Gauge,
    runs: Gauge,
    run_bytes: Gauge,
    raft_term: Gauge,
    raft_applied: Gauge,
    raft_leader: Gauge,
    raft_committed: Gauge,
    raft_members: Gauge,
    raft_lag: Family<Labels, Gauge>,
    leader_changes: Counter,
    /// Log lines dropped because stderr failed or stalled (`op_log::write_failures`).
    log_write_failures: Counter,
    /// Blob copies confirmed by peers, blobs fetched from peers, referenced blobs still missing.
    pub blob_pushes: Counter,
    pub blob_fetches: Counter,
    pub blobs_missing: Gauge,
    /// Shared with the download gate, which updates them.
    pub downloads: DownloadMetrics,
    pub uploads: Counter,
    pub upload_bytes: Counter,
    blobs_deleted: Counter,
    packages: Gauge,
    package_versions: Gauge,
    package_bytes: Gauge,
    http_duration: Family<Labels, Histogram, fn() -> Histogram>,
    run_duration: Family<Labels, Histogram, fn() -> Histogram>,
    job_latest: Family<Labels, Gauge>,
    raft_state: Family<Labels, Gauge>,
    raft_has_leader: Gauge,
    raft_last_log: Gauge,
    raft_snapshot: Gauge,
    raft_voters: Gauge,
    agent_outbox: Gauge,
    agent_dropped: Gauge,
    notify_deliveries: Family<Labels, Counter>,
    notify_failures: Family<Labels, Gauge>,
    notify_pending: Family<Labels, Gauge>,
    notify_failing: Gauge,
    /// Consecutive failures per rule, to count the failing channels.
    notify_health: std::sync::Mutex<std::collections::BTreeMap<String, u32>>,
    /// API connections closed at accept because `max_connections` were open; open now.
    connections_refused: Counter,
    connections_open: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn labels(k: &str, v: &str) -> Labels {
    vec![(k.to_string(), v.to_string())]
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("op_manager");
        let m = Metrics {
            registry: Registry::default(),
            http: Family::default(),
            commands: Family::default(),
            status_changes: Family::default(),
            heartbeats: Counter::default(),
            runs_stored: Counter::default(),
            runs_duplicate: Counter::default(),
            runs_pruned: Counter::default(),
            syncs_parked: Gauge::default(),
            watches_open: Gauge::default(),
            watch_states: Family::default(),
            watch_beats: Counter::default(),
            watch_state_bytes: Family::default(),
            invocation_streams: Gauge::default(),
            nodes: Family::default(),
            jobs: Gauge::default(),
            runs: Gauge::default(),
            run_bytes: Gauge::default(),
            raft_term: Gauge::default(),
            raft_applied: Gauge::default(),
            raft_leader: Gauge::default(),
            raft_committed: Gauge::default(),
            raft_members: Gauge::default(),
            raft_lag: Family::default(),
            leader_changes: Counter::default(),
            log_write_failures: Counter::default(),
            blob_pushes: Counter::default(),
            blob_fetches: Counter::default(),
            blobs_missing: Gauge::default(),
            downloads: DownloadMetrics::default(),
            uploads: Counter::default(),
            upload_bytes: Counter::default(),
            blobs_deleted: Counter::default(),
            packages: Gauge::default(),
            package_versions: Gauge::default(),
            package_bytes: Gauge::default(),
            http_duration: Family::new_with_constructor(http_histogram),
            run_duration: Family::new_with_constructor(run_histogram),
            job_latest: Family::default(),
            raft_state: Family::default(),
            raft_has_leader: Gauge::default(),
            raft_last_log: Gauge::default(),
            raft_snapshot: Gauge::default(),
            raft_voters: Gauge::default(),
            agent_outbox: Gauge::default(),
            agent_dropped: Gauge::default(),
            notify_deliveries: Family::default(),
            notify_failures: Family::default(),
            notify_pending: Family::default(),
            notify_failing: Gauge::default(),
            notify_health: Default::default(),
            connections_refused: Counter::default(),
            connections_open: Gauge::default(),
        };
        r.register(
            "http_responses",
            "HTTP responses by status code",
            m.http.clone(),
        );
        r.register(
            "commands",
            "Commands applied through raft by kind",
            m.commands.clone(),
        );
        r.register(
            "node_status_changes",
            "Node status changes by new status",
            m.status_changes.clone(),
        );
        r.register(
            "heartbeats_flushed",
            "Heartbeats written in coalesced commands",
            m.heartbeats.clone(),
        );
        r.register("runs_stored", "Run records stored", m.runs_stored.clone());
        r.register(
            "runs_duplicate",
            "Run records received again and ignored",
            m.runs_duplicate.clone(),
        );
        r.register(
            "runs_pruned",
            "Run records deleted by retention",
            m.runs_pruned.clone(),
        );
        r.register(
            "syncs_parked",
            "Agent sync calls waiting for a change",
            m.syncs_parked.clone(),
        );
        r.register(
            "watches_open",
            "Agents holding a watch connection (heartbeats up, desired state down)",
            m.watches_open.clone(),
        );
        r.register(
            "watch_states",
            "Desired states sent down watches, by kind: whole, delta (the jobs the agent holds named, not sent), light (output requests alone)",
            m.watch_states.clone(),
        );
        r.register(
            "watch_state_bytes",
            "Bytes of the desired states sent down watches, by kind",
            m.watch_state_bytes.clone(),
        );
        r.register(
            "watch_beats",
            "Heartbeats taken in on watches (each agent beats once per sync wait, and at once when it has news)",
            m.watch_beats.clone(),
        );
        r.register(
            "invocation_streams",
            "Waiting invocations streaming their results",
            m.invocation_streams.clone(),
        );
        r.register("nodes", "Nodes by status", m.nodes.clone());
        r.register("jobs", "Jobs", m.jobs.clone());
        r.register("runs", "Stored run records", m.runs.clone());
        r.register(
            "run_bytes",
            "Bytes of stored run records",
            m.run_bytes.clone(),
        );
        r.register("raft_term", "Current raft term", m.raft_term.clone());
        r.register(
            "raft_applied_index",
            "Last applied raft log index",
            m.raft_applied.clone(),
        );
        r.register(
            "raft_is_leader",
            "1 when this manager is the raft leader",
            m.raft_leader.clone(),
        );
        r.register(
            "raft_committed_index",
            "Highest raft log index this manager knows to be committed",
            m.raft_committed.clone(),
        );
        r.register(
            "raft_members",
            "Members (voters and learners) of the cluster",
            m.raft_members.clone(),
        );
        r.register(
            "raft_replication_lag",
            "Entries a follower has not acknowledged yet (reported by the leader)",
            m.raft_lag.clone(),
        );
        r.register(
            "log_write_failures",
            "Log lines dropped because stderr could not take them (a broken or stalled pipe)",
            m.log_write_failures.clone(),
        );
        r.register(
            "raft_leader_changes",
            "Times this manager saw the leader change",
            m.leader_changes.clone(),
        );
        r.register(
            "blob_pushes",
            "Package blobs copied to a peer",
            m.blob_pushes.clone(),
        );
        r.register(
            "blob_fetches",
            "Package blobs fetched from a peer because they were missing here",
            m.blob_fetches.clone(),
        );
        r.register(
            "blobs_missing",
            "Package blobs the store refers to that are not on this manager yet",
            m.blobs_missing.clone(),
        );
        r.register(
            "package_downloads_in_flight",
            "Package downloads being served now",
            m.downloads.in_flight.clone(),
        );
        r.register(
            "package_downloads_peak",
            "Most package downloads served at once since start (never above download_concurrency)",
            m.downloads.peak.clone(),
        );
        r.register(
            "package_downloads",
            "Package downloads started",
            m.downloads.served.clone(),
        );
        r.register(
            "package_downloads_refused",
            "Package downloads refused with 429 because download_concurrency were running",
            m.downloads.refused.clone(),
        );
        r.register(
            "package_download_bytes",
            "Package bytes sent",
            m.downloads.bytes.clone(),
        );
        r.register(
            "package_uploads",
            "Package uploads stored",
            m.uploads.clone(),
        );
        r.register(
            "package_upload_bytes",
            "Package bytes received in stored uploads",
            m.upload_bytes.clone(),
        );
        r.register(
            "blobs_deleted",
            "Package blob files deleted by GC",
            m.blobs_deleted.clone(),
        );
        r.register("packages", "Packages", m.packages.clone());
        r.register(
            "package_versions",
            "Stored package versions",
            m.package_versions.clone(),
        );
        r.register(
            "package_bytes",
            "Bytes of all stored package versions",
            m.package_bytes.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Time to answer an API request (until the response head), by route template",
            m.http_duration.clone(),
        );
        r.register(
            "run_duration_seconds",
            "Wall-clock duration of the run records this manager stored, by final status",
            m.run_duration.clone(),
        );
        r.register(
            "job_latest_runs",
            "Nodes whose latest run of the job in the last hour has the status",
            m.job_latest.clone(),
        );
        r.register(
            "raft_state",
            "1 for this manager's raft state (leader, follower, candidate, learner, shutdown)",
            m.raft_state.clone(),
        );
        r.register(
            "raft_has_leader",
            "1 when this manager knows a raft leader",
            m.raft_has_leader.clone(),
        );
        r.register(
            "raft_last_log_index",
            "Index of the last entry in this manager's raft log",
            m.raft_last_log.clone(),
        );
        r.register(
            "raft_snapshot_index",
            "Last log index included in this manager's latest raft snapshot",
            m.raft_snapshot.clone(),
        );
        r.register(
            "raft_voters",
            "Voting members in the cluster's membership as this manager sees it",
            m.raft_voters.clone(),
        );
        r.register(
            "agent_outbox_runs",
            "Finished runs waiting in the agents' outboxes, as their last heartbeats reported",
            m.agent_outbox.clone(),
        );
        r.register(
            "agent_dropped_runs",
            "Runs the agents dropped from full outboxes since they started, as last reported",
            m.agent_dropped.clone(),
        );
        r.register(
            "notify_deliveries",
            "Notification delivery attempts by rule and result (ok, failed); on the leader",
            m.notify_deliveries.clone(),
        );
        r.register(
            "notify_consecutive_failures",
            "Failed delivery attempts since the rule's last success (0: healthy); on the leader",
            m.notify_failures.clone(),
        );
        r.register(
            "notify_pending_events",
            "Events a rule matched that its receiver has not acknowledged yet; on the leader",
            m.notify_pending.clone(),
        );
        r.register(
            "notify_failing_channels",
            "Notification rules whose last delivery attempt failed; on the leader",
            m.notify_failing.clone(),
        );
        r.register(
            "connections_refused",
            "API connections closed as soon as accepted because max_connections were open",
            m.connections_refused.clone(),
        );
        r.register(
            "connections_open",
            "API connections open now (counted against max_connections)",
            m.connections_open.clone(),
        );
        let build = Family::<Labels, Gauge>::default();
        build
            .get_or_create(&labels("version", env!("CARGO_PKG_VERSION")))
            .set(1);
        r.register("build_info", "The manager's version (always 1)", build);
        Metrics { registry: r, ..m }
    }

    /// One answered request: its route template (never the raw path, which holds names and
    /// ids) and how long the handler took.
    pub fn http_request(&self, route: &str, seconds: f64) {
        self.http_duration
            .get_or_create(&labels("route", route))
            .observe(seconds);
    }

    /// Stored run records (new ones only), as [`RunDuration::of`] took them.
    pub fn runs_stored(&self, runs: &[RunDuration]) {
        for r in runs {
            self.run_duration
                .get_or_create(&labels("status", r.status))
                .observe(r.seconds);
        }
    }

    pub fn http_response(&self, status: u16) {
        self.http
            .get_or_create(&labels("code", &status.to_string()))
            .inc();
    }

    pub fn command_applied(&self, kind: &str) {
        self.commands.get_or_create(&labels("kind", kind)).inc();
    }

    pub fn node_status_changed(&self, status: NodeStatus) {
        self.status_changes
            .get_or_create(&labels("status", status.as_str()))
            .inc();
    }

    /// A desired state went down a watch: `kind` is `whole`, `delta` or `light`.
    pub fn watch_state_sent(&self, kind: &'static str, bytes: usize) {
        let kind = labels("kind", kind);
        self.watch_states.get_or_create(&kind).inc();
        self.watch_state_bytes
            .get_or_create(&kind)
            .inc_by(bytes as u64);
    }

    pub fn heartbeats_flushed(&self, n: u64) {
        self.heartbeats.inc_by(n);
    }

    pub fn pruned(&self, runs: u64) {
        self.runs_pruned.inc_by(runs);
    }

    pub fn blobs_deleted(&self, n: u64) {
        self.blobs_deleted.inc_by(n);
    }

    /// One delivery attempt of notification rule `rule` (the label is bounded by the rules).
    pub fn notify_delivery(&self, rule: &str, ok: bool) {
        self.notify_deliveries
            .get_or_create(&vec![
                ("rule".to_string(), rule.to_string()),
                (
                    "result".to_string(),
                    if ok { "ok" } else { "failed" }.to_string(),
                ),
            ])
            .inc();
    }

    /// A rule's queue as its worker sees it now.
    pub fn notify_state(&self, rule: &str, pending: usize, failures: u32) {
        let l = labels("rule", rule);
        self.notify_pending.get_or_create(&l).set(pending as i64);
        self.notify_failures
            .get_or_create(&l)
            .set(i64::from(failures));
        if let Ok(mut h) = self.notify_health.lock() {
            h.insert(rule.to_string(), failures);
            self.notify_failing
                .set(h.values().filter(|f| **f > 0).count() as i64);
        }
    }

    /// A rule was removed, or this manager stopped delivering (`None`: every rule).
    pub fn notify_forget(&self, rule: Option<&str>) {
        let Ok(mut h) = self.notify_health.lock() else {
            return;
        };
        match rule {
            Some(rule) => {
                let l = labels("rule", rule);
                self.notify_pending.remove(&l);
                self.notify_failures.remove(&l);
                h.remove(rule);
            }
            None => {
                self.notify_pending.clear();
                self.notify_failures.clear();
                h.clear();
            }
        }
        self.notify_failing
            .set(h.values().filter(|f| **f > 0).count() as i64);
    }

    pub fn leader_changed(&self) {
        self.leader_changes.inc();
    }

    /// The connection cap's counts (`op_tls::guard::ConnCap`), read at scrape time.
    pub fn connections(&self, open: usize, refused: u64) {
        self.connections_open.set(open as i64);
        let seen = self.connections_refused.get();
        if refused > seen {
            self.connections_refused.inc_by(refused - seen);
        }
    }

    /// Renders the text format, after setting the scrape-time gauges.
    pub fn render(
        &self,
        stats: &StoreStats,
        latest: &[op_store::LatestRunCount],
        raft: &RaftView,
    ) -> String {
        for (status, n) in [
            (NodeStatus::Ready, stats.nodes_ready),
            (NodeStatus::Degraded, stats.nodes_degraded),
            (NodeStatus::NotReady, stats.nodes_not_ready),
            (NodeStatus::Left, stats.nodes_left),
        ] {
            self.nodes
                .get_or_create(&labels("status", status.as_str()))
                .set(n as i64);
        }
        self.jobs.set(stats.jobs as i64);
        self.runs.set(stats.runs as i64);
        self.run_bytes.set(stats.run_bytes as i64);
        self.packages.set(stats.packages as i64);
        self.package_versions.set(stats.package_versions as i64);
        self.package_bytes.set(stats.package_bytes as i64);
        self.agent_outbox.set(stats.agent_outbox_runs as i64);
        self.agent_dropped.set(stats.agent_dropped_runs as i64);
        let failures = op_log::write_failures();
        let seen = self.log_write_failures.get();
        if failures > seen {
            self.log_write_failures.inc_by(failures - seen);
        }
        self.raft_term.set(raft.term as i64);
        self.raft_applied.set(raft.applied as i64);
        self.raft_leader.set(i64::from(raft.leader));
        self.raft_has_leader.set(i64::from(raft.has_leader));
        self.raft_last_log.set(raft.last_log as i64);
        self.raft_snapshot.set(raft.snapshot as i64);
        self.raft_voters.set(raft.voters as i64);
        self.raft_committed.set(raft.committed as i64);
        self.raft_members.set(raft.members as i64);
        // Only the leader knows its followers' progress; elsewhere the family is emptied.
        self.raft_lag.clear();
        for (peer, lag) in &raft.lag {
            self.raft_lag
                .get_or_create(&labels("peer", &peer.to_string()))
                .set(*lag as i64);
        }
        for state in RAFT_STATES {
            self.raft_state
                .get_or_create(&labels("state", state))
                .set(i64::from(state == raft.state));
        }
        // Jobs come and go: rebuild the family so a deleted job's series disappears.
        self.job_latest.clear();
        for c in latest {
            self.job_latest
                .get_or_create(&vec![
                    ("job".to_string(), c.job.clone()),
                    ("status".to_string(), c.status.clone()),
                ])
                .set(c.nodes as i64);
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        op_proto::exposition::openmetrics_to_prometheus(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(m: &Metrics) -> String {
        m.render(
            &StoreStats::default(),
            &[],
            &RaftView {
                state: "leader",
                ..RaftView::default()
            },
        )
    }

    #[test]
    fn failing_channels_count_the_rules_whose_last_attempt_failed() {
        let m = Metrics::new();
        m.notify_state("ops", 3, 2);
        m.notify_state("mail", 0, 0);
        m.notify_delivery("ops", false);
        let text = scrape(&m);
        assert!(
            text.contains("op_manager_notify_failing_channels 1"),
            "{text}"
        );
        assert!(
            text.contains("op_manager_notify_pending_events{rule=\"ops\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("op_manager_notify_deliveries_total{rule=\"ops\",result=\"failed\"} 1"),
            "{text}"
        );
        // A removed rule's series go; losing the leadership empties them all.
        m.notify_forget(Some("ops"));
        let text = scrape(&m);
        assert!(
            text.contains("op_manager_notify_failing_channels 0"),
            "{text}"
        );
        assert!(
            !text.contains("op_manager_notify_pending_events{rule=\"ops\"}"),
            "{text}"
        );
        assert!(
            text.contains("op_manager_notify_pending_events{rule=\"mail\"} 0"),
            "{text}"
        );
        m.notify_forget(None);
        assert!(!scrape(&m).contains("op_manager_notify_pending_events{"));
    }
}
