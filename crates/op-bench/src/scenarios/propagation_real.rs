//! `propagation-real`: job save → first run on every real agent.
//!
//! A manager and N real `op-agent` processes (managed mode, each with its own node name and IP)
//! run on this machine. Each save is a new revision of a once-job running `true`; its latency on an
//! agent is the run's `started_at` (the agent's clock, which is this machine's) minus the instant
//! the save was sent. The agents report the runs back; the save's "all back" time is when the
//! manager had every agent's record (polled every 10 ms).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use chrono::Utc;
use op_proto::NodeStatus;
use op_proto::api::RunQuery;

use crate::agent::AgentProcess;
use crate::manager::ManagerProcess;
use crate::report::{Figure, percentile, spread};

const JOB: &str = "bench-real";
/// How long agents may take to register, and a save to come back from all of them.
const LIMIT: Duration = Duration::from_secs(60);

pub async fn run(
    manager_bin: &Path,
    manager_args: &[String],
    agent_bin: &Path,
    agents: usize,
    saves: usize,
) -> anyhow::Result<Vec<Figure>> {
    anyhow::ensure!(
        agents > 0 && saves > 0,
        "--agents and --saves must be at least 1"
    );
    let manager = ManagerProcess::start(manager_bin, manager_args).await?;
    let mut started = Vec::with_capacity(agents);
    for i in 0..agents {
        started.push(AgentProcess::start_managed(
            agent_bin,
            &manager.api_url,
            &manager.agent_token,
            &format!("real-{i:02}"),
            &format!("10.1.0.{}", i + 1),
        )?);
    }
    let deadline = Instant::now() + LIMIT;
    loop {
        let ready = manager
            .admin
            .list_nodes()
            .await?
            .iter()
            .filter(|n| n.status == NodeStatus::Ready)
            .count();
        if ready == agents {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {ready} of {agents} agents registered within {LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut first_run = Vec::with_capacity(agents * saves);
    let mut all_back = Vec::with_capacity(saves);
    for k in 1..=saves {
        let task = format!(r#"{{"JobName":"{JOB}","Command":"true # save {k}","OnceJob":1}}"#);
        let sent_wall = Utc::now();
        let sent = Instant::now();
        let revision = manager.admin.save_job_text(JOB, &task).await?.revision;
        let query = RunQuery {
            job: Some(JOB.into()),
            since: Some(sent_wall),
            ..RunQuery::default()
        };
        let deadline = sent + LIMIT;
        loop {
            let runs = manager.admin.runs(&query).await?;
            let mine: Vec<_> = runs
                .iter()
                .filter(|r| r.job_revision == revision && r.status.is_final())
                .collect();
            if mine.len() >= agents {
                all_back.push(sent.elapsed().as_secs_f64() * 1e3);
                for r in mine {
                    if let Some(at) = r.started_at {
                        first_run
                            .push((at - sent_wall).num_microseconds().unwrap_or(0) as f64 / 1e3);
                    }
                }
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "save {k}: only {} of {agents} agents reported revision {revision} within {LIMIT:?}",
                    mine.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for agent in started {
        agent.stop()?;
    }
    manager.stop()?;

    let cond = format!(
        "{agents} real agents ({} build) on one machine, manager {} build, {saves} saves of a \
         once-job `true`, {} samples",
        crate::binaries::profile(agent_bin),
        crate::binaries::profile(manager_bin),
        first_run.len()
    );
    let start_cond = format!("{cond}; save sent → process started (run's started_at)");
    let back_cond = format!("{cond}; per save, save sent → every agent's record stored");
    let mut figures = spread("real_first_run", &first_run, "ms", &start_cond);
    figures.extend([
        Figure::new(
            "real_all_back_p50",
            percentile(&all_back, 50.0),
            "ms",
            back_cond.clone(),
        ),
        Figure::new(
            "real_all_back_max",
            percentile(&all_back, 100.0),
            "ms",
            back_cond,
        ),
    ]);
    Ok(figures)
}
