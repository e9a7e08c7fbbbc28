//! `cron-precision`: start - planned of a 1 Hz cron job, read back from the agent's runs API.

use std::path::Path;
use std::time::Duration;

use op_proto::{RunRecord, Trigger};
use serde_json::json;

use crate::agent::AgentProcess;
use crate::report::{Figure, spread};

pub async fn run(bin: &Path, duration: Duration) -> anyhow::Result<Vec<Figure>> {
    let job = json!({"JobName": "tick", "Command": "true", "CronExpr": "*/1 * * * * * *"});
    let agent = AgentProcess::start(bin, &[("tick".into(), job)])?;
    agent.wait_jobs(1).await?;
    tokio::time::sleep(duration).await;
    let runs: Vec<RunRecord> =
        serde_json::from_value(agent.get_json("/v1/runs?job=tick&limit=1000").await?)?;
    agent.stop()?;

    let lags: Vec<f64> = runs
        .iter()
        .filter(|r| r.trigger == Trigger::Cron)
        .filter_map(|r| Some((r.started_at? - r.planned_at?).num_microseconds()? as f64 / 1000.0))
        .collect();
    anyhow::ensure!(!lags.is_empty(), "the job never fired");
    let cond = format!(
        "1 Hz job `true`, {} fires over {}s, start = process spawned, {} build",
        lags.len(),
        duration.as_secs(),
        crate::binaries::profile(bin)
    );
    let mut figures = spread("cron_start_error", &lags, "ms", &cond);
    figures.extend([Figure::new("cron_fires", lags.len() as f64, "fires", cond)]);
    Ok(figures)
}
