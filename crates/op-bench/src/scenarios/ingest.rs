//! `ingest`: run records per second accepted through raft, and how long an acknowledgement takes
//! (DESIGN.md section 10: ≥ 20,000 records/s).
//!
//! N simulated agents register and keep their sync loops running (the background a real fleet
//! gives), then each reports runs for `duration` the way a real agent's outbox does: one batch in
//! flight, at most `run_batch_max` records. With `--rate R` the fleet's runs finish at R per second
//! in total, and the figures say how the manager keeps up; without it every agent always has a full
//! batch waiting, and the figures are the most the manager accepts.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::fleet::Fleet;
use crate::fleet::runs::{Pace, Reported, report_loop};
use crate::limits;
use crate::manager::ManagerProcess;
use crate::procfs::{cpu_secs, rss_kib};
use crate::report::{Figure, percentile, spread};
use crate::scenarios::propagation::ramp_limit;

pub async fn run(
    manager_bin: &Path,
    manager_args: &[String],
    agents: usize,
    rate: Option<f64>,
    duration: Duration,
) -> anyhow::Result<Vec<Figure>> {
    anyhow::ensure!(agents > 0, "--agents must be at least 1");
    if let Some(r) = rate {
        anyhow::ensure!(r > 0.0, "--rate must be positive");
    }
    limits::check_fleet(agents)?;
    let manager = ManagerProcess::start(manager_bin, manager_args).await?;
    let pid = manager.pid();
    crate::fleet::runs::save_jobs(&manager.admin).await?;
    let fleet = Fleet::start(&manager, agents).await?;
    fleet.wait_parked(&manager, ramp_limit(agents)).await?;

    let pace = match rate {
        Some(r) => Pace::PerSecond(r / agents as f64),
        None => Pace::Saturate,
    };
    let batch_max = fleet.settings.run_batch_max;
    let cpu_start = cpu_secs(pid)?;
    let started = Instant::now();
    let until = started + duration;
    let mut loops = JoinSet::new();
    for (i, agent) in fleet.agents.iter().enumerate() {
        loops.spawn(report_loop(
            agent.clone(),
            fleet.client_for(i).clone(),
            pace,
            batch_max,
            until,
            fleet.counters.clone(),
            fleet.shutdown_token(),
        ));
    }
    let mut total = Reported::default();
    while let Some(done) = loops.join_next().await {
        let r = done?;
        total.accepted += r.accepted;
        total.duplicates += r.duplicates;
        total.batches += r.batches;
        total.ack_ms.extend(r.ack_ms);
        total.delay_ms.extend(r.delay_ms);
    }
    // Until the last acknowledgement: the batches in flight at `until` count, and so does their time.
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_secs(pid)? - cpu_start;
    let (_, rss_peak) = rss_kib(pid)?;
    let errors = fleet
        .counters
        .errors
        .load(std::sync::atomic::Ordering::Relaxed);
    fleet.stop().await;
    manager.stop()?;
    anyhow::ensure!(total.batches > 0, "no batch was acknowledged");

    let offered = match rate {
        Some(r) => format!("runs finishing at {r:.0}/s in total"),
        None => "a full batch always waiting (saturation)".into(),
    };
    let mean_batch = total.accepted as f64 / total.batches as f64;
    let cond = format!(
        "{agents} simulated agents, {offered}, batches ≤ {batch_max} (mean {mean_batch:.0}), \
         one in flight per agent, {}s, single-node raft, manager {} build",
        duration.as_secs(),
        crate::binaries::profile(manager_bin)
    );
    let mut figures = vec![
        Figure::new(
            "ingest_records_per_s",
            total.accepted as f64 / elapsed,
            "records/s",
            cond.clone(),
        ),
        Figure::new(
            "ingest_batches_per_s",
            total.batches as f64 / elapsed,
            "batches/s",
            cond.clone(),
        ),
    ];
    figures.extend(spread(
        "ingest_ack",
        &total.ack_ms,
        "ms",
        &format!("{cond}; post → acknowledged (applied)"),
    ));
    if !total.delay_ms.is_empty() {
        figures.push(Figure::new(
            "ingest_delay_p99",
            percentile(&total.delay_ms, 99.0),
            "ms",
            format!("{cond}; oldest run of a batch, finished → acknowledged"),
        ));
    }
    figures.extend([
        Figure::new(
            "ingest_records",
            total.accepted as f64,
            "records",
            format!("{cond}; {} duplicates", total.duplicates),
        ),
        Figure::new(
            "ingest_errors",
            errors as f64,
            "errors",
            format!("{cond}; failed posts and syncs"),
        ),
        Figure::new(
            "manager_cpu_share",
            100.0 * cpu / elapsed,
            "%",
            format!("{cond}; user+sys over the ingest, 200 % = both cores"),
        ),
        Figure::new(
            "manager_rss_peak",
            rss_peak as f64 / 1024.0,
            "MiB",
            format!("{cond}; VmHWM since start"),
        ),
    ]);
    Ok(figures)
}
