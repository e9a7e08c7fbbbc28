//! The agent's Prometheus metrics, served by `GET /metrics`.
//!
//! The same counters feed the [`AgentStats`] of `/v1/status` (and, later, every heartbeat), so
//! what an operator sees in Prometheus and in the CLI never disagrees. Components only call the
//! small methods here; the registry and text encoding stay in this module.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64};

use op_proto::RunStatus;
use op_proto::node::AgentStats;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

struct Inner {
    registry: Registry,
    runs: Family<StatusLabel, Counter>,
    skipped_fires: Counter,
    lost_fires: Counter,
    running: Gauge<i64, AtomicI64>,
    outbox_depth: Gauge<i64, AtomicI64>,
    outbox_bytes: Gauge<i64, AtomicI64>,
    outbox_dropped: Counter<u64, AtomicU64>,
}

/// Shared handle to every metric.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

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
        Metrics(Arc::new(Inner {
            registry,
            runs,
            skipped_fires,
            lost_fires,
            running,
            outbox_depth,
            outbox_bytes,
            outbox_dropped,
        }))
    }

    pub fn run_started(&self) {
        self.0.running.inc();
    }

    pub fn run_finished(&self, status: RunStatus) {
        self.0.running.dec();
        self.run_recorded(status);
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

    pub fn fires_lost(&self, n: u64) {
        self.0.lost_fires.inc_by(n);
    }

    /// Sets the outbox gauges from the database's totals.
    pub fn outbox(&self, totals: crate::state::OutboxTotals) {
        self.0.outbox_depth.set(totals.depth as i64);
        self.0.outbox_bytes.set(totals.bytes as i64);
        let seen = self.0.outbox_dropped.get();
        if totals.dropped > seen {
            self.0.outbox_dropped.inc_by(totals.dropped - seen);
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
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_the_figures() {
        let m = Metrics::new();
        m.run_started();
        m.run_finished(RunStatus::Ok);
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
        ] {
            assert!(text.contains(needle), "{needle} in\n{text}");
        }
        assert_eq!(m.stats().lost_fires, 3);
    }
}
