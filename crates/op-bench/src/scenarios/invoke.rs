//! `invoke`: latency of synchronous `POST /api/opAgent` calls running `true`, one at a time.

use std::path::Path;
use std::time::Instant;

use serde_json::json;

use crate::agent::{AgentProcess, PASS, USER};
use crate::report::{Figure, spread};

const WARMUP: usize = 20;

pub async fn run(bin: &Path, count: usize) -> anyhow::Result<Vec<Figure>> {
    let job = json!({"JobName": "t", "Command": "true", "SynFlag": 1});
    let agent = AgentProcess::start(bin, &[("t".into(), job)])?;
    agent.wait_jobs(1).await?;
    let url = format!("{}/api/opAgent", agent.base);
    let mut ms = Vec::with_capacity(count);
    for i in 0..WARMUP + count {
        let t0 = Instant::now();
        let resp: serde_json::Value = agent
            .http
            .post(&url)
            .basic_auth(USER, Some(PASS))
            .body(r#"{"jobname":"t"}"#)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let elapsed = t0.elapsed().as_secs_f64() * 1000.0;
        anyhow::ensure!(resp["Code"] == "OK", "call failed: {resp}");
        if i >= WARMUP {
            ms.push(elapsed);
        }
    }
    agent.stop()?;
    let cond = format!(
        "{count} sequential sync calls running `true`, keep-alive, loopback, {} build",
        crate::binaries::profile(bin)
    );
    Ok(spread("invoke_sync", &ms, "ms", &cond))
}
