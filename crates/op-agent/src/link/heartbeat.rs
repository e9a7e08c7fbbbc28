//! What an agent reports with every sync call: host load and memory from /proc, the runs in
//! progress, the packages it holds (from the deployer), and the counters that make drops and
//! skips visible.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use op_proto::agent::Heartbeat;
use op_proto::node::LoadInfo;
use op_proto::package::InstalledPackage;
use uuid::Uuid;

use crate::executor::Executor;
use crate::metrics::Metrics;

pub fn build(
    node_id: Uuid,
    executor: &Executor,
    metrics: &Metrics,
    packages: Vec<InstalledPackage>,
) -> Heartbeat {
    Heartbeat {
        node_id,
        agent_version: crate::version().to_string(),
        load: read_load(),
        running: executor.running().iter().map(|h| h.running_run()).collect(),
        packages,
        stats: metrics.stats(),
        degraded: executor.health().summary(),
        sent_at: None,
        received: Vec::new(),
        facts: None,
        peer_url: None,
    }
}

/// The agent's clock as a heartbeat reports it. `OP_TEST_CLOCK_OFFSET` (seconds, may be negative
/// or fractional) shifts the reported clock, for testing only: it lets a test show a node whose
/// clock is wrong without moving the system's clock. Nothing else in the agent reads it.
pub fn reported_now() -> DateTime<Utc> {
    Utc::now() + reported_offset()
}

/// How far [`reported_now`] is from the system's clock (zero but in tests).
pub fn reported_offset() -> chrono::Duration {
    static OFFSET: OnceLock<chrono::Duration> = OnceLock::new();
    *OFFSET.get_or_init(|| {
        std::env::var("OP_TEST_CLOCK_OFFSET")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite())
            .map_or(chrono::Duration::zero(), |s| {
                chrono::Duration::milliseconds((s * 1000.0) as i64)
            })
    })
}

/// How long a reading of the load serves the beats that follow: a fan-out sends a few beats
/// within milliseconds, and the kernel's load averages move every 5 s anyway.
const LOAD_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// Load averages, CPUs and memory; `None` where /proc cannot be read (not Linux, a sandbox).
/// Read at most once per [`LOAD_FRESH`]: /proc/meminfo and the cgroup files behind the CPU count
/// cost more than the rest of a beat.
pub fn read_load() -> Option<LoadInfo> {
    static LAST: std::sync::Mutex<Option<(std::time::Instant, LoadInfo)>> =
        std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((at, load)) = last.as_ref()
        && at.elapsed() < LOAD_FRESH
    {
        return Some(load.clone());
    }
    let loadavg = std::fs::read_to_string("/proc/loadavg").ok()?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let load = parse_load(&loadavg, &meminfo, num_cpus());
    *last = Some((std::time::Instant::now(), load.clone()));
    Some(load)
}

fn num_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

fn parse_load(loadavg: &str, meminfo: &str, cpus: u32) -> LoadInfo {
    let mut loads = loadavg
        .split_whitespace()
        .map(|s| s.parse::<f64>().unwrap_or(0.0));
    let mem = |key: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    LoadInfo {
        load1: loads.next().unwrap_or(0.0),
        load5: loads.next().unwrap_or(0.0),
        load15: loads.next().unwrap_or(0.0),
        cpus,
        mem_total_kb: mem("MemTotal"),
        mem_available_kb: mem("MemAvailable"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let l = parse_load(
            "0.52 0.58 0.59 2/345 12345\n",
            "MemTotal:       24576000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n",
            2,
        );
        assert_eq!(l.load1, 0.52);
        assert_eq!(l.load15, 0.59);
        assert_eq!(l.mem_total_kb, 24_576_000);
        assert_eq!(l.mem_available_kb, 20_000_000);
        assert_eq!(l.cpus, 2);
    }

    #[test]
    fn reads_this_machine() {
        let l = read_load().expect("/proc is readable on Linux");
        assert!(l.mem_total_kb > 0);
    }
}
