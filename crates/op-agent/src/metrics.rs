//! The agent's Prometheus metrics, served by `GET /metrics`.
//!
//! The same counters feed the [`AgentStats`] of `/v1/status` (and, later, every heartbeat), so
//! what an operator sees in Prometheus and in the CLI never disagrees. Components only call the
//! small methods here; the registry and text encoding stay in this module.
//!
//! Names follow Prometheus conventions (docs/operations.md, "Monitoring"): base units in the name
//! (`_seconds`, `_bytes`), `_total` on counters, and labels with a fixed set of values only (a
//! run's status, a sync's result), never a job name, run id or URL.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64};

use op_proto::node::AgentStats;
use op_proto::{RunRecord, RunStatus};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Run durations: from a 10 ms `true` to an hour-long backup.
const RUN_BUCKETS: [f64; 13] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];
/// Sync calls: a change arrives in milliseconds; an idle call parks for the manager's sync wait.
const SYNC_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// From a run's end to the manager's acknowledgement: milliseconds normally, hours in an outage.
const DELIVERY_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 3600.0, 86400.0,
];

fn run_histogram() -> Histogram {
    Histogram::new(RUN_BUCKETS)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

struct Inner {
    registry: Registry,
    runs: Family<StatusLabel, Counter>,
    skipped_fires: Counter,
    lost_fires: Counter,
    refused_fires: Counter,
    running: Gauge<i64, AtomicI64>,
    outbox_depth: Gauge<i64, AtomicI64>,
    outbox_bytes: Gauge<i64, AtomicI64>,
    outbox_dropped: Counter<u64, AtomicU64>,
    run_duration: Family<StatusLabel, Histogram, fn() -> Histogram>,
    syncs: Family<ResultLabel, Counter>,
    sync_duration: Histogram,
    last_sync: Gauge<f64, AtomicU64>,
    delivered: Counter,
    delivery_delay: Histogram,
    log_write_failures: Counter,
    peer_served_bytes: Counter,
    peer_refused: Counter,
    package_bytes: Family<SourceLabel, Counter>,
    peer_bad_chunks: Counter,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

/// Shared handle to every metric.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("op_agent");
        let runs = Family::<StatusLabel, Counter>::default();
        registry.register("runs", "Finished runs by final status", runs.clone());
        let skipped_fires = Counter::default();
        registry.register(
            "skipped_fires",
            "Fires skipped because the previous run was still alive (Concurrency forbid)",
            skipped_fires.clone(),
        );
        let lost_fires = Counter::default();
        registry.register(
            "lost_fires",
            "Cron fires missed while the agent was down or too late to catch up",
            lost_fires.clone(),
        );
        let refused_fires = Counter::default();
        registry.register(
            "refused_fires",
            "Fires refused because the run could not be recorded before its start (state disk full)",
            refused_fires.clone(),
        );
        let running = Gauge::default();
        registry.register("running_runs", "Runs in progress", running.clone());
        let outbox_depth = Gauge::default();
        registry.register(
            "outbox_depth",
            "Finished runs waiting for a manager's acknowledgement",
            outbox_depth.clone(),
        );
        let outbox_bytes = Gauge::default();
        registry.register("outbox_bytes", "Size of the outbox", outbox_bytes.clone());
        let outbox_dropped = Counter::default();
        registry.register(
            "outbox_dropped_runs",
            "Finished runs dropped because the outbox exceeded its byte budget",
            outbox_dropped.clone(),
        );
        let run_duration =
            Family::<StatusLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                run_histogram,
            );
        registry.register(
            "run_duration_seconds",
            "Wall-clock duration of finished runs by final status",
            run_duration.clone(),
        );
        let syncs = Family::<ResultLabel, Counter>::default();
        registry.register(
            "sync_requests",
            "Sync calls to a manager by result (ok, error)",
            syncs.clone(),
        );
        let sync_duration = Histogram::new(SYNC_BUCKETS);
        registry.register(
            "sync_duration_seconds",
            "Duration of successful sync calls; short ones brought a change, long ones parked for the sync wait",
            sync_duration.clone(),
        );
        let last_sync = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_sync_timestamp_seconds",
            "Unix time of the last successful sync with a manager (0 = never)",
            last_sync.clone(),
        );
        let delivered = Counter::default();
        registry.register(
            "runs_delivered",
            "Finished runs acknowledged by a manager",
            delivered.clone(),
        );
        let delivery_delay = Histogram::new(DELIVERY_BUCKETS);
        registry.register(
            "run_delivery_delay_seconds",
            "Time from a run's end to the manager's acknowledgement of its record",
            delivery_delay.clone(),
        );
        let log_write_failures = Counter::default();
        registry.register(
            "log_write_failures",
            "Log lines dropped because stderr could not take them (a broken or stalled pipe)",
            log_write_failures.clone(),
        );
        let peer_served_bytes = Counter::default();
        registry.register(
            "peer_served_bytes",
            "Package chunk bytes this agent served to peer agents",
            peer_served_bytes.clone(),
        );
        let peer_refused = Counter::default();
        registry.register(
            "peer_requests_refused",
            "Chunk requests from peers refused (bad or expired ticket, version not held, serving off)",
            peer_refused.clone(),
        );
        let package_bytes = Family::<SourceLabel, Counter>::default();
        registry.register(
            "package_fetched_bytes",
            "Package bytes fetched by source (peer, manager)",
            package_bytes.clone(),
        );
        let peer_bad_chunks = Counter::default();
        registry.register(
            "peer_bad_chunks",
            "Chunks from a peer that failed their sha256 (dropped; the peer is reported)",
            peer_bad_chunks.clone(),
        );
        let build = Family::<VersionLabel, Gauge>::default();
        build
            .get_or_create(&VersionLabel {
                version: crate::version(),
            })
            .set(1);
        registry.register("build_info", "The agent's version (always 1)", build);
        Metrics(Arc::new(Inner {
            registry,
            run_duration,
            syncs,
            sync_duration,
            last_sync,
            delivered,
            delivery_delay,
            log_write_failures,
            peer_served_bytes,
            peer_refused,
            package_bytes,
            peer_bad_chunks,
            runs,
            skipped_fires,
            lost_fires,
            refused_fires,
            running,
            outbox_depth,
            outbox_bytes,
            outbox_dropped,
        }))
    }

    pub fn peer_served(&self, n: u64) {
        self.0.peer_served_bytes.inc_by(n);
    }

    pub fn peer_refused(&self) {
        self.0.peer_refused.inc();
    }

    /// Package bytes received from a peer (`from_peer`) or a manager.
    pub fn package_fetched(&self, from_peer: bool, n: u64) {
        let source = if from_peer { "peer" } else { "manager" };
        self.0
            .package_bytes
            .get_or_create(&SourceLabel { source })
            .inc_by(n);
    }

    pub fn peer_bad_chunk(&self) {
        self.0.peer_bad_chunks.inc();
    }

    pub fn run_started(&self) {
        self.0.running.inc();
    }

    /// A run that had a process ended; `seconds` is its wall-clock duration when known.
    pub fn run_finished(&self, status: RunStatus, seconds: Option<f64>) {
        self.0.running.dec();
        self.run_recorded(status);
        if let Some(s) = seconds {
            self.0
                .run_duration
                .get_or_create(&StatusLabel {
                    status: status.as_str(),
                })
                .observe(s.max(0.0));
        }
    }

    /// A sync call answered after `took`.
    pub fn sync_ok(&self, took: std::time::Duration) {
        self.0
            .syncs
            .get_or_create(&ResultLabel { result: "ok" })
            .inc();
        self.0.sync_duration.observe(took.as_secs_f64());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.0.last_sync.set(now);
    }

    pub fn sync_failed(&self) {
        self.0
            .syncs
            .get_or_create(&ResultLabel { result: "error" })
            .inc();
    }

    /// A manager acknowledged these records.
    pub fn runs_delivered(&self, records: &[RunRecord], now: chrono::DateTime<chrono::Utc>) {
        self.0.delivered.inc_by(records.len() as u64);
        for r in records {
            if let Some(end) = r.ended_at {
                let delay = (now - end).num_milliseconds().max(0) as f64 / 1000.0;
                self.0.delivery_delay.observe(delay);
            }
        }
    }

    /// A record that never had a process (a skip, a lost run found at startup).
    pub fn run_recorded(&self, status: RunStatus) {
        self.0
            .runs
            .get_or_create(&StatusLabel {
                status: status.as_str(),
            })
            .inc();
    }

    pub fn fire_skipped(&self) {
        self.0.skipped_fires.inc();
    }

    pub fn fire_refused(&self) {
        self.0.refused_fires.inc();
    }

    pub fn fires_lost(&self, n: u64) {
        self.0.lost_fires.inc_by(n);
    }

    /// Sets the outbox gauges from the queue's totals: runs waiting, their bytes, and runs ever
    /// dropped for the budget (the database's count, so it survives restarts).
    pub fn outbox(&self, depth: u64, bytes: u64, dropped: u64) {
        self.0.outbox_depth.set(depth as i64);
        self.0.outbox_bytes.set(bytes as i64);
        let seen = self.0.outbox_dropped.get();
        if dropped > seen {
            self.0.outbox_dropped.inc_by(dropped - seen);
        }
    }

    pub fn running(&self) -> i64 {
        self.0.running.get()
    }

    pub fn stats(&self) -> AgentStats {
        AgentStats {
            outbox_depth: self.0.outbox_depth.get().max(0) as u64,
            dropped_runs: self.0.outbox_dropped.get(),
            lost_fires: self.0.lost_fires.get(),
            skipped_fires: self.0.skipped_fires.get(),
            refused_fires: self.0.refused_fires.get(),
        }
    }

    /// The Prometheus text exposition (format 0.0.4, see [`op_proto::exposition`]).
    pub fn encode(&self) -> String {
        let failures = op_log::write_failures();
        let seen = self.0.log_write_failures.get();
        if failures > seen {
            self.0.log_write_failures.inc_by(failures - seen);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.registry);
        op_proto::exposition::openmetrics_to_prometheus(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_the_figures() {
        let m = Metrics::new();
        m.run_started();
        m.run_finished(RunStatus::Ok, Some(1.5));
        m.fire_skipped();
        m.fires_lost(3);
        let text = m.encode();
        for needle in [
            "op_agent_runs_total{status=\"ok\"} 1",
            "op_agent_skipped_fires_total 1",
            "op_agent_lost_fires_total 3",
            "op_agent_running_runs 0",
            "op_agent_outbox_depth 0",
            "op_agent_outbox_dropped_runs_total 0",
            "op_agent_run_duration_seconds_bucket{le=\"2.5\",status=\"ok\"} 1",
            "op_agent_run_duration_seconds_bucket{le=\"1.0\",status=\"ok\"} 0",
            "# TYPE op_agent_runs_total counter",
            "op_agent_build_info{version=",
        ] {
            assert!(text.contains(needle), "{needle} in\n{text}");
        }
        assert_eq!(m.stats().lost_fires, 3);
    }
}
