//! `follow`: what `agentcli logs --follow` costs the cluster (issue 18, figure
//! `follow_raft_writes_per_s`, at most 2 writes/s above the idle rate with 100 nodes followed).
//!
//! N simulated agents register and park, and each reports one finished run. For `duration` the
//! fleet only idles: the raft entries it makes are the coalesced heartbeats. Then one reader per
//! node follows that node's run as `agentcli logs --follow` does (`GET /v1/runs/{id}/output`,
//! and again 500 ms after an empty piece) for another `duration`; each simulated agent answers
//! with an empty piece of a run still going. The figure is the growth of the manager's raft log
//! per second while following, minus the idle growth. (Output requests once were one raft write
//! per poll: 2 per second per reader.)

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use op_proto::agent::RunBatch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::fleet::{Fleet, runs};
use crate::limits;
use crate::manager::ManagerProcess;
use crate::report::Figure;
use crate::scenarios::propagation::ramp_limit;

/// agentcli's pause after an empty piece (`FOLLOW_POLL` in `op-cli`'s `logs.rs`).
const FOLLOW_POLL: Duration = Duration::from_millis(500);
/// Seconds a reader lets the manager wait for the agent, as agentcli does.
const READ_WAIT_SECS: u64 = 10;

/// Raft log entries per second on `manager` over `duration`.
async fn raft_entries_per_s(manager: &ManagerProcess, duration: Duration) -> anyhow::Result<f64> {
    let start = manager.metric("op_manager_raft_last_log_index").await?;
    let t = Instant::now();
    tokio::time::sleep(duration).await;
    let end = manager.metric("op_manager_raft_last_log_index").await?;
    Ok((end - start) / t.elapsed().as_secs_f64())
}

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
    runs::save_jobs(&manager.admin).await?;
    let fleet = Fleet::start(&manager, agents).await?;
    fleet.wait_parked(&manager, ramp_limit(agents)).await?;
    // One run per node: what its reader follows.
    let mut followed = Vec::with_capacity(agents);
    for (i, sim) in fleet.agents.iter().enumerate() {
        let record = runs::record(sim, i as u64);
        followed.push(record.run_id);
        fleet
            .client_for(i)
            .post_runs(&RunBatch {
                node_id: sim.node_id,
                runs: vec![record],
            })
            .await?;
    }

    let idle = raft_entries_per_s(&manager, duration).await?;
    let errors_start = fleet.counters.errors.load(Ordering::Relaxed);
    let stop = CancellationToken::new();
    let polls = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut readers = JoinSet::new();
    for run_id in followed {
        let (admin, stop, polls, failed) = (
            manager.admin.clone(),
            stop.clone(),
            polls.clone(),
            failed.clone(),
        );
        readers.spawn(async move {
            let mut offset = 0;
            loop {
                let piece = tokio::select! {
                    p = admin.run_output(run_id, offset, READ_WAIT_SECS) => p,
                    _ = stop.cancelled() => return,
                };
                match piece {
                    Ok(p) => {
                        polls.fetch_add(1, Ordering::Relaxed);
                        offset = p.next_offset;
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(FOLLOW_POLL) => {}
                    _ = stop.cancelled() => return,
                }
            }
        });
    }
    let started = Instant::now();
    let following = raft_entries_per_s(&manager, duration).await?;
    let elapsed = started.elapsed().as_secs_f64();
    stop.cancel();
    while readers.join_next().await.is_some() {}
    let polls = polls.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    let sim_errors = fleet.counters.errors.load(Ordering::Relaxed) - errors_start;
    let wait = fleet.settings.sync_wait_secs;
    fleet.stop().await;
    manager.stop()?;

    let cond = format!(
        "{agents} simulated nodes, one reader following a run on each (a poll every {}ms after an \
         empty piece), sync wait {wait}s, watched {}s idle then {}s following, manager {} build",
        FOLLOW_POLL.as_millis(),
        duration.as_secs(),
        duration.as_secs(),
        crate::binaries::profile(manager_bin)
    );
    Ok(vec![
        Figure::new(
            "follow_raft_writes_per_s",
            (following - idle).max(0.0),
            "writes/s",
            format!("{cond}; raft log growth while following minus idle (target ≤ 2)"),
        ),
        Figure::new(
            "follow_raft_writes_idle_per_s",
            idle,
            "writes/s",
            format!("{cond}; the coalesced heartbeats"),
        ),
        Figure::new(
            "follow_polls_per_s",
            polls as f64 / elapsed,
            "polls/s",
            cond.clone(),
        ),
        Figure::new(
            "follow_poll_errors",
            (failed + sim_errors) as f64,
            "errors",
            format!("{cond}; failed reads and failed agent answers"),
        ),
    ])
}
