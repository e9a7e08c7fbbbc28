//! Prometheus metrics (`GET /metrics`). Counters are bumped where things happen; gauges that
//! describe stored state (nodes by status, runs, raft indexes) are read at scrape time.

use op_proto::NodeStatus;
use op_store::StoreStats;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::downloads::DownloadMetrics;

type Labels = Vec<(String, String)>;

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
    pub invocation_streams: Gauge,
    nodes: Family<Labels, Gauge>,
    jobs: Gauge,
    runs: Gauge,
    run_bytes: Gauge,
    raft_term: Gauge,
    raft_applied: Gauge,
    raft_leader: Gauge,
    /// Shared with the download gate, which updates them.
    pub downloads: DownloadMetrics,
    pub uploads: Counter,
    pub upload_bytes: Counter,
    blobs_deleted: Counter,
    packages: Gauge,
    package_versions: Gauge,
    package_bytes: Gauge,
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
            invocation_streams: Gauge::default(),
            nodes: Family::default(),
            jobs: Gauge::default(),
            runs: Gauge::default(),
            run_bytes: Gauge::default(),
            raft_term: Gauge::default(),
            raft_applied: Gauge::default(),
            raft_leader: Gauge::default(),
            downloads: DownloadMetrics::default(),
            uploads: Counter::default(),
            upload_bytes: Counter::default(),
            blobs_deleted: Counter::default(),
            packages: Gauge::default(),
            package_versions: Gauge::default(),
            package_bytes: Gauge::default(),
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
        Metrics { registry: r, ..m }
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

    pub fn heartbeats_flushed(&self, n: u64) {
        self.heartbeats.inc_by(n);
    }

    pub fn pruned(&self, runs: u64) {
        self.runs_pruned.inc_by(runs);
    }

    pub fn blobs_deleted(&self, n: u64) {
        self.blobs_deleted.inc_by(n);
    }

    /// Renders the text format, after setting the scrape-time gauges.
    pub fn render(&self, stats: &StoreStats, term: u64, applied: u64, leader: bool) -> String {
        for (status, n) in [
            (NodeStatus::Ready, stats.nodes_ready),
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
        self.raft_term.set(term as i64);
        self.raft_applied.set(applied as i64);
        self.raft_leader.set(i64::from(leader));
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
