//! Heartbeat coalescing. Every sync call is a heartbeat; writing each one through raft would
//! cost one log entry per agent every few seconds. Instead the latest beat of each node waits
//! here and [`flush_loop`] writes all of them as ONE `Heartbeats` command every
//! `heartbeat_flush`. A beat that changes a node's status (NotReady → Ready, Ready ↔ Degraded) is
//! written at once by the sync handler, so status changes are never delayed. In a cluster each manager buffers and
//! flushes the beats of the agents connected to it.
//!
//! Each beat's load also goes to [`LoadHistory`], the short in-memory history behind the
//! console's load chart (the store keeps only the latest load).
//!
//! A flush keeps the beats it writes readable until the write is done: while the command is on
//! its way through raft the store does not have them yet, and a buffer that had let them go
//! would show every node as of its previous flush (a running run gone from its node and the
//! console's run page, a fire judged without the run that is running it, a `last_seen` a flush
//! interval old to the liveness check).

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
    beats: Mutex<Beats>,
    load: LoadHistory,
}

#[derive(Default)]
struct Beats {
    /// The latest beat of each node since the last flush took them.
    pending: HashMap<Uuid, NodeBeat>,
    /// The beats a flush is writing, until the write is done (older than `pending`'s).
    flushing: HashMap<Uuid, NodeBeat>,
}

impl Beats {
    /// The newest beat of `id` the store may not have yet.
    fn newest(&self, id: &Uuid) -> Option<&NodeBeat> {
        self.pending.get(id).or_else(|| self.flushing.get(id))
    }

    /// The newest beat of every node that has one the store may not have yet.
    fn each_newest(&self) -> impl Iterator<Item = &NodeBeat> {
        let flushing = self
            .flushing
            .iter()
            .filter(|(id, _)| !self.pending.contains_key(id))
            .map(|(_, b)| b);
        self.pending.values().chain(flushing)
    }
}

impl HeartbeatBuffer {
    /// `load_sample_every`: the spacing of the load samples kept per node.
    pub fn new(load_sample_every: std::time::Duration) -> HeartbeatBuffer {
        HeartbeatBuffer {
            beats: Mutex::new(Beats::default()),
            load: LoadHistory::new(load_sample_every),
        }
    }

    pub fn record(&self, beat: NodeBeat) {
        if let Some(load) = &beat.load {
            self.load.record(beat.node_id, beat.seen_at, load);
        }
        if let Ok(mut b) = self.beats.lock() {
            b.pending.insert(beat.node_id, beat);
        }
    }

    /// The recent load of the nodes that report to this member.
    pub fn load_history(&self) -> &LoadHistory {
        &self.load
    }

    /// The newest unflushed beat time of a node.
    pub fn last_seen(&self, id: Uuid) -> Option<DateTime<Utc>> {
        self.beats.lock().ok()?.newest(&id).map(|b| b.seen_at)
    }

    /// Shows unflushed beats in node listings, so `last_seen` and what a node reports (installed
    /// packages, running jobs, load) are never a flush interval behind.
    pub fn overlay(&self, nodes: &mut [NodeInfo]) {
        let Ok(beats) = self.beats.lock() else {
            return;
        };
        for n in nodes {
            if let Some(b) = beats.newest(&n.node_id)
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
        let Ok(beats) = self.beats.lock() else {
            return 0;
        };
        beats
            .each_newest()
            .filter(|b| {
                b.packages
                    .iter()
                    .any(|pkg| pkg.name == name && pkg.version == version)
            })
            .count()
    }

    /// The beats to write now; they stay readable until [`HeartbeatBuffer::flushed`].
    fn take(&self) -> Vec<NodeBeat> {
        let Ok(mut beats) = self.beats.lock() else {
            return Vec::new();
        };
        let taken = std::mem::take(&mut beats.pending);
        let out = taken.values().cloned().collect();
        beats.flushing = taken;
        out
    }

    /// The write of the beats [`HeartbeatBuffer::take`] gave ended: written, they are the
    /// store's now; not written, they go back for the next flush unless a newer beat of the
    /// node arrived meanwhile.
    fn flushed(&self, written: bool) {
        let Ok(mut beats) = self.beats.lock() else {
            return;
        };
        let flushing = std::mem::take(&mut beats.flushing);
        if !written {
            for (id, b) in flushing {
                beats.pending.entry(id).or_insert(b);
            }
        }
    }

    /// Beats not yet taken by a flush.
    pub fn len(&self) -> usize {
        self.beats.lock().map_or(0, |b| b.pending.len())
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
    let written = match writer.write(Command::Heartbeats { beats }).await {
        Ok(_) => {
            metrics.heartbeats_flushed(n as u64);
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, beats = n, "could not write heartbeats; keeping them for the next flush");
            false
        }
    };
    buffer.flushed(written);
}

#[cfg(test)]
mod tests {
    use super::*;
    use op_proto::NodeStatus;
    use op_proto::node::RunningRun;

    fn node(id: Uuid, seen: DateTime<Utc>) -> NodeInfo {
        serde_json::from_value(serde_json::json!({
            "node_id": id,
            "hostname": "node-1",
            "ips": [],
            "agent_version": "0.1.0",
            "status": NodeStatus::Ready,
            "first_seen": seen,
            "last_seen": seen,
        }))
        .expect("a minimal node record")
    }

    fn beat(id: Uuid, seen: DateTime<Utc>, running: Vec<RunningRun>) -> NodeBeat {
        NodeBeat {
            node_id: id,
            seen_at: seen,
            agent_version: "0.1.0".into(),
            load: None,
            running,
            packages: Vec::new(),
            stats: Default::default(),
            degraded: None,
            clock_skew_ms: None,
        }
    }

    #[test]
    fn beats_being_written_stay_visible_until_the_write_ends() {
        let buffer = HeartbeatBuffer::new(std::time::Duration::from_secs(10));
        let id = Uuid::new_v4();
        let t0 = Utc::now() - chrono::Duration::seconds(30);
        let t1 = t0 + chrono::Duration::seconds(10);
        let run = RunningRun {
            run_id: Uuid::new_v4(),
            job: "ticker".into(),
            trigger: op_proto::Trigger::Adhoc,
            started_at: t1,
        };
        buffer.record(beat(id, t1, vec![run.clone()]));

        // A flush took the beat and writes it: the store still says t0, no run.
        let taken = buffer.take();
        assert_eq!(taken.len(), 1);
        assert!(buffer.is_empty());
        let mut nodes = [node(id, t0)];
        buffer.overlay(&mut nodes);
        assert_eq!(nodes[0].running, [run], "the run is still shown");
        assert_eq!(nodes[0].last_seen, t1);
        assert_eq!(buffer.last_seen(id), Some(t1), "liveness sees the beat");

        // Failed: the beat goes back for the next flush; a newer one arrived meanwhile wins.
        let t2 = t1 + chrono::Duration::seconds(10);
        buffer.record(beat(id, t2, Vec::new()));
        buffer.flushed(false);
        assert_eq!(buffer.len(), 1);
        assert_eq!(buffer.last_seen(id), Some(t2));

        // Written: the store has it, the buffer lets it go.
        let taken = buffer.take();
        assert_eq!(taken[0].seen_at, t2);
        buffer.flushed(true);
        assert_eq!(buffer.last_seen(id), None);
        let mut nodes = [node(id, t2)];
        buffer.overlay(&mut nodes);
        assert_eq!(nodes[0].last_seen, t2);
    }
}
