//! `idle`: what holding N agents that only heartbeat costs the manager (DESIGN.md section 10:
//! 10,000 agents with RSS ≤ 300 MB).
//!
//! N simulated agents register and open their watches; then, for `duration`, they only beat (one
//! heartbeat frame per sync wait, unanswered, coalesced into one raft write per
//! `heartbeat_flush`). The manager's CPU time and RSS come from /proc, sampled every second.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::fleet::Fleet;
use crate::limits;
use crate::manager::ManagerProcess;
use crate::procfs::{cpu_secs, rss_kib};
use crate::report::Figure;
use crate::scenarios::propagation::ramp_limit;

pub async fn run(
    manager_bin: &Path,
    manager_args: &[String],
    agents: usize,
    duration: Duration,
) -> anyhow::Result<Vec<Figure>> {
    anyhow::ensure!(agents > 0, "--agents must be at least 1");
    anyhow::ensure!(!duration.is_zero(), "--duration must be positive");
    limits::check_fleet(agents)?;
    let manager = ManagerProcess::start(manager_bin, manager_args).await?;
    let pid = manager.pid();
    let own = std::process::id() as i32;
    let fleet = Fleet::start(&manager, agents).await?;
    fleet.wait_parked(&manager, ramp_limit(agents)).await?;

    let cpu_start = cpu_secs(pid)?;
    let sim_cpu_start = cpu_secs(own)?;
    let syncs_start = fleet.counters.syncs.load(Ordering::Relaxed);
    let beats_start = fleet.counters.beats.load(Ordering::Relaxed);
    let errors_start = fleet.counters.errors.load(Ordering::Relaxed);
    let started = Instant::now();
    let end = started + duration;
    let mut samples = Vec::new();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1).min(end - Instant::now())).await;
        samples.push(rss_kib(pid)?.0);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_secs(pid)? - cpu_start;
    let sim_cpu = cpu_secs(own)? - sim_cpu_start;
    let (rss_end, rss_peak) = rss_kib(pid)?;
    let (sim_rss, _) = rss_kib(own)?;
    let syncs = fleet.counters.syncs.load(Ordering::Relaxed) - syncs_start;
    let beats = fleet.counters.beats.load(Ordering::Relaxed) - beats_start;
    let errors = fleet.counters.errors.load(Ordering::Relaxed) - errors_start;
    let wait = fleet.settings.sync_wait_secs;
    fleet.stop().await;
    manager.stop()?;

    let mib = |kib: f64| kib / 1024.0;
    let avg = samples.iter().sum::<u64>() as f64 / samples.len().max(1) as f64;
    let cond = format!(
        "{agents} simulated agents on watches (a heartbeat every sync wait, {wait}s), \
         watched {}s, manager {} build",
        duration.as_secs(),
        crate::binaries::profile(manager_bin)
    );
    Ok(vec![
        Figure::new(
            "manager_idle_cpu_share",
            100.0 * cpu / elapsed,
            "%",
            format!("{cond}; user+sys, 100 % = one core"),
        ),
        Figure::new("manager_idle_rss_avg", mib(avg), "MiB", cond.clone()),
        Figure::new(
            "manager_idle_rss_end",
            mib(rss_end as f64),
            "MiB",
            cond.clone(),
        ),
        Figure::new(
            "manager_idle_rss_peak",
            mib(rss_peak as f64),
            "MiB",
            format!("{cond}; VmHWM since start, registration included"),
        ),
        Figure::new(
            "idle_syncs_per_s",
            syncs as f64 / elapsed,
            "syncs/s",
            cond.clone(),
        ),
        Figure::new(
            "idle_beats_per_s",
            beats as f64 / elapsed,
            "beats/s",
            cond.clone(),
        ),
        Figure::new("idle_sync_errors", errors as f64, "errors", cond.clone()),
        Figure::new(
            "sim_cpu_share",
            100.0 * sim_cpu / elapsed,
            "%",
            format!("op-bench itself; {cond}"),
        ),
        Figure::new(
            "sim_rss",
            mib(sim_rss as f64),
            "MiB",
            format!("op-bench itself; {cond}"),
        ),
    ])
}
