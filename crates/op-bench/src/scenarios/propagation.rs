//! `propagation`: job save → seen by every simulated agent (DESIGN.md section 10: p99 ≤ 1 s at
//! 10,000 agents, manager RSS ≤ 300 MB).
//!
//! N simulated agents register and park their sync calls. Then, `saves` times, one job is saved
//! again with a new command (a new revision) and each agent's latency is the time from sending
//! the save to the moment its sync answer with the new revision was parsed. Before each save the
//! fleet is parked again, so every save starts from the steady state. The manager's RSS and CPU
//! come from /proc.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::fleet::Fleet;
use crate::limits;
use crate::manager::ManagerProcess;
use crate::procfs::{cpu_secs, rss_kib};
use crate::report::{Figure, percentile, spread};

const JOB: &str = "bench-propagation";

/// How long the whole fleet may take to register and park.
pub fn ramp_limit(agents: usize) -> Duration {
    Duration::from_secs(120 + agents as u64 / 50)
}

pub async fn run(
    manager_bin: &Path,
    manager_args: &[String],
    agents: usize,
    saves: usize,
    secret: bool,
) -> anyhow::Result<Vec<Figure>> {
    anyhow::ensure!(
        agents > 0 && saves > 0,
        "--agents and --saves must be at least 1"
    );
    limits::check_fleet(agents)?;
    let manager = ManagerProcess::start(manager_bin, manager_args).await?;
    let pid = manager.pid();
    let cpu_start = cpu_secs(pid)?;
    let ramp_started = Instant::now();
    let mut fleet = Fleet::start(&manager, agents).await?;
    fleet.wait_parked(&manager, ramp_limit(agents)).await?;
    let ramp = ramp_started.elapsed();
    let (rss_parked, _) = rss_kib(pid)?;
    let cpu_parked = cpu_secs(pid)?;

    // With --secret, the job names a secret, so each sync answer carries its value (opened by
    // the manager for the node).
    let env = if secret {
        manager
            .admin
            .set_secret("bench/pw", "bench-secret-value")
            .await?;
        r#","Env":{"PW":"secret:bench/pw"}"#
    } else {
        ""
    };
    let mut latencies = Vec::with_capacity(agents * saves);
    let mut last_seen = Vec::with_capacity(saves);
    // Per-save limit: generous, so a slow machine gives a slow figure, not an error.
    let limit = Duration::from_secs(60 + agents as u64 / 100);
    for k in 1..=saves {
        fleet.wait_parked(&manager, ramp_limit(agents)).await?;
        fleet.drain_applied();
        let task = format!(
            r#"{{"JobName":"{JOB}","Command":"true # save {k}","CronExpr":"0 0 */6 * * * *"{env}}}"#
        );
        let sent = Instant::now();
        let revision = manager.admin.save_job_text(JOB, &task).await?.revision;
        let deadline = sent + limit;
        let mut seen = vec![false; agents];
        let mut count = 0;
        let mut latest = Duration::ZERO;
        while count < agents {
            let Some(change) = fleet.next_applied(deadline).await else {
                bail!(
                    "save {k}: after {}s only {count} of {agents} agents saw revision {revision}",
                    limit.as_secs()
                );
            };
            let has = change
                .jobs
                .iter()
                .any(|(name, rev)| name == JOB && *rev >= revision);
            if has && !seen[change.agent] {
                seen[change.agent] = true;
                count += 1;
                let took = change.at.saturating_duration_since(sent);
                latest = latest.max(took);
                latencies.push(took.as_secs_f64() * 1e3);
            }
        }
        last_seen.push(latest.as_secs_f64() * 1e3);
    }
    let cpu_saves = cpu_secs(pid)? - cpu_parked;
    let cpu_total = cpu_secs(pid)? - cpu_start;
    let (rss_end, rss_peak) = rss_kib(pid)?;
    let (sim_rss, _) = rss_kib(std::process::id() as i32)?;
    let errors = fleet
        .counters
        .errors
        .load(std::sync::atomic::Ordering::Relaxed);
    let wait = fleet.settings.sync_wait_secs;
    fleet.stop().await;
    manager.stop()?;

    let mib = |kib: u64| kib as f64 / 1024.0;
    let build = crate::binaries::profile(manager_bin);
    let with = if secret {
        ", the job names a secret"
    } else {
        ""
    };
    let cond = format!(
        "{agents} simulated agents parked (sync wait {wait}s), {saves} saves{with}, save sent → \
         sync answer parsed, {} samples, manager {build} build",
        latencies.len()
    );
    let held = format!("{agents} simulated agents parked, manager {build} build");
    let mut figures = spread("propagation", &latencies, "ms", &cond);
    figures.extend([
        Figure::new(
            "propagation_last_agent_median",
            percentile(&last_seen, 50.0),
            "ms",
            format!("{cond}; per save, the time until the last agent saw it, median over saves"),
        ),
        Figure::new(
            "manager_rss_parked",
            mib(rss_parked),
            "MiB",
            format!("{held}, before the saves"),
        ),
        Figure::new(
            "manager_rss_end",
            mib(rss_end),
            "MiB",
            format!("{held}, after the saves"),
        ),
        Figure::new(
            "manager_rss_peak",
            mib(rss_peak),
            "MiB",
            format!("{held}; VmHWM since start, registration included"),
        ),
        Figure::new(
            "manager_cpu_saves",
            cpu_saves,
            "s",
            format!("{held}; CPU time (user+sys) during the {saves} saves and re-parking"),
        ),
        Figure::new(
            "manager_cpu_total",
            cpu_total,
            "s",
            format!("{held}; CPU time from start to the last save, registration included"),
        ),
        Figure::new(
            "fleet_ramp",
            ramp.as_secs_f64(),
            "s",
            format!("{held}; registering every agent and parking its first sync"),
        ),
        Figure::new(
            "sim_rss",
            mib(sim_rss),
            "MiB",
            format!("op-bench itself holding {agents} simulated agents"),
        ),
        Figure::new(
            "sim_sync_errors",
            errors as f64,
            "errors",
            format!("{agents} simulated agents; failed sync or register calls over the run"),
        ),
    ]);
    Ok(figures)
}
