//! `cron-fleet`: what a fleet running one 1-minute cron job costs the manager per minute (issue 20:
//! "manager CPU per minute for 10,000 simulated agents each with one 1-minute job, with and
//! without missed-fire detection; the detection's extra memory").
//!
//! N simulated agents register and park; a job firing at second 0 of every minute and selecting
//! every host is saved. At each fire every agent but the `--silent` ones reports its run of that
//! fire (one record, planned at the fire, posted at once as a real agent's outbox does), so the
//! manager judges a full fleet per minute and finds the silent hosts missing. The figures are the
//! manager's CPU per minute and its RSS over `duration`, and the `run.missed` events it raised.
//! Run it twice, once with the manager's detection off (`--manager-arg` for its option), to
//! compare.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, Utc};
use op_client::EventQuery;
use op_proto::agent::RunBatch;
use tokio::task::JoinSet;

use crate::fleet::{Fleet, runs};
use crate::limits;
use crate::manager::ManagerProcess;
use crate::procfs::{cpu_secs, rss_kib};
use crate::report::Figure;
use crate::scenarios::propagation::ramp_limit;

/// The job every agent runs.
const JOB: &str = "bench-minutely";

pub async fn run(
    manager_bin: &Path,
    manager_args: &[String],
    agents: usize,
    silent: usize,
    duration: Duration,
) -> anyhow::Result<Vec<Figure>> {
    anyhow::ensure!(agents > 0, "--agents must be at least 1");
    anyhow::ensure!(silent <= agents, "--silent must be at most --agents");
    anyhow::ensure!(
        duration >= Duration::from_secs(60),
        "--duration must be at least 60s (one fire a minute)"
    );
    limits::check_fleet(agents)?;
    let manager = ManagerProcess::start(manager_bin, manager_args).await?;
    let pid = manager.pid();
    let task = format!(
        r#"{{"JobName":"{JOB}","Command":"/usr/local/bin/rotate-logs","CronExpr":"0 * * * * * *"}}"#
    );
    manager.admin.save_job_text(JOB, &task).await?;
    let fleet = Fleet::start(&manager, agents).await?;
    fleet.wait_parked(&manager, ramp_limit(agents)).await?;

    let cpu_start = cpu_secs(pid)?;
    let started = Instant::now();
    let end = started + duration;
    let mut rss = Vec::new();
    let mut next_fire = next_minute(Utc::now());
    let mut fires = 0u64;
    let mut reported = 0u64;
    loop {
        // Sample the RSS every second until the next fire (or the end).
        let wait = (next_fire - Utc::now()).to_std().unwrap_or_default();
        let fire_at = Instant::now() + wait;
        if fire_at >= end {
            break;
        }
        while Instant::now() < fire_at {
            tokio::time::sleep(Duration::from_secs(1).min(fire_at - Instant::now())).await;
            rss.push(rss_kib(pid)?.0);
        }
        reported += report_fire(&fleet, next_fire, silent).await?;
        fires += 1;
        next_fire += chrono::Duration::minutes(1);
    }
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1).min(end - Instant::now())).await;
        rss.push(rss_kib(pid)?.0);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_secs(pid)? - cpu_start;
    let (_, rss_peak) = rss_kib(pid)?;
    let missed = count_events(&manager.admin, "run.missed").await?;
    let errors = fleet
        .counters
        .errors
        .load(std::sync::atomic::Ordering::Relaxed);
    fleet.stop().await;
    manager.stop()?;

    let avg = rss.iter().sum::<u64>() as f64 / rss.len().max(1) as f64;
    let cond = format!(
        "{agents} simulated agents, one job firing every minute, {} reporting each fire \
         ({silent} silent), {fires} fires in {}s, {reported} runs reported, manager args {:?}, \
         manager {} build, {errors} sim errors",
        agents - silent,
        duration.as_secs(),
        manager_args,
        crate::binaries::profile(manager_bin)
    );
    Ok(vec![
        Figure::new(
            "cron_fleet_manager_cpu_per_min",
            cpu / elapsed * 60.0,
            "s",
            format!("{cond}; manager user+sys per minute of wall time"),
        ),
        Figure::new(
            "cron_fleet_manager_rss_avg",
            avg / 1024.0,
            "MiB",
            cond.clone(),
        ),
        Figure::new(
            "cron_fleet_manager_rss_peak",
            rss_peak as f64 / 1024.0,
            "MiB",
            format!("{cond}; VmHWM since start, registration included"),
        ),
        Figure::new(
            "cron_fleet_missed_events",
            missed as f64,
            "events",
            format!("{cond}; run.missed events the manager raised"),
        ),
    ])
}

/// The first whole minute after `t`.
fn next_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(chrono::Duration::minutes(1))
        .expect("a minute truncates")
        + chrono::Duration::minutes(1)
}

/// Every agent but the last `silent` posts its run of the fire at `planned`; returns how many
/// the manager acknowledged.
async fn report_fire(fleet: &Fleet, planned: DateTime<Utc>, silent: usize) -> anyhow::Result<u64> {
    let reporting = fleet.len() - silent;
    let mut posts = JoinSet::new();
    for (i, sim) in fleet.agents.iter().take(reporting).enumerate() {
        let client = fleet.client_for(i).clone();
        let mut record = runs::record(sim, 0);
        record.job = JOB.into();
        record.command = "/usr/local/bin/rotate-logs".into();
        record.planned_at = Some(planned);
        record.started_at = Some(planned);
        record.ended_at = Some(Utc::now());
        let batch = RunBatch {
            node_id: sim.node_id,
            runs: vec![record],
        };
        posts.spawn(async move {
            for attempt in 0..10u32 {
                if client.post_runs(&batch).await.is_ok() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100 << attempt.min(5))).await;
            }
            false
        });
    }
    let mut ok = 0;
    while let Some(done) = posts.join_next().await {
        ok += u64::from(done?);
    }
    Ok(ok)
}

/// The number of kept events of `kind`.
async fn count_events(admin: &op_client::Client, kind: &str) -> anyhow::Result<u64> {
    let mut stream = admin
        .events(&EventQuery {
            kinds: vec![kind.to_string()],
            ..EventQuery::default()
        })
        .await?;
    let mut n = 0;
    while stream.next().await?.is_some() {
        n += 1;
    }
    Ok(n)
}
