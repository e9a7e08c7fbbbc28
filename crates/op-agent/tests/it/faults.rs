//! Faults around the agent: a stderr that breaks must stop neither its jobs nor its shutdown.

use std::time::Duration;

use serde_json::json;

use crate::support::{Agent, Options, StderrTo, wait_until};

#[tokio::test]
async fn a_broken_stderr_pipe_stops_neither_fires_nor_sigterm() {
    let mut agent = Agent::start_with(Options {
        stderr: StderrTo::Pipe,
        extra_args: vec!["--shutdown-grace".into(), "3s".into()],
        ..Default::default()
    });
    agent.write_job(
        "tick",
        &json!({"JobName": "tick", "Command": "echo tick", "CronExpr": "*/1 * * * * * *"}),
    );
    wait_until(Duration::from_secs(20), "first fire", || async {
        !agent.runs("tick").await.is_empty()
    })
    .await;
    // The log shipper goes away: from now on every log line (the agent logs at debug here, a
    // few lines per run) fails with EPIPE.
    agent.close_stderr_reader();
    let before = agent.runs("tick").await.len();
    wait_until(Duration::from_secs(20), "five more fires", || async {
        let runs = agent.runs("tick").await;
        runs.len() >= before + 5
            && runs
                .iter()
                .all(|r| r.status != op_proto::RunStatus::Running || r == &runs[0])
    })
    .await;
    let metrics = agent.get("/metrics").await.text().await.unwrap();
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("op_agent_log_write_failures_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no failure counter in\n{metrics}"));
    assert!(failures > 0, "{metrics}");
    // SIGTERM still ends the agent, well within its 3 s grace plus the HTTP drain.
    let code = agent.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
}
