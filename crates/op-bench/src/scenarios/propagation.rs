//! `propagation`: job save → seen by every simulated agent (DESIGN.md section 10: p99 ≤ 1 s at
//! 10,000 agents, manager RSS ≤ 300 MB).
//!
//! N simulated agents register and park their sync calls. Then, `saves` times, one job is saved
//! again with a new command (a new revision) and each agent's latency is the time from sending
//! the save to the moment its sync answer with the new revision was parsed. Before each save the
//! fleet is parked again, so every save starts from the steady state. The manager's RSS and CPU
//! come from /proc.
//!
//! Per save it also reports the manager's CPU and the sync answers (count and JSON bytes) from the
//! save until the fleet is parked again. With `--rollout STAGES` (issue 21) as many saves follow,
//! each staged by `STAGES` with `--step-wait 0`, measured until its rollout finished and the
//! fleet parked: each stage entered wakes every agent, so the comparison shows what staging
//! costs the manager.

use std::path::Path;
use std::sync::atomic::Ordering;
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

/// What one save cost, from the save to the fleet parked again.
#[derive(Debug, Default, Clone, Copy)]
struct SaveCost {
    cpu_secs: f64,
    answers: u64,
    answer_bytes: u64,
    /// Save sent → the last agent saw the new revision.
    last_ms: f64,
}

impl SaveCost {
    /// What one save cost from `cpu0` (the manager's CPU seconds) and `answered0` (the fleet's
    /// counters) until now, the last agent having seen it after `latest`.
    fn since(
        pid: i32,
        fleet: &Fleet,
        cpu0: f64,
        (n0, b0): (u64, u64),
        latest: Duration,
    ) -> anyhow::Result<SaveCost> {
        let (n1, b1) = answered(fleet);
        Ok(SaveCost {
            cpu_secs: cpu_secs(pid)? - cpu0,
            answers: n1 - n0,
            answer_bytes: b1 - b0,
            last_ms: latest.as_secs_f64() * 1e3,
        })
    }
}

/// The fleet's answer counters now: (sync answers, their bytes).
fn answered(fleet: &Fleet) -> (u64, u64) {
    (
        fleet.counters.syncs.load(Ordering::Relaxed),
        fleet.counters.answer_bytes.load(Ordering::Relaxed),
    )
}

/// Waits until every agent of `fleet` saw revision `revision` of the job; returns the time from
/// `sent` to the last one, pushing each agent's latency (ms) into `latencies`.
async fn wait_seen(
    fleet: &mut Fleet,
    revision: u64,
    sent: Instant,
    limit: Duration,
    what: &str,
    latencies: &mut Vec<f64>,
) -> anyhow::Result<Duration> {
    let agents = fleet.len();
    let deadline = sent + limit;
    let mut seen = vec![false; agents];
    let mut count = 0;
    let mut latest = Duration::ZERO;
    while count < agents {
        let Some(change) = fleet.next_applied(deadline).await else {
            bail!(
                "{what}: after {}s only {count} of {agents} agents saw revision {revision}",
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
    Ok(latest)
}

/// What a propagation run measures (`op-bench propagation`'s flags).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Simulated agents.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Saves to time (each a new revision of one job).
    #[arg(long, default_value_t = 5)]
    pub saves: usize,
    /// The job names a secret in its Env (issue 24): every sync answer carries its value.
    #[arg(long)]
    pub secret: bool,
    /// Then as many saves staged by these stages (e.g. 1,10%,100%; step wait 0), compared
    /// with the unstaged ones: manager CPU and sync answer bytes per save (issue 21).
    #[arg(long, value_name = "STAGES")]
    pub rollout: Option<String>,
    /// Other jobs every agent holds beside the one saved: a save changes one job of each
    /// agent's set, and a delta names the others instead of sending them.
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
    /// The agents ask for whole states only, as agents before state deltas did (to compare).
    #[arg(long)]
    pub whole_states: bool,
}

pub async fn run(
    manager_bin: &Path,
    manager_args: &[String],
    options: Options,
) -> anyhow::Result<Vec<Figure>> {
    let Options {
        agents,
        saves,
        secret,
        rollout,
        jobs,
        whole_states,
    } = options;
    if let Some(stages) = &rollout {
        op_proto::rollout::RolloutRequest::from_flags(stages, Some("0"), None, false)
            .plan()
            .map_err(|e| anyhow::anyhow!("--rollout: {e}"))?;
    }
    anyhow::ensure!(
        agents > 0 && saves > 0,
        "--agents and --saves must be at least 1"
    );
    limits::check_fleet(agents)?;
    let manager = ManagerProcess::start(manager_bin, manager_args).await?;
    // The other jobs, saved before the fleet comes: each agent's every state carries them.
    for i in 0..jobs {
        let name = format!("bench-steady-{i:03}");
        let task = format!(
            r#"{{"JobName":"{name}","Command":"/usr/local/bin/steady-task --part {i} >> /var/log/steady-{i}.log 2>&1","CronExpr":"0 {m} * * * * *","Timeout":600}}"#,
            m = i % 60
        );
        manager.admin.save_job_text(&name, &task).await?;
    }
    let pid = manager.pid();
    let cpu_start = cpu_secs(pid)?;
    let ramp_started = Instant::now();
    let mut fleet = Fleet::start_with(&manager, agents, !whole_states).await?;
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
    let mut unstaged = Vec::with_capacity(saves);
    for k in 1..=saves {
        fleet.wait_parked(&manager, ramp_limit(agents)).await?;
        fleet.drain_applied();
        let task = format!(
            r#"{{"JobName":"{JOB}","Command":"true # save {k}","CronExpr":"0 0 */6 * * * *"{env}}}"#
        );
        let (cpu0, (n0, b0)) = (cpu_secs(pid)?, answered(&fleet));
        let sent = Instant::now();
        let revision = manager.admin.save_job_text(JOB, &task).await?.revision;
        let latest = wait_seen(
            &mut fleet,
            revision,
            sent,
            limit,
            &format!("save {k}"),
            &mut latencies,
        )
        .await?;
        last_seen.push(latest.as_secs_f64() * 1e3);
        fleet.wait_parked(&manager, ramp_limit(agents)).await?;
        unstaged.push(SaveCost::since(pid, &fleet, cpu0, (n0, b0), latest)?);
    }
    let cpu_saves = cpu_secs(pid)? - cpu_parked;
    // With --rollout: as many saves again, each staged (step wait 0: a stage advances as soon as
    // its hosts have the revision), from the save to its rollout finished and the fleet parked.
    let mut staged = Vec::new();
    if let Some(stages) = &rollout {
        let query = [("rollout", stages.clone()), ("step_wait", "0".to_string())];
        let mut ignored = Vec::new();
        for k in 1..=saves {
            fleet.wait_parked(&manager, ramp_limit(agents)).await?;
            fleet.drain_applied();
            let task = format!(
                r#"{{"JobName":"{JOB}","Command":"true # staged save {k}","CronExpr":"0 0 */6 * * * *"{env}}}"#
            );
            let (cpu0, (n0, b0)) = (cpu_secs(pid)?, answered(&fleet));
            let sent = Instant::now();
            let revision = manager
                .admin
                .save_job_text_with(JOB, &task, &query)
                .await?
                .revision;
            let latest = wait_seen(
                &mut fleet,
                revision,
                sent,
                limit * 3,
                &format!("staged save {k}"),
                &mut ignored,
            )
            .await?;
            // The rollout finishes once its last stage has every host (one more answer each).
            let deadline = Instant::now() + limit;
            loop {
                let list = manager.admin.rollouts().await?;
                let done = list.iter().any(|r| {
                    r.subject == JOB
                        && r.version == revision
                        && r.state == op_proto::rollout::RolloutState::Finished
                });
                if done {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "staged save {k}: its rollout did not finish in {}s",
                        limit.as_secs()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            fleet.wait_parked(&manager, ramp_limit(agents)).await?;
            staged.push(SaveCost::since(pid, &fleet, cpu0, (n0, b0), latest)?);
        }
    }
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
    let with = format!(
        "{}{}{}",
        if secret {
            ", the job names a secret"
        } else {
            ""
        },
        if jobs > 0 {
            format!(", {jobs} other jobs held")
        } else {
            String::new()
        },
        if whole_states {
            ", whole states only (no deltas)"
        } else {
            ""
        }
    );
    let cond = format!(
        "{agents} simulated agents parked (sync wait {wait}s), {saves} saves{with}, save sent → \
         sync answer parsed, {} samples, manager {build} build",
        latencies.len()
    );
    let held = format!("{agents} simulated agents parked{with}, manager {build} build");
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
    figures.extend(cost_figures("unstaged", &unstaged, &held));
    if let Some(stages) = &rollout {
        let held = format!("{held}; each save staged --rollout {stages} --step-wait 0");
        figures.extend(cost_figures("staged", &staged, &held));
        let mean = |c: &[SaveCost]| c.iter().map(|c| c.cpu_secs).sum::<f64>() / c.len() as f64;
        figures.push(Figure::new(
            "save_cpu_staged_extra",
            mean(&staged) - mean(&unstaged),
            "s",
            format!("{held}; manager CPU of a staged save minus that of an unstaged one, per save"),
        ));
    }
    Ok(figures)
}

/// Per save, mean over the saves: manager CPU, sync answers, their bytes, bytes per answer, and
/// the time until the last agent saw the revision.
fn cost_figures(mode: &str, costs: &[SaveCost], held: &str) -> Vec<Figure> {
    let n = costs.len().max(1) as f64;
    let sum = |f: fn(&SaveCost) -> f64| costs.iter().map(f).sum::<f64>();
    let answers = sum(|c| c.answers as f64);
    let bytes = sum(|c| c.answer_bytes as f64);
    let cond = format!(
        "{held}; {mode} saves, from the save to the fleet parked again, mean over {} saves",
        costs.len()
    );
    vec![
        Figure::new(
            &format!("save_cpu_{mode}"),
            sum(|c| c.cpu_secs) / n,
            "s",
            format!("{cond}; manager CPU time (user+sys) per save"),
        ),
        Figure::new(
            &format!("save_answers_{mode}"),
            answers / n,
            "answers",
            format!("{cond}; sync answers the fleet received per save"),
        ),
        Figure::new(
            &format!("save_answer_bytes_{mode}"),
            bytes / n,
            "bytes",
            format!("{cond}; bytes of those answers (JSON bodies) per save"),
        ),
        Figure::new(
            &format!("answer_bytes_{mode}"),
            if answers > 0.0 { bytes / answers } else { 0.0 },
            "bytes",
            format!("{cond}; mean size of one sync answer"),
        ),
        Figure::new(
            &format!("save_last_agent_{mode}"),
            sum(|c| c.last_ms) / n,
            "ms",
            format!("{cond}; save sent → the last agent had the new revision"),
        ),
    ]
}
