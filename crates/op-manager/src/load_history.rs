//! A short memory of each node's load, for the console's load chart. The store keeps only a
//! node's latest load (each heartbeat overwrites it), so the manager an agent reports to keeps a
//! bounded ring of samples per node in memory: at most one sample per `every`, the last
//! [`SAMPLES`] of them (an hour at the default of one a minute).
//!
//! The ring is fed by heartbeats as they arrive ([`crate::heartbeat::HeartbeatBuffer::record`]),
//! so it lives on the member the agent talks to; another member's console has no samples of
//! that node, and a restart starts every ring empty. A node that stopped reporting is dropped once
//! its newest sample is older than the window. A sample is 16 bytes: 10,000 nodes cost about
//! 10 MiB.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use op_proto::node::LoadInfo;
use uuid::Uuid;

/// Samples kept per node.
pub const SAMPLES: usize = 60;

/// One reading of a node's load, as a heartbeat reported it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadSample {
    /// Unix seconds.
    at: i64,
    load1: f32,
    cpus: u16,
    /// Memory in use, percent; 255 when the agent did not say.
    mem_used: u8,
}

impl LoadSample {
    pub fn new(at: DateTime<Utc>, load: &LoadInfo) -> LoadSample {
        let mem_used = (load.mem_total_kb.saturating_sub(load.mem_available_kb) * 100)
            .checked_div(load.mem_total_kb)
            .map_or(u8::MAX, |p| p.min(100) as u8);
        LoadSample {
            at: at.timestamp(),
            load1: load.load1 as f32,
            cpus: load.cpus.min(u32::from(u16::MAX)) as u16,
            mem_used,
        }
    }

    pub fn at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.at, 0).unwrap_or_default()
    }

    /// The one-minute load average.
    pub fn load1(&self) -> f64 {
        f64::from(self.load1)
    }

    pub fn cpus(&self) -> u32 {
        u32::from(self.cpus)
    }

    /// Memory in use, percent, when the agent reported its memory.
    pub fn mem_used_pct(&self) -> Option<u8> {
        (self.mem_used != u8::MAX).then_some(self.mem_used)
    }
}

/// The rings of every node that reports to this member.
pub struct LoadHistory {
    every: Duration,
    rings: Mutex<HashMap<Uuid, VecDeque<LoadSample>>>,
}

impl LoadHistory {
    /// Keeps at most one sample per `every` for each node.
    pub fn new(every: Duration) -> LoadHistory {
        LoadHistory {
            every,
            rings: Mutex::new(HashMap::new()),
        }
    }

    /// How far back a full ring reaches.
    pub fn window(&self) -> Duration {
        self.every * SAMPLES as u32
    }

    /// The spacing of the samples.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// Takes `load` as a sample of `node` unless the node's last sample is younger than `every`.
    pub fn record(&self, node: Uuid, at: DateTime<Utc>, load: &LoadInfo) {
        let sample = LoadSample::new(at, load);
        let Ok(mut rings) = self.rings.lock() else {
            return;
        };
        let ring = rings
            .entry(node)
            .or_insert_with(|| VecDeque::with_capacity(SAMPLES));
        // Whole seconds: a spacing under a second keeps one sample a second.
        let every = self.every.as_secs().max(1) as i64;
        if ring.back().is_some_and(|last| sample.at - last.at < every) {
            return;
        }
        if ring.len() == SAMPLES {
            ring.pop_front();
        }
        ring.push_back(sample);
    }

    /// A node's samples, oldest first.
    pub fn samples(&self, node: Uuid) -> Vec<LoadSample> {
        self.rings
            .lock()
            .ok()
            .and_then(|r| r.get(&node).map(|q| q.iter().copied().collect()))
            .unwrap_or_default()
    }

    /// Forgets the nodes whose newest sample is older than the window (they stopped reporting
    /// here: gone, or now talking to another member).
    pub fn prune(&self, now: DateTime<Utc>) {
        let oldest = now.timestamp() - self.window().as_secs() as i64;
        if let Ok(mut rings) = self.rings.lock() {
            rings.retain(|_, q| q.back().is_some_and(|s| s.at >= oldest));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(load1: f64) -> LoadInfo {
        LoadInfo {
            load1,
            load5: 0.0,
            load15: 0.0,
            cpus: 4,
            mem_total_kb: 1000,
            mem_available_kb: 250,
        }
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn keeps_one_sample_per_interval_and_a_bounded_ring() {
        let h = LoadHistory::new(Duration::from_secs(10));
        let n = Uuid::from_u128(1);
        h.record(n, t(0), &load(1.0));
        // Too soon after the first: not kept.
        h.record(n, t(5), &load(9.0));
        h.record(n, t(10), &load(2.0));
        let s = h.samples(n);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].load1(), s[1].load1()), (1.0, 2.0));
        assert_eq!((s[1].cpus(), s[1].mem_used_pct()), (4, Some(75)));
        assert_eq!(s[1].at(), t(10));
        for i in 2..200 {
            h.record(n, t(i * 10), &load(i as f64));
        }
        let s = h.samples(n);
        assert_eq!(s.len(), SAMPLES);
        assert_eq!(s.last().unwrap().load1(), 199.0);
        assert_eq!(s[0].load1(), (200 - SAMPLES) as f64);
        assert!(h.samples(Uuid::from_u128(2)).is_empty());
    }

    #[test]
    fn forgets_nodes_that_stopped_reporting() {
        let h = LoadHistory::new(Duration::from_secs(1));
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        h.record(a, t(0), &load(1.0));
        h.record(b, t(100), &load(1.0));
        h.prune(t(100));
        assert!(h.samples(a).is_empty());
        assert_eq!(h.samples(b).len(), 1);
    }
}
