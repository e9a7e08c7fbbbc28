//! `agent-footprint`: RSS and CPU of an agent holding cron jobs, watched for a duration.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::agent::AgentProcess;
use crate::procfs::{cpu_secs, rss_kib};
use crate::report::Figure;

pub async fn run(bin: &Path, duration: Duration, jobs: usize) -> anyhow::Result<Vec<Figure>> {
    let files: Vec<_> = (0..jobs)
        .map(|i| {
            (
                format!("cron{i}"),
                json!({"JobName": format!("cron{i}"), "Command": "true", "CronExpr": "0 */1 * * * * *"}),
            )
        })
        .collect();
    let agent = AgentProcess::start(bin, &files)?;
    agent.wait_jobs(jobs).await?;
    let pid = agent.pid();
    let (rss_start, _) = rss_kib(pid)?;
    let cpu_start = cpu_secs(pid)?;
    let mut samples = Vec::new();
    let end = tokio::time::Instant::now() + duration;
    while tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1).min(end - tokio::time::Instant::now())).await;
        samples.push(rss_kib(pid)?.0);
    }
    let (rss_end, hwm) = rss_kib(pid)?;
    let cpu = cpu_secs(pid)? - cpu_start;
    agent.stop()?;

    let mib = |kib: u64| kib as f64 / 1024.0;
    let avg = samples.iter().sum::<u64>() as f64 / samples.len().max(1) as f64;
    let cond = format!(
        "{jobs} cron jobs (`true` once a minute), standalone, {} build, watched {}s",
        crate::binaries::profile(bin),
        duration.as_secs()
    );
    Ok(vec![
        Figure::new(
            "agent_rss_start",
            mib(rss_start),
            "MiB",
            format!("{cond}; after loading the jobs"),
        ),
        Figure::new("agent_rss_avg", avg / 1024.0, "MiB", cond.clone()),
        Figure::new("agent_rss_end", mib(rss_end), "MiB", cond.clone()),
        Figure::new(
            "agent_rss_peak",
            mib(hwm),
            "MiB",
            format!("{cond}; VmHWM since start"),
        ),
        Figure::new("agent_cpu", cpu, "s", cond.clone()),
        Figure::new(
            "agent_cpu_share",
            100.0 * cpu / duration.as_secs_f64(),
            "%",
            cond,
        ),
    ])
}
