//! Heartbeat coalescing. Every sync call is a heartbeat; writing each one through raft would
//! cost one log entry per agent every few seconds. Instead the latest beat of each node waits
//! here and [`flush_loop`] writes all of them as ONE `Heartbeats` command every
//! `heartbeat_flush`. A beat that changes a node's status (NotReady → Ready, Ready ↔ Degraded) is
//! written at once by the sync handler, so status changes are never delayed. In a cluster each manager buffers and
//! flushes the beats of the agents connected to it.
//!
//! Each beat's load also goes to [`LoadHistory`], the short in-memory history behind the
//! console's load chart (the store keeps only the latest load).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use op_proto::NodeInfo;
use op_store::{Command, NodeBeat};
use uuid::Uuid;

use tokio_util::sync::CancellationToken;

use crate::load_history::LoadHistory;
use crate::metrics::Metrics;
use crate::state::Writer;

pub struct HeartbeatBuffer {
    pending: Mutex<HashMap<Uuid, NodeBeat>>,
    load: LoadHistory,
}

impl HeartbeatBuffer {
    /// `load_sample_every`: the spacing of the load samples kept per node.
    pub fn new(load_sample_every: std::time::Duration) -> HeartbeatBuffer {
        HeartbeatBuffer {
            pending: Mutex::new(HashMap::new()),
            load: LoadHistory::new(load_sample_every),
        }
    }

    pub fn record(&self, beat: NodeBeat) {
        if let Some(load) = &beat.load {
            self.load.record(beat.node_id, beat.seen_at, load);
        }
        if let Ok(mut p) = self.pending.lock() {
            p.insert(beat.node_id, beat);
        }
    }

    /// The recent load of the nodes that report to this member.
    pub fn load_history(&self) -> &LoadHistory {
        &self.load
    }

    /// The newest unflushed beat time of a node.
    pub fn last_seen(&self, id: Uuid) -> Option<DateTime<Utc>> {
        self.pending.lock().ok()?.get(&id).map(|b| b.seen_at)
    }

    /// Shows unflushed beats in node listings, so `last_seen` and what a node reports (installed
    /// packages, running jobs, load) are never a flush interval behind.
    pub fn overlay(&self, nodes: &mut [NodeInfo]) {
        let Ok(p) = self.pending.lock() else { return };
        for n in nodes {
            if let Some(b) = p.get(&n.node_id)
                && b.seen_at >= n.last_seen
            {
                n.last_seen = b.seen_at;
                n.packages = b.packages.clone();
                n.running = b.running.clone();
                n.load = b.load.clone();
                n.clock_skew_ms = b.clock_skew_ms;
                // The status only changes through a written beat; its reason may be newer here.
                if n.status == op_proto::NodeStatus::Degraded && b.degraded.is_some() {
                    n.degraded = b.degraded.clone();
                }
            }
        }
    }

    /// How many unflushed beats report `name` `version` in place. The store checks flushed
    /// beats when a version is deleted; this covers the last flush interval.
    pub fn reporting_installed(&self, name: &str, version: u64) -> usize {
        let Ok(p) = self.pending.lock() else { return 0 };
        p.values()
            .filter(|b| {
                b.packages
                    .iter()
                    .any(|pkg| pkg.name == name && pkg.version == version)
            })
            .count()
    }

    /// Puts back beats a failed flush took, unless a newer beat of the node arrived meanwhile.
    fn restore(&self, beats: Vec<NodeBeat>) {
        if let Ok(mut p) = self.pending.lock() {
            for b in beats {
                p.entry(b.node_id).or_insert(b);
            }
        }
    }

    fn take(&self) -> Vec<NodeBeat> {
        match self.pending.lock() {
            Ok(mut p) => p.drain().map(|(_, b)| b).collect(),
            Err(_) => Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.pending.lock().map_or(0, |p| p.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Writes the buffered beats every `every` (`heartbeat_flush`), and once more at shutdown.
pub async fn flush_loop(
    beats: Arc<HeartbeatBuffer>,
    writer: Writer,
    metrics: Arc<Metrics>,
    every: std::time::Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => flush(&beats, &writer, &metrics).await,
            _ = shutdown.cancelled() => {
                flush(&beats, &writer, &metrics).await;
                return;
            }
        }
    }
}

/// Every manager flushes the beats of the agents it serves; a follower's command is forwarded to
/// the leader like any write.
async fn flush(buffer: &HeartbeatBuffer, writer: &Writer, metrics: &Metrics) {
    buffer.load.prune(Utc::now());
    let beats = buffer.take();
    if beats.is_empty() {
        return;
    }
    let n = beats.len();
    let beats_copy = beats.clone();
    match writer.write(Command::Heartbeats { beats }).await {
        Ok(_) => metrics.heartbeats_flushed(n as u64),
        Err(e) => {
            tracing::warn!(error = %e, beats = n, "could not write heartbeats; keeping them for the next flush");
            buffer.restore(beats_copy);
        }
    }
}
